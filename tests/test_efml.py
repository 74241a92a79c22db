"""ELMoForManyLangs models (efml.py) against what its own code computes, on the stored fixture
tests/fixtures/efml (written by bench/efml_fixture.py in the peer environment; this test needs only
the stored files), and the folder errors.

    python tests/test_efml.py [FIXTURE_DIR]   # prints the max |ours - theirs| per layer

TORCH_ELMO_EFML_FIXTURE=DIR adds another fixture (e.g. the published size, `--full DIR`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from functools import cache
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from torch_elmo import EfmlBiLM, EfmlFormatError, Elmo, ElmoEmbedder, batch_to_ids, load_bilm, load_efml
from torch_elmo.cli import main
from torch_elmo.efml import is_efml_model, parse_dictionary

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "efml"
FIXTURES = [FIXTURE] + ([Path(os.environ["TORCH_ELMO_EFML_FIXTURE"])] if os.environ.get("TORCH_ELMO_EFML_FIXTURE") else [])
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-9}  # the bounds
TAG = {torch.float32: "f32", torch.float64: "f64"}
W100 = FIXTURE / "w100"


@cache
def fixture(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads((folder / "fixture.json").read_text(encoding="utf-8"))
    with np.load(folder / "expected.npz") as f:
        return meta, {k: f[k] for k in f.files}


def sentences(folder: Path) -> list[list[str]]:
    return [s for batch in fixture(folder)[0]["batches"] for s in batch]


def layer_diffs(got: list[np.ndarray], want: list[np.ndarray]) -> np.ndarray:
    """Max |got - want| per layer over all sentences."""
    diffs = [np.abs(g - w).max(axis=(1, 2)) for g, w in zip(got, want, strict=True) if w.size]
    assert all(g.shape == w.shape for g, w in zip(got, want))
    return np.max(diffs, axis=0)


def ours_by_batch(folder: Path, model: str, dtype: torch.dtype) -> list[np.ndarray]:
    """Our ElmoEmbedder on its batches, as they were given to its Embedder."""
    embedder = ElmoEmbedder(folder / model, dtype=dtype)
    return [a for batch in fixture(folder)[0]["batches"] for a in embedder.embed_batch(batch)]


def theirs(folder: Path, model: str, dtype: torch.dtype, kind: str = "") -> list[np.ndarray]:
    meta, expected = fixture(folder)
    n = len(sentences(folder)) if not kind else len(meta["batches"][0])
    return [expected[f"{model}/{kind}{TAG[dtype]}/{i}"] for i in range(n)]


def cases():
    return [pytest.param(folder, model, dtype, id=f"{folder.name}-{model}-{TAG[dtype]}")
            for folder in FIXTURES for model in fixture(folder)[0]["models"] for dtype in TAG]


# --------------------------------------------------------------------------------------------
# Exactness against its code


@pytest.mark.parametrize("folder, model, dtype", cases())
def test_fixture_every_layer_as_its_embedder(folder, model, dtype):
    want = theirs(folder, model, dtype)
    got = ours_by_batch(folder, model, dtype)
    assert len(got) >= 50 and {a.shape[0] for a in got} == {3}
    assert layer_diffs(got, want).max() < TOLERANCE[dtype]


@pytest.mark.parametrize("folder, model, dtype", cases())
def test_fixture_streamed_and_with_boundaries(folder, model, dtype):
    """Grouped by length (other batches, other padding) the same vectors; with the <bos>/<eos>
    positions (keep_sentence_boundaries) those of its model's forward."""
    got = list(ElmoEmbedder(folder / model, dtype=dtype).embed_sentences(sentences(folder), batch_size=16))
    assert layer_diffs(got, theirs(folder, model, dtype)).max() < TOLERANCE[dtype]
    bilm = load_bilm(folder / model, None, dtype=dtype)
    batch = fixture(folder)[0]["batches"][0]
    with torch.no_grad():
        out = bilm(bilm.batch_to_ids(batch), boundaries=True)
    layers = torch.stack(out.layers).numpy()  # (3, B, T + 2, 2P)
    lengths = out.mask.sum(dim=1).tolist()
    got = [layers[:, i, :n] for i, n in enumerate(lengths)]
    assert layer_diffs(got, theirs(folder, model, dtype, "bounds_")).max() < TOLERANCE[dtype]


