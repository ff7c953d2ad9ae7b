"""STL-10 through TFDS' stl10 builder (96x96 colour, train/test/unlabelled splits): a tiny generated copy
prepared by TFDS itself trains under the colour recipe, and every registered model builds at 96x96x3."""

import json

import pytest
from helpers import run_cli, store_dataset

from kcnn.catalog import MODELS
from kcnn.config import resolve
from kcnn.models import create_model

STL10_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


@pytest.fixture(scope="module")
def stl10_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("stl10")
    store_dataset(data_dir, "stl10", "1.0.0", (96, 96, 3), STL10_NAMES, {"train": 24, "test": 16, "unlabelled": 8})
    return str(data_dir)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_builds_at_stl10s_size(name):
    model = create_model(name, (96, 96, 3), 10)
    assert tuple(model.input.shape[1:]) == (96, 96, 3) and tuple(model.output.shape[1:]) == (10,)


def test_kcnn_train_stl10_takes_the_colour_recipe_and_leaves_the_unlabelled_split_out(stl10_dir, tmp_path):
    assert resolve("stl10", (96, 96, 3)).recipe == "cifar"
    result = run_cli("train", "stl10", "--data-dir", stl10_dir, "--model", "cnn2", "--epochs", "1",
                     "--batch-size", "8", "--output", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "stl10 1.0.0 from the TFDS data_dir" in result.output
    assert "(24 train / 16 test, 96x96x3 images)" in result.output
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["settings"]["recipe"] == "cifar" and record["dataset"]["class_names"] == STL10_NAMES
    assert record["resolved"]["num_train"] + record["resolved"]["num_val"] == 24  # the 8 unlabelled never read
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test_examples"] == 16
