"""The bundled default English model: options.json + weights.hdf5 (and MODEL_CARD.md) in this
folder, written by the recipe `make default-model` (recipes/default_model.py)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DefaultModelMissing, UsageError

MODEL_DIR = Path(__file__).resolve().parent
OPTIONS = "options.json"
WEIGHTS = "weights.hdf5"
CARD = "MODEL_CARD.md"


def default_model_files() -> tuple[Path, Path]:
    """(options_path, weights_path) of the bundled default model; `DefaultModelMissing` (a
    FileNotFoundError) naming the folder and the fix when they are not there."""
    options, weights = MODEL_DIR / OPTIONS, MODEL_DIR / WEIGHTS
    missing = [p.name for p in (options, weights) if not p.is_file()]
    if missing:
        raise DefaultModelMissing(
            f"{MODEL_DIR}: the default model's {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            "not there; build it with `make default-model` in a source checkout (or install a release "
            "that ships it), or name a model: options_file and weight_file (`--options/--weights`)"
        )
    return options, weights


def model_files(options: str | os.PathLike | None, weights: str | os.PathLike | None,
                names: tuple[str, str] = ("options_file", "weight_file")) -> tuple[str, str]:
    """The model files as given, or the bundled default model's when both are None; `names`
    are what the caller calls the two (arguments or command-line options), for the message."""
    if options is None and weights is None:
        return tuple(str(p) for p in default_model_files())
    if options is None or weights is None:
        given, missing = names if weights is None else names[::-1]
        raise UsageError(f"{given} given without {missing}: give both (the model's options.json and its "
                        "weights.hdf5), or neither for the bundled default English model")
    return str(options), str(weights)


def default_model_card() -> Path | None:
    """The default model's MODEL_CARD.md, or None when it is not there."""
    path = MODEL_DIR / CARD
    return path if path.is_file() else None
