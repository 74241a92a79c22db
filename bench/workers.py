"""What the side-by-side benchmarks share: each implementation runs in its own interpreter (its
own virtual environment), a worker that `serve`s commands on stdin, one JSON line each on stdout;
`Worker` drives one from the benchmark. Imports nothing heavy, so that every environment (torch,
TensorFlow) can run it.

    pass      embed the whole workload once -> {"seconds", "tokens"}, and what the worker counts
    peak      this process's float32 matmul rate -> {"flops"} (workers that can measure it)
    check N   the first N sentences' vectors -> {"arrays"}
    exit      peak RSS -> {"peak_rss_mb"}, and leave
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def serve(embed: Callable[[list], list], sentences: list, *, peak: Callable[[], float] | None = None,
          check: Callable[[int], list] | None = None, counts: Callable[[], dict] | None = None) -> None:
    """Answers the benchmark's commands until `exit`. `check(n)` defaults to embedding the first n;
    `counts()`, where given, adds what the worker counted during a pass to its reply."""
    import numpy as np

    check = check or (lambda n: embed(sentences[:n]))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "pass":
            t = time.perf_counter()
            arrays = embed(sentences)
            seconds = time.perf_counter() - t
            reply = {"seconds": seconds, "tokens": sum(a.shape[1] for a in arrays), **(counts() if counts else {})}
        elif command[0] == "peak" and peak is not None:
            reply = {"flops": peak()}
        elif command[0] == "check":
            reply = {"arrays": [np.asarray(a, dtype=np.float64).tolist() for a in check(int(command[1]))]}
        elif command[0] == "exit":
            print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
            return
        else:
            raise SystemExit(f"unknown command {line.strip()!r}")
        print(json.dumps(reply), flush=True)


class Worker:
    """One worker process: `argv` runs it (its Python and script first), `name` says which in messages."""

    def __init__(self, argv: Sequence[str | Path], name: str, cwd: Path | None = None, env: dict | None = None):
        self.impl = name
        self.process = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, cwd=cwd, env=env)
        self.ready = self.ask(None)  # the worker's first line

    def ask(self, command: str | None) -> dict:
        if command is not None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.impl} worker died (exit code {self.process.wait()})")
        return json.loads(line)


def old_tree(commit: str, root: Path, cache: Path) -> Path:
    """A checkout of `commit` of the repository at `root` (a git worktree under `cache`, made once),
    or `commit` itself where it is a folder holding src/torch_elmo (a copy of an old tree, for a
    machine without the repository's history): its src/ goes first on an old worker's PYTHONPATH."""
    if (Path(commit) / "src" / "torch_elmo").is_dir():
        return Path(commit)
    sha = subprocess.run(["git", "rev-parse", "--short", commit], cwd=root, capture_output=True, text=True,
                         check=True).stdout.strip()
    tree = cache / f"commit-{sha}"
    if not (tree / "src" / "torch_elmo").exists():
        subprocess.run(["git", "worktree", "add", "--detach", "-f", str(tree), sha], cwd=root, check=True,
                       capture_output=True)
    return tree


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
