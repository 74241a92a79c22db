"""`elmo embed` end to end on the fixture model: layouts, blank lines, unicode, stdin, --resume."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from torch_elmo import ElmoEmbedder
from torch_elmo.cli import main

from .conftest import MODEL

OPTIONS, WEIGHTS = MODEL / "options.json", MODEL / "lm_weights.hdf5"
MODEL_ARGS = ["--options", str(OPTIONS), "--weights", str(WEIGHTS)]
LINES = [
    "The bank of the river .",
    "",
    "I went to the bank to deposit money .",
    "   ",
    "Café naïve résumé 東京 🙂 e\u0301 \u00a0non-breaking",
    "a " + "x" * 80 + " overlong token",
    "\tTabs\tand  double  spaces ",
    "The bank of the river .",
]


def elmo(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def embedder() -> ElmoEmbedder:
    """A fresh one for each test: its token cache holds vectors computed in earlier batches,
    which may differ from a fresh computation in the last bit."""
    return ElmoEmbedder(OPTIONS, WEIGHTS)


def expected(embedder, lines, batch_size=256, tokenize=str.split) -> list[np.ndarray]:
    return list(embedder.embed_sentences([tokenize(line.strip()) for line in lines], batch_size))


def datasets(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][...] for k in f if k != "sentence_to_index"}


@pytest.mark.parametrize("layers", ["all", "top", "average"])
def test_layouts_are_allennlps_and_equal_elmo_embedder(tmp_path, capsys, embedder, layers):
    src = write_lines(tmp_path / "in.txt", LINES)
    out = tmp_path / "out.hdf5"
    code, _, err = elmo(capsys, "embed", src, out, *MODEL_ARGS, "--layers", layers, "--batch-size", 3)
    assert code == 0, err
    want = expected(embedder, LINES, batch_size=3)
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == sorted([str(i) for i in range(len(LINES))] + ["sentence_to_index"])
        for i, array in enumerate(want):
            if layers == "top":
                array = array[-1]
            elif layers == "average":
                array = array.mean(axis=0)
            got = f[str(i)]
            assert got.dtype == np.float32
            assert got.shape == array.shape
            np.testing.assert_array_equal(got[...], array)
        assert f["sentence_to_index"].shape == (1,)
        index = json.loads(f["sentence_to_index"][0])
    assert index == {line.strip(): str(i) for i, line in enumerate(LINES)}  # a repeat maps to its last line
    assert not (tmp_path / "out.hdf5.partial").exists()


def test_blank_lines_give_empty_datasets_and_warnings_without_shifting_keys(tmp_path, capsys):
    src = write_lines(tmp_path / "in.txt", LINES)
    code, _, err = elmo(capsys, "embed", src, tmp_path / "out.hdf5", *MODEL_ARGS)
    assert code == 0
    assert "line 2 is blank: dataset '1' is empty" in err and "line 4 is blank" in err
    arrays = datasets(tmp_path / "out.hdf5")
    assert arrays["1"].shape == (3, 0, 32) and arrays["3"].shape == (3, 0, 32)
    assert [arrays[str(i)].shape[1] for i in range(len(LINES))] == [len(line.split()) for line in LINES]
    np.testing.assert_array_equal(arrays["0"], arrays["7"])  # stateless: same sentence, same vectors
    assert "lines" in err and "tokens/s" in err  # the progress bar


def test_unicode_tokens_are_embedded_as_their_utf8_bytes(tmp_path, capsys, embedder):
    line = LINES[4]
    src = write_lines(tmp_path / "in.txt", [line])
    assert elmo(capsys, "embed", src, tmp_path / "out.hdf5", *MODEL_ARGS, "--layers", "top")[0] == 0
    arrays = datasets(tmp_path / "out.hdf5")
    assert arrays["0"].shape == (len(line.split()), 32)
    np.testing.assert_array_equal(arrays["0"], embedder.embed_sentence(line.split())[-1])
    with h5py.File(tmp_path / "out.hdf5", "r") as f:
        assert json.loads(f["sentence_to_index"][0]) == {line.strip(): "0"}


def test_lines_split_at_newline_only_and_bad_bytes_are_replaced(tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_bytes(b"one\rtwo\r\nthree \xff four\nlast line without newline")
    assert elmo(capsys, "embed", src, tmp_path / "out.hdf5", *MODEL_ARGS, "--layers", "top")[0] == 0
    arrays = datasets(tmp_path / "out.hdf5")
    assert [arrays[str(i)].shape[0] for i in range(3)] == [2, 3, 4]  # "one\rtwo" is one line, two tokens
    with h5py.File(tmp_path / "out.hdf5", "r") as f:
        assert json.loads(f["sentence_to_index"][0])["three \ufffd four"] == "1"


def test_float16_halves_the_file(tmp_path, capsys, embedder):
    src = write_lines(tmp_path / "in.txt", LINES)
    assert elmo(capsys, "embed", src, tmp_path / "f16.hdf5", *MODEL_ARGS, "--float16")[0] == 0
    arrays = datasets(tmp_path / "f16.hdf5")
    for i, array in enumerate(expected(embedder, LINES)):
        assert arrays[str(i)].dtype == np.float16
        np.testing.assert_array_equal(arrays[str(i)], array.astype(np.float16))
    assert (tmp_path / "f16.hdf5").stat().st_size < 0.75 * _float32_size(tmp_path, src)


def test_int8_is_the_int8_embedder_and_near_float32(tmp_path, capsys, embedder):
    src = write_lines(tmp_path / "in.txt", LINES)
    assert elmo(capsys, "embed", src, tmp_path / "int8.hdf5", *MODEL_ARGS, "--int8")[0] == 0
    arrays = datasets(tmp_path / "int8.hdf5")
    int8 = ElmoEmbedder(OPTIONS, WEIGHTS, implementation="int8")
    for i, (exact, quantized) in enumerate(zip(expected(embedder, LINES), expected(int8, LINES))):
        np.testing.assert_array_equal(arrays[str(i)], quantized)
        if exact.size:
            assert np.abs(quantized[1:] - exact[1:]).mean() < 0.03 * np.abs(exact[1:]).mean()
    with h5py.File(tmp_path / "int8.hdf5", "r") as f:
        assert json.loads(f.attrs["elmo_embed"])["settings"]["int8"] is True


def test_bf16_is_the_bf16_embedder_and_near_float32(tmp_path, capsys, embedder):
    src = write_lines(tmp_path / "in.txt", LINES)
    assert elmo(capsys, "embed", src, tmp_path / "bf16.hdf5", *MODEL_ARGS, "--bf16")[0] == 0
    arrays = datasets(tmp_path / "bf16.hdf5")
    bf16 = ElmoEmbedder(OPTIONS, WEIGHTS, dtype=torch.bfloat16)
    for i, (exact, rounded) in enumerate(zip(expected(embedder, LINES), expected(bf16, LINES))):
        assert arrays[str(i)].dtype == np.float32
        np.testing.assert_array_equal(arrays[str(i)], rounded)
        if exact.size:
            assert 0 < np.abs(rounded - exact).mean() < 0.03 * np.abs(exact).mean()
    with h5py.File(tmp_path / "bf16.hdf5", "r") as f:
        assert json.loads(f.attrs["elmo_embed"])["settings"]["bf16"] is True
    code, _, err = elmo(capsys, "embed", src, tmp_path / "both.hdf5", *MODEL_ARGS, "--bf16", "--int8")
    assert code == 2 and "--int8 and --bf16 together" in err and not (tmp_path / "both.hdf5.partial").exists()


def test_resume_refuses_a_run_started_with_other_vectors(tmp_path, capsys, monkeypatch):
    """A partial file started with --bf16 (or --int8) is not continued without it, nor one
    started without it with it: the file would mix two kinds of vectors."""
    src = write_lines(tmp_path / "in.txt", many_lines(40))
    out = tmp_path / "out.hdf5"
    with monkeypatch.context() as m:
        m.setattr(ElmoEmbedder, "embed_sentences", interrupt_after(10))
        assert elmo(capsys, "embed", src, out, *MODEL_ARGS, "--bf16")[0] == 130
    code, _, err = elmo(capsys, "embed", src, out, *MODEL_ARGS, "--resume")
    assert code == 2 and "started with bf16=True" in err
    code, _, err = elmo(capsys, "embed", src, out, *MODEL_ARGS, "--int8", "--resume")
    assert code == 2 and "started with int8=False, bf16=True" in err
    assert elmo(capsys, "embed", src, out, *MODEL_ARGS, "--bf16", "--resume")[0] == 0 and out.is_file()


def _float32_size(tmp_path, src) -> int:
    assert main(["embed", str(src), str(tmp_path / "f32.hdf5"), *MODEL_ARGS, "--quiet"]) == 0
    return (tmp_path / "f32.hdf5").stat().st_size


@pytest.mark.parametrize("layers,shape", [("all", (3, 32)), ("top", (32,)), ("average", (32,))])
@pytest.mark.parametrize("pool", ["mean", "max"])
def test_pool_gives_one_vector_per_line(tmp_path, capsys, embedder, layers, shape, pool):
    src = write_lines(tmp_path / "in.txt", LINES)
    out = tmp_path / "out.hdf5"
    assert elmo(capsys, "embed", src, out, *MODEL_ARGS, "--pool", pool, "--layers", layers)[0] == 0
    arrays = datasets(out)
    for i, array in enumerate(expected(embedder, LINES)):
        if layers == "top":
            array = array[-1]
        elif layers == "average":
            array = array.mean(axis=0)
        got = arrays[str(i)]
        assert got.shape == shape
        if array.shape[-2] == 0:
            assert not got.any()  # a blank line: zeros
        else:
            np.testing.assert_allclose(got, array.mean(axis=-2) if pool == "mean" else array.max(axis=-2), rtol=1e-6)


def test_tokenize_uses_moses(tmp_path, capsys, embedder):
    sacremoses = pytest.importorskip("sacremoses")
    moses = sacremoses.MosesTokenizer(lang="en")
    raw = ["Hello, world! It's 5 o'clock & \"time\" to go.", "", "Don't panic."]
    src = write_lines(tmp_path / "in.txt", raw)
    out = tmp_path / "out.hdf5"
    assert elmo(capsys, "embed", src, out, *MODEL_ARGS, "--tokenize")[0] == 0
    tokenize = lambda text: moses.tokenize(text, escape=False)  # noqa: E731
    assert tokenize(raw[0])[:4] == ["Hello", ",", "world", "!"] and "&" in tokenize(raw[0])
    arrays = datasets(out)
    for i, array in enumerate(expected(embedder, raw, tokenize=tokenize)):
        np.testing.assert_array_equal(arrays[str(i)], array)
    with h5py.File(out, "r") as f:  # keyed by the line as given
        assert json.loads(f["sentence_to_index"][0])[raw[0]] == "0"


def test_sentence_keys_and_forget_sentences(tmp_path, capsys, embedder):
    lines = ["a b c", "", "a b c", "x / y", "d e"]
    src = write_lines(tmp_path / "in.txt", lines)
    code, _, err = elmo(capsys, "embed", src, tmp_path / "keys.hdf5", *MODEL_ARGS, "--use-sentence-keys")
    assert code == 0
    assert "line 2 is blank, so it cannot name a dataset" in err and 'line 4 contains "/"' in err
    arrays = datasets(tmp_path / "keys.hdf5")
    assert sorted(arrays) == ["a b c", "d e"]
    np.testing.assert_array_equal(arrays["d e"], expected(embedder, lines)[4])
    assert elmo(capsys, "embed", src, tmp_path / "forget.hdf5", *MODEL_ARGS, "--forget-sentences")[0] == 0
    with h5py.File(tmp_path / "forget.hdf5", "r") as f:
        assert sorted(f.keys()) == ["0", "1", "2", "3", "4"]


def elmo_command() -> list[str]:
    script = Path(sys.executable).with_name("elmo")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "torch_elmo"]


def test_stdin_through_the_console_script(tmp_path, embedder):
    out = tmp_path / "out.hdf5"
    text = "".join(line + "\n" for line in LINES)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([*elmo_command(), "embed", "-", str(out), *MODEL_ARGS, "--layers", "top"],
                            input=text.encode(), capture_output=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    arrays = datasets(out)
    for i, array in enumerate(expected(embedder, LINES)):
        np.testing.assert_array_equal(arrays[str(i)], array[-1])


def many_lines(n: int) -> list[str]:
    return ["" if i % 97 == 5 else f"line {i} says {'more ' * (i % 9)}." for i in range(n)]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_resume_after_a_killed_run(tmp_path, capsys, signum):
    """A kill mid-run (stdin kept open so that the run cannot finish): OUTPUT does not exist,
    OUTPUT.partial does; --resume with the whole input gives a clean run's file. SIGKILL loses
    the lines after the last commit; SIGINT (Ctrl-C) commits every line written."""
    lines = [line or "no longer blank" for line in many_lines(1200)]
    lines[800] = ""  # its warning (the first) tells us the run got that far
    out = tmp_path / "out.hdf5"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([*elmo_command(), "embed", "-", str(out), *MODEL_ARGS, "--batch-size", "8"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write("".join(line + "\n" for line in lines[:1000]).encode())
        proc.stdin.flush()
        err, deadline = b"", time.monotonic() + 60
        while b"line 801 is blank" not in err and time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stderr], [], [], 1)[0]:
                err += os.read(proc.stderr.fileno(), 1 << 16)
        assert b"line 801 is blank" in err, err.decode()
    finally:
        proc.send_signal(signum)
        _, rest = proc.communicate(timeout=60)
    partial = tmp_path / "out.hdf5.partial"
    assert not out.exists() and partial.is_file()
    with h5py.File(partial, "r") as f:
        done = json.loads(f.attrs["elmo_embed"])["lines"]
    if signum == signal.SIGINT:
        assert proc.returncode == 130 and f"interrupted after {done} lines".encode() in rest
        assert 800 <= done <= 1000  # the warning comes just before line 801 is written
    else:
        assert 0 < done <= 801

    src = write_lines(tmp_path / "in.txt", lines)
    code, _, err = elmo(capsys, "embed", src, out, *MODEL_ARGS, "--batch-size", 8, "--resume")
    assert code == 0, err
    assert not partial.exists()
    clean = tmp_path / "clean.hdf5"
    assert elmo(capsys, "embed", src, clean, *MODEL_ARGS, "--batch-size", 8)[0] == 0
    assert_same_file(out, clean)


def assert_same_file(a: Path, b: Path) -> None:
    """Same datasets, same shapes, same vectors up to float32 rounding: after the restart,
    ElmoEmbedder's token cache is computed in other batches than in an uninterrupted run, which
    can change the last bit."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert sorted(fa.keys()) == sorted(fb.keys())
        for k in fb:
            assert fa[k].shape == fb[k].shape and fa[k].dtype == fb[k].dtype, k
            if k == "sentence_to_index":
                assert json.loads(fa[k][0]) == json.loads(fb[k][0])
            else:
                np.testing.assert_allclose(fa[k][...], fb[k][...], rtol=1e-5, atol=1e-6, err_msg=k)


