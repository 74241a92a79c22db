"""The fast kernels (kernels.py) against the plain implementation in model.py: the same values
and gradients, whichever path the model picks."""

import copy
import dataclasses

import pytest
import torch

from torch_elmo import BiLMConfig, batch_to_ids, kernels, load_bilm
from torch_elmo.kernels import Fused, _step_backward, _step_forward, step_backward
from torch_elmo.model import CharCNN, LstmWithProjection

SENTENCES = [["The", "bank", "of", "the", "river", "."], ["I", "went", "to", "the", "bank"], ["Hi"]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("proj_dim, clip", [(3, 0.5), (5, None)])
def test_hand_written_backward_through_time_equals_autograd(proj_dim, clip, fused, dtype, monkeypatch):
    """LstmThroughTime (training's path, its elementwise steps compiled or not) against autograd
    through the plain implementation (`LstmWithProjection.step`) in float64, on a packed batch
    with rows ending at different steps, clipping active, and initial states: in float64 to
    1e-12, in float32 (a step's products and their gradients' through oneDNN, where this PyTorch
    has it) to float32 rounding."""
    monkeypatch.setattr(Fused, "enabled", fused)
    products = []
    linear = kernels._linear
    monkeypatch.setattr(kernels, "_linear", lambda x, w_t: products.append(x.shape) or linear(x, w_t))
    torch.manual_seed(0)
    layer = LstmWithProjection(4, 5, proj_dim, clip, clip, n_directions=2).double()
    with torch.no_grad():
        layer.bias.normal_()
        layer.w_state.mul_(3)
        layer.w_input.mul_(3)
    batch_sizes = [4, 4, 3, 1, 1]  # 5 rows: one never runs, one stops after 3 steps, ...
    x = torch.randn(2, sum(batch_sizes), 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 5, proj_dim, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 5, 5, dtype=torch.float64, requires_grad=True)

    plain = copy.deepcopy(layer)
    plain.implementation = "plain"
    layer = layer.to(dtype)
    inputs = [t.detach().to(dtype).requires_grad_() for t in (x, h0, c0)]

    def by_autograd():
        out, (h, c) = plain(x, batch_sizes, (h0, c0))
        return out, h, c

    out, (h, c) = layer(inputs[0], batch_sizes, (inputs[1], inputs[2]))
    ours, expected = (out, h, c), by_autograd()
    if clip is not None:
        assert (expected[2].abs() == clip).any()  # the cell clip is active
    weights = [torch.randn_like(t) for t in expected]
    grads = torch.autograd.grad(sum((w.to(dtype) * t).sum() for w, t in zip(weights, ours)), [*inputs, *layer.parameters()])
    expected_grads = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, expected)),
                                         [x, h0, c0, *plain.parameters()])
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for a, b in [*zip(ours, expected), *zip(grads, expected_grads)]:
        torch.testing.assert_close(a, b.to(dtype), atol=tolerance, rtol=0)
    assert bool(products) == (dtype == torch.float32 and kernels.onednn_linear_works())
    if fused:  # torch.compile works on this machine: the fused path is the one tested
        assert step_backward.compiled not in (None, False)


