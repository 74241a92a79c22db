"""ELMoForManyLangs models (HIT-SCIR's ELMo for 44 languages, CoNLL 2018), loaded from the
published folders or zips, computing what its own code (PyPI `elmoformanylangs` 0.0.4.post2)
computes, through our `Elmo`, `ElmoEmbedder` and `elmo embed`.

A model folder (or a zip of one) holds
    config.json         its training options; "config_path" names the architecture file (the
                        published zips give an absolute path from the authors' machine: it is
                        looked for as given, then by file name beside the model, then among the
                        architectures its package ships, copied in efml_configs/)
    char.dic, word.dic  `token<TAB>id` a line, read as its code reads them: each line stripped
                        of whitespace, so that the full-width space U+3000 leaves a line with one
                        field, which stands for U+3000
    token_embedder.pkl  the token encoder's state dict, read with torch.load(weights_only=True)
    encoder.pkl         the biLSTM's state dict, likewise

What its code computes, and how it differs from bilm-tf's models:
  * A token is its first 48 characters (Unicode code points, not UTF-8 bytes), each looked up in
    char.dic (`<oov>` if absent), between the begin- and end-of-word marks, then `<pad>` up to 50.
    Its `create_one_batch` swaps the two marks' labels: the first position holds the id of
    `<eow>`, the one after the last character the id of `<bow>`. Its training code does the same,
    so the published models learned with the swapped ids; they are reproduced as they are.
  * `<pad>` has a learned, nonzero embedding (there is no all-zero padding row), so padding
    characters take part in the convolutions.
  * Char embedding, one convolution per filter, max over positions, then relu (or tanh); highway
    layers y = g * x + (1 - g) * relu(A x) with g = sigmoid(B x) (the carry gate on x, the
    opposite of bilm-tf's labels), always relu; with `word_dim` > 0, the word's embedding
    (word.dic, `<oov>` for unknown words, the truncated token looked up) is put before the
    char features; then a projection to the LSTM size (always present).
  * The sentence boundaries are the tokens `<bos>` and `<eos>`: chars [`<eow>`, `<bos>`, `<bow>`]
    (the swapped marks again), their word ids from word.dic. A token spelled `<bos>` or `<eos>`
    inside a sentence gets the same ids, as in its code.
  * The biLSTM is AllenNLP's LstmCellWithProjection: gates in the order i, f, g, o, one bias (on
    the state product), no forget bias added at run time, the cell and the projection clipped
    (a clip of 0 means none), residual connections from the second layer on. It maps onto our
    LstmWithProjection (gates i, j, f, o) by permuting the gate blocks and zeroing its run-time
    forget bias. Outputs are (3, T, 2 x projection_dim) with layer 0 = [token; token], as ours.

Where its code crashes, this module raises instead: an empty list of sentences gives no vectors
(its Embedder divides by zero); a dictionary line that is not `token<TAB>integer` (an empty line
included) is an EfmlFormatError naming the line. Its stateful mode (the LSTM state carried from
batch to batch) is not reproduced: models are stateless, as our default.

Read top to bottom:
    EfmlFormatError, EfmlConfig      errors; the architecture file
    parse_dictionary, EfmlVocabulary char.dic / word.dic; tokens -> ids as its code makes them
    EfmlHighway, EfmlTokenEncoder    ids -> token vectors
    EfmlBiLM                         the biLM, giving our BiLMOutput
    is_efml_model, read_efml, state_dict_from_efml, load_efml   files -> a loaded EfmlBiLM
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import kernels
from .chars import batch_of_token_rows, not_a_string
from .errors import ElmoFormatError
from .model import BiLMConfig, BiLMOutput, ElmoLstm, PackedBatch

PathLike = str | os.PathLike

CONFIG, CHAR_DIC, WORD_DIC, TOKEN_EMBEDDER, ENCODER = (
    "config.json", "char.dic", "word.dic", "token_embedder.pkl", "encoder.pkl")
MODEL_FILES = (CONFIG, CHAR_DIC, WORD_DIC, TOKEN_EMBEDDER, ENCODER)
KNOWN_CONFIGS = Path(__file__).with_name("efml_configs")  # the architecture files its package ships

BOS, EOS = "<bos>", "<eos>"
BOW, EOW, OOV, PAD = "<bow>", "<eow>", "<oov>", "<pad>"
SPECIAL_CHARS = (BOS, EOS, OOV, PAD, BOW, EOW)  # its training code adds these to every char.dic
SPECIAL_WORDS = (OOV, PAD)  # its code requires these in word.dic
FULL_WIDTH_SPACE = "\u3000"


class EfmlFormatError(ElmoFormatError):
    """An ELMoForManyLangs model folder or zip that cannot be read as published."""


# --------------------------------------------------------------------------------------------
# The architecture file


@dataclass(frozen=True)
class EfmlConfig:
    """The architecture of an ELMoForManyLangs model (its "encoder" and "token_embedder")."""

    filters: tuple[tuple[int, int], ...]
    n_highway: int
    activation: str  # of the convolutions; the highway layers always use relu
    char_dim: int
    word_dim: int  # 0: no word embedding
    max_chars: int  # per token, the two marks included
    lstm_dim: int
    projection_dim: int
    n_layers: int
    cell_clip: float | None
    proj_clip: float | None
    n_directions: int = 2

    @property
    def n_filters(self) -> int:
        return sum(n for _, n in self.filters)

    @property
    def output_dim(self) -> int:
        return self.n_directions * self.projection_dim


def config_from_architecture(arch: object, source: str) -> EfmlConfig:
    """Reads and checks an architecture file's content (e.g. cnn_50_100_512_4096_sample.json)."""
    if not isinstance(arch, dict):
        raise EfmlFormatError(f"{source}: not an ELMoForManyLangs architecture (a JSON object with \"encoder\" "
                              "and \"token_embedder\"); give the model's cnn_*_sample.json")

    def get(section: str, key: str, kind, default=KeyError):
        part = arch.get(section)
        value = part.get(key, default) if isinstance(part, dict) else default
        if value is KeyError:
            raise EfmlFormatError(f"{source}: missing \"{section}\".\"{key}\"; the published architecture files have it")
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool):
            raise EfmlFormatError(f"{source}: \"{section}\".\"{key}\" is {value!r}, expected {kind}")
        return value

    encoder, embedder = get("encoder", "name", str), get("token_embedder", "name", str)
    if encoder.lower() != "elmo":
        raise EfmlFormatError(f"{source}: \"encoder\".\"name\" is {encoder!r}; only its \"elmo\" encoder (the "
                              "published models') is supported, not its plain LSTM language model")
    if embedder.lower() != "cnn":
        raise EfmlFormatError(f"{source}: \"token_embedder\".\"name\" is {embedder!r}; only its \"cnn\" token "
                              "embedder (the published models') is supported")
    filters = get("token_embedder", "filters", list)
    if not filters or not all(isinstance(f, list) and len(f) == 2 and all(type(v) is int and v > 0 for v in f)
                              for f in filters):
        raise EfmlFormatError(f"{source}: \"token_embedder\".\"filters\" is {filters!r}, expected [[width, n], ...]")
    char_dim = get("token_embedder", "char_dim", int)
    if char_dim <= 0:
        raise EfmlFormatError(f"{source}: \"token_embedder\".\"char_dim\" is {char_dim}: a word-level-only model, "
                              "which is not supported (the published models have char_dim 50)")
    activation = get("token_embedder", "activation", str)
    if activation not in ("relu", "tanh"):
        raise EfmlFormatError(f"{source}: \"token_embedder\".\"activation\" is {activation!r}, expected relu or tanh")
    number = (int, float)
    lstm_dim, projection_dim = get("encoder", "dim", int), get("encoder", "projection_dim", int)
    if lstm_dim == projection_dim:
        raise EfmlFormatError(f"{source}: \"encoder\".\"dim\" equals \"projection_dim\" ({lstm_dim}): not supported "
                              "(the published models have 4096 and 512)")
    cell_clip, proj_clip = get("encoder", "cell_clip", number, None), get("encoder", "proj_clip", number, None)
    max_chars = get("token_embedder", "max_characters_per_token", int)
    if max_chars < 3:
        raise EfmlFormatError(f"{source}: \"token_embedder\".\"max_characters_per_token\" is {max_chars}, expected >= 3")
    return EfmlConfig(
        filters=tuple((w, n) for w, n in filters),
        n_highway=get("token_embedder", "n_highway", int),
        activation=activation,
        char_dim=char_dim,
        word_dim=max(get("token_embedder", "word_dim", int), 0),
        max_chars=max_chars,
        lstm_dim=lstm_dim,
        projection_dim=projection_dim,
        n_layers=get("encoder", "n_layers", int),
        cell_clip=float(cell_clip) if cell_clip else None,  # its code clips only when the value is truthy
        proj_clip=float(proj_clip) if proj_clip else None,
    )