def interrupt_after(n: int):
    """ElmoEmbedder.embed_sentences that raises KeyboardInterrupt (Ctrl-C) after n sentences."""
    original = ElmoEmbedder.embed_sentences

    def embed_sentences(self, sentences, batch_size=256):
        for i, array in enumerate(original(self, sentences, batch_size)):
            if i == n:
                raise KeyboardInterrupt
            yield array

    return embed_sentences


def test_ctrl_c_then_resume(tmp_path, capsys, monkeypatch):
    lines = many_lines(700)
    src = write_lines(tmp_path / "in.txt", lines)
    out, partial = tmp_path / "out.hdf5", tmp_path / "out.hdf5.partial"
    with monkeypatch.context() as m:
        m.setattr(ElmoEmbedder, "embed_sentences", interrupt_after(300))
        code, _, err = elmo(capsys, "embed", src, out, *MODEL_ARGS, "--batch-size", 4)
    assert code == 130 and "interrupted after 300 lines" in err and "--resume" in err
    assert not out.exists() and partial.is_file()
    with h5py.File(partial, "a") as f:
        assert json.loads(f.attrs["elmo_embed"])["lines"] == 300
        f.create_dataset("300", data=np.zeros((1,), np.float32))  # as if written after the last commit

    # without --resume, the partial file is never clobbered
    code, _, err = elmo(capsys, "embed", src, out, *MODEL_ARGS)
    assert code == 2 and "out.hdf5.partial: left by an interrupted run; continue it with --resume" in err
    # another setting, or another input, is refused
    code, _, err = elmo(capsys, "embed", src, out, *MODEL_ARGS, "--layers", "top", "--resume")
    assert code == 2 and "started with layers='all'" in err
    other = write_lines(tmp_path / "other.txt", ["different"] + lines[1:])
    code, _, err = elmo(capsys, "embed", other, out, *MODEL_ARGS, "--resume")
    assert code == 2 and "first 300 lines are not those it was made from" in err
    short = write_lines(tmp_path / "short.txt", lines[:10])
    code, _, err = elmo(capsys, "embed", short, out, *MODEL_ARGS, "--resume")
    assert code == 2 and "holds 300 lines but the input has only 10" in err

    code, _, err = elmo(capsys, "embed", src, out, *MODEL_ARGS, "--batch-size", 4, "--resume")
    assert code == 0, err
    assert not partial.exists()
    clean = tmp_path / "clean.hdf5"
    assert elmo(capsys, "embed", src, clean, *MODEL_ARGS, "--batch-size", 4)[0] == 0
    assert_same_file(out, clean)
    code, _, err = elmo(capsys, "embed", src, out, *MODEL_ARGS, "--resume")
    assert code == 2 and "no interrupted run to resume" in err


