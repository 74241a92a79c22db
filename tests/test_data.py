"""Vocabulary, streamed corpus and bilm-tf batching (torch_elmo.data)."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
import torch

from torch_elmo.chars import token_to_char_ids
from torch_elmo.data import (
    IGNORE_INDEX,
    BidirectionalBatcher,
    DataError,
    SentenceStream,
    StreamBatcher,
    Vocabulary,
    corpus_files,
    count_inputs,
)

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "bilm-tf" / "train"



def write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------------------------
# Vocabulary


def test_build_orders_specials_then_descending_count(tmp_path):
    corpus = write(tmp_path / "c.txt", ["b a c a", "", "  ", "a b d"])
    vocab = Vocabulary.build(corpus)
    assert vocab.tokens == ["<S>", "</S>", "<UNK>", "a", "b", "c", "d"]
    assert vocab.counts[3:] == [3, 2, 1, 1]
    assert Vocabulary.build(corpus, min_count=2).tokens[3:] == ["a", "b"]
    assert Vocabulary.build(corpus, max_size=4).tokens == ["<S>", "</S>", "<UNK>", "a"]
    out = tmp_path / "vocab.txt"
    vocab.write(out)
    assert out.read_text().splitlines() == vocab.tokens
    again = Vocabulary.read(out)
    assert again.tokens == vocab.tokens and again.word_to_id("zzz") == again.unk_id == 2


def test_reads_the_published_fixture_vocabulary():
    vocab = Vocabulary.read(FIXTURE / "vocab.txt")
    assert vocab.tokens[:3] == ["<S>", "</S>", "<UNK>"] and len(vocab) == 32


def test_vocabulary_without_special_tokens_is_a_clear_error(tmp_path):
    path = write(tmp_path / "words.txt", ["the", "a"])
    with pytest.raises(DataError, match=r"words\.txt.*<S>, </S>, <UNK>.*first three lines"):
        Vocabulary.read(path)
    with pytest.raises(DataError, match="no such vocabulary"):
        Vocabulary.read(tmp_path / "missing.txt")
    dup = write(tmp_path / "dup.txt", ["<S>", "</S>", "<UNK>", "a", "a"])
    with pytest.raises(DataError, match=r"dup\.txt.*'a' twice"):
        Vocabulary.read(dup)


def test_empty_corpus_and_missing_files_are_clear_errors(tmp_path):
    empty = write(tmp_path / "empty.txt", ["", "   ", ""])
    with pytest.raises(DataError, match="no sentences"):
        Vocabulary.build(empty)
    with pytest.raises(DataError, match="no sentences"):
        SentenceStream([empty]).next_sentence()
    with pytest.raises(DataError, match="no sentences"):
        SentenceStream([empty], loop=False, shuffle=False).next_sentence()
    with pytest.raises(DataError, match="no such corpus file"):
        corpus_files(str(tmp_path / "nope-*.txt"))


# --------------------------------------------------------------------------------------------
# Batching: bilm-tf's _get_batch, transcribed as the reference


def reference_get_batch(generator, batch_size, num_steps):
    """bilm-tf's data._get_batch (token lists instead of id arrays)."""
    cur_stream = [None] * batch_size
    no_more_data = False
    while True:
        inputs = [[None] * num_steps for _ in range(batch_size)]
        targets = [[None] * num_steps for _ in range(batch_size)]
        for i in range(batch_size):
            cur_pos = 0
            while cur_pos < num_steps:
                if cur_stream[i] is None or len(cur_stream[i]) <= 1:
                    try:
                        cur_stream[i] = list(next(generator))
                    except StopIteration:
                        no_more_data = True
                        break
                how_many = min(len(cur_stream[i]) - 1, num_steps - cur_pos)
                next_pos = cur_pos + how_many
                inputs[i][cur_pos:next_pos] = cur_stream[i][:how_many]
                targets[i][cur_pos:next_pos] = cur_stream[i][1 : how_many + 1]
                cur_pos = next_pos
                cur_stream[i] = cur_stream[i][how_many:]
        if no_more_data:
            break
        yield inputs, targets


SENTENCES = ["a b c", "d", "e f g h i j k", "l m", "n o p q", "r", "s t u v w x y z"]


