"""The biLM's semantics: stateless determinism, the original's stateful mode, skip connections,
long and empty sentences, judged against the numpy reference of bilm-tf's equations."""

import numpy as np
import pytest
import torch

from reference.bilm_tf import ReferenceBiLM
from torch_elmo import BiLM, BiLMConfig, batch_to_ids, kernels, load_bilm

SENTENCES = [
    "the bank of the river was muddy .".split(),
    "she deposited money at the bank".split(),
    ["ok"],
    "a much longer sentence than the others , with commas , and a few more words at the end".split(),
]


def run(bilm, sentences):
    with torch.no_grad():
        out = bilm(batch_to_ids(sentences))
    return torch.stack(out.layers, dim=1).numpy(), out.mask.numpy()  # (B, L+1, T+2, 2P), (B, T+2)


@pytest.fixture(scope="module")
def bilm64(options_file, weight_file):
    return load_bilm(options_file, weight_file, dtype=torch.float64)


@pytest.mark.parametrize("implementation, gate_rows", [("fast", 1), ("fast", 5), ("fast", 1024), ("plain", None)])
def test_stateless_matches_reference(options_file, weight_file, implementation, gate_rows, monkeypatch):
    """Either implementation; the fast one whatever the number of steps whose input-to-gates
    product it computes at once."""
    if gate_rows is not None:
        monkeypatch.setattr(kernels, "GATE_ROWS", gate_rows)
    reference = ReferenceBiLM(options_file, weight_file)
    bilm = load_bilm(options_file, weight_file, dtype=torch.float64, implementation=implementation)
    layers, mask = run(bilm, SENTENCES)
    for i, sentence in enumerate(SENTENCES):
        n = len(sentence) + 2
        assert mask[i].sum() == n and mask[i, :n].all()
        expected, _ = reference.sentence(sentence)
        np.testing.assert_allclose(layers[i, :, :n], expected, atol=1e-10)
        assert (layers[i, :, n:] == 0).all()  # nothing leaks into the padding


def test_layer_zero_is_token_twice(bilm64):
    layers, _ = run(bilm64, SENTENCES[:1])
    token = layers[0, 0]
    assert token.shape[-1] == 32
    np.testing.assert_array_equal(token[:, :16], token[:, 16:])


def test_a_sentence_does_not_depend_on_its_batch(options_file, weight_file):
    """Same sentence, other batch mates, other position, other padding: same vectors."""
    bilm = load_bilm(options_file, weight_file)
    target = SENTENCES[0]
    alone, _ = run(bilm, [target])
    n = len(target) + 2
    for batch, row in [([SENTENCES[3], target], 1), ([SENTENCES[2], target, SENTENCES[1]], 1),
                       ([target, SENTENCES[3], SENTENCES[3]], 0)]:
        for _ in range(2):  # twice: no state survives a batch
            layers, _ = run(bilm, batch)
            np.testing.assert_allclose(layers[row, :, :n], alone[0, :, :n], atol=1e-6)


def test_stateful_carries_each_row_and_keeps_rows_beyond_the_batch(options_file, weight_file):
    reference = ReferenceBiLM(options_file, weight_file)
    bilm = load_bilm(options_file, weight_file, dtype=torch.float64, stateful=True)
    first, second, third = SENTENCES[:3], SENTENCES[3:4], [SENTENCES[1], SENTENCES[0], SENTENCES[3]]
    states = [reference.sentence(s)[1] for s in first]
    run(bilm, first)
    layers, _ = run(bilm, second)  # one row: rows 1 and 2 must keep their state
    expected, states[0] = reference.sentence(second[0], states[0])
    np.testing.assert_allclose(layers[0, :, : len(second[0]) + 2], expected, atol=1e-10)
    layers, _ = run(bilm, third)
    for i, sentence in enumerate(third):
        expected, _ = reference.sentence(sentence, states[i])
        np.testing.assert_allclose(layers[i, :, : len(sentence) + 2], expected, atol=1e-10)
    bilm.reset_states()
    layers, _ = run(bilm, third[:1])
    np.testing.assert_allclose(layers[0, :, : len(third[0]) + 2], reference.sentence(third[0])[0], atol=1e-10)


def test_rows_beyond_the_previous_batch_start_from_zero(options_file, weight_file):
    bilm = load_bilm(options_file, weight_file, dtype=torch.float64, stateful=True)
    fresh = load_bilm(options_file, weight_file, dtype=torch.float64)
    run(bilm, SENTENCES[:1])
    layers, _ = run(bilm, SENTENCES[:3])
    expected, _ = run(fresh, SENTENCES[:3])
    np.testing.assert_allclose(layers[1:], expected[1:], atol=1e-12)
    assert not np.allclose(layers[0], expected[0])


