"""Bad inputs and faults through every entry point: one line `elmo CMD: error: ...`, exit status 2
for the user's errors and 1 for the environment's, no traceback, and nothing that existed changed.

A new case is one row: CASES for the command line, API_CASES for the Python API, FAULTS for
a write that fails part way (an injected ENOSPC / EACCES). Kills (SIGKILL) run real processes.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import torch_elmo.trainer
from torch_elmo import BiLM, BiLMConfig, Elmo, ElmoEmbedder, ElmoError, ScalarMix, batch_to_ids, load_bilm
from torch_elmo.cli import main
from torch_elmo.config import TrainConfig
from torch_elmo.errors import ElmoFormatError, InputTypeError, TrainError, UsageError
from torch_elmo.trainer import Trainer

from .conftest import FIXTURES, MODEL

EMBED = importlib.import_module("torch_elmo.cli.embed")  # the module; torch_elmo.cli.embed is its function

OPTIONS, WEIGHTS = MODEL / "options.json", MODEL / "lm_weights.hdf5"
MODEL_ARGS = ["--options", str(OPTIONS), "--weights", str(WEIGHTS)]
TRAIN = FIXTURES / "train"
TINY = {"filters": [[1, 8], [2, 8], [3, 16]], "char_embed_dim": 4, "n_highway": 1, "lstm_dim": 16,
        "projection_dim": 8, "n_layers": 2}
LINES = [" ".join(["the", "bank", "of", "the", "river"][: 1 + i % 5]) if i % 7 else "" for i in range(600)]


# --------------------------------------------------------------------------------------------
# What a case starts from


def options_with(tmp: Path, section: str, key: str, value) -> Path:
    options = json.loads(OPTIONS.read_text())
    options[section][key] = value
    path = tmp / f"options-{section}-{key}.json"
    path.write_text(json.dumps(options))
    return path


def truncated(tmp: Path, source: Path, name: str, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    path = tmp / name
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def tiny_config(run_dir: Path, **kw) -> TrainConfig:
    values = dict(train_files=str(TRAIN / "data.txt"), vocab=str(TRAIN / "vocab.txt"), run_dir=str(run_dir),
                  bilm=dict(TINY), batch_size=2, unroll_steps=5, max_updates=4, n_negative_samples=4,
                  checkpoint_every=2, progress=False, seed=1)
    values.update(kw)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run directory with a checkpoint and metrics, trained once for the module."""
    run = tmp_path_factory.mktemp("trained") / "run"
    Trainer(tiny_config(run)).run()
    return run