# --------------------------------------------------------------------------------------------
# Dictionaries and ids


def parse_dictionary(text: str, source: str) -> dict[str, int]:
    """char.dic / word.dic as its code reads them: lines split at every Unicode line boundary (what
    codecs' readline does), each stripped of whitespace and split at tabs; a line left with one
    field is U+3000's (whitespace itself, stripped away); a later line for the same token wins."""
    lexicon: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.strip().split("\t")
        if len(fields) == 1:
            fields.insert(0, FULL_WIDTH_SPACE)
        try:
            if len(fields) != 2:
                raise ValueError
            lexicon[fields[0]] = int(fields[1])
        except ValueError:
            raise EfmlFormatError(f"{source}: line {number} is {line!r}, expected TOKEN<TAB>ID (an integer); its own "
                                  "code fails on this file too: use the dictionary as published") from None
    return lexicon


@dataclass
class EfmlVocabulary:
    """The char and word dictionaries, and tokens -> ids exactly as its `read_list` and
    `create_one_batch` make them.

    A token's ids are one row of 1 + max_chars integers, each +1 so that an all-zero row is no
    token: the word id (0 when the model has no word embedding), then the char ids.
    """

    chars: dict[str, int]
    words: dict[str, int] | None
    max_chars: int

    def __post_init__(self) -> None:
        c = self.chars
        self.begin_id, self.end_id = c[EOW], c[BOW]  # its labels, swapped: see the module docstring
        self.char_oov, self.char_pad = c[OOV], c[PAD]
        self.word_oov = self.words[OOV] if self.words is not None else None

    @property
    def width(self) -> int:
        return 1 + self.max_chars

    def token_ids(self, token: str) -> list[int]:
        if len(token) + 2 > self.max_chars:
            token = token[: self.max_chars - 2]
        word = self.words.get(token, self.word_oov) + 1 if self.words is not None else 0
        chars = [self.char_pad] * self.max_chars
        chars[0] = self.begin_id
        if token == BOS or token == EOS:
            chars[1], chars[2] = self.chars[token], self.end_id
        else:
            get, oov = self.chars.get, self.char_oov
            chars[1 : len(token) + 1] = [get(ch, oov) for ch in token]
            chars[len(token) + 1] = self.end_id
        return [word] + [i + 1 for i in chars]

    def batch_to_ids(self, sentences: Sequence[Sequence[str]]) -> torch.Tensor:
        """Tokenized sentences -> LongTensor (batch, max_len, 1 + max_chars); all-zero rows pad.
        The sentence boundaries are not added here: the model adds them."""
        return batch_of_token_rows(sentences, self._token_rows, self.width)

    def _token_rows(self, tokens: list[str]) -> torch.Tensor:
        """`token_ids` of each token (n, width), each distinct token spelled once (in a batch of
        text about half of the tokens repeat)."""
        try:
            distinct = {t: k for k, t in enumerate(dict.fromkeys(tokens))}  # token -> its row in `table`
            table = torch.tensor([self.token_ids(t) for t in distinct], dtype=torch.long).view(-1, self.width)
        except TypeError:
            raise not_a_string(tokens) from None
        return table[torch.tensor([distinct[t] for t in tokens], dtype=torch.long)]


