"""Training and held-out perplexity curves of a run, from its metrics.jsonl, drawn to a PNG.

Needs matplotlib (`pip install matplotlib`); nothing else in torch_elmo does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import MissingExtra, MissingFile


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise MissingFile(f"{path}: no metrics log; give the run directory of a training run")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_perplexity(run_dir: str | os.PathLike, png: str | os.PathLike | None = None) -> Path:
    """Draws training perplexity and held-out forward / backward / mean perplexity against the
    update number (log scale) to `png` (default: run_dir/perplexity.png); returns the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtra("plotting needs matplotlib: pip install 'torch-elmo[plot]' (or pip install matplotlib)") from None
    records = read_metrics(run_dir)
    train = [r for r in records if r.get("event") == "train"]
    heldout = [r for r in records if r.get("event") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([r["step"] for r in train], [r["ppl"] for r in train], label="training (batch)", alpha=0.6)
    for key, style in (("forward_ppl", "o-"), ("backward_ppl", "s-"), ("ppl", "^-")):
        points = [(r["step"], r[key]) for r in heldout if key in r]
        if points:
            ax.plot(*zip(*points), style, label=f"held-out {key.replace('_ppl', '') if key != 'ppl' else 'mean'}")
    ax.set_xlabel("update")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(Path(run_dir).name)
    out = Path(png) if png is not None else Path(run_dir) / "perplexity.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
