"""The ``kcnn`` command line (click).

Heavy libraries (Keras, torch, TensorFlow) are imported inside the commands,
never at module level, so ``kcnn --help`` answers at once.
"""

from __future__ import annotations

import sys

import click

import kcnn

# Kept here, not imported from kcnn.training, so --help imports no Keras.
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine", "onecycle")
AUGMENTATIONS = ("default", "none", "crop_flip", "affine")


def _device_option(f):
    def check(ctx, param, value):
        from kcnn.device import DEVICE_PATTERN

        if not DEVICE_PATTERN.match(value):
            raise click.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N")
        return value

    return click.option("--device", default="auto", show_default=True, callback=check,
                        help="auto (CUDA if available), cpu, cuda or cuda:N.")(f)


def _run(fn, verbose: bool):
    """Run a command body: one-line errors (exit 2 for bad input, 1 otherwise), 130 on Ctrl-C."""
    from kcnn.data import DataNotFoundError

    try:
        return fn()
    except KeyboardInterrupt:
        sys.exit(130)
    except DataNotFoundError as e:
        if verbose:
            raise
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    except ValueError as e:
        if verbose:
            raise
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(kcnn.__version__, prog_name="kcnn")
def main():
    """Train, evaluate, explain and serve small CNN image classifiers.

    Keras 3 models on the PyTorch backend (KERAS_BACKEND defaults to torch),
    fed by tf.data/TFDS. Data is read from a prepared TFDS data_dir: set
    TFDS_DATA_DIR or pass --data-dir.
    """


@main.command()
@click.argument("dataset")
@click.option("--model", default="cnn3", show_default=True,
              help="Architecture: cnn3 (seed 3-conv CNN), cnn2, cnn2_simple, net24k.")
@click.option("--epochs", type=click.IntRange(min=1), default=15, show_default=True,
              help="Passes over the training split.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Images per optimizer step.")
@click.option("--lr", type=click.FloatRange(0, 10, min_open=True), default=None,
              help="Peak learning rate [default: adam 2e-3, sgd 0.05].")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True,
              help="adam, or sgd with Nesterov momentum 0.9.")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="onecycle",
              show_default=True, help="Learning-rate schedule, per step.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Decoupled weight decay.")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Dataset's default augmentation (CIFAR: pad-4 crop + flip; digits: small affine).")
@click.option("--seed", type=int, default=0, show_default=True, help="Global random seed.")
@click.option("--val-split", type=click.FloatRange(0, 0.5), default=0.1, show_default=True,
              help="Fraction of the train split held out for validation.")
@_device_option
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="TFDS data_dir holding the prepared dataset [default: $TFDS_DATA_DIR].")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Run folder [default: runs/DATASET-MODEL-N, or the unfinished run "
                   "with the same settings, which resumes].")
@click.option("--overwrite", is_flag=True, help="Delete what --output holds and start again.")
@click.option("--verbose", is_flag=True, help="Show full tracebacks on errors.")
def train(dataset, model, epochs, batch_size, lr, optimizer, lr_schedule, weight_decay, augment,
          seed, val_split, device, data_dir, output, overwrite, verbose):
    """Train MODEL on the TFDS dataset DATASET (mnist, fashion_mnist, cifar10, cifar100).

    Writes model.keras (best validation accuracy), history.csv, config.json and
    metrics.json (test accuracy/loss) into the run folder. Re-running the same
    command after a crash or Ctrl-C resumes from the last completed epoch.

    Example: kcnn train cifar10 --epochs 15
    """

    def body():
        from kcnn.training import train as train_fn

        train_fn(dataset, model=model, epochs=epochs, batch_size=batch_size, lr=lr,
                 optimizer=optimizer, lr_schedule=lr_schedule, weight_decay=weight_decay,
                 augment=augment, seed=seed, val_split=val_split, device=device,
                 data_dir=data_dir, output=output, overwrite=overwrite,
                 log=lambda line: click.echo(line))

    _run(body, verbose)


@main.command()
def env():
    """Print backend, device and library versions (paste into bug reports)."""
    from kcnn.device import resolve_device, runtime_versions

    for key, value in runtime_versions().items():
        click.echo(f"{key}: {value}")
    click.echo(f"device (auto): {resolve_device('auto')}")


@main.command("models")
def list_models_cmd():
    """List the registered architectures."""
    from kcnn.models import list_models

    for name in list_models():
        click.echo(name)
