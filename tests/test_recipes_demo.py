"""`make demo`'s script on the fixture model: `elmo embed`, neighbours, the plot."""

from __future__ import annotations

import json

import pytest

from recipes import demo

from .conftest import MODEL


def test_demo_embeds_the_sample_and_draws_the_senses(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code = demo.main(["--options", str(MODEL / "options.json"), "--weights", str(MODEL / "lm_weights.hdf5"),
                      "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (tmp_path / "senses.png").stat().st_size > 10_000
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["bank"]["occurrences"] == 12 and scores["play"]["occurrences"] == 6
    heads = [line.split("]")[0] for line in out.splitlines() if line.startswith("[")]
    assert heads.count("[river") == 6 and heads.count("[money") == 6 and heads.count("[game") == 3
    assert "elmo embed" in out and "nearest other 'bank' has the same sense" in out


def test_demo_without_a_built_default_model_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(demo.sys, "executable", str(tmp_path / "python"))  # no `elmo` beside it either
    assert demo.main(["--out", str(tmp_path)]) == 2
    assert "`elmo` command is not installed" in capsys.readouterr().err
