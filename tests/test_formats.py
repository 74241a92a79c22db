"""Loading checks the options and weight files against each other; saving round-trips."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from torch_elmo import BiLM, BiLMConfig, ElmoFormatError, batch_to_ids, load_bilm, read_options, save_bilm
from torch_elmo.files import atomic_path
from torch_elmo.formats import bilm_datasets


@pytest.fixture
def model_copy(tmp_path, options_file, weight_file):
    shutil.copy(options_file, tmp_path / "options.json")
    shutil.copy(weight_file, tmp_path / "weights.hdf5")
    return tmp_path / "options.json", tmp_path / "weights.hdf5"


def edit_options(path, change):
    options = json.loads(path.read_text())
    change(options)
    path.write_text(json.dumps(options))


def test_reads_the_published_options(options_file):
    config = read_options(options_file)
    assert config.filters == ((1, 4), (2, 8), (3, 16), (4, 32), (5, 64))
    assert (config.lstm_dim, config.projection_dim, config.n_layers) == (64, 16, 2)
    assert config.use_skip_connections is False and config.cell_clip == 3


def test_missing_dataset_names_file_and_dataset(model_copy):
    options, weights = model_copy
    with h5py.File(weights, "a") as f:
        del f["CNN_high_1/W_carry"]
    with pytest.raises(ElmoFormatError, match=r"weights\.hdf5.*'CNN_high_1/W_carry'.*\(124, 124\)"):
        load_bilm(options, weights)


def test_wrong_shape_names_the_expected_shape(model_copy):
    options, weights = model_copy
    edit_options(options, lambda o: o["lstm"].update(dim=32))
    shape_error = r"'RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0' has shape \(32, 256\).*asks for \(32, 128\)"
    with pytest.raises(ElmoFormatError, match=shape_error):
        load_bilm(options, weights)


def test_training_n_characters_is_refused_with_the_fix(model_copy):
    options, weights = model_copy
    edit_options(options, lambda o: o["char_cnn"].update(n_characters=261))
    with pytest.raises(ElmoFormatError, match=r"options\.json.*n_characters.*261.*set it to 262"):
        load_bilm(options, weights)


def test_not_hdf5(model_copy):
    options, weights = model_copy
    weights.write_bytes(b"this is not HDF5")
    with pytest.raises(ElmoFormatError, match=r"weights\.hdf5: not an HDF5"):
        load_bilm(options, weights)


def test_missing_files(tmp_path, options_file):
    with pytest.raises(ElmoFormatError, match="no such options file"):
        load_bilm(tmp_path / "nope.json", tmp_path / "w.hdf5")
    with pytest.raises(ElmoFormatError, match="no such weight file"):
        load_bilm(options_file, tmp_path / "w.hdf5")


@pytest.mark.parametrize("change, message", [
    (lambda o: o["lstm"].pop("n_layers"), r"missing \"lstm\".\"n_layers\""),
    (lambda o: o["char_cnn"].update(activation="gelu"), "activation"),
    (lambda o: o["char_cnn"].update(filters=[[1]]), "filters"),
    (lambda o: o["lstm"].update(dim="big"), "expected an integer"),
    (lambda o: o.pop("char_cnn"), "char_cnn"),
])
def test_bad_options(model_copy, change, message):
    options, weights = model_copy
    edit_options(options, change)
    with pytest.raises(ElmoFormatError, match=message):
        load_bilm(options, weights)


def test_not_json(model_copy):
    options, weights = model_copy
    options.write_text("{not json")
    with pytest.raises(ElmoFormatError, match="not a JSON"):
        load_bilm(options, weights)


def test_save_round_trip_is_exact(tmp_path, options_file, weight_file):
    bilm = load_bilm(options_file, weight_file)
    save_bilm(bilm, tmp_path / "options.json", tmp_path / "weights.hdf5")
    with h5py.File(weight_file) as a, h5py.File(tmp_path / "weights.hdf5") as b:
        for name in bilm_datasets(bilm.config):
            np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)
    again = load_bilm(tmp_path / "options.json", tmp_path / "weights.hdf5")
    ids = batch_to_ids([["some", "words"], ["more"]])
    with torch.no_grad():
        for x, y in zip(bilm(ids).layers, again(ids).layers):
            torch.testing.assert_close(x, y, atol=0, rtol=0)


def test_save_random_model_with_skip_connections_and_no_projection(tmp_path):
    torch.manual_seed(0)
    config = BiLMConfig(filters=((1, 4), (2, 4)), char_embed_dim=3, n_highway=1, lstm_dim=8,
                        projection_dim=8, n_layers=2, use_skip_connections=True)
    bilm = BiLM(config).eval()
    save_bilm(bilm, tmp_path / "o.json", tmp_path / "w.hdf5")
    assert read_options(tmp_path / "o.json") == config
    again = load_bilm(tmp_path / "o.json", tmp_path / "w.hdf5")
    ids = batch_to_ids([["a", "b", "c"]])
    with torch.no_grad():
        torch.testing.assert_close(bilm(ids).layers[-1], again(ids).layers[-1], atol=0, rtol=0)


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "weights.hdf5"
    target.write_bytes(b"previous")
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            open(tmp, "wb").write(b"half")
            raise OSError("No space left on device")
    assert target.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [target]
