"""The `elmo` command: embed files, train, evaluate and export biLMs, inspect model files.

Each subcommand is a typed function below, callable from Python as well; its docstring is its
`--help`: the text before `Arguments:` describes the command, and each `name: text` entry under
`Arguments:` documents that parameter, its default included. `main` turns the signatures into an
argparse parser (`_add_command`): a parameter before `*` is a positional argument, one after it
an option `--name-with-dashes`; `bool` is a flag, `Literal[...]` a choice, `list[str]` repeats.

Every user error (a missing or malformed file, bad data, an impossible setting) is one line on
stderr naming the file and the fix, with exit status 2; only bugs print a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import io
import json
import math
import os
import signal
import sys
import time
import typing
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

PathLike = str | os.PathLike
USER_ERROR = 2  # exit status of a user error (as argparse's usage errors)
INTERRUPTED = 130
PARTIAL_SUFFIX = ".partial"  # an interrupted `elmo embed` keeps OUTPUT + this, for --resume
EMBED_ATTR = "elmo_embed"  # root attribute of an embedding file: JSON of its settings and progress


class CliError(Exception):
    """A user error: the message names the file or option and the fix."""


# --------------------------------------------------------------------------------------------
# Models


def _default_model(fix: str = "pass --options OPTIONS.json --weights WEIGHTS.hdf5") -> tuple[str, str]:
    import torch_elmo

    default_model_files = getattr(torch_elmo, "default_model_files", None)
    if default_model_files is None:
        raise CliError(f"no model given, and this installation bundles no default model: {fix}")
    options, weights = default_model_files()
    return str(options), str(weights)


def _model_files(options: PathLike | None, weights: PathLike | None) -> tuple[str, str]:
    """--options / --weights as given, or the bundled default model when both are absent."""
    if options is None and weights is None:
        return _default_model()
    if options is None or weights is None:
        given, missing = ("--options", "--weights") if weights is None else ("--weights", "--options")
        raise CliError(f"{given} given without {missing}: pass both (the model's options.json and its weights.hdf5)")
    return str(options), str(weights)


def _device(name: str):
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise CliError(f"--device {name}: not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CliError(f"--device {name}: there are {torch.cuda.device_count()} CUDA GPU(s); use cuda:0 to "
                       f"cuda:{torch.cuda.device_count() - 1}")
    return device


# --------------------------------------------------------------------------------------------
# elmo embed


def embed(input: str, output: str, *, options: str | None = None, weights: str | None = None,
          layers: Literal["all", "top", "average"] = "all", pool: Literal["mean", "max"] | None = None,
          batch_size: int = 256, device: str = "cpu", float16: bool = False, tokenize: bool = False,
          forget_sentences: bool = False, use_sentence_keys: bool = False, resume: bool = False,
          quiet: bool = False) -> int:
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
        options: the model's options.json (default: the bundled English model; give
            --weights with it).
        weights: the model's weights.hdf5 (default: the bundled English model; give
            --options with it).
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
        quiet: no progress bar (warnings are still printed). Default: a progress bar on
            stderr with lines and tokens per second.
    """
    import numpy as np

    from .elmo import ElmoEmbedder

    if batch_size < 1:
        raise CliError(f"--batch-size {batch_size}: must be at least 1")
    if input != "-" and not os.path.isfile(input):
        raise CliError(f"{input}: no such input file; give a text file with one sentence a line, or - for stdin")
    output_path = Path(output)
    if output_path.is_dir():
        raise CliError(f"{output}: is a directory; give the path of the HDF5 file to write")
    if input != "-" and output_path.resolve() == Path(input).resolve():
        raise CliError(f"{output}: is the input file; give another path for the HDF5 output")
    partial = Path(str(output_path) + PARTIAL_SUFFIX)
    if resume and not partial.is_file():
        raise CliError(f"{partial}: no interrupted run to resume (no such file); run without --resume")
    if not resume and partial.exists():
        raise CliError(f"{partial}: left by an interrupted run; continue it with --resume, or delete it to start over")
    tokenizer = _moses_tokenizer() if tokenize else str.split
    options, weights = _model_files(options, weights)
    device = _device(device)
    settings = {"layers": layers, "pool": pool, "float16": float16, "tokenize": tokenize,
                "forget_sentences": forget_sentences, "use_sentence_keys": use_sentence_keys,
                "model": _model_fingerprint(options, weights)}
    embedder = ElmoEmbedder(options, weights, device=device)
    dtype = np.float16 if float16 else np.float32
    keep_index = not forget_sentences and not use_sentence_keys

    lines = _input_lines(input)
    writer = _EmbeddingWriter(partial, settings, resume, lines, use_sentence_keys, keep_index)
    total = None if input == "-" or quiet else _count_lines(input)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=writer.done, unit=" lines", disable=quiet, file=sys.stderr,
               dynamic_ncols=True, desc=os.path.basename(output))
    warn = _Warnings(bar)
    pending: deque[tuple[int, str, int]] = deque()  # (index, line, n_tokens) read but not yet written

    def sentences() -> Iterator[list[str]]:
        for index, line in enumerate(lines, start=writer.done):
            text = line.strip()
            tokens = tokenizer(text) if text else []
            pending.append((index, text, len(tokens)))
            yield tokens

    t0, tokens_done, last_postfix = time.perf_counter(), 0, 0.0
    try:
        with _Interrupts() as interrupts:
            for array in embedder.embed_sentences(sentences(), batch_size):
                index, text, n_tokens = pending.popleft()
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
            with interrupts.critical():
                writer.finish()
            bar.set_postfix_str(f"{tokens_done / max(time.perf_counter() - t0, 1e-9):,.0f} tokens/s", refresh=False)
    except KeyboardInterrupt:
        bar.close()
        writer.abandon()
        print(f"elmo embed: interrupted after {writer.done} lines; {partial} keeps them: run the same "
              "command with --resume to continue", file=sys.stderr)
        return INTERRUPTED
    except BaseException:
        bar.close()
        writer.abandon()
        if writer.file_created:
            print(f"elmo embed: {partial} keeps the first {writer.done} lines; once the problem below is "
                  "fixed, --resume continues", file=sys.stderr)
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


