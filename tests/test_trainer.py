"""Training, resume, evaluation, export (torch_elmo.trainer, torch_elmo.config, torch_elmo.lm)."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import h5py
import pytest
import torch

from torch_elmo.chars import batch_to_ids
from torch_elmo.cli import main
from torch_elmo.config import TrainConfig
from torch_elmo.data import DataError
from torch_elmo.errors import TrainError
from torch_elmo.formats import load_bilm
from torch_elmo.trainer import Trainer, evaluate

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "bilm-tf"
TRAIN = SHARED / "train"
TINY = {"filters": [[1, 8], [2, 8], [3, 16], [4, 32], [5, 64]], "char_embed_dim": 4, "n_highway": 1,
        "lstm_dim": 16, "projection_dim": 8, "n_layers": 2, "use_skip_connections": True}



def tiny_config(tmp_path, **kw) -> TrainConfig:
    """bilm-tf's test_training setup: batch 2, unroll 10, LSTM 16, projection 8."""
    values = dict(train_files=str(TRAIN / "data.txt"), heldout_files=str(TRAIN / "data.txt"), vocab=str(TRAIN / "vocab.txt"),
                  run_dir=str(tmp_path / "run"), bilm=dict(TINY), batch_size=2, unroll_steps=10, n_epochs=50,
                  n_negative_samples=6, checkpoint_every=0, progress=False, eval_batch_size=2)
    values.update(kw)
    return TrainConfig(**values)


def corpus(tmp_path, n_shards=2) -> list[str]:
    lines = (TRAIN / "data.txt").read_text().splitlines()
    paths = []
    for k in range(n_shards):
        p = tmp_path / f"shard{k}.txt"
        p.write_text("\n".join(lines[k::n_shards]) + "\n\n")
        paths.append(str(p))
    return paths


