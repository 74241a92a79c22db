"""Training data for the biLM, as bilm-tf prepared it: vocabulary, streamed corpus, batches.

Read top to bottom:
    Vocabulary        the published vocabulary format (`<S>`, `</S>`, `<UNK>` first, then by
                      descending count); OOV words map to `<UNK>` for the softmax targets only
    corpus_files      a path, a glob or a list of them -> the shard files
    SentenceStream    sentences from the shards, one shard in memory at a time: shards in
                      shuffled order, sentences shuffled within a shard, blank lines skipped
    StreamBatcher     bilm-tf's `_get_batch`: `<S> ... </S>` sentences packed back to back into
                      `batch_size` rows of `unroll_steps` tokens, a row's partial sentence carried
                      into the next batch; optionally a row restarts (see `restart_prob`)
    LMBatch           one direction's batch as tensors (char ids, word ids, next-token targets)
    BidirectionalBatcher  the forward stream and the independently shuffled, reversed stream

Every stateful piece has `state_dict()` / `load_state_dict()` (plain Python values) so that a
training run resumes at exactly the same token with the same future shuffles.

Shapes: B rows (`batch_size`), T steps (`unroll_steps`), C = 50 characters per token.
"""

from __future__ import annotations

import glob
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .chars import BOS_TOKEN, EOS_TOKEN, MAX_CHARS, token_to_char_ids
from .errors import DataError, UsageError
from .files import atomic_path

UNK_TOKEN = "<UNK>"
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)
IGNORE_INDEX = -100  # target of a padding position (evaluation's last, partial batch)

PathSpec = str | os.PathLike | Sequence[str | os.PathLike]


# --------------------------------------------------------------------------------------------
# Corpus files


def corpus_files(spec: PathSpec) -> list[str]:
    """A path, a glob pattern, or a list of them -> the sorted, de-duplicated shard files."""
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not specs:
        raise DataError("no corpus given; pass one or more text files or a glob such as 'data/*.txt'")
    files: list[str] = []
    for s in specs:
        s = os.fspath(s)
        matches = sorted(glob.glob(s)) if glob.has_magic(s) else ([s] if os.path.exists(s) else [])
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise DataError(f"{s}: no such corpus file (or no file matches this pattern)")
        files.extend(matches)
    return sorted(dict.fromkeys(files))


def read_sentences(path: str | os.PathLike) -> list[str]:
    """The non-blank lines of one shard, stripped (a line is one whitespace-tokenized sentence)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line for line in (raw.strip() for raw in f) if line]


def iter_sentences(files: Iterable[str]) -> Iterator[list[str]]:
    """Every sentence of the files in order, as tokens, one line in memory at a time."""
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                tokens = line.split()
                if tokens:
                    yield tokens


def count_inputs(files: Iterable[str]) -> int:
    """Input positions in one pass over the corpus: a sentence of n tokens gives n + 1 (`<S>`
    and its words predict the next token; `</S>` predicts nothing). Streamed."""
    return sum(len(tokens) + 1 for tokens in iter_sentences(files))


# --------------------------------------------------------------------------------------------
# Vocabulary


def read_token_lines(path: str | os.PathLike) -> list[str]:
    """The first field of each non-blank line of a vocabulary file (a count after it is ignored)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.split()[0] for line in f if line.strip()]
    except FileNotFoundError:
        raise DataError(f"{path}: no such vocabulary file; give a text file with one token a line") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text vocabulary ({e})") from None


