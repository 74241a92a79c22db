"""What ELMo is for, in one command: the same word in different contexts gets different vectors.

    make demo                                   # the bundled default model
    .venv/bin/python -m recipes.demo [--options OPTIONS.json --weights WEIGHTS.hdf5] [--out runs/demo]

Writes a small sample text (sentences using "bank" of a river and of money, "play" on a stage and
in a game, and sentences around them), runs `elmo embed` on it, then for each occurrence of the
ambiguous words prints its nearest neighbours (cosine similarity) among all the sample's tokens,
counts how often the nearest other occurrence of the same word has the same sense, and draws
every occurrence projected to two dimensions (PCA) to OUT/senses.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# (sense, sentence): the sense tags the ambiguous word's occurrence; "-" for context sentences
SAMPLE = [
    ("river", "We sat on the bank of the river and watched the water go by ."),
    ("river", "The boat drifted toward the muddy bank where the reeds grew thick ."),
    ("river", "He swam across the stream and climbed up the steep bank ."),
    ("river", "Willows lined the bank , and their branches touched the water ."),
    ("river", "The flood carried away half of the west bank of the river ."),
    ("river", "She walked along the grassy bank until she reached the bridge ."),
    ("money", "I went to the bank to deposit my wages ."),
    ("money", "The bank lent him the money to buy a house ."),
    ("money", "She opened an account at the bank on Main Street ."),
    ("money", "The bank raised its interest rate on every loan ."),
    ("money", "Robbers broke into the bank and stole the gold ."),
    ("money", "He asked the bank for credit , but the manager refused ."),
    ("stage", "The actors rehearsed the play for three weeks before it opened ."),
    ("stage", "We saw a play by Shakespeare at the theatre last night ."),
    ("stage", "The audience applauded when the play ended ."),
    ("game", "The children went outside to play in the garden ."),
    ("game", "Boys like to play ball in the street after school ."),
    ("game", "Let the dogs play on the lawn while we talk ."),
    ("-", "The river was wide and the current was strong near the shore ."),
    ("-", "The merchant counted his money and paid the debt ."),
    ("-", "They sang and danced on the green until evening ."),
]
WORDS = ("bank", "play")
COLOURS = {"river": "tab:blue", "money": "tab:orange", "stage": "tab:green", "game": "tab:red"}


class DemoError(RuntimeError):
    pass


def write_sample(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(sentence + "\n" for _, sentence in SAMPLE), encoding="utf-8")


def embed(sample: Path, out: Path, options: str | None, weights: str | None) -> list[np.ndarray]:
    """Runs `elmo embed` (all layers) and reads its HDF5 file: one (3, n_tokens, dim) array a line."""
    import h5py

    elmo = Path(sys.executable).with_name("elmo")
    command = [str(elmo) if elmo.exists() else "elmo", "embed", str(sample), str(out), "--quiet"]
    if options or weights:
        command += ["--options", str(options), "--weights", str(weights)]
    print("$ " + " ".join(command), flush=True)
    try:
        result = subprocess.run(command)
    except FileNotFoundError:
        raise DemoError("the `elmo` command is not installed: run `make install` (or pip install -e .)") from None
    if result.returncode != 0:
        raise DemoError(f"`elmo embed` failed (exit {result.returncode}); see its message above")
    with h5py.File(out, "r") as f:
        return [f[str(i)][...] for i in range(len(SAMPLE))]


def occurrences(arrays: list[np.ndarray], layer: str) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """Every token's vector (N, dim) in the chosen layer, and (sentence, position, token) of each."""
    vectors, where = [], []
    for i, ((_, sentence), array) in enumerate(zip(SAMPLE, arrays)):
        chosen = array.mean(axis=0) if layer == "mean" else array[int(layer)]
        for j, token in enumerate(sentence.split()):
            vectors.append(chosen[j])
            where.append((i, j, token))
    return np.stack(vectors).astype(np.float64), where


def context(where: tuple[int, int, str], width: int = 3) -> str:
    i, j, _ = where
    tokens = SAMPLE[i][1].split()
    left, right = " ".join(tokens[max(0, j - width) : j]), " ".join(tokens[j + 1 : j + 1 + width])
    return f"{'... ' if j > width else ''}{left} [{tokens[j]}] {right}{' ...' if j + 1 + width < len(tokens) else ''}"


