"""The fast implementations of the model's two hot loops, chosen by `BiLMConfig.implementation`
("fast", the default; "plain" runs the readable formulas in model.py instead). Each computes
what its plain counterpart computes, to float rounding, and is tested against it.

    max_over_windows   a char CNN convolution max-pooled over positions, as one matmul over the
                       unfolded windows (Conv1d followed by a max does twice the memory traffic)
    lstm_inference     an LSTM layer without autograd: the input's share of the gates for many
                       steps in one product, each gate's share apart, in buffers reused every step
    LstmThroughTime    an LSTM layer with autograd: forward and backward through time written
                       out, gate gradients in one buffer, weight gradients as one product each
    Int8Weight         a weight for lstm_inference's products in int8 (dynamic quantization):
                       faster on CPUs with int8 dot products, not exact ("int8" implementation)

No module here imports the model: the model picks these by name and hands them tensors.
Shapes: D directions, N packed tokens, n rows still running at a step, I input size, H cells,
P projection size.
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
import warnings

import torch

from .errors import UsageError

# --------------------------------------------------------------------------------------------
# Char CNN


def max_over_windows(chars: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv1d(chars, weight, bias) max-pooled over positions: (N, C, E) -> (N, filters).

    One matmul over the unfolded windows, (N, C - w + 1, E * w) @ (E * w, filters), max-pooled,
    the bias added after the max (the same value: adding a constant keeps the order). Without
    gradients the windows come positions first, (C - w + 1, N, E * w), so that the max is one of
    whole (N, filters) blocks: over the middle dimension it ran several times slower
    (bench/embed.py). With gradients .max over the middle dimension, whose backward routes the
    gradient to one window (amax's splits it among ties, and training ran slower with it,
    bench/train.py): ties come from identical all-padding windows, so the gradients are the same.
    """
    filters, _, width = weight.shape  # Conv1d's (out, in, width)
    w = weight.reshape(filters, -1).T  # (E * w, filters), the unfolded windows' order
    if torch.is_grad_enabled() and (chars.requires_grad or weight.requires_grad):
        windows = chars.unfold(1, width, 1).flatten(2)  # (N, C - w + 1, E * w)
        return (windows @ w).max(dim=1).values + bias
    windows = chars.transpose(0, 1).contiguous().unfold(0, width, 1).flatten(2)  # (C - w + 1, N, E * w)
    return (windows @ w).amax(dim=0) + bias


# --------------------------------------------------------------------------------------------
# LSTM with projection, without autograd

GATE_ROWS = 1024  # rows of the input-to-gates product computed at once
DIRECTIONS_IN_TURN = True  # on a CPU, lstm_inference runs one direction, then the next
# Gate values a step (one direction's, when the directions run in turn) from which its
# elementwise part is compiled (compiling costs seconds once).
FUSED_FROM = 2**20