class Vocabulary:
    """Token <-> id, with `<S>`, `</S>`, `<UNK>` first and the words by descending count.

    The sampled softmax's log-uniform sampler assumes exactly this order (frequent words first).
    """

    def __init__(self, tokens: Sequence[str], counts: Sequence[int] | None = None):
        self.tokens = list(tokens)
        self.counts = list(counts) if counts is not None else None
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            dup = next(t for t, n in Counter(self.tokens).items() if n > 1)
            raise DataError(f"the vocabulary lists {dup!r} twice; each token must appear once")
        missing = [t for t in SPECIAL_TOKENS if t not in self.index]
        if missing:
            raise DataError(f"the vocabulary lacks {', '.join(missing)}")
        self.bos_id = self.index[BOS_TOKEN]
        self.eos_id = self.index[EOS_TOKEN]
        self.unk_id = self.index[UNK_TOKEN]

    def __len__(self) -> int:
        return len(self.tokens)

    def word_to_id(self, token: str) -> int:
        return self.index.get(token, self.unk_id)

    @classmethod
    def build(cls, corpus: PathSpec, min_count: int = 1, max_size: int | None = None) -> Vocabulary:
        """Counts the corpus (streamed) and keeps words seen at least `min_count` times, at most
        `max_size` entries in all (the three special tokens included); ties broken by token."""
        counts: Counter[str] = Counter()
        for tokens in iter_sentences(corpus_files(corpus)):
            counts.update(tokens)
        if not counts:
            raise DataError(f"{corpus}: the corpus has no sentences (every line is blank)")
        for t in SPECIAL_TOKENS:
            counts.pop(t, None)
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            if max_size < len(SPECIAL_TOKENS):
                raise DataError(f"max_size {max_size} leaves no room for {', '.join(SPECIAL_TOKENS)}")
            words = words[: max_size - len(SPECIAL_TOKENS)]
        return cls(list(SPECIAL_TOKENS) + words, [0] * len(SPECIAL_TOKENS) + [counts[w] for w in words])

    @classmethod
    def read(cls, path: str | os.PathLike) -> Vocabulary:
        """Reads a published vocabulary file: one token a line (a count after it is ignored)."""
        path = Path(path)
        tokens = read_token_lines(path)
        missing = [t for t in SPECIAL_TOKENS if t not in tokens]
        if missing:
            raise DataError(
                f"{path}: the vocabulary lacks {', '.join(missing)}; a biLM vocabulary starts with the "
                f"lines <S>, </S>, <UNK> (add them as the first three lines, or build the vocabulary "
                f"from the corpus with Vocabulary.build / `--min-count`)"
            )
        try:
            return cls(tokens)
        except DataError as e:
            raise DataError(f"{path}: {e}") from None

    def write(self, path: str | os.PathLike) -> None:
        """Writes the published format (one token a line), atomically."""
        with atomic_path(path) as tmp:
            Path(tmp).write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Streamed sentences


