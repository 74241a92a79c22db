"""The ELMo biLM and the task-side layer mix, as pure `nn.Module`s (no file I/O here).

Read top to bottom:
    BiLMConfig          the hyper-parameters of a published `options.json`
    Highway, CharCNN    character ids of a token -> one token vector
    LstmWithProjection  one LSTM layer (TF's LSTMCell with num_proj and clipping), run for both
                        directions side by side on packed sequences
    ElmoLstm            L such layers with optional residual connections
    BiLM                sentence boundaries, token vectors, both LSTM stacks -> the 2L+1 layers
    ScalarMix           gamma * sum_j softmax(s)_j * h_j, the downstream task's view of the layers

Shapes: B sentences, T tokens (sentence boundaries included), C = 50 chars per token, P the
projection (token vector) size, H the LSTM cell size, D the number of directions (2), N the
number of real (non-padding) tokens in a batch.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .chars import BOS_CHAR_IDS, EOS_CHAR_IDS, MAX_CHARS, N_CHARACTERS, PAD_CHAR


@dataclass(frozen=True)
class BiLMConfig:
    """The biLM's architecture; defaults are the original `2x4096_512_2048cnn_2xhighway`."""

    filters: tuple[tuple[int, int], ...] = (
        (1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024),
    )
    char_embed_dim: int = 16
    n_highway: int = 2
    activation: str = "relu"  # of the convolutions: "relu" or "tanh"
    n_characters: int = N_CHARACTERS
    max_chars: int = MAX_CHARS
    lstm_dim: int = 4096
    projection_dim: int = 512
    n_layers: int = 2
    cell_clip: float | None = 3.0
    proj_clip: float | None = 3.0
    use_skip_connections: bool = True
    dropout: float = 0.0  # on each LSTM layer's input, while training (bilm-tf's DropoutWrapper)
    token_dropout: float | None = None  # on the first layer's input instead (Kim et al.: 0); None: dropout
    n_directions: int = 2  # 1: a forward-only language model
    # False: the char CNN's n_filters features enter the first LSTM layer as they are (Kim et al.);
    # a training-only layout, since ELMo's layer 0 needs token vectors of the LSTM output size
    token_projection: bool = True

    @property
    def n_filters(self) -> int:
        return sum(n for _, n in self.filters)

    @property
    def token_dim(self) -> int:
        """Width of the token vectors, the first LSTM layer's input."""
        return self.projection_dim if self.token_projection else self.n_filters

    @property
    def output_dim(self) -> int:
        """Width of each output layer: [forward; backward] (or [token; token] for layer 0)."""
        return self.n_directions * self.projection_dim


# --------------------------------------------------------------------------------------------
# Token encoder: characters -> token vector


