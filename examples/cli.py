"""The two commands' shared body: `train` reads the files, builds the task model, trains it and
saves it; `evaluate` reloads one and scores a file. A bad file is one line on stderr (exit 2)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Literal

import torch

from torch_elmo.errors import ElmoError

from .data import Vocabulary, read_labelled, read_tagged
from .loop import encode, load, save, score, train
from .models import TaskConfig, TaskModel


def parser(task: Literal["tag", "classify"]) -> argparse.ArgumentParser:
    what = "token<TAB>tag lines, a blank line between sentences" if task == "tag" else "label<TAB>text lines"
    name = "sequence tagger" if task == "tag" else "sentence classifier"
    p = argparse.ArgumentParser(prog=f"python -m examples.{'tag' if task == 'tag' else 'classify'}",
                                description=f"An ELMo {name}; files: {what}.")
    commands = p.add_subparsers(dest="command", required=True)
    t = commands.add_parser("train", help="train on a file, pick the best epoch on a dev file, save")
    t.add_argument("--train", required=True)
    t.add_argument("--dev", required=True)
    t.add_argument("--save", required=True, help="where the task model goes (.pt)")
    t.add_argument("--options", help="a published options.json (default: the bundled model)")
    t.add_argument("--weights", help="its weights.hdf5")
    t.add_argument("--layers", default="mix", help="mix (learned, default), average, top, or one layer 0, 1, ...")
    t.add_argument("--no-elmo", action="store_true", help="the baseline: the task's own features only")
    t.add_argument("--no-words", action="store_true", help="no word embeddings of the task's own")
    t.add_argument("--char-cnn", action="store_true", help="add a char CNN (the biLM's size) trained from scratch")
    t.add_argument("--encoder", choices=["bilstm", "linear"], default="bilstm")
    t.add_argument("--fine-tune", action="store_true", help="train the biLM's weights too (requires_grad=True)")
    t.add_argument("--bilm-lr", type=float, help="with --fine-tune: the biLM's learning rate (default: --lr)")
    t.add_argument("--mix-l2", type=float, default=0.0, help="lambda of the paper's lambda*||s||^2 (it used 0.001)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--hidden", type=int, default=100)
    t.add_argument("--dropout", type=float, default=0.5)
    t.add_argument("--seed", type=int, default=0)
    e = commands.add_parser("evaluate", help="score a saved task model on a file")
    e.add_argument("model")
    e.add_argument("file")
    for command in (t, e):
        command.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    return p


def main(task: Literal["tag", "classify"], argv: Sequence[str] | None = None) -> int:
    args = parser(task).parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    read = read_tagged if task == "tag" else read_labelled
    try:
        if args.command == "train":
            return _train(task, args, read)
        model, words, labels = load(args.model)
        result = score(model, encode(read(args.file), words, labels, args.file), labels)
        print(json.dumps(result))
        return 0
    except ElmoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _train(task, args, read) -> int:
    train_sentences, dev_sentences = read(args.train), read(args.dev)
    words = Vocabulary.of_words([s.tokens for s in train_sentences]) if not args.no_words else Vocabulary([])
    labels = Vocabulary.of_labels(t for s in train_sentences for t in (s.tags if task == "tag" else [s.label]))
    config = TaskConfig(task=task, n_outputs=len(labels), n_words=0 if args.no_words else len(words),
                        elmo="none" if args.no_elmo else "live", layers=args.layers,
                        options_file=args.options, weight_file=args.weights, fine_tune=args.fine_tune,
                        char_cnn=args.char_cnn, encoder=args.encoder, hidden=args.hidden, dropout=args.dropout)
    model = TaskModel(config)
    train(model, encode(train_sentences, words, labels, args.train), encode(dev_sentences, words, labels, args.dev),
          labels, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, mix_l2=args.mix_l2, seed=args.seed,
          bilm_lr=args.bilm_lr)
    save(args.save, model, words, labels)
    mix = model.scalar_mix()
    if mix is not None:
        print("layer weights softmax(s):", [round(w, 4) for w in mix.layer_weights.tolist()], "gamma", round(mix.gamma.item(), 4))
    print(f"saved {args.save}")
    return 0