class SentenceStream:
    """Sentences of a corpus, one shard (file) in memory at a time.

    Training (`loop=True`): shards in a shuffled order, sentences shuffled within each shard,
    reshuffled on every pass, endlessly, as bilm-tf's `LMDataset` with `shuffle_on_load`.
    Evaluation (`loop=False, shuffle=False`): every sentence once, in file order.
    With `world_size` > 1, rank r reads shards r, r + W, ... (or, with fewer shards than ranks,
    every W-th sentence of each shard). `block=(i, n)` keeps the i-th of n contiguous blocks of
    each shard's sentences; `backwards` reads shards and sentences last to first (one row of
    contiguous batching: see StreamBatcher).

    The state is the RNG, the remaining shard order, the current shard with the seed of its
    shuffle, and the position in it: enough to continue at the same sentence after a restart.
    """

    def __init__(self, files: Sequence[str], *, seed: int = 0, shuffle: bool = True, loop: bool = True,
                 rank: int = 0, world_size: int = 1, block: tuple[int, int] | None = None,
                 backwards: bool = False):
        if not files:
            raise DataError("the corpus has no files")
        self.files = list(files)
        self.shuffle, self.loop = shuffle, loop
        self.block, self.backwards = block, backwards
        self.rank, self.world_size = rank, world_size
        if len(self.files) >= world_size:
            self._my_files, self._line_stride = self.files[rank::world_size], 1
        else:
            self._my_files, self._line_stride = self.files, world_size
        self._rng = random.Random(seed)
        self._queue: list[str] = []  # shards still to read in this pass, next one last
        self._shard: str | None = None
        self._shard_seed = 0
        self._pos = 0
        self._sentences: list[str] = []
        self._order: list[int] = []
        self._passes = 0
        self._empty_pass = True  # no sentence seen yet in the current pass

    def _load(self, shard: str, shard_seed: int) -> None:
        lines = read_sentences(shard)
        if self._line_stride > 1:
            lines = lines[self.rank :: self._line_stride]
        if self.block is not None:
            i, n = self.block
            lines = lines[i * len(lines) // n : (i + 1) * len(lines) // n]
        order = list(range(len(lines)))
        if self.shuffle:
            random.Random(shard_seed).shuffle(order)
        if self.backwards:
            order.reverse()
        self._shard, self._shard_seed, self._sentences, self._order = shard, shard_seed, lines, order

    def _next_shard(self) -> bool:
        """Loads the next shard; False at the end of a single pass."""
        if not self._queue:
            if self._passes > 0 and self._empty_pass:
                raise DataError(f"the corpus {self.files} has no sentences (every line is blank)")
            if self._passes > 0 and not self.loop:
                return False
            self._queue = list(self._my_files)
            if self.shuffle:
                self._rng.shuffle(self._queue)
            if not self.backwards:
                self._queue.reverse()
            self._passes += 1
            self._empty_pass = True
        self._load(self._queue.pop(), self._rng.getrandbits(64))
        self._pos = 0
        return True

    def next_sentence(self) -> list[str] | None:
        """The next sentence as tokens, or None when a single pass is over."""
        while self._shard is None or self._pos >= len(self._order):
            if not self._next_shard():
                return None
        line = self._sentences[self._order[self._pos]]
        self._pos += 1
        self._empty_pass = False
        return line.split()

    def __iter__(self) -> Iterator[list[str]]:
        while (sentence := self.next_sentence()) is not None:
            yield sentence

    def state_dict(self) -> dict:
        return {"rng": self._rng.getstate(), "queue": list(self._queue), "shard": self._shard,
                "shard_seed": self._shard_seed, "pos": self._pos, "passes": self._passes,
                "empty_pass": self._empty_pass, "files": list(self._my_files)}

    def load_state_dict(self, state: dict) -> None:
        if state["files"] != self._my_files:
            raise DataError(
                "the corpus files differ from those of the checkpoint; resume with the same corpus "
                "(and the same number of processes)"
            )
        self._rng.setstate(_as_rng_state(state["rng"]))
        self._queue = list(state["queue"])
        self._passes, self._empty_pass = state["passes"], state["empty_pass"]
        if state["shard"] is not None:
            self._load(state["shard"], state["shard_seed"])
        self._pos = state["pos"]


def _as_rng_state(state):
    """random.Random states survive JSON as lists; setstate wants tuples."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


# --------------------------------------------------------------------------------------------
# Batches


@dataclass
class LMBatch:
    """One direction's batch: each row reads its tokens left to right and predicts the next."""

    char_ids: torch.Tensor  # (B, T, C) input tokens' character ids, all-zero at padding
    word_ids: torch.Tensor  # (B, T) input tokens' vocabulary ids (for word-input models)
    targets: torch.Tensor  # (B, T) next-token ids, IGNORE_INDEX at padding
    tokens: list[list[str]]  # the input tokens, row by row (for tests and debugging)
    restart: torch.Tensor | None = None  # (B,) bool: rows that begin a new sentence from a zero state

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())


