"""Shared fixtures: tiny prepared TFDS datasets from generated arrays, and the real data when present
(constants and helpers the tests share: helpers.py)."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("kcnn").setLevel(logging.INFO)  # caplog sees the Python API's progress lines

# after the backend is set: helpers imports kcnn
from helpers import CIFAR_NAMES, find_real_data_dir, store_dataset, write_photo_folder  # noqa: E402

@pytest.fixture(scope="session")
def real_data_dir():
    path = find_real_data_dir("mnist")
    if path is None:
        pytest.skip("no prepared TFDS data: set TFDS_DATA_DIR or put it at ../shared/tfds")
    return path


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory):
    """A TFDS data_dir with tiny random ``mnist``, ``fashion_mnist`` (28x28x1) and ``cifar10`` (32x32x3), prepared by TFDS itself."""
    data_dir = tmp_path_factory.mktemp("tfds")
    store_dataset(data_dir, "mnist", "3.0.1", (28, 28, 1), [str(i) for i in range(10)],
           {"train": 96, "test": 32})
    store_dataset(data_dir, "fashion_mnist", "3.0.1", (28, 28, 1),
           ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
           {"train": 32, "test": 16}, seed=2)
    store_dataset(data_dir, "cifar10", "3.0.2", (32, 32, 3),
           ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
           {"train": 64, "test": 32}, seed=1, with_id=True)
    return str(data_dir)


@pytest.fixture(scope="session")
def cifar_model(tmp_path_factory):
    """A small untrained cifar10-shaped cnn3 with a model card, and a photo-like image."""
    import keras

    from kcnn.models import create_model

    folder = tmp_path_factory.mktemp("figs")
    keras.utils.set_random_seed(0)
    create_model("cnn3", (32, 32, 3), 10).save(folder / "cifar.keras")
    (folder / "cifar.json").write_text(json.dumps({"dataset": "cifar10", "class_names": CIFAR_NAMES}))
    gradient = np.linspace(0, 255, 64, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(gradient, (48, 1))] * 3, axis=-1)).save(folder / "photo.png")
    return folder


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """A plain folder of class folders (disc, bar, cross) of generated colour drawings, with broken files."""
    return write_photo_folder(tmp_path_factory.mktemp("photos") / "shapes")
