"""Regenerate saved_models/{mnist,cifar10}.keras and their model cards from scratch.

Trains each with kcnn's default recipe on the real data (MNIST: `kcnn train mnist --epochs 15`,
cnn3; CIFAR-10: `kcnn train cifar10 --model whitened8 --epochs 10`, the airbench recipe), then
exports the best checkpoint without optimizer state.

    TFDS_DATA_DIR=../shared/tfds .venv/bin/python scripts/make_saved_models.py
    # export finished runs instead of training again:
    .venv/bin/python scripts/make_saved_models.py --run mnist=runs/readme-mnist --run cifar10=runs/readme-cifar10

About 20 minutes for MNIST and 50 for CIFAR-10 on 2 CPU cores.
"""

from pathlib import Path

import click

import kcnn
from kcnn.export import export_run

#: (model, epochs) per dataset: the tutorial's cnn3 and budget for digits; airbench94's network and
#: its ~10 epochs for CIFAR-10 (the best CIFAR-10 model kcnn trains, docs/experiments.md).
TRAINED = {"mnist": ("cnn3", 15), "cifar10": ("whitened8", 10)}


@click.command()
@click.option("--run", "runs", multiple=True, metavar="DATASET=RUN_DIR",
              help="Export this finished run for DATASET instead of training it.")
@click.option("--data-dir", default=None, help="TFDS data_dir [default: $TFDS_DATA_DIR].")
@click.option("--out", default=str(Path(__file__).resolve().parents[1] / "saved_models"),
              show_default=True, help="Destination folder.")
def main(runs, data_dir, out):
    given = dict(r.split("=", 1) for r in runs)
    for dataset, (model, epochs) in TRAINED.items():
        run_dir = given.get(dataset)
        if run_dir is None:
            result = kcnn.train(dataset, model=model, epochs=epochs, data_dir=data_dir,
                                output=f"runs/saved-{dataset}", overwrite=True)
            run_dir = result.run_dir
        for path in export_run(run_dir, Path(out) / f"{dataset}.keras"):
            click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
