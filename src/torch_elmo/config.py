"""A training run's settings: `TrainConfig`, bilm-tf's recipe as defaults, checked when made.

A config comes from a JSON file (`from_json`), then `key=value` pairs (`with_overrides`, the
command line's `--set`); `bilm` holds BiLMConfig fields that override the default architecture.
Every bad setting is named at once, with its allowed range or choices, in one `TrainError`.
Field metadata say which settings a resumed run may not change (`FROZEN_ON_RESUME`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from .errors import BadSettings, TrainError, format_problems, out_of_range, type_problems
from .formats import read_options
from .model import BiLMConfig

FROZEN = {"frozen_on_resume": True}  # field metadata: changing it would change the model or the data order
RENAMED_SETTINGS = {"train": "train_files", "heldout": "heldout_files"}  # old name -> new, still read


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults are bilm-tf's recipe and model."""

    # corpus: files or globs, one whitespace-tokenized sentence a line
    train_files: list[str] | str = field(default="", metadata=FROZEN)
    heldout_files: list[str] | str | None = None  # evaluated at eval_every and at the end
    run_dir: str = "runs/elmo"
    # an existing vocabulary file; None: built from the training corpus
    vocab: str | None = field(default=None, metadata=FROZEN)
    min_count: int = 1
    max_vocab_size: int | None = None  # the special tokens included

    # a published options.json giving the architecture; else `bilm`
    options: str | None = field(default=None, metadata=FROZEN)
    bilm: dict = field(default_factory=dict, metadata=FROZEN)  # BiLMConfig fields overriding its defaults
    n_directions: Literal[1, 2] = field(default=2, metadata=FROZEN)  # 1: a forward-only LM
    word_input: bool = field(default=False, metadata=FROZEN)  # word embeddings instead of the char CNN
    init_weights: str | None = None  # a published weights.hdf5 to continue training from
    init: Literal["bilm-tf", "kim"] = "bilm-tf"  # of a new model: bilm-tf's initialisers, or uniform +-0.05 (Kim et al.)
    zero_padding_char: bool = False  # zero the padding character's embedding after each update (Kim et al.); bilm-tf learns it

    batch_size: int = field(default=128, metadata=FROZEN)  # rows per process
    unroll_steps: int = field(default=20, metadata=FROZEN)
    n_epochs: int = 10
    max_updates: int | None = None  # overrides the count that follows from the data and n_epochs
    n_negative_samples: int = field(default=8192, metadata=FROZEN)  # 0 (or >= the vocabulary size): full softmax
    optimizer: Literal["adagrad", "sgd"] = field(default="adagrad", metadata=FROZEN)
    lr: float = 0.2
    initial_accumulator_value: float = 1.0
    clip_norm: float = 10.0  # 0: no clipping
    dropout: float = 0.1
    token_dropout: float | None = None  # on the token vectors entering the LSTM; None: as dropout (bilm-tf)
    restart_prob: float = 0.0  # per row and batch: start a new sentence from a zero state (0: the original)
    contiguous_rows: bool = field(default=False, metadata=FROZEN)  # each row reads its own contiguous block (PTB)
    seed: int = field(default=0, metadata=FROZEN)
    lr_decay: float | None = None  # at each held-out evaluation that does not beat the previous one's
    lr_decay_threshold: float = 0.0  # perplexity by more than this, lr *= lr_decay (Kim et al.: 0.5, 1.0)
    bf16: bool = False  # bfloat16 autocast on GPU

    checkpoint_every: int = 1000  # updates; 0: only at the end and on a stop signal
    eval_every: int | None = None  # updates
    eval_batch_size: int = 32
    log_every: int = 10  # updates
    progress: bool = True

    def __post_init__(self):
        problems = type_problems(TrainConfig, asdict(self))
        mistyped = {name for name, _, _ in problems}

        def out_of(names, ok, expected):
            problems.extend(out_of_range(self, names, ok, expected, skip=mistyped))

        out_of(("batch_size", "unroll_steps", "min_count", "eval_batch_size", "log_every", "max_updates",
                "eval_every"), lambda v: v >= 1, "a positive integer")
        out_of(("n_epochs", "n_negative_samples", "checkpoint_every"), lambda v: v >= 0, "a non-negative integer")
        out_of(("max_vocab_size",), lambda v: v >= 4, "an integer of at least 4 (<S>, </S>, <UNK> and a word)")
        out_of(("lr",), lambda v: v > 0, "a positive number")
        out_of(("initial_accumulator_value", "clip_norm", "lr_decay_threshold"), lambda v: v >= 0,
               "a non-negative number")
        out_of(("dropout", "token_dropout", "restart_prob"), lambda v: 0.0 <= v < 1.0, "a probability in [0, 1)")
        out_of(("lr_decay",), lambda v: 0.0 < v <= 1.0, "a factor in (0, 1]")
        if self.zero_padding_char is True and self.word_input is True:
            problems.append(("zero_padding_char", True, "false with word_input (it is for character-input LMs)"))
        if self.options is None and "bilm" not in mistyped:
            names = {f.name for f in fields(BiLMConfig)}
            problems += [(f"bilm.{name}", self.bilm[name], f"a field of BiLMConfig: one of {sorted(names)}")
                         for name in sorted(set(self.bilm) - names)]
            try:
                BiLMConfig(**{k: v for k, v in self.bilm.items() if k in names})
            except BadSettings as e:
                problems += [(f"bilm.{name}", value, expected) for name, value, expected in e.problems]
        if problems:
            raise TrainError(f"{format_problems(problems)}; fix the setting(s)")

    @classmethod
    def from_json(cls, path: str | os.PathLike, **overrides) -> TrainConfig:
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TrainError(f"{path}: no such config file") from None
        except json.JSONDecodeError as e:
            raise TrainError(f"{path}: not a JSON config ({e})") from None
        if not isinstance(values, dict):
            raise TrainError(f"{path}: not a JSON object of settings; write {{\"setting\": value, ...}}")
        return cls.from_dict({**values, **overrides}, source=str(path))

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> TrainConfig:
        """From plain values (a JSON object); the settings' old names are read as the new ones."""
        values = {RENAMED_SETTINGS.get(k, k): v for k, v in values.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainError(f"{source}: unknown setting(s) {unknown}; the settings are {sorted(known)}")
        try:
            return cls(**values)
        except TrainError as e:
            raise TrainError(f"{source}: {e}") from None

    def with_overrides(self, pairs: list[str]) -> TrainConfig:
        """Applies `key=value` pairs (value read as JSON when it parses, else as a string);
        `bilm.KEY=value` sets one architecture field."""
        values = asdict(self)
        for pair in pairs:
            if "=" not in pair:
                raise TrainError(f"--set {pair!r}: expected key=value")
            key, raw = pair.split("=", 1)
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            if key.startswith("bilm."):
                values["bilm"] = {**values["bilm"], key[5:]: value}
            else:
                values[RENAMED_SETTINGS.get(key, key)] = value
        return TrainConfig.from_dict(values, source="--set")

    def bilm_config(self) -> BiLMConfig:
        """The architecture: the options file or `bilm` overrides, with this run's dropout and
        number of directions."""
        base = read_options(self.options) if self.options is not None else BiLMConfig(**self.bilm)
        return replace(base, dropout=self.dropout, token_dropout=self.token_dropout, n_directions=self.n_directions)


FROZEN_ON_RESUME = tuple(f.name for f in fields(TrainConfig) if f.metadata.get("frozen_on_resume"))