def params(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("restart_prob, contiguous_rows", [(0.0, False), (0.1, False), (0.0, True)])
def test_tiny_char_bilm_learns_the_fixture(tmp_path, restart_prob, contiguous_rows):
    """The original's test: 50 epochs on train/data.txt, held-out perplexity below 20."""
    trainer = Trainer(tiny_config(tmp_path, restart_prob=restart_prob, contiguous_rows=contiguous_rows))
    assert trainer.n_updates == 50 * 139 // 20  # from the data: 134 words + 5 sentences
    result = trainer.run()
    assert result["event"] == "eval" and result["tokens"] == 139
    assert result["ppl"] < 20 and result["forward_ppl"] < 20 and result["backward_ppl"] < 20
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "train" and {"loss", "ppl", "tokens_per_s"} <= set(records[0])


def test_resume_continues_exactly(tmp_path):
    """N updates in one go == k updates, checkpoint, a new process state, N - k more."""
    files = corpus(tmp_path)
    config = tiny_config(tmp_path, train_files=files, vocab=None, max_updates=12, heldout_files=None)
    straight = Trainer(replace(config, run_dir=str(tmp_path / "a")))
    straight.run()

    first = Trainer(replace(config, run_dir=str(tmp_path / "b")))
    first.run(max_steps=5)
    torch.manual_seed(1234)  # the resumed run must not depend on the process's RNG
    resumed = Trainer.resume(tmp_path / "b")
    assert resumed.step == 5
    resumed.run()
    assert resumed.step == straight.step == 12
    a, b = params(straight), params(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    for (ha, ca), (hb, cb) in zip(straight.states, resumed.states):
        assert torch.allclose(ha, hb, atol=1e-6) and torch.allclose(ca, cb, atol=1e-6)


def test_checkpoints_of_format_1_resume(tmp_path):
    """A format-1 checkpoint, as its earliest version wrote it (before restart_prob,
    contiguous_rows, token_projection and the train_files / heldout_files names; `best_heldout`;
    one `done` flag a batcher), resumes through `upgrade_checkpoint` with the new settings'
    defaults and continues as the run it was."""
    trainer = Trainer(tiny_config(tmp_path, max_updates=4, heldout_files=None))
    trainer.run(max_steps=2)
    path = tmp_path / "run" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["format"] == 2
    checkpoint["format"] = 1
    config = checkpoint["config"]
    config["train"], config["heldout"] = config.pop("train_files"), config.pop("heldout_files")
    for key in ("restart_prob", "contiguous_rows"):
        del config[key]
    del checkpoint["architecture"]["token_projection"]
    checkpoint["best_heldout"] = checkpoint.pop("last_heldout")
    for batcher in checkpoint["ranks"][0]["data"]["batchers"]:
        batcher["done"] = False
        del batcher["rng"]
    torch.save(checkpoint, path)
    resumed = Trainer.resume(tmp_path / "run")
    assert (resumed.step, resumed.config.restart_prob, resumed.config.contiguous_rows) == (2, 0.0, False)
    assert resumed.config.train_files == str(TRAIN / "data.txt") and resumed.last_heldout == float("inf")
    resumed.run()
    assert resumed.step == 4
    assert torch.load(path, weights_only=False)["format"] == 2  # rewritten in the current format
    checkpoint["format"] = 3
    torch.save(checkpoint, path)
    with pytest.raises(TrainError, match="checkpoint format 3 is newer than this torch-elmo reads"):
        Trainer.resume(tmp_path / "run")


def test_signal_checkpoints_and_stops(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, max_updates=50, heldout_files=None))
    step = trainer.train_step

    def step_then_signal():
        loss = step()
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    trainer.train_step = step_then_signal
    trainer.run()
    assert trainer.step == 3
    assert Trainer.resume(tmp_path / "run").step == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path, max_updates=4, heldout_files=None))
    trainer.run(max_steps=2)
    trainer.save_checkpoint()
    path = tmp_path / "run" / "checkpoint.pt"
    before = path.read_bytes()

    def disk_full(obj, f, *a, **kw):
        Path(f).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    trainer.train_step()
    with pytest.raises(OSError, match="No space"):
        trainer.save_checkpoint()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_export_round_trip_and_continue_from_published(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, max_updates=5, heldout_files=None))
    trainer.run()
    out = tmp_path / "export"
    trainer.export(out, keep_softmax=True)
    options = json.loads((out / "options.json").read_text())
    assert options["char_cnn"]["n_characters"] == 262 and options["lstm"]["use_skip_connections"] is True
    with h5py.File(out / "weights.hdf5") as f:
        assert f["softmax/W"].shape == (32, 8) and f["softmax/b"].shape == (32,)
    ids = batch_to_ids([["neural", "nets", "."], ["words"]])
    expected = trainer.model.to_bilm()(ids).layers
    loaded = load_bilm(out / "options.json", out / "weights.hdf5")(ids).layers
    for x, y in zip(expected, loaded):
        assert torch.equal(x, y)

    # continue training from the export: the softmax is restored when kept, fresh otherwise
    cont = Trainer(tiny_config(tmp_path, run_dir=str(tmp_path / "cont"), options=str(out / "options.json"),
                               init_weights=str(out / "weights.hdf5"), max_updates=1, heldout_files=None))
    assert torch.equal(cont.model.head.weight, trainer.model.head.weight)
    published = SHARED / "model"
    vocab = tmp_path / "v.txt"
    vocab.write_text("<S>\n</S>\n<UNK>\n" + "".join(f"{w}\n" for w in ["the", "of"]))
    fresh = Trainer(tiny_config(tmp_path, run_dir=str(tmp_path / "pub"), options=str(published / "options.json"),
                                init_weights=str(published / "lm_weights.hdf5"), vocab=str(vocab),
                                max_updates=2, heldout_files=None))
    before = fresh.model.to_bilm()(ids).layers[-1]
    assert torch.allclose(before, load_bilm(published / "options.json", published / "lm_weights.hdf5")(ids).layers[-1])
    fresh.run()
    assert fresh.step == 2


