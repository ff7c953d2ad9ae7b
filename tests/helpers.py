"""Helpers shared by the tests: a tiny training run, the CLI runner, and callbacks that interrupt or probe fit."""

from pathlib import Path

import keras
from click.testing import CliRunner
from PIL import Image

from kcnn.cli import main
from kcnn.training import train

#: Settings that train the tiny generated datasets in seconds: the 24k net, batch 16, a quarter held out.
FAST = dict(model="net24k", batch_size=16, val_split=0.25)
#: The same as command-line options.
FAST_ARGS = ["--model", "net24k", "--batch-size", "16", "--val-split", "0.25"]


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
