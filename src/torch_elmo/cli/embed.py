"""`elmo embed`: a text file in, one HDF5 dataset of ELMo vectors per line out, streamed,
atomic (OUTPUT.partial renamed at the end) and resumable (--resume)."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from ..efml import efml_fingerprint
from ..elmo import ElmoEmbedder
from ..errors import UsageError
from ..files import atomic_path
from ..formats import read_options
from ..interrupts import DeferredInterrupts
from .common import INTERRUPTED, local_device, model_files

PARTIAL_SUFFIX = ".partial"  # an interrupted `elmo embed` keeps OUTPUT + this, for --resume
EMBED_ATTR = "elmo_embed"  # root attribute of an embedding file: JSON of its settings and progress
FLAGS_OFF = {"int8": False, "bf16": False}  # settings stored only when on


def embed(input: str, output: str, *, model: str | None = None, options: str | None = None, weights: str | None = None,
          layers: Literal["all", "top", "average"] = "all", pool: Literal["mean", "max"] | None = None,
          batch_size: int = 256, device: str = "cpu", float16: bool = False, tokenize: bool = False,
          forget_sentences: bool = False, use_sentence_keys: bool = False, resume: bool = False,
          int8: bool = False, bf16: bool = False, quiet: bool = False) -> int:
    """Embed every line of a text file with ELMo into an HDF5 file.

    The output has the layout of AllenNLP's `allennlp elmo` command (and, with --layers all, of
    bilm-tf's dump_bilm_embeddings): one float32 dataset per input line, named by the line's
    index from 0 (str(i)), of shape (3, n_tokens, dim) with --layers all, (n_tokens, dim) with
    --layers top or average; plus a dataset "sentence_to_index" holding, as f["sentence_to_index"][0],
    the JSON of {sentence: "index"}. Layer 0 is the character CNN's token vector (twice), layer k
    the k-th biLSTM layer [forward; backward]. The vectors are exactly ElmoEmbedder's.

    It streams: memory stays bounded however large INPUT is (except sentence_to_index, which
    holds the text of every line; --forget-sentences drops it). A blank line gives an empty
    dataset (3, 0, dim) and a warning, so dataset i is always line i + 1 of INPUT. The file is
    written as OUTPUT.partial and renamed to OUTPUT at the end: a file named OUTPUT is complete.
    An interrupted run (Ctrl-C, kill, a crash) leaves OUTPUT.partial; run the same command with
    --resume to continue it.

    Arguments:
        input: the text file, one sentence a line, tokens separated by whitespace (UTF-8;
            undecodable bytes become U+FFFD); - reads standard input.
        output: the HDF5 file to write (replaced if it exists).
        model: a published model's name (`elmo models` lists them), a model folder (bilm-tf's
            layout, or an ELMoForManyLangs model), or a .zip/.tar.gz model archive's path or
            URL; downloads are kept in the cache
            ($TORCH_ELMO_CACHE, default ~/.cache/torch-elmo). Default: --options/--weights.
        options: the model's options.json, a path or URL (default: the bundled English model;
            give --weights with it).
        weights: the model's weights.hdf5, a path or URL (default: the bundled English model;
            give --options with it).
        layers: which biLM layers to store: all (default) every layer, (3, n_tokens, dim);
            top the last LSTM layer, (n_tokens, dim); average the mean of the layers,
            (n_tokens, dim).
        pool: store one vector per line instead of one per token: mean or max over the
            line's tokens, shape (3, dim) with --layers all, (dim,) otherwise; a blank line
            gives zeros. Default: no pooling.
        batch_size: sentences per forward pass (default 256); sentences are grouped by length
            within 16 batches to cut padding, and written in input order.
        device: where the model runs: cpu (default), cuda, cuda:N.
        float16: store float16 instead of float32 (half the file; about 3 significant digits).
            Default: float32.
        tokenize: the lines are raw text: split them into tokens with the Moses tokenizer
            (sacremoses, English rules; pip install 'torch-elmo[tokenize]') instead of at
            whitespace. Default: off (the input is already tokenized).
        forget_sentences: do not store the sentence_to_index dataset. Default: stored.
        use_sentence_keys: name each dataset by its line's text instead of its index, as
            AllenNLP does (then no sentence_to_index). A repeated line is stored once; a
            blank line or one containing "/" (HDF5's group separator) cannot be a name and
            is skipped with a warning. Default: off.
        resume: continue an interrupted run from OUTPUT.partial, after checking that its
            first lines and settings are the same as this run's (the lines after the restart
            may differ from an uninterrupted run's in the last bit of float32). Default: off
            (and an existing OUTPUT.partial is an error, so that it is never lost by accident).
        int8: run the LSTM's matrix products in int8 (dynamic quantization, CPU only):
            faster for large models such as the published ones (not for the bundled one), not
            exact: vectors differ from float32 by about 1% of their size. Default: float32, exact.
        bf16: run the model in bfloat16: several times faster on GPUs and on CPUs with AMX or
            AVX-512 BF16 (slower on other CPUs, with a warning), not exact: vectors differ from
            float32 by about half a percent of their size on average. Default: float32, exact.
        quiet: no progress bar (warnings are still printed). Default: a progress bar on
            stderr with lines and tokens per second.
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be at least 1")
    if int8 and bf16:
        raise UsageError("--int8 and --bf16 together: int8 runs float32 models; choose one of them")
    rank, world = shard_of_this_process()
    if world > 1 and input == "-":
        raise UsageError("-: every process of a torchrun job reads the whole input; give the input file's path")
    output_path = Path(output) if world == 1 else shard_path(output, rank, world)
    partial = _partial_path(input, output_path, resume)
    tokenizer = _moses_tokenizer() if tokenize else str.split
    options, weights = model_files(options, weights, model)
    device = local_device(device)  # under torchrun, cuda is each rank's own GPU
    settings = {"layers": layers, "pool": pool, "float16": float16, "tokenize": tokenize,
                "forget_sentences": forget_sentences, "use_sentence_keys": use_sentence_keys,
                "model": _model_fingerprint(options, weights)}
    if world > 1:
        settings["shard"] = [rank, world]
    for name, on in (("int8", int8), ("bf16", bf16)):  # other vectors: a --resume must not mix them
        if on:  # absent when off, as in files of older versions
            settings[name] = True
    embedder = ElmoEmbedder(options, weights, device=device, implementation="int8" if int8 else "fast",
                            dtype=torch.bfloat16 if bf16 else torch.float32)
    dtype = np.float16 if float16 else np.float32
    keep_index = not forget_sentences and not use_sentence_keys

    total = None if input == "-" or quiet else _count_lines(input)
    lines = _input_lines(input)
    writer = _EmbeddingWriter(partial, settings, resume, lines, use_sentence_keys, keep_index, (rank, world))
    bar = tqdm(total=total, initial=writer.done, unit=" lines", disable=quiet, file=sys.stderr,
               dynamic_ncols=True, desc=os.path.basename(output))
    warn = _Warnings(bar)
    # (index, line, n_tokens, this process's) read but not yet written; under torchrun, line i
    # is rank i % world's, and every rank reads (and hashes, for --resume) every line
    pending: deque[tuple[int, str, int, bool]] = deque()

    def sentences() -> Iterator[list[str]]:
        for index, line in enumerate(lines, start=writer.done):
            text = line.strip()
            mine = index % world == rank
            tokens = tokenizer(text) if text and mine else []
            pending.append((index, text, len(tokens), mine))
            if mine:
                yield tokens

    def skip_others() -> None:
        while pending and not pending[0][3]:
            index, text, _, _ = pending.popleft()
            with interrupts.critical():
                writer.line_done(text, index, keep=False)
            bar.update(1)

    t0, tokens_done, last_postfix = time.perf_counter(), 0, 0.0
    try:
        with DeferredInterrupts() as interrupts:
            for array in embedder.embed_sentences(sentences(), batch_size):
                skip_others()
                index, text, n_tokens, _ = pending.popleft()
                key = writer.key(index, text)
                if key is None:
                    warn.unnamed(index, text)
                elif n_tokens == 0:
                    warn.blank(index, text, key)
                with interrupts.critical():
                    if key:
                        writer.write(key, _select(array, layers, pool).astype(dtype, copy=False))
                    writer.line_done(text, index)
                tokens_done += n_tokens
                bar.update(1)
                now = time.perf_counter()
                if now - last_postfix > 0.5:
                    bar.set_postfix_str(f"{tokens_done / max(now - t0, 1e-9):,.0f} tokens/s", refresh=False)
                    last_postfix = now
            skip_others()
            with interrupts.critical():
                writer.finish()
            bar.set_postfix_str(f"{tokens_done / max(time.perf_counter() - t0, 1e-9):,.0f} tokens/s", refresh=False)
    except KeyboardInterrupt:
        bar.close()
        writer.abandon()
        print(f"elmo embed: interrupted after {writer.done} lines; {partial} keeps them: run the same "
              "command with --resume to continue", file=sys.stderr)
        return INTERRUPTED
    except Exception as e:
        bar.close()
        writer.abandon()
        if writer.file_created:
            e.add_note(f"{partial} keeps the first {writer.committed} lines: once this is fixed, "
                       "the same command with --resume continues")
        raise
    finally:
        lines.close()
    bar.close()
    os.replace(partial, output_path)
    warn.summary()
    seconds = time.perf_counter() - t0
    if not quiet:
        print(f"{output}: {writer.done} lines, {tokens_done:,} tokens embedded in {seconds:.1f} s", file=sys.stderr)
    return 0


def shard_of_this_process() -> tuple[int, int]:
    """(rank, world size) under torchrun (its RANK and WORLD_SIZE), else (0, 1)."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise UsageError(f"RANK={os.environ.get('RANK')!r} WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}: not "
                         "integers; run under torchrun, or unset them") from None


def shard_path(output: str | Path, rank: int, world: int) -> Path:
    """The file rank RANK of WORLD processes writes for OUTPUT (`elmo join-shards OUTPUT` joins them)."""
    return Path(f"{output}.shard{rank}-of-{world}")


def _partial_path(input: str, output: Path, resume: bool) -> Path:
    """OUTPUT.partial, the file being written, once the paths are known to make sense."""
    if input != "-" and not os.path.isfile(input):
        raise UsageError(f"{input}: no such input file; give a text file with one sentence a line, or - for stdin")
    if output.is_dir():
        raise UsageError(f"{output}: is a directory; give the path of the HDF5 file to write")
    if input != "-" and output.resolve() == Path(input).resolve():
        raise UsageError(f"{output}: is the input file; give another path for the HDF5 output")
    partial = Path(str(output) + PARTIAL_SUFFIX)
    if resume and not partial.is_file():
        raise UsageError(f"{partial}: no interrupted run to resume (no such file); run without --resume")
    if not resume and partial.exists():
        raise UsageError(f"{partial}: left by an interrupted run; continue it with --resume, or delete it to start over")
    return partial


def _select(array: np.ndarray, layers: str, pool: str | None) -> np.ndarray:
    """One line's (L+1, n, dim) activations -> what --layers and --pool ask for."""
    if layers == "top":
        array = array[-1]
    elif layers == "average":
        array = array.mean(axis=0)  # AllenNLP: np.average(array, axis=0), the same mean (but fails on 0 tokens)
    if pool is not None:
        if array.shape[-2] == 0:
            array = np.zeros(array.shape[:-2] + array.shape[-1:], dtype=array.dtype)
        elif pool == "mean":
            array = array.mean(axis=-2)
        else:
            array = array.max(axis=-2)
    return array


def _moses_tokenizer() -> Callable[[str], list[str]]:
    try:
        from sacremoses import MosesTokenizer
    except ImportError:
        raise UsageError("--tokenize needs sacremoses: pip install 'torch-elmo[tokenize]' (or pip install sacremoses)") from None
    moses = MosesTokenizer(lang="en")
    return lambda text: moses.tokenize(text, escape=False)


def _input_lines(input: str) -> io.TextIOWrapper:
    """Lines split at \\n only (so that line i is what `sed -n` and `wc -l` count)."""
    if input == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise UsageError("-: standard input is closed; pipe the text in, or give the input file's path")
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="\n")
    return open(input, encoding="utf-8", errors="replace", newline="\n")


