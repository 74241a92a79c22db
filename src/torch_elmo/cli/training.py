"""The training commands: `elmo vocab`, `train`, `resume`, `evaluate`, `export`, `plot`."""

from __future__ import annotations

import json

from ..config import TrainConfig
from ..data import Vocabulary, corpus_files
from ..errors import UsageError
from ..plot import plot_perplexity
from ..trainer import VOCAB, Trainer
from ..trainer import evaluate as evaluate_model
from .common import device as _device
from .common import init_distributed, local_device


def vocab(corpus: list[str], *, out: str, min_count: int = 1, max_size: int | None = None) -> int:
    """Build a vocabulary file from a corpus, in the published format.

    One token a line: <S>, </S>, <UNK> first, then the words by descending count (ties by
    token). `elmo train` builds one itself when its config names none; build it here to fix it
    across runs or to cut it with --min-count / --max-size.

    Arguments:
        corpus: text files or globs (quote them), one whitespace-tokenized sentence a line.
        out: the vocabulary file to write.
        min_count: keep words seen at least this often (default 1: every word).
        max_size: keep at most this many entries, the three special tokens included
            (default: no limit).
    """
    built = Vocabulary.build(corpus, min_count, max_size)
    built.write(out)
    print(f"{out}: {len(built)} tokens")
    return 0


def train(*, config: str | None = None, set: list[str] = (), device: str = "cpu") -> int:
    """Train a biLM language model from scratch (bilm-tf's recipe).

    Settings come from --config (a JSON object of torch_elmo.config.TrainConfig fields), then
    each --set. The run directory (run_dir) receives config.json, vocab.txt, checkpoint.pt
    (written every checkpoint_every updates, at the end, and on Ctrl-C / SIGTERM) and
    metrics.jsonl; then `elmo export` writes the model files. Under torchrun, each process
    trains on its share of the data (data parallel). Prints the last metrics as JSON.

    Main settings (see TrainConfig for all): train_files (corpus files or globs, required), heldout_files,
    run_dir ("runs/elmo"), vocab (built from the corpus if null), options (an options.json
    giving the architecture) or bilm.FIELD (e.g. bilm.lstm_dim=512; the default architecture
    is bilm-tf's), batch_size (128), unroll_steps (20), n_epochs (10), max_updates,
    n_negative_samples (8192), optimizer ("adagrad"), lr (0.2), dropout (0.1), restart_prob
    (0.0: rows never restart, as the original; 0.1 makes models that embed well statelessly,
    every sentence from a zero state, even when trained briefly), eval_every, checkpoint_every
    (1000).

    Arguments:
        config: a JSON file of settings (default: none, every setting at its default).
        set: KEY=VALUE overriding a setting, the value read as JSON when it parses (so
            max_updates=100, heldout_files=null, train_files=data/*.txt); bilm.FIELD=VALUE sets one
            architecture field. Repeatable. Default: none.
        device: where to train: cpu (default), cuda (under torchrun, each process's own GPU).
    """
    init_distributed()
    settings = TrainConfig.from_json(config) if config else TrainConfig()
    trainer = Trainer(settings.with_overrides(list(set)), device=local_device(device))
    print(json.dumps(trainer.run()))
    return 0


def resume(run_dir: str, *, set: list[str] = (), device: str = "cpu") -> int:
    """Continue a training run from its checkpoint, exactly where it stopped.

    The same updates, data order and random draws follow as if it had never stopped (with the
    same number of processes). Settings that do not change the model or the data order can be
    changed with --set: n_epochs, max_updates, eval_every, checkpoint_every, heldout_files, progress...

    Arguments:
        run_dir: the run directory (holding checkpoint.pt).
        set: KEY=VALUE changing a setting for the rest of the run; repeatable. Default: none.
        device: where to train: cpu (default), cuda.
    """
    init_distributed()
    trainer = Trainer.resume(run_dir, list(set), device=local_device(device))
    print(json.dumps(trainer.run()))
    return 0


def evaluate(run_dir: str, files: list[str], *, batch_size: int = 32, device: str = "cpu") -> int:
    """Held-out perplexity of a run's checkpoint: forward, backward and their mean.

    Every sentence of the files once, in order, with the full softmax. Prints JSON:
    forward_ppl, backward_ppl, ppl (exp of the mean loss of the two), tokens.

    Arguments:
        run_dir: the run directory (holding checkpoint.pt and vocab.txt).
        files: held-out text files or globs, one whitespace-tokenized sentence a line.
        batch_size: rows per batch (default 32); the result does not depend on it much (the
            LSTM state is carried along rows as in training).
        device: where to run: cpu (default), cuda.
    """
    trainer = Trainer.resume(run_dir, ["progress=false"], device=_device(device))
    result = evaluate_model(trainer.model, corpus_files(files), trainer.vocab, batch_size,
                            trainer.config.unroll_steps, contiguous=trainer.config.contiguous_rows)
    print(json.dumps(result))
    return 0


def export(run_dir: str, out_dir: str, *, keep_softmax: bool = False) -> int:
    """Write a run's checkpoint as published model files: options.json, weights.hdf5, vocab.txt.

    The files are in bilm-tf's layout, read by `elmo embed`, ElmoEmbedder, Elmo, and by
    bilm-tf and AllenNLP themselves.

    Arguments:
        run_dir: the run directory (holding checkpoint.pt).
        out_dir: the directory to write the three files into (created if needed).
        keep_softmax: also store the softmax (datasets softmax/W and softmax/b) in
            weights.hdf5, to go on training from it later. Default: off (ELMo does not use it).
    """
    trainer = Trainer.resume(run_dir, ["progress=false"])
    try:
        trainer.export(out_dir, keep_softmax)
    except ValueError as e:  # word-input, forward-only or unprojected LMs: no published layout
        raise UsageError(f"{run_dir}: {e}") from None
    print(f"{out_dir}: options.json, weights.hdf5, {VOCAB}")
    return 0


def plot(run_dir: str, *, out: str | None = None) -> int:
    """Draw a run's training and held-out perplexity curves to a PNG (needs matplotlib).

    Arguments:
        run_dir: the run directory (holding metrics.jsonl).
        out: the PNG to write (default: RUN_DIR/perplexity.png).
    """
    print(plot_perplexity(run_dir, out))
    return 0