@pytest.mark.parametrize("reverse", [False, True])
def test_batches_match_bilm_tf_get_batch(tmp_path, reverse):
    corpus = write(tmp_path / "c.txt", SENTENCES)
    vocab = Vocabulary.build(corpus)

    def wrapped():  # bilm-tf: LMDataset with reverse, vocab.encode(sentence, reverse)
        for line in itertools.cycle(SENTENCES):
            tokens = line.split()
            yield ["</S>"] + tokens[::-1] + ["<S>"] if reverse else ["<S>"] + tokens + ["</S>"]

    stream = SentenceStream([corpus], shuffle=False)
    ours = StreamBatcher(stream, vocab, batch_size=3, unroll_steps=4, reverse=reverse)
    for (inputs, targets), _ in zip(reference_get_batch(wrapped(), 3, 4), range(12)):
        batch = ours.next_batch()
        assert batch.tokens == inputs
        assert batch.targets.tolist() == [[vocab.word_to_id(t) for t in row] for row in targets]
        assert batch.char_ids[1, 2].tolist() == token_to_char_ids(inputs[1][2])


@pytest.mark.parametrize("reverse", [False, True])
def test_restarting_rows_drop_their_sentence_and_begin_a_new_one(tmp_path, reverse):
    corpus = write(tmp_path / "c.txt", SENTENCES)
    vocab = Vocabulary.build(corpus)
    first = "</S>" if reverse else "<S>"
    plain = StreamBatcher(SentenceStream([corpus], shuffle=False), vocab, 3, 4, reverse=reverse)
    assert plain.next_batch().restart is None  # the original: rows never restart
    ours = StreamBatcher(SentenceStream([corpus], shuffle=False), vocab, 3, 4, reverse=reverse,
                         restart_prob=0.4, seed=1)
    flags, segments = [], [[[]] for _ in range(3)]  # per row: runs of input tokens between restarts
    for _ in range(40):
        batch = ours.next_batch()
        for i, (row, restart) in enumerate(zip(batch.tokens, batch.restart.tolist())):
            if restart:
                assert row[0] == first
                segments[i].append([])
            segments[i][-1] += row
            flags.append(restart)
    assert 0.25 < sum(flags) / len(flags) < 0.55  # 120 draws at p = 0.4
    # between restarts a row reads whole sentences back to back (a row that does not restart
    # continues its sentence); only the sentence a restart interrupts is cut short
    whole = {tuple(line.split()[::-1] if reverse else line.split()) for line in SENTENCES}
    n_whole = 0
    for runs in segments:
        for run in runs:
            pieces = " ".join(run).split(first)
            for piece in pieces[1:-1]:
                assert tuple(piece.split()) in whole
                n_whole += 1
    assert n_whole > 20
    with pytest.raises(ValueError, match="restart_prob"):
        StreamBatcher(SentenceStream([corpus]), vocab, 3, 4, restart_prob=1.0)


@pytest.mark.parametrize("train", [True, False])
def test_contiguous_rows_each_read_their_own_block_in_order(tmp_path, train):
    """Zaremba / Kim batching: row i reads the i-th block of the text, sentence after sentence;
    the backward LM's row reads its block last sentence first."""
    lines = [f"s{k} " + " ".join(f"w{k}_{j}" for j in range(k % 4)) for k in range(12)]  # 1 to 4 words
    corpus = write(tmp_path / "c.txt", lines)
    vocab = Vocabulary.build(corpus)
    data = BidirectionalBatcher([corpus], vocab, batch_size=3, unroll_steps=4, train=train, contiguous=True)
    read = [[[], []] for _ in range(3)]  # per row, per direction: inputs
    n_targets = [0, 0]
    for _ in range(20):
        batches = data.next_batch()
        if batches is None:
            break
        for d, batch in enumerate(batches):
            n_targets[d] += batch.n_targets
            for i, row in enumerate(batch.tokens):
                read[i][d] += row
    for i in range(3):
        block = [line.split() for line in lines[4 * i : 4 * i + 4]]
        forward = [t for s in block for t in ["<S>"] + s]
        backward = [t for s in block[::-1] for t in ["</S>"] + s[::-1]]
        if train:  # looping: the block again and again
            assert read[i][0][: 2 * len(forward)] == forward * 2
            assert read[i][1][: 2 * len(backward)] == backward * 2
        else:  # one pass: the block once, then padding
            assert read[i] == [forward, backward]
    if not train:
        assert n_targets == [count_inputs([corpus])] * 2