def _count_lines(path: str) -> int:
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def _model_fingerprint(options: str, weights: str | None) -> str:
    """What identifies the model for --resume: its options and the bytes of its weight file (an
    ELMoForManyLangs model: the bytes of its files)."""
    if weights is None:
        return efml_fingerprint(options)
    h = hashlib.sha256(repr(read_options(options)).encode())
    try:
        with open(weights, "rb") as f:
            while block := f.read(1 << 24):
                h.update(block)
    except OSError:
        pass  # load_bilm reports it
    return h.hexdigest()


class _EmbeddingWriter:
    """OUTPUT.partial: the datasets, and in the root attribute `elmo_embed` the settings, the
    number of input lines written and a SHA-256 of their text. Progress is committed (flushed
    to disk) every 256 lines or 10 s and at the end; on --resume, datasets written after the
    last commit are deleted and the input's first lines are checked against the hash."""

    def __init__(self, path: Path, settings: dict, resume: bool, lines: io.TextIOWrapper,
                 use_sentence_keys: bool, keep_index: bool, shard: tuple[int, int] = (0, 1)):
        self.path, self.settings = path, settings
        self.use_sentence_keys, self.keep_index = use_sentence_keys, keep_index
        self.rank, self.world = shard
        self.sentence_to_index: dict[str, str] = {}
        self.hash = hashlib.sha256()
        self.done = self.committed = 0
        self.file_created = False
        self.last_commit = time.monotonic()
        if resume:
            self.f = self._reopen(lines)
        else:  # made under another name with its first progress record, then renamed: a kill at any
            # moment leaves either no OUTPUT.partial or one that --resume can continue
            path.parent.mkdir(parents=True, exist_ok=True)
            new = path.with_name(path.name + ".new")
            self.f = h5py.File(new, "w")
            self.commit()
            os.replace(new, path)
            self.file_created = True

    def _reopen(self, lines: io.TextIOWrapper):
        path = self.path
        try:
            f = h5py.File(path, "a")
        except OSError as e:
            raise UsageError(f"{path}: cannot be read ({e}); the run was cut off mid-write: delete it and start over") from None
        self.file_created = True
        self.f = f
        try:
            state = json.loads(f.attrs[EMBED_ATTR])
        except (KeyError, ValueError, TypeError):
            f.close()
            raise UsageError(f"{path}: not a partial file of `elmo embed`; delete it and start over") from None
        then = {**FLAGS_OFF, **state["settings"]}
        now = {**FLAGS_OFF, **self.settings}
        changed = [k for k in {**now, **then} if then.get(k) != now.get(k)]  # a setting of either run
        if changed:
            f.close()
            was = ", ".join(f"{k}={then.get(k)!r}" for k in changed if k != "model")
            if "model" in changed:
                was = (was + ", " if was else "") + "another model"
            raise UsageError(f"{path}: started with {was}; resume with the options it was started with, "
                           "or delete it to start over")
        expected_keys: set[str] = set()
        for index in range(state["lines"]):
            line = lines.readline()
            if not line:
                f.close()
                raise UsageError(f"{path}: holds {state['lines']} lines but the input has only {index}; "
                               "resume with the same input, or delete it to start over")
            text = line.strip()
            name = self.name(index, text)
            if name is not None:
                expected_keys.add(name)
            self.line_done(text, index, commit=False, keep=index % self.world == self.rank)
        if self.hash.hexdigest() != state["sha256"]:
            f.close()
            raise UsageError(f"{path}: the input's first {state['lines']} lines are not those it was made from; "
                           "resume with the same input, or delete it to start over")
        for name in list(f.keys()):  # written after the last commit: maybe incomplete
            if name not in expected_keys:
                del f[name]
        self.committed = self.done
        return f

    def name(self, index: int, text: str) -> str | None:
        """The dataset name of a line; None when it cannot be one."""
        if not self.use_sentence_keys:
            return str(index)
        if not text or "/" in text or text == ".":
            return None
        return text

    def key(self, index: int, text: str) -> str | None | bool:
        """The dataset to write for a line: its name; None when it has none, False for a
        repeated line (with --use-sentence-keys: the same text gives the same vectors)."""
        name = self.name(index, text)
        return False if self.use_sentence_keys and name is not None and name in self.f else name

    def write(self, key: str, array) -> None:
        self.f.create_dataset(key, data=array)

    def line_done(self, text: str, index: int, commit: bool = True, keep: bool = True) -> None:
        """Line `index` is written (or, `keep` false, another process's to write)."""
        self.hash.update(text.encode("utf-8", "surrogatepass") + b"\n")
        if self.keep_index and keep:
            self.sentence_to_index[text] = str(index)
        self.done = index + 1
        if commit and (self.done - self.committed >= 256 or time.monotonic() - self.last_commit > 10):
            self.commit()

    def commit(self, complete: bool = False) -> None:
        self.f.flush()  # the datasets first, then the count that says they are there
        self.f.attrs[EMBED_ATTR] = json.dumps({"settings": self.settings, "lines": self.done,
                                               "sha256": self.hash.hexdigest(), "complete": complete})
        self.f.flush()
        self.committed, self.last_commit = self.done, time.monotonic()

    def finish(self) -> None:
        if self.keep_index:
            dataset = self.f.create_dataset("sentence_to_index", (1,), dtype=h5py.string_dtype())
            dataset[0] = json.dumps(self.sentence_to_index)
        self.commit(complete=True)
        self.f.close()
        with open(self.path, "rb") as f:
            os.fsync(f.fileno())

    def abandon(self) -> None:
        """Records what is complete and closes the file (after an interrupt or an error)."""
        if self.f is None or not self.f.id.valid:
            return
        try:
            self.commit()
        except Exception:
            pass  # the previous commit stands
        try:
            self.f.close()
        except Exception:
            pass


