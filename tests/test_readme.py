"""The README's examples run as written (on the fixture model, under the README's file names)."""

import re
import runpy
import shlex
import shutil
from pathlib import Path

import pytest

from torch_elmo.cli import build_parser, main

from .conftest import MODEL

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(tmp_path, monkeypatch):
    shutil.copy(MODEL / "options.json", tmp_path / "options.json")
    shutil.copy(MODEL / "lm_weights.hdf5", tmp_path / "weights.hdf5")
    shutil.copytree(Path(__file__).parent / "fixtures" / "efml" / "w100", tmp_path / "zhs.model")  # ELMoForManyLangs
    (tmp_path / "tokens.txt").write_text("a few tokens\n\nanother line\n")
    (tmp_path / "sentences.txt").write_text("The bank of the river .\n")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 5
    script = tmp_path / "readme_examples.py"
    script.write_text("\n".join(blocks))
    monkeypatch.chdir(tmp_path)
    first_embed = next(argv for argv in elmo_lines() if argv[:1] == ["embed"] and "--options" in argv)
    assert main([*first_embed, "--quiet"]) == 0  # writes the vectors.hdf5 that the Python example reads
    runpy.run_path(str(script))


def elmo_lines() -> list[list[str]]:
    """The arguments of every `elmo ...` line of the README's bash blocks."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            line = line.split(" | ")[-1].strip()
            if line.startswith("elmo "):
                lines.append(shlex.split(line, comments=True)[1:])
    return lines


def test_readme_elmo_lines_parse():
    """Every `elmo` example names a command and options that exist."""
    assert len(elmo_lines()) >= 10
    parser = build_parser()
    for argv in elmo_lines():
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README: elmo {' '.join(argv)}")
