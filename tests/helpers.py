"""Constants and helpers shared by the tests: the repository, where real data is, generated photo folders,
a tiny training run, the CLI runner, and callbacks that interrupt or probe fit."""

import functools
import os
import socket
from pathlib import Path

import keras
import numpy as np
from click.testing import CliRunner
from PIL import Image

from kcnn.cli import main
from kcnn.training import train

REPO = Path(__file__).resolve().parents[1]
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def find_real_data_dir(name="mnist"):
    """A TFDS data_dir holding a prepared ``name``: $TFDS_DATA_DIR or ../shared/tfds, else None."""
    for candidate in (os.environ.get("TFDS_DATA_DIR"), REPO.parent / "shared" / "tfds"):
        if candidate and list(Path(candidate).glob(f"{name}/*/dataset_info.json")):
            return str(candidate)
    return None


@functools.cache
def shipped_test_probabilities(stem: str):
    """``(probabilities (N, classes) float64, labels (N,))`` of the shipped model
    ``saved_models/STEM.keras`` on its dataset's whole test split, read from :func:`find_real_data_dir`
    and predicted once per test session for every test that compares against them; None where that
    dataset is not prepared here."""
    from kcnn.data import load_info, load_split_arrays
    from kcnn.evaluation import predict_probs
    from kcnn.prediction import load_classifier, shipped_models

    clf = load_classifier(next(p for p in shipped_models() if p.stem == stem))
    data_dir = find_real_data_dir(clf.dataset)
    if data_dir is None:
        return None
    images, labels = load_split_arrays(load_info(clf.dataset, data_dir), "test")
    return predict_probs(clf.model, images), labels


#: Broken files the generated photo folder holds: (class folder, name, what is wrong).
BROKEN_PHOTOS = (("disc", "broken.jpg", "truncated"), ("bar", "notes.png", "text"), ("cross", "empty.jpg", "empty"))


def draw_shape(kind: str, width: int, height: int, rng) -> np.ndarray:
    """A ``(height, width, 3)`` uint8 drawing: a bright disc, a vertical bar or a cross on a noisy dark
    background, in a random colour (generated, not dataset data)."""
    ys, xs = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    if kind == "disc":
        mask = (ys - 0.5) ** 2 + (xs - 0.5) ** 2 < 0.1
    elif kind == "bar":
        mask = np.abs(xs - 0.5) < 0.12
    else:
        mask = (np.abs(xs - 0.5) < 0.1) | (np.abs(ys - 0.5) < 0.1)
    image = rng.integers(0, 60, (height, width, 3))
    image[mask] = rng.integers(150, 256, 3)
    return image.astype(np.uint8)


def write_photo_folder(root: Path, per_class: int = 12, seed: int = 0, modes=("RGB", "L", "RGBA", "P")) -> Path:
    """``root/CLASS/*``: ``per_class`` drawings of each class at assorted sizes, as JPEG and PNG in
    the PIL ``modes`` given in turn, plus the :data:`BROKEN_PHOTOS`."""
    rng = np.random.default_rng(seed)
    for kind in ("disc", "bar", "cross"):
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            im = Image.fromarray(draw_shape(kind, int(rng.integers(20, 61)), int(rng.integers(20, 61)), rng))
            mode = modes[i % len(modes)]
            im = im.quantize(64) if mode == "P" else im.convert(mode)
            jpeg = mode in ("RGB", "L") and (i // len(modes)) % 2 == 0
            im.save(root / kind / f"{i:03d}.{'jpg' if jpeg else 'png'}")
    for kind, name, problem in BROKEN_PHOTOS:
        path = root / kind / name
        if problem == "truncated":
            path.write_bytes(next((root / kind).glob("*.jpg")).read_bytes()[:200])
        else:
            path.write_bytes(b"notes, not an image" if problem == "text" else b"")
    return root


def store_dataset(data_dir, name, version, shape, class_names, sizes, seed=0, with_id=False):
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


#: Settings that train the tiny generated datasets in seconds: the 24k net, batch 16, a quarter held out.
FAST = dict(model="net24k", batch_size=16, val_split=0.25)
#: The same as command-line options.
FAST_ARGS = ["--model", "net24k", "--batch-size", "16", "--val-split", "0.25"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args):
    """``kcnn ARGS`` in this process; the click ``Result`` (exit_code, output)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def config_of_command(command: str, image_shape):
    """The :class:`kcnn.config.TrainConfig` that a ``kcnn train ...`` command line trains, as the CLI parses it."""
    import dataclasses

    from kcnn.config import TrainConfig, resolve

    params = main.commands["train"].make_context("train", command.split()[2:]).params
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"dataset"}
    return resolve(params["dataset"], image_shape, **{k: v for k, v in params.items() if k in names})


def tiny_train(data_dir, output, dataset="mnist", **overrides):
    """:func:`kcnn.train` of a tiny run into ``output``: :data:`FAST` settings unless overridden, silent."""
    options = dict(FAST, data_dir=data_dir, output=str(output), verbose=0)
    options.update(overrides)
    return train(dataset, **options)


class InterruptAt(keras.callbacks.Callback):
    """Ctrl-C at the start of one epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def assert_image_file(path, fmt="png"):
    if fmt == "svg":
        assert "<svg" in path.read_text()[:2000]
    elif fmt == "pdf":
        assert path.read_bytes()[:5] == b"%PDF-"
    else:
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) > 100


def written(result):
    return [Path(line.split("wrote ", 1)[1]) for line in result.output.splitlines() if line.startswith("wrote ")]