@pytest.mark.parametrize("folder", FIXTURES, ids=lambda f: f.name)
def test_ids_are_those_of_its_create_one_batch(folder):
    """Its char and word ids, <bos>/<eos> and the swapped <bow>/<eow> labels included, for every
    token: truncated to 48 characters, <oov> for unknown chars and words."""
    meta, expected = fixture(folder)
    vocab = load_efml(folder / meta["models"][0]).vocab
    for i, sentence in enumerate(sentences(folder)):
        ids = np.array([vocab.token_ids(t) for t in ["<bos>", *sentence, "<eos>"]]) - 1
        np.testing.assert_array_equal(ids[:, 1:], expected[f"ids/chars/{i}"])
        np.testing.assert_array_equal(ids[:, 0], expected[f"ids/words/{i}"])
    first = vocab.token_ids("ab")
    assert first[1] == vocab.chars["<eow>"] + 1 and first[4] == vocab.chars["<bow>"] + 1  # as its code assigns


def test_batch_ids_are_each_tokens_ids_in_place():
    """A batch (tokens repeated within and across sentences, an empty sentence, `<bos>` inside
    one, a token past 48 characters) holds each token's `token_ids` at its place, zeros after."""
    vocab = load_efml(W100).vocab
    batch = [["the", "cat", "the"], [], ["<bos>", "x" * 60, "cat", "🙂", "the"], ["cat"]]
    ids = vocab.batch_to_ids(batch)
    assert ids.shape == (4, 5, vocab.width) and ids.dtype == torch.long
    for i, sentence in enumerate(batch):
        want = torch.zeros(5, vocab.width, dtype=torch.long)
        if sentence:
            want[: len(sentence)] = torch.tensor([vocab.token_ids(t) for t in sentence])
        assert torch.equal(ids[i], want)
    assert vocab.batch_to_ids([]).shape == (0, 0, vocab.width)
    assert vocab.batch_to_ids([[], []]).shape == (2, 0, vocab.width)


def test_elmo_module_mixes_its_layers():
    """`Elmo` on its ids: equal weights give its `sents2elmo(output_layer=-1)` (the mean of the
    layers); a cached vocabulary changes nothing."""
    batch = fixture(FIXTURE)[0]["batches"][1]
    want = theirs(FIXTURE, "w100", torch.float32)[len(fixture(FIXTURE)[0]["batches"][0]):][: len(batch)]
    for vocab in (None, ["pravo", "права", "<bos>"] + [t for s in batch for t in s][:10]):
        elmo = Elmo(W100, None, 1, dropout=0.0, scalar_mix_parameters=[0.0, 0.0, 0.0], vocab_to_cache=vocab)
        assert elmo.get_output_dim() == 32
        ids = elmo.bilm.batch_to_ids(batch)
        words = None
        if vocab:  # rows of the cached vocabulary (0, its first entry, is padding: computed afresh)
            rows = {t: k for k, t in enumerate(vocab)}
            words = torch.tensor([[rows.get(t, 0) for t in s] + [0] * (ids.shape[1] - len(s)) for s in batch])
        out = elmo(ids, words)
        vectors, mask = out["elmo_representations"][0].detach(), out["mask"]
        for i, array in enumerate(want):
            assert mask[i].sum() == array.shape[1]
            np.testing.assert_allclose(vectors[i, : array.shape[1]].numpy(), array.mean(axis=0), atol=1e-5)


def test_zip_as_published_gives_the_same_vectors(tmp_path):
    """The zip of a model folder (files inside a folder, macOS metadata beside) loads as the folder."""
    archive = tmp_path / "144.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in W100.iterdir():
            z.write(path, f"en.model/{path.name}")
        z.writestr("__MACOSX/en.model/._config.json", b"\0junk")
    assert is_efml_model(archive)
    batch = fixture(FIXTURE)[0]["batches"][2]
    a, b = (ElmoEmbedder(p).embed_batch(batch) for p in (W100, archive))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


# --------------------------------------------------------------------------------------------
# Edge cases


