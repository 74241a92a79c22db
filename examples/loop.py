"""The plain PyTorch loop: examples to batches, training with the best dev epoch kept,
prediction, scores, and saving / reloading a task model (with its vocabularies)."""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from torch_elmo import batch_to_ids

from .data import Labelled, Tagged, TaskDataError, Vocabulary
from .metrics import accuracy, is_bio, span_f1
from .models import Batch, TaskConfig, TaskModel

BILM_PREFIX = "elmo._elmo_lstm."  # a live Elmo's biLM weights in a task model's state dict


@dataclass
class Example:
    """One sentence, encoded: word ids and the tag ids (tagging) or the label id (classification)."""

    tokens: list[str]
    words: list[int]
    target: list[int] | int


def encode(sentences: Sequence[Tagged | Labelled], words: Vocabulary, labels: Vocabulary,
           path: str | os.PathLike) -> list[Example]:
    """Examples of a file's sentences; an unknown tag or label raises TaskDataError at its line."""
    examples = []
    for s in sentences:
        if isinstance(s, Tagged):
            target = [labels.label(t, path, s.line + k) for k, t in enumerate(s.tags)]
        else:
            target = labels.label(s.label, path, s.line)
        examples.append(Example(s.tokens, words.words(s.tokens), target))
    return examples


def make_batch(examples: Sequence[Example], layers: Sequence[np.ndarray] | None = None) -> Batch:
    """Pads a batch; `layers`: each example's cached biLM layers (L+1, n, D), when ELMo is cached."""
    width = max(len(e.tokens) for e in examples)
    words = torch.zeros(len(examples), width, dtype=torch.long)
    mask = torch.zeros(len(examples), width, dtype=torch.bool)
    tagging = isinstance(examples[0].target, list)
    targets = torch.full((len(examples), width) if tagging else (len(examples),), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.tokens)
        words[i, :n] = torch.tensor(e.words)
        mask[i, :n] = True
        targets[i] = torch.tensor(e.target + [-100] * (width - n)) if tagging else e.target
    cached = None
    if layers is not None:
        cached = torch.zeros(len(examples), layers[0].shape[0], width, layers[0].shape[2])  # (B, L+1, T, D)
        for i, array in enumerate(layers):
            cached[i, :, : array.shape[1]] = torch.from_numpy(array.astype(np.float32))
    return Batch(batch_to_ids([e.tokens for e in examples]), words, mask, targets, cached)


def batches(examples: Sequence[Example], batch_size: int, layers: Sequence[np.ndarray] | None = None,
            shuffle: random.Random | None = None):
    """Batches of similar lengths (sorted within chunks of 50 batches), in shuffled order if asked."""
    order = list(range(len(examples)))
    if shuffle is not None:
        shuffle.shuffle(order)
    chunk = batch_size * 50
    groups = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(examples[i].tokens))
        groups += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
    if shuffle is not None:
        shuffle.shuffle(groups)
    for group in groups:
        yield group, make_batch([examples[i] for i in group], None if layers is None else [layers[i] for i in group])


def loss_of(model: TaskModel, batch: Batch, mix_l2: float) -> torch.Tensor:
    logits = model(batch)  # (B, T, tags) or (B, labels)
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1), ignore_index=-100)
    return loss + mix_l2 * model.mix_penalty()


@torch.no_grad()
def predict(model: TaskModel, examples: Sequence[Example], batch_size: int = 64,
            layers: Sequence[np.ndarray] | None = None) -> list[list[int] | int]:
    """Predicted tag ids per sentence (tagging) or label ids, in input order."""
    model.eval()
    out: list = [None] * len(examples)
    for group, batch in batches(examples, batch_size, layers):
        best = model(batch).argmax(-1)
        for row, i in enumerate(group):
            out[i] = best[row, : len(examples[i].tokens)].tolist() if model.config.task == "tag" else int(best[row])
    return out


