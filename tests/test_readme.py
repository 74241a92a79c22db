"""The README's examples run as written (on the fixture model, under the README's file names)."""

import re
import runpy
import shutil
from pathlib import Path

from .conftest import MODEL

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(tmp_path, monkeypatch):
    shutil.copy(MODEL / "options.json", tmp_path / "options.json")
    shutil.copy(MODEL / "lm_weights.hdf5", tmp_path / "weights.hdf5")
    (tmp_path / "tokens.txt").write_text("a few tokens\n\nanother line\n")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 5
    script = tmp_path / "readme_examples.py"
    script.write_text("\n".join(blocks))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script))
