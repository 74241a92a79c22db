"""Training a biLM on any corpus (its settings: config.py): the loop, checkpoints, evaluation,
export.

Read top to bottom:
    Trainer       builds vocabulary, model, optimizer, sampler and data stream; `run()` runs
                  the updates with checkpoints at an interval and on SIGINT / SIGTERM;
                  `Trainer.resume(run_dir)` continues exactly where a checkpoint left off
    upgrade_checkpoint  a checkpoint of an earlier format as the current one reads it
    evaluate      held-out perplexity, forward / backward / mean, full softmax, streamed
    export        options.json + weights.hdf5 in the published layout (+ vocab.txt)

A run directory holds config.json, vocab.txt, checkpoint.pt (written atomically), and
metrics.jsonl (one JSON object per logged step or evaluation).
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import struct
import time
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .config import FROZEN_ON_RESUME, TrainConfig
from .data import BidirectionalBatcher, Vocabulary, corpus_files, count_inputs
from .errors import DataError, TrainError
from .files import atomic_path
from .formats import save_bilm
from .interrupts import on_stop_signals
from .lm import LanguageModel
from .model import BiLMConfig
from .softmax import LogUniformSampler

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
VOCAB = "vocab.txt"
METRICS = "metrics.jsonl"
CHECKPOINT_FORMAT = 2  # 1: settings `train`, `heldout`; an architecture without token_projection


def architecture(config: BiLMConfig) -> dict:
    """What a checkpoint records of the model, to refuse resuming it as another."""
    d = asdict(config)
    d["filters"] = [list(f) for f in config.filters]
    return {k: d[k] for k in BiLMConfig.architecture_fields()}


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
        if not config.train_files:
            raise TrainError("no training corpus: set `train_files` to one or more files or a glob")
        if config.bf16 and self.device.type != "cuda":
            raise TrainError("bf16 autocast is for GPU training; set bf16 to false on CPU")
        self.files = corpus_files(config.train_files)
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)

        self.vocab = self._vocabulary(_resuming)
        self.bilm_config = config.bilm_config()
        # Denormal floats (|x| < 1.2e-38, from saturated gates' tiny gradients) are slow on CPUs:
        # flushed to zero, as TensorFlow (hence bilm-tf) always does. A process-wide setting.
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
        # On CPU, the fused update: one pass over each parameter instead of one per elementwise op.
        fused = self.device.type == "cpu"
        if c.optimizer == "adagrad":
            return torch.optim.Adagrad(params, lr=c.lr, initial_accumulator_value=c.initial_accumulator_value,
                                       fused=fused)
        return torch.optim.SGD(params, lr=c.lr, fused=fused)

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
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16):
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

    def run(self, max_steps: int | None = None) -> dict:
        """Trains until `n_updates` (or `max_steps` more updates); checkpoints at
        `checkpoint_every`, at the end, and on SIGINT / SIGTERM (then stops). Returns the last
        metrics."""
        end = self.n_updates if max_steps is None else min(self.n_updates, self.step + max_steps)
        self._stop_signal = None
        with on_stop_signals(self._stop):
            return self._run(end)

    def _stop(self, signum, frame) -> None:
        self._stop_signal = signum

    def _run(self, end: int) -> dict:
        c = self.config
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
                if c.heldout_files and c.eval_every and self.step % c.eval_every == 0:
                    last = self._evaluate_and_adapt()
                if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                    self.save_checkpoint()
            self.save_checkpoint()
            if self._stop_signal is not None:
                self.log({"event": "stopped", "step": self.step, "signal": self._stop_signal})
            elif self.step >= self.n_updates and c.heldout_files and not (c.eval_every and self.step % c.eval_every == 0):
                last = self._evaluate_and_adapt()
        finally:
            bar.close()
        return last

    def log(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.run_dir / METRICS, "a", encoding="utf-8") as f:
                f.write(json.dumps({**record, "time": time.time()}) + "\n")

    def evaluate(self, files=None) -> dict:
        files = corpus_files(files if files is not None else self.config.heldout_files)
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
                "format": CHECKPOINT_FORMAT, "step": self.step, "n_updates": self.n_updates,
                "world_size": self.world_size, "config": asdict(self.config),
                "architecture": architecture(self.bilm_config),
                "vocab_size": len(self.vocab), "word_input": self.config.word_input,
                "last_heldout": self.last_heldout,
                "model": own["model"], "optimizer": own["optimizer"], "ranks": gathered,
            }
            try:
                with atomic_path(self.run_dir / CHECKPOINT) as tmp:
                    torch.save(checkpoint, tmp)
            except Exception as e:
                e.add_note(f"{self.run_dir / CHECKPOINT} is as it was before this write (if it was there): "
                           f"once this is fixed, `elmo resume {self.run_dir}` continues from it")
                raise
        if self.world_size > 1:
            dist.barrier()

    @classmethod
    def resume(cls, run_dir: str | os.PathLike, overrides: list[str] | None = None, *,
               device: str | torch.device = "cpu") -> Trainer:
        """Continues the run in `run_dir` from its checkpoint. `overrides` may change settings that
        do not alter the model or the data order (epochs, intervals, progress, eval sets)."""
        run_dir = Path(run_dir)
        path = run_dir / CHECKPOINT
        if not path.is_file():
            raise TrainError(f"{path}: no checkpoint to resume from; start the run with `train` first")
        checkpoint = upgrade_checkpoint(read_checkpoint(path))
        saved = TrainConfig.from_dict(checkpoint["config"], source=str(path))
        config = replace(saved.with_overrides(overrides or []), run_dir=str(run_dir))
        changed = [k for k in FROZEN_ON_RESUME if getattr(config, k) != getattr(saved, k)]
        if changed:
            raise TrainError(f"{path}: cannot change {changed} when resuming; start a new run instead")
        arch = architecture(config.bilm_config())
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
        self.last_heldout = checkpoint["last_heldout"]
        if self.config.max_updates is None and checkpoint["config"]["n_epochs"] == self.config.n_epochs:
            self.n_updates = checkpoint["n_updates"]

    # -- export ------------------------------------------------------------------------------------

    def export(self, out_dir: str | os.PathLike, keep_softmax: bool = False) -> None:
        export(self.model, self.vocab, out_dir, keep_softmax)


def read_checkpoint(path: Path) -> dict:
    """A checkpoint as written, read as plain data and tensors only (`weights_only`: a run
    directory someone else wrote cannot run code here); a damaged file is a TrainError."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e) or "global" in str(e):  # a class or function to import and call: refused
            raise TrainError(f"{path}: holds Python objects besides plain data and tensors, which are not read "
                             "(loading them could run code); it was not written by torch-elmo: start a new run") from None
        raise TrainError(f"{path}: damaged or not a checkpoint ({str(e).splitlines()[0]}); delete it (or restore "
                         "a copy) and start the run again") from None
    except OSError as e:
        if e.errno not in (None, errno.EINVAL):  # the disk's fault, not the file's
            raise
        raise TrainError(f"{path}: damaged or not a checkpoint (truncated: {e.strerror or e}); delete it (or restore "
                         "a copy) and start the run again") from None
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, struct.error, zipfile.BadZipFile) as e:
        raise TrainError(f"{path}: damaged or not a checkpoint (truncated or another kind of file: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}); delete it (or restore a copy) "
                         "and start the run again") from None
    if not isinstance(checkpoint, dict) or not {"config", "model", "ranks", "architecture"} <= set(checkpoint):
        raise TrainError(f"{path}: a PyTorch file but not a torch-elmo checkpoint; give the run directory of "
                         "an `elmo train` run")
    return checkpoint