def run_copy(tmp: Path, trained: Path, checkpoint: Callable[[Path], None] | None = None) -> Path:
    run = tmp / "run"
    shutil.copytree(trained, run)
    if checkpoint is not None:
        checkpoint(run / "checkpoint.pt")
    return run


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def write_evil(path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump({"config": Evil()}, f, protocol=2)  # as torch.save writes


def torch_save(obj):
    return lambda path: torch.save(obj, path)


def lines_file(tmp: Path, lines=LINES) -> Path:
    path = tmp / "in.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


# --------------------------------------------------------------------------------------------
# The command line: bad inputs


@dataclass
class Case:
    id: str
    argv: Callable[[Path], list]  # from the case's folder (files made there exist before the run)
    says: str  # in the error line
    status: int = 2


def partial_of(name: str, content: Callable[[Path], None]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        content(tmp / f"{name}.partial")
        return tmp / name
    return make


def garbage(path: Path) -> None:
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(500))


def other_hdf5(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)


def embed(tmp: Path, *extra, output: Path | None = None) -> list:
    return ["embed", lines_file(tmp, LINES[:20]), output or tmp / "out.hdf5", *extra]


CASES = [
    Case("embed: no input file", lambda t: ["embed", t / "missing.txt", t / "o.hdf5", *MODEL_ARGS], "no such input file"),
    Case("embed: batch size 0", lambda t: embed(t, *MODEL_ARGS, "--batch-size", 0), "--batch-size 0: must be at least 1"),
    Case("embed: options without weights", lambda t: embed(t, "--options", OPTIONS), "--options given without --weights"),
    Case("embed: --model and --options", lambda t: embed(t, "--model", "small", *MODEL_ARGS), "--model given with"),
    Case("embed: an unknown model name", lambda t: embed(t, "--model", "no-such-model"), "no-such-model"),
    Case("embed: options not JSON", lambda t: embed(t, "--options", WEIGHTS, "--weights", WEIGHTS), "not a JSON options file"),
    Case("embed: options with a null",
         lambda t: embed(t, "--options", options_with(t, "char_cnn", "n_highway", None), "--weights", WEIGHTS),
         '"char_cnn"."n_highway" is None, expected an integer'),
    Case("embed: options with a zero size",
         lambda t: embed(t, "--options", options_with(t, "lstm", "dim", 0), "--weights", WEIGHTS),
         '"lstm"."dim" is 0, expected a positive integer'),
    Case("embed: options with odd filters",
         lambda t: embed(t, "--options", options_with(t, "char_cnn", "filters", [[0, 4], "x"]), "--weights", WEIGHTS),
         '"char_cnn"."filters" is'),
    Case("embed: options with an unknown activation",
         lambda t: embed(t, "--options", options_with(t, "char_cnn", "activation", "gelu"), "--weights", WEIGHTS),
         '"char_cnn"."activation" is \'gelu\', expected "relu" or "tanh"'),
    Case("embed: training-form n_characters",
         lambda t: embed(t, "--options", options_with(t, "char_cnn", "n_characters", 261), "--weights", WEIGHTS),
         "set it to 262"),
    Case("embed: truncated weights",
         lambda t: embed(t, "--options", OPTIONS, "--weights", truncated(t, WEIGHTS, "w.hdf5")), "w.hdf5"),
    Case("embed: weights of another model",
         lambda t: embed(t, "--options", options_with(t, "lstm", "projection_dim", 8), "--weights", WEIGHTS),
         "has shape"),
    Case("embed: weights that are not HDF5", lambda t: embed(t, "--options", OPTIONS, "--weights", OPTIONS),
         "not an HDF5 weight file"),
    Case("embed: output is a directory", lambda t: embed(t, *MODEL_ARGS, output=t), "is a directory"),
    Case("embed: output is the input", lambda t: embed(t, *MODEL_ARGS, output=t / "in.txt"), "is the input file"),
    Case("embed: --resume with nothing to resume", lambda t: embed(t, *MODEL_ARGS, "--resume"), "no interrupted run"),
    Case("embed: a .partial without --resume",
         lambda t: embed(t, *MODEL_ARGS, output=partial_of("o.hdf5", garbage)(t)), "continue it with --resume"),
    Case("embed: --resume of a damaged .partial",
         lambda t: embed(t, *MODEL_ARGS, "--resume", output=partial_of("o.hdf5", garbage)(t)), "cannot be read"),
    Case("embed: --resume of another HDF5 file",
         lambda t: embed(t, *MODEL_ARGS, "--resume", output=partial_of("o.hdf5", other_hdf5)(t)),
         "not a partial file of `elmo embed`"),
    Case("embed: a device that is no device", lambda t: embed(t, *MODEL_ARGS, "--device", "tpu9"), "not a device"),
    Case("dump-token-embeddings: empty vocabulary",
         lambda t: ["dump-token-embeddings", (t / "v.txt", (t / "v.txt").write_text("\n\n"))[0], t / "o.hdf5", *MODEL_ARGS],
         "the vocabulary is empty"),
    Case("dump-token-embeddings: no vocabulary",
         lambda t: ["dump-token-embeddings", t / "none.txt", t / "o.hdf5", *MODEL_ARGS], "none.txt"),
    Case("info: no such model", lambda t: ["info", t / "nothing"], "no such file or directory"),
    Case("info: options and weights of different models",
         lambda t: ["info", options_with(t, "lstm", "projection_dim", 8), "--weights", WEIGHTS], "has shape"),
    Case("vocab: no corpus", lambda t: ["vocab", t / "none.txt", "--out", t / "v.txt"], "no such corpus file"),
    Case("train: batch size 0", lambda t: ["train", "--set", f"train_files={TRAIN / 'data.txt'}",
                                          "--set", f"run_dir={t / 'r'}", "--set", "batch_size=0"],
         "batch_size is 0, expected a positive integer"),
    Case("train: several bad settings at once",
         lambda t: ["train", "--set", f"train_files={TRAIN / 'data.txt'}", "--set", f"run_dir={t / 'r'}",
                    "--set", "dropout=1.5", "--set", "lr=-1", "--set", "unroll_steps=0"],
         "unroll_steps is 0, expected a positive integer; lr is -1, expected a positive number; dropout is 1.5"),
    Case("train: an unknown activation",
         lambda t: ["train", "--set", f"run_dir={t / 'r'}", "--set", "bilm.activation=gelu"], "bilm.activation is 'gelu'"),
    Case("train: no config file", lambda t: ["train", "--config", t / "none.json"], "no such config file"),
    Case("train: a config that is not JSON",
         lambda t: ["train", "--config", (t / "c.json", (t / "c.json").write_text("{oops"))[0]], "not a JSON config"),
    Case("train: a config that is a list",
         lambda t: ["train", "--config", (t / "c.json", (t / "c.json").write_text("[1]"))[0]], "not a JSON object"),
    Case("train: --set without =", lambda t: ["train", "--set", "batch_size"], "expected key=value"),
    Case("train: no corpus", lambda t: ["train", "--set", f"run_dir={t / 'r'}"], "no training corpus"),
    Case("train: a missing corpus", lambda t: ["train", "--set", f"train_files={t / 'none.txt'}",
                                              "--set", f"run_dir={t / 'r'}"], "none.txt"),
    Case("resume: no run", lambda t: ["resume", t / "nothing"], "no checkpoint to resume from"),
    Case("plot: no metrics", lambda t: ["plot", t], "no metrics log"),
]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, argv, status: int) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [line for line in err.strip().splitlines() if ": warning: " not in line]  # warnings may precede it
    assert code == status, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"elmo {argv[0]}: error: "), err
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_bad_input_is_one_line_and_changes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_ELMO_OFFLINE", "1")  # a name not in the cache never reaches the network
    monkeypatch.setenv("TORCH_ELMO_CACHE", str(tmp_path / "cache"))
    argv = case.argv(tmp_path)
    before = snapshot(tmp_path)
    line = one_line_error(capsys, argv, case.status)
    assert case.says in line, line
    assert snapshot(tmp_path) == before  # nothing written, nothing changed


