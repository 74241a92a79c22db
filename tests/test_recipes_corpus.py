"""The default model's corpus readers on small synthetic inputs: Gutenberg cutting, paragraphs and
tokenization, the SWORD zText reader and the World English Bible's OSIS cleaning, R lazy-load
databases, and the corpus preparation (shards, held-out Brown documents, counts, caching)."""

from __future__ import annotations

import gzip
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from recipes import austen, corpus, mobydick, rdata_db, sword, webbible
from recipes.text import TextError, cut_gutenberg, paragraphs, tokenize

GUTENBERG = (
    "\ufeffThe Project Gutenberg EBook of Tiny, by Nobody\r\n\r\nThis eBook is for the use of anyone.\r\n\r\n"
    "*** START OF THIS PROJECT GUTENBERG EBOOK TINY ***\r\n\r\n\r\n\r\nProduced by Some Volunteers\r\n\r\n\r\n"
    "CHAPTER 1. Loomings.\r\n\r\nCall me Ishmael. Some years\r\nago I went to sea.\r\n\r\n"
    "It is a way I have.\r\n\r\n\r\nEnd of Project Gutenberg's Tiny, by Nobody\r\n\r\n"
    "*** END OF THIS PROJECT GUTENBERG EBOOK TINY ***\r\n\r\n1.E. Full licence terms, never text.\r\n"
)


def test_gutenberg_header_and_footer_are_cut():
    body = cut_gutenberg(GUTENBERG)
    assert body == "CHAPTER 1. Loomings.\n\nCall me Ishmael. Some years\nago I went to sea.\n\nIt is a way I have.\n"
    assert list(paragraphs(body.splitlines())) == [
        "CHAPTER 1. Loomings.", "Call me Ishmael. Some years ago I went to sea.", "It is a way I have."]


def test_gutenberg_without_markers_is_an_error():
    with pytest.raises(TextError, match="START OF THIS PROJECT GUTENBERG"):
        cut_gutenberg("just a text\n")
    with pytest.raises(TextError, match="END OF"):
        cut_gutenberg("*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nbody, no end\n")


def test_paragraphs_join_wrapped_lines_and_drop_headings():
    lines = ["VOLUME I", "", "CHAPTER I", "", "", "Emma Woodhouse, handsome,", "clever, and rich.", "", "Next."]
    assert list(paragraphs(lines)) == ["Emma Woodhouse, handsome, clever, and rich.", "Next."]


def test_tokenize_splits_sentences_and_normalises_typewriter_and_typographic_marks():
    text = ("It's Mr. Darcy's _own_ hat--I think. “Go,” he said. ‘I don’t.’ "
            "\"Poor Miss Taylor! I wish she were here.\"")
    assert tokenize(text) == [
        ["It", "'s", "Mr.", "Darcy", "'s", "own", "hat", "--", "I", "think", "."],
        ['"', "Go", ",", '"', "he", "said", "."],
        ["'I", "don", "'t", ".", "'"],  # Moses keeps an opening single quote on its word
        ['"', "Poor", "Miss", "Taylor", "!"],
        ["I", "wish", "she", "were", "here", ".", '"'],
    ]
    assert tokenize("   ") == []


# --------------------------------------------------------------------------------------------
# SWORD zText


def write_ztext(module: Path, testament: str, blocks: list[list[str | None]]) -> None:
    """A zText testament: each block a list of slot texts (None: an empty slot)."""
    module.mkdir(parents=True, exist_ok=True)
    bzs, bzv, bzz = bytearray(), bytearray(), bytearray()
    for number, slots in enumerate(blocks):
        data = bytearray()
        for text in slots:
            raw = b"" if text is None else text.encode("utf-8")
            bzv += struct.pack("<IIH", number, len(data), len(raw))
            data += raw
        packed = zlib.compress(bytes(data))
        bzs += struct.pack("<III", len(bzz), len(packed), len(data))
        bzz += packed
    for ext, content in (("bzs", bzs), ("bzv", bzv), ("bzz", bzz)):
        (module / f"{testament}.{ext}").write_bytes(bytes(content))


OSIS_OT = [
    [None, '<milestone type="x-importer"/>', '<div type="book" osisID="Gen"/><title type="main">Genesis</title>',
     '<chapter n="1" osisID="Gen.1" sID="Gen.1"/>',
     '<w lemma="strong:H1">In</w> <w lemma="strong:H2">the</w> beginning, God<note placement="foot">'
     '<reference>1:1 </reference>Elohim.</note><w>created</w> the heavens and the earth. '],
    ['<div sID="p1" type="x-p"/>The earth was &amp; is “formless”.', None,
     '<chapter n="2" osisID="Gen.2" sID="Gen.2"/>', 'The heavens were finished.<chapter eID="Gen.2"/>'],
]
OSIS_NT = [['<div type="book" osisID="Matt"/>', '<chapter sID="Matt.1"/>', 'Jesus wept. He went on.']]


def test_ztext_reader_returns_every_slot_with_text_in_order(tmp_path):
    write_ztext(tmp_path, "ot", OSIS_OT)
    slots = list(sword.entries(tmp_path, "ot"))
    assert [i for i, _ in slots] == [1, 2, 3, 4, 5, 7, 8]
    assert slots[-1][1] == OSIS_OT[1][3]
    assert list(sword.module_entries(tmp_path)) == [t for b in OSIS_OT for t in b if t is not None]


def test_ztext_reader_errors_name_the_file(tmp_path):
    with pytest.raises(sword.SwordError, match="zText module"):
        list(sword.module_entries(tmp_path))
    write_ztext(tmp_path, "nt", OSIS_NT)
    (tmp_path / "nt.bzv").write_bytes((tmp_path / "nt.bzv").read_bytes()[:-3])
    with pytest.raises(sword.SwordError, match="not whole entries"):
        list(sword.entries(tmp_path, "nt"))


