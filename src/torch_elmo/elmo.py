"""The user-facing API, as AllenNLP users know it: `Elmo` (a module inside a task model) and
`ElmoEmbedder` (tokens in, numpy arrays out)."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from .chars import batch_to_ids
from .errors import UsageError
from .formats import load_bilm
from .hub import model_files
from .model import BiLM, ScalarMix

PathLike = str | os.PathLike


def _pretrained_files(model: PathLike, weight_file: PathLike | None, cache_dir: PathLike | None) -> tuple[str, str]:
    if weight_file is not None:
        return model_files(model, weight_file, cache_dir=cache_dir)
    return model_files(None, None, model, cache_dir=cache_dir)


def _cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX-512 BF16 or AMX); True when
    PyTorch cannot tell."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None) or all(check is None for check in checks)


class Elmo(nn.Module):
    """ELMo representations for a downstream task: n learned mixes of the biLM layers.

    forward(character_ids (..., T, 50), word_inputs=None) returns
    {"elmo_representations": [tensor (..., T, dim)] * n, "mask": (..., T)}, like AllenNLP's Elmo.
    """

    def __init__(self, options_file: PathLike | None, weight_file: PathLike | None,
                 num_output_representations: int, requires_grad: bool = False,
                 do_layer_norm: bool = False, dropout: float = 0.5,
                 vocab_to_cache: Sequence[str] | None = None,
                 keep_sentence_boundaries: bool = False,
                 scalar_mix_parameters: list[float] | None = None,
                 stateful: bool = False):
        super().__init__()
        options_file, weight_file = model_files(options_file, weight_file)
        # `_elmo_lstm` and `scalar_mix_{k}` are AllenNLP's attribute names, kept so that task
        # models written (and state dicts saved) for allennlp.modules.elmo.Elmo work unchanged.
        self._elmo_lstm = load_bilm(options_file, weight_file, stateful=stateful)
        self._elmo_lstm.requires_grad_(requires_grad)
        self._has_cached_vocab = vocab_to_cache is not None
        if vocab_to_cache is not None:
            to_ids = getattr(self._elmo_lstm, "batch_to_ids", batch_to_ids)  # an EfmlBiLM has its own ids
            self._elmo_lstm.cache_vocabulary(to_ids([[w] for w in vocab_to_cache]).squeeze(1))
        self._keep_sentence_boundaries = keep_sentence_boundaries
        self._dropout = nn.Dropout(p=dropout)
        for k in range(num_output_representations):
            mix = ScalarMix(self._elmo_lstm.num_layers, do_layer_norm=do_layer_norm,
                            initial_scalar_parameters=scalar_mix_parameters,
                            trainable=scalar_mix_parameters is None)
            self.add_module(f"scalar_mix_{k}", mix)
        self.num_output_representations = num_output_representations

    @classmethod
    def from_pretrained(cls, model: PathLike, num_output_representations: int = 1, *,
                        weight_file: PathLike | None = None, cache_dir: PathLike | None = None, **kwargs) -> Elmo:
        """Elmo from a published model's name (`elmo models`), a model folder, a .zip/.tar.gz
        archive's path or URL, or an options file or URL with `weight_file`; downloads are cached
        (torch_elmo.hub). Other arguments as Elmo's."""
        options, weights = _pretrained_files(model, weight_file, cache_dir)
        return cls(options, weights, num_output_representations, **kwargs)

    @property
    def bilm(self) -> BiLM:
        return self._elmo_lstm

    def get_output_dim(self) -> int:
        return self._elmo_lstm.config.output_dim

    def reset_states(self) -> None:
        self._elmo_lstm.reset_states()

    def layer_weights(self) -> list[torch.Tensor]:
        """The normalised layer weights softmax(s) of each output representation."""
        return [getattr(self, f"scalar_mix_{k}").layer_weights for k in range(self.num_output_representations)]

    def forward(self, inputs: torch.Tensor, word_inputs: torch.Tensor | None = None) -> dict:
        shape = inputs.shape  # (..., T, 50)
        if inputs.dim() < 3:
            raise UsageError(
                f"Elmo expects character ids of shape (..., tokens, 50), got {tuple(shape)}; "
                "make them with torch_elmo.batch_to_ids(sentences)"
            )
        rows = math.prod(shape[:-2])
        char_ids = inputs.reshape(rows, *shape[-2:])
        words = word_inputs.reshape(rows, word_inputs.shape[-1]) if word_inputs is not None else None
        output = self._elmo_lstm(char_ids, words, boundaries=self._keep_sentence_boundaries)
        mask = output.mask
        representations = []
        for k in range(self.num_output_representations):
            mixed = getattr(self, f"scalar_mix_{k}")(output.layers, mask)
            representations.append(self._dropout(mixed))
        lead = shape[:-2]
        return {
            "elmo_representations": [r.reshape(*lead, r.shape[1], r.shape[2]) for r in representations],
            "mask": mask.reshape(*lead, mask.shape[1]),
        }