CHECKPOINTS = [
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "damaged or not a checkpoint"),
    ("random bytes", lambda p: p.write_bytes(os.urandom(2000)), "damaged or not a checkpoint"),
    ("empty", lambda p: p.write_bytes(b""), "damaged or not a checkpoint"),
    ("arbitrary pickle", write_evil, "holds Python objects besides plain data"),
    ("another PyTorch file", torch_save(torch.zeros(3)), "not a torch-elmo checkpoint"),
    ("another format", torch_save({"format": 9, "config": {}, "model": {}, "ranks": [], "architecture": {}}),
     "checkpoint format 9 is newer"),
]


@pytest.mark.parametrize("command", ["resume", "evaluate", "export"])
@pytest.mark.parametrize("damage, says", [(d, s) for _, d, s in CHECKPOINTS], ids=[n for n, _, _ in CHECKPOINTS])
def test_a_damaged_checkpoint_is_named_and_left_alone(command, damage, says, trained, tmp_path, capfd):
    run = run_copy(tmp_path, trained, damage)
    argv = {"resume": ["resume", run], "evaluate": ["evaluate", run, TRAIN / "data.txt"],
            "export": ["export", run, tmp_path / "out"]}[command]
    before = snapshot(tmp_path)
    assert says in one_line_error(capfd, argv, 2)
    assert snapshot(tmp_path) == before
    assert "pwned" not in capfd.readouterr().out  # the pickle's code never ran


def test_resuming_with_a_changed_frozen_setting_is_refused(trained, tmp_path, capsys):
    run = run_copy(tmp_path, trained)
    before = snapshot(tmp_path)
    assert "cannot change ['batch_size']" in one_line_error(capsys, ["resume", run, "--set", "batch_size=3"], 2)
    assert snapshot(tmp_path) == before