def test_options_that_disagree_with_the_checkpoint_are_refused(tmp_path):
    options = tmp_path / "options.json"
    src = json.loads((SHARED / "model" / "options.json").read_text())
    src["char_cnn"]["n_characters"] = 262
    options.write_text(json.dumps(src))
    Trainer(tiny_config(tmp_path, options=str(options), max_updates=1, heldout_files=None)).run()
    src["lstm"]["dim"] = 32
    options.write_text(json.dumps(src))
    with pytest.raises(TrainError, match="disagree with the checkpoint.*lstm_dim"):
        Trainer.resume(tmp_path / "run")
    with pytest.raises(TrainError, match="cannot change.*batch_size"):
        Trainer.resume(tmp_path / "run", ["batch_size=4"])


def test_config_file_overrides_and_bad_settings(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"batch_size": 3, "bilm": {"lstm_dim": 16}}))
    config = TrainConfig.from_json(path).with_overrides(["lr=0.5", "bilm.projection_dim=8", "train=x.txt"])
    assert (config.batch_size, config.lr, config.train_files) == (3, 0.5, "x.txt")  # the old name is read
    assert config.bilm_config().lstm_dim == 16 and config.bilm_config().projection_dim == 8
    assert config.bilm_config().dropout == 0.1  # the recipe's default
    defaults = TrainConfig()
    assert (defaults.optimizer, defaults.lr, defaults.initial_accumulator_value, defaults.clip_norm,
            defaults.unroll_steps, defaults.n_negative_samples) == ("adagrad", 0.2, 1.0, 10.0, 20, 8192)
    with pytest.raises(TrainError, match="unknown setting.*'lrate'"):
        config.with_overrides(["lrate=1"])
    with pytest.raises(TrainError, match=r"restart_prob is 1.5, expected a probability in \[0, 1\)"):
        Trainer(tiny_config(tmp_path, restart_prob=1.5))
    with pytest.raises(TrainError, match=r"init is 'glorot', expected \"bilm-tf\" or \"kim\""):
        Trainer(tiny_config(tmp_path, init="glorot", run_dir=str(tmp_path / "bad-init")))
    assert not (tmp_path / "bad-init").exists()  # refused before anything was written
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="no sentences"):
        Trainer(tiny_config(tmp_path, train_files=str(empty), vocab=None))


def test_kim_initialisation_starts_every_gate_as_theirs(tmp_path):
    """init "kim": every parameter uniform in [-0.05, 0.05] (Kim et al.), the highway carry gates
    with their -2, the forget gates without TF's +1, the padding characters zero; and it learns."""
    from torch_elmo.chars import PAD_CHAR

    trainer = Trainer(tiny_config(tmp_path, init="kim", max_updates=200, bilm={**TINY, "token_projection": False},
                                  n_negative_samples=0))
    model = trainer.model
    emb = model.token_encoder.char_embedding.weight.detach()
    assert emb[[0, PAD_CHAR + 1]].eq(0).all() and 0.02 < float(emb.abs().mean()) < 0.03
    dim = model.token_encoder.highways[0].linear.in_features
    carry_bias = model.token_encoder.highways[0].linear.bias.detach()[dim:]
    assert float((carry_bias + 2).abs().max()) <= 0.05
    for layer in model.lstm.layers:
        H = layer.hidden_dim
        bias = layer.bias.detach()
        assert float((bias + layer.forget_bias).abs().max()) <= 0.05  # what the gates see
        assert float(bias[:, 2 * H : 3 * H].mean()) < -0.9
        assert all(float(w.detach().abs().max()) <= 0.05 for w in (layer.w_input, layer.w_state))
    assert float(model.head.weight.detach().abs().max()) <= 0.05
    start = evaluate(model, [str(TRAIN / "data.txt")], trainer.vocab, 2, 10)["ppl"]
    assert trainer.run()["ppl"] < min(20, start / 1.5)  # the fixture test's bar