def score(model: TaskModel, examples: Sequence[Example], labels: Vocabulary, train_words: set[str] | None = None,
          layers: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """accuracy; for BIO tags entity precision / recall / f1; for tagging with `train_words`,
    the accuracy on tokens not seen in training (`unseen_accuracy`, over `unseen_tokens`)."""
    predicted = predict(model, examples, layers=layers)
    if model.config.task == "classify":
        return {"accuracy": float(np.mean([p == e.target for p, e in zip(predicted, examples)]))}
    gold = [[labels.items[t] for t in e.target] for e in examples]
    guess = [[labels.items[t] for t in p] for p in predicted]
    result = {"accuracy": accuracy(gold, guess)}
    if is_bio(labels.items):
        result.update(span_f1(gold, guess))
    if train_words is not None:
        unseen = [(g == p) for e, gs, ps in zip(examples, gold, guess) for w, g, p in zip(e.tokens, gs, ps)
                  if w not in train_words]
        result["unseen_accuracy"] = float(np.mean(unseen)) if unseen else float("nan")
        result["unseen_tokens"] = len(unseen)
    return result


def main_metric(result: dict[str, float]) -> float:
    return result.get("f1", result["accuracy"])


def train(model: TaskModel, train_set: Sequence[Example], dev_set: Sequence[Example], labels: Vocabulary, *,
          epochs: int = 10, lr: float = 1e-3, batch_size: int = 32, mix_l2: float = 0.0, seed: int = 0,
          patience: int | None = None, bilm_lr: float | None = None,
          train_layers: Sequence[np.ndarray] | None = None, dev_layers: Sequence[np.ndarray] | None = None,
          log=print) -> list[dict[str, float]]:
    """Adam over the trainable parameters; after each epoch the dev score, and the model ends with
    the weights of its best dev epoch (early stopping: with `patience`, training stops after that
    many epochs without a better dev score, once it is above 0 and the training loss has left its
    starting plateau: a tenth below the first epoch's; a max-pooled sentence classifier with ELMo's
    vectors can sit near chance for many epochs before it learns, and stopping there measures the
    optimiser, not the features). A fine-tuned biLM's weights learn at `bilm_lr` (default `lr`).
    Returns the dev scores per epoch."""
    torch.manual_seed(seed)
    shuffle = random.Random(seed)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in trainable if not n.startswith(BILM_PREFIX)]}]
    bilm = [p for n, p in trainable if n.startswith(BILM_PREFIX)]
    if bilm:
        groups.append({"params": bilm, "lr": lr if bilm_lr is None else bilm_lr})
    optimizer = torch.optim.Adam(groups, lr=lr)
    best, best_state, best_epoch, history, first_loss, learning = -1.0, None, 0, [], None, False
    for epoch in range(1, epochs + 1):
        model.train()
        total, n = 0.0, 0
        for _, batch in batches(train_set, batch_size, train_layers, shuffle):
            loss = loss_of(model, batch, mix_l2)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            total, n = total + loss.item(), n + 1
        loss = total / max(n, 1)
        first_loss = loss if first_loss is None else first_loss
        learning = learning or loss < 0.9 * first_loss
        dev = score(model, dev_set, labels, layers=dev_layers)
        history.append(dev)
        log(f"epoch {epoch}: train loss {loss:.4f}, dev " + ", ".join(f"{k} {v:.4f}" for k, v in dev.items()))
        if main_metric(dev) > best:
            best, best_state, best_epoch = main_metric(dev), copy.deepcopy(_trained_state(model)), epoch
        elif patience is not None and best > 0 and learning and epoch - best_epoch >= patience:  # all-O taggers score 0
            break
    model.load_state_dict(best_state, strict=False)
    return history


def fit_probe(model: TaskModel, train_set: Sequence[Example], *, mix_l2: float = 0.0, l2: float = 1e-5,
              max_iter: int = 100, batch_size: int = 256, train_layers: Sequence[np.ndarray] | None = None,
              log=print) -> float:
    """A linear probe fitted to convergence: full-batch L-BFGS (as probing work and scikit-learn's
    logistic regression do) on the training loss plus `l2` ||W||^2, no dropout. A small-batch Adam
    loop with early stopping leaves a linear probe on frozen vectors far from its optimum, which
    would read as the vectors' fault. Returns the final training loss."""
    model.eval()  # no dropout: the probe asks what is linearly in the vectors
    data = [b for _, b in batches(train_set, batch_size, train_layers)]
    n_targets = sum(int((b.targets != -100).sum()) for b in data)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.LBFGS(params, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        total = 0.0
        for batch in data:  # the full-batch gradient, accumulated: mean over every target of the set
            logits = model(batch)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1),
                                               ignore_index=-100, reduction="sum") / n_targets
            loss.backward()
            total += loss.item()
        penalty = l2 * model.output.weight.pow(2).sum() + mix_l2 * model.mix_penalty()
        penalty.backward()
        return torch.tensor(total + penalty.item())

    optimizer.step(closure)
    loss = float(closure())  # step() returns the first evaluation's loss, not the last
    log(f"L-BFGS probe: training loss {loss:.4f}")
    return loss


def _trained_state(model: TaskModel) -> dict[str, torch.Tensor]:
    """The state dict without a frozen biLM's weights (they are in the model files already)."""
    state = model.state_dict()
    if model.config.fine_tune:
        return state
    return {k: v for k, v in state.items() if not k.startswith(BILM_PREFIX)}


def save(path: str | os.PathLike, model: TaskModel, words: Vocabulary, labels: Vocabulary) -> None:
    """The config, the vocabularies and the weights (a frozen biLM's are left in its own files)."""
    torch.save({"config": model.config.to_dict(), "state": _trained_state(model),
                "words": words.items, "labels": labels.items}, path)


def load(path: str | os.PathLike) -> tuple[TaskModel, Vocabulary, Vocabulary]:
    """A saved task model and its word and label vocabularies; the biLM from its model files."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TaskDataError(f"{path}: no such task model; train one with `train --save {path}`") from None
    model = TaskModel(TaskConfig(**saved["config"]))
    missing, unexpected = model.load_state_dict(saved["state"], strict=False)
    stray = [k for k in missing if not k.startswith(BILM_PREFIX)] + list(unexpected)
    if stray:
        raise TaskDataError(f"{path}: the saved weights do not fit the model ({', '.join(stray[:3])}); "
                            "was it written by another version? train it again")
    words, labels = Vocabulary(saved["words"], extras=False), Vocabulary(saved["labels"], extras=False)
    return model, words, labels