def test_a_closed_standard_input_is_one_line(tmp_path):
    code = (f"import sys; sys.stdin.close(); from torch_elmo.cli import main; "
            f"sys.exit(main(['embed', '-', {str(tmp_path / 'o.hdf5')!r}, '--options', {str(OPTIONS)!r}, "
            f"'--weights', {str(WEIGHTS)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "standard input is closed" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# The Python API: the package's own exception classes, also the usual built-ins


@dataclass
class ApiCase:
    id: str
    call: Callable[[Path], object]
    raises: tuple[type, ...]
    says: str


API_CASES = [
    ApiCase("batch_to_ids of a string", lambda t: batch_to_ids("a sentence"), (InputTypeError, TypeError), "list"),
    ApiCase("Elmo with one file", lambda t: Elmo(OPTIONS, None, 1), (UsageError, ValueError), "without weight_file"),
    ApiCase("load_bilm of bad options", lambda t: load_bilm(options_with(t, "lstm", "n_layers", 0), WEIGHTS),
            (ElmoFormatError, ValueError), '"lstm"."n_layers" is 0'),
    ApiCase("ElmoEmbedder of truncated weights", lambda t: ElmoEmbedder(OPTIONS, truncated(t, WEIGHTS, "w.hdf5")),
            (ElmoFormatError, ValueError), "w.hdf5"),
    ApiCase("BiLM of float input", lambda t: BiLM(BiLMConfig(lstm_dim=8, projection_dim=4, filters=((1, 4),)))(
        torch.zeros(1, 2, 50)), (UsageError, ValueError), "batch_to_ids"),
    ApiCase("BiLMConfig out of range", lambda t: BiLMConfig(n_layers=0, dropout=2.0), (ElmoError, ValueError),
            "n_layers is 0, expected a positive integer; dropout is 2.0"),
    ApiCase("TrainConfig out of range", lambda t: TrainConfig(batch_size=0, optimizer="adam"), (TrainError, ValueError),
            'optimizer is \'adam\', expected "adagrad" or "sgd"; batch_size is 0'),
    ApiCase("ScalarMix of the wrong number of layers", lambda t: ScalarMix(3)([torch.zeros(1)] * 2),
            (UsageError, ValueError), "expects 3 tensors"),
    ApiCase("Trainer.resume of a damaged checkpoint",
            lambda t: (t.joinpath("checkpoint.pt").write_bytes(b"junk"), Trainer.resume(t))[1],
            (TrainError, ValueError), "damaged or not a checkpoint"),
]


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.id)
def test_api_errors_are_the_packages_own_classes(case, tmp_path):
    with pytest.raises(case.raises) as error:
        case.call(tmp_path)
    assert isinstance(error.value, ElmoError) and case.says in str(error.value)
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------------------------
# Faults: a write that fails part way leaves what existed as it was, and the next run goes on


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fail_on_call(n: int, fn, error=enospc):
    """fn, except that its n-th call raises."""
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            error()
        return fn(*args, **kwargs)
    return wrapper


def embedded(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][...] for k in f}


@pytest.mark.parametrize("at", [1, 45, 400])  # the first dataset, before the first commit, after several
def test_a_full_disk_during_embed_keeps_the_partial_and_resume_finishes_it(at, tmp_path, capsys, monkeypatch):
    src = lines_file(tmp_path)
    out = tmp_path / "out.hdf5"
    argv = ["embed", src, out, *MODEL_ARGS, "--batch-size", 16, "--quiet"]
    writer = EMBED._EmbeddingWriter
    with monkeypatch.context() as m:
        m.setattr(writer, "write", fail_on_call(at, writer.write))
        line = one_line_error(capsys, argv, 1)
    assert "no space left on the device" in line and "--resume continues" in line
    assert not out.exists() and (tmp_path / "out.hdf5.partial").is_file()
    assert main([str(a) for a in argv + ["--resume"]]) == 0
    reference = tmp_path / "reference.hdf5"
    assert main([str(a) for a in ["embed", src, reference, *MODEL_ARGS, "--batch-size", 16, "--quiet"]]) == 0
    ours, expected = embedded(out), embedded(reference)
    assert ours.keys() == expected.keys()
    assert ours.pop("sentence_to_index")[0] == expected.pop("sentence_to_index")[0]
    for k in expected:
        np.testing.assert_allclose(ours[k], expected[k], atol=1e-6)


