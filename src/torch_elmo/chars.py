"""Text -> character ids, exactly as bilm-tf's `UnicodeCharsVocabulary` and AllenNLP's
`ELMoCharacterMapper` compute them.

A token becomes 50 ids: begin-of-word, the token's UTF-8 bytes (at most 48), end-of-word, then
padding. The sentence boundaries `<S>` and `</S>` are tokens made of the special chars 256 / 257.
Every id is shifted by +1 so that an all-zero row means "no token here" (padding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .errors import InputTypeError

MAX_CHARS = 50  # characters per token, the published models' `max_characters_per_token`
BOS_CHAR = 256  # begin of sentence
EOS_CHAR = 257  # end of sentence
BOW_CHAR = 258  # begin of word
EOW_CHAR = 259  # end of word
PAD_CHAR = 260  # padding inside a token
N_CHARACTERS = 262  # 261 stored rows + the all-zero padding row (id 0)

BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"


def _special_token(char: int) -> list[int]:
    ids = [PAD_CHAR] * MAX_CHARS
    ids[0], ids[1], ids[2] = BOW_CHAR, char, EOW_CHAR
    return [i + 1 for i in ids]


BOS_CHAR_IDS = _special_token(BOS_CHAR)
EOS_CHAR_IDS = _special_token(EOS_CHAR)


def token_to_char_ids(token: str) -> list[int]:
    """The 50 (shifted) character ids of one token.

    Bytes beyond the 48th are dropped (even inside a multi-byte character, as the original does);
    characters UTF-8 cannot encode (lone surrogates) are dropped, never an error.
    """
    if token == BOS_TOKEN:
        return list(BOS_CHAR_IDS)
    if token == EOS_TOKEN:
        return list(EOS_CHAR_IDS)
    encoded = token.encode("utf-8", "ignore")[: MAX_CHARS - 2]
    ids = [PAD_CHAR] * MAX_CHARS
    ids[0] = BOW_CHAR
    ids[1 : len(encoded) + 1] = encoded
    ids[len(encoded) + 1] = EOW_CHAR
    return [i + 1 for i in ids]


def tokens_to_char_ids(tokens: Sequence[str]) -> torch.Tensor:
    """`token_to_char_ids` of many tokens at once: LongTensor (n, 50). The bytes of all tokens are
    placed with a few array operations instead of a Python list per token (spelling is then a
    small share of embedding a batch on a GPU, where it was about a fifth)."""
    try:
        encoded = [t.encode("utf-8", "ignore")[: MAX_CHARS - 2] for t in tokens]
    except AttributeError:
        raise not_a_string(tokens) from None
    n = len(encoded)
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    ids = np.full((n, MAX_CHARS), PAD_CHAR + 1, dtype=np.int64)
    ids[:, 0] = BOW_CHAR + 1
    chars = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    rows = np.repeat(np.arange(n), lengths)  # each byte's token
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)  # each byte's token's first byte
    ids[rows, np.arange(len(chars)) - starts + 1] = chars.astype(np.int64) + 1
    ids[np.arange(n), lengths + 1] = EOW_CHAR + 1
    for i, token in enumerate(tokens):
        if token in (BOS_TOKEN, EOS_TOKEN):
            ids[i] = BOS_CHAR_IDS if token == BOS_TOKEN else EOS_CHAR_IDS
    return torch.from_numpy(ids)


def batch_to_ids(sentences: Sequence[Sequence[str]]) -> torch.Tensor:
    """Character ids of a batch of tokenized sentences: LongTensor (batch, max_len, 50).

    Sentences shorter than the longest are padded with all-zero tokens. The sentence boundaries
    are not added here: the model adds them, as AllenNLP's `Elmo` does.
    """
    return batch_of_token_rows(sentences, tokens_to_char_ids, MAX_CHARS)


def batch_of_token_rows(sentences: Sequence[Sequence[str]], token_rows: Callable[[list[str]], torch.Tensor],
                        width: int) -> torch.Tensor:
    """Tokenized sentences -> LongTensor (batch, max_len, width): each token's row, from
    `token_rows` of all the batch's tokens at once (n_tokens, width), zero rows after each
    sentence. The batching of `batch_to_ids` and of other vocabularies' ids (efml.py)."""
    if isinstance(sentences, str) or any(isinstance(s, str) for s in sentences):
        raise InputTypeError(
            "batch_to_ids takes a list of tokenized sentences (list[list[str]]), got a string; "
            "split each sentence into tokens first, e.g. sentence.split()"
        )
    lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
    max_len = int(lengths.max()) if len(lengths) else 0
    ids = torch.zeros(len(sentences), max_len, width, dtype=torch.long)
    ids[torch.arange(max_len) < lengths.unsqueeze(1)] = token_rows([t for s in sentences for t in s])
    return ids


def not_a_string(tokens: Sequence[object]) -> InputTypeError:
    """The error for a batch holding a token that is not a string, naming the first one."""
    bad = next(t for t in tokens if not isinstance(t, str))
    return InputTypeError(f"a token must be a string, got {type(bad).__name__} {bad!r}; "
                          "give each sentence as a list of str")
