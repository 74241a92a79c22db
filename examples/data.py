"""Task files and their vocabularies.

Tagging: CoNLL-style `token<TAB>tag` lines, a blank (or whitespace-only) line between sentences.
Classification: `label<TAB>text` lines, the text split on whitespace.
Every bad line raises TaskDataError naming the file and line, the problem and the fix.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch_elmo.errors import ElmoError

PAD, UNK = "<pad>", "<unk>"


class TaskDataError(ElmoError, ValueError):
    """A task file that cannot be used: which file and line, what is wrong, the fix."""


@dataclass
class Tagged:
    """One sentence of a tagging file; `line` is the file line of its first token."""

    tokens: list[str]
    tags: list[str]
    line: int


@dataclass
class Labelled:
    """One sentence of a classification file and the file line it came from."""

    tokens: list[str]
    label: str
    line: int


def _lines(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskDataError(f"{path}: no such file; give the path of an existing task file") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise TaskDataError(f"{path}:{line}: not UTF-8 text; convert the file to UTF-8") from None
    return text.splitlines()


def read_tagged(path: str | os.PathLike) -> list[Tagged]:
    """Sentences of a `token<TAB>tag` file; raises TaskDataError on a line without exactly two
    non-empty columns, or a file without a sentence."""
    sentences: list[Tagged] = []
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            if tokens:
                sentences.append(Tagged(tokens, tags, first))
            tokens, tags = [], []
            continue
        columns = line.split("\t")
        if len(columns) != 2 or not columns[0].strip() or not columns[1].strip():
            raise TaskDataError(
                f"{path}:{number}: expected 2 tab-separated columns `token<TAB>tag`, got {len(columns)} "
                f"({line[:40]!r}); fix the line, or leave it blank to end the sentence")
        if not tokens:
            first = number
        tokens.append(columns[0].strip())
        tags.append(columns[1].strip())
    if tokens:
        sentences.append(Tagged(tokens, tags, first))
    if not sentences:
        raise TaskDataError(f"{path}: no sentences; write one `token<TAB>tag` line per token, a blank line between sentences")
    return sentences


def read_labelled(path: str | os.PathLike) -> list[Labelled]:
    """Sentences of a `label<TAB>text` file; raises TaskDataError on a line without a label and a
    text, or a file without a sentence. Blank lines are skipped."""
    sentences: list[Labelled] = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != 2 or not columns[0].strip() or not columns[1].split():
            raise TaskDataError(
                f"{path}:{number}: expected 2 tab-separated columns `label<TAB>text`, got {len(columns)} "
                f"({line[:40]!r}); put one label, a tab, then the sentence")
        sentences.append(Labelled(columns[1].split(), columns[0].strip(), number))
    if not sentences:
        raise TaskDataError(f"{path}: no sentences; write one `label<TAB>text` line per sentence")
    return sentences


class Vocabulary:
    """Strings <-> ids. Words: id 0 pads, id 1 is the unknown word. Labels: no extras, and an
    unknown label is an error (`index_label`)."""

    def __init__(self, items: Sequence[str], extras: bool = True):
        self.items = ([PAD, UNK] if extras else []) + [i for i in items if i not in (PAD, UNK) or not extras]
        self.index = {item: k for k, item in enumerate(self.items)}

    @classmethod
    def of_words(cls, sentences: Iterable[Sequence[str]], min_count: int = 1) -> Vocabulary:
        """Lower-cased words seen at least min_count times, most frequent first."""
        counts = Counter(w.lower() for s in sentences for w in s)
        return cls([w for w, n in counts.most_common() if n >= min_count])

    @classmethod
    def of_labels(cls, labels: Iterable[str]) -> Vocabulary:
        return cls(sorted(set(labels)), extras=False)

    def __len__(self) -> int:
        return len(self.items)

    def words(self, tokens: Sequence[str]) -> list[int]:
        return [self.index.get(t.lower(), 1) for t in tokens]

    def label(self, label: str, path: str | os.PathLike, line: int) -> int:
        """The id of a label; TaskDataError naming the file and line if training never saw it."""
        if label not in self.index:
            known = ", ".join(self.items[:12]) + (", ..." if len(self.items) > 12 else "")
            raise TaskDataError(f"{path}:{line}: label {label!r} was not in the training data (known: {known}); "
                                "fix the label, or retrain with data that has it")
        return self.index[label]
