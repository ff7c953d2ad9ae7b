"""Shared fixtures: tiny prepared TFDS datasets from generated arrays, and the real data when present
(constants and helpers the tests share: helpers.py)."""

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("kcnn").setLevel(logging.INFO)  # caplog sees the Python API's progress lines

from helpers import CIFAR_NAMES, find_real_data_dir, write_photo_folder  # noqa: E402  (after the backend)

@pytest.fixture(scope="session")
def real_data_dir():
    path = find_real_data_dir("mnist")
    if path is None:
        pytest.skip("no prepared TFDS data: set TFDS_DATA_DIR or put it at ../shared/tfds")
    return path


def _store(data_dir, name, version, shape, class_names, sizes, seed=0, with_id=False):
    """Prepare a random dataset with the features TFDS' registered builder ``name`` decodes."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(seed)

    def examples(split, n):
        ex = {"image": rng.integers(0, 256, (n, *shape), dtype=np.uint8),
              "label": rng.integers(0, len(class_names), n)}
        if with_id:
            ex["id"] = [f"{split}_{i:05d}" for i in range(n)]
        return tf.data.Dataset.from_tensor_slices(ex)

    splits = {split: examples(split, n) for split, n in sizes.items()}
    spec = {"image": tfds.features.Image(shape=shape),
            "label": tfds.features.ClassLabel(names=class_names)}
    if with_id:
        spec["id"] = tfds.features.Text()
    features = tfds.features.FeaturesDict(spec)
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=version, features=features, split_datasets=splits, data_dir=str(data_dir)
    )


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory):
    """A TFDS data_dir with tiny random ``mnist``, ``fashion_mnist`` (28x28x1) and ``cifar10`` (32x32x3), prepared by TFDS itself."""
    data_dir = tmp_path_factory.mktemp("tfds")
    _store(data_dir, "mnist", "3.0.1", (28, 28, 1), [str(i) for i in range(10)],
           {"train": 96, "test": 32})
    _store(data_dir, "fashion_mnist", "3.0.1", (28, 28, 1),
           ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
           {"train": 32, "test": 16}, seed=2)
    _store(data_dir, "cifar10", "3.0.2", (32, 32, 3),
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
