"""The AllenNLP-compatible API: Elmo, ScalarMix, ElmoEmbedder."""

import numpy as np
import pytest
import torch

from torch_elmo import Elmo, ElmoEmbedder, ScalarMix, batch_to_ids, load_bilm

SENTENCES = [["The", "cat", "sat", "."], ["Dogs", "bark"], [], ["A", "bank", "of", "the", "river", "."]]


@pytest.fixture(scope="module")
def embedder(options_file, weight_file):
    return ElmoEmbedder(options_file, weight_file, dtype=torch.float64)


def test_elmo_output_shapes_and_mask(options_file, weight_file):
    elmo = Elmo(options_file, weight_file, 2, dropout=0.0)
    out = elmo(batch_to_ids(SENTENCES))
    assert len(out["elmo_representations"]) == 2
    assert out["elmo_representations"][0].shape == (4, 6, 32)
    assert out["mask"].sum(dim=1).tolist() == [4, 2, 0, 6]
    assert elmo.get_output_dim() == 32


def test_elmo_default_mix_is_average_of_layers(options_file, weight_file, embedder):
    elmo = Elmo(options_file, weight_file, 1, dropout=0.0).double()
    rep = elmo(batch_to_ids(SENTENCES))["elmo_representations"][0].detach().numpy()
    for i, array in enumerate(embedder.embed_batch(SENTENCES)):
        np.testing.assert_allclose(rep[i, : len(SENTENCES[i])], array.mean(axis=0), atol=1e-12)
        assert (rep[i, len(SENTENCES[i]) :] == 0).all()


def test_elmo_keeps_boundaries_when_asked(options_file, weight_file):
    elmo = Elmo(options_file, weight_file, 1, dropout=0.0, keep_sentence_boundaries=True)
    out = elmo(batch_to_ids(SENTENCES))
    assert out["elmo_representations"][0].shape == (4, 8, 32)
    assert out["mask"].sum(dim=1).tolist() == [6, 4, 2, 8]


def test_elmo_accepts_more_than_three_dimensions(options_file, weight_file):
    elmo = Elmo(options_file, weight_file, 1, dropout=0.0)
    ids = batch_to_ids(SENTENCES)
    flat = elmo(ids)
    nested = elmo(ids.view(2, 2, *ids.shape[1:]))
    assert nested["elmo_representations"][0].shape == (2, 2, 6, 32)
    assert nested["mask"].shape == (2, 2, 6)
    torch.testing.assert_close(nested["elmo_representations"][0].view(4, 6, 32), flat["elmo_representations"][0])


def test_fixed_scalar_mix_parameters(options_file, weight_file, embedder):
    elmo = Elmo(options_file, weight_file, 1, dropout=0.0, scalar_mix_parameters=[0.0, 0.0, 100.0]).double()
    assert not any(p.requires_grad for p in elmo.parameters())
    rep = elmo(batch_to_ids(SENTENCES[:1]))["elmo_representations"][0].detach().numpy()
    np.testing.assert_allclose(rep[0], embedder.embed_sentence(SENTENCES[0])[2], atol=1e-12)
    np.testing.assert_allclose(elmo.layer_weights()[0].numpy(), [0, 0, 1], atol=1e-12)


def test_scalar_mix_learns_and_reports_weights():
    mix = ScalarMix(3, initial_scalar_parameters=[1.0, 2.0, 3.0])
    tensors = [torch.full((2, 4, 5), float(k)) for k in range(3)]
    mix.gamma.data.fill_(2.0)
    w = torch.softmax(torch.tensor([1.0, 2.0, 3.0]), 0)
    torch.testing.assert_close(mix(tensors), 2.0 * sum(w[k] * tensors[k] for k in range(3)))
    torch.testing.assert_close(mix.layer_weights, w)
    mix(tensors).sum().backward()
    assert all(p.grad is not None for p in mix.parameters())


