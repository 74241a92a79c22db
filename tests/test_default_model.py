"""The bundled default model: found when no model is named, a clear error while it is not built."""

from __future__ import annotations

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
    with pytest.raises(ValueError, match="give both options_file and weight_file"):
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


def test_package_data_lists_the_model_files():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    for name in ("options.json", "weights.hdf5", "MODEL_CARD.md"):
        assert f'"default/{name}"' in pyproject
