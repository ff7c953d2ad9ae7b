"""Regenerate saved_models/{mnist,cifar10}.keras and their model cards from scratch.

Trains each with kcnn's default recipe (`kcnn train DATASET --epochs 15`, cnn3)
on the real data, then exports the best checkpoint without optimizer state.

    TFDS_DATA_DIR=../shared/tfds .venv/bin/python scripts/make_saved_models.py
    # export finished runs instead of training again:
    .venv/bin/python scripts/make_saved_models.py --run mnist=runs/readme-mnist --run cifar10=runs/readme-cifar10

About 20 minutes per dataset on 2 CPU cores.
"""

from pathlib import Path

import click

import kcnn
from kcnn.export import export_run

DATASETS = ("mnist", "cifar10")
EPOCHS = 15  # the reference tutorial's budget, and the README's figures


@click.command()
@click.option("--run", "runs", multiple=True, metavar="DATASET=RUN_DIR",
              help="Export this finished run for DATASET instead of training it.")
@click.option("--data-dir", default=None, help="TFDS data_dir [default: $TFDS_DATA_DIR].")
@click.option("--out", default=str(Path(__file__).resolve().parents[1] / "saved_models"),
              show_default=True, help="Destination folder.")
def main(runs, data_dir, out):
    given = dict(r.split("=", 1) for r in runs)
    for dataset in DATASETS:
        run_dir = given.get(dataset)
        if run_dir is None:
            result = kcnn.train(dataset, epochs=EPOCHS, data_dir=data_dir,
                                output=f"runs/saved-{dataset}", overwrite=True)
            run_dir = result.run_dir
        for path in export_run(run_dir, Path(out) / f"{dataset}.keras"):
            click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
