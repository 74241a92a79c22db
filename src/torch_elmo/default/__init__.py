"""The bundled default English model: options.json + weights.hdf5 (and MODEL_CARD.md) in this
folder, written by the recipe `make default-model` (recipes/default_model.py)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DefaultModelMissing

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


def default_model_card() -> Path | None:
    """The default model's MODEL_CARD.md, or None when it is not there."""
    path = MODEL_DIR / CARD
    return path if path.is_file() else None