def test_scalar_mix_layer_norm_uses_only_unmasked_values():
    torch.manual_seed(0)
    mix = ScalarMix(2, do_layer_norm=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    tensors = [torch.randn(2, 3, 4) for _ in range(2)]
    out = mix(tensors, mask)
    changed = [t.clone() for t in tensors]
    for t in changed:
        t[~mask] = 1e6  # padded values must not move the statistics
    torch.testing.assert_close(out[mask], mix(changed, mask)[mask])
    values = tensors[0][mask]
    normed = (values - values.mean()) / values.std(unbiased=False)
    solo = ScalarMix(2, do_layer_norm=True, initial_scalar_parameters=[100.0, 0.0])
    torch.testing.assert_close(solo(tensors, mask)[mask], normed, atol=1e-5, rtol=1e-5)


def test_scalar_mix_bad_arguments():
    with pytest.raises(ValueError, match="one value per layer"):
        ScalarMix(3, initial_scalar_parameters=[0.0])
    with pytest.raises(ValueError, match="needs the mask"):
        ScalarMix(2, do_layer_norm=True)([torch.zeros(1, 2, 3)] * 2)


def test_vocab_cache_gives_identical_outputs(options_file, weight_file):
    vocab = ["@@PADDING@@", "The", "cat", "sat", ".", "bank"]
    cached = Elmo(options_file, weight_file, 1, dropout=0.0, vocab_to_cache=vocab)
    plain = Elmo(options_file, weight_file, 1, dropout=0.0)
    sentences = [["The", "cat", "sat", "."], ["cat", "unknown-word", "bank"]]
    index = {w: i for i, w in enumerate(vocab)}
    word_ids = torch.tensor([[index.get(w, len(vocab)) for w in s] + [0] * (4 - len(s)) for s in sentences])
    ids = batch_to_ids(sentences)
    a = cached(ids, word_ids)["elmo_representations"][0]
    b = plain(ids)["elmo_representations"][0]
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert cached.bilm.word_cache.shape == (len(vocab), 16)


def test_requires_grad_reaches_every_bilm_weight(options_file, weight_file):
    frozen = Elmo(options_file, weight_file, 1)
    assert not any(p.requires_grad for p in frozen.bilm.parameters())
    elmo = Elmo(options_file, weight_file, 1, requires_grad=True, dropout=0.0)
    elmo(batch_to_ids(SENTENCES))["elmo_representations"][0].pow(2).sum().backward()
    for name, p in elmo.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dropout_only_in_training(options_file, weight_file):
    elmo = Elmo(options_file, weight_file, 1, dropout=0.5)
    ids = batch_to_ids(SENTENCES)
    elmo.eval()
    torch.testing.assert_close(elmo(ids)["elmo_representations"][0], elmo(ids)["elmo_representations"][0])
    elmo.train()
    assert (elmo(ids)["elmo_representations"][0] == 0).float().mean() > 0.3


def test_embedder_shapes_and_edge_cases(embedder):
    assert embedder.embed_batch([]) == []
    assert embedder.embed_sentence([]).shape == (3, 0, 32)
    arrays = embedder.embed_batch(SENTENCES)
    assert [a.shape for a in arrays] == [(3, 4, 32), (3, 2, 32), (3, 0, 32), (3, 6, 32)]
    np.testing.assert_allclose(arrays[0], embedder.embed_sentence(SENTENCES[0]), atol=1e-12)


def test_embed_sentences_keeps_order_and_values(embedder):
    sentences = [SENTENCES[i % 4][: (i * 7) % 6] + [str(i)] for i in range(23)]
    streamed = list(embedder.embed_sentences(iter(sentences), batch_size=3))
    assert len(streamed) == 23
    for sentence, array in zip(sentences, streamed):
        np.testing.assert_allclose(array, embedder.embed_sentence(sentence), atol=1e-12)


def test_embedder_float32_is_default(options_file, weight_file):
    array = ElmoEmbedder(options_file, weight_file).embed_sentence(["word"])
    assert array.dtype == np.float32


def test_load_bilm_on_float64(options_file, weight_file):
    bilm = load_bilm(options_file, weight_file, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in bilm.parameters())


def test_wrong_input_shapes_are_explained(options_file, weight_file):
    elmo = Elmo(options_file, weight_file, 1)
    with pytest.raises(ValueError, match="batch_to_ids"):
        elmo(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(batch, tokens, 50\)"):
        elmo.bilm(torch.zeros(2, 5, 49, dtype=torch.long))
    with pytest.raises(ValueError, match="integer dtype"):
        elmo.bilm(torch.zeros(2, 5, 50))


def test_empty_batch_through_every_entry_point(options_file, weight_file, embedder):
    elmo = Elmo(options_file, weight_file, 1)
    out = elmo(batch_to_ids([]))
    assert out["elmo_representations"][0].shape == (0, 0, 32) and out["mask"].shape == (0, 0)
    embeddings, mask = embedder.batch_to_embeddings([])
    assert embeddings.shape == (0, 3, 0, 32)
    assert list(embedder.embed_sentences([])) == []


def test_odd_tokens_embed(embedder):
    sentence = ["x" * 200, "a\ud800b", " ", "\t", "日本語のテキスト" * 5, ""]
    array = embedder.embed_sentence(sentence)
    assert array.shape == (3, 6, 32) and np.isfinite(array).all()
    # the token vector only sees the first 48 bytes, and lone surrogates are dropped
    np.testing.assert_allclose(array[0, 0], embedder.embed_sentence(["x" * 48])[0, 0], atol=1e-12)
    np.testing.assert_allclose(array[0, 1], embedder.embed_sentence(["ab"])[0, 0], atol=1e-12)


@pytest.mark.parametrize("cache_size", [0, 3, 50_000])
def test_token_cache_changes_nothing_but_speed(options_file, weight_file, cache_size):
    plain = ElmoEmbedder(options_file, weight_file, dtype=torch.float64, token_cache_size=0)
    cached = ElmoEmbedder(options_file, weight_file, dtype=torch.float64, token_cache_size=cache_size)
    batches = [SENTENCES, [["the", "cat", "again"], ["bank", "new", "words", "here"]], SENTENCES[::-1]]
    for batch in batches:
        for a, b in zip(plain.embed_batch(batch), cached.embed_batch(batch)):
            np.testing.assert_allclose(a, b, atol=1e-12)
    assert len(cached._token_rows) == min(cache_size, 15)


@pytest.mark.parametrize("has_bf16", [False, True])
def test_bfloat16_on_a_cpu_without_bf16_matmul_warns(options_file, weight_file, monkeypatch, has_bf16):
    """bfloat16 is 0.29x float32 on a CPU without AVX-512 BF16 or AMX: the embedder says so."""
    import warnings

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: has_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embedder = ElmoEmbedder(options_file, weight_file, dtype=torch.bfloat16)
        ElmoEmbedder(options_file, weight_file)  # float32: never
    messages = [str(w.message) for w in caught if "bfloat16" in str(w.message)]
    assert len(messages) == (0 if has_bf16 else 1)
    if messages:
        assert "slower than float32" in messages[0] and "use float32" in messages[0]
    assert embedder.embed_sentence(["a", "b"]).shape == (3, 2, 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_on_a_gpu_the_embedders_arrays_are_the_cpus(options_file, weight_file, dtype, monkeypatch):
    """On CUDA each batch's arrays travel to the host while the next batch runs: batch after
    batch (an empty sentence, an all-empty batch, sentences of many lengths), the arrays are those
    of the CPU, of the GPU copying batch by batch, and of embed_batch; bfloat16 arrives as float32."""
    words = "the bank of the river is where I went to sit .".split()
    sentences = [words[: (7 * i) % 12] for i in range(40)] + [[], []]
    cpu = ElmoEmbedder(options_file, weight_file, dtype=dtype)
    gpu = ElmoEmbedder(options_file, weight_file, dtype=dtype, device="cuda")
    expected = list(cpu.embed_sentences(sentences, batch_size=3))
    overlapped = list(gpu.embed_sentences(sentences, batch_size=3))
    monkeypatch.setattr(ElmoEmbedder, "OVERLAP_COPIES", False)
    in_turn = list(gpu.embed_sentences(sentences, batch_size=3))
    atol = 1e-9 if dtype == torch.float64 else 0.1
    for a, b, c, d in zip(overlapped, in_turn, expected, gpu.embed_batch(sentences)):
        assert a.dtype == (np.float64 if dtype == torch.float64 else np.float32) and a.flags.owndata
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, atol=atol, rtol=0)
        np.testing.assert_allclose(d, c, atol=atol, rtol=0)