# --------------------------------------------------------------------------------------------
# Token encoder


class EfmlHighway(nn.Module):
    """Its highway layers: y = g * x + (1 - g) * relu(A x), g = sigmoid(B x), [A; B] one Linear."""

    def __init__(self, dim: int, n_layers: int):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList(nn.Linear(dim, 2 * dim) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            projected = kernels.linear(x, layer.weight, layer.bias)  # oneDNN's product where it ran faster
            nonlinear, gate = F.relu(projected[:, : self.dim]), torch.sigmoid(projected[:, self.dim :])
            x = gate * x + (1 - gate) * nonlinear
        return x


class EfmlTokenEncoder(nn.Module):
    """Token ids (N, 1 + C) -> token vectors (N, P): char embedding, convolutions, max over
    positions, activation, highway layers, [word embedding; char features], projection."""

    def __init__(self, config: EfmlConfig, n_chars: int, n_words: int, pad_char: int):
        super().__init__()
        self.activation = torch.relu if config.activation == "relu" else torch.tanh
        self.pad_char = pad_char
        self.char_embedding = nn.Embedding(n_chars, config.char_dim)
        self.word_embedding = nn.Embedding(n_words, config.word_dim) if config.word_dim > 0 else None
        self.convs = nn.ModuleList(nn.Conv1d(config.char_dim, n, kernel_size=w) for w, n in config.filters)
        self.highways = EfmlHighway(config.n_filters, config.n_highway)
        self.projection = nn.Linear(config.word_dim + config.n_filters, config.projection_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        chars = self.char_embedding(self._trim_padding(ids[:, 1:] - 1))  # (N, C', E)
        x = torch.cat([self.activation(self._max_over_windows(chars, conv)) for conv in self.convs], dim=-1)
        x = self.highways(x)
        if self.word_embedding is not None:
            x = torch.cat([self.word_embedding(ids[:, 0] - 1), x], dim=-1)
        return kernels.linear(x, self.projection.weight, self.projection.bias)

    def _trim_padding(self, chars: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, C'): without the last columns that hold `<pad>` in every token, keeping the
        widest filter's width of them after the last other char. Windows made of `<pad>` alone are
        all alike, and every token keeps at least one of each width whenever it had one, so the
        max over windows is the one over all C columns."""
        widest = max(conv.kernel_size[0] for conv in self.convs)
        used = (chars != self.pad_char).any(dim=0).nonzero()
        keep = (int(used.max()) + 1 if len(used) else 0) + widest
        return chars[:, :keep] if keep < chars.shape[1] else chars

    @staticmethod
    def _max_over_windows(chars: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
        """conv(chars) max-pooled over positions, (N, C, E) -> (N, filters): the char CNN's kernel."""
        width = conv.kernel_size[0]
        if chars.shape[1] < width:  # a model whose widest filter exceeds max_chars: as Conv1d, it has none
            raise EfmlFormatError(f"a filter of width {width} is wider than the {chars.shape[1]} chars of a token; "
                                  "the model's architecture file is not one ELMoForManyLangs can run either")
        return kernels.max_over_windows(chars, conv.weight, conv.bias)


# --------------------------------------------------------------------------------------------
# The biLM


class EfmlBiLM(nn.Module):
    """An ELMoForManyLangs biLM as our BiLM: ids from `batch_to_ids` -> `BiLMOutput` with L+1
    layers of [forward; backward] (layer 0 = [token; token]). Stateless."""

    TOKEN_CHUNK = 256  # tokens through the token encoder at once

    def __init__(self, config: EfmlConfig, vocab: EfmlVocabulary, stateful: bool = False):
        super().__init__()
        if stateful:
            raise ValueError("stateful=True is not supported for ELMoForManyLangs models (its stateful mode is not "
                             "reproduced); they run stateless, each sentence from a zero state")
        self.config, self.vocab, self.stateful = config, vocab, False
        n_words = len(vocab.words) if vocab.words is not None else 0
        self.token_encoder = EfmlTokenEncoder(config, len(vocab.chars), n_words, vocab.char_pad)
        self.lstm = ElmoLstm(BiLMConfig(
            lstm_dim=config.lstm_dim, projection_dim=config.projection_dim, n_layers=config.n_layers,
            cell_clip=config.cell_clip, proj_clip=config.proj_clip, use_skip_connections=True, dropout=0.0))
        for layer in self.lstm.layers:
            layer.forget_bias.zero_()  # its LSTM adds no forget bias at run time (TF's +1 is ours)
        self.register_buffer("boundary_ids", torch.tensor([vocab.token_ids(BOS), vocab.token_ids(EOS)]),
                             persistent=False)
        self.register_buffer("word_cache", None, persistent=False)  # (V, P) cached token vectors

    @property
    def num_layers(self) -> int:
        return self.config.n_layers + 1

    def batch_to_ids(self, sentences: Sequence[Sequence[str]]) -> torch.Tensor:
        """This model's ids of tokenized sentences (its own char and word vocabularies):
        LongTensor (batch, max_len, 1 + max_chars), the input of `forward` and of `Elmo`."""
        return self.vocab.batch_to_ids(sentences)

    def reset_states(self) -> None:
        """Nothing to reset: the model is stateless."""

    @torch.no_grad()
    def cache_vocabulary(self, ids: torch.Tensor) -> None:
        """Token vectors of a vocabulary's ids (V, 1 + C) computed once; `forward(word_ids=...)`
        then looks them up (row 0 stands for padding)."""
        self.word_cache = self.encode_tokens(ids) if len(ids) else None

    def encode_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, 1 + C) -> (N, P), the token encoder once per distinct token, TOKEN_CHUNK at a time."""
        unique, inverse = torch.unique(ids, dim=0, return_inverse=True)
        return torch.cat([self.token_encoder(chunk) for chunk in unique.split(self.TOKEN_CHUNK)])[inverse]

    def forward(self, ids: torch.Tensor, word_ids: torch.Tensor | None = None, *,
                boundaries: bool = True) -> BiLMOutput:
        """ids (B, T, 1 + C) from `batch_to_ids`, without sentence boundaries -> BiLMOutput with
        T + 2 positions, `<bos>` first and `<eos>` after each sentence's last token, or with
        `boundaries=False` the T word positions only (the same values, less work: from a zero
        state, the state after `<bos>` forward and after `<eos>` backward is the same for every
        sentence, computed once). `word_ids` (B, T): rows of a cached vocabulary (see BiLM)."""
        width = self.vocab.width
        if ids.dim() != 3 or ids.shape[-1] != width or ids.is_floating_point():
            raise ValueError(
                f"this ELMoForManyLangs model expects ids of shape (batch, tokens, {width}) and an integer dtype, got "
                f"{tuple(ids.shape)} {ids.dtype}; make them with the model's own batch_to_ids(sentences) (its char "
                "and word vocabularies), not torch_elmo.batch_to_ids")
        B, T, _ = ids.shape
        lengths = (ids > 0).any(dim=-1).sum(dim=-1)  # (B,)
        initial = None
        if boundaries:
            with_marks = ids.new_zeros(B, T + 2, width)
            with_marks[:, 1 : T + 1] = ids
            with_marks[:, 0] = self.boundary_ids[0]
            with_marks[torch.arange(B, device=ids.device), lengths + 1] = self.boundary_ids[1]
            ids, lengths, T = with_marks, lengths + 2, T + 2
            if word_ids is not None:
                word_ids = F.pad(word_ids, (1, 1))  # boundaries are never cached
        mask = torch.arange(T, device=ids.device) < lengths.unsqueeze(1)  # (B, T)
        tokens = self._token_vectors(ids, mask, word_ids)  # (B, T, P)
        if not boundaries:
            first = self.token_encoder(self.boundary_ids).to(tokens.dtype).unsqueeze(1)  # (2, 1, P): <bos>, <eos>
            _, after_mark = self.lstm(first, [1])
            initial = [(h.expand(-1, B, -1).contiguous(), c.expand(-1, B, -1).contiguous()) for h, c in after_mark]
        packed = PackedBatch.from_lengths(lengths, T)
        outputs, _ = self.lstm(packed.pack(tokens, 2), packed.batch_sizes, initial)
        return BiLMOutput(packed.unpack(tokens, outputs, 2), mask)

    def _token_vectors(self, ids: torch.Tensor, mask: torch.Tensor, word_ids: torch.Tensor | None) -> torch.Tensor:
        B, T, _ = ids.shape
        dtype = self.token_encoder.char_embedding.weight.dtype
        tokens = torch.zeros(B, T, self.config.projection_dim, dtype=dtype, device=ids.device)
        todo = mask.clone()
        if word_ids is not None and self.word_cache is not None:
            cached = (word_ids > 0) & (word_ids < self.word_cache.shape[0]) & mask
            tokens[cached] = self.word_cache[word_ids[cached]].to(dtype)
            todo &= ~cached
        if todo.any():
            tokens[todo] = self.encode_tokens(ids[todo])
        return tokens


# --------------------------------------------------------------------------------------------
# Files


class _ModelFiles:
    """A model folder or zip: its files by name (a zip's may sit in one folder inside it)."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.zip: zipfile.ZipFile | None = None
        self.prefix = ""
        if self.path.is_dir():
            return
        try:
            self.zip = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile):
            raise EfmlFormatError(f"{self.path}: neither a folder nor a zip; give an ELMoForManyLangs model folder "
                                  f"(holding {', '.join(MODEL_FILES)}) or its zip as published") from None
        folders: dict[str, set[str]] = {}
        for name in self.zip.namelist():
            folder, _, base = name.rpartition("/")
            if base in MODEL_FILES and not name.startswith("__MACOSX/"):
                folders.setdefault(folder, set()).add(base)
        if folders:  # the folder with config.json, else the one with most of the files, the shallowest first
            best = min(folders, key=lambda f: (CONFIG not in folders[f], -len(folders[f]), f.count("/"), f))
            self.prefix = best + "/" if best else ""

    def where(self, name: str) -> str:
        return f"{self.path}:{self.prefix}{name}" if self.zip is not None else str(self.path / name)

    def has(self, name: str) -> bool:
        if self.zip is None:
            return (self.path / name).is_file()
        try:
            self.zip.getinfo(self.prefix + name)
            return True
        except KeyError:
            return False

    def read(self, name: str, why: str = "") -> bytes:
        if not self.has(name):
            raise EfmlFormatError(
                f"{self.path}: no {name}{why}; an ELMoForManyLangs model folder or zip holds {', '.join(MODEL_FILES)} "
                "(word.dic when word_dim > 0): give the whole model folder as published")
        if self.zip is None:
            return (self.path / name).read_bytes()
        return self.zip.read(self.prefix + name)

    def text(self, name: str, why: str = "") -> str:
        try:
            return self.read(name, why).decode("utf-8")
        except UnicodeDecodeError as e:
            raise EfmlFormatError(f"{self.where(name)}: not UTF-8 text ({e}); use the file as published") from None


def is_efml_model(path: PathLike) -> bool:
    """Whether `path` is an ELMoForManyLangs model: a folder or zip holding any of its files
    (config.json, char.dic, word.dic, token_embedder.pkl, encoder.pkl) and no bilm-tf options.json.
    (A complete one holds config.json, char.dic, encoder.pkl and the rest; `load_efml` names what
    is missing.)"""
    path = Path(path)
    try:
        if path.is_dir():
            names = {p.name for p in path.iterdir()}
        elif path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = {n.rpartition("/")[2] for n in z.namelist()}
        else:
            return False
    except OSError:
        return False
    return bool(names & set(MODEL_FILES)) and "options.json" not in names


def _resolve_config(files: _ModelFiles, config_path: str) -> tuple[bytes, str]:
    """The architecture file named by config.json's config_path, looked for as its code does: as
    given (relative to the model), by file name beside the model, then among the known ones."""
    base = re.split(r"[\\/]", config_path)[-1]
    if files.zip is None:
        given = files.path / config_path  # an absolute config_path stays as it is
        if given.is_file():
            return given.read_bytes(), str(given)
    elif os.path.isabs(config_path) and os.path.isfile(config_path):
        return Path(config_path).read_bytes(), config_path
    elif files.has(config_path):
        return files.read(config_path), files.where(config_path)
    if base and files.has(base):
        return files.read(base), files.where(base)
    known = KNOWN_CONFIGS / base
    if base and known.is_file():
        return known.read_bytes(), str(known)
    names = ", ".join(sorted(p.name for p in KNOWN_CONFIGS.glob("*.json")))
    raise EfmlFormatError(
        f"{files.where(CONFIG)}: its config_path {config_path!r} is found neither as given, nor as {base!r} beside "
        f"the model, nor among the known architectures ({names}); put the architecture file beside config.json")


def _read_state(files: _ModelFiles, name: str) -> dict[str, torch.Tensor]:
    data = files.read(name)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a bad file
        reason = " ".join(str(e).split())[:200]
        raise EfmlFormatError(f"{files.where(name)}: not a PyTorch state dict of tensors that loads with "
                              f"weights_only=True ({type(e).__name__}: {reason}); use the file as published") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in state.items()):
        raise EfmlFormatError(f"{files.where(name)}: holds {type(state).__name__}, not a state dict of named tensors; "
                              "use the file as published")
    return dict(state)


def efml_shapes(config: EfmlConfig, n_chars: int, n_words: int) -> tuple[dict, dict]:
    """Every tensor of token_embedder.pkl and of encoder.pkl with its shape, by its names."""
    E, F_, P, H = config.char_dim, config.n_filters, config.projection_dim, config.lstm_dim
    token = {"char_emb_layer.embedding.weight": (n_chars, E)}
    if config.word_dim > 0:
        token["word_emb_layer.embedding.weight"] = (n_words, config.word_dim)
    for i, (width, n) in enumerate(config.filters):
        token[f"convolutions.{i}.weight"] = (n, E, width)
        token[f"convolutions.{i}.bias"] = (n,)
    for k in range(config.n_highway):
        token[f"highways._layers.{k}.weight"] = (2 * F_, F_)
        token[f"highways._layers.{k}.bias"] = (2 * F_,)
    token["projection.weight"] = (P, config.word_dim + F_)
    token["projection.bias"] = (P,)
    encoder = {}
    for k in range(config.n_layers):
        for direction in ("forward", "backward"):
            layer = f"{direction}_layer_{k}"
            encoder[f"{layer}.input_linearity.weight"] = (4 * H, P)
            encoder[f"{layer}.state_linearity.weight"] = (4 * H, P)
            encoder[f"{layer}.state_linearity.bias"] = (4 * H,)
            encoder[f"{layer}.state_projection.weight"] = (P, H)
    return token, encoder


def _check_state(files: _ModelFiles, name: str, state: dict, shapes: dict, why: str) -> None:
    for key, shape in shapes.items():
        if key not in state:
            raise EfmlFormatError(f"{files.where(name)}: no tensor {key!r} (expected shape {shape}); is this the "
                                  "file of the model whose config.json and dictionaries sit beside it?")
        if tuple(state[key].shape) != shape:
            raise EfmlFormatError(f"{files.where(name)}: {key!r} has shape {tuple(state[key].shape)}, expected {shape} "
                                  f"({why}); use the files of one model together")
    extra = sorted(set(state) - set(shapes))
    if extra:
        raise EfmlFormatError(f"{files.where(name)}: unexpected tensors {', '.join(extra[:3])}"
                              f"{' ...' if len(extra) > 3 else ''}; the architecture file does not describe this model")


def _read_dictionary(files: _ModelFiles, name: str, specials: Sequence[str], why: str) -> dict[str, int]:
    lexicon = parse_dictionary(files.text(name, why), files.where(name))
    missing = [s for s in specials if s not in lexicon]
    if missing:
        raise EfmlFormatError(f"{files.where(name)}: no entry for {', '.join(missing)}, which its code needs; "
                              "use the dictionary as published")
    bad = [(t, i) for t, i in lexicon.items() if not 0 <= i < len(lexicon)]
    if bad:
        raise EfmlFormatError(f"{files.where(name)}: the id of {bad[0][0]!r} is {bad[0][1]}, outside 0..{len(lexicon) - 1} "
                              f"({len(lexicon)} entries); use the dictionary as published")
    return lexicon


def read_efml(path: PathLike) -> tuple[EfmlConfig, EfmlVocabulary, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Reads and checks a model folder or zip: (config, vocabulary, token_embedder.pkl's state
    dict, encoder.pkl's), every shape checked against the architecture and the dictionaries."""
    files = _ModelFiles(path)
    try:
        options = json.loads(files.text(CONFIG))
    except json.JSONDecodeError as e:
        raise EfmlFormatError(f"{files.where(CONFIG)}: not JSON ({e}); use the model's config.json as published") from None
    if not isinstance(options, dict) or not isinstance(options.get("config_path"), str):
        raise EfmlFormatError(f"{files.where(CONFIG)}: no \"config_path\" (the architecture file's name); "
                              "set it, e.g. \"config_path\": \"cnn_50_100_512_4096_sample.json\"")
    arch_bytes, arch_source = _resolve_config(files, options["config_path"])
    try:
        arch = json.loads(arch_bytes.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EfmlFormatError(f"{arch_source}: not a JSON architecture file ({e})") from None
    config = config_from_architecture(arch, arch_source)
    chars = _read_dictionary(files, CHAR_DIC, SPECIAL_CHARS, "")
    words = (_read_dictionary(files, WORD_DIC, SPECIAL_WORDS, f" (the architecture has word_dim {config.word_dim})")
             if config.word_dim > 0 else None)
    token_shapes, encoder_shapes = efml_shapes(config, len(chars), len(words) if words else 0)
    token_state, encoder_state = _read_state(files, TOKEN_EMBEDDER), _read_state(files, ENCODER)
    why = (f"{CHAR_DIC} has {len(chars)} entries" + (f", {WORD_DIC} {len(words)}" if words else "")
           + f"; {arch_source} gives the other sizes")
    _check_state(files, TOKEN_EMBEDDER, token_state, token_shapes, why)
    _check_state(files, ENCODER, encoder_state, encoder_shapes, f"{arch_source} gives the sizes")
    return config, EfmlVocabulary(chars, words, config.max_chars), token_state, encoder_state


def state_dict_from_efml(config: EfmlConfig, token_state: Mapping[str, torch.Tensor],
                         encoder_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Its two state dicts -> EfmlBiLM's. The token encoder's tensors keep their layout; the LSTM's
    are transposed (its Linear computes x W^T, ours x W) and their gate blocks reordered from its
    i, f, g, o to our i, j (= g), f, o; the two directions are stacked (forward first)."""
    t = token_state
    state = {"token_encoder.char_embedding.weight": t["char_emb_layer.embedding.weight"]}
    if config.word_dim > 0:
        state["token_encoder.word_embedding.weight"] = t["word_emb_layer.embedding.weight"]
    for i in range(len(config.filters)):
        state[f"token_encoder.convs.{i}.weight"] = t[f"convolutions.{i}.weight"]  # (n, E, width), as Conv1d's
        state[f"token_encoder.convs.{i}.bias"] = t[f"convolutions.{i}.bias"]
    for k in range(config.n_highway):
        state[f"token_encoder.highways.layers.{k}.weight"] = t[f"highways._layers.{k}.weight"]  # [A; B]
        state[f"token_encoder.highways.layers.{k}.bias"] = t[f"highways._layers.{k}.bias"]
    state["token_encoder.projection.weight"] = t["projection.weight"]
    state["token_encoder.projection.bias"] = t["projection.bias"]

    H = config.lstm_dim

    def gates(w: torch.Tensor) -> torch.Tensor:  # rows (or entries) [i, f, g, o] -> [i, g, f, o]
        i, f, g, o = w.split(H, dim=0)
        return torch.cat([i, g, f, o], dim=0)

    e = encoder_state
    for k in range(config.n_layers):
        names = [f"forward_layer_{k}", f"backward_layer_{k}"]
        layer = f"lstm.layers.{k}"
        state[f"{layer}.w_input"] = torch.stack([gates(e[f"{n}.input_linearity.weight"]).T for n in names])  # (2, P, 4H)
        state[f"{layer}.w_state"] = torch.stack([gates(e[f"{n}.state_linearity.weight"]).T for n in names])  # (2, P, 4H)
        state[f"{layer}.bias"] = torch.stack([gates(e[f"{n}.state_linearity.bias"]) for n in names])  # (2, 4H)
        state[f"{layer}.w_proj"] = torch.stack([e[f"{n}.state_projection.weight"].T for n in names])  # (2, H, P)
    return state


def load_efml(path: PathLike, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
              stateful: bool = False) -> EfmlBiLM:
    """An EfmlBiLM with the weights of an ELMoForManyLangs model folder or zip, in eval mode."""
    config, vocab, token_state, encoder_state = read_efml(path)
    bilm = EfmlBiLM(config, vocab, stateful=stateful).to(dtype=dtype)
    bilm.load_state_dict(state_dict_from_efml(config, token_state, encoder_state))  # copied in `dtype`
    return bilm.to(device=device).eval()


def efml_fingerprint(path: PathLike) -> str:
    """What identifies a model folder or zip (for `elmo embed --resume`): its files' bytes."""
    files = _ModelFiles(path)
    h = hashlib.sha256()
    for name in MODEL_FILES:
        if files.has(name):
            h.update(name.encode() + b"\0" + hashlib.sha256(files.read(name)).digest())
    return h.hexdigest()