class ElmoEmbedder:
    """Tokenized sentences in, numpy arrays (3, n_tokens, dim) out, as AllenNLP 0.9's ElmoEmbedder."""

    def __init__(self, options_file: PathLike | None = None, weight_file: PathLike | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 stateful: bool = False, token_cache_size: int = 50_000, implementation: str = "fast"):
        """`token_cache_size`: how many distinct tokens keep their char-CNN vector across batches
        (2 KB each for the original model), so that a repeated token never runs the CNN again.
        `implementation`: "fast" (exact, the default), "plain" (the readable reference), "int8"
        (the LSTM's products in int8 on the CPU: faster for large models, not exact)."""
        options_file, weight_file = model_files(options_file, weight_file)
        self.device = torch.device(device)
        if dtype == torch.bfloat16 and self.device.type == "cpu" and not _cpu_has_bf16_matmul():
            warnings.warn("bfloat16 on this CPU (it has neither AVX-512 BF16 nor AMX) runs slower than float32; "
                          "use float32 here, bfloat16 on a GPU or a CPU with AVX-512 BF16 or AMX", stacklevel=2)
        self.bilm = load_bilm(options_file, weight_file, dtype=dtype, device=self.device, stateful=stateful,
                              implementation=implementation)
        self._batch_to_ids = getattr(self.bilm, "batch_to_ids", batch_to_ids)  # an EfmlBiLM has its own ids
        self._token_rows: dict[str, int] = {}  # token -> row of bilm.word_cache and of _token_chars (0: padding)
        self._token_chars: torch.Tensor | None = None  # (cache + 1, C) each cached token's character ids
        self._copies: torch.cuda.Stream | None = None  # on a GPU, the stream that copies arrays to the host
        if token_cache_size > 0:
            self.bilm.word_cache = torch.zeros(token_cache_size + 1, self.bilm.config.projection_dim,
                                               dtype=dtype, device=self.device)
            width = self._batch_to_ids([["a"]]).shape[-1]  # the ids of a token: 50 chars, or an EfmlBiLM's own
            self._token_chars = torch.zeros(token_cache_size + 1, width, dtype=torch.long, device=self.device)

    @classmethod
    def from_pretrained(cls, model: PathLike, *, weight_file: PathLike | None = None,
                        cache_dir: PathLike | None = None, **kwargs) -> ElmoEmbedder:
        """ElmoEmbedder from what Elmo.from_pretrained takes. Other arguments as ElmoEmbedder's."""
        options, weights = _pretrained_files(model, weight_file, cache_dir)
        return cls(options, weights, **kwargs)

    @property
    def dim(self) -> int:
        return self.bilm.config.output_dim

    @torch.inference_mode()
    def batch_to_embeddings(self, batch: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L+1, T, dim) activations without sentence boundaries, and the (B, T) mask."""
        char_ids, word_ids = self._ids(batch)
        output = self.bilm(char_ids, word_ids, boundaries=False)
        return output.activations, output.mask  # (B, L+1, T, dim), (B, T)

    def clear_token_cache(self) -> None:
        self._token_rows.clear()

    def _ids(self, batch: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's character ids (B, T, C) and its rows of the token cache (B, T), or None
        without a cache. A token is spelled out once, when it enters the cache; its vector and
        its character ids are then looked up (spelling every token of every batch in Python
        costs a small model as much as its LSTMs). Tokens that find the cache full get -1: they go
        through the char CNN."""
        if self._token_chars is None:
            return self._batch_to_ids(batch).to(self.device), None
        rows = self._token_rows
        room = self._token_chars.shape[0] - 1 - len(rows)
        new = list(dict.fromkeys(t for sentence in batch for t in sentence if t not in rows))
        if new[:room]:
            start = len(rows) + 1
            new_chars = self._batch_to_ids([new[:room]])[0].to(self.device)  # (n, C)
            self._token_chars[start : start + len(new_chars)] = new_chars
            self.bilm.word_cache[start : start + len(new_chars)] = self.bilm.encode_tokens(new_chars)
            rows.update((t, start + k) for k, t in enumerate(new[:room]))
        width = max((len(s) for s in batch), default=0)
        word_ids = torch.tensor([[rows.get(t, -1) for t in s] + [0] * (width - len(s)) for s in batch],
                                dtype=torch.long, device=self.device).view(len(batch), width)
        char_ids = self._token_chars[word_ids.clamp(min=0)]  # (B, T, C); padding is row 0, all zeros
        if len(new) > room:  # the cache is full: spell these out
            uncached = word_ids < 0
            char_ids[uncached] = self._batch_to_ids([[t for s in batch for t in s if t not in rows]])[0].to(self.device)
        return char_ids, word_ids

    def embed_sentence(self, sentence: Sequence[str]) -> np.ndarray:
        return self.embed_batch([sentence])[0]

    def embed_batch(self, batch: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """One array (L+1, n_tokens, dim) per sentence; an empty sentence gives (L+1, 0, dim)."""
        return self._arrays(self._to_host(batch)) if len(batch) else []

    OVERLAP_COPIES = True  # on a GPU, a batch's arrays travel to the host while the next batch runs

    def _to_host(self, batch: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor, torch.cuda.Event | None]:
        """The batch embedded, its activations and mask on their way to host memory. On a GPU a
        side stream copies them into pinned memory (several times the speed of a copy to pageable
        memory) and the call returns at once: the next batch's work is queued meanwhile, and
        `_arrays` waits for the copy."""
        embeddings, mask = self.batch_to_embeddings(batch)
        if embeddings.dtype not in (torch.float32, torch.float64):
            embeddings = embeddings.float()  # numpy has no bfloat16
        if embeddings.device.type != "cuda" or not self.OVERLAP_COPIES:
            return embeddings.cpu(), mask.cpu(), None
        if self._copies is None:
            self._copies = torch.cuda.Stream(embeddings.device)
        self._copies.wait_stream(torch.cuda.current_stream(embeddings.device))
        host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in (embeddings, mask)]
        with torch.cuda.stream(self._copies):
            for to, t in zip(host, (embeddings, mask)):
                to.copy_(t, non_blocking=True)
                t.record_stream(self._copies)  # its memory is not reused before the copy has read it
            copied = torch.cuda.Event()
            copied.record(self._copies)
        return host[0], host[1], copied

    @staticmethod
    def _arrays(on_the_way: tuple[torch.Tensor, torch.Tensor, torch.cuda.Event | None]) -> list[np.ndarray]:
        """`_to_host`'s batch as one array per sentence (views of the batch's array; copies out
        of pinned memory, which goes back to PyTorch's pool of it)."""
        embeddings, mask, copied = on_the_way
        if copied is not None:
            copied.synchronize()
        array, lengths = embeddings.numpy(), mask.sum(dim=1).tolist()
        return [array[i, :, :n].copy() if copied is not None else array[i, :, :n] for i, n in enumerate(lengths)]

    BATCH_TOKENS = 32_768  # padded token positions a batch may hold (the output's memory is about this x layers x dim)
    WINDOW_BATCHES = 16  # batches of sentences grouped by length at once

    def embed_sentences(self, sentences: Iterable[Sequence[str]], batch_size: int = 256) -> Iterator[np.ndarray]:
        """Embeds a stream of sentences, in input order. Stateless: sentences are grouped by
        length within a window of batches to cut padding; stateful: batches in input order.

        Memory stays bounded whatever the sentences: a batch holds at most `batch_size`
        sentences and BATCH_TOKENS padded positions (a longer sentence is a batch of its own),
        and a window at most WINDOW_BATCHES such batches."""
        window = 1 if self.bilm.stateful else self.WINDOW_BATCHES
        chunk: list[Sequence[str]] = []
        tokens = 0
        for sentence in sentences:
            chunk.append(sentence)
            tokens += len(sentence)
            if len(chunk) == window * batch_size or tokens >= window * self.BATCH_TOKENS:
                yield from self._embed_window(chunk, batch_size)
                chunk, tokens = [], 0
        if chunk:
            yield from self._embed_window(chunk, batch_size)

    def _embed_window(self, sentences: list[Sequence[str]], batch_size: int) -> Iterator[np.ndarray]:
        order = list(range(len(sentences)))
        if not self.bilm.stateful:
            order.sort(key=lambda i: len(sentences[i]))
        results: list[np.ndarray | None] = [None] * len(sentences)

        def collect(rows: list[int], on_the_way) -> None:
            for i, array in zip(rows, self._arrays(on_the_way)):
                results[i] = array

        previous = None  # (rows, a batch on its way to the host): on a GPU, collected once the next one is queued
        for rows in self._batches(order, sentences, batch_size):
            current = rows, self._to_host([sentences[i] for i in rows])
            if previous is not None:
                collect(*previous)
            previous = current
        if previous is not None:
            collect(*previous)
        yield from results

    def _batches(self, order: list[int], sentences: list[Sequence[str]], batch_size: int) -> Iterator[list[int]]:
        """Consecutive rows of `order`, at most batch_size of them and BATCH_TOKENS padded
        positions (the longest sentence times the rows); stateful, batch_size rows as given,
        since each row carries its state to the same row of the next batch."""
        if self.bilm.stateful:
            yield from (order[k : k + batch_size] for k in range(0, len(order), batch_size))
            return
        rows: list[int] = []
        for i in order:  # ascending length: the last row is the longest
            if rows and (len(rows) == batch_size or (len(rows) + 1) * len(sentences[i]) > self.BATCH_TOKENS):
                yield rows
                rows = []
            rows.append(i)
        if rows:
            yield rows