def test_skip_connections_match_reference(skip_model):
    reference = ReferenceBiLM(*skip_model)
    bilm = load_bilm(*skip_model, dtype=torch.float64)
    assert bilm.config.use_skip_connections
    layers, _ = run(bilm, SENTENCES)
    for i, sentence in enumerate(SENTENCES):
        n = len(sentence) + 2
        np.testing.assert_allclose(layers[i, :, :n], reference.sentence(sentence)[0], atol=1e-10)


def test_2000_token_sentence(options_file, weight_file):
    words = "the quick brown fox jumps over the lazy dog ; then it rests .".split()
    sentence = [words[i % len(words)] for i in range(2000)]
    bilm = load_bilm(options_file, weight_file, dtype=torch.float64)
    layers, mask = run(bilm, [sentence, ["short"]])
    assert layers.shape == (2, 3, 2002, 32) and mask.sum(axis=1).tolist() == [2002, 3]
    expected, _ = ReferenceBiLM(options_file, weight_file).sentence(sentence)
    np.testing.assert_allclose(layers[0], expected, atol=1e-9)


def test_empty_sentences_get_only_boundaries(bilm64):
    layers, mask = run(bilm64, [[], ["word"], []])
    assert mask.sum(axis=1).tolist() == [2, 3, 2]
    assert np.isfinite(layers).all()


