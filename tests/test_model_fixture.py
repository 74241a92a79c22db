"""The one test that matters most: the original implementation's own fixture, reproduced."""

import h5py
import numpy as np
import pytest
import torch

from reference.bilm_tf import ReferenceBiLM
from torch_elmo import ElmoEmbedder, batch_to_ids, kernels, load_bilm

from .conftest import MODEL


def expected_top_layer(list_index: int, sentence_index: int) -> np.ndarray:
    with h5py.File(MODEL / f"lm_embeddings_{list_index}.hdf5", "r") as f:
        forward, backward = f[str(sentence_index)][...]
    return np.concatenate([forward, backward], axis=-1)  # (n_tokens, 2P)


def original_batches(sentences):
    """Batch i is sentence i of each of the three lists, as the original test ran them."""
    return [[sentences[k * 10 + i] for k in range(3)] for i in range(10)]


@pytest.mark.parametrize("dtype, fused_from", [(torch.float32, kernels.FUSED_FROM), (torch.float32, 0),
                                                (torch.float64, kernels.FUSED_FROM)])
def test_stateful_embedder_matches_original(options_file, weight_file, fixture_sentences, dtype, fused_from,
                                            monkeypatch):
    """fused_from 0: every step's elementwise part compiled (kernels.cell, with its own tanh), as
    large batches run; the fixture's batches of three are otherwise too small for it."""
    monkeypatch.setattr(kernels, "FUSED_FROM", fused_from)
    monkeypatch.setattr(kernels.cell, "compiled", None)  # compiled here, not by an earlier test
    embedder = ElmoEmbedder(options_file, weight_file, dtype=dtype, stateful=True)
    for i, batch in enumerate(original_batches(fixture_sentences)):
        embeddings, mask = embedder.batch_to_embeddings(batch)
        assert mask.sum(dim=1).tolist() == [len(s) for s in batch]
        for k, sentence in enumerate(batch):
            top = embeddings[k, 2, : len(sentence)].numpy()
            assert np.allclose(top, expected_top_layer(k, i), atol=1e-6), f"batch {i}, sentence {k}"
    if fused_from == 0 and kernels.Fused.enabled:
        assert kernels.cell.compiled not in (None, False)


def test_stateless_differs_from_stateful_fixture(options_file, weight_file, fixture_sentences):
    """The fixture's later batches depend on the carried state: without it they must not match,
    which shows the test above really checks the state carried between batches."""
    bilm = load_bilm(options_file, weight_file)
    batch = original_batches(fixture_sentences)[1]
    with torch.no_grad():
        top = bilm(batch_to_ids(batch)).layers[-1]
    assert not np.allclose(top[0, 1 : len(batch[0]) + 1].numpy(), expected_top_layer(0, 1), atol=1e-6)


def test_numpy_reference_matches_original(options_file, weight_file, fixture_sentences):
    """Pins the test oracle (tests/reference.py) to the original, so that it may judge the cases
    the fixture does not cover."""
    reference = ReferenceBiLM(options_file, weight_file)
    states = [None] * 3
    for i, batch in enumerate(original_batches(fixture_sentences)[:3]):
        for k, sentence in enumerate(batch):
            layers, states[k] = reference.sentence(sentence, states[k])
            assert np.allclose(layers[2, 1:-1], expected_top_layer(k, i), atol=1e-6)
