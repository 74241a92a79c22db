"""bench/downstream.py in small: every run of the benchmark's table on toy tasks with the fixture
model, the table and the plots written (the benchmark itself fetches real data and takes an hour)."""

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.downstream import Task, embed_all, plot, prepare, run_one, runs_for, summarise, write_card_section  # noqa: E402
from examples.data import Labelled, Tagged  # noqa: E402
from torch_elmo import ElmoEmbedder  # noqa: E402

WORDS = "the a cat dog sat ran on mat quickly slowly".split()
TAGS = dict(zip(WORDS, "DT DT NN NN VBD VBD IN NN RB RB".split()))


def _sentences(kind, n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        tokens = [WORDS[i] for i in rng.integers(0, len(WORDS), rng.integers(2, 7))]
        out.append(Tagged(tokens, [TAGS[t] for t in tokens], k + 1) if kind == "tag"
                   else Labelled(tokens, "pos" if "cat" in tokens else "neg", k + 1))
    return out


@pytest.mark.parametrize("kind", ["tag", "classify"])
def test_every_run_of_the_table(tmp_path, options_file, weight_file, kind):
    task = Task(f"toy {kind}", kind, {split: _sentences(kind, n, seed) for split, n, seed in
                                      (("train", 24, 0), ("dev", 8, 1), ("test", 8, 2))})
    prepare(task)
    files = (str(options_file), str(weight_file))
    embed_all(task, ElmoEmbedder(*files), tmp_path)
    assert (tmp_path / f"{task.name}-train.npz").is_file()
    standard = np.concatenate([a.astype(np.float32) for a in task.standardised_layers()["train"]], axis=1)
    assert np.abs(standard.mean(axis=1)).max() < 1e-2 and np.abs(standard.std(axis=1) - 1).max() < 1e-2
    args = argparse.Namespace(epochs=1, patience=1, lr=3e-3, batch_size=8, mix_l2=0.001, hidden=4,
                              finetune_train=8, finetune_dev=4, finetune_epochs=1,
                              finetune_bilm_lr=3e-4)
    results = []
    for run in runs_for(kind):
        result = run_one(task, run, 0, args, files)
        assert 0.0 <= result["accuracy"] <= 1.0
        if run.layers == "mix" and run.elmo != "none":
            assert sum(result["layer_weights"]) == pytest.approx(1.0)
        results.append({"task": task.name, "run": run.name, "seed": 0, **result})
    table = summarise(results, [task], {}, {}, args)
    assert all(f"| {run.name} |" in table for run in runs_for(kind))
    plot(results, [task], tmp_path)
    assert (tmp_path / "scores.png").stat().st_size > 0 and (tmp_path / "layer_weights.png").stat().st_size > 0


def test_the_card_gets_one_downstream_section(tmp_path):
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# a model\n\n## Training\n\nfacts\n")
    write_card_section(card, "Command: one\n\n", "| a | b |\n")
    write_card_section(card, "Command: two\n\n", "| c | d |\n")
    text = card.read_text()
    assert text.count("## Downstream") == 1 and "Command: two" in text and "Command: one" not in text
    assert text.startswith("# a model\n\n## Training\n\nfacts\n\n## Downstream")
    card.write_text(text + "\n## Limitations\n\nsome\n")
    write_card_section(card, "Command: three\n\n", "| e |\n")
    text = card.read_text()
    assert "Command: three" in text and "Command: two" not in text and text.endswith("## Limitations\n\nsome\n")
    with pytest.raises(SystemExit, match="no such model card"):
        write_card_section(tmp_path / "missing.md", "", "")


def test_int8_vectors_cannot_be_fine_tuned(capsys):
    from bench.downstream import main

    with pytest.raises(SystemExit):
        main(["--int8", "--groups", "linear,fine-tune", "--report"])
    assert "--groups fine-tune with --int8" in capsys.readouterr().err
