"""Moby Dick (Debian package `r-cran-tokenizers`, its example data set `mobydick`: Project
Gutenberg's EBook #2701, public domain text, MIT-licensed R package), without Gutenberg's header
and licence footer, as paragraphs and tokenized sentences."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from . import fetch as fetching
from . import rdata_db
from .text import cut_gutenberg, paragraphs, tokenize

PACKAGE = "r-cran-tokenizers"
DATA_PATH = Path("usr/lib/R/site-library/tokenizers/data")
OBJECT = "mobydick"


def fetch(directory: str | Path) -> Path:
    """Downloads and unpacks the Debian package once; returns the R package's data/ folder."""
    data = fetching.debian(PACKAGE, directory) / DATA_PATH
    if not (data / "Rdata.rdx").is_file():
        raise rdata_db.RDataError(f"{data}: no Rdata.rdx in the package; has its layout changed?")
    return data


def book(data_dir: str | Path) -> str:
    """The text of the book, Gutenberg's header and footer cut."""
    return cut_gutenberg("\n".join(rdata_db.character_vector(data_dir, OBJECT)), name=f"{data_dir}: {OBJECT}")


def sentences(data_dir: str | Path) -> Iterator[list[str]]:
    for paragraph in paragraphs(book(data_dir).splitlines()):
        yield from tokenize(paragraph)
