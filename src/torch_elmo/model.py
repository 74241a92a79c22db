"""The ELMo biLM and the task-side layer mix, as pure `nn.Module`s (no file I/O here).

Read top to bottom:
    BiLMConfig          the hyper-parameters of a published `options.json`
    Highway, CharCNN    character ids of a token -> one token vector
    LstmWithProjection  one LSTM layer (TF's LSTMCell with num_proj and clipping), run for both
                        directions side by side on packed sequences; `step` is its formula
    ElmoLstm            L such layers with optional residual connections
    BiLM                sentence boundaries, token vectors, both LSTM stacks -> the 2L+1 layers
    ScalarMix           gamma * sum_j softmax(s)_j * h_j, the downstream task's view of the layers

The two hot loops (the char CNN's convolutions, the LSTM over time) also have fast
implementations in kernels.py, picked by `BiLMConfig.implementation` ("fast" by default,
"plain" for the code below alone, "int8" fast with the LSTM's products quantized, to embed
faster where exactness can go), the way transformers picks an attention implementation; the
plain code is the reference the fast one is tested against.

Shapes: B sentences, T tokens (sentence boundaries included), C = 50 chars per token, E the char
embedding size, P the projection (token vector) size, H the LSTM cell size, D the number of
directions (2), N the number of real (non-padding) tokens in a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import kernels
from .chars import BOS_CHAR_IDS, EOS_CHAR_IDS, MAX_CHARS, N_CHARACTERS, PAD_CHAR
from .errors import BadSettings, UsageError, out_of_range, type_problems

NOT_ARCHITECTURE = {"architecture": False}  # field metadata: how a model runs or trains, not what it is


@dataclass(frozen=True)
class BiLMConfig:
    """The biLM's architecture; defaults are the original `2x4096_512_2048cnn_2xhighway`.

    Checked when made: bad values raise BadSettings (a ValueError) naming every bad field and
    what it takes.
    """

    filters: tuple[tuple[int, int], ...] = (
        (1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024),
    )
    char_embed_dim: int = 16
    n_highway: int = 2
    activation: Literal["relu", "tanh"] = "relu"  # of the convolutions
    n_characters: int = N_CHARACTERS
    max_chars: int = MAX_CHARS
    lstm_dim: int = 4096
    projection_dim: int = 512
    n_layers: int = 2
    cell_clip: float | None = 3.0
    proj_clip: float | None = 3.0
    use_skip_connections: bool = True
    n_directions: Literal[1, 2] = 2  # 1: a forward-only language model
    # False: the char CNN's n_filters features enter the first LSTM layer as they are (Kim et al.);
    # a training-only layout, since ELMo's layer 0 needs token vectors of the LSTM output size
    token_projection: bool = True
    # on each LSTM layer's input, while training (bilm-tf's DropoutWrapper)
    dropout: float = field(default=0.0, metadata=NOT_ARCHITECTURE)
    # on the first layer's input instead (Kim et al.: 0); None: dropout
    token_dropout: float | None = field(default=None, metadata=NOT_ARCHITECTURE)
    # kernels.py or not; "int8": fast, the LSTM products in int8 (embedding only, not exact)
    implementation: Literal["fast", "plain", "int8"] = field(default="fast", metadata=NOT_ARCHITECTURE)

    def __post_init__(self):
        if isinstance(self.filters, (list, tuple)):  # JSON gives lists
            object.__setattr__(self, "filters", tuple(tuple(f) if isinstance(f, list) else f for f in self.filters))
        problems = type_problems(BiLMConfig, {f.name: getattr(self, f.name) for f in fields(self)})
        problems += self._range_problems(mistyped={name for name, _, _ in problems})
        if problems:
            raise BadSettings(problems)

    def _range_problems(self, mistyped: set[str]) -> list[tuple[str, object, str]]:
        problems = []
        if "filters" not in mistyped and (not self.filters or not all(
                isinstance(f, tuple) and len(f) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                             for v in f) for f in self.filters)):
            problems.append(("filters", [list(f) if isinstance(f, tuple) else f for f in self.filters],
                             "a list of [width, n_filters] (positive integers)"))
        def out_of(names, ok, expected):
            problems.extend(out_of_range(self, names, ok, expected, skip=mistyped))

        out_of(("char_embed_dim", "n_characters", "max_chars", "lstm_dim", "projection_dim", "n_layers"),
               lambda v: v >= 1, "a positive integer")
        out_of(("n_highway",), lambda v: v >= 0, "a non-negative integer")
        out_of(("cell_clip", "proj_clip"), lambda v: v > 0, "a positive number or null (no clip)")
        out_of(("dropout", "token_dropout"), lambda v: 0.0 <= v < 1.0, "a probability in [0, 1)")
        return problems

    @classmethod
    def architecture_fields(cls) -> list[str]:
        """The fields that say what the model is (those a checkpoint's architecture records)."""
        return [f.name for f in fields(cls) if f.metadata.get("architecture", True)]

    @property
    def n_filters(self) -> int:
        return sum(n for _, n in self.filters)

    @property
    def widest_filter(self) -> int:
        return max(width for width, _ in self.filters)

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

    The published (bilm-tf) convention; both products run as one [transform; carry] matmul
    (`kernels.linear` but in the plain implementation).
    """

    def __init__(self, dim: int, implementation: str = "fast"):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.implementation = implementation
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
        if self.implementation == "plain":
            product = self.linear(x)
        else:
            product = kernels.linear(x, self.linear.weight, self.linear.bias)
        transform, carry = product.chunk(2, dim=-1)
        gate = torch.sigmoid(carry)
        return gate * F.relu(transform) + (1.0 - gate) * x


class CharCNN(nn.Module):
    """Character ids of tokens -> token vectors (N, C) -> (N, P).

    Char embedding, one convolution per (width, n_filters), max over positions, relu or tanh,
    highway layers, a linear projection to the LSTM input size (none when the sizes agree).
    """

    def __init__(self, config: BiLMConfig):
        super().__init__()
        self.activation = torch.relu if config.activation == "relu" else torch.tanh
        self.implementation = config.implementation
        self.widest_filter = config.widest_filter
        self.char_embedding = nn.Embedding(config.n_characters, config.char_embed_dim, padding_idx=0)
        self.convs = nn.ModuleList(
            nn.Conv1d(config.char_embed_dim, n, kernel_size=width) for width, n in config.filters
        )
        self.highways = nn.ModuleList(Highway(config.n_filters, config.implementation) for _ in range(config.n_highway))
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
        if self.implementation == "plain" or not isinstance(self.projection, nn.Linear):
            return self.projection(x)  # (N, P)
        return kernels.linear(x, self.projection.weight, self.projection.bias)

    def _max_over_windows(self, chars: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
        """conv over the chars (N, C', E), max-pooled over positions -> (N, filters)."""
        if self.implementation == "fast":
            return kernels.max_over_windows(chars, conv.weight, conv.bias)
        return conv(chars.transpose(1, 2)).max(dim=-1).values  # (N, filters, C' - w + 1) -> (N, filters)

    def _trim_padding(self, char_ids: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, C'): without the last columns that hold padding chars in every token,
        keeping the widest filter's width of them after the last other char. Each token still has
        all its windows that touch a char and at least one all-padding window of every width (the
        same as those dropped), so the max over windows is unchanged, with less work: a 5-letter
        word takes 7 of the 50 columns (its begin and end of word marks included)."""
        used = (char_ids != PAD_CHAR + 1).any(dim=0).nonzero()  # columns holding a char (or no-token 0)
        keep = (int(used.max()) + 1 if len(used) else 0) + self.widest_filter
        return char_ids[:, :keep] if keep < char_ids.shape[1] else char_ids


def encode_unique(token_encoder: nn.Module, char_ids: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """(N, C) -> (N, P), running the token encoder once per distinct token (`chunk` at a time):
    a corpus repeats its frequent words, and a token's vector depends on the token alone."""
    unique, inverse = torch.unique(char_ids, dim=0, return_inverse=True)
    parts = unique.split(chunk) if chunk else [unique]
    return torch.cat([token_encoder(part) for part in parts])[inverse]


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
    def from_lengths(cls, lengths: torch.Tensor, max_len: int) -> PackedBatch:
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

    def unpack(self, tokens: torch.Tensor, outputs: list[torch.Tensor], n_directions: int) -> torch.Tensor:
        """The token vectors (B, T, P) and each LSTM layer's packed outputs (D, N, P) -> every
        layer in one tensor (B, L + 1, T, D * P): the tokens once for each direction, then each
        layer with each direction back in reading order; zero at padding. (One tensor, so that
        the embedder's (B, L + 1, T, dim) arrays are written once, not stacked from layers.)"""
        B, T, P = tokens.shape
        D = n_directions
        out = tokens.new_zeros(B, 1 + len(outputs), T, D, P)
        out[:, 0] = tokens.unsqueeze(2)  # (B, T, D, P)
        index = (self.forward_index, self.backward_index)[:D]
        for d in range(D):
            b, t = index[d] // T, index[d] % T  # the slots' rows and positions
            for k, packed in enumerate(outputs):
                out[b, k + 1, t, d] = packed[d]
        return out.view(B, 1 + len(outputs), T, D * P)


LstmState = tuple[torch.Tensor, torch.Tensor]  # h (D, B, P), c (D, B, H)


class LstmWithProjection(nn.Module):
    """One LSTM layer with a clipped cell and a clipped projection of its output.

    Computes what TensorFlow's `LSTMCell(num_proj, cell_clip, proj_clip)` computes (gates in the
    order i, j, f, o; the forget gate's +1.0 added at run time), for D directions at once:
    the input-to-gates product is one matmul over all steps, each step one batched matmul.
    """

    def __init__(self, input_dim: int, hidden_dim: int, proj_dim: int,
                 cell_clip: float | None, proj_clip: float | None, n_directions: int = 2,
                 implementation: str = "fast"):
        super().__init__()
        D, H = n_directions, hidden_dim
        self.hidden_dim, self.cell_clip, self.proj_clip = H, cell_clip, proj_clip
        self.state_dim = proj_dim
        self.implementation = implementation
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

    def _int8_weights(self) -> tuple[kernels.Int8Weight, kernels.Int8Weight, kernels.Int8Weight | None]:
        """The three weights quantized, made again whenever any of them has changed."""
        weights = (self.w_input, self.w_state, self.w_proj)
        key = tuple((w.data_ptr(), w._version) if w is not None else None for w in weights)
        if getattr(self, "_int8", (None,))[0] != key:
            self._int8 = key, tuple(kernels.Int8Weight(w) if w is not None else None for w in weights)
        return self._int8[1]

    def zero_state(self, batch: int, like: torch.Tensor) -> LstmState:
        D = self.w_input.shape[0]
        return like.new_zeros(D, batch, self.state_dim), like.new_zeros(D, batch, self.hidden_dim)

    def step(self, gates_x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> LstmState:
        """One time step, the formulas: gates_x (D, n, 4H) the input's share of the gates (bias
        and forget offset included), h (D, n, P) and c (D, n, H) the previous state."""
        gates = torch.baddbmm(gates_x, h, self.w_state)  # (D, n, 4H)
        i, j, f, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(j)  # (D, n, H)
        if self.cell_clip is not None:
            c = c.clamp(-self.cell_clip, self.cell_clip)
        h = torch.sigmoid(o) * torch.tanh(c)  # (D, n, H)
        if self.w_proj is not None:
            h = torch.bmm(h, self.w_proj)  # (D, n, P)
            if self.proj_clip is not None:
                h = h.clamp(-self.proj_clip, self.proj_clip)
        return h, c

    def forward(self, x: torch.Tensor, batch_sizes: list[int], state: LstmState | None = None,
                rows: torch.Tensor | None = None) -> tuple[torch.Tensor, LstmState]:
        """x (D, N, I) packed -> outputs (D, N, P) packed, and each row's final (h, c).

        `state` holds each row's initial state (sorted order); rows that never run keep theirs.
        With `rows` (D, N), x holds U distinct inputs (D, U, I) and slot n of direction d reads
        x[d, rows[d, n]] (the fast kernel then computes the input's share of the gates once per
        distinct input).
        """
        n_rows = batch_sizes[0] if batch_sizes else 0
        h, c = state if state is not None else self.zero_state(n_rows, x)
        bias = (self.bias + self.forget_bias).unsqueeze(1)  # (D, 1, 4H)
        if self.implementation != "plain":
            needs_grad = torch.is_grad_enabled() and any(
                t is not None and t.requires_grad for t in (x, h, c, self.w_input, self.bias, self.w_state, self.w_proj))
            if not needs_grad:  # ELMo embedding text, or frozen inside a task model
                weights = self._int8_weights() if self.implementation == "int8" else (self.w_input, self.w_state, self.w_proj)
                out, h, c = kernels.lstm_inference(x, weights[0], bias, weights[1], weights[2], h, c,
                                                   batch_sizes, self.cell_clip, self.proj_clip, rows)
                return out, (h, c)
            if self.implementation == "int8":
                raise UsageError("the int8 implementation only embeds (no gradients): train or fine-tune the biLM "
                                 "with implementation='fast', or freeze it (requires_grad=False)")
        if self.implementation == "fast" and not torch.is_autocast_enabled(x.device.type):  # training, fine-tuning
            out, h, c = kernels.LstmThroughTime.apply(x, self.w_input, bias.squeeze(1), h, c, self.w_state,
                                                      self.w_proj, tuple(batch_sizes), self.cell_clip, self.proj_clip,
                                                      rows)
            return out, (h, c)
        if rows is not None:  # every slot's own input
            x = torch.stack([x[d, rows[d]] for d in range(x.shape[0])])  # (D, N, I)
        gates_x = torch.baddbmm(bias, x, self.w_input)  # (D, N, 4H): the input's share, every step at once
        outputs, finished, offset = [], [], 0  # finished: final states of rows that ended, shortest last
        for n in batch_sizes:
            if n < h.shape[1]:  # the shortest rows have ended: keep their final state
                finished.append((h[:, n:], c[:, n:]))
                h, c = h[:, :n], c[:, :n]
            h, c = self.step(gates_x[:, offset : offset + n], h, c)  # (D, n, P), (D, n, H)
            offset += n
            outputs.append(h)
        finished.append((h, c))
        out = torch.cat(outputs, dim=1) if outputs else x.new_zeros(x.shape[0], 0, self.state_dim)
        return out, (torch.cat([h for h, _ in finished[::-1]], dim=1), torch.cat([c for _, c in finished[::-1]], dim=1))


class ElmoLstm(nn.Module):
    """L stacked LstmWithProjection layers; from the second layer on, optionally residual."""

    def __init__(self, config: BiLMConfig):
        super().__init__()
        self.use_skip_connections = config.use_skip_connections
        self.dropout = config.dropout
        self.token_dropout = config.dropout if config.token_dropout is None else config.token_dropout
        self.layers = nn.ModuleList(
            LstmWithProjection(config.token_dim if k == 0 else config.projection_dim, config.lstm_dim,
                               config.projection_dim, config.cell_clip, config.proj_clip, config.n_directions,
                               config.implementation)
            for k in range(config.n_layers)
        )

    def forward(self, x: torch.Tensor, batch_sizes: list[int], states: list[LstmState] | None = None,
                rows: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[LstmState]]:
        """x (D, N, P) packed -> every layer's output (D, N, P) packed, and final states. With
        `rows` (D, N), x is (D, U, P), the distinct inputs of the first layer (see
        LstmWithProjection.forward)."""
        outputs, finals = [], []
        for k, layer in enumerate(self.layers):
            p = self.token_dropout if k == 0 else self.dropout
            if rows is not None and k == 0 and p and self.training:  # a dropout mask per slot: every slot's own input
                x, rows = torch.stack([x[d, rows[d]] for d in range(x.shape[0])]), None
            x_in = F.dropout(x, p, self.training) if p else x
            x, final = layer(x_in, batch_sizes, states[k] if states is not None else None, rows if k == 0 else None)
            if self.use_skip_connections and k > 0:
                x = x + x_in
            outputs.append(x)
            finals.append(final)
        return outputs, finals


# --------------------------------------------------------------------------------------------
# The biLM


@dataclass
class BiLMOutput:
    activations: torch.Tensor  # (B, L + 1, T, D * P): the token layer, then each LSTM layer
    mask: torch.Tensor  # (B, T) bool, True at real tokens (sentence boundaries included where they are)

    @property
    def layers(self) -> list[torch.Tensor]:
        """The L + 1 layers (B, T, D * P), views of `activations`."""
        return list(self.activations.unbind(1))


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


def remove_sentence_boundaries(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, ...) (positions along `dim`) with <S> first and </S> after each row's last token,
    and its (B, T) mask -> (B, T - 2, ...) without them (zero at padding), and the words'
    (B, T - 2) mask."""
    lengths = mask.sum(dim=1) - 2  # (B,)
    inner = torch.arange(x.shape[dim] - 2, device=x.device) < lengths.unsqueeze(1)  # (B, T - 2)
    shape = [len(inner)] + [1] * (x.dim() - 1)
    shape[dim] = inner.shape[1]
    return x.narrow(dim, 1, inner.shape[1]) * inner.view(shape).to(x.dtype), inner


class BiLM(nn.Module):
    """Character ids -> the 2L+1 ELMo representations as L+1 layers of [forward; backward].

    Layer 0 is [token; token], layer k is [forward_k; backward_k]. Stateless by default: each
    sentence is read from a zero state, so its vectors depend on it alone. With `stateful`, each
    batch row starts where that row ended in the previous batch, as the original does.
    """

    TOKEN_CHUNK = 256  # tokens through the char CNN at once: its largest activation is (256, 44, 1024) floats
    DISTINCT_TOKENS_AT_MOST = 0.75  # stateless embedding: the first layer's gates once per token when U <= this x N
    DISTINCT_TABLE_BYTES = 2**29  # ... and when their table (D, U, 4H) takes at most this much memory

    def __init__(self, config: BiLMConfig, stateful: bool = False):
        super().__init__()
        if config.token_dim != config.projection_dim:
            raise UsageError(f"ELMo's layer 0 needs token vectors of the LSTM output size {config.projection_dim}, "
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
        return encode_unique(self.token_encoder, char_ids, self.TOKEN_CHUNK)

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
            raise UsageError(
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

        activations = packed.unpack(tokens, outputs, D)  # (B, L + 1, T2, D * P)
        if not boundaries:
            return BiLMOutput(*remove_sentence_boundaries(activations, mask, dim=2))
        return BiLMOutput(activations, mask)

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
        x, rows = self._first_layer_input(char_ids, mask, tokens, packed, word_ids)
        outputs, _ = self.lstm(x, packed.batch_sizes, initial, rows)
        return BiLMOutput(packed.unpack(tokens, outputs, D), mask)

    def _first_layer_input(self, char_ids: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor,
                           packed: PackedBatch, word_ids: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The first LSTM layer's packed input (D, N, P), or, when the batch repeats its tokens
        enough, its distinct token vectors (D, U, P) and each slot's row (D, N): the input's
        share of the first layer's gates depends on the token alone (DISTINCT_TOKENS_AT_MOST:
        the share of distinct tokens below which this pays, 0 turns it off; DISTINCT_TABLE_BYTES
        bounds the table's memory: 512 MiB is 4,096 distinct tokens of the original). Tokens are told
        apart by their cache rows where every one has a row, else by their character ids."""
        D = self.config.n_directions
        if self.training or self.config.implementation == "plain" or not self.DISTINCT_TOKENS_AT_MOST:
            return packed.pack(tokens, D), None
        cached = word_ids[mask] if word_ids is not None and self.word_cache is not None else None
        if cached is not None and bool(((cached > 0) & (cached < self.word_cache.shape[0])).all()):
            inverse = torch.unique(cached, return_inverse=True)[1]  # (N,) each slot's distinct token
        else:
            inverse = torch.unique(char_ids[mask], dim=0, return_inverse=True)[1]
        n_distinct = int(inverse.max()) + 1 if len(inverse) else 0
        table_bytes = D * n_distinct * 4 * self.config.lstm_dim * tokens.element_size()
        if n_distinct > self.DISTINCT_TOKENS_AT_MOST * len(inverse) or table_bytes > self.DISTINCT_TABLE_BYTES:
            return packed.pack(tokens, D), None
        first = torch.empty(n_distinct, dtype=torch.long, device=inverse.device)
        first.scatter_(0, inverse.flip(0), torch.arange(len(inverse) - 1, -1, -1, device=inverse.device))
        distinct = tokens[mask][first]  # (U, P): each distinct token's vector
        slot_token = torch.full((mask.numel(),), -1, dtype=torch.long, device=inverse.device)
        slot_token[mask.flatten()] = inverse  # flat position b * T + t -> its distinct token
        index = (packed.forward_index, packed.backward_index)[:D]
        rows = torch.stack([slot_token[i] for i in index])  # (D, N)
        return distinct.unsqueeze(0).expand(D, -1, -1).contiguous(), rows

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
            raise UsageError(
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
            raise UsageError(f"ScalarMix expects {self.mixture_size} tensors, got {len(tensors)}")
        weights = torch.softmax(torch.cat(list(self.scalar_parameters)), dim=0)
        if not self.do_layer_norm:
            return self.gamma * sum(w * t for w, t in zip(weights, tensors))
        if mask is None:
            raise UsageError("ScalarMix with do_layer_norm needs the mask")
        m = mask.unsqueeze(-1).to(tensors[0].dtype)
        n = m.sum() * tensors[0].shape[-1]
        return self.gamma * sum(w * _masked_layer_norm(t, m, n) for w, t in zip(weights, tensors))


def _masked_layer_norm(x: torch.Tensor, mask: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    mean = (x * mask).sum() / n
    variance = (((x * mask - mean) * mask) ** 2).sum() / n
    return (x - mean) / torch.sqrt(variance + 1e-13)