def upgrade_checkpoint(checkpoint: dict) -> dict:
    """A checkpoint of any earlier format as this version reads it; each step upgrades one format.

    Format 1 named the corpora `train` / `heldout` (TrainConfig reads those names as it reads
    old config files, and gives settings added since their defaults) and recorded no
    `token_projection` in the architecture (true unless the bilm overrides said otherwise). Its
    early versions called the last held-out perplexity `best_heldout`, kept one `done` flag for
    all rows of a batcher and no random state for restart_prob (None: its draws start afresh)."""
    checkpoint = dict(checkpoint)
    if checkpoint.get("format", 1) == 1:
        if "last_heldout" not in checkpoint:
            checkpoint["last_heldout"] = checkpoint.get("best_heldout", math.inf)
        bilm = checkpoint.get("config", {}).get("bilm", {})
        checkpoint["architecture"] = {**checkpoint["architecture"],
                                      "token_projection": bilm.get("token_projection", True)}
        for rank in checkpoint["ranks"]:
            for batcher in rank["data"]["batchers"]:
                if not isinstance(batcher["done"], list):
                    batcher["done"] = [bool(batcher["done"])] * len(batcher["rows"])
                batcher.setdefault("rng", None)
        checkpoint["format"] = 2
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise TrainError(f"checkpoint format {checkpoint['format']} is newer than this torch-elmo reads "
                         f"({CHECKPOINT_FORMAT}); upgrade torch-elmo")
    return checkpoint


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
