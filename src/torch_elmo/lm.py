"""The biLM as a language model being trained: the core's token encoder and LSTM stack, plus a
softmax head, read as two independent left-to-right streams (bilm-tf's training graph).

Unlike `BiLM.forward` (sentences, boundaries added, the backward LSTM reading each sentence
reversed), training feeds each direction its own stream of `unroll_steps` tokens per row: the
forward LSTM reads the forward stream, the backward LSTM reads the reversed stream, and each row
continues from that row's state at the end of the previous batch (truncated BPTT). Every row is
full length, so the packed order is simply time-major: slot t * B + b.

The parameter names of `token_encoder.*` and `lstm.*` are exactly those of `BiLM`, so a
character-input LanguageModel becomes a BiLM (and the published files) without any renaming.

Shapes: D directions, B rows, T unroll steps, C = 50 chars, P the projection size, V the
vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import IGNORE_INDEX, LMBatch
from .errors import UsageError
from .model import BiLM, BiLMConfig, CharCNN, ElmoLstm, LstmState
from .softmax import LogUniformSampler, SoftmaxHead

SOFTMAX_WEIGHT = "softmax/W"  # extra datasets of an exported weights.hdf5 that keeps the head
SOFTMAX_BIAS = "softmax/b"


@dataclass
class LMOutput:
    loss: torch.Tensor  # () mean over directions of each direction's mean token loss
    token_losses: torch.Tensor  # (D, T * B) per-position loss, time-major, 0 at ignored positions
    counts: torch.Tensor  # (D,) real targets per direction
    states: list[LstmState]  # final states per layer, detached: next batch's initial states


class LanguageModel(nn.Module):
    """Token encoder (char CNN, or a word embedding for word-input models) + ElmoLstm + softmax."""

    def __init__(self, config: BiLMConfig, vocab_size: int, word_input: bool = False):
        super().__init__()
        self.config = config
        self.word_input = word_input
        P = config.projection_dim
        self.token_encoder = nn.Embedding(vocab_size, config.token_dim) if word_input else CharCNN(config)
        self.lstm = ElmoLstm(config)
        self.head = SoftmaxHead(vocab_size, P)

    def init_uniform(self, scale: float = 0.05) -> None:
        """Kim et al. (2016)'s initialisation, for comparisons with their tables: every parameter
        uniform in [-scale, scale], the padding characters' embeddings zero. Their fixed gate
        offsets are kept, so that the gates start as theirs: the highway carry bias -2 added, and
        the forget gates' bias shifted by -1 to cancel the +1 that TF's LSTM cell adds (they have none)."""
        from .chars import PAD_CHAR

        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-scale, scale)
            if not self.word_input:
                self.token_encoder.char_embedding.weight[[0, PAD_CHAR + 1]] = 0.0
                for highway in self.token_encoder.highways:
                    dim = highway.linear.in_features
                    highway.linear.bias[dim:] -= 2.0
            for layer in self.lstm.layers:
                layer.bias -= layer.forget_bias

    @torch.no_grad()
    def zero_padding_char(self) -> None:
        """Sets the padding character's embedding to zero, as Kim et al. do at the start and after
        every update (bilm-tf learns it, like any other character). Its gradient is left as it is:
        in their loop it counts in the norm that gradient clipping measures, and with many padded
        windows it can be most of that norm (leaving it out takes steps larger than theirs)."""
        from .chars import PAD_CHAR

        if self.word_input:
            raise UsageError("a word-input LM has no characters; zero_padding_char is for character-input LMs")
        self.token_encoder.char_embedding.weight[PAD_CHAR + 1] = 0.0

    def zero_states(self, batch: int) -> list[LstmState]:
        like = self.head.weight
        return [layer.zero_state(batch, like) for layer in self.lstm.layers]

    def hidden(self, batches: list[LMBatch], states: list[LstmState] | None) -> tuple[torch.Tensor, list[LstmState]]:
        """One LMBatch per direction -> top LSTM output (D, T * B, P), time-major, and final states."""
        D = self.config.n_directions
        if len(batches) != D:
            raise UsageError(f"expected {D} batches (one per direction), got {len(batches)}")
        B, T = batches[0].targets.shape
        device = self.head.weight.device
        rows = None  # with the first layer's input once per distinct token: each slot's token (D, T * B)
        if self.word_input:
            ids = torch.stack([b.word_ids for b in batches]).transpose(1, 2).to(device)  # (D, T, B)
            x = self.token_encoder(ids).reshape(D, T * B, -1)  # (D, T * B, P)
        else:
            chars = torch.stack([b.char_ids for b in batches]).transpose(1, 2).to(device)  # (D, T, B, C)
            unique, inverse = torch.unique(chars.reshape(-1, chars.shape[-1]), dim=0, return_inverse=True)
            vectors = self.token_encoder(unique)  # (U, P): the char CNN once per distinct token
            if self.config.implementation == "fast" and len(unique) <= BiLM.DISTINCT_TOKENS_AT_MOST * len(inverse):
                x, rows = vectors.unsqueeze(0).expand(D, -1, -1), inverse.view(D, T * B)  # (D, U, P)
            else:
                x = vectors[inverse].view(D, T * B, -1)
        if states is None:
            states = self.zero_states(B)
        elif any(b.restart is not None for b in batches):  # restarting rows begin from a zero state
            keep = torch.stack([~b.restart if b.restart is not None else torch.ones(B, dtype=torch.bool)
                                for b in batches]).to(device).unsqueeze(-1)  # (D, B, 1)
            states = [(h * keep, c * keep) for h, c in states]
        outputs, finals = self.lstm(x, [B] * T, states, rows)
        top = outputs[-1]  # (D, T * B, P)
        if self.config.dropout:
            top = F.dropout(top, self.config.dropout, self.training)  # bilm-tf: dropout before the softmax
        return top, [(h.detach(), c.detach()) for h, c in finals]

    def forward(self, batches: list[LMBatch], states: list[LstmState] | None = None,
                sampler: LogUniformSampler | None = None, n_samples: int = 0) -> LMOutput:
        """The loss of one batch: sampled softmax with `sampler` and `n_samples` > 0 (each direction
        draws its own shared negatives, as bilm-tf does), else the full softmax."""
        top, finals = self.hidden(batches, states)
        targets = torch.stack([b.targets.T.reshape(-1) for b in batches]).to(top.device)  # (D, T * B) time-major
        if sampler is not None and 0 < n_samples < self.head.vocab_size:
            token_losses = self.head.sampled_losses(top, targets, sampler, n_samples)  # (D, T * B)
        else:
            token_losses = torch.stack([self.head.full_loss(top[d], targets[d]) for d in range(len(batches))])
        counts_t = (targets != IGNORE_INDEX).sum(dim=1)  # (D,)
        loss = (token_losses.sum(dim=1) / counts_t.clamp(min=1)).mean()
        return LMOutput(loss, token_losses, counts_t, finals)

    # ----------------------------------------------------------------------------------------
    # The published files

    def to_bilm(self) -> BiLM:
        """The trained biLM as the core's BiLM (eval mode, no dropout), sharing no tensors."""
        if self.word_input:
            raise UsageError(
                "only character-input biLMs can be exported to the published options.json + weights.hdf5; "
                "a word-input model is kept in its training checkpoint"
            )
        if self.config.token_dim != self.config.projection_dim:
            raise UsageError(
                "only biLMs with token_projection can be exported: ELMo's layer 0 is the token vector, of the "
                "LSTM output size; this LM is kept in its training checkpoint (`elmo evaluate` reads it there)"
            )
        if self.config.n_directions != 2:
            raise UsageError(
                "only bidirectional LMs can be exported: the published weights.hdf5 holds both directions; "
                "a forward-only LM is kept in its training checkpoint (`elmo evaluate` reads it there)"
            )
        from dataclasses import replace

        bilm = BiLM(replace(self.config, dropout=0.0, token_dropout=None))
        state = {k: v.detach().clone() for k, v in self.state_dict().items()
                 if k.startswith(("token_encoder.", "lstm."))}
        bilm.load_state_dict(state)
        return bilm.to(self.head.weight.device).eval()

    def softmax_arrays(self) -> dict[str, np.ndarray]:
        return {SOFTMAX_WEIGHT: self.head.weight.detach().cpu().float().numpy(),
                SOFTMAX_BIAS: self.head.bias.detach().cpu().float().numpy()}

    def load_published(self, weight_file: str) -> bool:
        """Initialises the token encoder and LSTMs from a published weights.hdf5 (same options).

        The softmax is taken from the file when it holds one of the right size (an export made
        with `keep_softmax`), else left as initialised. Returns whether the softmax was loaded.
        """
        import h5py

        from .formats import read_weights, state_dict_from_arrays

        if self.word_input:
            raise UsageError("a published weights.hdf5 holds a character-input biLM; set word_input to false")
        state = state_dict_from_arrays(self.config, read_weights(weight_file, self.config))
        missing = self.load_state_dict(state, strict=False).missing_keys
        assert all(k.startswith("head.") for k in missing), missing
        with h5py.File(weight_file, "r") as f:
            if SOFTMAX_WEIGHT in f and f[SOFTMAX_WEIGHT].shape == tuple(self.head.weight.shape):
                with torch.no_grad():
                    self.head.weight.copy_(torch.from_numpy(f[SOFTMAX_WEIGHT][...]))
                    self.head.bias.copy_(torch.from_numpy(f[SOFTMAX_BIAS][...]))
                return True
        return False
