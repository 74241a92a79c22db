"""Embedding speed, ours against AllenNLP 2.10.1 and the original bilm-tf, side by side in one run.

The job: embed a workload of real English sentences (Brown corpus, held-out documents), all three
layers, stateless, float32, on `--threads` threads, with the original architecture
(2x4096_512_2048cnn_2xhighway) and random weights written in the published HDF5 layout. Each
implementation runs in its own interpreter (AllenNLP in the environment that
../shared/peers/setup_allennlp.sh makes, bilm-tf in setup_bilm_tf.sh's, both where they exist),
gets a full warm-up pass, then passes alternate.
Prints tokens/s of each, the ratio, peak RSS of each, and our achieved model FLOP/s as a fraction
of this machine's float32 matmul peak measured in the same run.

    .venv/bin/python bench/embed.py                       # 2,000 sentences, 3 passes each
    .venv/bin/python bench/embed.py --sentences 300 --passes 1 --no-allennlp   # quick look at ours
    .venv/bin/python bench/embed.py --bf16               # and ours in bfloat16, with its deviation
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers import Worker  # noqa: E402

from recipes import brown  # noqa: E402
from torch_elmo import BiLM, BiLMConfig, read_options, save_bilm  # noqa: E402

CACHE = ROOT / "data" / "bench"
ALLENNLP_PYTHON = ROOT / ".peers" / "venv-allennlp" / "bin" / "python"
BILM_TF_PYTHON = ROOT / ".peers" / "venv-bilm-tf" / "bin" / "python"


def original_model(seed: int = 0) -> tuple[Path, Path]:
    """The original architecture with random weights, in the published layout (made once)."""
    options, weights = CACHE / "original" / "options.json", CACHE / "original" / "weights.hdf5"
    if not weights.exists():
        torch.manual_seed(seed)
        save_bilm(BiLM(BiLMConfig()), options, weights)
    return options, weights


def workload(n_sentences: int) -> Path:
    path = CACHE / f"brown-heldout-{n_sentences}.txt"
    if not path.exists():
        sentences = list(brown.sentences(brown.fetch(ROOT / "data" / "brown"), held_out=True))[:n_sentences]
        if len(sentences) < n_sentences:
            raise SystemExit(f"the Brown held-out documents have only {len(sentences)} sentences")
        path.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    return path


def model_flops(config: BiLMConfig, sentences: list[list[str]]) -> tuple[float, float]:
    """(FLOPs per token position, FLOPs the job needs): matmul and convolution multiply-adds x 2.

    The LSTMs need to run at every word only: stateless, a direction's state after its opening
    mark (<S> forward, </S> backward) is the same for every sentence, and no word's vector needs
    its step at the closing mark (AllenNLP computes all n + 2 positions of a sentence). The char
    CNN needs to run once per distinct token of the workload (plus <S> and </S>).
    """
    E, F, P, H = config.char_embed_dim, config.n_filters, config.projection_dim, config.lstm_dim
    cnn = sum(2 * (config.max_chars - w + 1) * w * E * n for w, n in config.filters)
    cnn += config.n_highway * 2 * F * 2 * F + (2 * F * P if F != P else 0)
    lstm = config.n_directions * config.n_layers * (2 * (P + P) * 4 * H + (2 * H * P if P != H else 0))
    positions = sum(len(s) for s in sentences)
    distinct = len({t for s in sentences for t in s}) + 2
    return cnn + lstm, lstm * positions + cnn * distinct


def worker(python: Path, impl: str, options: Path, weights: Path, work: Path, batch_size: int, threads: int,
           extra: tuple[str, ...] = (), name: str | None = None) -> Worker:
    script = ["embed_worker_bilm_tf.py"] if impl == "bilm-tf" else ["embed_worker.py", impl]
    return Worker([python, ROOT / "bench" / script[0], *script[1:], options, weights, work,
                   "--batch-size", batch_size, "--threads", threads, *extra], name or impl, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--passes", type=int, default=3, help="timed passes of each, after a warm-up pass")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256, help="ours")
    parser.add_argument("--allennlp-batch-size", type=int, default=64)
    parser.add_argument("--allennlp-input-order", action="store_true",
                        help="AllenNLP batches in input order, as its own tools do (default: grouped by length, "
                             "its fastest)")
    parser.add_argument("--no-allennlp", action="store_true", help="leave AllenNLP out")
    parser.add_argument("--no-bilm-tf", action="store_true", help="leave bilm-tf out")
    parser.add_argument("--bilm-tf-batch-size", type=int, default=64)
    parser.add_argument("--ablate", action="store_true",
                        help="also time ours without the first layer's gates once per distinct token")
    parser.add_argument("--bf16", action="store_true",
                        help="also time ours in bfloat16 (not exact) and print its deviation from float32")
    args = parser.parse_args()

    options, weights = original_model()
    work = workload(args.sentences)
    sentences = [line.split() for line in work.read_text(encoding="utf-8").splitlines()]
    per_token, needed = model_flops(read_options(options), sentences)
    n_tokens = sum(map(len, sentences))
    print(f"workload: {len(sentences)} Brown held-out sentences, {n_tokens} tokens, "
          f"{len({t for s in sentences for t in s})} distinct; model: {per_token / 1e6:.0f} MFLOP per token "
          f"position, the job needs {needed / 1e12:.2f} TFLOP; {args.threads} threads")

    workers = [worker(Path(sys.executable), "ours", options, weights, work, args.batch_size, args.threads)]
    if not args.no_allennlp:
        if not ALLENNLP_PYTHON.exists():
            raise SystemExit(f"{ALLENNLP_PYTHON} missing: run bash ../shared/peers/setup_allennlp.sh .peers/venv-allennlp")
        extra = () if args.allennlp_input_order else ("--by-length",)
        workers.append(worker(ALLENNLP_PYTHON, "allennlp", options, weights, work, args.allennlp_batch_size,
                              args.threads, extra))
        a, b = (w.ask("check 8")["arrays"] for w in workers)
        diff = max(float(np.abs(np.array(x) - np.array(y)).max()) for x, y in zip(a, b))
        print(f"max |ours - allennlp| over 8 sentences, all layers: {diff:.2e} (float32, random weights)")
    if not args.no_bilm_tf:
        if not BILM_TF_PYTHON.exists():
            raise SystemExit(f"{BILM_TF_PYTHON} missing: run bash ../shared/peers/setup_bilm_tf.sh .peers/venv-bilm-tf "
                             "(or pass --no-bilm-tf)")
        workers.append(worker(BILM_TF_PYTHON, "bilm-tf", options, weights, work, args.bilm_tf_batch_size,
                              args.threads, ("--by-length",)))
        a, b = (w.ask("check 8")["arrays"] for w in (workers[0], workers[-1]))
        diff = max(float(np.abs(np.array(x) - np.array(y)).max()) for x, y in zip(a, b))
        print(f"max |ours - bilm-tf| over 8 sentences, all layers: {diff:.2e} (float32, random weights)")

    if args.ablate:
        workers.append(worker(Path(sys.executable), "ours", options, weights, work, args.batch_size, args.threads,
                              ("--no-distinct-gates",), name="ours-every-position"))
    if args.bf16:
        workers.append(worker(Path(sys.executable), "ours", options, weights, work, args.batch_size, args.threads,
                              ("--dtype", "bfloat16"), name="ours-bf16"))
        a, b = (np.concatenate([np.array(x) for x in w.ask("check 30")["arrays"]], axis=1)
                for w in (workers[0], workers[-1]))
        print(f"bf16 - float32 over 30 sentences, all layers: max |d| {np.abs(a - b).max():.2e}, "
              f"mean |d| {np.abs(a - b).mean():.2e} (values: mean |x| {np.abs(a).mean():.2e})")

    peak = workers[0].ask("peak")["flops"]
    print(f"float32 matmul peak (2048x2048, {args.threads} threads): {peak / 1e9:.0f} GFLOP/s")
    for w in workers:  # warm-up: a whole pass each
        w.ask("pass")
    times: dict[str, list[float]] = {w.impl: [] for w in workers}
    for p in range(args.passes):
        for w in workers:
            r = w.ask("pass")
            assert r["tokens"] == n_tokens
            times[w.impl].append(r["seconds"])
            print(f"  pass {p + 1} {w.impl:9s} {r['seconds']:7.1f} s  {n_tokens / r['seconds']:7.0f} tokens/s", flush=True)
    rss = {w.impl: w.ask("exit")["peak_rss_mb"] for w in workers}

    speed = {impl: n_tokens / statistics.median(t) for impl, t in times.items()}
    print(f"\nours:     {speed['ours']:7.0f} tokens/s (median), peak RSS {rss['ours']:.0f} MB, batch {args.batch_size}")
    achieved = needed / statistics.median(times["ours"])
    print(f"          {achieved / 1e9:.0f} GFLOP/s of model work = {achieved / peak:.0%} of the measured matmul peak")
    if "ours-every-position" in speed:
        print(f"ours, the first layer's gates at every position: {speed['ours-every-position']:6.0f} tokens/s; "
              f"once per distinct token is {speed['ours'] / speed['ours-every-position']:.2f}x that")
    if "ours-bf16" in speed:
        print(f"ours bf16: {speed['ours-bf16']:6.0f} tokens/s (median), peak RSS {rss['ours-bf16']:.0f} MB: "
              f"{speed['ours-bf16'] / speed['ours']:.2f}x float32")
    if "allennlp" in speed:
        order = "input order" if args.allennlp_input_order else "grouped by length"
        print(f"allennlp: {speed['allennlp']:7.0f} tokens/s (median), peak RSS {rss['allennlp']:.0f} MB, "
              f"batch {args.allennlp_batch_size}, {order}")
        print(f"ratio ours / allennlp: {speed['ours'] / speed['allennlp']:.2f}x")
    if "bilm-tf" in speed:
        print(f"bilm-tf:  {speed['bilm-tf']:7.0f} tokens/s (median), peak RSS {rss['bilm-tf']:.0f} MB, "
              f"batch {args.bilm_tf_batch_size}, grouped by length")
        print(f"ratio ours / bilm-tf: {speed['ours'] / speed['bilm-tf']:.2f}x")


if __name__ == "__main__":
    main()