def int8_engine() -> str:
    """The quantized engine for Int8Weight's products here: oneDNN where the CPU has AMX tiles
    (its int8 products use them, several times fbgemm's speed there), else PyTorch's default."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "onednn" if amx and "onednn" in torch.backends.quantized.supported_engines else torch.backends.quantized.engine


class Int8Weight:
    """A (D, K, N) float32 weight as D int8 matrices, one scale per output column, packed for
    PyTorch's dynamic-quantized linear (fbgemm / oneDNN: AVX2, AVX-512 VNNI, AMX): each product
    quantizes its input per call (7-bit, `reduce_range`, which no CPU's int8 path overflows),
    multiplies in int8 with int32 sums and returns float32. Not exact: bench/embed.py --int8
    prints its deviation from float32. The packed weights keep the engine they were packed for
    (`engine`, default `int8_engine()`); every engine computes the same products."""

    ROWS = 256  # rows a call at most: each returns a fresh tensor, and larger ones cost their page faults
    # (each call quantizes its rows with their own scale: a block's products depend on its rows alone)

    def __init__(self, weight: torch.Tensor, engine: str | None = None):
        if weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise UsageError(f"the int8 implementation runs float32 models on the CPU, not {weight.dtype} on "
                             f"{weight.device.type}; load the model in float32 on the CPU, or use implementation='fast'")
        self.shape, self.packed, self.engine = weight.shape, [], engine or int8_engine()
        previous = torch.backends.quantized.engine
        with warnings.catch_warnings():  # quantized tensors are deprecated for torchao, which needs nn.Linear modules
            warnings.simplefilter("ignore")
            try:
                torch.backends.quantized.engine = self.engine  # the engine packs; calls follow the packing
                for w in weight.detach().transpose(1, 2):  # (N, K), the layout of nn.Linear
                    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127
                    q = torch.quantize_per_channel(w.contiguous(), scale.double(),
                                                   torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
                    self.packed.append(torch.ops.quantized.linear_prepack(q, None))
            finally:
                torch.backends.quantized.engine = previous

    def bmm(self, x: torch.Tensor, bias: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """x (D, n, K) float32 -> x @ weight (+ bias (D, 1, N)) (D, n, N), written to `out` where given
        (or to an out (D, n, 4, H) and a bias (D, 1, 4, H) that split the N = 4H columns)."""
        out = x.new_empty(x.shape[0], x.shape[1], self.shape[2]) if out is None else out
        for d, w in enumerate(self.packed):
            for a in range(0, x.shape[1], self.ROWS):
                block = out[d, a : a + self.ROWS]
                block.copy_(torch.ops.quantized.linear_dynamic(x[d, a : a + self.ROWS].contiguous(), w, True).view(block.shape))
                if bias is not None:
                    block.add_(bias[d])  # block by block, soon after it is written
        return out

    def baddbmm_(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """out (D, n, N) (or (D, n, 4, H)) += x (D, n, K) @ weight, a direction at a time (no (D, n, N) temporary)."""
        for d, w in enumerate(self.packed):
            out[d].add_(torch.ops.quantized.linear_dynamic(x[d].contiguous(), w, True).view(out[d].shape))
        return out

    def __getitem__(self, directions: slice) -> Int8Weight:
        """Some directions' weights, as a tensor's slice: w[d : d + 1]."""
        part = copy.copy(self)
        part.packed = self.packed[directions]
        part.shape = (len(part.packed), *self.shape[1:])
        return part


GATE_BY_GATE = {torch.float32}  # the dtypes whose gates' products run gate by gate on a CPU


def by_gate(w: torch.Tensor | Int8Weight) -> bool:
    """Whether lstm_inference writes w's gates gate by gate, each gate's share a block of its own:
    float32 on a CPU (`gate_blocks`; the table, and a chunk's input shares and a step's state
    share where oneDNN does not take them, `onednn_products`), where a 2-thread product into n rows of
    4H columns ran far below the peak on some CPUs (MKL's sgemm on an AMD EPYC) and the same
    product as 4 batched products into n rows of H near it, and int8 (each product's columns
    copied out gate by gate), where the elementwise part then ran faster, bench/embed.py.
    bfloat16 (oneDNN) ran slower so; it, a GPU and float64 keep one product whose rows are
    viewed gate by gate."""
    if isinstance(w, Int8Weight):
        return True
    return w.device.type == "cpu" and w.dtype in GATE_BY_GATE


def gate_blocks(w: torch.Tensor) -> torch.Tensor:
    """A weight (D, K, 4H) (or bias (D, 1, 4H)) as (D * 4, K, H), each gate's columns a matrix of
    its own (a view where D is 1)."""
    D, K, G = w.shape
    return w.view(D, K, 4, G // 4).transpose(1, 2).reshape(D * 4, K, G // 4)


def _gates(buffer: torch.Tensor, x: torch.Tensor, w: torch.Tensor | Int8Weight, bias: torch.Tensor | None = None,
           gate_by_gate: bool = False) -> torch.Tensor:
    """x (D, n, K) @ w (+ bias) written into `buffer` (flat), returned as (D, 4, n, H), each
    gate's share (n, H) rows: gate by gate, each gate's share a block of its own, w in
    `gate_blocks` (D * 4, K, H) with bias (D * 4, 1, H), or an Int8Weight (D, K, 4H) with bias
    (D, 1, 4, H); else w (D, K, 4H) and bias (D, 1, 4H), one product whose (n, 4H) rows are
    viewed gate by gate."""
    D, n, K = x.shape
    if isinstance(w, Int8Weight):
        G = w.shape[-1]
        out = buffer[: D * n * G].view(D, 4, n, G // 4)
        w.bmm(x, bias, out=out.transpose(1, 2))  # (D, n, 4, H): each block of rows copied out gate by gate
        return out
    if gate_by_gate:
        H = w.shape[-1]
        out = buffer[: D * 4 * n * H].view(D * 4, n, H)
        x = x.unsqueeze(1).expand(D, 4, n, K).reshape(D * 4, n, K)  # a view where D is 1
        torch.bmm(x, w, out=out) if bias is None else torch.baddbmm(bias, x, w, out=out)
        return out.view(D, 4, n, H)
    G = w.shape[-1]
    out = buffer[: D * n * G].view(D, n, G)
    torch.bmm(x, w, out=out) if bias is None else torch.baddbmm(bias, x, w, out=out)
    return out.view(D, n, 4, G // 4).transpose(1, 2)


@functools.cache
def onednn_linear_works() -> bool:
    """Whether this PyTorch has oneDNN's linear for dense float32 tensors (`_linear`, an internal
    op behind torch.compile's CPU linear: tried once, not assumed)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    x, w = torch.arange(6.0).view(2, 3), torch.arange(12.0).view(4, 3)
    try:
        return torch.equal(torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""), x @ w.T)
    except (RuntimeError, TypeError):
        return False


ONEDNN_DTYPES = {torch.float32}  # the dtypes whose products run through oneDNN's linear on a CPU


def onednn_products(*weights: torch.Tensor | Int8Weight | None) -> bool:
    """Whether products by these weights run through oneDNN's linear: float32 weights on a CPU,
    where this PyTorch has oneDNN. Those are the LSTM's step products (a step's state share of the
    gates and its projection, and in training their gradients' products, `_linear`, a direction at
    a time), when embedding a chunk's input shares (`_onednn_gates`, a few hundred rows at a
    time) and, without gradients, the token encoder's highway and projection products
    (`linear`): at a few hundred rows and fewer oneDNN ran well above MKL's sgemm behind
    torch.bmm and F.linear on an AMD EPYC (bench/embed.py, bench/train.py). The weights must be
    contiguous: oneDNN multiplies by a strided one's transpose far slower."""
    return onednn_linear_works() and all(
        w is None or (isinstance(w, torch.Tensor) and w.device.type == "cpu" and w.dtype in ONEDNN_DTYPES and w.is_contiguous())
        for w in weights)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias), through oneDNN's linear where `onednn_products(weight)` holds,
    autocast is off and nothing needs a gradient (oneDNN's op has no autograd formula)."""
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    if (onednn_products(weight) and x.dtype == weight.dtype and x.numel() and not needs_grad
            and not torch.is_autocast_enabled(x.device.type)):
        return _onednn_linear(x.reshape(-1, x.shape[-1]), weight, bias).view(*x.shape[:-1], weight.shape[0])
    return torch.nn.functional.linear(x, weight, bias)


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (n, K) @ weight (N, K).T (+ bias (N,)) -> (n, N), a fresh tensor, through oneDNN (the op
    behind torch.compile's CPU linear)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _linear(x: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
    """x (D, n, K) @ w_t.transpose(1, 2) -> (D, n, N), a fresh tensor, each direction's product
    through oneDNN; w_t (D, N, K) is a (D, K, N) weight transposed (a view) or a weight used as
    its own transpose."""
    products = [_onednn_linear(x[d], w_t[d]) for d in range(x.shape[0])]
    return products[0].unsqueeze(0) if len(products) == 1 else torch.stack(products)


ONEDNN_ROWS = 256  # rows of a chunk's input product that oneDNN computes at once


def _onednn_gates(buffer: torch.Tensor, x: torch.Tensor, w_t: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (D, n, K) @ w_t.transpose(1, 2) (+ bias (D, 1, 4H)) written into `buffer` (flat) as
    (D, n, 4H) rows, returned as (D, 4, n, H), each gate's share viewed in those rows. oneDNN's
    linear returns a fresh tensor, so it computes ONEDNN_ROWS rows at a time, each block copied
    into the buffer: so it ran faster than torch.bmm's product of the whole chunk (bench/embed.py),
    and a fresh tensor of the whole chunk would cost its page faults."""
    D, n, _ = x.shape
    G = w_t.shape[1]
    out = buffer[: D * n * G].view(D, n, G)
    for d in range(D):
        for start in range(0, n, ONEDNN_ROWS):
            rows = slice(start, start + ONEDNN_ROWS)
            out[d, rows] = _onednn_linear(x[d, rows], w_t[d], None if bias is None else bias[d, 0])
    return out.view(D, n, 4, G // 4).transpose(1, 2)


def _bmm(x: torch.Tensor, w: torch.Tensor | Int8Weight, out: torch.Tensor) -> torch.Tensor:
    """x @ w, written to `out`."""
    return w.bmm(x, out=out) if isinstance(w, Int8Weight) else torch.bmm(x, w, out=out)


def _baddbmm_(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor | Int8Weight) -> torch.Tensor:
    """out (D, n, 4, H) += x @ w, in place (a float w needs out's rows whole: a view (D, n, 4H))."""
    return w.baddbmm_(out, x) if isinstance(w, Int8Weight) else out.view(*out.shape[:2], -1).baddbmm_(x, w)


TANH_SERIES = (1, -1 / 3, 2 / 15, -17 / 315, 62 / 2835, -1382 / 155925, 21844 / 6081075)  # of x, x^3, ..., x^13


def _tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x), in compiled loops on a CPU in float32 `_tanh_from_exp`: torch.compile's CPU code
    computes torch.tanh with a vector routine several times slower, enough to make tanh most of
    an embedding step's elementwise time. (Op by op, torch.tanh is fast.)"""
    if torch.compiler.is_compiling() and x.dtype == torch.float32 and x.device.type == "cpu":
        return _tanh_from_exp(x)
    return torch.tanh(x)


def _tanh_from_exp(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) within 1.5 ulp in float32: (1 - e) / (1 + e), e = exp(-2|x|), which loses the
    digits of small values, where tanh's Taylor series (to x^13) is exact to float32 rounding."""
    a = x.abs()
    a2, series = a * a, TANH_SERIES[-1]
    for coefficient in reversed(TANH_SERIES[:-1]):
        series = series * a2 + coefficient
    e = torch.exp(-2 * a)
    return torch.copysign(torch.where(a < 0.4, a * series, (1 - e) / (1 + e)), x)


def _cell(gates: torch.Tensor, c: torch.Tensor, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An embedding step's elementwise part, to be compiled: the gates (D, 4, n, H), input's and
    state's shares summed, and the previous cell (D, n, H) -> the new cell, clipped to
    [-clip, clip] (a 0-dim tensor, inf for no clip), and the output before projection,
    o * tanh(c)."""
    i, j, f, o = gates.unbind(1)
    c = (torch.sigmoid(f) * c + torch.sigmoid(i) * _tanh(j)).clamp(-clip, clip)
    return c, torch.sigmoid(o) * _tanh(c)


def _cell_with_input(state_share: torch.Tensor, input_share: torch.Tensor, bias: torch.Tensor, c: torch.Tensor,
                     clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_cell` whose gates are the state's share (D, 4, n, H), the input's share (D, 4, n, H) and
    the bias (D, 4, 1, H): compiled, they are summed where they are used (a chunk's input product
    then writes its buffer once, and the state's product is a product, not one that adds)."""
    return _cell(state_share + input_share + bias, c, clip)


def _cell_from_table(state_share: torch.Tensor, table: torch.Tensor, rows: torch.Tensor, c: torch.Tensor,
                     clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_cell` whose gates are the state's share (D, 4, n, H) plus each slot's row of the input
    shares' table (D, 4, U, H), rows (D, n): compiled, the rows are read where they are used
    instead of being gathered into a buffer first."""
    D, device = table.shape[0], table.device
    return _cell(state_share + table[torch.arange(D, device=device).view(D, 1, 1), torch.arange(4, device=device).view(1, 4, 1),
                                     rows.unsqueeze(1)], c, clip)


def _cell_in_place(gates: torch.Tensor, c: torch.Tensor, cell_clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`_cell` op by op, activating the gates (D, 4, n, H) in place (no fresh tensor of gates a step)."""
    i, j, f, o = gates.unbind(1)
    c = torch.mul(f.sigmoid_(), c).addcmul_(i.sigmoid_(), j.tanh_())
    if cell_clip is not None:
        c = c.clamp_(-cell_clip, cell_clip)
    return c, torch.tanh(c).mul_(o.sigmoid_())


def lstm_inference(x: torch.Tensor, w_input: torch.Tensor | Int8Weight, bias: torch.Tensor,
                   w_state: torch.Tensor | Int8Weight, w_proj: torch.Tensor | Int8Weight | None,
                   h: torch.Tensor, c: torch.Tensor, batch_sizes: list[int],
                   cell_clip: float | None, proj_clip: float | None,
                   rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (D, N, I) packed, bias (D, 1, 4H) (forget offset included), h (D, B, P) and c (D, B, H)
    the sorted rows' initial state -> outputs (D, N, P) and every row's final h, c.

    With `rows` (D, N), x is (D, U, I), U distinct inputs, and slot n of direction d reads
    x[d, rows[d, n]]: the input's share of the gates is computed once per distinct input (a
    (D, 4, U, H) table) and each chunk gathers its rows from it.

    The input's share of the gates is computed a few steps at a time (at least GATE_ROWS rows a
    product): the speed of one large product with memory bounded whatever the batch. The chunks
    share one buffer (a fresh buffer a chunk costs its page faults), and so do the steps' state
    shares: no new tensor of gates a step. Every gates' product gives each gate's share as (D,
    4, n, H): in float32 on a CPU and in int8 written gate by gate (`by_gate`), each gate a
    block that the elementwise part reads whole; elsewhere one product's rows, viewed so. In
    float32 on a CPU a step's products (its state share, its projection) and a chunk's input
    shares go through oneDNN (`onednn_products`) instead, faster than torch.bmm at a step's rows
    though each returns a fresh tensor (a step's, small enough for the allocator to reuse; a
    chunk's, a few hundred rows at a time, copied into the buffer as (D, rows, 4H) rows).

    Where the steps are large (FUSED_FROM gate values) and torch.compile works, each step's
    elementwise part is one compiled loop (`cell`: ~10 ops, each reading and writing (D, n, H)
    tensors, fused), which also sums the two shares and the bias (the products then only write
    their buffers), and a table's rows are read by that loop where they are used, instead of
    being gathered into the buffer first (`cell_from_table`).

    On a CPU the directions run in turn, each on its own (DIRECTIONS_IN_TURN): a step's tensors
    are half the size, more of them stay in cache, and that is measured faster there
    (bench/embed.py); a GPU keeps both in one batched product, the more work a launch.
    """
    D, G, P = x.shape[0], bias.shape[-1], w_state.shape[1]  # w_* may be Int8Weight: the products in int8
    if D > 1 and x.device.type == "cpu" and DIRECTIONS_IN_TURN:
        runs = [lstm_inference(x[d : d + 1], w_input[d : d + 1], bias[d : d + 1], w_state[d : d + 1],
                               None if w_proj is None else w_proj[d : d + 1], h[d : d + 1], c[d : d + 1],
                               batch_sizes, cell_clip, proj_clip, None if rows is None else rows[d : d + 1])
                for d in range(D)]
        return tuple(torch.cat(parts) for parts in zip(*runs))
    fused = Fused.enabled and D * h.shape[1] * G >= FUSED_FROM
    clip = torch.tensor(float("inf") if cell_clip is None else cell_clip, dtype=c.dtype, device=c.device) \
        if fused else None  # a tensor, so that no clip value makes torch.compile trace again
    H, int8 = G // 4, isinstance(w_state, Int8Weight)
    blocks = by_gate(w_state) and not int8  # float weights as gate_blocks (int8 copies its products out gate by gate)
    onednn = onednn_products(w_input, w_state, w_proj)
    if onednn:  # the (D, N, K) weights oneDNN's linear takes: views
        w_input_t, w_state_t = w_input.transpose(1, 2), w_state.transpose(1, 2)
        w_proj_t = None if w_proj is None else w_proj.transpose(1, 2)
    row_bias = bias  # (D, 1, 4H)
    product_bias = bias.view(D, 1, 4, H) if int8 else bias  # (D, 1, 4H), or (D * 4, 1, H) in blocks
    if blocks:  # (the state's weight too, unless oneDNN multiplies by it)
        w_input, product_bias = gate_blocks(w_input), gate_blocks(bias)
        w_state = w_state if onednn else gate_blocks(w_state)
    bias = bias.view(D, 1, 4, H).transpose(1, 2)  # (D, 4, 1, H), each gate's
    chunks, start = [], 0  # (first row, end row) of each chunk of whole steps
    for t, end in enumerate(itertools.accumulate(batch_sizes)):
        if end - start >= GATE_ROWS or t == len(batch_sizes) - 1:
            chunks.append((start, end))
            start = end
    buffer = x.new_empty(D * max((b - a for a, b in chunks), default=0) * G)  # a chunk's input shares
    shares = None if onednn else x.new_empty(D * h.shape[1] * G)  # a step's state shares

    def state_share(h: torch.Tensor) -> torch.Tensor:
        """h (D, n, P) @ the state's weight -> (D, 4, n, H), each gate's share."""
        if onednn:
            return _linear(h, w_state_t).view(D, h.shape[1], 4, H).transpose(1, 2)
        return _gates(shares, h, w_state, None, blocks)

    table = None  # (D, 4, U, H)
    if rows is not None:
        table = _gates(x.new_empty(D * x.shape[1] * G), x, w_input, product_bias, blocks)
    next_chunk = iter(chunks)
    out = x.new_empty(D, sum(batch_sizes), P)  # every step's output, written where it belongs
    done_h, done_c = [], []
    offset = chunk_start = chunk_end = 0
    for n in batch_sizes:
        if offset == chunk_end:
            chunk_start, chunk_end = next(next_chunk)
            if table is None and onednn:  # (D, 4, rows, H) viewed in (D, rows, 4H); fused, each step's loop adds the bias
                gates_x = _onednn_gates(buffer, x[:, chunk_start:chunk_end], w_input_t, None if fused else row_bias)
            elif table is None:  # (D, 4, rows, H); fused, the bias is added by each step's loop
                gates_x = _gates(buffer, x[:, chunk_start:chunk_end], w_input, None if fused else product_bias, blocks)
            elif not fused:  # the chunk's rows of the table, gathered into the buffer as (D, rows, 4H)
                gathered = buffer[: D * (chunk_end - chunk_start) * G].view(D, chunk_end - chunk_start, 4, H)
                for d in range(D):
                    torch.index_select(table[d].transpose(0, 1), 0, rows[d, chunk_start:chunk_end], out=gathered[d])
                gates_x = gathered.transpose(1, 2)
        if n < h.shape[1]:  # the shortest rows have ended: keep their final state
            done_h.append(h[:, n:])
            done_c.append(c[:, n:])
            h, c = h[:, :n], c[:, :n]
        if table is not None and fused:  # the table's rows added in the loop
            c, m = cell_from_table(state_share(h), table, rows[:, offset : offset + n], c, clip)
        else:
            input_share = gates_x[:, :, offset - chunk_start : offset - chunk_start + n]  # (D, 4, n, H)
            if fused:
                c, m = cell(state_share(h), input_share, bias, c, clip)
            elif blocks or onednn:  # a product into a buffer of its own runs faster than one that adds
                c, m = _cell_in_place(state_share(h).add_(input_share), c, cell_clip)
            else:  # added where the input's share lies (an int8 product is a fresh tensor anyway)
                _baddbmm_(input_share.transpose(1, 2), h, w_state)
                c, m = _cell_in_place(input_share, c, cell_clip)
        h = out[:, offset : offset + n]  # (D, n, P), the next step's state
        if w_proj is not None:
            h.copy_(_linear(m, w_proj_t)) if onednn else _bmm(m, w_proj, out=h)
            if proj_clip is not None:
                h.clamp_(-proj_clip, proj_clip)
        else:
            h.copy_(m)
        offset += n
    done_h.append(h)
    done_c.append(c)
    return out, torch.cat(done_h[::-1], dim=1), torch.cat(done_c[::-1], dim=1)


# --------------------------------------------------------------------------------------------
# LSTM with projection, with autograd (training)


def _step_forward(gates: torch.Tensor, c: torch.Tensor, cell_clip: float | None,
                  m_out: torch.Tensor | None = None):
    """One training step's elementwise part: gates (D, n, 4H), activated in place, and the
    previous cell (D, n, H) -> i, j, f, o (views of `gates`), the new (clipped) cell, its tanh, the
    output m = o * tanh(c) (written to `m_out` when given), and where the cell clip let the
    gradient through (None without a clip)."""
    i, j, f, o = gates.chunk(4, dim=-1)
    i.sigmoid_(), j.tanh_(), f.sigmoid_(), o.sigmoid_()
    c = torch.addcmul(f * c, i, j)
    keep_c = None
    if cell_clip is not None:
        keep_c = (c >= -cell_clip) & (c <= cell_clip)
        c = c.clamp_(-cell_clip, cell_clip)
    tanh_c = torch.tanh(c)
    m = torch.mul(o, tanh_c, out=m_out) if m_out is not None else o * tanh_c
    return i, j, f, o, c, tanh_c, m, keep_c


def _step_backward(dc: torch.Tensor, dm: torch.Tensor, i: torch.Tensor, j: torch.Tensor, f: torch.Tensor,
                   o: torch.Tensor, c_prev: torch.Tensor, tanh_c: torch.Tensor,
                   keep_c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The same step backwards: the gradients of the cell (dc) and of m (dm) -> the gates'
    gradient (D, n, 4H) and the previous cell's gradient."""
    dc = dc + dm * o * (1 - tanh_c * tanh_c)
    if keep_c is not None:
        dc = dc * keep_c
    grad_gates = torch.cat([dc * j * (i * (1 - i)), dc * i * (1 - j * j),
                            dc * c_prev * (f * (1 - f)), dm * tanh_c * (o * (1 - o))], dim=-1)
    return grad_gates, dc * f


class Fused:
    """`fn` compiled by torch.compile into one loop over its elements, or `fn` itself where that
    fails (no C++ compiler, an unsupported device) or TORCH_ELMO_COMPILE=0 is set.

    A training step's backward elementwise part is ~20 PyTorch ops, each reading and writing
    (D, n, H) tensors; fused, it reads its inputs and writes its outputs once; so is an
    embedding step's (`cell`). (Training's forward, 8 ops that also keep their results for the
    backward, ran slower compiled, bench/train.py, and stays eager.)
    """

    enabled = os.environ.get("TORCH_ELMO_COMPILE", "1") != "0"

    def __init__(self, fn):
        self.fn, self.compiled = fn, None

    def __call__(self, *args):
        if self.enabled and self.compiled is not False:
            try:
                if self.compiled is None:
                    self.compiled = torch.compile(self.fn, dynamic=True)
                return self.compiled(*args)
            except Exception as error:  # compilation failed: the same ops, unfused
                self.compiled = False
                warnings.warn(f"torch.compile of the LSTM step failed, running it unfused (slower): {error}", stacklevel=2)
        return self.fn(*args)


step_backward = Fused(_step_backward)
cell = Fused(_cell_with_input)
cell_from_table = Fused(_cell_from_table)


class LstmThroughTime(torch.autograd.Function):
    """One LSTM-with-projection layer over a packed sequence (the "fast" implementation with
    autograd), forward and backward through time written out, so that training pays for the
    recurrence and nothing else.

    Autograd would record ~15 small ops a step and accumulate each weight gradient step by step
    (read and write the whole gradient every step). Here the forward computes the input's share
    of the gates for every step in one product, into a (D, N, 4H) buffer that each step then
    turns into its gate activations in place; the backward walks the steps in reverse, writing
    each step's gate gradients over its activations once they are used, so that the same buffer
    ends up holding every gate gradient, and the weight gradients are one large product each over
    all steps. (Fresh (D, N, 4H) tensors, hundreds of MB a layer for the original model's batch,
    would cost their page faults on every update.)

    x (D, N, I) is the packed input, bias (D, 4H) the gates' bias (forget bias included); h0
    (D, B, P) and c0 (D, B, H) the initial state of the B sorted rows. Returns the outputs (D, N, P)
    and the final (h, c) of every row, as `LstmWithProjection.forward`; the plain implementation
    there (autograd through `LstmWithProjection.step`) is what tests compare it with. With `rows`
    (D, N), x is (D, U, I), U distinct inputs, slot n of direction d reading x[d, rows[d, n]]:
    the input's share of the gates and its two gradient products then cost U rows, not N (a
    training batch repeats its frequent tokens; it applies where the first layer's input has
    no dropout, whose masks differ from slot to slot).
    """

    @staticmethod
    def forward(ctx, x, w_input, bias, h0, c0, w_state, w_proj, batch_sizes, cell_clip, proj_clip, rows=None):
        H = w_state.shape[2] // 4
        onednn = onednn_products(w_state, w_proj)  # a step's products through oneDNN, a direction at a time
        if onednn:  # the (D, N, K) weights oneDNN's linear takes: views
            w_state_t, w_proj_t = w_state.transpose(1, 2), None if w_proj is None else w_proj.transpose(1, 2)
        gates = torch.baddbmm(bias.unsqueeze(1), x, w_input)  # (D, N, 4H): every step at once
        if rows is not None:  # gates was the (D, U, 4H) table of distinct inputs
            gates = torch.stack([gates[d].index_select(0, rows[d]) for d in range(len(rows))])
        D, N, _ = gates.shape
        m_all = x.new_empty(D, N, H) if w_proj is not None else None
        h, c = h0, c0
        steps = []  # per step: (i, j, f, o, c_prev, tanh(c), cell-clip mask, proj-clip mask)
        outputs, done_h, done_c = [], [], []
        offset = 0
        for n in batch_sizes:
            if n < h.shape[1]:
                done_h.append(h[:, n:])
                done_c.append(c[:, n:])
                h, c = h[:, :n], c[:, :n]
            step_gates = gates[:, offset : offset + n]
            if onednn:
                for d in range(D):
                    step_gates[d].add_(_linear(h[d : d + 1], w_state_t[d : d + 1])[0])
            else:
                step_gates.baddbmm_(h, w_state)
            m_out = m_all[:, offset : offset + n] if m_all is not None else None
            offset += n
            c_prev = c
            i, j, f, o, c, tanh_c, m, keep_c = _step_forward(step_gates, c_prev, cell_clip, m_out)  # (D, n, H) each
            keep_h = None
            if w_proj is not None:
                h = _linear(m, w_proj_t) if onednn else torch.bmm(m, w_proj)
                if proj_clip is not None:
                    keep_h = (h >= -proj_clip) & (h <= proj_clip)
                    h = h.clamp_(-proj_clip, proj_clip)
            else:
                h = m
            steps.append((i, j, f, o, c_prev, tanh_c, keep_c, keep_h))
            outputs.append(h)
        done_h.append(h)
        done_c.append(c)
        P = w_state.shape[1]
        out = torch.cat(outputs, dim=1) if outputs else x.new_zeros(D, 0, P)
        ctx.steps, ctx.batch_sizes, ctx.onednn = steps, batch_sizes, onednn
        ctx.save_for_backward(x, w_input, gates, m_all, out, h0, w_state, w_proj, rows)
        return out, torch.cat(done_h[::-1], dim=1), torch.cat(done_c[::-1], dim=1)

    @staticmethod
    def backward(ctx, grad_out, grad_h_final, grad_c_final):
        x, w_input, gates, m_all, out, h0, w_state, w_proj, rows = ctx.saved_tensors
        steps, batch_sizes = ctx.steps, ctx.batch_sizes
        D, B, P = h0.shape
        H = w_state.shape[2] // 4
        grad_out = grad_out if grad_out is not None else out.new_zeros(out.shape)
        grad_h_final = grad_h_final if grad_h_final is not None else h0.new_zeros(D, B, P)
        grad_c_final = grad_c_final if grad_c_final is not None else h0.new_zeros(D, B, H)
        offsets = [0]
        for n in batch_sizes:
            offsets.append(offsets[-1] + n)
        grad_proj_in = out.new_empty(D, offsets[-1], P) if w_proj is not None else None
        # Gradients flowing back into the state of the step being processed; rows that ended
        # after it start from their final state's gradient.
        n_last = batch_sizes[-1] if batch_sizes else 0
        dh, dc = grad_h_final[:, :n_last], grad_c_final[:, :n_last]
        for t in range(len(batch_sizes) - 1, -1, -1):
            n, start = batch_sizes[t], offsets[t]
            if dh.shape[1] < n:  # rows whose last step is this one join
                dh = torch.cat([dh, grad_h_final[:, dh.shape[1] : n]], dim=1)
                dc = torch.cat([dc, grad_c_final[:, dc.shape[1] : n]], dim=1)
            i, j, f, o, c_prev, tanh_c, keep_c, keep_h = steps[t]
            dh = dh + grad_out[:, start : start + n]
            if w_proj is not None:
                if keep_h is not None:
                    dh = dh * keep_h
                grad_proj_in[:, start : start + n] = dh
                dm = _linear(dh, w_proj) if ctx.onednn else torch.bmm(dh, w_proj.transpose(1, 2))  # (D, n, H)
            else:
                dm = dh
            g, dc = step_backward(dc, dm, i, j, f, o, c_prev, tanh_c, keep_c)  # (D, n, 4H), (D, n, H)
            gates[:, start : start + n] = g  # this step's activations are used: its gradient takes their place
            dh = _linear(g, w_state) if ctx.onednn else torch.bmm(g, w_state.transpose(1, 2))  # (D, n, P)
        ctx.steps = None
        grad_gates = gates  # (D, N, 4H)
        n_first = batch_sizes[0] if batch_sizes else 0
        grad_h0 = torch.cat([dh, grad_h_final[:, n_first:]], dim=1) if batch_sizes else grad_h_final
        grad_c0 = torch.cat([dc, grad_c_final[:, n_first:]], dim=1) if batch_sizes else grad_c_final
        # The inputs of every step's state product, packed like the outputs: h0, then h_{t-1}.
        h_prev = [h0[:, : batch_sizes[0]]] if batch_sizes else []
        h_prev += [out[:, offsets[t - 1] : offsets[t - 1] + batch_sizes[t]] for t in range(1, len(batch_sizes))]
        grad_w_state = torch.bmm(torch.cat(h_prev, dim=1).transpose(1, 2), grad_gates) if h_prev else torch.zeros_like(w_state)
        grad_w_proj = torch.bmm(m_all.transpose(1, 2), grad_proj_in) if w_proj is not None else None
        grad_bias = grad_gates.sum(dim=1)
        if rows is not None:  # each distinct input's gradient: the sum over the slots that read it
            table = grad_gates.new_zeros(D, x.shape[1], grad_gates.shape[2])
            for d in range(D):
                table[d].index_add_(0, rows[d], grad_gates[d])
            grad_gates = table  # (D, U, 4H)
        grad_x = torch.bmm(grad_gates, w_input.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_w_input = torch.bmm(x.transpose(1, 2), grad_gates)
        return (grad_x, grad_w_input, grad_bias, grad_h0, grad_c0, grad_w_state, grad_w_proj,
                None, None, None, None)


