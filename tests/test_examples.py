"""examples/: the task files and their errors, span F1 on known cases, and both commands end to
end (train, save, reload, evaluate) on the tiny fixture model."""

import random

import pytest
import torch

from examples.cli import main
from examples.data import Labelled, Tagged, TaskDataError, Vocabulary, read_labelled, read_tagged
from examples.loop import encode, fit_probe, load, save, score, train
from examples.metrics import bio_spans, span_f1
from examples.models import TaskConfig, TaskModel

TAGGED = "The\tDT\ncat\tNN\nsat\tVBD\n\nA\tDT\ndog\tNN\nran\tVBD\n.\t.\n\t\nThe\tDT\ndog\tNN\n"
NER = "John\tB-PER\nSmith\tI-PER\nlives\tO\nin\tO\nParis\tB-LOC\n\nParis\tB-LOC\nHilton\tO\n"
LABELLED = "positive\ta fine film\nnegative\ta dull , dull film\n\npositive\tfine acting\nnegative\tdull\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_span_f1_known_cases():
    # seqeval's README example: one of two predicted spans is exact
    gold = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    guess = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    assert span_f1(gold, guess) == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert span_f1(gold, gold)["f1"] == 1.0
    assert span_f1([["O", "O"]], [["B-PER", "O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    # a stray I- opens a span (conlleval, seqeval's default); a type change ends one
    assert bio_spans(["I-PER", "I-PER", "O"]) == {("PER", 0, 2)}
    assert bio_spans(["B-PER", "I-LOC", "B-LOC", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 2), ("LOC", 2, 4)}
    assert bio_spans(["B-PER", "B-PER"]) == {("PER", 0, 1), ("PER", 1, 2)}


def test_reads_files(tmp_path):
    sentences = read_tagged(write(tmp_path, "t.tsv", TAGGED))
    assert [s.tokens for s in sentences] == [["The", "cat", "sat"], ["A", "dog", "ran", "."], ["The", "dog"]]
    assert [s.line for s in sentences] == [1, 5, 10]
    labelled = read_labelled(write(tmp_path, "l.tsv", LABELLED))
    assert [(s.label, s.tokens, s.line) for s in labelled][1] == ("negative", ["a", "dull", ",", "dull", "film"], 2)


@pytest.mark.parametrize("reader, text, where, says", [
    (read_tagged, "The\tDT\ncat\tNN\textra\n", ":2:", "expected 2 tab-separated columns"),
    (read_tagged, "The DT\n", ":1:", "expected 2 tab-separated columns"),
    (read_tagged, "\n \n", ": no sentences", "token<TAB>tag"),
    (read_labelled, "positive\tgood\nnegative\n", ":2:", "label<TAB>text"),
    (read_labelled, "", ": no sentences", "label<TAB>text"),
])
def test_bad_files_name_file_and_line(tmp_path, reader, text, where, says):
    path = write(tmp_path, "bad.tsv", text)
    with pytest.raises(TaskDataError) as error:
        reader(path)
    message = str(error.value)
    assert f"{path}{where}" in message and says in message and "\n" not in message


def test_unknown_label_names_its_line(tmp_path):
    labels = Vocabulary.of_labels(["DT", "NN"])
    path = write(tmp_path, "test.tsv", "The\tDT\ncat\tNN\nsat\tVBD\n")
    with pytest.raises(TaskDataError, match=r"test.tsv:3: label 'VBD' was not in the training data"):
        encode(read_tagged(path), Vocabulary([]), labels, path)


def _ner_task(tmp_path):
    """The NER file, its sentences, vocabularies and examples."""
    path = write(tmp_path, "ner.tsv", NER)
    sentences = read_tagged(path)
    words = Vocabulary.of_words(s.tokens for s in sentences)
    labels = Vocabulary.of_labels(t for s in sentences for t in s.tags)
    return path, sentences, words, labels, encode(sentences, words, labels, path)


def test_tagger_trains_saves_reloads(tmp_path, options_file, weight_file):
    path, sentences, words, labels, examples = _ner_task(tmp_path)
    config = TaskConfig("tag", len(labels), n_words=len(words), options_file=str(options_file),
                        weight_file=str(weight_file), char_cnn=True, hidden=8)
    model = TaskModel(config)
    history = train(model, examples, examples, labels, epochs=2, mix_l2=0.001, log=lambda _: None)
    assert len(history) == 2 and {"accuracy", "f1"} <= set(history[0])
    before = score(model, examples, labels)
    save(tmp_path / "tagger.pt", model, words, labels)
    assert not any(k.startswith("elmo._elmo_lstm.") for k in torch.load(tmp_path / "tagger.pt")["state"])  # frozen biLM left out
    again, words2, labels2 = load(tmp_path / "tagger.pt")
    assert score(again, encode(sentences, words2, labels2, path), labels2) == before
    assert model.mix_penalty().item() > 0


def test_fine_tuned_bilm_learns_at_its_own_rate(tmp_path, options_file, weight_file):
    path, sentences, words, labels, examples = _ner_task(tmp_path)
    model = TaskModel(TaskConfig("tag", len(labels), n_words=len(words), options_file=str(options_file),
                                 weight_file=str(weight_file), fine_tune=True, hidden=4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, examples, examples, labels, epochs=1, lr=1e-2, bilm_lr=0.0, log=lambda _: None)
    after = {k: v.clone() for k, v in model.state_dict().items()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "output.weight" in changed and not any(k.startswith("elmo._elmo_lstm.") for k in changed)
    train(model, examples, examples, labels, epochs=1, lr=1e-2, bilm_lr=1e-2, log=lambda _: None)
    assert any(not torch.equal(after[k], v) for k, v in model.state_dict().items() if k.startswith("elmo._elmo_lstm."))


def _cached_task(n_sentences=40, dim=6, seed=0):
    """Sentences of random cached 'biLM layers' (3, n, dim) whose tag is the sign of one feature
    of layer 1: linearly separable through the mix, not through layer 0 or 2."""
    g = torch.Generator().manual_seed(seed)
    examples, layers = [], []
    labels = Vocabulary.of_labels(["neg", "pos"])
    for k in range(n_sentences):
        array = torch.randn(3, 5, dim, generator=g)
        tags = ["pos" if x > 0 else "neg" for x in array[1, :, 0]]
        examples.append(encode([Tagged([f"w{k}"] * 5, tags, 1)], Vocabulary([]), labels, "toy")[0])
        layers.append(array.numpy())
    return examples, layers, labels


def test_linear_probe_fitted_to_convergence():
    examples, layers, labels = _cached_task()
    config = TaskConfig("tag", len(labels), elmo="cached", layers="mix", n_elmo_layers=3, elmo_dim=6, encoder="linear")
    torch.manual_seed(0)
    model = TaskModel(config)
    loss = fit_probe(model, examples, mix_l2=0.001, train_layers=layers, log=lambda _: None)
    assert loss < 0.2  # separable: L-BFGS drives the loss down where a few Adam epochs would not
    assert score(model, examples, labels, layers=layers)["accuracy"] > 0.97
    assert model.scalar_mix().layer_weights.argmax().item() == 1  # the mix found the layer that carries the tag


def test_char_cnn_from_scratch_learns():
    # the bundled model's CNN size (512 filters, 2 highways) under Adam: unnormalised, its outputs grew
    # until the BiLSTM saturated and a classifier could not fit even these 64 sentences
    g = random.Random(0)
    spellings = ["".join(g.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(g.randint(2, 9))) for _ in range(300)]
    sentences = [Labelled([g.choice(spellings) for _ in range(g.randint(3, 12))], g.choice(["pos", "neg"]), k + 1)
                 for k in range(64)]
    words = Vocabulary.of_words(s.tokens for s in sentences)
    labels = Vocabulary.of_labels(s.label for s in sentences)
    examples = encode(sentences, words, labels, "toy")
    torch.manual_seed(0)
    model = TaskModel(TaskConfig("classify", len(labels), n_words=len(words), elmo="none", char_cnn=True,
                                 hidden=32, dropout=0.0))
    train(model, examples, examples, labels, epochs=4, lr=3e-3, batch_size=16, log=lambda _: None)
    assert score(model, examples, labels)["accuracy"] > 0.95  # unnormalised: 0.55 after 3 epochs, 0.83 after 5


def test_early_stopping_waits_patience_epochs():
    examples, layers, labels = _cached_task()
    config = TaskConfig("tag", len(labels), elmo="cached", layers="1", n_elmo_layers=3, elmo_dim=6, hidden=4)
    torch.manual_seed(0)
    history = train(TaskModel(config), examples, examples[:5], labels, epochs=30, patience=2, lr=3e-2,
                    train_layers=layers, dev_layers=layers[:5], log=lambda _: None)
    scores = [h["accuracy"] for h in history]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    assert len(scores) < 30 and len(scores) - 1 - best == 2  # stopped 2 epochs after its best


def test_early_stopping_waits_while_the_loss_is_on_its_starting_plateau():
    # a sentence classifier on ELMo's vectors can sit at chance for epochs before it learns:
    # patience only counts once the training loss has fallen (here it never does: no learning rate)
    examples, layers, labels = _cached_task()
    config = TaskConfig("tag", len(labels), elmo="cached", layers="0", n_elmo_layers=3, elmo_dim=6, hidden=4)
    torch.manual_seed(0)
    history = train(TaskModel(config), examples, examples[:5], labels, epochs=6, patience=2, lr=0.0,
                    train_layers=layers, dev_layers=layers[:5], log=lambda _: None)
    assert history[0]["accuracy"] > 0 and len(history) == 6


def test_commands_end_to_end(tmp_path, options_file, weight_file, capsys):
    model_files = ["--options", str(options_file), "--weights", str(weight_file)]
    train_file, test_file = write(tmp_path, "train.tsv", TAGGED), write(tmp_path, "test.tsv", TAGGED)
    assert main("tag", ["train", "--train", str(train_file), "--dev", str(train_file), "--save", str(tmp_path / "t.pt"),
                        "--epochs", "1", "--hidden", "8", "--layers", "top", *model_files]) == 0
    assert main("tag", ["evaluate", str(tmp_path / "t.pt"), str(test_file)]) == 0
    assert '"accuracy"' in capsys.readouterr().out
    labelled = write(tmp_path, "l.tsv", LABELLED)
    assert main("classify", ["train", "--train", str(labelled), "--dev", str(labelled), "--save", str(tmp_path / "c.pt"),
                             "--epochs", "1", "--encoder", "linear", "--fine-tune", *model_files]) == 0
    assert main("classify", ["evaluate", str(tmp_path / "c.pt"), str(labelled)]) == 0
    assert '"accuracy"' in capsys.readouterr().out
    write(tmp_path, "unknown.tsv", "mixed\tso-so film\n")
    assert main("classify", ["evaluate", str(tmp_path / "c.pt"), str(tmp_path / "unknown.tsv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown.tsv:1: label 'mixed' was not in the training data" in err
    assert main("tag", ["train", "--train", str(write(tmp_path, "empty.tsv", "")), "--dev", str(train_file),
                        "--save", str(tmp_path / "x.pt")]) == 2
    assert "empty.tsv: no sentences" in capsys.readouterr().err
