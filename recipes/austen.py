"""Jane Austen's six novels (Debian package `r-cran-janeaustenr`: public domain text, MIT-licensed
R package): the R data sets, one character vector of 70-column lines per novel, as paragraphs and
tokenized sentences."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from . import fetch as fetching
from . import rdata_db
from .text import paragraphs, tokenize

PACKAGE = "r-cran-janeaustenr"
DATA_PATH = Path("usr/lib/R/site-library/janeaustenr/data")
NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")


def fetch(directory: str | Path) -> Path:
    """Downloads and unpacks the Debian package once; returns the R package's data/ folder."""
    data = fetching.debian(PACKAGE, directory) / DATA_PATH
    if not (data / "Rdata.rdx").is_file():
        raise rdata_db.RDataError(f"{data}: no Rdata.rdx in the package; has its layout changed?")
    return data


def novel_lines(data_dir: str | Path, novel: str) -> list[str]:
    return rdata_db.character_vector(data_dir, novel)


def sentences(data_dir: str | Path) -> Iterator[list[str]]:
    for novel in NOVELS:
        for paragraph in paragraphs(novel_lines(data_dir, novel)):
            yield from tokenize(paragraph)
