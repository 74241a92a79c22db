"""The other `elmo` commands: dump-token-embeddings, info, the training workflow, --help."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from torch_elmo import ElmoEmbedder, batch_to_ids, load_bilm
from torch_elmo.cli import COMMANDS, build_parser, main, parse_docstring
from torch_elmo.formats import bilm_datasets, read_options

from .conftest import FIXTURES, MODEL

OPTIONS, WEIGHTS = MODEL / "options.json", MODEL / "lm_weights.hdf5"
MODEL_ARGS = ["--options", str(OPTIONS), "--weights", str(WEIGHTS)]
TRAIN = FIXTURES / "train"


def elmo(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def user_error(capsys, *argv) -> str:
    code, _, err = elmo(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_dump_token_embeddings_is_the_char_cnn_per_vocabulary_line(tmp_path, capsys):
    vocab = MODEL / "vocab_test.txt"
    out = tmp_path / "tokens.hdf5"
    code, _, err = elmo(capsys, "dump-token-embeddings", vocab, out, *MODEL_ARGS, "--batch-size", 100)
    assert code == 0, err
    tokens = [line.split()[0] for line in vocab.read_text(encoding="utf-8").splitlines() if line.strip()]
    with h5py.File(out, "r") as f:
        assert list(f.keys()) == ["embedding"]
        embedding = f["embedding"][...]
    assert embedding.shape == (len(tokens), 16) and embedding.dtype == np.float32
    bilm = load_bilm(OPTIONS, WEIGHTS)
    with torch.no_grad():
        for k in (0, 1, 207, len(tokens) - 1):  # row k: the CNN of line k on its own (<S> is line 208)
            np.testing.assert_allclose(embedding[k], bilm.token_encoder(batch_to_ids([[tokens[k]]])[0])[0],
                                       rtol=1e-5, atol=1e-6)
    # the context-free half of layer 0 of `elmo embed`
    layer0 = ElmoEmbedder(OPTIONS, WEIGHTS).embed_sentence(tokens[:5])[0]
    np.testing.assert_allclose(layer0[:, :16], embedding[:5], rtol=1e-5, atol=1e-6)
    assert tokens[207] == "<S>"
    with torch.no_grad():
        boundary = bilm.token_encoder(torch.tensor([[259, 257, 260] + [261] * 47]))[0]  # bow bos eow pad, +1
    np.testing.assert_allclose(embedding[207], boundary, rtol=1e-5, atol=1e-6)


def test_dump_token_embeddings_errors(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    out = tmp_path / "out.hdf5"
    assert "empty.txt: the vocabulary is empty" in user_error(capsys, "dump-token-embeddings", empty, out, *MODEL_ARGS)
    assert "nope.txt: no such vocabulary file" in user_error(capsys, "dump-token-embeddings", tmp_path / "nope.txt",
                                                             out, *MODEL_ARGS)
    assert not out.exists()


def model_dir(tmp_path, card: str | None = None) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    shutil.copy(OPTIONS, d / "options.json")
    shutil.copy(WEIGHTS, d / "lm_weights.hdf5")
    if card:
        (d / "MODEL_CARD.md").write_text(card)
    return d


def test_info_architecture_parameters_check_and_card(tmp_path, capsys):
    d = model_dir(tmp_path, card="# Tiny\n\nTrained on nothing at all.\n")
    code, out, err = elmo(capsys, "info", d)
    assert code == 0, err
    with h5py.File(WEIGHTS, "r") as f:
        stored = []
        f.visititems(lambda name, obj: stored.append(obj.size) if isinstance(obj, h5py.Dataset) else None)
    assert f"parameters: {sum(stored):,} " in out
    config = read_options(OPTIONS)
    assert sum(int(np.prod(s)) for s in bilm_datasets(config).values()) == sum(stored)
    assert "2 layer(s) per direction, 64 cells, projection 16" in out and "1x4 2x8 3x16 4x32 5x64" in out
    assert "check:     ok" in out and "Trained on nothing at all." in out
    # the options file itself, and --weights
    assert elmo(capsys, "info", d / "options.json")[0] == 0
    code, out, _ = elmo(capsys, "info", OPTIONS, "--weights", WEIGHTS)
    assert code == 0 and "model card: none" in out


def test_info_without_a_model_describes_the_default_one(tmp_path, capsys, monkeypatch):
    import torch_elmo.default

    d = model_dir(tmp_path, card="# Default\n")
    monkeypatch.setattr(torch_elmo.default, "default_model_files", lambda: (d / "options.json", d / "lm_weights.hdf5"))
    code, out, _ = elmo(capsys, "info")
    assert code == 0 and "check:     ok" in out and "# Default" in out


def test_info_reports_a_mismatched_weight_file(tmp_path, capsys):
    d = model_dir(tmp_path)
    options = json.loads(OPTIONS.read_text())
    options["lstm"]["dim"] = 32
    (d / "options.json").write_text(json.dumps(options))
    code, out, err = elmo(capsys, "info", d)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "lm_weights.hdf5: dataset" in err and "use the options.json that goes with this weight file" in err
    assert "biLSTM:    2 layer(s) per direction, 32 cells" in out  # the architecture came first
    assert "nothing: no such file or directory" in user_error(capsys, "info", tmp_path / "nothing")
    (d / "lm_weights.hdf5").unlink()
    assert "give the weight file with --weights" in user_error(capsys, "info", d)


def test_evaluate_reads_the_held_out_text_as_the_run_was_trained(tmp_path, capsys):
    """A run trained on contiguous rows (the PTB protocol) is evaluated on contiguous rows."""
    from torch_elmo.config import TrainConfig
    from torch_elmo.trainer import Trainer, evaluate

    tiny = {"filters": [[1, 8], [2, 8]], "char_embed_dim": 4, "n_highway": 1, "lstm_dim": 16, "projection_dim": 8}
    trainer = Trainer(TrainConfig(train_files=str(TRAIN / "data.txt"), vocab=str(TRAIN / "vocab.txt"), bilm=tiny,
                                  run_dir=str(tmp_path / "run"), batch_size=2, unroll_steps=5, max_updates=20,
                                  n_negative_samples=0, contiguous_rows=True, progress=False))
    trainer.run()
    code, out, err = elmo(capsys, "evaluate", tmp_path / "run", TRAIN / "data.txt", "--batch-size", 3)
    assert code == 0, err
    files = [str(TRAIN / "data.txt")]
    rows = {contiguous: evaluate(trainer.model, files, trainer.vocab, 3, 5, contiguous=contiguous)
            for contiguous in (True, False)}
    assert rows[True]["ppl"] != rows[False]["ppl"]
    assert json.loads(out)["ppl"] == pytest.approx(rows[True]["ppl"], rel=1e-9)


def test_training_workflow_then_info_and_embed_with_the_exported_model(tmp_path, capsys):
    tiny = {"filters": [[1, 8], [2, 8]], "char_embed_dim": 4, "n_highway": 1, "lstm_dim": 16,
            "projection_dim": 8, "n_layers": 2}
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"bilm": tiny, "batch_size": 2, "unroll_steps": 5, "progress": False,
                                  "n_negative_samples": 0}))
    run = tmp_path / "run"
    assert elmo(capsys, "vocab", TRAIN / "data.txt", "--out", tmp_path / "vocab.txt")[0] == 0
    code, out, err = elmo(capsys, "train", "--config", config, "--set", f"train={TRAIN / 'data.txt'}",
                          "--set", f"run_dir={run}", "--set", f"vocab={tmp_path / 'vocab.txt'}",
                          "--set", "max_updates=2", "--set", "log_every=1")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["step"] == 2
    assert elmo(capsys, "resume", run, "--set", "max_updates=3")[0] == 0
    code, out, _ = elmo(capsys, "evaluate", run, TRAIN / "data.txt", "--batch-size", 4)
    assert code == 0 and json.loads(out)["backward_ppl"] > 1
    assert elmo(capsys, "export", run, tmp_path / "exported")[0] == 0
    code, out, err = elmo(capsys, "info", tmp_path / "exported")
    assert code == 0 and "check:     ok" in out, err
    src = tmp_path / "in.txt"
    src.write_text("a tiny model\n")
    exported = ["--options", tmp_path / "exported" / "options.json", "--weights", tmp_path / "exported" / "weights.hdf5"]
    assert elmo(capsys, "embed", src, tmp_path / "out.hdf5", *exported)[0] == 0
    with h5py.File(tmp_path / "out.hdf5", "r") as f:
        assert f["0"].shape == (3, 3, 16)
    pytest.importorskip("matplotlib")
    assert elmo(capsys, "plot", run, "--out", tmp_path / "curve.png")[0] == 0
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_training_errors_are_one_line(tmp_path, capsys):
    assert "no checkpoint to resume from" in user_error(capsys, "resume", tmp_path / "nothing")
    assert "checkpoint.pt: no checkpoint" in user_error(capsys, "export", tmp_path, tmp_path / "out")
    assert "missing.txt: no such corpus file" in user_error(capsys, "vocab", tmp_path / "missing.txt",
                                                            "--out", tmp_path / "v.txt")
    assert "unknown setting(s) ['nonsense']" in user_error(capsys, "train", "--set", "nonsense=1")
    assert "no metrics log" in user_error(capsys, "plot", tmp_path)
    train = ["train", "--set", f"train={TRAIN / 'data.txt'}", "--set", f"run_dir={tmp_path / 'run'}"]
    assert "batch_size is 'abc', expected an integer" in user_error(capsys, *train, "--set", "batch_size=abc")
    assert "heldout_files is 5, expected" in user_error(capsys, *train, "--set", "heldout=5")  # old name read
    assert "bilm.lstm_dim is -3, expected a positive integer" in user_error(capsys, *train, "--set", "bilm.lstm_dim=-3")
    assert "bilm.filters is 3, expected a list" in user_error(capsys, *train, "--set", "bilm.filters=3")
    assert 'bilm.activation is 1, expected "relu" or "tanh"' in user_error(capsys, *train, "--set", "bilm.activation=1")
    every = user_error(capsys, *train, "--set", "batch_size=0", "--set", "dropout=1.5", "--set", "optimizer=adam",
                       "--set", "unroll_steps=0", "--set", "lr=-1")
    for named in ("batch_size is 0, expected a positive integer", "dropout is 1.5, expected a probability in [0, 1)",
                  'optimizer is \'adam\', expected "adagrad" or "sgd"', "unroll_steps is 0", "lr is -1"):
        assert named in every  # every bad setting in one message, with its range


def test_a_forward_only_run_is_not_exported_and_says_why(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"bilm": {"filters": [[1, 8]], "char_embed_dim": 4, "n_highway": 0, "lstm_dim": 8,
                                           "projection_dim": 4, "n_layers": 1},
                                  "batch_size": 2, "unroll_steps": 5, "progress": False, "n_directions": 1,
                                  "n_negative_samples": 0, "train": str(TRAIN / "data.txt"),
                                  "vocab": str(TRAIN / "vocab.txt"), "run_dir": str(tmp_path / "run"),
                                  "max_updates": 1}))
    assert elmo(capsys, "train", "--config", config)[0] == 0
    message = user_error(capsys, "export", tmp_path / "run", tmp_path / "out")
    assert "only bidirectional LMs can be exported" in message and "kept in its training checkpoint" in message
    assert not (tmp_path / "out").exists()
    assert "restart_prob is 2, expected a probability" in user_error(capsys, "train", "--config", config,
                                                                      "--set", "restart_prob=2")


@pytest.mark.parametrize("fn", COMMANDS, ids=lambda fn: fn.__name__)
def test_every_option_is_documented_with_its_default(fn):
    description, helps = parse_docstring(fn)
    assert description
    for name, param in inspect.signature(fn).parameters.items():
        assert helps.get(name), f"{fn.__name__}: {name} is not documented"
        default = param.default
        if default is inspect.Parameter.empty:
            continue
        assert "default" in helps[name].lower(), f"{fn.__name__}: {name}'s default is not stated"
        if default not in (None, False, ()) and not isinstance(default, bool):
            assert str(default) in helps[name], f"{fn.__name__}: {name}'s default {default!r} is not stated"


def test_help_of_every_command(capsys):
    parser = build_parser()
    for fn in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([fn.__name__.replace("_", "-"), "--help"])
        assert exit_.value.code == 0
    assert "--use-sentence-keys" in capsys.readouterr().out