class Highway(nn.Module):
    """y = g * relu(x W_t + b_t) + (1 - g) * x, carry gate g = sigmoid(x W_c + b_c).

    The published (bilm-tf) convention; both products run as one [transform; carry] matmul.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """bilm-tf's initialisation (Kim et al.'s): weights normal with std 1 / sqrt(dim), the
        carry bias -2 so that a new highway layer mostly passes its input through."""
        dim = self.linear.in_features
        with torch.no_grad():
            nn.init.normal_(self.linear.weight, std=math.sqrt(1.0 / dim))
            self.linear.bias.zero_()
            self.linear.bias[dim:] = -2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        transform, carry = self.linear(x).chunk(2, dim=-1)
        gate = torch.sigmoid(carry)
        return gate * F.relu(transform) + (1.0 - gate) * x


class CharCNN(nn.Module):
    """Character ids of tokens -> token vectors (N, C) -> (N, P).

    Char embedding, one convolution per (width, n_filters), max over positions, relu or tanh,
    highway layers, a linear projection to the LSTM input size (none when the sizes agree).
    """

    def __init__(self, config: BiLMConfig):
        super().__init__()
        if config.activation not in ("relu", "tanh"):
            raise ValueError(f"char CNN activation must be 'relu' or 'tanh', got {config.activation!r}")
        self.activation = torch.relu if config.activation == "relu" else torch.tanh
        self.char_embedding = nn.Embedding(config.n_characters, config.char_embed_dim, padding_idx=0)
        self.convs = nn.ModuleList(
            nn.Conv1d(config.char_embed_dim, n, kernel_size=width) for width, n in config.filters
        )
        self.highways = nn.ModuleList(Highway(config.n_filters) for _ in range(config.n_highway))
        self.projection = (
            nn.Linear(config.n_filters, config.projection_dim)
            if config.n_filters != config.token_dim
            else nn.Identity()
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """bilm-tf's initialisation, for training from scratch: char embeddings uniform in
        [-1, 1] (the padding row zero), convolutions normal with std 1 / sqrt(width x embedding
        dim) for relu, uniform in [-0.05, 0.05] for tanh (Kim et al.), the projection normal with
        std 1 / sqrt(n_filters), zero biases. (Highway layers initialise themselves.)"""
        with torch.no_grad():
            nn.init.uniform_(self.char_embedding.weight, -1.0, 1.0)
            self.char_embedding.weight[0].zero_()
            for conv in self.convs:
                width, dim = conv.kernel_size[0], conv.in_channels
                if self.activation is torch.relu:
                    nn.init.normal_(conv.weight, std=math.sqrt(1.0 / (width * dim)))
                else:
                    nn.init.uniform_(conv.weight, -0.05, 0.05)
                conv.bias.zero_()
            if isinstance(self.projection, nn.Linear):
                nn.init.normal_(self.projection.weight, std=math.sqrt(1.0 / self.projection.in_features))
                self.projection.bias.zero_()

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        chars = self.char_embedding(self._trim_padding(char_ids))  # (N, C', E)
        x = torch.cat([self.activation(self._max_over_windows(chars, conv)) for conv in self.convs], dim=-1)
        for highway in self.highways:  # (N, n_filters)
            x = highway(x)
        return self.projection(x)  # (N, P)

    def _trim_padding(self, char_ids: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, C'): without the last columns that hold padding chars in every token,
        keeping the widest filter's width of them after the last other char. Each token still has
        all its windows that touch a char and at least one all-padding window of every width (the
        same as those dropped), so the max over windows is unchanged, with less work: a 5-letter
        word takes 7 of the 50 columns (its begin and end of word marks included)."""
        widest = max(conv.kernel_size[0] for conv in self.convs)
        used = (char_ids != PAD_CHAR + 1).any(dim=0).nonzero()  # columns holding a char (or no-token 0)
        keep = (int(used.max()) + 1 if len(used) else 0) + widest
        return char_ids[:, :keep] if keep < char_ids.shape[1] else char_ids

    @staticmethod
    def _max_over_windows(chars: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
        """conv(chars) max-pooled over positions: (N, C, E) -> (N, filters).

        Computed as one matmul over the unfolded windows, (N, C - w + 1, E * w) @ (E * w, filters),
        max-pooled over windows, bias added after the max (the same value: adding a constant keeps
        the order): twice as fast on CPU as Conv1d followed by a max over its (N, filters, C - w + 1)
        output. .max's backward routes the gradient to one window (amax's splits it among ties,
        3x slower): ties come from identical all-padding windows, so the weight gradients are the same.
        """
        width, filters = conv.kernel_size[0], conv.out_channels
        windows = chars.unfold(1, width, 1).flatten(2)  # (N, C - w + 1, E * w), conv.weight's order
        scores = windows @ conv.weight.reshape(filters, -1).T  # (N, C - w + 1, filters)
        return scores.max(dim=1).values + conv.bias


# --------------------------------------------------------------------------------------------
# Contextual encoder: token vectors -> LSTM states, both directions side by side


@dataclass
class PackedBatch:
    """Where each real token of a (B, T) batch sits in the packed, time-major LSTM order.

    Rows are visited longest first; at step t the first `batch_sizes[t]` of them are still
    running, so the LSTM never computes a padded position. `forward_index[d]` / `backward_index`
    give, for each packed slot, the flat position `b * T + t` of the token the forward / the
    backward direction reads there: the backward direction reads each sentence reversed within its
    own length.
    """

    order: torch.Tensor  # (B,) original row of each sorted row
    batch_sizes: list[int]  # (T,) rows still running at each step
    forward_index: torch.Tensor  # (N,)
    backward_index: torch.Tensor  # (N,)

    @classmethod
    def from_lengths(cls, lengths: torch.Tensor, max_len: int) -> "PackedBatch":
        sorted_lengths, order = lengths.sort(descending=True, stable=True)
        steps = torch.arange(max_len, device=lengths.device).unsqueeze(1)  # (T, 1)
        running = steps < sorted_lengths.unsqueeze(0)  # (T, B)
        rows = order.unsqueeze(0) * max_len  # (1, B)
        forward_index = (rows + steps)[running]
        backward_index = (rows + sorted_lengths.unsqueeze(0) - 1 - steps)[running]
        batch_sizes = running.sum(dim=1).tolist()
        while batch_sizes and batch_sizes[-1] == 0:
            batch_sizes.pop()
        return cls(order, batch_sizes, forward_index, backward_index)

    def pack(self, x: torch.Tensor, n_directions: int) -> torch.Tensor:
        """(B, T, P) -> (D, N, P): the forward and the reversed sequences, packed."""
        flat = x.reshape(-1, x.shape[-1])
        index = (self.forward_index, self.backward_index)[:n_directions]
        return torch.stack([flat[i] for i in index])

    def unpack(self, packed: torch.Tensor, batch: int, max_len: int) -> torch.Tensor:
        """(D, N, P) -> (B, T, D * P), each direction back in reading order, zero at padding."""
        D, _, P = packed.shape
        out = packed.new_zeros(batch * max_len, D * P)
        index = (self.forward_index, self.backward_index)[:D]
        for d in range(D):
            out[index[d], d * P : (d + 1) * P] = packed[d]
        return out.view(batch, max_len, D * P)


LstmState = tuple[torch.Tensor, torch.Tensor]  # h (D, B, P), c (D, B, H)


class LstmWithProjection(nn.Module):
    """One LSTM layer with a clipped cell and a clipped projection of its output.

    Computes what TensorFlow's `LSTMCell(num_proj, cell_clip, proj_clip)` computes (gates in the
    order i, j, f, o; the forget gate's +1.0 added at run time), for D directions at once:
    the input-to-gates product is one matmul over many steps (all of them in training), each step
    one batched matmul.
    """

    GATE_ROWS = 1024  # without autograd, rows of the input-to-gates product computed at once

    def __init__(self, input_dim: int, hidden_dim: int, proj_dim: int,
                 cell_clip: float | None, proj_clip: float | None, n_directions: int = 2):
        super().__init__()
        D, H = n_directions, hidden_dim
        self.hidden_dim, self.cell_clip, self.proj_clip = H, cell_clip, proj_clip
        self.state_dim = proj_dim
        self.w_input = nn.Parameter(torch.empty(D, input_dim, 4 * H))
        self.w_state = nn.Parameter(torch.empty(D, proj_dim, 4 * H))
        self.bias = nn.Parameter(torch.zeros(D, 4 * H))
        # TF's LSTMCell without num_proj has no projection (and ignores proj_clip).
        self.w_proj = nn.Parameter(torch.empty(D, H, proj_dim)) if proj_dim != H else None
        forget_bias = torch.zeros(4 * H)
        forget_bias[2 * H : 3 * H] = 1.0
        self.register_buffer("forget_bias", forget_bias, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights and zero biases, TensorFlow's defaults for an LSTMCell."""
        w = torch.cat([self.w_input, self.w_state], dim=1)  # TF's kernel is [W_input; W_state]
        bound = math.sqrt(6.0 / (w.shape[1] + w.shape[2]))
        with torch.no_grad():
            nn.init.uniform_(self.w_input, -bound, bound)
            nn.init.uniform_(self.w_state, -bound, bound)
            self.bias.zero_()
            if self.w_proj is not None:
                b = math.sqrt(6.0 / (self.w_proj.shape[1] + self.w_proj.shape[2]))
                nn.init.uniform_(self.w_proj, -b, b)

    def zero_state(self, batch: int, like: torch.Tensor) -> LstmState:
        D = self.w_input.shape[0]
        return like.new_zeros(D, batch, self.state_dim), like.new_zeros(D, batch, self.hidden_dim)

    def forward(self, x: torch.Tensor, batch_sizes: list[int],
                state: LstmState | None = None) -> tuple[torch.Tensor, LstmState]:
        """x (D, N, I) packed -> outputs (D, N, P) packed, and each row's final (h, c).

        `state` holds each row's initial state (sorted order); rows that never run keep theirs.
        """
        D, N, _ = x.shape
        rows = batch_sizes[0] if batch_sizes else 0
        h, c = state if state is not None else self.zero_state(rows, x)
        bias = (self.bias + self.forget_bias).unsqueeze(1)  # (D, 1, 4H)
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, h, c, self.w_input, self.bias, self.w_state, self.w_proj))
        if needs_grad and not torch.is_autocast_enabled(x.device.type):
            out, h, c = LstmThroughTime.apply(x, self.w_input, bias.squeeze(1), h, c, self.w_state, self.w_proj,
                                              tuple(batch_sizes), self.cell_clip, self.proj_clip)
            return out, (h, c)
        cell = self._cell if needs_grad else self._cell_in_place  # frozen ELMo in a task model: in place
        # The input's share of the gates, a few steps at a time (at least GATE_ROWS rows a product):
        # the speed of one large product, with memory bounded whatever the batch. The chunks share
        # one buffer: a fresh 100 MB tensor a chunk costs its page faults (a quarter of the product).
        chunks, start = [], 0  # (first row, end row) of each chunk of whole steps
        for t, end in enumerate(itertools.accumulate(batch_sizes)):
            if end - start >= self.GATE_ROWS or t == len(batch_sizes) - 1:
                chunks.append((start, end))
                start = end
        G = bias.shape[-1]  # 4H
        buffer = x.new_empty(D * max((b - a for a, b in chunks), default=0) * G)
        next_chunk = iter(chunks)
        outputs, done_h, done_c = [], [], []
        offset = chunk_start = chunk_end = 0
        for n in batch_sizes:
            if offset == chunk_end:
                chunk_start, chunk_end = next(next_chunk)
                gates_x = buffer[: D * (chunk_end - chunk_start) * G].view(D, chunk_end - chunk_start, G)
                torch.baddbmm(bias, x[:, chunk_start:chunk_end], self.w_input, out=gates_x)  # (D, rows, 4H)
            if n < h.shape[1]:  # the shortest rows have ended: keep their final state
                done_h.append(h[:, n:])
                done_c.append(c[:, n:])
                h, c = h[:, :n], c[:, :n]
            h, c = cell(gates_x[:, offset - chunk_start : offset - chunk_start + n], h, c)  # (D, n, P), (D, n, H)
            offset += n
            outputs.append(h)
        done_h.append(h)
        done_c.append(c)
        out = torch.cat(outputs, dim=1) if outputs else x.new_zeros(D, 0, self.state_dim)
        return out, (torch.cat(done_h[::-1], dim=1), torch.cat(done_c[::-1], dim=1))


    def _cell(self, gates_x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> LstmState:
        """One step: gates_x (D, n, 4H) the input's share of the gates, h (D, n, P), c (D, n, H)."""
        gates = torch.baddbmm(gates_x, h, self.w_state)
        i, j, f, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(j)
        if self.cell_clip is not None:
            c = c.clamp(-self.cell_clip, self.cell_clip)
        h = torch.sigmoid(o) * torch.tanh(c)
        return self._project(h), c

    def _cell_in_place(self, gates_x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> LstmState:
        """The same step without autograd, computed inside the gates buffer (each step's slice
        of `gates_x` is used once): no copies, no new (D, n, 4H) tensors. The new h and c are
        tensors of their own, since the buffer is reused for later steps."""
        gates = gates_x.baddbmm_(h, self.w_state)
        i, j, f, o = gates.chunk(4, dim=-1)
        c = torch.mul(f.sigmoid_(), c).addcmul_(i.sigmoid_(), j.tanh_())
        if self.cell_clip is not None:
            c = c.clamp_(-self.cell_clip, self.cell_clip)
        h = torch.tanh(c).mul_(o.sigmoid_())
        return self._project(h), c

    def _project(self, h: torch.Tensor) -> torch.Tensor:
        if self.w_proj is None:
            return h
        h = torch.bmm(h, self.w_proj)  # (D, n, P)
        return h.clamp(-self.proj_clip, self.proj_clip) if self.proj_clip is not None else h


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


class _Fused:
    """`fn` compiled by torch.compile into one loop over its elements, or `fn` itself where that
    fails (no C++ compiler, an unsupported device) or TORCH_ELMO_COMPILE=0 is set.

    A training step's backward elementwise part is ~20 PyTorch ops, each reading and writing
    (D, n, H) tensors; fused, it reads its inputs and writes its outputs once: 10-12 ms -> 3.3 ms
    for D=2, n=128, H=4096 on 2 threads. (The forward's 8 ops ran slower compiled, 8.9 ms against
    3.4, and stay eager.)
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
                warnings.warn(f"torch.compile of the LSTM step failed, running it unfused (slower): {error}")
        return self.fn(*args)


step_backward = _Fused(_step_backward)


class LstmThroughTime(torch.autograd.Function):
    """One LstmWithProjection layer over a packed sequence, forward and backward through time
    written out, so that training pays for the recurrence and nothing else.

    Autograd would record ~15 small ops a step and accumulate each weight gradient step by step
    (read and write the whole gradient every step). Here the forward computes the input's share
    of the gates for every step in one product, into a (D, N, 4H) buffer that each step then
    turns into its gate activations in place; the backward walks the steps in reverse, writing
    each step's gate gradients over its activations once they are used, so that the same buffer
    ends up holding every gate gradient, and the weight gradients are one large product each over
    all steps. (Fresh (D, N, 4H) tensors, 335 MB a layer for the original model's batch, cost their
    page faults on every update.)

    x (D, N, I) is the packed input, bias (D, 4H) the gates' bias (forget bias included); h0
    (D, B, P) and c0 (D, B, H) the initial state of the B sorted rows. Returns the outputs (D, N, P)
    and the final (h, c) of every row, as `LstmWithProjection.forward`.
    """

    @staticmethod
    def forward(ctx, x, w_input, bias, h0, c0, w_state, w_proj, batch_sizes, cell_clip, proj_clip):
        D, N, _ = x.shape
        H = w_state.shape[2] // 4
        gates = torch.baddbmm(bias.unsqueeze(1), x, w_input)  # (D, N, 4H): every step at once
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
            step_gates = gates[:, offset : offset + n].baddbmm_(h, w_state)
            m_out = m_all[:, offset : offset + n] if m_all is not None else None
            offset += n
            c_prev = c
            i, j, f, o, c, tanh_c, m, keep_c = _step_forward(step_gates, c_prev, cell_clip, m_out)  # (D, n, H) each
            keep_h = None
            if w_proj is not None:
                h = torch.bmm(m, w_proj)
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
        ctx.steps, ctx.batch_sizes = steps, batch_sizes
        ctx.save_for_backward(x, w_input, gates, m_all, out, h0, w_state, w_proj)
        return out, torch.cat(done_h[::-1], dim=1), torch.cat(done_c[::-1], dim=1)

    @staticmethod
    def backward(ctx, grad_out, grad_h_final, grad_c_final):
        x, w_input, gates, m_all, out, h0, w_state, w_proj = ctx.saved_tensors
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
                dm = torch.bmm(dh, w_proj.transpose(1, 2))  # (D, n, H)
            else:
                dm = dh
            g, dc = step_backward(dc, dm, i, j, f, o, c_prev, tanh_c, keep_c)  # (D, n, 4H), (D, n, H)
            gates[:, start : start + n] = g  # this step's activations are used: its gradient takes their place
            dh = torch.bmm(g, w_state.transpose(1, 2))  # (D, n, P)
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
        grad_x = torch.bmm(grad_gates, w_input.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_w_input = torch.bmm(x.transpose(1, 2), grad_gates)
        return (grad_x, grad_w_input, grad_gates.sum(dim=1), grad_h0, grad_c0, grad_w_state, grad_w_proj,
                None, None, None)


class ElmoLstm(nn.Module):
    """L stacked LstmWithProjection layers; from the second layer on, optionally residual."""

    def __init__(self, config: BiLMConfig):
        super().__init__()
        self.use_skip_connections = config.use_skip_connections
        self.dropout = config.dropout
        self.token_dropout = config.dropout if config.token_dropout is None else config.token_dropout
        self.layers = nn.ModuleList(
            LstmWithProjection(config.token_dim if k == 0 else config.projection_dim, config.lstm_dim,
                               config.projection_dim, config.cell_clip, config.proj_clip, config.n_directions)
            for k in range(config.n_layers)
        )

    def forward(self, x: torch.Tensor, batch_sizes: list[int],
                states: list[LstmState] | None = None) -> tuple[list[torch.Tensor], list[LstmState]]:
        """x (D, N, P) packed -> every layer's output (D, N, P) packed, and final states."""
        outputs, finals = [], []
        for k, layer in enumerate(self.layers):
            p = self.token_dropout if k == 0 else self.dropout
            x_in = F.dropout(x, p, self.training) if p else x
            x, final = layer(x_in, batch_sizes, states[k] if states is not None else None)
            if self.use_skip_connections and k > 0:
                x = x + x_in
            outputs.append(x)
            finals.append(final)
        return outputs, finals


# --------------------------------------------------------------------------------------------
# The biLM


@dataclass
class BiLMOutput:
    layers: list[torch.Tensor]  # L + 1 tensors (B, T, D * P), sentence boundaries included
    mask: torch.Tensor  # (B, T) bool, True at real tokens (boundaries included)


def add_sentence_boundaries(char_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, C) ids without boundaries -> (B, T + 2, C) with <S> first and </S> after the last
    token of each row, and the sentence lengths (B,) counting both."""
    B, T, C = char_ids.shape
    lengths = (char_ids > 0).any(dim=-1).sum(dim=-1)  # (B,)
    out = char_ids.new_zeros(B, T + 2, C)
    out[:, 1 : T + 1] = char_ids
    out[:, 0] = char_ids.new_tensor(BOS_CHAR_IDS)
    out[torch.arange(B, device=char_ids.device), lengths + 1] = char_ids.new_tensor(EOS_CHAR_IDS)
    return out, lengths + 2


def remove_sentence_boundaries(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, ...) with <S> first and </S> after each row's last token, and its (B, T) mask ->
    (B, T - 2, ...) without them (zero at padding), and the words' (B, T - 2) mask."""
    lengths = mask.sum(dim=1) - 2  # (B,)
    inner = torch.arange(x.shape[1] - 2, device=x.device) < lengths.unsqueeze(1)  # (B, T - 2)
    shape = (*inner.shape,) + (1,) * (x.dim() - 2)
    return x[:, 1:-1] * inner.view(shape).to(x.dtype), inner


class BiLM(nn.Module):
    """Character ids -> the 2L+1 ELMo representations as L+1 layers of [forward; backward].

    Layer 0 is [token; token], layer k is [forward_k; backward_k]. Stateless by default: each
    sentence is read from a zero state, so its vectors depend on it alone. With `stateful`, each
    batch row starts where that row ended in the previous batch, as the original does.
    """

    TOKEN_CHUNK = 256  # tokens through the char CNN at once: its largest activation is (256, 44, 1024) floats

    def __init__(self, config: BiLMConfig, stateful: bool = False):
        super().__init__()
        if config.token_dim != config.projection_dim:
            raise ValueError(f"ELMo's layer 0 needs token vectors of the LSTM output size {config.projection_dim}, "
                             f"not {config.token_dim}: set token_projection to true")
        self.config = config
        self.token_encoder = CharCNN(config)
        self.lstm = ElmoLstm(config)
        self.stateful = stateful
        self._states: list[LstmState] | None = None  # per layer, (D, rows, .) each
        self.register_buffer("word_cache", None, persistent=False)  # (V, P) cached token vectors

    @property
    def num_layers(self) -> int:
        return self.config.n_layers + 1

    def reset_states(self) -> None:
        self._states = None

    @torch.no_grad()
    def cache_vocabulary(self, char_ids: torch.Tensor) -> None:
        """Computes the token vectors of a vocabulary (V, C) once; `forward(word_ids=...)` then
        looks them up instead of running the char CNN (row 0 stands for padding)."""
        self.word_cache = self.encode_tokens(char_ids) if len(char_ids) else None

    def encode_tokens(self, char_ids: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, P), running the char CNN once per distinct token, TOKEN_CHUNK at a time."""
        unique, inverse = torch.unique(char_ids, dim=0, return_inverse=True)
        return torch.cat([self.token_encoder(chunk) for chunk in unique.split(self.TOKEN_CHUNK)])[inverse]

    def forward(self, char_ids: torch.Tensor, word_ids: torch.Tensor | None = None, *,
                boundaries: bool = True) -> BiLMOutput:
        """char_ids (B, T, C) without sentence boundaries (zero rows pad) -> BiLMOutput with
        T + 2 positions, <S> first and </S> after each sentence's last token. With `word_ids`
        (B, T) and a cached vocabulary, tokens whose id is in 1..V-1 take the cached vector; any
        other id falls back to the char CNN.

        `boundaries=False`: the T word positions only, the same values. Stateless, the work at the
        boundaries is then skipped: from a zero state, the LSTMs' states after reading <S>
        (forward) or </S> (backward) are the same for every sentence, so they are computed once,
        and no word's vector needs the forward LSTM at </S> or the backward one at <S>: each
        sentence of n words costs n LSTM steps instead of n + 2 (about 9% of the work at 21 words)."""
        C = self.config.max_chars
        if char_ids.dim() != 3 or char_ids.shape[-1] != C or char_ids.is_floating_point():
            raise ValueError(
                f"BiLM expects character ids of shape (batch, tokens, {C}) and an integer dtype, got "
                f"{tuple(char_ids.shape)} {char_ids.dtype}; make them with torch_elmo.batch_to_ids(sentences)"
            )
        if not boundaries and not self.stateful:
            return self._forward_words(char_ids, word_ids)
        ids, lengths = add_sentence_boundaries(char_ids)  # (B, T2, C), (B,)
        B, T2, _ = ids.shape
        mask = torch.arange(T2, device=ids.device) < lengths.unsqueeze(1)  # (B, T2)
        if word_ids is not None:
            word_ids = F.pad(word_ids, (1, 1))  # boundaries are never cached
        tokens = self._token_vectors(ids, mask, word_ids)  # (B, T2, P)

        packed = PackedBatch.from_lengths(lengths, T2)
        D = self.config.n_directions
        initial = self._initial_states(B, packed.order, tokens) if self.stateful else None
        outputs, finals = self.lstm(packed.pack(tokens, D), packed.batch_sizes, initial)
        if self.stateful:
            self._store_states(finals, packed.order)

        layers = [torch.cat([tokens] * D, dim=-1)]
        layers += [packed.unpack(out, B, T2) for out in outputs]
        output = BiLMOutput(layers, mask)
        if not boundaries:
            inner = [remove_sentence_boundaries(layer, mask) for layer in layers]
            output = BiLMOutput([x for x, _ in inner], inner[0][1])
        return output

    def _forward_words(self, char_ids: torch.Tensor, word_ids: torch.Tensor | None) -> BiLMOutput:
        """Stateless `forward(boundaries=False)`: each direction starts at the first word it reads
        from its state after the boundary token, computed once for the whole batch."""
        B, T, _ = char_ids.shape
        lengths = (char_ids > 0).any(dim=-1).sum(dim=-1)  # (B,)
        mask = torch.arange(T, device=char_ids.device) < lengths.unsqueeze(1)  # (B, T)
        tokens = self._token_vectors(char_ids, mask, word_ids)  # (B, T, P)
        D = self.config.n_directions
        marks = char_ids.new_tensor([BOS_CHAR_IDS, EOS_CHAR_IDS][:D])  # what each direction reads first
        first = self.token_encoder(marks).to(tokens.dtype).unsqueeze(1)  # (D, 1, P)
        _, after_mark = self.lstm(first, [1])  # per layer (h (D, 1, P), c (D, 1, H))
        initial = [(h.expand(-1, B, -1).contiguous(), c.expand(-1, B, -1).contiguous()) for h, c in after_mark]
        packed = PackedBatch.from_lengths(lengths, T)
        outputs, _ = self.lstm(packed.pack(tokens, D), packed.batch_sizes, initial)
        layers = [torch.cat([tokens] * D, dim=-1)]
        layers += [packed.unpack(out, B, T) for out in outputs]
        return BiLMOutput(layers, mask)

    def _token_vectors(self, ids: torch.Tensor, mask: torch.Tensor,
                       word_ids: torch.Tensor | None) -> torch.Tensor:
        """Token vectors (B, T, P) of the ids (B, T, C), zero where `mask` is False; `word_ids`
        (B, T) aligned with `ids` select cached vectors."""
        B, T2, _ = ids.shape
        P = self.config.projection_dim
        dtype = self.token_encoder.char_embedding.weight.dtype
        tokens = torch.zeros(B, T2, P, dtype=dtype, device=ids.device)
        todo = mask.clone()
        if word_ids is not None and self.word_cache is not None:
            cached = (word_ids > 0) & (word_ids < self.word_cache.shape[0]) & mask
            tokens[cached] = self.word_cache[word_ids[cached]].to(dtype)
            todo &= ~cached
        tokens[todo] = self.encode_tokens(ids[todo])
        return tokens

    def _initial_states(self, batch: int, order: torch.Tensor, like: torch.Tensor) -> list[LstmState]:
        states = []
        for k, layer in enumerate(self.lstm.layers):
            h, c = layer.zero_state(batch, like)
            if self._states is not None:
                old_h, old_c = self._states[k]
                rows = min(batch, old_h.shape[1])
                h[:, :rows], c[:, :rows] = old_h[:, :rows], old_c[:, :rows]
            states.append((h[:, order], c[:, order]))
        return states

    def _store_states(self, finals: list[LstmState], order: torch.Tensor) -> None:
        """Each row's final state becomes its next initial state; rows beyond this batch keep theirs."""
        new = []
        for k, (h, c) in enumerate(finals):
            B = h.shape[1]
            h_rows, c_rows = torch.empty_like(h), torch.empty_like(c)
            h_rows[:, order], c_rows[:, order] = h.detach(), c.detach()
            if self._states is not None and self._states[k][0].shape[1] > B:
                old_h, old_c = self._states[k]
                h_rows = torch.cat([h_rows, old_h[:, B:]], dim=1)
                c_rows = torch.cat([c_rows, old_c[:, B:]], dim=1)
            new.append((h_rows, c_rows))
        self._states = new


# --------------------------------------------------------------------------------------------
# The task side


class ScalarMix(nn.Module):
    """gamma * sum_j softmax(s)_j * h_j over the biLM layers, with s and gamma learned per task.

    With `do_layer_norm`, each layer is first normalised over all unmasked values of the batch,
    as AllenNLP does. Parameter names match AllenNLP's, so its saved task models load.
    """

    def __init__(self, mixture_size: int, do_layer_norm: bool = False,
                 initial_scalar_parameters: list[float] | None = None, trainable: bool = True):
        super().__init__()
        if initial_scalar_parameters is None:
            initial_scalar_parameters = [0.0] * mixture_size
        if len(initial_scalar_parameters) != mixture_size:
            raise ValueError(
                f"initial_scalar_parameters has {len(initial_scalar_parameters)} values but the mix "
                f"has {mixture_size} layers; give one value per layer"
            )
        self.mixture_size = mixture_size
        self.do_layer_norm = do_layer_norm
        self.scalar_parameters = nn.ParameterList(
            nn.Parameter(torch.tensor([float(s)]), requires_grad=trainable)
            for s in initial_scalar_parameters
        )
        self.gamma = nn.Parameter(torch.tensor([1.0]), requires_grad=trainable)

    @property
    def layer_weights(self) -> torch.Tensor:
        """The normalised weights softmax(s), one per layer (detached)."""
        return torch.softmax(torch.cat(list(self.scalar_parameters)).detach(), dim=0)

    def forward(self, tensors: list[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        if len(tensors) != self.mixture_size:
            raise ValueError(f"ScalarMix expects {self.mixture_size} tensors, got {len(tensors)}")
        weights = torch.softmax(torch.cat(list(self.scalar_parameters)), dim=0)
        if not self.do_layer_norm:
            return self.gamma * sum(w * t for w, t in zip(weights, tensors))
        if mask is None:
            raise ValueError("ScalarMix with do_layer_norm needs the mask")
        m = mask.unsqueeze(-1).to(tensors[0].dtype)
        n = m.sum() * tensors[0].shape[-1]
        return self.gamma * sum(w * _masked_layer_norm(t, m, n) for w, t in zip(weights, tensors))


def _masked_layer_norm(x: torch.Tensor, mask: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    mean = (x * mask).sum() / n
    variance = (((x * mask - mean) * mask) ** 2).sum() / n
    return (x - mean) / torch.sqrt(variance + 1e-13)
