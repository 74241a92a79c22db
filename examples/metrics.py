"""Scores: token accuracy, and entity F1 over BIO spans as seqeval (and conlleval) count them.

A span starts at B-X, or at an I-X that does not continue a span of type X (a stray I- opens a
span, as conlleval does); it ends where the next tag does not continue it. A predicted span counts
only if its type, start and end all match a gold span. (seqeval would bring scikit-learn and
SciPy for these few lines.)
"""

from __future__ import annotations

from collections.abc import Sequence


def accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """The share of tokens whose predicted tag is the gold one."""
    pairs = [(g, p) for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps)]
    return sum(g == p for g, p in pairs) / max(len(pairs), 1)


def is_bio(tags: Sequence[str]) -> bool:
    """Whether a tag set is BIO: every tag O, B-X or I-X."""
    return all(t == "O" or t[:2] in ("B-", "I-") for t in tags)


def bio_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, start, end exclusive) of every entity in one sentence's BIO tags."""
    spans = set()
    kind, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, label = tag.partition("-")
        continues = prefix == "I" and label == kind
        if kind is not None and not continues:
            spans.add((kind, start, i))
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, start = label, i
    return spans


def span_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged precision, recall and F1 of entity spans over sentences."""
    n_gold = n_predicted = n_correct = 0
    for gs, ps in zip(gold, predicted):
        g, p = bio_spans(gs), bio_spans(ps)
        n_gold, n_predicted, n_correct = n_gold + len(g), n_predicted + len(p), n_correct + len(g & p)
    precision = n_correct / n_predicted if n_predicted else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