def test_resume_with_sentence_keys(tmp_path, capsys, monkeypatch):
    lines = [f"sentence {i % 50}" for i in range(120)]
    src = write_lines(tmp_path / "in.txt", lines)
    out = tmp_path / "out.hdf5"
    with monkeypatch.context() as m:
        m.setattr(ElmoEmbedder, "embed_sentences", interrupt_after(30))
        assert elmo(capsys, "embed", src, out, *MODEL_ARGS, "--use-sentence-keys")[0] == 130
    code, _, err = elmo(capsys, "embed", src, out, *MODEL_ARGS, "--use-sentence-keys", "--resume")
    assert code == 0, err
    clean = tmp_path / "clean.hdf5"
    assert elmo(capsys, "embed", src, clean, *MODEL_ARGS, "--use-sentence-keys")[0] == 0
    assert_same_file(out, clean)
    assert len(datasets(out)) == 50


def user_error(capsys, *argv) -> str:
    code, out, err = elmo(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_bad_arguments_are_one_line_errors(tmp_path, capsys, monkeypatch):
    src = write_lines(tmp_path / "in.txt", LINES)
    out = tmp_path / "out.hdf5"
    err = user_error(capsys, "embed", tmp_path / "missing.txt", out, *MODEL_ARGS)
    assert "missing.txt: no such input file" in err
    assert "--options given without --weights" in user_error(capsys, "embed", src, out, "--options", OPTIONS)
    err = user_error(capsys, "embed", src, out, "--options", OPTIONS, "--weights", tmp_path / "nothing.hdf5")
    assert "nothing.hdf5: no such weight file" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "bad.json: not a JSON options file" in user_error(capsys, "embed", src, out, "--options", bad,
                                                              "--weights", WEIGHTS)
    assert "--batch-size 0: must be at least 1" in user_error(capsys, "embed", src, out, *MODEL_ARGS,
                                                               "--batch-size", 0)
    assert "--device nonsense: not a device" in user_error(capsys, "embed", src, out, *MODEL_ARGS,
                                                            "--device", "nonsense")
    assert "is a directory" in user_error(capsys, "embed", src, tmp_path, *MODEL_ARGS)
    assert "in.txt: is the input file" in user_error(capsys, "embed", src, src, *MODEL_ARGS)
    import torch_elmo.default

    monkeypatch.setattr(torch_elmo.default, "MODEL_DIR", tmp_path / "not-installed")
    err = user_error(capsys, "embed", src, out)
    assert "build it with `make default-model`" in err and "`--options/--weights`" in err
    monkeypatch.setattr(torch_elmo.default, "default_model_files", lambda: (OPTIONS, WEIGHTS))
    assert elmo(capsys, "embed", src, out, "--quiet")[0] == 0 and out.is_file()
    out.unlink()
    with pytest.raises(SystemExit) as exit_:
        main(["embed", str(src), str(out), "--layers", "bottom"])
    assert exit_.value.code == 2 and "invalid choice: 'bottom'" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.hdf5.partial").exists()


def test_tokenize_without_sacremoses_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sacremoses", None)
    src = write_lines(tmp_path / "in.txt", LINES)
    err = user_error(capsys, "embed", src, tmp_path / "out.hdf5", *MODEL_ARGS, "--tokenize")
    assert "pip install 'torch-elmo[tokenize]'" in err


def test_torchrun_ranks_write_shards_that_join_into_the_single_process_file(tmp_path, capsys):
    """`torchrun --nproc_per_node 2 -m torch_elmo embed`: each rank its share of the lines, then
    `elmo join-shards`: the same datasets, sentence_to_index and progress record as one process."""
    lines = [f"line {i} of the bank" if i % 5 else "" for i in range(41)] + LINES
    src = write_lines(tmp_path / "in.txt", lines)
    single, joined = tmp_path / "single.hdf5", tmp_path / "joined.hdf5"
    assert main(["embed", str(src), str(single), *MODEL_ARGS, "--quiet"]) == 0
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "torch_elmo", "embed", str(src), str(joined), *MODEL_ARGS, "--quiet"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    shards = sorted(p.name for p in tmp_path.glob("joined.hdf5.shard*"))
    assert shards == ["joined.hdf5.shard0-of-2", "joined.hdf5.shard1-of-2"] and not joined.exists()
    with h5py.File(tmp_path / shards[1], "r") as f:
        assert sorted(int(k) for k in f if k != "sentence_to_index") == list(range(1, len(lines), 2))
    capsys.readouterr()
    assert main(["join-shards", str(joined), "--remove-shards"]) == 0
    assert not list(tmp_path.glob("joined.hdf5.shard*"))
    ours, expected = datasets(joined), datasets(single)
    assert ours.keys() == expected.keys()
    for k in expected:
        np.testing.assert_allclose(ours[k], expected[k], atol=1e-6)
    with h5py.File(joined, "r") as a, h5py.File(single, "r") as b:
        assert json.loads(a["sentence_to_index"][0]) == json.loads(b["sentence_to_index"][0])
        assert json.loads(a.attrs["elmo_embed"]) == json.loads(b.attrs["elmo_embed"])


def test_a_shard_resumes_on_its_own_and_join_refuses_an_incomplete_set(tmp_path, capsys, monkeypatch):
    src = write_lines(tmp_path / "in.txt", LINES * 3)
    out = tmp_path / "out.hdf5"
    argv = ["embed", str(src), str(out), *MODEL_ARGS, "--quiet", "--batch-size", "2"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    calls = []

    def full_disk(self, key, array):
        calls.append(key)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_write(self, key, array)

    embed_module = sys.modules["torch_elmo.cli.embed"]
    real_write = embed_module._EmbeddingWriter.write
    with monkeypatch.context() as m:
        m.setattr(embed_module._EmbeddingWriter, "write", full_disk)
        assert main(argv) == 1
    assert "out.hdf5.shard1-of-2.partial keeps the first" in capsys.readouterr().err
    err = user_error(capsys, "join-shards", out)
    assert "shard1-of-2.partial: still being written, or interrupted" in err
    assert main(argv + ["--resume"]) == 0
    capsys.readouterr()
    assert "rank(s) [0] of 2 are missing" in user_error(capsys, "join-shards", out)
    monkeypatch.setenv("RANK", "0")
    assert main(argv) == 0
    assert main(["join-shards", str(out)]) == 0
    single = tmp_path / "single.hdf5"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(["embed", str(src), str(single), *MODEL_ARGS, "--quiet"]) == 0
    ours, expected = datasets(out), datasets(single)
    assert ours.keys() == expected.keys()
    for k in expected:
        np.testing.assert_allclose(ours[k], expected[k], atol=1e-6)
