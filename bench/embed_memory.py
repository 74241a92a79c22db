"""Peak memory of `elmo embed` against the length of its input: the same command on files of
N lines, each run in its own process, its peak RSS read from the kernel (wait4).

    .venv/bin/python bench/embed_memory.py [--lines 10000 200000] [--model DIR]

The stream holds a window of 16 batches and the text of every line (for sentence_to_index;
--forget-sentences drops it), so the peak grows with the input only by that text. Defaults to
the bilm-tf fixture model, whose LSTMs are tiny: what is measured is the pipeline, not the model.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from workers import cpu_model

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "bilm-tf" / "model"
WORDS = ("the bank of a river went to deposit money she he and was muddy long time year people way day man "
         "thing woman life child world school state family student group country problem hand part place").split()


def write_lines(path: Path, n: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    tokens = 0
    with open(path, "w") as f:
        for _ in range(n):
            k = rng.randint(1, 30)
            tokens += k
            f.write(" ".join(rng.choice(WORDS) for _ in range(k)) + "\n")
    return tokens


def peak_rss_mib(argv: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one process."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(argv)}: exit status {status}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[10_000, 200_000])
    parser.add_argument("--model", type=Path, default=FIXTURE, help="a folder with options.json and lm_weights.hdf5")
    args = parser.parse_args()
    print(f"{cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    model = ["--options", str(args.model / "options.json"), "--weights", str(args.model / "lm_weights.hdf5")]
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.lines:
            src = Path(tmp) / f"{n}.txt"
            tokens = write_lines(src, n)
            out = Path(tmp) / f"{n}.hdf5"
            rss, seconds = peak_rss_mib([sys.executable, "-m", "torch_elmo", "embed", str(src), str(out), *model,
                                         "--quiet"])
            print(f"{n:>9,} lines, {tokens:>10,} tokens: peak RSS {rss:7.1f} MiB, {seconds:6.1f} s, "
                  f"output {out.stat().st_size / 2**20:8.1f} MiB", flush=True)
            out.unlink()


if __name__ == "__main__":
    main()
