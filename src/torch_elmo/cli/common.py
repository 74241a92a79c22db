"""What the `elmo` commands share: the model files, the device, the process group."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..errors import UsageError
from ..hub import model_files as _model_files

USER_ERROR = 2  # exit status of a user error (as argparse's usage errors)
FAULT = 1  # of a fault of the environment (a full disk, a permission) or a bug
INTERRUPTED = 130  # of Ctrl-C / SIGTERM: 128 + SIGINT, as shells report it


def model_files(options: str | None, weights: str | None, model: str | None = None) -> tuple[str, str]:
    """--model, or --options / --weights (paths or URLs), or the bundled default model when none is given."""
    return _model_files(options, weights, model, names=("--options", "--weights", "--model"))


def device(name: str) -> torch.device:
    """--device NAME, checked against this machine."""
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device; use cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: there are {torch.cuda.device_count()} CUDA GPU(s); use cuda:0 to "
                         f"cuda:{torch.cuda.device_count() - 1}")
    return chosen


def local_device(name: str) -> torch.device:
    """--device for a training process: under torchrun, `cuda` is this process's own GPU."""
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device(name)


def init_distributed() -> None:
    """Joins the process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
