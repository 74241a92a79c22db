"""Training a biLM on any corpus: configuration, the training loop, checkpoints, evaluation,
export, and the command line.

Read top to bottom:
    TrainConfig   every hyper-parameter, with bilm-tf's recipe as defaults; from a JSON file, then
                  overridden by `key=value` pairs (the command line's `--set`)
    Trainer       builds vocabulary, model, optimizer, sampler and data stream; `train()` runs
                  the updates with checkpoints at an interval and on SIGINT / SIGTERM;
                  `Trainer.resume(run_dir)` continues exactly where a checkpoint left off
    evaluate      held-out perplexity, forward / backward / mean, full softmax, streamed
    export        options.json + weights.hdf5 in the published layout (+ vocab.txt)
    main          `python -m torch_elmo.train ...`: the `elmo` command (torch_elmo.cli)

A run directory holds config.json, vocab.txt, checkpoint.pt (written atomically), and
metrics.jsonl (one JSON object per logged step or evaluation).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist

from .data import BidirectionalBatcher, DataError, Vocabulary, corpus_files, count_inputs
from .formats import atomic_path, read_options, save_bilm
from .lm import LanguageModel
from .model import BiLMConfig
from .softmax import LogUniformSampler

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
VOCAB = "vocab.txt"
METRICS = "metrics.jsonl"


class TrainError(ValueError):
    """A training setup that cannot work, with the fix in the message."""


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults are bilm-tf's recipe and model."""

    train: list[str] | str = ""  # corpus: files or globs, one whitespace-tokenized sentence a line
    heldout: list[str] | str | None = None  # evaluated at eval_every and at the end
    run_dir: str = "runs/elmo"
    vocab: str | None = None  # an existing vocabulary file; None: built from the training corpus
    min_count: int = 1
    max_vocab_size: int | None = None  # the special tokens included

    options: str | None = None  # a published options.json giving the architecture; else `bilm`
    bilm: dict = field(default_factory=dict)  # BiLMConfig fields overriding its defaults
    n_directions: int = 2  # 1: a forward-only LM
    word_input: bool = False  # word embeddings instead of the char CNN
    init_weights: str | None = None  # a published weights.hdf5 to continue training from
    init: str = "bilm-tf"  # of a new model: "bilm-tf" (its initialisers), "kim" (uniform +-0.05, Kim et al.)
    zero_padding_char: bool = False  # zero the padding character's embedding after each update (Kim et al.); bilm-tf learns it

    batch_size: int = 128  # rows per process
    unroll_steps: int = 20
    n_epochs: int = 10
    max_updates: int | None = None  # overrides the count that follows from the data and n_epochs
    n_negative_samples: int = 8192  # 0 (or >= the vocabulary size): full softmax
    optimizer: str = "adagrad"  # "adagrad" or "sgd"
    lr: float = 0.2
    initial_accumulator_value: float = 1.0
    clip_norm: float = 10.0
    dropout: float = 0.1
    token_dropout: float | None = None  # on the token vectors entering the LSTM; None: as dropout (bilm-tf)
    restart_prob: float = 0.0  # per row and batch: start a new sentence from a zero state (0: the original)
    contiguous_rows: bool = False  # each row reads its own contiguous block, unshuffled (PTB benchmarks)
    seed: int = 0
    lr_decay: float | None = None  # at each held-out evaluation that does not beat the previous one's
    lr_decay_threshold: float = 0.0  # perplexity by more than this, lr *= lr_decay (Kim et al.: 0.5, 1.0)
    bf16: bool = False  # bfloat16 autocast on GPU

    checkpoint_every: int = 1000  # updates
    eval_every: int | None = None  # updates
    eval_batch_size: int = 32
    log_every: int = 10  # updates
    progress: bool = True

    @classmethod
    def from_json(cls, path: str | os.PathLike, **overrides) -> "TrainConfig":
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TrainError(f"{path}: no such config file") from None
        except json.JSONDecodeError as e:
            raise TrainError(f"{path}: not a JSON config ({e})") from None
        return cls.from_dict({**values, **overrides}, source=str(path))

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainError(f"{source}: unknown setting(s) {unknown}; the settings are {sorted(known)}")
        _check_types(cls, values, source)
        return cls(**values)

    def with_overrides(self, pairs: list[str]) -> "TrainConfig":
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
                values[key] = value
        return TrainConfig.from_dict(values, source="--set")

    def bilm_config(self) -> BiLMConfig:
        """The architecture: the options file or `bilm` overrides, with this run's dropout and
        number of directions."""
        if self.options is not None:
            base = read_options(self.options)
        else:
            names = {f.name for f in fields(BiLMConfig)}
            unknown = sorted(set(self.bilm) - names)
            if unknown:
                raise TrainError(f"bilm: unknown field(s) {unknown}; the fields are {sorted(names)}")
            values = dict(self.bilm)
            filters = values.get("filters", [[1, 1]])
            if not (isinstance(filters, (list, tuple)) and filters and all(
                    isinstance(f, (list, tuple)) and len(f) == 2 and all(_is_int(v) and v > 0 for v in f) for f in filters)):
                raise TrainError(f"bilm.filters is {filters!r}, expected a list of [width, n_filters] (positive integers)")
            if "filters" in values:
                values["filters"] = tuple(tuple(f) for f in values["filters"])
            _check_types(BiLMConfig, {k: v for k, v in values.items() if k != "filters"}, "bilm")
            for name in ("char_embed_dim", "lstm_dim", "projection_dim", "n_layers", "n_highway"):
                if values.get(name, 1) < (0 if name == "n_highway" else 1):
                    kind = "a non-negative" if name == "n_highway" else "a positive"
                    raise TrainError(f"bilm.{name} is {values[name]}, expected {kind} integer")
            base = BiLMConfig(**values)
        return replace(base, dropout=self.dropout, token_dropout=self.token_dropout, n_directions=self.n_directions)


