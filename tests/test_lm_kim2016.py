"""Our language model against Kim et al.'s recipe written plainly (reference/kim2016.py, PyTorch's
own nn.LSTM / Conv1d / Linear): the same weights and the same batch give the same loss and gradients."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from reference.kim2016 import CharSmall
from torch_elmo.chars import BOS_CHAR, BOW_CHAR, EOW_CHAR, PAD_CHAR, token_to_char_ids
from torch_elmo.config import TrainConfig
from torch_elmo.data import LMBatch, Vocabulary
from torch_elmo.lm import LanguageModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from ptb_char_small import MODEL  # noqa: E402


def test_our_lm_computes_kims_loss_and_gradients():
    torch.manual_seed(0)
    words = [f"w{k}{'x' * (k % 7)}" for k in range(60)] + ["|"]
    vocab = Vocabulary(["<S>", "</S>", "<UNK>"] + words)
    ref_words = ["+"] + words  # their end of sentence is our </S> as a target and our <S> as an input
    chars = {" ": 0, "{": 1, "}": 2}
    for w in ref_words:
        for ch in w:
            chars.setdefault(ch, len(chars))
    ref = CharSmall(len(ref_words), len(chars)).double()
    ours = LanguageModel(TrainConfig(train_files="-", bilm=MODEL, n_directions=1, dropout=0.0).bilm_config(),
                         len(vocab)).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.uniform_(-0.05, 0.05)
        ref.char_embedding.weight[0] = 0.0
        embedding = ours.token_encoder.char_embedding.weight
        embedding.zero_()
        for ch, i in chars.items():
            ours_id = {" ": PAD_CHAR, "{": BOW_CHAR, "}": EOW_CHAR}.get(ch, ord(ch))
            embedding[ours_id + 1] = ref.char_embedding.weight[i]
        embedding[BOS_CHAR + 1] = ref.char_embedding.weight[chars["+"]]
        for ours_conv, ref_conv in zip(ours.token_encoder.convs, ref.convs):
            ours_conv.weight.copy_(ref_conv.weight)
            ours_conv.bias.copy_(ref_conv.bias)
        highway = ours.token_encoder.highways[0].linear  # [transform; carry], their gate's -2 in the bias
        highway.weight.copy_(torch.cat([ref.transform.weight, ref.gate.weight]))
        highway.bias.copy_(torch.cat([ref.transform.bias, ref.gate.bias - 2.0]))
        for layer, lstm in zip(ours.lstm.layers, (ref.lstm1, ref.lstm2)):  # gates i, f, g, o -> i, j, f, o
            wi, wf, wg, wo = lstm.weight_ih_l0.chunk(4)
            ui, uf, ug, uo = lstm.weight_hh_l0.chunk(4)
            bi, bf, bg, bo = (lstm.bias_ih_l0 + lstm.bias_hh_l0).chunk(4)
            layer.w_input[0] = torch.cat([wi, wg, wf, wo]).T
            layer.w_state[0] = torch.cat([ui, ug, uf, uo]).T
            layer.bias[0] = torch.cat([bi, bg, bf - 1.0, bo])  # TF's forget bias +1 is added at run time
        ours.head.weight.zero_()
        ours.head.bias.fill_(-1e4)  # <S>, <UNK>: no class of theirs
        for k, token in enumerate(vocab.tokens):
            if token == "</S>" or token in words:
                r = ref_words.index("+" if token == "</S>" else token)
                ours.head.weight[k] = ref.softmax.weight[r]
                ours.head.bias[k] = ref.softmax.bias[r]

    B, T = 4, 9
    stream = []
    while len(stream) < B * (T + 1):
        stream += ["<S>"] + [words[int(i)] for i in torch.randint(0, len(words), (int(torch.randint(1, 6, ())),))]
    rows = [stream[i * (T + 1) : (i + 1) * (T + 1)] for i in range(B)]
    inputs = [r[:-1] for r in rows]
    targets = [["</S>" if t == "<S>" else t for t in r[1:]] for r in rows]
    batch = LMBatch(torch.tensor([[token_to_char_ids(t) for t in r] for r in inputs]), torch.zeros(B, T, dtype=torch.long),
                    torch.tensor([[vocab.word_to_id(t) for t in r] for r in targets]), inputs)
    ours.train()
    our_loss = ours([batch]).loss
    our_loss.backward()

    width = 50  # bilm-tf's token width: every word has windows over padding (Kim's longest words have none)
    spell = [[1] + [chars[c] for c in w] + [2] + [0] * (width - len(w) - 2) for w in ref_words]
    x = torch.tensor([[spell[ref_words.index("+" if t == "<S>" else t)] for t in r] for r in inputs]).transpose(0, 1)
    y = torch.tensor([[ref_words.index("+" if t == "</S>" else t) for t in r] for r in targets]).T
    ref.eval()  # no dropout, as ours here
    zero = [(torch.zeros(1, B, 300, dtype=torch.float64),) * 2 for _ in range(2)]
    logits, _ = ref(x, zero)
    ref_loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    ref_loss.backward()

    torch.testing.assert_close(our_loss, ref_loss, atol=1e-12, rtol=0)
    close = lambda a, b: torch.testing.assert_close(a, b, atol=1e-15, rtol=1e-9)  # noqa: E731
    for ours_conv, ref_conv in zip(ours.token_encoder.convs, ref.convs):
        close(ours_conv.weight.grad, ref_conv.weight.grad)
    close(highway.weight.grad, torch.cat([ref.transform.weight.grad, ref.gate.weight.grad]))
    for layer, lstm in zip(ours.lstm.layers, (ref.lstm1, ref.lstm2)):
        wi, wf, wg, wo = lstm.weight_ih_l0.grad.chunk(4)
        ui, uf, ug, uo = lstm.weight_hh_l0.grad.chunk(4)
        close(layer.w_input.grad[0], torch.cat([wi, wg, wf, wo]).T)
        close(layer.w_state.grad[0], torch.cat([ui, ug, uf, uo]).T)
    r = ref_words.index(words[3])
    close(ours.head.weight.grad[vocab.index[words[3]]], ref.softmax.weight.grad[r])
    close(embedding.grad[ord("w") + 1], ref.char_embedding.weight.grad[chars["w"]])
    # Their padding character's gradient, the largest part of the norm that clipping measures (they
    # zero its embedding after the update, not its gradient before the clipping); the norm differs
    # only by their LSTMs' second bias, which receives the same gradient as the first.
    close(embedding.grad[PAD_CHAR + 1], ref.char_embedding.weight.grad[chars[" "]])
    norm = lambda params: torch.cat([p.grad.flatten() for p in params if p.grad is not None]).norm()  # noqa: E731
    second_bias = torch.cat([layer.bias.grad[0] for layer in ours.lstm.layers]).norm()
    torch.testing.assert_close(norm(ours.parameters()) ** 2 + second_bias ** 2, norm(ref.parameters()) ** 2,
                               atol=1e-12, rtol=1e-9)


def test_the_backward_benchmark_reads_what_the_bilms_backward_direction_reads(tmp_path):
    """bench/ptb_char_small.py --backward: a forward-only LM over the text read backwards sees the
    batches of a biLM's backward direction (rows in the other order, <S> and </S> trading places)."""
    from ptb_char_small import read_backwards

    from torch_elmo.data import BidirectionalBatcher

    lines = [" ".join(f"w{(7 * i + j) % 11}" for j in range(1 + i % 5)) for i in range(12)]
    (tmp_path / "fwd").mkdir()
    (tmp_path / "fwd" / "train.txt").write_text("".join(line + "\n" for line in lines))
    backwards = read_backwards({"train": tmp_path / "fwd" / "train.txt"}, tmp_path / "bwd")
    assert backwards["train"].read_text().splitlines()[0] == " ".join(reversed(lines[-1].split()))
    vocab = Vocabulary(["<S>", "</S>", "<UNK>"] + [f"w{k}" for k in range(11)])
    B = 3  # divides the 12 lines: each row's block is whole lines in both readings
    bilm = BidirectionalBatcher([str(tmp_path / "fwd" / "train.txt")], vocab, B, 4, train=False, contiguous=True)
    alone = BidirectionalBatcher([str(backwards["train"])], vocab, B, 4, n_directions=1, train=False, contiguous=True)
    swap = {"<S>": "</S>", "</S>": "<S>"}
    n = 0
    for (_, backward), (forward_over_reversed,) in zip(bilm, alone, strict=True):
        for i in range(B):
            assert [swap.get(t, t) for t in forward_over_reversed.tokens[B - 1 - i]] == backward.tokens[i]
            swapped = torch.tensor([vocab.word_to_id(swap.get(vocab.tokens[t], vocab.tokens[t])) if t >= 0 else t
                                    for t in forward_over_reversed.targets[B - 1 - i].tolist()])
            assert torch.equal(swapped, backward.targets[i])
        n += 1
    assert n > 2