class _Warnings:
    """Warnings about single lines, printed above the progress bar; the first few, then a count."""

    SHOWN = 5

    def __init__(self, bar):
        self.bar = bar
        self.blanks: list[int] = []
        self.skipped: list[int] = []

    def _print(self, message: str) -> None:
        self.bar.write(f"elmo embed: warning: {message}", file=sys.stderr)

    def blank(self, index: int, text: str, key) -> None:
        self.blanks.append(index)
        if len(self.blanks) <= self.SHOWN:
            what = "is blank" if not text else "has no tokens"
            self._print(f"line {index + 1} {what}: dataset {key!r} is empty")

    def unnamed(self, index: int, text: str) -> None:
        self.skipped.append(index)
        if len(self.skipped) <= self.SHOWN:
            why = "is blank" if not text else 'contains "/" (HDF5\'s group separator)' if "/" in text else "is \".\""
            self._print(f"line {index + 1} {why}, so it cannot name a dataset: skipped (embed without "
                        "--use-sentence-keys to keep every line)")

    def summary(self) -> None:
        for what, indexes in (("blank (empty datasets)", self.blanks), ("skipped", self.skipped)):
            if len(indexes) > self.SHOWN:
                first = ", ".join(str(i + 1) for i in indexes[:10])
                self._print(f"{len(indexes)} lines {what}: lines {first}{', ...' if len(indexes) > 10 else ''}")