def test_a_file_that_cannot_be_created_is_a_fault_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    real = h5py.File

    def denied(name, *args, **kwargs):
        if ".partial" in str(name):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(name))
        return real(name, *args, **kwargs)

    monkeypatch.setattr(EMBED.h5py, "File", denied)
    line = one_line_error(capsys, ["embed", lines_file(tmp_path), tmp_path / "out.hdf5", *MODEL_ARGS], 1)
    assert "permission denied" in line and "out.hdf5.partial" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


@pytest.mark.parametrize("at", [2, 3])  # the second checkpoint write, the third
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(at, tmp_path, capsys, monkeypatch):
    straight = Trainer(tiny_config(tmp_path / "straight", max_updates=6))
    straight.run()
    run = tmp_path / "run"
    argv = ["train", "--set", f"train_files={TRAIN / 'data.txt'}", "--set", f"vocab={TRAIN / 'vocab.txt'}",
            "--set", f"run_dir={run}", "--set", f"bilm={json.dumps(TINY)}", "--set", "batch_size=2",
            "--set", "unroll_steps=5", "--set", "max_updates=6", "--set", "n_negative_samples=4",
            "--set", "checkpoint_every=2", "--set", "progress=false", "--set", "seed=1"]
    previous = {}
    save = fail_on_call(at, torch.save)

    def remember_then_save(obj, path):  # what the checkpoint was just before each write
        if (run / "checkpoint.pt").exists():
            previous["bytes"] = (run / "checkpoint.pt").read_bytes()
        save(obj, path)

    with monkeypatch.context() as m:
        m.setattr(torch_elmo.trainer.torch, "save", remember_then_save)
        line = one_line_error(capsys, argv, 1)
    assert "no space left on the device" in line and f"elmo resume {run}" in line
    assert (run / "checkpoint.pt").read_bytes() == previous["bytes"]  # the previous one, whole
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert main(["resume", str(run)]) == 0
    resumed = Trainer.resume(run)
    assert resumed.step == 6
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, atol=1e-6, rtol=0)


EXPORT = lambda t, run: ["export", run, t / "model"]  # noqa: E731
VOCAB = lambda t, run: ["vocab", TRAIN / "data.txt", "--out", t / "model" / "vocab.txt"]  # noqa: E731
DUMP = lambda t, run: ["dump-token-embeddings", TRAIN / "vocab.txt", t / "model" / "weights.hdf5", *MODEL_ARGS]  # noqa: E731
WRITERS = [  # (command, where the write fails: (object, attribute), its 1-based call)
    ("export", EXPORT, (h5py.Group, "create_dataset"), 1),  # the first array of weights.hdf5
    ("export", EXPORT, (h5py.Group, "create_dataset"), 9),  # a later one
    ("export", EXPORT, (os, "replace"), 1),  # weights.hdf5 complete, about to take the old one's place
    ("export", EXPORT, (os, "replace"), 2),  # options.json's turn: weights.hdf5 is already the new one
    ("vocab", VOCAB, (os, "replace"), 1),
    ("dump-token-embeddings", DUMP, (h5py.Dataset, "__setitem__"), 1),
    ("dump-token-embeddings", DUMP, (os, "replace"), 1),
]


@pytest.mark.parametrize("command, argv, target, at", WRITERS,
                         ids=[f"{c} at {t[1]} #{n}" for c, _, t, n in WRITERS])