def _check_types(cls, values: dict, source: str) -> None:
    """Each value against its dataclass field's annotation (a JSON value: int, float, bool, str,
    None, list, dict and unions of them), so that `--set batch_size=abc` is a one-line error."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key in hints and not _fits(value, hints[key]):
            raise TrainError(f"{source}: {key} is {value!r}, expected {_describe(hints[key])}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fits(value, hint) -> bool:
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_int(value) or isinstance(value, float)
    if hint is str:
        return isinstance(value, (str, os.PathLike))
    return isinstance(value, typing.get_origin(hint) or hint)


def _describe(hint) -> str:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null",
             dict: "a JSON object"}
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).split(' ', 1)[-1]}s"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


ARCHITECTURE_FIELDS = ("filters", "char_embed_dim", "n_highway", "activation", "n_characters", "max_chars",
                       "lstm_dim", "projection_dim", "n_layers", "cell_clip", "proj_clip",
                       "use_skip_connections", "n_directions")


def _architecture(config: BiLMConfig) -> dict:
    d = asdict(config)
    d["filters"] = [list(f) for f in config.filters]
    return {k: d[k] for k in ARCHITECTURE_FIELDS}


# --------------------------------------------------------------------------------------------
# Distributed helpers (single process when torch.distributed is not initialised)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# --------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """One training run in `config.run_dir`. Construct to start afresh, `Trainer.resume` to go on."""

    def __init__(self, config: TrainConfig, *, device: str | torch.device = "cpu", _resuming: bool = False):
        self.config = config
        self.device = torch.device(device)
        self.rank, self.world_size = _dist_info()
        self.run_dir = Path(config.run_dir)
        if not config.train:
            raise TrainError("no training corpus: set `train` to one or more files or a glob")
        if not 0.0 <= config.restart_prob < 1.0:
            raise TrainError(f"restart_prob is {config.restart_prob}, expected a probability in [0, 1)")
        if config.init not in ("bilm-tf", "kim"):
            raise TrainError(f"init is {config.init!r}, expected \"bilm-tf\" or \"kim\"")
        if config.zero_padding_char and config.word_input:
            raise TrainError("zero_padding_char is for character-input LMs; set it to false with word_input")
        self.files = corpus_files(config.train)
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)

        self.vocab = self._vocabulary(_resuming)
        self.bilm_config = config.bilm_config()
        # Denormal floats (|x| < 1.2e-38, from saturated gates' tiny gradients) are slow on CPUs:
        # the PTB run fell from 5.7 to 3 updates/s after 1,500 updates; flushed to zero (as
        # TensorFlow, hence bilm-tf, always does) it trained 2.3x faster. A process-wide setting.
        torch.set_flush_denormal(True)
        torch.manual_seed(config.seed)
        self.model = LanguageModel(self.bilm_config, len(self.vocab), config.word_input).to(self.device)
        if config.init == "kim":
            self.model.init_uniform(0.05)
        if config.zero_padding_char:
            self.model.zero_padding_char()
        if config.init_weights and not _resuming:
            self.model.load_published(config.init_weights)
        self.ddp = None
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            # DDP starts every rank from rank 0's weights; each rank then draws its own dropout masks
            self.ddp = DistributedDataParallel(self.model)
            torch.manual_seed(config.seed + 1_000_003 * self.rank)
        self.optimizer = self._optimizer()
        self.sampler = LogUniformSampler(len(self.vocab), seed=config.seed + 7919 * self.rank)
        self.data = BidirectionalBatcher(self.files, self.vocab, config.batch_size, config.unroll_steps,
                                         n_directions=config.n_directions, seed=config.seed,
                                         rank=self.rank, world_size=self.world_size,
                                         restart_prob=config.restart_prob, contiguous=config.contiguous_rows)
        self.states = None  # per layer (h, c), carried from batch to batch
        self.step = 0
        self.tokens = 0  # target tokens trained on, this process
        self.last_heldout = math.inf  # the previous held-out perplexity (for lr_decay)
        self.n_updates = self._count_updates()
        if self.rank == 0 and not _resuming:
            self._write_config()
        self._stop_signal: int | None = None

    # -- setup ---------------------------------------------------------------------------------

    def _vocabulary(self, resuming: bool) -> Vocabulary:
        saved = self.run_dir / VOCAB
        if resuming:
            return Vocabulary.read(saved)
        if self.config.vocab is not None:
            vocab = Vocabulary.read(self.config.vocab)
        else:
            vocab = Vocabulary.build(self.files, self.config.min_count, self.config.max_vocab_size)
        if self.rank == 0:
            vocab.write(saved)
        return vocab

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = self.model.parameters()
        # On CPU, the fused update: one pass over each parameter instead of one per elementwise
        # op (Adagrad: 0.32 -> 0.07 s for 67M parameters, 1 thread; the same values).
        fused = self.device.type == "cpu"
        if c.optimizer == "adagrad":
            return torch.optim.Adagrad(params, lr=c.lr, initial_accumulator_value=c.initial_accumulator_value,
                                       fused=fused)
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, fused=fused)
        raise TrainError(f"optimizer {c.optimizer!r}: expected \"adagrad\" or \"sgd\"")

    def _count_updates(self) -> int:
        """Updates = epochs x input tokens of the corpus / tokens per update (all processes)."""
        if self.config.max_updates is not None:
            return self.config.max_updates
        per_update = self.config.batch_size * self.config.unroll_steps * self.world_size
        n_inputs = count_inputs(self.files)
        if n_inputs == 0:
            raise DataError(f"the training corpus {self.files} has no sentences (every line is blank)")
        return max(1, self.config.n_epochs * n_inputs // per_update)

    def _write_config(self) -> None:
        with atomic_path(self.run_dir / CONFIG) as tmp:
            Path(tmp).write_text(json.dumps(asdict(self.config), indent=2) + "\n", encoding="utf-8")

    # -- one update ----------------------------------------------------------------------------

    def train_step(self) -> float:
        """One update on the next batch; returns its loss (mean over directions and tokens)."""
        batches = self.data.next_batch()
        self.model.train()
        module = self.ddp if self.ddp is not None else self.model
        n_samples = self.config.n_negative_samples
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast()):
            out = module(batches, self.states, self.sampler, n_samples)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.config.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm)
        self.optimizer.step()
        if self.config.zero_padding_char:  # after the step, as Kim et al.: see LanguageModel.zero_padding_char
            self.model.zero_padding_char()
        self.states = out.states
        self.step += 1
        self.tokens += int(out.counts[0])
        return float(out.loss.detach())

    def _autocast(self) -> bool:
        if self.config.bf16 and self.device.type != "cuda":
            raise TrainError("bf16 autocast is for GPU training; set bf16 to false on CPU")
        return self.config.bf16

    def _evaluate_and_adapt(self) -> dict:
        """Held-out evaluation; with lr_decay, the learning rate drops when the perplexity did not
        improve on the previous evaluation's by more than lr_decay_threshold (Kim et al.'s rule:
        the previous one, not the best so far)."""
        record = {"event": "eval", "step": self.step, **self.evaluate()}
        if self.config.lr_decay is not None:
            if record["ppl"] > self.last_heldout - self.config.lr_decay_threshold:
                for group in self.optimizer.param_groups:
                    group["lr"] *= self.config.lr_decay
            self.last_heldout = record["ppl"]
            record["lr"] = self.optimizer.param_groups[0]["lr"]
        self.log(record)
        return record

    # -- the loop --------------------------------------------------------------------------------

    def train(self, max_steps: int | None = None) -> dict:
        """Trains until `n_updates` (or `max_steps` more updates); checkpoints at
        `checkpoint_every`, at the end, and on SIGINT / SIGTERM (then stops). Returns the last
        metrics."""
        from tqdm.auto import tqdm

        c = self.config
        end = self.n_updates if max_steps is None else min(self.n_updates, self.step + max_steps)
        previous = self._install_signal_handlers()
        bar = tqdm(total=self.n_updates, initial=self.step, disable=not c.progress or self.rank != 0,
                   unit="upd", dynamic_ncols=True)
        last: dict = {}
        window_loss, window_n, window_tokens, t0 = 0.0, 0, 0, time.perf_counter()
        try:
            while self.step < end and self._stop_signal is None:
                tokens_before = self.tokens
                loss = self.train_step()
                window_loss, window_n = window_loss + loss, window_n + 1
                window_tokens += (self.tokens - tokens_before) * self.world_size
                bar.update(1)
                if self.step % c.log_every == 0 or self.step == end:
                    dt = time.perf_counter() - t0
                    mean = window_loss / window_n
                    last = {"event": "train", "step": self.step, "loss": mean, "ppl": math.exp(min(mean, 50.0)),
                            "tokens_per_s": window_tokens / max(dt, 1e-9),
                            "epoch": self.step / self.n_updates * c.n_epochs}
                    bar.set_postfix(loss=f"{mean:.3f}", ppl=f"{last['ppl']:.1f}",
                                    tok_s=f"{last['tokens_per_s']:.0f}")
                    self.log(last)
                    window_loss, window_n, window_tokens, t0 = 0.0, 0, 0, time.perf_counter()
                if c.heldout and c.eval_every and self.step % c.eval_every == 0:
                    last = self._evaluate_and_adapt()
                if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                    self.save_checkpoint()
            self.save_checkpoint()
            if self._stop_signal is not None:
                self.log({"event": "stopped", "step": self.step, "signal": self._stop_signal})
            elif self.step >= self.n_updates and c.heldout and not (c.eval_every and self.step % c.eval_every == 0):
                last = self._evaluate_and_adapt()
        finally:
            bar.close()
            self._restore_signal_handlers(previous)
        return last

    def _install_signal_handlers(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None

        def stop(signum, frame):
            self._stop_signal = signum

        return {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signal_handlers(previous) -> None:
        for s, handler in (previous or {}).items():
            signal.signal(s, handler)

    def log(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.run_dir / METRICS, "a", encoding="utf-8") as f:
                f.write(json.dumps({**record, "time": time.time()}) + "\n")

    def evaluate(self, files=None) -> dict:
        files = corpus_files(files if files is not None else self.config.heldout)
        return evaluate(self.model, files, self.vocab, self.config.eval_batch_size, self.config.unroll_steps,
                        rank=self.rank, world_size=self.world_size, contiguous=self.config.contiguous_rows)

    # -- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything that decides the rest of the run (this process's part)."""
        return {
            "step": self.step, "tokens": self.tokens, "last_heldout": self.last_heldout,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(), "data": self.data.state_dict(),
            "states": self.states, "torch_rng": torch.get_rng_state(),
        }

    def save_checkpoint(self) -> None:
        """Writes run_dir/checkpoint.pt atomically (rank 0, with every rank's data position and
        LSTM states), so that a crash or a full disk leaves the previous checkpoint whole."""
        own = self.state_dict()
        per_rank = {k: own[k] for k in ("data", "states", "sampler", "torch_rng", "tokens")}
        if self.world_size > 1:
            gathered: list = [None] * self.world_size
            dist.all_gather_object(gathered, _to_cpu(per_rank))
        else:
            gathered = [per_rank]
        if self.rank == 0:
            checkpoint = {
                "format": 1, "step": self.step, "n_updates": self.n_updates, "world_size": self.world_size,
                "config": asdict(self.config), "architecture": _architecture(self.bilm_config),
                "vocab_size": len(self.vocab), "word_input": self.config.word_input,
                "last_heldout": self.last_heldout,
                "model": own["model"], "optimizer": own["optimizer"], "ranks": gathered,
            }
            with atomic_path(self.run_dir / CHECKPOINT) as tmp:
                torch.save(checkpoint, tmp)
        if self.world_size > 1:
            dist.barrier()

    @classmethod
    def resume(cls, run_dir: str | os.PathLike, overrides: list[str] | None = None, *,
               device: str | torch.device = "cpu") -> "Trainer":
        """Continues the run in `run_dir` from its checkpoint. `overrides` may change settings that
        do not alter the model or the data order (epochs, intervals, progress, eval sets)."""
        run_dir = Path(run_dir)
        path = run_dir / CHECKPOINT
        if not path.is_file():
            raise TrainError(f"{path}: no checkpoint to resume from; start the run with `train` first")
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        config = TrainConfig.from_dict(checkpoint["config"]).with_overrides(overrides or [])
        config = replace(config, run_dir=str(run_dir))
        frozen = ("train", "vocab", "options", "bilm", "n_directions", "word_input", "batch_size",
                  "unroll_steps", "n_negative_samples", "optimizer", "seed", "contiguous_rows")
        defaults = TrainConfig()  # settings added since the checkpoint was written have their defaults
        changed = [k for k in frozen if getattr(config, k) != checkpoint["config"].get(k, getattr(defaults, k))]
        if changed:
            raise TrainError(f"{path}: cannot change {changed} when resuming; start a new run instead")
        arch = _architecture(config.bilm_config())
        if arch != checkpoint["architecture"]:
            diff = {k: (checkpoint["architecture"][k], arch[k]) for k in arch if arch[k] != checkpoint["architecture"][k]}
            raise TrainError(
                f"{path}: the model options disagree with the checkpoint (checkpoint, options): {diff}; "
                "resume with the options the run was started with"
            )
        trainer = cls(config, device=device, _resuming=True)
        if checkpoint["world_size"] != trainer.world_size:
            raise TrainError(
                f"{path}: written by {checkpoint['world_size']} process(es), resumed with {trainer.world_size}; "
                "resume with the same number of processes"
            )
        if checkpoint["vocab_size"] != len(trainer.vocab):
            raise TrainError(f"{path}: vocabulary size {checkpoint['vocab_size']} != {len(trainer.vocab)} in {VOCAB}")
        trainer.load_state_dict(checkpoint)
        return trainer

    def load_state_dict(self, checkpoint: dict) -> None:
        own = checkpoint["ranks"][self.rank]
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.sampler.load_state_dict(own["sampler"])
        self.data.load_state_dict(own["data"])
        self.states = None if own["states"] is None else [
            (h.to(self.device), c.to(self.device)) for h, c in own["states"]]
        torch.set_rng_state(own["torch_rng"])
        self.step, self.tokens = checkpoint["step"], own["tokens"]
        self.last_heldout = checkpoint.get("last_heldout", checkpoint.get("best_heldout"))  # the name before 2026-12-02
        if self.config.max_updates is None and checkpoint["config"]["n_epochs"] == self.config.n_epochs:
            self.n_updates = checkpoint["n_updates"]

    # -- export ------------------------------------------------------------------------------------

    def export(self, out_dir: str | os.PathLike, keep_softmax: bool = False) -> None:
        export(self.model, self.vocab, out_dir, keep_softmax)


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