def join_shards(output: str, *, remove_shards: bool = False) -> int:
    """Join the shards of a torchrun `elmo embed` into one file, as one process would write it.

    `torchrun --nproc_per_node N -m torch_elmo embed INPUT OUTPUT ...` (on one machine or many,
    OUTPUT on a shared disk) has rank k embed the lines i with i % N == k into OUTPUT.shardk-of-N,
    each written as its own .partial and resumable with --resume. This command checks that the N
    shards are all there, complete, and made from the same input with the same settings and
    model, then writes OUTPUT (through a temporary file): every dataset, and sentence_to_index
    merged, the same keys and values as a single-process run.

    Arguments:
        output: the OUTPUT the shards were written for (they are OUTPUT.shardK-of-N).
        remove_shards: delete the shards once OUTPUT is written. Default: keep them.
    """
    shards = _find_shards(output)
    states = []
    for path in shards:
        try:
            with h5py.File(path, "r") as f:
                states.append(json.loads(f.attrs[EMBED_ATTR]))
        except (OSError, KeyError, ValueError) as e:
            raise UsageError(f"{path}: not a shard written by elmo embed ({e}); embed it again") from None
    first = {k: v for k, v in states[0]["settings"].items() if k != "shard"}
    for path, state in zip(shards, states):
        if {k: v for k, v in state["settings"].items() if k != "shard"} != first or state["sha256"] != states[0]["sha256"]:
            raise UsageError(f"{path}: made from another input, model or settings than {shards[0]}; embed the "
                             "shards again with one torchrun command")
    sentence_to_index: dict[str, str] = {}
    keep_index = not first["forget_sentences"] and not first["use_sentence_keys"]
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as out:
        pairs = []
        for path in shards:
            with h5py.File(path, "r") as f:
                for name in f:
                    if name == "sentence_to_index":
                        pairs += json.loads(f[name][0]).items()
                    elif name not in out:  # with --use-sentence-keys, a line repeated in two shards
                        f.copy(name, out)
        for sentence, index in sorted(pairs, key=lambda pair: int(pair[1])):  # the last occurrence wins, as in one run
            sentence_to_index[sentence] = index
        if keep_index:
            out.create_dataset("sentence_to_index", (1,), dtype=h5py.string_dtype())[0] = json.dumps(sentence_to_index)
        out.attrs[EMBED_ATTR] = json.dumps({"settings": first, "lines": states[0]["lines"],
                                            "sha256": states[0]["sha256"], "complete": True})
    if remove_shards:
        for path in shards:
            path.unlink()
    print(f"{output}: {len(shards)} shards joined, {states[0]['lines']} lines", file=sys.stderr)
    return 0


def _find_shards(output: str) -> list[Path]:
    """OUTPUT's N shards, in rank order, once all N are complete."""
    found: dict[int, dict[int, Path]] = {}
    for path in Path(output).parent.glob(glob.escape(Path(output).name) + ".shard*-of-*"):
        match = re.fullmatch(re.escape(Path(output).name) + r"\.shard(\d+)-of-(\d+)(\.partial)?", path.name)
        if match:
            if match[3]:
                raise UsageError(f"{path}: still being written, or interrupted; run the same torchrun command "
                                 "with --resume, then join")
            found.setdefault(int(match[2]), {})[int(match[1])] = path
    if not found:
        raise UsageError(f"{output}: no shards {output}.shardK-of-N; write them with torchrun ... elmo embed")
    if len(found) > 1:
        raise UsageError(f"{output}: shards of runs with {sorted(found)} processes; delete those of the other runs")
    (world, ranks), = found.items()
    missing = sorted(set(range(world)) - set(ranks))
    if missing:
        raise UsageError(f"{output}: the shards of rank(s) {missing} of {world} are missing; run the same torchrun "
                         "command (with --resume if some finished)")
    return [ranks[k] for k in range(world)]