@pytest.mark.parametrize("gate_by_gate", [True, False])
@pytest.mark.parametrize("in_turn", [True, False])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("proj_dim, clip", [(3, 0.5), (5, None)])
def test_embedding_without_autograd_equals_the_plain_layer(proj_dim, clip, fused, in_turn, gate_by_gate, monkeypatch):
    """lstm_inference (each step's output written in place into the layer's output) against the
    plain implementation, with and without a projection (proj_dim 5 = hidden 5: none), on rows
    ending at different steps, from initial states; steps large enough to be compiled when fused;
    the directions in turn (a CPU's way) and together (a GPU's); the gates' products gate by
    gate (float32 on a CPU, here float64) and as one product (elsewhere)."""
    monkeypatch.setattr(kernels, "DIRECTIONS_IN_TURN", in_turn)
    monkeypatch.setattr(kernels, "GATE_BY_GATE", {torch.float64} if gate_by_gate else set())
    monkeypatch.setattr(Fused, "enabled", fused)
    monkeypatch.setattr(kernels, "FUSED_FROM", 1)
    torch.manual_seed(2)
    layer = LstmWithProjection(4, 5, proj_dim, clip, clip, n_directions=2).double()
    with torch.no_grad():
        layer.bias.normal_()
        layer.w_state.mul_(3)
    plain = copy.deepcopy(layer)
    plain.implementation = "plain"
    batch_sizes = [4, 4, 3, 1, 1]
    x = torch.randn(2, sum(batch_sizes), 4, dtype=torch.float64)
    state = torch.randn(2, 5, proj_dim, dtype=torch.float64), torch.randn(2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        out, (h, c) = layer(x, batch_sizes, state)
        expected, (expected_h, expected_c) = plain(x, batch_sizes, state)
    for a, b in [(out, expected), (h, expected_h), (c, expected_c)]:
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    torch.testing.assert_close(h[:, 4], state[0][:, 4])  # the row that never runs keeps its state


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("distinct", [False, True])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("proj_dim, clip", [(3, 0.5), (5, None)])
def test_float32_steps_on_a_cpu_equal_the_plain_layer(proj_dim, clip, fused, distinct, onednn, monkeypatch):
    """In float32 on a CPU a step's products (its state share, its projection) and a chunk's
    input shares go through oneDNN (`onednn_products`), or, where this PyTorch lacks it, torch.bmm
    gate by gate: the plain layer's values in float64 to float32 rounding, fused or not, with and
    without a projection, with the input's shares from a table of distinct inputs or not; and
    with oneDNN every step's products and every chunk's went through it (the directions in turn;
    chunks of whole steps of at least 5 rows, oneDNN's blocks of 2 rows, the last one short)."""
    if onednn and not kernels.onednn_linear_works():
        pytest.skip("this PyTorch has no oneDNN linear")
    if not onednn:
        monkeypatch.setattr(kernels, "ONEDNN_DTYPES", set())
    monkeypatch.setattr(Fused, "enabled", fused)
    monkeypatch.setattr(kernels, "FUSED_FROM", 1)
    products = []
    linear = kernels._linear
    monkeypatch.setattr(kernels, "_linear", lambda x, w_t: products.append(tuple(x.shape)) or linear(x, w_t))
    chunks = []
    onednn_gates = kernels._onednn_gates
    monkeypatch.setattr(kernels, "_onednn_gates", lambda buffer, x, *args: chunks.append(tuple(x.shape))
                        or onednn_gates(buffer, x, *args))
    monkeypatch.setattr(kernels, "GATE_ROWS", 5)
    monkeypatch.setattr(kernels, "ONEDNN_ROWS", 2)
    torch.manual_seed(2)
    layer = LstmWithProjection(4, 5, proj_dim, clip, clip, n_directions=2)
    with torch.no_grad():
        layer.bias.normal_()
        layer.w_state.mul_(3)
    plain = copy.deepcopy(layer).double()
    plain.implementation = "plain"
    batch_sizes = [4, 4, 3, 1, 1]
    x = torch.randn(2, 6 if distinct else sum(batch_sizes), 4)
    rows = torch.randint(0, 6, (2, sum(batch_sizes))) if distinct else None
    state = torch.randn(2, 5, proj_dim), torch.randn(2, 5, 5)
    with torch.no_grad():
        out, (h, c) = layer(x, batch_sizes, state, rows)
        expected, (expected_h, expected_c) = plain(x.double(), batch_sizes, tuple(s.double() for s in state),
                                                   rows)
    for a, b in [(out, expected), (h, expected_h), (c, expected_c)]:
        torch.testing.assert_close(a, b.float(), atol=1e-5, rtol=0)
    steps = [(1, n, proj_dim) for n in batch_sizes] + [(1, n, 5) for n in batch_sizes] * (proj_dim != 5)
    assert sorted(products) == (sorted(steps * 2) if onednn else [])  # each direction's state product and projection
    assert sorted(chunks) == ([(1, 5, 4), (1, 5, 4), (1, 8, 4), (1, 8, 4)] if onednn and not distinct else [])


def test_step_products_go_through_onednn_in_float32_on_a_cpu():
    w, proj = torch.zeros(2, 4, 8), torch.zeros(2, 2, 4)
    assert kernels.onednn_products(w, proj) == kernels.onednn_products(w, None) == kernels.onednn_linear_works()
    assert not any(kernels.onednn_products(v, proj) for v in (w.double(), w.bfloat16(), kernels.Int8Weight(w)))
    assert not kernels.onednn_products(w, proj.transpose(1, 2).contiguous().transpose(1, 2))  # strided: far slower
    if kernels.onednn_linear_works():  # each direction's product: x (D, n, K) @ w (D, K, N)
        x = torch.randn(2, 3, 4)
        torch.testing.assert_close(kernels._linear(x, w.normal_().transpose(1, 2)), torch.bmm(x, w), rtol=0, atol=1e-6)


def test_training_with_the_first_layers_gates_once_per_distinct_input_changes_nothing():
    """LstmThroughTime with `rows` (x holding U distinct inputs) against the same slots given each
    its own input: outputs and every gradient equal (float64), also with repeated inputs per step."""
    torch.manual_seed(1)
    layer = LstmWithProjection(4, 5, 3, 0.5, 0.5, n_directions=2).double()
    batch_sizes = [3, 3, 2, 1]
    N, U = sum(batch_sizes), 4
    rows = torch.randint(0, U, (2, N))
    rows[:, 0] = rows[:, 1]  # two rows read the same input at one step
    distinct = torch.randn(2, U, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, 3, dtype=torch.float64)
    c0 = torch.randn(2, 3, 5, dtype=torch.float64)

    def run(with_rows):
        layer.zero_grad()
        distinct.grad = None
        x = distinct if with_rows else torch.stack([distinct[d, rows[d]] for d in range(2)])
        out, (h, c) = layer(x, batch_sizes, (h0, c0), rows if with_rows else None)
        (out.square().sum() + h.sum() + c.square().sum()).backward()
        return [out, h, c, distinct.grad] + [p.grad for p in layer.parameters()]

    for a, b in zip(run(True), run(False)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_a_step_that_cannot_compile_runs_unfused_with_a_warning(monkeypatch):
    def no_compiler(fn, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", no_compiler)
    fused = Fused(_step_backward)
    i, j, f, o, c, tanh_c, m, keep_c = _step_forward(torch.randn(2, 3, 8), torch.randn(2, 3, 2), 0.5)
    args = (torch.randn(2, 3, 2), torch.randn(2, 3, 2), i, j, f, o, c, tanh_c, keep_c)
    with pytest.warns(UserWarning, match="running it unfused"):
        out = fused(*args)
    for a, b in zip(out, _step_backward(*args)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert fused.compiled is False and fused(*args)[0].shape == (2, 3, 8)  # no second try


@pytest.mark.parametrize("requires_grad", [False, True])
def test_the_fast_biLM_computes_what_the_plain_one_does(options_file, weight_file, skip_model, requires_grad):
    """Embedding (no autograd: lstm_inference, max_over_windows) and fine-tuning (LstmThroughTime):
    every layer and every weight gradient as the plain implementation's, in float64."""
    for files in ((options_file, weight_file), skip_model):
        results = {}
        for implementation in ("fast", "plain"):
            bilm = load_bilm(*files, dtype=torch.float64, implementation=implementation).requires_grad_(requires_grad)
            with torch.set_grad_enabled(requires_grad):
                out = bilm(batch_to_ids(SENTENCES), boundaries=False)
                grads = {}
                if requires_grad:
                    sum((k + 1) * (x ** 2).sum() for k, x in enumerate(out.layers)).backward()
                    grads = {k: p.grad for k, p in bilm.named_parameters()}
            results[implementation] = ([x.detach() for x in out.layers], grads)
        (fast, fast_grads), (plain, plain_grads) = results["fast"], results["plain"]
        for a, b in zip(fast, plain):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
        assert fast_grads.keys() == plain_grads.keys()
        for k in fast_grads:
            torch.testing.assert_close(fast_grads[k], plain_grads[k], atol=1e-10, rtol=1e-9)


def _char_cnns(dtype: torch.dtype) -> tuple[CharCNN, CharCNN]:
    """A fast CharCNN and a plain one with the same weights."""
    torch.manual_seed(0)
    config = BiLMConfig(filters=((1, 4), (3, 6), (7, 8)), char_embed_dim=5, n_highway=2, projection_dim=6)
    fast = CharCNN(config).to(dtype)
    plain = CharCNN(dataclasses.replace(config, implementation="plain")).to(dtype)
    plain.load_state_dict(fast.state_dict())
    return fast, plain


def test_max_over_windows_is_the_convolution_max_pooled():
    fast, plain = _char_cnns(torch.float64)
    ids = batch_to_ids([["a", "bank", "x" * 48, "of"]])[0]
    torch.testing.assert_close(fast(ids), plain(ids), atol=1e-12, rtol=0)
    with torch.no_grad():  # the windows positions first
        torch.testing.assert_close(fast(ids), plain(ids), atol=1e-12, rtol=0)
    assert LstmWithProjection(2, 3, 2, None, None, implementation="plain").implementation == "plain"


def test_the_token_encoders_products_go_through_onednn_without_gradients(monkeypatch):
    """In float32 on a CPU the highway and projection products of the fast CharCNN go through
    oneDNN's linear (`kernels.linear`) where nothing needs a gradient: the plain CharCNN's
    values to float32 rounding. With gradients (oneDNN's op has none), in float64 and under
    autocast they are F.linear's, and the gradients equal the plain CharCNN's."""
    if not kernels.onednn_linear_works():
        pytest.skip("this PyTorch has no oneDNN linear")
    products = []
    onednn_linear = kernels._onednn_linear
    monkeypatch.setattr(kernels, "_onednn_linear", lambda x, w, b=None: products.append(tuple(w.shape)) or onednn_linear(x, w, b))
    fast, plain = _char_cnns(torch.float32)
    ids = batch_to_ids([["a", "bank", "x" * 48, "of"]])[0]
    with torch.no_grad():
        expected = plain(ids)
        assert products == []
        got = fast(ids)
    assert products == [(36, 18), (36, 18), (6, 18)]  # two highways' [transform; carry], the projection
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)

    products.clear()
    fast(ids).square().sum().backward()
    plain(ids).square().sum().backward()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast(ids)
    with torch.no_grad():
        fast.double()(ids)
    assert products == []
    for (name, p), q in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad.float(), q.grad, atol=1e-5, rtol=1e-5, msg=name)
    x, w = torch.randn(2, 3, 8), torch.randn(5, 8)
    torch.testing.assert_close(kernels.linear(x, w), x @ w.T, atol=1e-6, rtol=0)  # (B, T, K): any leading shape


@pytest.mark.parametrize("compiled", [False, True])
def test_tanh_of_compiled_loops_is_tanh_to_two_ulp(compiled):
    if compiled and not Fused.enabled:
        pytest.skip("torch.compile is off here (TORCH_ELMO_COMPILE=0)")
    x = torch.cat([torch.linspace(-12, 12, 100_001), torch.logspace(-40, 1.5, 2001), -torch.logspace(-40, 1.5, 2001),
                   torch.tensor([0.0, -0.0, 20.0, -20.0, 1e30, float("inf"), -float("inf")])])
    tanh = torch.compile(kernels._tanh_from_exp, dynamic=True) if compiled else kernels._tanh_from_exp
    got, expected = tanh(x), torch.tanh(x.double())
    ulp = torch.finfo(torch.float32).eps * expected.abs().clamp_min(torch.finfo(torch.float32).tiny)
    assert ((got.double() - expected).abs() <= 2 * ulp).all()
    assert torch.equal(torch.signbit(got), torch.signbit(x))  # -0.0 stays -0.0
    assert tanh(torch.tensor([float("nan")])).isnan().all()


@pytest.mark.parametrize("in_turn, gate_by_gate", [(True, True), (False, False)])
def test_the_first_layers_gates_once_per_distinct_token_change_nothing(options_file, weight_file, skip_model, in_turn,
                                                                       gate_by_gate, monkeypatch):
    """Stateless embedding computes the first layer's input share of the gates once per distinct
    token of the batch (kernels.lstm_inference with rows): the same vectors as computing it at
    every position, and the path is taken when the batch repeats its tokens; the table's rows
    gathered a chunk at a time (steps op by op), a CPU's way (the directions in turn, float32's
    products gate by gate) and a GPU's (both directions at once, one product)."""
    monkeypatch.setattr(kernels, "DIRECTIONS_IN_TURN", in_turn)
    monkeypatch.setattr(kernels, "GATE_BY_GATE", {torch.float64} if gate_by_gate else set())
    sentences = [["the", "bank", "of", "the", "river"], ["the", "bank", "the", "bank"], ["a"], []]
    taken = []
    real = kernels.lstm_inference
    monkeypatch.setattr(kernels, "lstm_inference", lambda *a: (taken.append(a[-1] is not None), real(*a))[1])
    for files in ((options_file, weight_file), skip_model):
        bilm = load_bilm(*files, dtype=torch.float64)
        out = {}
        for share in (0.75, 0.0):  # on (the default), off
            monkeypatch.setattr(type(bilm), "DISTINCT_TOKENS_AT_MOST", share)
            with torch.no_grad():
                out[share] = bilm(batch_to_ids(sentences), boundaries=False).layers
        for a, b in zip(out[0.75], out[0.0]):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert True in taken and False in taken  # both paths ran: 5 distinct tokens of 10


def test_the_distinct_token_table_stays_within_its_memory_bound(options_file, weight_file, monkeypatch):
    """Above DISTINCT_TABLE_BYTES the first layer reads every position instead: the same vectors."""
    sentences = [["the", "bank", "of", "the", "river"], ["the", "bank", "the", "bank"]]
    taken = []
    real = kernels.lstm_inference
    monkeypatch.setattr(kernels, "lstm_inference", lambda *a: (taken.append(a[-1] is not None), real(*a))[1])
    bilm = load_bilm(options_file, weight_file, dtype=torch.float64)
    out = []
    for bound in (2**28, 1000):  # the fixture's table: 2 x 5 tokens x 4H float64 = 2,560 bytes
        monkeypatch.setattr(type(bilm), "DISTINCT_TABLE_BYTES", bound)
        taken.clear()
        with torch.no_grad():
            out.append(bilm(batch_to_ids(sentences), boundaries=False).layers)
        assert any(taken) is (bound == 2**28)
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------------------------
# int8: not exact, so tested for what it promises instead: the product of the quantized weight,
# an error of the size int8 has, and refusals where it cannot run


def test_int8_weight_multiplies_like_the_float_weight_to_int8_precision():
    torch.manual_seed(0)
    w = torch.randn(2, 64, 48)
    x = torch.randn(2, 7, 64)
    q = kernels.Int8Weight(w)
    exact = torch.bmm(x, w)
    for got in (q.bmm(x), q.baddbmm_(torch.ones(2, 7, 48), x) - 1):
        relative = (got - exact).abs().mean() / exact.abs().mean()
        assert relative < 0.03  # 7-bit inputs, 8-bit weights; a wrong layout would be ~1.4
        assert torch.corrcoef(torch.stack([got.flatten(), exact.flatten()]))[0, 1] > 0.999
    with pytest.raises(ValueError, match="float32 models on the CPU"):
        kernels.Int8Weight(w.double())


def test_int8_products_in_row_blocks_with_bias_into_a_buffer(monkeypatch):
    """Blocks of ROWS rows (7 rows in blocks of 3 here), the bias added, written where asked:
    each block the product of those rows alone (each call quantizes its input with its own scale)
    plus the bias."""
    torch.manual_seed(0)
    w, x, bias = torch.randn(2, 64, 48), torch.randn(2, 7, 64), torch.randn(2, 1, 48)
    q = kernels.Int8Weight(w)
    blocks = [q.bmm(x[:, a : a + 3]) for a in (0, 3, 6)]
    monkeypatch.setattr(kernels.Int8Weight, "ROWS", 3)
    buffer = torch.full((2, 7, 48), float("nan"))
    got = q.bmm(x, bias, out=buffer)
    assert got.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(got, torch.cat(blocks, dim=1) + bias, rtol=0, atol=1e-5)
    assert (got - bias - torch.bmm(x, w)).abs().mean() < 0.03 * torch.bmm(x, w).abs().mean()


@pytest.mark.parametrize("directions", [1, 2])
@pytest.mark.parametrize("weight", ["gate by gate", "one product", "int8"])
def test_gates_are_viewed_gate_by_gate(directions, weight):
    """lstm_inference's gates' products give each gate's share as (D, 4, n, H), written into the
    buffer given: the product into (D, n, 4H) split into its gates, whether computed gate by gate
    (float32 on a CPU: the weights as gate_blocks, a view for one direction), as one product,
    or in int8."""
    torch.manual_seed(0)
    D, n, K, H = directions, 7, 64, 12
    w, x, bias = torch.randn(D, K, 4 * H), torch.randn(D, n, K), torch.randn(D, 1, 4 * H)
    expected, product, product_bias = torch.baddbmm(bias, x, w), w, bias
    if weight == "gate by gate":
        product, product_bias = kernels.gate_blocks(w), kernels.gate_blocks(bias)
        assert torch.equal(product.view(D, 4, K, H)[:, 2], w[:, :, 2 * H : 3 * H])  # the forget gate's columns
        assert (product.data_ptr() == w.data_ptr()) == (D == 1)  # a view for one direction
    elif weight == "int8":  # its products' columns copied out gate by gate
        product, product_bias = kernels.Int8Weight(w), bias.view(D, 1, 4, H)
        expected = product.bmm(x, bias)
    buffer = torch.full((D * n * 4 * H + 5,), float("nan"))
    got = kernels._gates(buffer, x, product, product_bias, gate_by_gate=weight != "one product")
    assert got.shape == (D, 4, n, H) and got.data_ptr() == buffer.data_ptr()
    assert got.is_contiguous() == (weight != "one product")  # gate by gate: each gate's share a block
    torch.testing.assert_close(got, expected.view(D, n, 4, H).transpose(1, 2), rtol=0, atol=1e-5)


def test_float32_on_a_cpu_and_int8_write_their_gates_gate_by_gate():
    w = torch.zeros(1, 4, 8)
    assert kernels.by_gate(w) and kernels.by_gate(kernels.Int8Weight(w))
    assert not kernels.by_gate(w.double()) and not kernels.by_gate(w.bfloat16())


def test_an_int8_weights_slice_is_its_directions_weights():
    """As a tensor's slice: lstm_inference runs the directions in turn on a CPU."""
    torch.manual_seed(0)
    w, x = torch.randn(2, 64, 48), torch.randn(2, 7, 64)
    q = kernels.Int8Weight(w)
    assert q[1:2].shape == (1, 64, 48)
    assert torch.equal(q[1:2].bmm(x[1:2]), q.bmm(x)[1:2])


def test_int8_engines_compute_the_same_products():
    """Each quantized engine packs for itself (oneDNN where the CPU has AMX tiles): the same
    quantization, so the same products to float rounding, and the process's engine is left as it was."""
    torch.manual_seed(0)
    w, x = torch.randn(2, 64, 48), torch.randn(2, 7, 64)
    before = torch.backends.quantized.engine
    engines = [e for e in ("fbgemm", "onednn", "x86") if e in torch.backends.quantized.supported_engines]
    products = {}
    for e in engines:
        products[e] = kernels.Int8Weight(w, engine=e).bmm(x)
        assert torch.backends.quantized.engine == before  # after each packing, whatever engine it used
    assert kernels.int8_engine() in torch.backends.quantized.supported_engines
    assert kernels.Int8Weight(w).engine == kernels.int8_engine()
    for e in engines:
        torch.testing.assert_close(products[e], products[engines[0]], rtol=0, atol=1e-4)


@pytest.mark.parametrize("fused_from", [kernels.FUSED_FROM, 0])
def test_the_int8_biLM_is_the_float_one_to_int8_precision(options_file, weight_file, fused_from, monkeypatch):
    """Each step op by op (the fixture's small steps) and compiled (the bias then added by the step)."""
    monkeypatch.setattr(kernels, "FUSED_FROM", fused_from)
    plain = load_bilm(options_file, weight_file, implementation="plain")  # the formulas, step by step
    int8 = load_bilm(options_file, weight_file, implementation="int8")
    ids = batch_to_ids(SENTENCES)
    with torch.no_grad():
        a, b = plain(ids).layers, int8(ids).layers
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-6)  # the char CNN is not quantized
    for x, y in zip(a[1:], b[1:]):
        relative = float((x - y).abs().mean() / x.abs().mean())
        assert 0 < relative < 0.03


def test_int8_weights_follow_changes_of_the_float_weights(options_file, weight_file):
    bilm = load_bilm(options_file, weight_file, implementation="int8")
    ids = batch_to_ids(SENTENCES)
    with torch.no_grad():
        before = bilm(ids).layers[2]
        for p in bilm.lstm.parameters():
            p.mul_(0.5)
        after = bilm(ids).layers[2]
    assert (before - after).abs().max() > 1e-3


def test_int8_refuses_what_it_cannot_do(options_file, weight_file):
    with pytest.raises(ValueError, match="float32 models on the CPU"):
        load_bilm(options_file, weight_file, implementation="int8", dtype=torch.float64)
    bilm = load_bilm(options_file, weight_file, implementation="int8")
    bilm.requires_grad_(True)
    with pytest.raises(ValueError, match="only embeds .no gradients.*implementation='fast'"):
        bilm(batch_to_ids(SENTENCES))


# --------------------------------------------------------------------------------------------
# Embedding: each step's elementwise part fused


@pytest.mark.parametrize("in_turn, gate_by_gate", [(True, True), (False, False)])
def test_the_compiled_embedding_step_computes_what_the_plain_one_does(options_file, weight_file, in_turn, gate_by_gate,
                                                                       monkeypatch):
    """With every step fused (FUSED_FROM 0), the fast biLM's layers are the plain ones (float64),
    with the first layer's shares from a table (rows) and from the chunked product (none), under
    no_grad and inside a task model's autograd with the biLM frozen: a CPU's way (the directions
    in turn, float32's products gate by gate) and a GPU's (both directions, each step's table
    rows gathered for both; one product)."""
    monkeypatch.setattr(kernels, "DIRECTIONS_IN_TURN", in_turn)
    monkeypatch.setattr(kernels, "GATE_BY_GATE", {torch.float64} if gate_by_gate else set())
    monkeypatch.setattr(kernels, "FUSED_FROM", 0)
    monkeypatch.setattr(Fused, "enabled", True)
    sentences = SENTENCES + [["the", "bank", "the", "bank", "the"]]
    plain = load_bilm(options_file, weight_file, dtype=torch.float64, implementation="plain")
    fast = load_bilm(options_file, weight_file, dtype=torch.float64).requires_grad_(False)
    with torch.no_grad():
        expected = plain(batch_to_ids(sentences), boundaries=False).layers
    for share in (0.75, 0.0):  # the table of distinct tokens, then every position
        monkeypatch.setattr(type(fast), "DISTINCT_TOKENS_AT_MOST", share)
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                for a, b in zip(fast(batch_to_ids(sentences), boundaries=False).layers, expected):
                    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert kernels.cell.compiled not in (None, False) and kernels.cell_from_table.compiled not in (None, False)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@cuda
def test_on_a_gpu_the_fast_biLM_is_the_plain_biLM(options_file, weight_file, monkeypatch):
    """On CUDA (its steps compiled by torch.compile for the GPU, every step fused), the fast biLM
    gives the plain biLM's layers on the CPU (float64): the first layer's gates from the table of
    distinct tokens and at every position, under no_grad and inside autograd with the biLM
    frozen, batch after batch; stateful too."""
    monkeypatch.setattr(kernels, "FUSED_FROM", 0)
    plain = load_bilm(options_file, weight_file, dtype=torch.float64, implementation="plain")
    fast = load_bilm(options_file, weight_file, dtype=torch.float64, device="cuda").requires_grad_(False)
    batches = [SENTENCES, [["a", "b"]] * 40, SENTENCES[::-1] + [["the", "bank", "the", "bank", "the"]]]
    for share in (0.75, 0.0):
        monkeypatch.setattr(type(fast), "DISTINCT_TOKENS_AT_MOST", share)
        for grad in (False, True):
            for sentences in batches:
                ids = batch_to_ids(sentences)
                with torch.no_grad():
                    expected = plain(ids, boundaries=False).layers
                with torch.set_grad_enabled(grad):
                    ours = fast(ids.cuda(), boundaries=False).layers
                for a, b in zip(ours, expected):
                    torch.testing.assert_close(a.cpu(), b, atol=1e-10, rtol=0)
    stateful = [load_bilm(options_file, weight_file, dtype=torch.float64, stateful=True, implementation="plain"),
                load_bilm(options_file, weight_file, dtype=torch.float64, stateful=True, device="cuda")]
    with torch.no_grad():
        for sentences in batches[::2]:
            ids = batch_to_ids(sentences)
            expected, ours = stateful[0](ids).layers, stateful[1](ids.cuda()).layers
            for a, b in zip(ours, expected):
                torch.testing.assert_close(a.cpu(), b, atol=1e-10, rtol=0)


@cuda
def test_on_a_gpu_fine_tuning_gradients_are_the_plain_ones(options_file, weight_file):
    """requires_grad on CUDA: the hand-written backward through time gives autograd's gradients."""
    ids = batch_to_ids(SENTENCES)
    results = []
    for impl, device in (("plain", "cpu"), ("fast", "cuda")):
        bilm = load_bilm(options_file, weight_file, dtype=torch.float64, implementation=impl, device=device)
        layers = bilm(ids.to(device)).layers
        sum((layer * (k + 1)).sum() for k, layer in enumerate(layers)).backward()
        results.append([p.grad.cpu() for p in bilm.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)