def test_edge_cases_where_its_code_crashes_or_differs():
    embedder = ElmoEmbedder(W100)
    assert embedder.embed_batch([]) == []  # its Embedder divides by zero on an empty list
    assert [a.shape for a in embedder.embed_batch([[], ["x"]])] == [(3, 0, 32), (3, 1, 32)]
    bilm = embedder.bilm
    with pytest.raises(ValueError, match="own batch_to_ids"):  # bilm-tf's byte ids are not its ids
        bilm(batch_to_ids([["a"]]))
    with pytest.raises(TypeError, match="tokenized"):
        bilm.batch_to_ids(["a sentence"])
    for bad in (7, None, ["nested"]):  # a token that is not a string is named
        with pytest.raises(TypeError, match=f"a token must be a string, got {type(bad).__name__}"):
            bilm.batch_to_ids([["a", "b"], ["c", bad]])
    with pytest.raises(ValueError, match="stateful"):
        ElmoEmbedder(W100, stateful=True)
    # a 60-character token is its first 48 characters, for the char and the word ids alike
    vocab = bilm.vocab
    word = next(w for w in vocab.words if len(w) > 3 and w.isalpha())
    assert vocab.token_ids(word + "x" * 60) == vocab.token_ids((word + "x" * 60)[:48])
    assert vocab.token_ids(word)[0] == vocab.words[word] + 1
    assert vocab.token_ids("🙂")[2] == vocab.chars["<oov>"] + 1
    assert vocab.token_ids("<bos>") == bilm.boundary_ids[0].tolist()


def test_dictionary_lines_read_as_its_code_reads_them():
    text = "a\t0\n\u3000\t1\r\nb\t2\u2028c\t3\n\xa0\t4\n"  # U+2028 ends a line for its codecs reader
    assert parse_dictionary(text, "x") == {"a": 0, "\u3000": 4, "b": 2, "c": 3}  # NBSP strips to U+3000 too
    for bad in ("a\t0\n\nb\t1\n", "a\tb\tc\n", "a\tx\n"):
        with pytest.raises(EfmlFormatError, match="line"):
            parse_dictionary(bad, "x.dic")


# --------------------------------------------------------------------------------------------
# Folders: what is wrong, said in one line


def copy_model(tmp_path, model="w100") -> Path:
    folder = tmp_path / model
    shutil.copytree(FIXTURE / model, folder)
    return folder


@pytest.mark.parametrize("name", ["config.json", "char.dic", "word.dic", "token_embedder.pkl", "encoder.pkl"])
def test_missing_file(tmp_path, name):
    folder = copy_model(tmp_path)
    (folder / name).unlink()
    with pytest.raises(EfmlFormatError, match=f"no {name}") as error:
        load_bilm(folder, None)
    assert "\n" not in str(error.value) and str(folder) in str(error.value)


def test_word_dic_not_needed_without_word_embedding(tmp_path):
    folder = copy_model(tmp_path, "w0")
    (folder / "word.dic").unlink()
    assert load_efml(folder).vocab.words is None