def test_a_full_disk_in_a_writer_leaves_the_old_files_whole(command, argv, target, at, trained, tmp_path, capsys,
                                                            monkeypatch):
    run = run_copy(tmp_path, trained)
    model = tmp_path / "model"
    model.mkdir()
    for name in ("options.json", "weights.hdf5", "vocab.txt"):
        (model / name).write_text(f"the {name} of an earlier export\n")
    before = snapshot(model)
    owner, name = target
    monkeypatch.setattr(owner, name, fail_on_call(at, getattr(owner, name)))
    assert "no space left on the device" in one_line_error(capsys, argv(tmp_path, run), 1)
    after = snapshot(model)
    assert set(after) == set(before)  # no temporary left
    changed = {name for name in before if after[name] != before[name]}
    # each file is the old one or the new one, whole: an export that fails between its files has
    # replaced the first ones (which are complete), never left one half written
    assert changed <= ({"weights.hdf5"} if (command, target[1], at) == ("export", "replace", 2) else set())


def test_a_bug_is_one_line_unless_debugging(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(EMBED, "_count_lines", lambda path: 1 // 0)
    argv = ["embed", lines_file(tmp_path), tmp_path / "out.hdf5", *MODEL_ARGS]
    line = one_line_error(capsys, argv, 1)
    assert "internal error, ZeroDivisionError" in line and "--debug" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]  # it failed before writing anything
    monkeypatch.setenv("ELMO_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main([str(a) for a in argv])


# --------------------------------------------------------------------------------------------
# Kills: SIGKILL at any moment, then the same command goes on to the same result


def elmo_process(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch_elmo", *map(str, argv)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], delay: float) -> None:
    deadline = time.monotonic() + 120
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_embed_killed_at_any_moment_resumes_to_the_same_file(tmp_path, capsys):
    src = lines_file(tmp_path)
    reference = tmp_path / "reference.hdf5"
    args = [*MODEL_ARGS, "--batch-size", "8", "--quiet"]
    assert main(["embed", str(src), str(reference), *args]) == 0
    expected = embedded(reference)
    kept = []  # lines each killed run had committed
    for k, size in enumerate([0, 100_000, 400_000]):  # bytes written when the kill comes (the whole is ~2 MB)
        out = tmp_path / f"out{k}.hdf5"
        partial = Path(str(out) + ".partial")
        kill_when(elmo_process("embed", src, out, *args),
                  lambda: partial.exists() and partial.stat().st_size > size, 0.0)  # noqa: B023 (called at once)
        if partial.exists():
            with h5py.File(partial, "r") as f:
                kept.append(json.loads(f.attrs["elmo_embed"])["lines"])
        resumed = subprocess.run([sys.executable, "-m", "torch_elmo", "embed", src, out, *args]
                                 + (["--resume"] if partial.exists() else []), capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
        ours = embedded(out)
        assert ours.keys() == expected.keys()
        assert ours.pop("sentence_to_index")[0] == expected["sentence_to_index"][0]
        for n in ours:
            np.testing.assert_allclose(ours[n], expected[n], atol=1e-6)
    assert any(0 < n < len(LINES) for n in kept), kept  # at least one kill landed in the middle of the file


def test_training_killed_at_any_moment_resumes_to_the_same_model(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "straight", max_updates=80, checkpoint_every=1))
    straight.run()
    config = tmp_path / "config.json"
    config.write_text(json.dumps(dict(tiny_config(tmp_path / "run", max_updates=80, checkpoint_every=1).__dict__)))
    run = tmp_path / "run"
    steps = []  # where each killed run's last checkpoint was
    def reached(step: int) -> bool:  # checkpoints are renamed into place: reading one is safe
        try:
            return torch.load(run / "checkpoint.pt", weights_only=True)["step"] >= step
        except (OSError, RuntimeError):
            return False

    for target in (3, 30):  # the kill comes once a checkpoint of this step is on disk
        command = ["train", "--config", config] if not (run / "checkpoint.pt").exists() else ["resume", run]
        kill_when(elmo_process(*command), lambda: reached(target), 0.0)  # noqa: B023 (called at once)
        if (run / "checkpoint.pt").exists():  # a kill mid-write may leave a temporary, never a half checkpoint
            steps.append(torch.load(run / "checkpoint.pt", weights_only=True)["step"])
    finish = ["resume", run] if (run / "checkpoint.pt").exists() else ["train", "--config", config]
    done = subprocess.run([sys.executable, "-m", "torch_elmo", *map(str, finish)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resumed = Trainer.resume(run)
    assert resumed.step == 80 and any(0 < step < 80 for step in steps), steps  # a kill landed mid-run
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# Modes and limits


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_mode_the_umask_says(mask, mode, trained, tmp_path, capsys):
    run = run_copy(tmp_path, trained)
    old = os.umask(mask)
    try:
        assert main(["export", str(run), str(tmp_path / "model")]) == 0
        assert main(["vocab", str(TRAIN / "data.txt"), "--out", str(tmp_path / "v.txt")]) == 0
        assert main(["embed", str(lines_file(tmp_path, LINES[:5])), str(tmp_path / "e.hdf5"), *MODEL_ARGS, "--quiet"]) == 0
        trainer = Trainer(tiny_config(tmp_path / "fresh", max_updates=1))
        trainer.run()
    finally:
        os.umask(old)
    written = [tmp_path / "model" / n for n in ("options.json", "weights.hdf5", "vocab.txt")]
    written += [tmp_path / "v.txt", tmp_path / "e.hdf5", tmp_path / "fresh" / "checkpoint.pt",
                tmp_path / "fresh" / "config.json"]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(mode) for p in written}


def test_a_10000_token_sentence_and_a_100000_character_token_are_embedded(tmp_path, capsys):
    long_sentence = " ".join((["bank", "river", "the"] * 3334)[:10_000])
    huge_token = "x" * 100_000  # a token is its first 48 bytes (bilm-tf's limit), so this is "x" * 48
    src = lines_file(tmp_path, [long_sentence, f"a {huge_token} b"])
    assert main(["embed", str(src), str(tmp_path / "o.hdf5"), *MODEL_ARGS, "--quiet"]) == 0
    with h5py.File(tmp_path / "o.hdf5", "r") as f:
        assert f["0"].shape == (3, 10_000, 32) and f["1"].shape == (3, 3, 32)
        same = ElmoEmbedder(OPTIONS, WEIGHTS).embed_sentence(["a", "x" * 48, "b"])
        np.testing.assert_allclose(f["1"][...], same, atol=1e-6)


def test_every_command_that_reads_files_has_bad_input_rows():
    commands = {c.id.split(":")[0] for c in CASES}
    assert {"embed", "dump-token-embeddings", "info", "vocab", "train", "resume", "plot"} <= commands


def test_long_sentences_make_small_batches_so_memory_stays_bounded(monkeypatch):
    """A batch holds at most BATCH_TOKENS padded positions, a window at most WINDOW_BATCHES
    batches of them: a stream of long sentences is not 256 x 16 of them at once."""
    embedder = ElmoEmbedder(OPTIONS, WEIGHTS)
    monkeypatch.setattr(ElmoEmbedder, "BATCH_TOKENS", 1000)
    monkeypatch.setattr(ElmoEmbedder, "WINDOW_BATCHES", 2)
    shapes, windows = [], []
    to_host, embed_window = embedder._to_host, embedder._embed_window  # _to_host: each batch's work
    monkeypatch.setattr(embedder, "_to_host", lambda batch: (shapes.append((len(batch), max(map(len, batch)))),
                                                             to_host(batch))[1])
    monkeypatch.setattr(embedder, "_embed_window", lambda s, b: (windows.append(sum(map(len, s))), embed_window(s, b))[1])
    sentences = [["bank"] * n for n in (700, 3, 400, 1500, 5, 450, 2)]
    arrays = list(embedder.embed_sentences(sentences, batch_size=256))
    assert [a.shape[1] for a in arrays] == [len(s) for s in sentences]  # in input order
    assert all(rows * longest <= 1000 or rows == 1 for rows, longest in shapes), shapes
    assert (1, 1500) in shapes and max(windows) < 2 * 1000 + 1500
    reference = ElmoEmbedder(OPTIONS, WEIGHTS)
    for array, sentence in zip(arrays, sentences):
        np.testing.assert_allclose(array, reference.embed_sentence(sentence), atol=1e-5)
