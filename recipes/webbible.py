"""The World English Bible (Debian package `sword-text-web`, SWORD module `engWEB2015eb`, public
domain): every verse's OSIS markup, cleaned to plain text, grouped into paragraphs, tokenized.

Cleaning: footnotes (`<note>`) and headings (`<title>`) are dropped with their text, word markup
(`<w lemma=...>`) is unwrapped, every other tag becomes a space. Paragraphs: the module's paragraph
markers (`<div type="x-p"/>`) and chapter starts; sentences are then split within a paragraph
(recipes/text.py), so a sentence spanning several verses stays whole.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

from . import fetch as fetching
from . import sword
from .text import tokenize

PACKAGE = "sword-text-web"
MODULE = "engWEB2015eb"
MODULE_PATH = Path("usr/share/sword/modules/texts/ztext") / MODULE

_DROPPED = re.compile(r"<(note|title)\b[^>]*?(/>|>.*?</\1\s*>)", re.DOTALL)
_PARAGRAPH = re.compile(r"<div\b[^>]*\btype=\"x-p\"[^>]*/>|<chapter\b[^>]*\bsID=[^>]*/>")
_WORD_TAG = re.compile(r"</?w\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")
PARAGRAPH_BREAK = "\n\n"


def fetch(directory: str | Path) -> Path:
    """Downloads and unpacks the Debian package once; returns the module's folder."""
    root = fetching.debian(PACKAGE, directory)
    module = root / MODULE_PATH
    if not module.is_dir():
        raise sword.SwordError(f"{root}: the package has no {MODULE_PATH}; has the module been renamed?")
    return module


def clean(markup: str) -> str:
    """One slot's OSIS markup -> plain text, a paragraph marker becoming a blank line."""
    text = _DROPPED.sub(" ", markup)
    text = _PARAGRAPH.sub(PARAGRAPH_BREAK, text)
    text = _WORD_TAG.sub("", text)
    text = _TAG.sub(" ", text)
    return html.unescape(text)


def paragraphs(module_dir: str | Path) -> Iterator[str]:
    """The text as paragraphs, whitespace-normalised, in the module's order."""
    pending = ""
    for markup in sword.module_entries(module_dir):
        pending += " " + clean(markup)
        *done, pending = pending.split(PARAGRAPH_BREAK)
        for paragraph in done:
            paragraph = " ".join(paragraph.split())
            if paragraph:
                yield paragraph
    pending = " ".join(pending.split())
    if pending:
        yield pending


def sentences(module_dir: str | Path) -> Iterator[list[str]]:
    for paragraph in paragraphs(module_dir):
        yield from tokenize(paragraph)
