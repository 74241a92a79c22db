"""Shared fixtures: the original implementation's files in ../shared/fixtures/bilm-tf."""

import json
import shutil
from pathlib import Path

import pytest
import torch

# The test models are tiny: one thread is faster than two fighting over two cores.
torch.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "bilm-tf"
MODEL = FIXTURES / "model"


def pytest_configure(config):
    if not MODEL.is_dir():
        raise pytest.UsageError(f"{FIXTURES} not found: the tests need ../shared beside the project root")


@pytest.fixture(scope="session")
def options_file() -> Path:
    return MODEL / "options.json"


@pytest.fixture(scope="session")
def weight_file() -> Path:
    return MODEL / "lm_weights.hdf5"


@pytest.fixture(scope="session")
def fixture_sentences() -> list[list[str]]:
    """The fixture's 30 sentences, tokenized, in the order list 0, list 1, list 2."""
    lists = json.loads((MODEL / "lm_embeddings_sentences.json").read_text())
    return [s.split() for sentences in lists for s in sentences]


@pytest.fixture
def skip_model(tmp_path, options_file, weight_file) -> tuple[Path, Path]:
    """The fixture model with use_skip_connections true (same weights)."""
    options = json.loads(options_file.read_text())
    options["lstm"]["use_skip_connections"] = True
    (tmp_path / "options.json").write_text(json.dumps(options))
    shutil.copy(weight_file, tmp_path / "weights.hdf5")
    return tmp_path / "options.json", tmp_path / "weights.hdf5"
