"""The published file formats: `options.json` and `weights.hdf5` in the layout of allenai/bilm-tf.

One weight map (`bilm_datasets`) names every dataset of the published layout with its shape;
`load_bilm` and `save_bilm` convert between those arrays and our parameters with explicit
transposes. Every problem with a file is an `ElmoFormatError` naming the file, the entry and the
fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import hub
from .chars import MAX_CHARS, N_CHARACTERS
from .efml import load_efml
from .errors import BadSettings, ElmoFormatError, UsageError, describe_type, format_problems
from .files import atomic_path
from .model import BiLM, BiLMConfig

# --------------------------------------------------------------------------------------------
# options.json


def read_options(path: str | os.PathLike) -> BiLMConfig:
    """Reads and validates a published `options.json` into a BiLMConfig."""
    path = Path(path)
    try:
        options = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ElmoFormatError(f"{path}: no such options file; give the path of the model's options.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ElmoFormatError(f"{path}: not a JSON options file ({e}); give the model's options.json") from None
    return config_from_options(options, source=str(path))


def config_from_options(options: dict, source: str = "options") -> BiLMConfig:
    def get(section: str, key: str, kind: type | tuple[type, ...], default=KeyError):
        value = options.get(section, {}).get(key, default) if isinstance(options.get(section), dict) else default
        if value is KeyError:
            raise ElmoFormatError(f"{source}: missing \"{section}\".\"{key}\"; the published options.json has it")
        if value is not None and not isinstance(value, kind):
            raise ElmoFormatError(f"{source}: \"{section}\".\"{key}\" is {value!r}, expected {describe_type(kind)}")
        return value

    if "char_cnn" not in options:
        raise ElmoFormatError(
            f"{source}: no \"char_cnn\" section; only character-input biLMs can be loaded from the published format"
        )
    filters = get("char_cnn", "filters", list)
    n_characters = get("char_cnn", "n_characters", int)
    if n_characters != N_CHARACTERS:
        raise ElmoFormatError(
            f"{source}: \"char_cnn\".\"n_characters\" is {n_characters}, expected {N_CHARACTERS} "
            f"(261 stored characters + the padding row; bilm-tf's training options say 261: set it to {N_CHARACTERS})"
        )
    max_chars = get("char_cnn", "max_characters_per_token", int)
    if max_chars != MAX_CHARS:
        raise ElmoFormatError(f"{source}: \"char_cnn\".\"max_characters_per_token\" is {max_chars}, expected {MAX_CHARS}")
    activation = get("char_cnn", "activation", str)
    embedding = options["char_cnn"].get("embedding")
    if not isinstance(embedding, dict) or not isinstance(embedding.get("dim"), int):
        raise ElmoFormatError(f"{source}: missing \"char_cnn\".\"embedding\".\"dim\" (the char embedding size)")
    lstm_dim = get("lstm", "dim", int)
    number = (int, float)
    values = dict(
        filters=filters,
        char_embed_dim=embedding["dim"],
        n_highway=get("char_cnn", "n_highway", int),
        activation=activation,
        n_characters=n_characters,
        max_chars=max_chars,
        lstm_dim=lstm_dim,
        projection_dim=get("lstm", "projection_dim", int, default=lstm_dim),
        n_layers=get("lstm", "n_layers", int),
        cell_clip=get("lstm", "cell_clip", number, default=None),
        proj_clip=get("lstm", "proj_clip", number, default=None),
        use_skip_connections=get("lstm", "use_skip_connections", bool, default=False),
    )
    try:
        return BiLMConfig(**values)
    except BadSettings as e:
        message = format_problems(e.problems, lambda name: OPTION_NAMES.get(name, name))
        raise ElmoFormatError(f"{source}: {message}; fix the options file") from None


OPTION_NAMES = {  # BiLMConfig field -> its entry in options.json, where the two differ
    "filters": '"char_cnn"."filters"', "activation": '"char_cnn"."activation"',
    "char_embed_dim": '"char_cnn"."embedding"."dim"', "n_highway": '"char_cnn"."n_highway"',
    "lstm_dim": '"lstm"."dim"', "projection_dim": '"lstm"."projection_dim"', "n_layers": '"lstm"."n_layers"',
    "cell_clip": '"lstm"."cell_clip"', "proj_clip": '"lstm"."proj_clip"',
}


def options_from_config(config: BiLMConfig) -> dict:
    """The published `options.json` content of a config (inference form: n_characters 262)."""
    return {
        "lstm": {
            "dim": config.lstm_dim,
            "projection_dim": config.projection_dim,
            "n_layers": config.n_layers,
            "cell_clip": config.cell_clip,
            "proj_clip": config.proj_clip,
            "use_skip_connections": config.use_skip_connections,
        },
        "char_cnn": {
            "activation": config.activation,
            "filters": [list(f) for f in config.filters],
            "n_highway": config.n_highway,
            "embedding": {"dim": config.char_embed_dim},
            "n_characters": config.n_characters,
            "max_characters_per_token": config.max_chars,
        },
    }


# --------------------------------------------------------------------------------------------
# weights.hdf5: the weight map


def _lstm_prefix(direction: int, layer: int) -> str:
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"


def bilm_datasets(config: BiLMConfig) -> dict[str, tuple[int, ...]]:
    """Every dataset of the published layout with its shape (RNN_0 forward, RNN_1 backward)."""
    E, F, P, H = config.char_embed_dim, config.n_filters, config.projection_dim, config.lstm_dim
    shapes: dict[str, tuple[int, ...]] = {"char_embed": (config.n_characters - 1, E)}
    for i, (width, n) in enumerate(config.filters):
        shapes[f"CNN/W_cnn_{i}"] = (1, width, E, n)
        shapes[f"CNN/b_cnn_{i}"] = (n,)
    for k in range(config.n_highway):
        for part in ("carry", "transform"):
            shapes[f"CNN_high_{k}/W_{part}"] = (F, F)
            shapes[f"CNN_high_{k}/b_{part}"] = (F,)
    if F != P:
        shapes["CNN_proj/W_proj"] = (F, P)
        shapes["CNN_proj/b_proj"] = (P,)
    for d in range(config.n_directions):
        for k in range(config.n_layers):
            prefix = _lstm_prefix(d, k)
            shapes[f"{prefix}/W_0"] = (P + P, 4 * H)
            shapes[f"{prefix}/B"] = (4 * H,)
            if P != H:
                shapes[f"{prefix}/W_P_0"] = (H, P)
    return shapes


def state_dict_from_arrays(config: BiLMConfig, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Published arrays -> BiLM state dict. TF multiplies x @ W; torch's Linear and Conv1d store W^T."""
    t = torch.from_numpy
    state = {}
    embed = np.zeros((config.n_characters, config.char_embed_dim), dtype=np.float32)
    embed[1:] = arrays["char_embed"]  # row 0: the padding character, not stored
    state["token_encoder.char_embedding.weight"] = t(embed)
    for i in range(len(config.filters)):
        w = arrays[f"CNN/W_cnn_{i}"][0]  # (width, E, n)
        state[f"token_encoder.convs.{i}.weight"] = t(np.ascontiguousarray(w.transpose(2, 1, 0)))  # (n, E, width)
        state[f"token_encoder.convs.{i}.bias"] = t(arrays[f"CNN/b_cnn_{i}"])
    for k in range(config.n_highway):
        high = f"CNN_high_{k}"
        w = np.concatenate([arrays[f"{high}/W_transform"].T, arrays[f"{high}/W_carry"].T])
        b = np.concatenate([arrays[f"{high}/b_transform"], arrays[f"{high}/b_carry"]])
        state[f"token_encoder.highways.{k}.linear.weight"] = t(np.ascontiguousarray(w))
        state[f"token_encoder.highways.{k}.linear.bias"] = t(b)
    if config.n_filters != config.projection_dim:
        state["token_encoder.projection.weight"] = t(np.ascontiguousarray(arrays["CNN_proj/W_proj"].T))
        state["token_encoder.projection.bias"] = t(arrays["CNN_proj/b_proj"])
    P, D = config.projection_dim, config.n_directions
    for k in range(config.n_layers):
        kernels = [arrays[f"{_lstm_prefix(d, k)}/W_0"] for d in range(D)]  # [W_input; W_state]
        layer = f"lstm.layers.{k}"
        state[f"{layer}.w_input"] = t(np.stack([w[:P] for w in kernels]))
        state[f"{layer}.w_state"] = t(np.stack([w[P:] for w in kernels]))
        state[f"{layer}.bias"] = t(np.stack([arrays[f"{_lstm_prefix(d, k)}/B"] for d in range(D)]))
        if config.projection_dim != config.lstm_dim:
            state[f"{layer}.w_proj"] = t(np.stack([arrays[f"{_lstm_prefix(d, k)}/W_P_0"] for d in range(D)]))
    return state