def _select(array, layers: str, pool: str | None):
    """One line's (L+1, n, dim) activations -> what --layers and --pool ask for."""
    import numpy as np

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
        raise CliError("--tokenize needs sacremoses: pip install 'torch-elmo[tokenize]' (or pip install sacremoses)") from None
    moses = MosesTokenizer(lang="en")
    return lambda text: moses.tokenize(text, escape=False)


def _input_lines(input: str) -> io.TextIOWrapper:
    """Lines split at \\n only (so that line i is what `sed -n` and `wc -l` count)."""
    if input == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="\n")
    return open(input, encoding="utf-8", errors="replace", newline="\n")


def _count_lines(path: str) -> int:
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def _model_fingerprint(options: str, weights: str) -> str:
    """What identifies the model for --resume: its options and the bytes of its weight file."""
    from .formats import read_options

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
                 use_sentence_keys: bool, keep_index: bool):
        import h5py

        self.path, self.settings = path, settings
        self.use_sentence_keys, self.keep_index = use_sentence_keys, keep_index
        self.sentence_to_index: dict[str, str] = {}
        self.hash = hashlib.sha256()
        self.done = self.committed = 0
        self.file_created = False
        self.last_commit = time.monotonic()
        if resume:
            self.f = self._reopen(lines)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.f = h5py.File(path, "w")
            self.file_created = True
            self.commit()

    def _reopen(self, lines: io.TextIOWrapper):
        import h5py

        path = self.path
        try:
            f = h5py.File(path, "a")
        except OSError as e:
            raise CliError(f"{path}: cannot be read ({e}); the run was cut off mid-write: delete it and start over") from None
        self.file_created = True
        self.f = f
        try:
            state = json.loads(f.attrs[EMBED_ATTR])
        except (KeyError, ValueError, TypeError):
            f.close()
            raise CliError(f"{path}: not a partial file of `elmo embed`; delete it and start over") from None
        changed = [k for k in self.settings if state["settings"].get(k) != self.settings[k]]
        if changed:
            f.close()
            was = ", ".join(f"{k}={state['settings'].get(k)!r}" for k in changed if k != "model")
            if "model" in changed:
                was = (was + ", " if was else "") + "another model"
            raise CliError(f"{path}: started with {was}; resume with the options it was started with, "
                           "or delete it to start over")
        expected_keys: set[str] = set()
        for index in range(state["lines"]):
            line = lines.readline()
            if not line:
                f.close()
                raise CliError(f"{path}: holds {state['lines']} lines but the input has only {index}; "
                               "resume with the same input, or delete it to start over")
            text = line.strip()
            name = self.name(index, text)
            if name is not None:
                expected_keys.add(name)
            self.line_done(text, index, commit=False)
        if self.hash.hexdigest() != state["sha256"]:
            f.close()
            raise CliError(f"{path}: the input's first {state['lines']} lines are not those it was made from; "
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

    def line_done(self, text: str, index: int, commit: bool = True) -> None:
        self.hash.update(text.encode("utf-8", "surrogatepass") + b"\n")
        if self.keep_index:
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
        import h5py

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


class _Interrupts:
    """SIGINT and SIGTERM raise KeyboardInterrupt, except inside `with interrupts.critical():`
    (an HDF5 write), where they wait for its end, so that an interrupt never cuts a write short."""

    def __init__(self):
        self.depth = 0
        self.pending = False
        self.previous: dict = {}

    def __enter__(self) -> "_Interrupts":
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handler(self, signum, frame) -> None:
        if self.depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                self.pending = False
                raise KeyboardInterrupt


# --------------------------------------------------------------------------------------------
# elmo dump-token-embeddings


def dump_token_embeddings(vocab: str, out: str, *, options: str | None = None, weights: str | None = None,
                          batch_size: int = 4096, device: str = "cpu") -> int:
    """Write the character CNN's vector of every vocabulary token to an HDF5 file.

    The layout of bilm-tf's dump_token_embeddings: one float32 dataset "embedding" of shape
    (V, projection_dim), row i the vector of the vocabulary's i-th token (bilm-tf reads it as
    `embedding_weight_file` to run the biLM on token ids, without the CNN). These vectors are
    context-free: layer 0 of `elmo embed`, first half.

    Arguments:
        vocab: the vocabulary file, one token a line (the first whitespace-separated field of
            each non-blank line; a count after it is ignored). <S> and </S> get the sentence
            boundary vectors, as in bilm-tf.
        out: the HDF5 file to write (replaced if it exists; written to a temporary name first).
        options: the model's options.json (default: the bundled English model).
        weights: the model's weights.hdf5 (default: the bundled English model).
        batch_size: tokens per forward pass of the CNN (default 4096).
        device: where the model runs: cpu (default), cuda, cuda:N.
    """
    import h5py
    import torch

    from .chars import batch_to_ids
    from .formats import atomic_path, load_bilm

    if batch_size < 1:
        raise CliError(f"--batch-size {batch_size}: must be at least 1")
    tokens = _read_token_list(vocab)
    options, weights = _model_files(options, weights)
    device = _device(device)
    bilm = load_bilm(options, weights, device=device)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            dataset = f.create_dataset("embedding", (len(tokens), bilm.config.projection_dim), dtype="float32")
            with torch.inference_mode():
                for start in range(0, len(tokens), batch_size):
                    chunk = tokens[start : start + batch_size]
                    vectors = bilm.encode_tokens(batch_to_ids([chunk])[0].to(device))
                    dataset[start : start + len(chunk)] = vectors.float().cpu().numpy()
    print(f"{out}: embedding ({len(tokens)}, {bilm.config.projection_dim})", file=sys.stderr)
    return 0


def _read_token_list(path: str) -> list[str]:
    from .data import read_token_lines

    tokens = read_token_lines(path)
    if not tokens:
        raise CliError(f"{path}: the vocabulary is empty; give a text file with one token a line")
    return tokens


# --------------------------------------------------------------------------------------------
# elmo info


def info(model: str | None = None, *, weights: str | None = None) -> int:
    """Describe a model: architecture, parameter count, file check, model card.

    Prints the architecture from options.json, the number of parameters in the weight file
    (char CNN, biLSTM, and a softmax if one was kept), checks that every dataset the options ask
    for is in the weight file with the right shape, and prints MODEL_CARD.md from beside the
    files if there is one. Exit status 2 when the files do not go together.

    Arguments:
        model: a model directory (holding options.json and weights.hdf5 or lm_weights.hdf5)
            or an options.json file (default: the bundled English model).
        weights: the weight file, when it is not beside the options as weights.hdf5,
            lm_weights.hdf5 or NAME_weights.hdf5 for NAME_options.json (default: found so).
    """
    import h5py

    from .formats import bilm_datasets, read_options, read_weights

    options, weights = _find_model(model, weights)
    config = read_options(options)
    datasets = bilm_datasets(config)
    n_cnn = sum(math.prod(s) for name, s in datasets.items() if not name.startswith("RNN_"))
    n_lstm = sum(math.prod(s) for name, s in datasets.items() if name.startswith("RNN_"))
    print(f"options:   {options}")
    print(f"weights:   {weights} ({_size(weights)})")
    print(f"char CNN:  {config.char_embed_dim}-dim char embeddings, filters "
          f"{' '.join(f'{w}x{n}' for w, n in config.filters)} ({config.n_filters} in all), "
          f"{config.n_highway} highway layer(s), {config.activation}, "
          + (f"projection to {config.projection_dim}" if config.n_filters != config.projection_dim else "no projection"))
    print(f"biLSTM:    {config.n_layers} layer(s) per direction, {config.lstm_dim} cells, projection "
          f"{config.projection_dim}, skip connections {'yes' if config.use_skip_connections else 'no'}, "
          f"cell clip {config.cell_clip}, projection clip {config.proj_clip}")
    print(f"output:    {config.n_layers + 1} layers of {config.output_dim} (token layer + {config.n_layers} LSTM layers)")
    extra = {}
    try:
        with h5py.File(weights, "r") as f:
            f.visititems(lambda name, obj: extra.__setitem__(name, obj.shape)
                         if isinstance(obj, h5py.Dataset) and name not in datasets else None)
    except OSError:
        pass  # read_weights below says what is wrong
    n_extra = sum(math.prod(s) for s in extra.values())
    print(f"parameters: {n_cnn + n_lstm:,} (char CNN {n_cnn:,}, biLSTM {n_lstm:,})"
          + (f"; plus {n_extra:,} in {', '.join(f'{k} {v}' for k, v in sorted(extra.items()))}" if extra else ""))
    read_weights(weights, config)  # raises ElmoFormatError naming the problem
    print("check:     ok, the weight file has every dataset the options ask for, with its shape")
    card = Path(options).parent / "MODEL_CARD.md"
    if card.is_file():
        print(f"\n{card}:\n")
        print(card.read_text(encoding="utf-8").rstrip())
    else:
        print(f"model card: none ({card} does not exist)")
    return 0


def _find_model(model: str | None, weights: str | None) -> tuple[str, str]:
    if model is None:
        if weights is not None:
            raise CliError("--weights given without a model: give the options.json or the model directory too")
        return _default_model(fix="give a model directory or its options.json")
    path = Path(model)
    if path.is_dir():
        options = path / "options.json"
        if not options.is_file():
            found = sorted(path.glob("*options*.json"))
            if len(found) != 1:
                raise CliError(f"{path}: no options.json in this directory; give the options file itself")
            options = found[0]
    elif path.is_file():
        options = path
    else:
        raise CliError(f"{model}: no such file or directory; give a model directory or its options.json")
    if weights is None:
        stem = options.name[: -len("options.json")] if options.name.endswith("options.json") else ""
        candidates = [options.parent / n for n in ("weights.hdf5", "lm_weights.hdf5", f"{stem}weights.hdf5")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise CliError(f"{options.parent}: no weights.hdf5 beside {options.name}; give the weight file with --weights")
        weights = str(found[0])
    return str(options), str(weights)


def _size(path: str) -> str:
    try:
        n = os.path.getsize(path)
    except OSError:
        return "missing"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


# --------------------------------------------------------------------------------------------
# Training: elmo vocab, train, resume, evaluate, export, plot


def vocab(corpus: list[str], *, out: str, min_count: int = 1, max_size: int | None = None) -> int:
    """Build a vocabulary file from a corpus, in the published format.

    One token a line: <S>, </S>, <UNK> first, then the words by descending count (ties by
    token). `elmo train` builds one itself when its config names none; build it here to fix it
    across runs or to cut it with --min-count / --max-size.

    Arguments:
        corpus: text files or globs (quote them), one whitespace-tokenized sentence a line.
        out: the vocabulary file to write.
        min_count: keep words seen at least this often (default 1: every word).
        max_size: keep at most this many entries, the three special tokens included
            (default: no limit).
    """
    from .data import Vocabulary

    built = Vocabulary.build(corpus, min_count, max_size)
    built.write(out)
    print(f"{out}: {len(built)} tokens")
    return 0


def train(*, config: str | None = None, set: list[str] = (), device: str = "cpu") -> int:
    """Train a biLM language model from scratch (bilm-tf's recipe).

    Settings come from --config (a JSON object of torch_elmo.train.TrainConfig fields), then
    each --set. The run directory (run_dir) receives config.json, vocab.txt, checkpoint.pt
    (written every checkpoint_every updates, at the end, and on Ctrl-C / SIGTERM) and
    metrics.jsonl; then `elmo export` writes the model files. Under torchrun, each process
    trains on its share of the data (data parallel). Prints the last metrics as JSON.

    Main settings (see TrainConfig for all): train (corpus files or globs, required), heldout,
    run_dir ("runs/elmo"), vocab (built from the corpus if null), options (an options.json
    giving the architecture) or bilm.FIELD (e.g. bilm.lstm_dim=512; the default architecture
    is bilm-tf's), batch_size (128), unroll_steps (20), n_epochs (10), max_updates,
    n_negative_samples (8192), optimizer ("adagrad"), lr (0.2), dropout (0.1), restart_prob
    (0.0: rows never restart, as the original; 0.1 makes models that embed well statelessly,
    every sentence from a zero state, even when trained briefly), eval_every, checkpoint_every
    (1000).

    Arguments:
        config: a JSON file of settings (default: none, every setting at its default).
        set: KEY=VALUE overriding a setting, the value read as JSON when it parses (so
            max_updates=100, heldout=null, train=data/*.txt); bilm.FIELD=VALUE sets one
            architecture field. Repeatable. Default: none.
        device: where to train: cpu (default), cuda (under torchrun, each process's own GPU).
    """
    from .train import Trainer, TrainConfig

    _init_distributed()
    settings = TrainConfig.from_json(config) if config else TrainConfig()
    trainer = Trainer(settings.with_overrides(list(set)), device=_local_device(device))
    print(json.dumps(trainer.train()))
    return 0


def resume(run_dir: str, *, set: list[str] = (), device: str = "cpu") -> int:
    """Continue a training run from its checkpoint, exactly where it stopped.

    The same updates, data order and random draws follow as if it had never stopped (with the
    same number of processes). Settings that do not change the model or the data order can be
    changed with --set: n_epochs, max_updates, eval_every, checkpoint_every, heldout, progress...

    Arguments:
        run_dir: the run directory (holding checkpoint.pt).
        set: KEY=VALUE changing a setting for the rest of the run; repeatable. Default: none.
        device: where to train: cpu (default), cuda.
    """
    from .train import Trainer

    _init_distributed()
    trainer = Trainer.resume(run_dir, list(set), device=_local_device(device))
    print(json.dumps(trainer.train()))
    return 0


def evaluate(run_dir: str, files: list[str], *, batch_size: int = 32, device: str = "cpu") -> int:
    """Held-out perplexity of a run's checkpoint: forward, backward and their mean.

    Every sentence of the files once, in order, with the full softmax. Prints JSON:
    forward_ppl, backward_ppl, ppl (exp of the mean loss of the two), tokens.

    Arguments:
        run_dir: the run directory (holding checkpoint.pt and vocab.txt).
        files: held-out text files or globs, one whitespace-tokenized sentence a line.
        batch_size: rows per batch (default 32); the result does not depend on it much (the
            LSTM state is carried along rows as in training).
        device: where to run: cpu (default), cuda.
    """
    from .data import corpus_files
    from .train import Trainer, evaluate as evaluate_model

    trainer = Trainer.resume(run_dir, ["progress=false"], device=_device(device))
    result = evaluate_model(trainer.model, corpus_files(files), trainer.vocab, batch_size,
                            trainer.config.unroll_steps, contiguous=trainer.config.contiguous_rows)
    print(json.dumps(result))
    return 0


def export(run_dir: str, out_dir: str, *, keep_softmax: bool = False) -> int:
    """Write a run's checkpoint as published model files: options.json, weights.hdf5, vocab.txt.

    The files are in bilm-tf's layout, read by `elmo embed`, ElmoEmbedder, Elmo, and by
    bilm-tf and AllenNLP themselves.

    Arguments:
        run_dir: the run directory (holding checkpoint.pt).
        out_dir: the directory to write the three files into (created if needed).
        keep_softmax: also store the softmax (datasets softmax/W and softmax/b) in
            weights.hdf5, to go on training from it later. Default: off (ELMo does not use it).
    """
    from .train import VOCAB, Trainer

    trainer = Trainer.resume(run_dir, ["progress=false"])
    try:
        trainer.export(out_dir, keep_softmax)
    except ValueError as e:  # word-input, forward-only or unprojected LMs: no published layout
        raise CliError(f"{run_dir}: {e}") from None
    print(f"{out_dir}: options.json, weights.hdf5, {VOCAB}")
    return 0


def plot(run_dir: str, *, out: str | None = None) -> int:
    """Draw a run's training and held-out perplexity curves to a PNG (needs matplotlib).

    Arguments:
        run_dir: the run directory (holding metrics.jsonl).
        out: the PNG to write (default: RUN_DIR/perplexity.png).
    """
    try:
        from .plot import plot_perplexity

        print(plot_perplexity(run_dir, out))
    except ImportError as e:
        raise CliError(str(e)) from None
    return 0


def _init_distributed() -> None:
    """Joins the process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    import torch
    import torch.distributed as dist

    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def _local_device(name: str):
    import torch

    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return _device(name)


# --------------------------------------------------------------------------------------------
# The parser, from the signatures and docstrings above


COMMANDS: list[Callable[..., int]] = [embed, vocab, train, resume, evaluate, export, plot,
                                      dump_token_embeddings, info]


def parse_docstring(fn: Callable) -> tuple[str, dict[str, str]]:
    """(description, {parameter: help}) from a docstring with an `Arguments:` section."""
    doc = inspect.getdoc(fn) or ""
    description, _, arguments = doc.partition("\nArguments:\n")
    helps: dict[str, str] = {}
    name = None
    for line in arguments.splitlines():
        stripped = line.strip()
        if line.startswith("    ") and not line.startswith("     ") and ":" in stripped:
            name, _, text = stripped.partition(":")
            helps[name] = text.strip()
        elif name is not None and stripped:
            helps[name] += " " + stripped
    return description.strip(), helps


def _add_command(subparsers, fn: Callable) -> None:
    description, helps = parse_docstring(fn)
    hints = typing.get_type_hints(fn)
    parser = subparsers.add_parser(fn.__name__.replace("_", "-"), help=description.splitlines()[0],
                                   description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(_command=fn)
    for name, param in inspect.signature(fn).parameters.items():
        kind = hints[name]
        args = typing.get_args(kind)
        if type(None) in args:  # X | None
            kind = next(a for a in args if a is not type(None))
        spec: dict = {"help": helps[name]}
        if typing.get_origin(kind) is Literal:
            spec["choices"] = typing.get_args(kind)
        elif typing.get_origin(kind) is list:
            spec["type"] = typing.get_args(kind)[0]
        elif kind is not bool:
            spec["type"] = kind
        if param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            if typing.get_origin(kind) is list:
                spec["nargs"] = "+"
            elif param.default is not inspect.Parameter.empty:
                spec.update(nargs="?", default=param.default)
            parser.add_argument(name, metavar=name.upper(), **spec)
            continue
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            spec["action"] = "store_true"
        elif typing.get_origin(kind) is list:
            spec.update(action="append", metavar=name.upper().replace("SET", "KEY=VALUE"))
        if param.default is inspect.Parameter.empty:
            spec["required"] = True
        else:
            spec["default"] = list(param.default) if typing.get_origin(kind) is list else param.default
        parser.add_argument(flag, dest=name, **spec)


def build_parser(prog: str = "elmo") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="ELMo from the shell: embed text files into HDF5, train and export "
                               "biLMs, inspect model files. `elmo COMMAND --help` explains each command.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"torch-elmo {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for fn in COMMANDS:
        _add_command(subparsers, fn)
    return parser


def main(argv: list[str] | None = None, prog: str = "elmo") -> int:
    """The `elmo` console script. Returns the exit status."""
    args = vars(build_parser(prog).parse_args(argv))
    command = args.pop("command")
    fn = args.pop("_command")
    from .data import DataError
    from .formats import ElmoFormatError
    from .train import TrainError

    try:
        return fn(**args)
    except (CliError, ElmoFormatError, DataError, TrainError) as e:
        return _user_error(prog, command, str(e))
    except OSError as e:
        if isinstance(e, BrokenPipeError):  # `elmo info | head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        message = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
        return _user_error(prog, command, message)
    except KeyboardInterrupt:
        print(f"{prog} {command}: interrupted", file=sys.stderr)
        return INTERRUPTED


def _user_error(prog: str, command: str, message: str) -> int:
    print(f"{prog} {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