def test_kim_layout_without_token_projection_trains_but_is_not_exported(tmp_path):
    """token_projection false: the char CNN's features enter the first LSTM layer as they are."""
    from torch_elmo.model import BiLM

    trainer = Trainer(tiny_config(tmp_path, bilm={**TINY, "token_projection": False}, max_updates=20,
                                  n_negative_samples=0))
    n_filters = sum(n for _, n in TINY["filters"])
    assert trainer.model.lstm.layers[0].w_input.shape[1] == n_filters  # (D, 128, 4H), not (D, 8, 4H)
    assert trainer.model.lstm.layers[1].w_input.shape[1] == TINY["projection_dim"]
    start = evaluate(trainer.model, [str(TRAIN / "data.txt")], trainer.vocab, 2, 10)["ppl"]
    result = trainer.run()
    assert result["ppl"] < start
    with pytest.raises(ValueError, match="only biLMs with token_projection can be exported"):
        trainer.export(tmp_path / "export")
    with pytest.raises(ValueError, match="set token_projection to true"):
        BiLM(trainer.bilm_config)


def test_restarting_rows_start_from_a_zero_state(tmp_path):
    """A row flagged `restart` reads its batch as from a zero state; the others carry theirs."""
    trainer = Trainer(tiny_config(tmp_path, restart_prob=0.5))
    model = trainer.model.eval()
    batches = trainer.data.next_batch()
    D, (B, T), P = len(batches), batches[0].targets.shape, model.config.projection_dim
    torch.manual_seed(0)
    carried_states = [(torch.randn_like(h), torch.randn_like(c)) for h, c in model.zero_states(B)]
    for b in batches:
        b.restart = torch.tensor([True, False])
    with torch.no_grad():
        mixed = model.hidden(batches, carried_states)[0].view(D, T, B, P)
        for b in batches:
            b.restart = None
        fresh = model.hidden(batches, None)[0].view(D, T, B, P)
        carried = model.hidden(batches, carried_states)[0].view(D, T, B, P)
    assert not torch.allclose(fresh[:, :, 0], carried[:, :, 0])
    torch.testing.assert_close(mixed[:, :, 0], fresh[:, :, 0])
    torch.testing.assert_close(mixed[:, :, 1], carried[:, :, 1])


def test_word_input_and_forward_only_models_train(tmp_path):
    word = Trainer(tiny_config(tmp_path, word_input=True, max_updates=30, heldout_files=None, n_negative_samples=0))
    start = evaluate(word.model, [str(TRAIN / "data.txt")], word.vocab, 2, 10)["ppl"]
    word.run()
    assert evaluate(word.model, [str(TRAIN / "data.txt")], word.vocab, 2, 10)["ppl"] < start
    fwd = Trainer(tiny_config(tmp_path, run_dir=str(tmp_path / "fwd"), n_directions=1, max_updates=3))
    result = fwd.run()
    assert "backward_ppl" not in result and result["ppl"] == result["forward_ppl"]
    # neither fits the published layout: a clear refusal, and no half-usable files left behind
    for trainer, reason in ((word, "character-input"), (fwd, "bidirectional")):
        with pytest.raises(ValueError, match=f"only {reason} .* kept in its training checkpoint"):
            trainer.export(tmp_path / "export")
        assert not (tmp_path / "export").exists()


