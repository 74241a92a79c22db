"""The model commands: `elmo info` (what a model is, and whether its files go together),
`elmo dump-token-embeddings` (the char CNN's vector of every vocabulary token) and `elmo models`
(the published models that --model takes)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import h5py
import torch

from .. import hub
from ..chars import batch_to_ids
from ..data import read_token_lines
from ..efml import is_efml_model
from ..errors import UsageError
from ..files import atomic_path
from ..formats import bilm_datasets, load_bilm, read_options, read_weights
from .common import device as _device
from .common import model_files


def dump_token_embeddings(vocab: str, out: str, *, model: str | None = None, options: str | None = None,
                          weights: str | None = None, batch_size: int = 4096, device: str = "cpu") -> int:
    """Write the character CNN's vector of every vocabulary token to an HDF5 file.

    The layout of bilm-tf's dump_token_embeddings: one float32 dataset "embedding" of shape
    (V, projection_dim), row i the vector of the vocabulary's i-th token (bilm-tf reads it as
    `embedding_weight_file` to run the biLM on token ids, without the CNN). These vectors are
    context-free: layer 0 of `elmo embed`, first half.

    Arguments:
        vocab: the vocabulary file, one token a line (the first whitespace-separated field of
            each non-blank line; a count after it is ignored). <S> and </S> get the sentence
            boundary vectors, as in bilm-tf.
        out: the HDF5 file to write (replaced if it exists; written to a temporary name first).
        model: a published model's name (`elmo models` lists them), a model folder (bilm-tf's
            layout, or an ELMoForManyLangs model), or a .zip/.tar.gz model archive's path or
            URL; downloads are kept in the cache
            ($TORCH_ELMO_CACHE, default ~/.cache/torch-elmo). Default: --options/--weights.
        options: the model's options.json, a path or URL (default: the bundled English model).
        weights: the model's weights.hdf5, a path or URL (default: the bundled English model).
        batch_size: tokens per forward pass of the CNN (default 4096).
        device: where the model runs: cpu (default), cuda, cuda:N.
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be at least 1")
    tokens = _read_token_list(vocab)
    options, weights = model_files(options, weights, model)
    device = _device(device)
    bilm = load_bilm(options, weights, device=device)
    to_ids = getattr(bilm, "batch_to_ids", batch_to_ids)  # an ELMoForManyLangs model has its own ids
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            dataset = f.create_dataset("embedding", (len(tokens), bilm.config.projection_dim), dtype="float32")
            with torch.inference_mode():
                for start in range(0, len(tokens), batch_size):
                    chunk = tokens[start : start + batch_size]
                    vectors = bilm.encode_tokens(to_ids([chunk])[0].to(device))
                    dataset[start : start + len(chunk)] = vectors.float().cpu().numpy()
    print(f"{out}: embedding ({len(tokens)}, {bilm.config.projection_dim})", file=sys.stderr)
    return 0


def _read_token_list(path: str) -> list[str]:
    tokens = read_token_lines(path)
    if not tokens:
        raise UsageError(f"{path}: the vocabulary is empty; give a text file with one token a line")
    return tokens