# --------------------------------------------------------------------------------------------
# Evaluation and export


@torch.no_grad()
def evaluate(model: LanguageModel, files: list[str], vocab: Vocabulary, batch_size: int = 32,
             unroll_steps: int = 20, max_logits: int = 2**24, rank: int = 0, world_size: int = 1,
             contiguous: bool = False) -> dict:
    """Held-out perplexity with the full softmax: every sentence once, in order, LSTM states
    carried from batch to batch as in training; positions are scored in chunks of at most
    `max_logits` logits, so memory stays bounded for any file and vocabulary size. Under
    torch.distributed each of the `world_size` processes scores its share of the sentences and
    all get the total. `contiguous`: each row reads a contiguous block of the text (the protocol
    of the Penn Treebank tables), instead of sentences dealt to the rows in turn."""
    was_training = model.training
    model.eval()
    D = model.config.n_directions
    data = BidirectionalBatcher(files, vocab, batch_size, unroll_steps, n_directions=D, train=False,
                                rank=rank, world_size=world_size, contiguous=contiguous)
    sums, counts = torch.zeros(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
    states = None
    chunk = max(1, max_logits // model.head.vocab_size)
    for batches in data:
        top, states = model.hidden(batches, states)  # (D, T * B, P)
        for d, batch in enumerate(batches):
            targets = batch.targets.T.reshape(-1).to(top.device)  # (T * B,)
            for h_part, t_part in zip(top[d].split(chunk), targets.split(chunk)):
                sums[d] += model.head.full_loss(h_part, t_part).double().sum().cpu()
            counts[d] += batch.n_targets
    model.train(was_training)
    if world_size > 1:
        totals = torch.stack([sums, counts]).to(model.head.weight.device)  # NCCL reduces GPU tensors
        dist.all_reduce(totals)
        sums, counts = totals.cpu()
    losses = (sums / counts.clamp(min=1)).tolist()
    result = {"forward_ppl": math.exp(losses[0]), "forward_loss": losses[0], "tokens": int(counts[0])}
    if D == 2:
        result.update(backward_ppl=math.exp(losses[1]), backward_loss=losses[1])
    result["ppl"] = math.exp(sum(losses) / D)
    return result


def export(model: LanguageModel, vocab: Vocabulary, out_dir: str | os.PathLike, keep_softmax: bool = False) -> None:
    """Writes out_dir/options.json, weights.hdf5 (published layout; with `keep_softmax`, also the
    datasets softmax/W (V, P) and softmax/b (V,)) and vocab.txt."""
    out_dir = Path(out_dir)
    extra = model.softmax_arrays() if keep_softmax else None
    save_bilm(model.to_bilm(), out_dir / "options.json", out_dir / "weights.hdf5", extra_arrays=extra)
    vocab.write(out_dir / VOCAB)


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    """`python -m torch_elmo.train COMMAND ...`: the training commands of `elmo` (torch_elmo.cli),
    kept under this name for scripts written before the `elmo` command existed."""
    from .cli import main as cli_main

    return cli_main(argv, prog="python -m torch_elmo.train")


if __name__ == "__main__":
    sys.exit(main())