def test_command_line(tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    assert main(["vocab", str(TRAIN / "data.txt"), "--out", str(vocab), "--min-count", "2"]) == 0
    ours, original = vocab.read_text().splitlines(), (TRAIN / "vocab.txt").read_text().splitlines()
    assert ours[:5] == original[:5] and sorted(ours) == sorted(original)  # ties may be ordered differently
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"bilm": TINY, "batch_size": 2, "unroll_steps": 10, "progress": False}))
    run = tmp_path / "run"
    args = ["train", "--config", str(cfg), "--set", f"train={TRAIN / 'data.txt'}", "--set", f"run_dir={run}",
            "--set", "max_updates=2", "--set", "n_negative_samples=4"]
    assert main(args) == 0
    assert main(["resume", str(run), "--set", "max_updates=3"]) == 0
    assert main(["evaluate", str(run), str(TRAIN / "data.txt")]) == 0
    assert "forward_ppl" in capsys.readouterr().out.splitlines()[-1]
    assert main(["export", str(run), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "weights.hdf5").is_file()
    assert main(["resume", str(tmp_path / "nothing")]) == 2


def test_lr_decay_on_plateau_and_curves(tmp_path):
    """Kim et al.'s recipe: SGD, lr halved when held-out perplexity does not improve enough."""
    trainer = Trainer(tiny_config(tmp_path, optimizer="sgd", lr=1.0, lr_decay=0.5, lr_decay_threshold=1e9,
                                  eval_every=2, max_updates=6, n_negative_samples=0))
    trainer.run()
    # three evaluations: the first sets the reference, the next two are not 1e9 better
    assert trainer.optimizer.param_groups[0]["lr"] == 0.25
    resumed = Trainer.resume(tmp_path / "run")
    assert resumed.optimizer.param_groups[0]["lr"] == 0.25 and resumed.last_heldout == trainer.last_heldout
    pytest.importorskip("matplotlib")
    assert main(["plot", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "perplexity.png").read_bytes()[:4] == b"\x89PNG"


def test_lr_decay_compares_with_the_previous_evaluation(tmp_path, monkeypatch):
    """Kim et al. halve lr when validation perplexity fell by less than the threshold since the
    previous epoch's (not since the best): 100, 105 (halve), 103.5 (fell 1.5: keep), 103 (halve)."""
    trainer = Trainer(tiny_config(tmp_path, optimizer="sgd", lr=1.0, lr_decay=0.5, lr_decay_threshold=1.0,
                                  n_negative_samples=0))
    perplexities = iter([100.0, 105.0, 103.5, 103.0])
    monkeypatch.setattr(trainer, "evaluate", lambda: {"ppl": next(perplexities)})
    lrs = [trainer._evaluate_and_adapt()["lr"] for _ in range(4)]
    assert lrs == [1.0, 0.5, 0.5, 0.25]


@pytest.mark.parametrize("optimizer", ["adagrad", "sgd"])
def test_fused_cpu_update_equals_the_plain_one(tmp_path, optimizer):
    """On CPU the optimizer runs its fused update: the same parameters after a few updates as
    PyTorch's per-op update from the same gradients."""
    trainer = Trainer(tiny_config(tmp_path, optimizer=optimizer, max_updates=3, heldout_files=None))
    assert trainer.optimizer.defaults["fused"] is True
    cls = type(trainer.optimizer)
    plain_params = [torch.nn.Parameter(p.detach().clone()) for p in trainer.model.parameters()]
    plain = cls(plain_params, **{**trainer.optimizer.defaults, "fused": None})
    for _ in range(3):
        trainer.train_step()
        for p, q in zip(trainer.model.parameters(), plain_params):
            q.grad = p.grad.clone()
        plain.step()
    for p, q in zip(trainer.model.parameters(), plain_params):
        torch.testing.assert_close(p.detach(), q.detach(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_zero_padding_char_stays_zero(tmp_path, optimizer):
    """zero_padding_char (Kim et al.): the padding character's embedding is zero and stays so
    while the other characters learn; without it (bilm-tf) it learns too."""
    from torch_elmo.chars import PAD_CHAR

    rows = {}
    for zero in (True, False):
        trainer = Trainer(tiny_config(tmp_path / str(zero), optimizer=optimizer, lr=0.5, max_updates=4, heldout_files=None,
                                      init="kim", zero_padding_char=zero))
        weight = trainer.model.token_encoder.char_embedding.weight
        before = weight.detach().clone()
        trainer.run()
        rows[zero] = (weight.detach()[PAD_CHAR + 1], before[PAD_CHAR + 1])
        assert not torch.equal(weight.detach()[ord("a") + 1], before[ord("a") + 1])
    assert (rows[True][0] == 0).all() and (rows[True][1] == 0).all()
    assert not (rows[False][0] == 0).all()


def test_zero_padding_char_with_word_input_is_refused(tmp_path):
    with pytest.raises(TrainError, match="zero_padding_char is True, expected false with word_input"):
        Trainer(tiny_config(tmp_path, word_input=True, zero_padding_char=True))