class StreamBatcher:
    """bilm-tf's `_get_batch` over a SentenceStream, with its state.

    Each sentence becomes `<S> w_1 ... w_n </S>` (reversed, `</S> w_n ... w_1 <S>`, for the
    backward LM). Row i is filled to `unroll_steps` tokens from sentences taken in turn from the
    one stream, row 0 first; a sentence that does not fit is continued in the same row of the next
    batch. Inputs are a sentence's tokens but the last, targets the tokens after them.

    Given one stream per row instead (contiguous batching, as Zaremba et al. and Kim et al. batch
    the Penn Treebank: row i reads the i-th contiguous block of the text, so that a sentence's
    context is the sentences before it in its document), row i takes its sentences from stream i.
    At the end of a single pass the last, partial batch is dropped (`drop_last`, as the original
    does in training) or padded with IGNORE_INDEX targets (evaluation: every token counts).

    With `restart_prob` p > 0, at each batch each row with probability p drops the rest of its
    sentence and begins a new one, flagged in `LMBatch.restart` so that the model starts it from a
    zero state. The original never resets a row (p = 0); a model trained so has only ever seen a
    zero state at its first update, yet stateless embedding starts every sentence from one, and an
    under-trained LSTM can fall from it into a state it never leaves.
    """

    def __init__(self, stream: SentenceStream | Sequence[SentenceStream], vocab: Vocabulary, batch_size: int,
                 unroll_steps: int, *, reverse: bool = False, drop_last: bool = True, restart_prob: float = 0.0,
                 seed: int = 0):
        if batch_size < 1 or unroll_steps < 1:
            raise UsageError(f"batch_size and unroll_steps must be positive, got {batch_size}, {unroll_steps}")
        if not 0.0 <= restart_prob < 1.0:
            raise UsageError(f"restart_prob must be in [0, 1), got {restart_prob}")
        self.row_streams = list(stream) if isinstance(stream, (list, tuple)) else None
        if self.row_streams is not None and len(self.row_streams) != batch_size:
            raise UsageError(f"{len(self.row_streams)} row streams for a batch of {batch_size} rows")
        self.stream = None if self.row_streams is not None else stream
        self.vocab = vocab
        self.batch_size, self.unroll_steps = batch_size, unroll_steps
        self.reverse, self.drop_last = reverse, drop_last
        self.restart_prob = restart_prob
        self._rng = random.Random(f"restart {seed}")  # draws the restarting rows (apart from the stream's)
        self._rows: list[list[str] | None] = [None] * batch_size  # each row's unread sentence part
        self._exhausted = [False] * batch_size  # rows whose stream is over (single pass only)
        self._char_cache: dict[str, list[int]] = {}

    def _wrap(self, tokens: list[str]) -> list[str]:
        if self.reverse:
            return [EOS_TOKEN] + tokens[::-1] + [BOS_TOKEN]
        return [BOS_TOKEN] + tokens + [EOS_TOKEN]

    def _next_sentence(self, i: int) -> list[str] | None:
        """Row i's next sentence; None once its stream is over (the shared one: for every row)."""
        if self._exhausted[i]:
            return None
        if self.row_streams is not None:
            sentence = self.row_streams[i].next_sentence()
            self._exhausted[i] = sentence is None
        else:
            sentence = self.stream.next_sentence()
            if sentence is None:
                self._exhausted = [True] * self.batch_size
        return sentence

    def next_tokens(self) -> tuple[list[list[str]], list[list[str]]] | None:
        """(inputs, targets) as B rows of tokens, or None when the data is over."""
        if all(self._exhausted) and not any(r is not None and len(r) > 1 for r in self._rows):
            return None
        inputs: list[list[str]] = [[] for _ in range(self.batch_size)]
        targets: list[list[str]] = [[] for _ in range(self.batch_size)]
        for i in range(self.batch_size):
            while len(inputs[i]) < self.unroll_steps:
                row = self._rows[i]
                if row is None or len(row) <= 1:
                    sentence = self._next_sentence(i)
                    if sentence is None:  # the stream is over: the row keeps what it carries
                        break
                    row = self._rows[i] = self._wrap(sentence)
                n = min(len(row) - 1, self.unroll_steps - len(inputs[i]))
                inputs[i] += row[:n]
                targets[i] += row[1 : n + 1]
                self._rows[i] = row[n:]
        if (self.drop_last and any(self._exhausted)) or (all(self._exhausted) and not any(inputs)):
            self._rows = [None] * self.batch_size
            return None
        return inputs, targets

    def __iter__(self) -> Iterator[LMBatch]:
        while (batch := self.next_batch()) is not None:
            yield batch

    def next_batch(self) -> LMBatch | None:
        restart = self._restart_rows()
        rows = self.next_tokens()
        return None if rows is None else self.encode(*rows, restart=restart)

    def _restart_rows(self) -> torch.Tensor | None:
        """Draws the rows that restart in this batch and drops what they carried."""
        if self.restart_prob == 0.0:
            return None
        restart = torch.tensor([self._rng.random() < self.restart_prob for _ in range(self.batch_size)])
        for i in restart.nonzero().flatten().tolist():
            self._rows[i] = None
        return restart

    def encode(self, inputs: list[list[str]], targets: list[list[str]],
               restart: torch.Tensor | None = None) -> LMBatch:
        B, T = self.batch_size, self.unroll_steps
        char_ids = torch.zeros(B, T, MAX_CHARS, dtype=torch.long)
        word_ids = torch.zeros(B, T, dtype=torch.long)
        target_ids = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
        for i, (row, row_targets) in enumerate(zip(inputs, targets)):
            if not row:
                continue
            n = len(row)
            char_ids[i, :n] = torch.tensor([self._char_ids(t) for t in row])
            word_ids[i, :n] = torch.tensor([self.vocab.word_to_id(t) for t in row])
            target_ids[i, :n] = torch.tensor([self.vocab.word_to_id(t) for t in row_targets])
        return LMBatch(char_ids, word_ids, target_ids, inputs, restart)

    def _char_ids(self, token: str) -> list[int]:
        ids = self._char_cache.get(token)
        if ids is None:
            if len(self._char_cache) > 200_000:
                self._char_cache.clear()
            ids = self._char_cache[token] = token_to_char_ids(token)
        return ids

    def state_dict(self) -> dict:
        streams = ([s.state_dict() for s in self.row_streams] if self.row_streams is not None
                   else self.stream.state_dict())
        return {"stream": streams, "rows": [None if r is None else list(r) for r in self._rows],
                "done": list(self._exhausted), "rng": self._rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        if len(state["rows"]) != self.batch_size:
            raise DataError(
                f"the checkpoint's data position has {len(state['rows'])} rows, this run has batch_size "
                f"{self.batch_size}; resume with the checkpoint's batch_size"
            )
        if self.row_streams is not None:
            if not isinstance(state["stream"], list):
                raise DataError("the checkpoint's data is not batched by contiguous rows; resume with the same setting")
            for s, s_state in zip(self.row_streams, state["stream"]):
                s.load_state_dict(s_state)
        else:
            if isinstance(state["stream"], list):
                raise DataError("the checkpoint's data is batched by contiguous rows; resume with the same setting")
            self.stream.load_state_dict(state["stream"])
        self._rows = [None if r is None else list(r) for r in state["rows"]]
        self._exhausted = list(state["done"])
        if state["rng"] is not None:  # None: an upgraded checkpoint from before restart_prob (trainer.upgrade_checkpoint)
            self._rng.setstate(_as_rng_state(state["rng"]))


class BidirectionalBatcher:
    """The forward batches and, for a biLM, the backward ones: bilm-tf's
    `BidirectionalLMDataset`, two independently shuffled streams over the same shards, the second
    reading every sentence reversed. `next_batch()` gives one LMBatch per direction; each
    direction draws its own restarting rows.

    `contiguous`: no shuffling; each row reads its own contiguous block of every shard, the
    backward LM's rows last sentence first (each row's stream reads the shard file itself: meant
    for benchmark corpora such as the Penn Treebank)."""

    def __init__(self, files: Sequence[str], vocab: Vocabulary, batch_size: int, unroll_steps: int, *,
                 n_directions: int = 2, seed: int = 0, train: bool = True, rank: int = 0, world_size: int = 1,
                 restart_prob: float = 0.0, contiguous: bool = False):
        self.batchers = []
        for d in range(n_directions):
            stream_seed = seed * 1000 + 17 * d + rank
            if contiguous:
                stream = [SentenceStream(files, shuffle=False, loop=train, rank=rank, world_size=world_size,
                                         block=(i, batch_size), backwards=d == 1) for i in range(batch_size)]
            else:
                stream = SentenceStream(files, seed=stream_seed, shuffle=train, loop=train,
                                        rank=rank, world_size=world_size)
            self.batchers.append(StreamBatcher(stream, vocab, batch_size, unroll_steps, reverse=d == 1,
                                               drop_last=train, restart_prob=restart_prob, seed=stream_seed))

    def next_batch(self) -> list[LMBatch] | None:
        batches = [b.next_batch() for b in self.batchers]
        if any(b is None for b in batches):
            return None
        return batches

    def __iter__(self) -> Iterator[list[LMBatch]]:
        while (batches := self.next_batch()) is not None:
            yield batches

    def state_dict(self) -> dict:
        return {"batchers": [b.state_dict() for b in self.batchers]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["batchers"]) != len(self.batchers):
            raise DataError("the checkpoint has a different number of LM directions than this run")
        for b, s in zip(self.batchers, state["batchers"]):
            b.load_state_dict(s)