def test_gradients_reach_every_weight(options_file, weight_file):
    bilm = load_bilm(options_file, weight_file).train()
    out = bilm(batch_to_ids(SENTENCES))
    sum(layer.sum() for layer in out.layers).backward()
    for name, p in bilm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_random_config_builds_and_runs_forward_only():
    config = BiLMConfig(filters=((1, 4), (2, 4)), char_embed_dim=4, n_highway=1, lstm_dim=8,
                        projection_dim=6, n_layers=3, n_directions=1)
    layers, _ = run(BiLM(config), SENTENCES)
    assert layers.shape[1:] == (4, max(map(len, SENTENCES)) + 2, 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu(options_file, weight_file):
    cpu = load_bilm(options_file, weight_file, dtype=torch.float64)
    gpu = load_bilm(options_file, weight_file, dtype=torch.float64, device="cuda")
    with torch.no_grad():
        a = cpu(batch_to_ids(SENTENCES)).layers[-1]
        b = gpu(batch_to_ids(SENTENCES).cuda()).layers[-1].cpu()
    torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_a_new_char_cnn_is_initialised_as_bilm_tf(activation):
    """Training from scratch starts where bilm-tf (and Kim et al.) start: highway layers that
    mostly carry their input (carry bias -2), char embeddings in [-1, 1], scaled convolutions."""
    from torch_elmo.model import CharCNN

    torch.manual_seed(0)
    cnn = CharCNN(BiLMConfig(filters=((2, 512), (3, 256)), char_embed_dim=16, n_highway=2, activation=activation,
                             projection_dim=128)).requires_grad_(False)
    for highway in cnn.highways:
        bias = highway.linear.bias
        assert torch.all(bias[:768] == 0) and torch.all(bias[768:] == -2.0)
        assert abs(float(highway.linear.weight.std()) - (1 / 768) ** 0.5) < 0.002
    emb = cnn.char_embedding.weight
    assert torch.all(emb[0] == 0) and float(emb.abs().max()) <= 1.0 and float(emb.abs().mean()) > 0.4
    conv = cnn.convs[0].weight  # width 2, 16-dim embeddings
    if activation == "relu":
        assert abs(float(conv.std()) - (1 / 32) ** 0.5) < 0.01
    else:
        assert float(conv.abs().max()) <= 0.05
    assert all(torch.all(c.bias == 0) for c in cnn.convs)
    assert abs(float(cnn.projection.weight.std()) - (1 / 768) ** 0.5) < 0.002


def test_token_dropout_applies_to_the_first_layers_input_only():
    """Kim et al. drop between LSTM layers but not the token vectors; bilm-tf drops both."""
    from torch_elmo.model import BiLMConfig, ElmoLstm

    x = torch.randn(2, 12, 8)  # (D, N, P) packed: 4 rows x 3 steps
    outputs = {}
    for token_dropout in (None, 0.0):
        lstm = ElmoLstm(BiLMConfig(lstm_dim=16, projection_dim=8, n_layers=2, dropout=0.5,
                                   token_dropout=token_dropout)).train()
        with torch.no_grad():
            runs = [lstm(x, [4, 4, 4])[0] for _ in range(2)]  # per run: each layer's output
        outputs[token_dropout] = runs
    same_first = [torch.equal(a[0], b[0]) for a, b in (outputs[None], outputs[0.0])]
    assert same_first == [False, True]  # layer 1 is deterministic only without token dropout
    assert not torch.equal(outputs[0.0][0][1], outputs[0.0][1][1])  # layer 2's input is still dropped


def test_trimming_the_padding_columns_keeps_the_char_cnn_output_and_gradients(monkeypatch):
    """The char CNN drops the columns that only padding fills: the same vectors and weight
    gradients as over all 50 columns, for short words, a 48-byte token, and no-token rows."""
    from torch_elmo.model import CharCNN

    torch.manual_seed(0)
    cnn = CharCNN(BiLMConfig(filters=((1, 4), (3, 6), (7, 8)), char_embed_dim=5, n_highway=1,
                             activation="tanh", projection_dim=6)).double()

    def vectors_and_gradients(ids):
        cnn.zero_grad()
        out = cnn(ids)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        return [out.detach()] + [p.grad.clone() for p in cnn.parameters()]

    batches = {
        "short": batch_to_ids([["a", "bank", "of", "the", "river", "."]])[0],
        "long": batch_to_ids([["x" * 48, "y" * 43, "is"]])[0],
        "no-token rows": batch_to_ids([["ab", "c"], ["d", "e", "f"]]).view(-1, 50),
    }
    widths = {name: cnn._trim_padding(ids).shape[1] for name, ids in batches.items()}
    assert widths == {"short": 7 + 7, "long": 50, "no-token rows": 50}  # "river" + its 2 marks + widest 7
    for ids in batches.values():
        trimmed = vectors_and_gradients(ids)
        with monkeypatch.context() as m:
            m.setattr(CharCNN, "_trim_padding", lambda self, ids: ids)
            full = vectors_and_gradients(ids)
        for a, b in zip(trimmed, full):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("skip", [False, True])
def test_words_only_equal_the_reference_without_boundary_steps(options_file, weight_file, skip_model, skip):
    """forward(boundaries=False), stateless, skips the LSTM steps at <S> and </S>: the words'
    vectors are still the reference's (empty sentences and padding stay zero)."""
    files = skip_model if skip else (options_file, weight_file)
    bilm = load_bilm(*files, dtype=torch.float64)
    reference = ReferenceBiLM(*files)
    sentences = SENTENCES + [[]]
    calls = []
    bilm.lstm.layers[0].register_forward_hook(lambda m, args, out: calls.append(sum(args[1])))
    with torch.no_grad():
        out = bilm(batch_to_ids(sentences), boundaries=False)
    assert calls == [1, sum(len(s) for s in sentences)]  # one step for each direction's mark, then the words
    layers = torch.stack(out.layers, dim=1).numpy()  # (B, L+1, T, 2P)
    assert layers.shape[2] == max(len(s) for s in sentences) and out.mask.shape == layers.shape[::2][:2]
    for i, sentence in enumerate(sentences):
        n = len(sentence)
        assert out.mask[i].sum() == n
        if n:
            expected, _ = reference.sentence(sentence)
            np.testing.assert_allclose(layers[i, :, :n], expected[:, 1:-1], atol=1e-10)
        assert (layers[i, :, n:] == 0).all()


def test_words_only_gradients_equal_those_through_the_boundaries(options_file, weight_file):
    """Fine-tuning through the shortcut: the same gradients for every biLM weight as through the
    full computation with its boundaries removed; stateful, the boundaries are computed as ever."""
    bilm = load_bilm(options_file, weight_file, dtype=torch.float64).requires_grad_(True)
    ids = batch_to_ids(SENTENCES)
    grads = []
    for boundaries in (False, True):
        bilm.zero_grad()
        out = bilm(ids, boundaries=boundaries)
        layers = out.layers if not boundaries else [x[:, 1:-1] * out.mask[:, 2:, None] for x in out.layers]
        sum((k + 1) * (x ** 2).sum() for k, x in enumerate(layers)).backward()
        grads.append({k: p.grad.clone() for k, p in bilm.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-10, rtol=1e-9)
    stateful = load_bilm(options_file, weight_file, dtype=torch.float64, stateful=True)
    with torch.no_grad():
        words = stateful(ids, boundaries=False)
        stateful.reset_states()
        full = stateful(ids)
    for a, b in zip(words.layers, full.layers):
        torch.testing.assert_close(a, b[:, 1:-1] * full.mask[:, 2:, None].to(b.dtype))
