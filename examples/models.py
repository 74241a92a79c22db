"""Task models on ELMo (Peters et al., 2018, section 3.3): a task's own token features (learned
word embeddings, optionally a character CNN trained from scratch) concatenated with ELMo's
mix of the biLM layers, then a BiLSTM (or nothing: a linear probe) and an output layer.

ELMo is either live (`Elmo` over character ids, what a user runs; fine-tuned with `fine_tune`)
or cached (the biLM layers computed once per dataset by `ElmoEmbedder`, mixed here: what the
benchmark runs for speed). Either way the mix is `ScalarMix`: gamma * sum_j softmax(s)_j * h_j,
learned (`layers="mix"`) or fixed (`"average"`, `"top"`, or one layer `"0"`, `"1"`, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn as nn

from torch_elmo import CharCNN, Elmo, ScalarMix, default_model_files, read_options


@dataclass
class TaskConfig:
    """What a task model is made of; saved with it, so that `TaskModel(config)` rebuilds it."""

    task: Literal["tag", "classify"]
    n_outputs: int
    n_words: int = 0                                    # 0: no word embeddings of the task's own
    word_dim: int = 100
    elmo: Literal["none", "live", "cached"] = "live"
    layers: str = "mix"                                 # "mix", "average", "top", or a layer "0", "1", ...
    n_elmo_layers: int = 3                              # L + 1, for "cached"
    elmo_dim: int = 0                                   # the biLM's output size, for "cached"
    options_file: str | None = None                     # None: the bundled model
    weight_file: str | None = None
    fine_tune: bool = False                             # live only: the biLM's weights learn too
    char_cnn: bool = False                              # a char CNN of the biLM's CNN size, from scratch
                                                        # (its output layer-normalised)
    encoder: Literal["bilstm", "linear"] = "bilstm"
    hidden: int = 100                                   # per direction
    dropout: float = 0.5                                # on every input feature and before the output

    def to_dict(self) -> dict:
        return asdict(self)


def mix_parameters(layers: str, n_layers: int) -> tuple[list[float] | None, bool]:
    """ScalarMix's initial s and whether it learns, for a layer choice."""
    if layers == "mix":
        return None, True
    if layers == "average":
        return [0.0] * n_layers, False
    index = n_layers - 1 if layers == "top" else int(layers)
    if not 0 <= index < n_layers:
        raise ValueError(f"layer {layers} is not one of the biLM's layers 0..{n_layers - 1}")
    return [0.0 if k == index else -1e4 for k in range(n_layers)], False


@dataclass
class Batch:
    """A padded batch. `layers`: the cached biLM layers, when ELMo is cached."""

    chars: torch.Tensor                  # (B, T, 50) character ids, all-zero rows pad
    words: torch.Tensor                  # (B, T) word ids, 0 pads
    mask: torch.Tensor                   # (B, T) bool
    targets: torch.Tensor                # (B, T) tag ids (-100 pads) or (B,) labels
    layers: torch.Tensor | None = None   # (B, L+1, T, D)


class TaskModel(nn.Module):
    """Features -> BiLSTM (or linear) -> logits: (B, T, tags) for "tag", (B, labels) for
    "classify" (max over the BiLSTM states of the sentence's tokens)."""

    def __init__(self, config: TaskConfig):
        super().__init__()
        self.config = config
        width = 0
        if config.n_words:
            self.word_embedding = nn.Embedding(config.n_words, config.word_dim, padding_idx=0)
            width += config.word_dim
        if config.char_cnn:
            bilm = read_options(config.options_file or default_model_files()[0])
            self.char_cnn = CharCNN(bilm)  # freshly initialised, bilm-tf's way
            # Under Adam a CNN this wide learning from scratch grows its outputs (their spread tenfold in
            # 25 updates) until the BiLSTM's gates saturate and nothing learns; normalised, it trains.
            self.char_norm = nn.LayerNorm(bilm.token_dim)
            width += bilm.token_dim
        if config.elmo == "live":
            n_layers = read_options(config.options_file or default_model_files()[0]).n_layers + 1
            initial, _ = mix_parameters(config.layers, n_layers)
            self.elmo = Elmo(config.options_file, config.weight_file, 1, requires_grad=config.fine_tune,
                             dropout=config.dropout, scalar_mix_parameters=initial)
            width += self.elmo.get_output_dim()
        elif config.elmo == "cached":
            initial, trainable = mix_parameters(config.layers, config.n_elmo_layers)
            self.layer_mix = ScalarMix(config.n_elmo_layers, initial_scalar_parameters=initial, trainable=trainable)
            width += config.elmo_dim
        if width == 0:
            raise ValueError("a task model needs word embeddings, a char CNN or ELMo")
        self.dropout = nn.Dropout(config.dropout)
        if config.encoder == "bilstm":
            self.lstm = nn.LSTM(width, config.hidden, batch_first=True, bidirectional=True)
            width = 2 * config.hidden
        self.output = nn.Linear(width, config.n_outputs)

    def scalar_mix(self) -> ScalarMix | None:
        """The ELMo mix, learned or fixed; None without ELMo."""
        if self.config.elmo == "live":
            return self.elmo.scalar_mix_0
        return self._modules.get("layer_mix")

    def mix_penalty(self) -> torch.Tensor:
        """sum_j s_j^2 of a learned mix (the paper's lambda ||s||^2, without lambda); 0 otherwise."""
        mix = self.scalar_mix()
        if mix is None or not mix.gamma.requires_grad:
            return torch.zeros(())
        return sum(s.pow(2).sum() for s in mix.scalar_parameters)

    def features(self, batch: Batch) -> torch.Tensor:
        """The concatenated token features (B, T, C)."""
        parts = []
        if self.config.n_words:
            parts.append(self.dropout(self.word_embedding(batch.words)))  # (B, T, word_dim)
        if self.config.char_cnn:
            tokens = self.char_norm(self.char_cnn(batch.chars[batch.mask]))  # (N, P) for the N real tokens
            vectors = tokens.new_zeros(*batch.mask.shape, tokens.shape[-1])
            vectors[batch.mask] = tokens
            parts.append(self.dropout(vectors))  # (B, T, P)
        if self.config.elmo == "live":
            parts.append(self.elmo(batch.chars)["elmo_representations"][0])  # (B, T, D), dropout inside
        elif self.config.elmo == "cached":
            parts.append(self.dropout(self.layer_mix(list(batch.layers.unbind(1)), batch.mask)))  # (B, T, D)
        return torch.cat(parts, dim=-1)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.features(batch)  # (B, T, C)
        if self.config.encoder == "bilstm":
            lengths = batch.mask.sum(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            x, _ = self.lstm(packed)
            x, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True, total_length=batch.mask.shape[1])  # (B, T, 2H)
        if self.config.task == "classify" and self.config.encoder == "bilstm":
            x = x.masked_fill(~batch.mask.unsqueeze(-1), float("-inf")).max(dim=1).values  # (B, 2H)
        elif self.config.task == "classify":  # a linear probe reads the mean token vector
            m = batch.mask.unsqueeze(-1).to(x.dtype)
            x = (x * m).sum(1) / m.sum(1)  # (B, C)
        return self.output(self.dropout(x))
