"""One tree's trainer, timed for bench/train.py --old-commit: run with that tree's src/ first on
PYTHONPATH, it builds a Trainer on the configuration given as JSON, warms up, then answers

    pass      `--steps` whole updates -> {"seconds", "tokens"} (both directions' target tokens)
    exit      peak RSS -> {"peak_rss_mb"}, and leave

one JSON line each (bench/workers.py's protocol). Fields the tree's TrainConfig does not have are
left out and named in the ready line, so that an old tree runs the same configuration as far as
it can express it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time

import torch

from torch_elmo.config import TrainConfig
from torch_elmo.trainer import Trainer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("config", help="TrainConfig's fields as a JSON object")
    p.add_argument("text", help="the training text")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    wanted = json.loads(args.config)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as run_dir:
        config = TrainConfig(train_files=args.text, run_dir=run_dir, max_updates=10**9, progress=False,
                             checkpoint_every=10**9, **{k: v for k, v in wanted.items() if k in known})
        trainer = Trainer(config)
        directions = trainer.model.config.n_directions
        for _ in range(args.warmup):
            trainer.train_step()
        print(json.dumps({"ready": True, "left_out": sorted(set(wanted) - known)}), flush=True)
        for line in sys.stdin:
            command = line.split()
            if command[0] == "pass":
                tokens, t = trainer.tokens, time.perf_counter()
                for _ in range(args.steps):
                    trainer.train_step()
                reply = {"seconds": time.perf_counter() - t, "tokens": (trainer.tokens - tokens) * directions}
            elif command[0] == "exit":
                print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
                return
            else:
                raise SystemExit(f"unknown command {line.strip()!r}")
            print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