def test_oov_targets_become_unk_but_inputs_keep_their_characters(tmp_path):
    corpus = write(tmp_path / "c.txt", ["known rare"])
    vocab = Vocabulary(["<S>", "</S>", "<UNK>", "known"])
    batch = StreamBatcher(SentenceStream([corpus], shuffle=False), vocab, 1, 3).next_batch()
    assert batch.tokens == [["<S>", "known", "rare"]]
    assert batch.targets.tolist() == [[3, vocab.unk_id, vocab.eos_id]]
    assert batch.word_ids.tolist() == [[0, 3, vocab.unk_id]]
    assert batch.char_ids[0, 2].tolist() == token_to_char_ids("rare")


def test_evaluation_scores_every_token_once(tmp_path):
    corpus = write(tmp_path / "c.txt", SENTENCES)
    data = BidirectionalBatcher([corpus], Vocabulary.build(corpus), 3, 4, train=False)
    n = [0, 0]
    for batches in data:
        for d, b in enumerate(batches):
            n[d] += b.n_targets
            assert (b.targets == IGNORE_INDEX).sum() == (b.char_ids == 0).all(-1).sum()
    assert n == [count_inputs([corpus])] * 2 == [sum(len(s.split()) + 1 for s in SENTENCES)] * 2


# --------------------------------------------------------------------------------------------
# Shuffled shards, state


def make_shards(tmp_path, n_shards=3, per_shard=6):
    return [write(tmp_path / f"shard{k}.txt", [f"s{k}_{i} w" for i in range(per_shard)] + [""])
            for k in range(n_shards)]


def test_shards_and_sentences_are_shuffled_and_each_pass_covers_the_corpus(tmp_path, monkeypatch):
    import torch_elmo.data as data

    files = make_shards(tmp_path)
    loaded = []
    real = data.read_sentences
    monkeypatch.setattr(data, "read_sentences", lambda p: loaded.append(p) or real(p))
    stream = SentenceStream(files, seed=3)
    first = [stream.next_sentence()[0] for _ in range(18)]
    second = [stream.next_sentence()[0] for _ in range(18)]
    everything = sorted(f"s{k}_{i}" for k in range(3) for i in range(6))
    assert sorted(first) == everything and sorted(second) == everything
    assert first != sorted(first) and first != second
    assert len(loaded) == 6 and sorted(loaded[:3]) == files  # one shard at a time, each once a pass
    # within a shard the sentences stay together (one shard in memory) but are shuffled
    shard_of = [s.split("_")[0] for s in first]
    assert shard_of == sorted(shard_of, key=shard_of.index)


@pytest.mark.parametrize("restart_prob, contiguous", [(0.0, False), (0.3, False), (0.3, True)])
def test_data_state_resumes_exactly(tmp_path, restart_prob, contiguous):
    files = make_shards(tmp_path)
    vocab = Vocabulary.build(files)

    def batcher():
        return BidirectionalBatcher(files, vocab, 2, 5, seed=11, restart_prob=restart_prob, contiguous=contiguous)

    def read(data):
        return [[(b.tokens, None if b.restart is None else b.restart.tolist()) for b in data.next_batch()]
                for _ in range(20)]

    a = batcher()
    for _ in range(7):
        a.next_batch()
    state = a.state_dict()
    buffer = tmp_path / "state.pt"
    torch.save(state, buffer)
    expected = read(a)
    b = batcher()
    b.load_state_dict(torch.load(buffer, weights_only=False))
    assert read(b) == expected


def test_ranks_read_disjoint_shares(tmp_path):
    files = make_shards(tmp_path, n_shards=1, per_shard=8)
    seen = [Counter(s[0] for s in SentenceStream(files, loop=False, shuffle=False, rank=r, world_size=2))
            for r in range(2)]
    assert not (set(seen[0]) & set(seen[1])) and len(seen[0]) + len(seen[1]) == 8