def info(model: str | None = None, *, weights: str | None = None) -> int:
    """Describe a model: architecture, parameter count, file check, model card.

    Prints the architecture from options.json, the number of parameters in the weight file
    (char CNN, biLSTM, and a softmax if one was kept), checks that every dataset the options ask
    for is in the weight file with the right shape, and prints MODEL_CARD.md from beside the
    files if there is one. Exit status 2 when the files do not go together.

    Arguments:
        model: a model directory (holding options.json and weights.hdf5 or lm_weights.hdf5),
            an options.json file, a published model's name (`elmo models`) or a .zip/.tar.gz
            model archive's path or URL (default: the bundled English model).
        weights: the weight file, when it is not beside the options as weights.hdf5,
            lm_weights.hdf5 or NAME_weights.hdf5 for NAME_options.json (default: found so).
    """
    options, weights = _find_model(model, weights)
    config = read_options(options)
    datasets = bilm_datasets(config)
    n_cnn = sum(math.prod(s) for name, s in datasets.items() if not name.startswith("RNN_"))
    n_lstm = sum(math.prod(s) for name, s in datasets.items() if name.startswith("RNN_"))
    print(f"options:   {options}")
    print(f"weights:   {weights} ({_size(weights)})")
    print(f"char CNN:  {config.char_embed_dim}-dim char embeddings, filters "
          f"{' '.join(f'{w}x{n}' for w, n in config.filters)} ({config.n_filters} in all), "
          f"{config.n_highway} highway layer(s), {config.activation}, "
          + (f"projection to {config.projection_dim}" if config.n_filters != config.projection_dim else "no projection"))
    print(f"biLSTM:    {config.n_layers} layer(s) per direction, {config.lstm_dim} cells, projection "
          f"{config.projection_dim}, skip connections {'yes' if config.use_skip_connections else 'no'}, "
          f"cell clip {config.cell_clip}, projection clip {config.proj_clip}")
    print(f"output:    {config.n_layers + 1} layers of {config.output_dim} (token layer + {config.n_layers} LSTM layers)")
    extra = {}
    try:
        with h5py.File(weights, "r") as f:
            f.visititems(lambda name, obj: extra.__setitem__(name, obj.shape)
                         if isinstance(obj, h5py.Dataset) and name not in datasets else None)
    except OSError:
        pass  # read_weights below says what is wrong
    n_extra = sum(math.prod(s) for s in extra.values())
    print(f"parameters: {n_cnn + n_lstm:,} (char CNN {n_cnn:,}, biLSTM {n_lstm:,})"
          + (f"; plus {n_extra:,} in {', '.join(f'{k} {v}' for k, v in sorted(extra.items()))}" if extra else ""))
    read_weights(weights, config)  # raises ElmoFormatError naming the problem
    print("check:     ok, the weight file has every dataset the options ask for, with its shape")
    card = Path(options).parent / "MODEL_CARD.md"
    if card.is_file():
        print(f"\n{card}:\n")
        print(card.read_text(encoding="utf-8").rstrip())
    else:
        print(f"model card: none ({card} does not exist)")
    return 0


def _find_model(model: str | None, weights: str | None) -> tuple[str, str]:
    if model is not None and is_efml_model(model):
        raise UsageError(f"{model}: an ELMoForManyLangs model; elmo info describes bilm-tf models (options.json "
                         "+ weights.hdf5); embed it with elmo embed --model")
    if weights is None and hub.names_a_model(model) and not os.path.isdir(model):  # a name, URL, archive
        return model_files(None, None, model)
    if model is None:
        if weights is not None:
            raise UsageError("--weights given without a model: give the options.json or the model directory too")
        return model_files(None, None)
    path = Path(model)
    if path.is_dir():
        options = path / "options.json"
        if not options.is_file():
            found = sorted(path.glob("*options*.json"))
            if len(found) != 1:
                raise UsageError(f"{path}: no options.json in this directory; give the options file itself")
            options = found[0]
    elif path.is_file():
        options = path
    else:
        raise UsageError(f"{model}: no such file or directory; give a model directory or its options.json")
    if weights is None:
        stem = options.name[: -len("options.json")] if options.name.endswith("options.json") else ""
        candidates = [options.parent / n for n in ("weights.hdf5", "lm_weights.hdf5", f"{stem}weights.hdf5")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise UsageError(f"{options.parent}: no weights.hdf5 beside {options.name}; give the weight file with --weights")
        weights = str(found[0])
    return str(options), str(weights)


def _size(path: str) -> str:
    try:
        n = os.path.getsize(path)
    except OSError:
        return "missing"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def models() -> int:
    """List the published models that --model NAME (and Elmo.from_pretrained) take.

    Each is downloaded once, on first use, into the cache: $TORCH_ELMO_CACHE, else
    $XDG_CACHE_HOME/torch-elmo, else ~/.cache/torch-elmo; later runs read it from there.
    TORCH_ELMO_OFFLINE=1 never touches the network (a model not in the cache is then an error
    saying where to put its files). "?" marks what the publisher does not state.
    """
    print(hub.models_table(), end="")
    print(f"\ncache: {hub.cache_dir()}" + (f" ({hub.OFFLINE_ENV} is set: no downloads)" if hub.offline() else ""))
    return 0
