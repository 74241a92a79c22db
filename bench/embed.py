"""Embedding speed, ours against AllenNLP 2.10.1 and the original bilm-tf, side by side in one run.

The job: embed a workload of real English sentences (Brown corpus, held-out documents), all three
layers, stateless, float32, on `--threads` threads, with the original architecture
(2x4096_512_2048cnn_2xhighway) and random weights written in the published HDF5 layout, or with
`--model bundled` the bundled English model (ours, at this tree and at `--old-commit`). Each
implementation runs in its own interpreter (AllenNLP in the environment that
../shared/peers/setup_allennlp.sh makes, bilm-tf in setup_bilm_tf.sh's, both where they exist),
gets a full warm-up pass, then passes alternate.
Prints tokens/s of each, the ratios, peak RSS of each, and our achieved FLOP/s as a fraction of
this machine's float32 matmul peak measured in the same run, counting (a) the model's nominal
FLOPs a token (every layer at every token) and (b) the work our algorithm does (the LSTMs at the
words, the char CNN once per distinct token, the first layer's input product once per distinct
token of a batch), and the tokens/s that (b) would reach at the peak.

    .venv/bin/python bench/embed.py                       # 2,000 sentences, 3 passes each
    .venv/bin/python bench/embed.py --sentences 300 --passes 1 --no-allennlp   # quick look at ours
    .venv/bin/python bench/embed.py --bf16               # and ours in bfloat16, with its deviation
    .venv/bin/python bench/embed.py --int8               # and ours with int8 products, with its deviation
    .venv/bin/python bench/embed.py --model bundled --old-commit f94f03d   # the bundled model, old vs new
    python bench/embed.py --device cuda --no-allennlp --no-bilm-tf --ablate --tf32 --bf16   # on a GPU

On a GPU (`--device cuda`, ours only: the peers' environments are CPU builds) `--ablate` adds ours
with each batch's arrays copied to the host before the next batch starts (instead of while it
runs), `--tf32` ours with float32 products in TF32, and each variant's share is against the
matmul peak of its own precision.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers import Worker, cpu_model, old_tree  # noqa: E402

from recipes import brown  # noqa: E402
from torch_elmo import BiLM, BiLMConfig, read_options, save_bilm  # noqa: E402
from torch_elmo.default import default_model_files  # noqa: E402
from torch_elmo.kernels import int8_engine  # noqa: E402

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


def vector_extensions() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
    return " ".join(f for f in wanted if f in flags) or "none of AVX2 / AVX-512 / AMX"


def model_flops(config: BiLMConfig, sentences: list[list[str]]) -> dict[str, float]:
    """Matmul and convolution multiply-adds x 2: "per_token", the nominal FLOPs a token (the char
    CNN and every LSTM product at it); "needed", what the job needs; "first_layer_input", the
    first layer's input product a token (ours computes it once per distinct token of a batch).

    The LSTMs need to run at every word only: stateless, a direction's state after its opening
    mark (<S> forward, </S> backward) is the same for every sentence, and no word's vector needs
    its step at the closing mark (AllenNLP computes all n + 2 positions of a sentence). The char
    CNN needs to run once per distinct token of the workload (plus <S> and </S>).
    """
    E, F, P, H = config.char_embed_dim, config.n_filters, config.projection_dim, config.lstm_dim
    D, L = config.n_directions, config.n_layers
    cnn = sum(2 * (config.max_chars - w + 1) * w * E * n for w, n in config.filters)
    cnn += config.n_highway * 2 * F * 2 * F + (2 * F * P if F != P else 0)
    lstm = D * L * (2 * (P + P) * 4 * H + (2 * H * P if P != H else 0))
    positions = sum(len(s) for s in sentences)
    distinct = len({t for s in sentences for t in s}) + 2
    return {"per_token": cnn + lstm, "needed": lstm * positions + cnn * distinct, "first_layer_input": D * 2 * P * 4 * H}


def gpu_model() -> str:
    return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})" if torch.cuda.is_available() else "no GPU"


def worker(python: Path, impl: str, options: Path, weights: Path, work: Path, batch_size: int, threads: int,
           extra: tuple[str, ...] = (), name: str | None = None, src: Path | None = None) -> Worker:
    """`src`: run ours from that source tree instead of this one's."""
    script = ["embed_worker_bilm_tf.py"] if impl == "bilm-tf" else ["embed_worker.py", impl]
    env = {**os.environ, "PYTHONPATH": str(src)} if src is not None else None
    return Worker([python, ROOT / "bench" / script[0], *script[1:], options, weights, work,
                   "--batch-size", batch_size, "--threads", threads, *extra], name or impl, cwd=ROOT, env=env)


