"""Character ids follow the original scheme for any string."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torch_elmo import batch_to_ids
from torch_elmo.chars import BOS_CHAR, BOW_CHAR, EOS_CHAR, EOW_CHAR, MAX_CHARS, PAD_CHAR, token_to_char_ids


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_string_follows_the_scheme(token):
    ids = token_to_char_ids(token)
    if token in ("<S>", "</S>"):
        return
    encoded = token.encode("utf-8", "ignore")[:48]
    assert len(ids) == MAX_CHARS
    assert all(1 <= i <= 261 for i in ids)  # every id shifted by +1: 0 is reserved for padding
    assert ids[0] == BOW_CHAR + 1
    assert ids[1 : len(encoded) + 1] == [b + 1 for b in encoded]
    assert ids[len(encoded) + 1] == EOW_CHAR + 1
    assert ids[len(encoded) + 2 :] == [PAD_CHAR + 1] * (MAX_CHARS - len(encoded) - 2)


TOKENS = st.one_of(st.text(max_size=60), st.sampled_from(["<S>", "</S>", "", "x" * 60, "é" * 30, "a\ud800b"]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(TOKENS, max_size=6), min_size=1, max_size=4))
def test_batch_pads_with_zero_tokens(sentences):
    """batch_to_ids spells all tokens at once with array operations: each token's ids are still
    token_to_char_ids' (empty, boundary, long, multi-byte and surrogate tokens included)."""
    ids = batch_to_ids(sentences)
    assert ids.shape == (len(sentences), max(len(s) for s in sentences), MAX_CHARS)
    for i, sentence in enumerate(sentences):
        assert ids[i, : len(sentence)].tolist() == [token_to_char_ids(t) for t in sentence]
        assert (ids[i, len(sentence) :] == 0).all()


def test_sentence_boundary_tokens():
    bos, eos = token_to_char_ids("<S>"), token_to_char_ids("</S>")
    assert bos[:3] == [BOW_CHAR + 1, BOS_CHAR + 1, EOW_CHAR + 1] and set(bos[3:]) == {PAD_CHAR + 1}
    assert eos[:3] == [BOW_CHAR + 1, EOS_CHAR + 1, EOW_CHAR + 1]


def test_long_token_keeps_its_first_48_bytes():
    ids = token_to_char_ids("x" * 60)
    assert ids[1:49] == [ord("x") + 1] * 48 and ids[49] == EOW_CHAR + 1


def test_multibyte_truncation_cuts_bytes_like_the_original():
    ids = token_to_char_ids("é" * 30)  # 60 bytes: the 48 first are kept
    assert ids[1:49] == [b + 1 for b in ("é" * 24).encode()]


def test_lone_surrogates_are_dropped():
    assert token_to_char_ids("a\ud800b") == token_to_char_ids("ab")
    assert token_to_char_ids("\udfff") == token_to_char_ids("")


def test_whitespace_tokens_keep_their_bytes():
    assert token_to_char_ids(" ")[1] == ord(" ") + 1
    assert token_to_char_ids("\t\n")[1:3] == [ord("\t") + 1, ord("\n") + 1]


def test_empty_batch_and_empty_sentences():
    assert batch_to_ids([]).shape == (0, 0, MAX_CHARS)
    assert batch_to_ids([[], []]).shape == (2, 0, MAX_CHARS)


def test_a_string_instead_of_tokens_is_refused():
    with pytest.raises(TypeError, match="tokenized"):
        batch_to_ids(["a sentence", "another"])


def test_a_token_that_is_not_a_string_is_named():
    with pytest.raises(TypeError, match=r"a token must be a string, got int 7; give each sentence as a list of str"):
        batch_to_ids([["a", "b"], ["c", 7]])
    with pytest.raises(TypeError, match="split"):
        batch_to_ids("a sentence")


def test_ids_are_long():
    assert batch_to_ids([["a"]]).dtype == torch.long