def test_config_path_resolution(tmp_path):
    folder = copy_model(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    arch = folder / Path(config["config_path"]).name
    config["config_path"] = arch.name  # relative: beside the model
    (folder / "config.json").write_text(json.dumps(config))
    assert isinstance(load_bilm(folder, None), EfmlBiLM)
    config["config_path"] = str(tmp_path / "elsewhere.json")  # absolute and present: taken as given
    shutil.move(arch, tmp_path / "elsewhere.json")
    (folder / "config.json").write_text(json.dumps(config))
    assert isinstance(load_bilm(folder, None), EfmlBiLM)
    config["config_path"] = "C:\\Users\\someone\\nowhere.json"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(EfmlFormatError, match="nowhere.json.*known architectures.*cnn_50_100_512_4096_sample"):
        load_bilm(folder, None)
    # the published name resolves to the bundled architecture: the published sizes, not these weights
    config["config_path"] = "/Users/yijialiu/work/projects/conll2018/models/word_elmo/cnn_50_100_512_4096_sample.json"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(EfmlFormatError, match=r"token_embedder.pkl: 'convolutions.0.weight' has shape \(4, 50, 1\), "
                                              r"expected \(32, 50, 1\) .*cnn_50_100_512_4096_sample.json gives"):
        load_bilm(folder, None)


def test_mismatched_shapes_and_bad_files(tmp_path):
    folder = copy_model(tmp_path)
    with open(folder / "word.dic", "a", encoding="utf-8") as f:
        f.write("newword\t1004\n")
    with pytest.raises(EfmlFormatError, match=r"'word_emb_layer.embedding.weight' has shape \(1004, 100\), "
                                              r"expected \(1005, 100\) \(char.dic has 3403 entries, word.dic 1005"):
        load_bilm(folder, None)

    folder = copy_model(tmp_path / "2")
    state = torch.load(folder / "encoder.pkl", weights_only=True)
    state["forward_layer_1.state_projection.weight"] = state["forward_layer_1.state_projection.weight"][:, :-1]
    torch.save(state, folder / "encoder.pkl")
    with pytest.raises(EfmlFormatError, match=r"encoder.pkl: 'forward_layer_1.state_projection.weight' has shape"):
        load_bilm(folder, None)
    del state["forward_layer_1.state_projection.weight"]
    torch.save(state, folder / "encoder.pkl")
    with pytest.raises(EfmlFormatError, match=r"encoder.pkl: no tensor 'forward_layer_1.state_projection.weight'"):
        load_bilm(folder, None)

    (folder / "encoder.pkl").write_bytes(b"not a pickle")
    with pytest.raises(EfmlFormatError, match="encoder.pkl: not a PyTorch state dict"):
        load_bilm(folder, None)
    torch.save({"weights": torch.zeros(1), "model": EfmlFormatError("an object")}, folder / "encoder.pkl")
    with pytest.raises(EfmlFormatError, match="weights_only=True"):  # never unpickles arbitrary objects
        load_bilm(folder, None)

    folder = copy_model(tmp_path / "3")
    lines = (folder / "char.dic").read_text(encoding="utf-8").splitlines()
    (folder / "char.dic").write_text("\n".join(x for x in lines if not x.startswith("<bow>")) + "\n", encoding="utf-8")
    with pytest.raises(EfmlFormatError, match="char.dic: no entry for <bow>"):
        load_bilm(folder, None)
    (folder / "config.json").write_text("{")
    with pytest.raises(EfmlFormatError, match="config.json: not JSON"):
        load_bilm(folder, None)


def test_format_detection(tmp_path):
    assert is_efml_model(W100) and not is_efml_model(W100 / "config.json") and not is_efml_model(tmp_path)
    (tmp_path / "options.json").write_text("{}")
    (tmp_path / "config.json").write_text("{}")
    assert not is_efml_model(tmp_path)  # a bilm-tf model folder


# --------------------------------------------------------------------------------------------
# The command


def test_elmo_embed_and_its_errors(tmp_path, capsys):
    batch = fixture(FIXTURE)[0]["batches"][1]
    lines = [" ".join(s) for s in batch]
    text = tmp_path / "in.txt"
    text.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    assert main(["embed", str(text), str(tmp_path / "out.hdf5"), "--options", str(W100), "--quiet"]) == 0
    want = ElmoEmbedder(W100).embed_batch([line.split() for line in lines])
    with h5py.File(tmp_path / "out.hdf5", "r") as f:
        for i, array in enumerate(want):
            np.testing.assert_allclose(f[str(i)][...], array, atol=1e-6)
    assert main(["dump-token-embeddings", str(text), str(tmp_path / "tok.hdf5"), "--options", str(W100)]) == 0
    folder = copy_model(tmp_path)
    (folder / "char.dic").unlink()
    capsys.readouterr()
    assert main(["embed", str(text), str(tmp_path / "out2.hdf5"), "--options", str(folder), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no char.dic" in err


if __name__ == "__main__":  # the figures: max |ours - theirs| per layer
    for folder in [Path(p) for p in sys.argv[1:]] or FIXTURES:
        for model in fixture(folder)[0]["models"]:
            for dtype in TAG:
                d = layer_diffs(ours_by_batch(folder, model, dtype), theirs(folder, model, dtype))
                print(f"{folder.name}/{model} {TAG[dtype]}: " + "  ".join(f"layer {k} {v:.2e}" for k, v in enumerate(d)))