def arrays_from_state_dict(config: BiLMConfig, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """BiLM state dict -> published arrays (float32), the inverse of `state_dict_from_arrays`."""
    a = {name: value.detach().to("cpu", torch.float32).numpy() for name, value in state.items()}
    arrays = {"char_embed": a["token_encoder.char_embedding.weight"][1:]}
    for i in range(len(config.filters)):
        arrays[f"CNN/W_cnn_{i}"] = a[f"token_encoder.convs.{i}.weight"].transpose(2, 1, 0)[None]
        arrays[f"CNN/b_cnn_{i}"] = a[f"token_encoder.convs.{i}.bias"]
    F = config.n_filters
    for k in range(config.n_highway):
        w = a[f"token_encoder.highways.{k}.linear.weight"]
        b = a[f"token_encoder.highways.{k}.linear.bias"]
        arrays[f"CNN_high_{k}/W_transform"], arrays[f"CNN_high_{k}/W_carry"] = w[:F].T, w[F:].T
        arrays[f"CNN_high_{k}/b_transform"], arrays[f"CNN_high_{k}/b_carry"] = b[:F], b[F:]
    if config.n_filters != config.projection_dim:
        arrays["CNN_proj/W_proj"] = a["token_encoder.projection.weight"].T
        arrays["CNN_proj/b_proj"] = a["token_encoder.projection.bias"]
    for k in range(config.n_layers):
        layer = f"lstm.layers.{k}"
        for d in range(config.n_directions):
            prefix = _lstm_prefix(d, k)
            arrays[f"{prefix}/W_0"] = np.concatenate([a[f"{layer}.w_input"][d], a[f"{layer}.w_state"][d]])
            arrays[f"{prefix}/B"] = a[f"{layer}.bias"][d]
            if config.projection_dim != config.lstm_dim:
                arrays[f"{prefix}/W_P_0"] = a[f"{layer}.w_proj"][d]
    return {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in arrays.items()}


def read_weights(path: str | os.PathLike, config: BiLMConfig) -> dict[str, np.ndarray]:
    """Reads and checks every dataset the config needs from a published weight file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ElmoFormatError(f"{path}: no such weight file; give the path of the model's weights.hdf5")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ElmoFormatError(f"{path}: not an HDF5 weight file ({e}); give the model's weights.hdf5") from None
    arrays = {}
    with f:
        for name, shape in bilm_datasets(config).items():
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise ElmoFormatError(
                    f"{path}: missing dataset {name!r} of shape {shape}; "
                    "is this the weight file that goes with these options?"
                )
            if f[name].shape != shape:
                raise ElmoFormatError(
                    f"{path}: dataset {name!r} has shape {f[name].shape}, the options file asks for {shape}; "
                    "use the options.json that goes with this weight file"
                )
            try:
                arrays[name] = f[name][...].astype(np.float32, copy=False)
            except (OSError, RuntimeError, ValueError) as e:  # HDF5 found the data damaged
                raise ElmoFormatError(f"{path}: dataset {name!r} cannot be read ({str(e).splitlines()[0]}); the file "
                                      "is damaged (truncated or altered): fetch or copy it again") from None
    return arrays


def load_bilm(options_file: str | os.PathLike, weight_file: str | os.PathLike | None = None, *,
              dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
              stateful: bool = False, implementation: str = "fast") -> BiLM:
    """A BiLM with the published weights, in eval mode. Either file may be a URL (downloaded
    into the cache); without `weight_file`, `options_file` names a whole model: a published
    name, a folder or an archive (torch_elmo.hub). `implementation` "plain" runs without the
    fast kernels (the reference they are tested against); "int8" quantizes the LSTM's products
    (embedding on the CPU only, not exact)."""
    if weight_file is None or hub.is_url(options_file) or hub.is_url(weight_file):
        options_file, weight_file = hub.model_files(options_file, weight_file)
    if implementation == "int8" and (dtype != torch.float32 or torch.device(device).type != "cpu"):
        raise UsageError(f"implementation 'int8' runs float32 models on the CPU, not {dtype} on {device}: "
                         "drop the dtype / device, or use implementation 'fast'")
    if weight_file is None:  # an ELMoForManyLangs model folder or zip (efml.py)
        if implementation != "fast":
            raise UsageError(f"ELMoForManyLangs models run with implementation 'fast' only, not {implementation!r}")
        return load_efml(options_file, dtype=dtype, device=device, stateful=stateful)
    config = replace(read_options(options_file), implementation=implementation)
    bilm = BiLM(config, stateful=stateful)
    bilm.load_state_dict(state_dict_from_arrays(config, read_weights(weight_file, config)))
    return bilm.to(device=device, dtype=dtype).eval()


def write_options(path: str | os.PathLike, options: dict) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(options, indent=2) + "\n", encoding="utf-8")


def save_bilm(bilm: BiLM, options_file: str | os.PathLike, weight_file: str | os.PathLike,
              extra_arrays: dict[str, np.ndarray] | None = None) -> None:
    """Writes `options.json` + `weights.hdf5` in the published layout (each file atomically)."""
    import h5py

    arrays = arrays_from_state_dict(bilm.config, bilm.state_dict())
    arrays.update(extra_arrays or {})
    with atomic_path(weight_file) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, value in arrays.items():
                f.create_dataset(name, data=value)
    write_options(options_file, options_from_config(bilm.config))