def test_web_bible_osis_becomes_paragraphs_without_notes_or_headings(tmp_path):
    write_ztext(tmp_path, "ot", OSIS_OT)
    write_ztext(tmp_path, "nt", OSIS_NT)
    assert list(webbible.paragraphs(tmp_path)) == [
        "In the beginning, God created the heavens and the earth.",
        "The earth was & is “formless”.",
        "The heavens were finished.",
        "Jesus wept. He went on.",
    ]
    assert list(webbible.sentences(tmp_path))[-2:] == [["Jesus", "wept", "."], ["He", "went", "on", "."]]


# --------------------------------------------------------------------------------------------
# R lazy-load databases


def write_rdb(data_dir: Path, objects: dict) -> None:
    """An R package's data/Rdata.rdx + Rdata.rdb holding `objects` (name -> Python value)."""
    rdata = pytest.importorskip("rdata")

    def serialize(value) -> bytes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return rdata.unparser.unparse_data(rdata.conversion.convert_python_to_r_data(value), file_type="rds")

    data_dir.mkdir(parents=True, exist_ok=True)
    rdb, variables = bytearray(), {}
    for name, value in objects.items():
        raw = serialize(value)
        blob = struct.pack(">I", len(raw)) + zlib.compress(raw)
        variables[name] = np.array([len(rdb), len(blob)], dtype=np.int32)
        rdb += blob
    (data_dir / "Rdata.rdb").write_bytes(bytes(rdb))
    index = {"variables": variables, "references": {}, "compressed": np.array([True])}
    (data_dir / "Rdata.rdx").write_bytes(gzip.compress(serialize(index)))


def test_r_lazy_load_database_objects_are_read_by_name(tmp_path):
    write_rdb(tmp_path, {"emma": np.array(["EMMA", "", "Emma Woodhouse, handsome,", "clever."]),
                         "mobydick": np.array([GUTENBERG])})
    assert set(rdata_db.index(tmp_path)) == {"emma", "mobydick"}
    assert austen.novel_lines(tmp_path, "emma") == ["EMMA", "", "Emma Woodhouse, handsome,", "clever."]
    assert mobydick.book(tmp_path).startswith("CHAPTER 1. Loomings.\n")
    assert list(mobydick.sentences(tmp_path))[:4] == [["CHAPTER", "1", "."], ["Loomings", "."],
                                                      ["Call", "me", "Ishmael", "."],
                                                      ["Some", "years", "ago", "I", "went", "to", "sea", "."]]
    with pytest.raises(rdata_db.RDataError, match="no object 'persuasion'"):
        rdata_db.read_object(tmp_path, "persuasion")
    with pytest.raises(rdata_db.RDataError, match="no such file"):
        rdata_db.index(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------
# Preparation


def fake_brown(directory: Path) -> Path:
    documents = directory / "package"
    documents.mkdir(parents=True)
    (documents / "cats.txt").write_text("ca01 news\nca10 news\n")
    (documents / "ca01").write_text("\n\tThe/at jury/nn said/vbd ./.\n\n\tIt/pps rained/vbd ./.\n", encoding="latin-1")
    (documents / "ca10").write_text("\n\tHeld/vbn out/rp ./.\n", encoding="latin-1")
    return documents


def test_prepare_writes_shuffled_shards_heldout_and_counts_once(tmp_path, monkeypatch):
    brown_dir = fake_brown(tmp_path / "downloads" / "brown")
    austen_dir = tmp_path / "austen"
    write_rdb(austen_dir, {n: np.array([f"A sentence of {n}.", "", "Another one."]) for n in austen.NOVELS})
    bible = tmp_path / "web"
    write_ztext(bible, "nt", OSIS_NT)
    sources = {s.name: s for s in corpus.SOURCES}
    monkeypatch.setattr(corpus, "SOURCES", (
        sources["brown"].__class__(**{**sources["brown"].__dict__, "fetch": lambda d: brown_dir}),
        sources["austen"].__class__(**{**sources["austen"].__dict__, "fetch": lambda d: austen_dir}),
        sources["web"].__class__(**{**sources["web"].__dict__, "fetch": lambda d: bible}),
    ))
    out = tmp_path / "corpus"
    summary = corpus.prepare(out, tmp_path / "downloads", n_shards=3, log=lambda m: None)
    lines = sorted(line for shard in sorted((out / "train").glob("*.txt")) for line in shard.read_text().splitlines())
    assert len(list((out / "train").glob("*.txt"))) == 3
    assert "The jury said ." in lines and "It rained ." in lines and "Jesus wept ." in lines
    assert lines.count("Another one .") == 6 and "Held out ." not in lines
    assert (out / "heldout.txt").read_text() == "Held out .\n"
    assert summary["sources"]["brown"] == {**summary["sources"]["brown"], "sentences": 2, "tokens": 7}
    assert summary["sources"]["austen"]["sentences"] == 12 and summary["sources"]["web"]["tokens"] == 7
    assert summary["train"]["tokens"] == sum(len(line.split()) for line in lines) == 7 + 6 * (5 + 3) + 7
    assert summary["heldout"] == {**summary["heldout"], "documents": 1, "sentences": 1, "tokens": 3}
    assert json.loads((out / "corpus.json").read_text()) == summary
    monkeypatch.setattr(corpus, "SOURCES", ())  # a second call reads corpus.json and fetches nothing
    assert corpus.prepare(out, tmp_path / "downloads", log=lambda m: None) == summary