def neighbours(vectors: np.ndarray, where: list, k: int) -> dict:
    """Prints each ambiguous occurrence's k nearest tokens; returns the same-sense counts per word."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    scores = {}
    for word in WORDS:
        hits = [n for n, (_, _, t) in enumerate(where) if t.lower() == word]
        same = 0
        print(f"\n=== {word!r}: {len(hits)} occurrences; nearest tokens of the sample (cosine) ===")
        for n in hits:
            sense = SAMPLE[where[n][0]][0]
            order = [m for m in np.argsort(-similarity[n]) if m != n]
            print(f"\n[{sense}] {context(where[n], width=5)}")
            for m in order[:k]:
                tag = f" ({SAMPLE[where[m][0]][0]})" if where[m][2].lower() == word else ""
                print(f"    {similarity[n, m]:.3f}  {where[m][2] + tag:16}  {context(where[m])}")
            nearest_same_word = next(m for m in order if where[m][2].lower() == word)
            same += SAMPLE[where[nearest_same_word][0]][0] == sense
        scores[word] = (same, len(hits))
    print()
    for word, (same, total) in scores.items():
        print(f"{word!r}: for {same} of {total} occurrences the nearest other {word!r} has the same sense "
              f"(the word's characters alone would give every occurrence the same vector)")
    return scores


def plot(vectors: np.ndarray, where: list, png: Path, title: str) -> Path:
    """Each ambiguous word's occurrences projected on their first two principal components (numpy
    SVD of the centred vectors), one panel per word, coloured by sense."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DemoError("the plot needs matplotlib: pip install -e '.[demo]'") from None
    fig, axes = plt.subplots(1, len(WORDS), figsize=(7 * len(WORDS), 6), squeeze=False)
    for ax, word in zip(axes[0], WORDS):
        rows = [n for n, (_, _, t) in enumerate(where) if t.lower() == word]
        x = vectors[rows] - vectors[rows].mean(axis=0)
        _, s, vt = np.linalg.svd(x, full_matrices=False)
        xy = x @ vt[:2].T
        explained = (s[:2] ** 2) / max((s**2).sum(), 1e-12)
        senses = [SAMPLE[where[n][0]][0] for n in rows]
        for sense in dict.fromkeys(senses):
            mine = [r for r, t in enumerate(senses) if t == sense]
            ax.scatter(xy[mine, 0], xy[mine, 1], c=COLOURS.get(sense), s=70, label=f"{word} ({sense})")
        for r, n in enumerate(rows):
            ax.annotate(context(where[n], width=2), xy[r], fontsize=7, alpha=0.8, xytext=(4, 3),
                        textcoords="offset points")
        ax.set_xlabel(f"principal component 1 ({explained[0] * 100:.0f}% of the variance)")
        ax.set_ylabel(f"principal component 2 ({explained[1] * 100:.0f}%)")
        ax.set_title(f"{word!r}: {len(rows)} occurrences")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--options", help="a model's options.json (default: the bundled model)")
    parser.add_argument("--weights", help="a model's weights.hdf5 (default: the bundled model)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "demo"), help="folder for the sample, vectors, plot")
    parser.add_argument("--layer", default="2", choices=["0", "1", "2", "mean"],
                        help="which biLM layer's vectors to compare: 2 the top LSTM layer (the paper's best "
                             "for word sense), 1 the first, 0 the context-free token layer, mean all three")
    parser.add_argument("--neighbours", type=int, default=5)
    args = parser.parse_args(argv)
    if (args.options is None) != (args.weights is None):
        parser.error("give both --options and --weights, or neither for the bundled model")
    out = Path(args.out)
    try:
        sample = out / "sample.txt"
        write_sample(sample)
        arrays = embed(sample, out / "sample.hdf5", args.options, args.weights)
        vectors, where = occurrences(arrays, args.layer)
        scores = neighbours(vectors, where, args.neighbours)
        model = "the bundled default model" if args.options is None else str(args.options)
        layer = {"mean": "mean of the 3 layers", "0": "layer 0 (token)"}.get(args.layer, f"LSTM layer {args.layer}")
        png = plot(vectors, where, out / "senses.png", f"ELMo vectors of ambiguous words ({layer}; {model})")
        (out / "scores.json").write_text(json.dumps({w: {"same_sense": s, "occurrences": n}
                                                     for w, (s, n) in scores.items()}, indent=2) + "\n")
        print(f"plot: {png}")
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