def deviation(reference: Worker, other: Worker, n: int = 30) -> str:
    a, b = (np.concatenate([np.array(x) for x in w.ask(f"check {n}")["arrays"]], axis=1) for w in (reference, other))
    return (f"{other.impl} - {reference.impl} over {n} sentences, all layers: max |d| {np.abs(a - b).max():.2e}, "
            f"mean |d| {np.abs(a - b).mean():.2e} (values: mean |x| {np.abs(a).mean():.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["original", "bundled"], default="original",
                        help="the original architecture with random weights (default), or the bundled English model")
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
    parser.add_argument("--old-commit", help="also time ours as it was at this git commit (a worktree under data/bench), "
                             "or in this folder holding an old tree's src/ (with --int8, its int8 too)")
    parser.add_argument("--ablate", action="store_true",
                        help="also time ours without each of its ideas, one at a time: the first layer's gates once "
                             "per distinct token, each step's elementwise part fused")
    parser.add_argument("--bf16", action="store_true",
                        help="also time ours in bfloat16 (not exact) and print its deviation from float32")
    parser.add_argument("--int8", action="store_true",
                        help="also time ours with the LSTM's products in int8 (not exact) and print its deviation")
    parser.add_argument("--device", default="cpu", help="where ours runs: cpu (default) or cuda")
    parser.add_argument("--tf32", action="store_true",
                        help="on a GPU, also time ours with float32 products in TF32 and print its deviation")
    parser.add_argument("--also-batch-size", type=int, help="also time ours with this batch size")
    args = parser.parse_args()
    gpu = args.device != "cpu"

    options, weights = original_model() if args.model == "original" else default_model_files()
    work = workload(args.sentences)
    sentences = [line.split() for line in work.read_text(encoding="utf-8").splitlines()]
    flops = model_flops(read_options(options), sentences)
    n_tokens = sum(map(len, sentences))
    print(f"cpu: {cpu_model()}; vector extensions: {vector_extensions()}; {args.threads} threads; torch {torch.__version__}"
          + (f"; int8 engine {int8_engine()}" if args.int8 else ""))
    if gpu:
        print(f"gpu: {gpu_model()}; ours runs there")
    print(f"workload: {len(sentences)} Brown held-out sentences, {n_tokens} tokens, "
          f"{len({t for s in sentences for t in s})} distinct; model {args.model}: {flops['per_token'] / 1e6:.1f} MFLOP "
          f"per token (nominal), the job needs {flops['needed'] / 1e12:.3f} TFLOP")

    def ours(extra=(), name="ours", src=None, batch_size=args.batch_size):
        return worker(Path(sys.executable), "ours", options, weights, work, batch_size, args.threads,
                      (*extra, "--device", args.device), name, src)

    workers = [ours()]
    old_src = old_tree(args.old_commit, ROOT, CACHE) / "src" if args.old_commit else None
    if args.old_commit:
        workers.append(ours(name=f"ours@{args.old_commit}", src=old_src))
        print(deviation(workers[0], workers[-1], 8))
    if not args.no_allennlp:
        if not ALLENNLP_PYTHON.exists():
            raise SystemExit(f"{ALLENNLP_PYTHON} missing: run bash ../shared/peers/setup_allennlp.sh .peers/venv-allennlp")
        extra = () if args.allennlp_input_order else ("--by-length",)
        workers.append(worker(ALLENNLP_PYTHON, "allennlp", options, weights, work, args.allennlp_batch_size,
                              args.threads, extra))
        print(deviation(workers[0], workers[-1], 8))
    if not args.no_bilm_tf:
        if not BILM_TF_PYTHON.exists():
            raise SystemExit(f"{BILM_TF_PYTHON} missing: run bash ../shared/peers/setup_bilm_tf.sh .peers/venv-bilm-tf "
                             "(or pass --no-bilm-tf)")
        workers.append(worker(BILM_TF_PYTHON, "bilm-tf", options, weights, work, args.bilm_tf_batch_size,
                              args.threads, ("--by-length",)))
        print(deviation(workers[0], workers[-1], 8))
    if args.ablate:
        workers.append(ours(("--no-distinct-gates",), "ours-every-position"))
        if gpu:
            workers.append(ours(("--no-overlap",), "ours-no-overlap"))
        else:
            workers.append(ours(("--unfused",), "ours-unfused"))
    if args.also_batch_size:
        workers.append(ours(name=f"ours-batch-{args.also_batch_size}", batch_size=args.also_batch_size))
    if args.tf32:
        workers.append(ours(("--tf32",), "ours-tf32"))
        print(deviation(workers[0], workers[-1]))
    if args.bf16:
        workers.append(ours(("--dtype", "bfloat16"), "ours-bf16"))
        print(deviation(workers[0], workers[-1]))
    if args.int8:
        workers.append(ours(("--implementation", "int8"), "ours-int8"))
        print(deviation(workers[0], workers[-1]))
        if args.old_commit:  # int8 as it was too
            workers.append(ours(("--implementation", "int8"), f"ours-int8@{args.old_commit}", old_src))

    peaks = {w.impl: w.ask("peak")["flops"] for w in workers if w.impl.startswith("ours") and (gpu or w is workers[0])}
    peak = peaks["ours"]
    where = "8192x8192 on the GPU" if gpu else f"2048x2048, {args.threads} threads, the best of MKL and oneDNN"
    print(f"float32 matmul peak ({where}): {peak / 1e9:.0f} GFLOP/s"
          + "".join(f"; {impl}'s precision {p / 1e9:.0f}" for impl, p in peaks.items() if impl in ("ours-tf32", "ours-bf16")),
          flush=True)
    for w in workers:  # warm-up: a whole pass each
        w.ask("pass")
    times: dict[str, list[float]] = {w.impl: [] for w in workers}
    first_layer_rows, gpu_mb = None, {}
    for p in range(args.passes):
        for w in workers:
            r = w.ask("pass")
            assert r["tokens"] == n_tokens
            times[w.impl].append(r["seconds"])
            if w is workers[0]:
                first_layer_rows = r.get("first_layer_rows")
            if "gpu_peak_mb" in r:
                gpu_mb[w.impl] = r["gpu_peak_mb"]
            print(f"  pass {p + 1} {w.impl:19s} {r['seconds']:7.2f} s  {n_tokens / r['seconds']:7.0f} tokens/s", flush=True)
    rss = {w.impl: w.ask("exit")["peak_rss_mb"] for w in workers}

    speed = {impl: n_tokens / statistics.median(t) for impl, t in times.items()}
    seconds = statistics.median(times["ours"])
    memory = f", GPU memory {gpu_mb['ours']:.0f} MB" if "ours" in gpu_mb else ""
    print(f"\nours:     {speed['ours']:7.0f} tokens/s (median), peak RSS {rss['ours']:.0f} MB{memory}, batch {args.batch_size}")
    nominal = flops["per_token"] * n_tokens
    print(f"          (a) nominal {nominal / seconds / 1e9:.0f} GFLOP/s = {nominal / seconds / peak:.0%} of the matmul peak")
    if first_layer_rows is not None:
        done = flops["needed"] - flops["first_layer_input"] * (n_tokens - first_layer_rows)
        print(f"          (b) the work ours does ({done / 1e12:.3f} TFLOP; the first layer's input product at "
              f"{first_layer_rows} rows for {n_tokens} tokens): {done / seconds / 1e9:.0f} GFLOP/s = "
              f"{done / seconds / peak:.0%} of the peak; at the peak: {n_tokens * peak / done:.0f} tokens/s")
    for impl in speed:
        if impl.startswith("ours") and impl != "ours":
            share = f", {nominal * speed[impl] / n_tokens / peaks[impl]:.0%} of its precision's peak (a)" \
                if impl in peaks else ""
            memory = f", GPU memory {gpu_mb[impl]:.0f} MB" if impl in gpu_mb else ""
            print(f"{impl}: {speed[impl]:7.0f} tokens/s (median), peak RSS {rss[impl]:.0f} MB{memory}{share}; "
                  f"ours is {speed['ours'] / speed[impl]:.2f}x that")
    if f"ours-int8@{args.old_commit}" in speed:
        print(f"ours-int8 is {speed['ours-int8'] / speed[f'ours-int8@{args.old_commit}']:.2f}x ours-int8@{args.old_commit}")
    if "allennlp" in speed:
        order = "input order" if args.allennlp_input_order else "grouped by length"
        print(f"allennlp: {speed['allennlp']:7.0f} tokens/s (median), peak RSS {rss['allennlp']:.0f} MB, "
              f"batch {args.allennlp_batch_size}, {order}")
        print(f"ratio ours / allennlp: {speed['ours'] / speed['allennlp']:.2f}x"
              + (f"; ours-int8 / allennlp: {speed['ours-int8'] / speed['allennlp']:.2f}x" if "ours-int8" in speed else ""))
    if "bilm-tf" in speed:
        print(f"bilm-tf:  {speed['bilm-tf']:7.0f} tokens/s (median), peak RSS {rss['bilm-tf']:.0f} MB, "
              f"batch {args.bilm_tf_batch_size}, grouped by length")
        print(f"ratio ours / bilm-tf: {speed['ours'] / speed['bilm-tf']:.2f}x"
              + (f"; ours-int8 / bilm-tf: {speed['ours-int8'] / speed['bilm-tf']:.2f}x" if "ours-int8" in speed else ""))


if __name__ == "__main__":
    main()
