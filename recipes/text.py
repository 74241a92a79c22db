"""Raw text to tokenized sentences, the same way for every source that is not tokenized already.

    paragraphs(lines)        wrapped lines -> paragraphs (a blank line ends one), whitespace joined
    cut_gutenberg(text)      the text between Project Gutenberg's START and END markers
    tokenize(paragraph)      sentences, each a list of tokens

Sentences: syntok's segmenter (rule-based, the successor of segtok), run inside one paragraph, so
that no sentence crosses a paragraph break. Tokens: sacremoses' `MosesTokenizer(lang="en")`, the
Moses tokenizer the MT community uses, without its HTML escaping. Two normalisations before it, both
of typewriter conventions the Brown corpus (the held-out set) does not share: `_word_` (Gutenberg's
italics) loses its underscores, and `--` (an ASCII dash) becomes a token of its own, as in Brown.
Typographic quotes and apostrophes (“ ” ‘ ’, the World English Bible's) become ASCII ones, as in
the other sources: the segmenter then sees the end of a quoted sentence, and `don’t` splits as
`don 't` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache

GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG.*$", re.MULTILINE)
GUTENBERG_END = re.compile(
    r"^(\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$", re.MULTILINE)
PRODUCED_BY = re.compile(r"^\s*Produced by\b")

_ITALICS = re.compile(r"(?<!\w)_([^_\n]+?)_(?!\w)")
_DASH = re.compile(r"-{2,}")
_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})


class TextError(ValueError):
    """Text that does not have the shape a reader expects, with what was looked for."""


def cut_gutenberg(text: str, name: str = "text") -> str:
    """The book between the `*** START OF THIS PROJECT GUTENBERG ...` line and the first
    `End of Project Gutenberg's ...` / `*** END OF ...` line, without a leading `Produced by`
    paragraph (the transcribers' credit)."""
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    start = GUTENBERG_START.search(text)
    if start is None:
        raise TextError(f"{name}: no '*** START OF THIS PROJECT GUTENBERG' line; is it a Gutenberg text?")
    end = GUTENBERG_END.search(text, start.end())
    if end is None:
        raise TextError(f"{name}: no 'End of Project Gutenberg' / '*** END OF' line after the start line")
    body = text[start.end() : end.start()].strip("\n")
    first, sep, rest = body.lstrip("\n").partition("\n\n")
    if PRODUCED_BY.match(first):
        body = rest
    return body.strip("\n") + "\n"


def paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """Paragraphs of wrapped text: consecutive non-blank lines joined by one space. Paragraphs
    without a lower-case letter (headings such as `CHAPTER IV`, `VOLUME I`) are left out."""
    current: list[str] = []
    for line in lines:
        if line.strip():
            current.append(line.strip())
            continue
        if current:
            yield from _keep(" ".join(current))
            current = []
    if current:
        yield from _keep(" ".join(current))


def _keep(paragraph: str) -> Iterator[str]:
    if any(c.islower() for c in paragraph):
        yield paragraph


def normalise(text: str) -> str:
    text = _ITALICS.sub(r"\1", text)
    text = _DASH.sub(" -- ", text)
    return text.translate(_QUOTES)


@lru_cache(maxsize=1)
def _moses():
    try:
        from sacremoses import MosesTokenizer
    except ImportError:
        raise ImportError("the corpus recipe needs sacremoses: pip install -e '.[recipe]'") from None
    return MosesTokenizer(lang="en")


def split_sentences(paragraph: str) -> list[str]:
    """syntok's sentences of one paragraph, as spans of the paragraph's own text (syntok's
    tokens only place the boundaries: its token values may differ from the text)."""
    try:
        import syntok.segmenter as segmenter
    except ImportError:
        raise ImportError("the corpus recipe needs syntok: pip install -e '.[recipe]'") from None
    out = []
    for para in segmenter.analyze(paragraph):
        for sentence in para:
            if sentence:
                start, last = sentence[0].offset, sentence[-1]
                text = paragraph[start : last.offset + len(last.value)].strip()
                if text:
                    out.append(text)
    return out


def tokenize(paragraph: str) -> list[list[str]]:
    """One paragraph of raw text -> its sentences as Moses tokens (empty sentences dropped)."""
    moses = _moses()
    sentences = []
    for sentence in split_sentences(normalise(paragraph)):
        tokens = moses.tokenize(sentence, escape=False)
        if tokens:
            sentences.append(tokens)
    return sentences
