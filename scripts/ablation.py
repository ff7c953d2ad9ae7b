"""Ablation of the ``airbench`` recipe: each of its methods taken out on its own, and what that costs;
and the augmentation policies (cutout, MixUp, CutMix, RandAugment) in its alternating flip's place.

airbench's paper (K. Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", 2024, table 1) counts
the epochs each method saves on the way to 94%. Here each run has a fixed budget instead (5 epochs
by default: the schedule is then a whole short run), and the table gives each variant's test
accuracy, without and with test-time augmentation, against the full recipe's in the same table.
The variants are ``reproduce.ABLATIONS``; TTA is not trained, so its columns come from every run's
own figures (``metrics.json``: ``test_accuracy_tta_flip``, ``test_accuracy_tta_flip_shift``). Not
ablated here: the frozen whitening and the dirac initialization, which are parts of the whitened
networks rather than settings.

Runs and records work as in ``scripts/reproduce.py`` (it is imported): each run is ``kcnn train
cifar10 --model MODEL --epochs E --seed S [one method out] --output runs/reproduce/NAME``, a finished
run is copied to ``docs/runs/NAME.json``, and finished runs are read, not trained again, so the
script can be stopped and run again.

    TFDS_DATA_DIR=../shared/tfds .venv/bin/python scripts/ablation.py --seeds 2   # 6-12 min a run on 2 CPU cores
    .venv/bin/python scripts/ablation.py --no-train                             # the table from records
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import reproduce
from reproduce import ABLATIONS, Row, cell, minutes

#: The ablation's runs: the narrower whitened net (airbench93's widths), which the issue allows to save time.
MODEL, EPOCHS = "whitened8_narrow", 5
#: (``metrics.json`` key, column) of the table.
FIGURES = (("test_accuracy", "test accuracy"), ("test_accuracy_tta_flip", "flip TTA"),
           ("test_accuracy_tta_flip_shift", "flip_shift TTA"))


def row(model: str, epochs: int) -> Row:
    """The runs' :class:`reproduce.Row` (no tutorial figure or target: those columns are reproduce's)."""
    return Row("cifar10", model, epochs, tutorial_figure="", target=0.0, seeds=1)


def table(model: str, epochs: int) -> str:
    """Markdown table of every finished run with today's settings, the full recipe first; the last
    column but one is each variant's mean flip_shift TTA figure minus the full recipe's."""
    runs_row = row(model, epochs)
    runs = {variant: reproduce.read_runs(runs_row, variant) for variant in ("default", *ABLATIONS)}
    # minutes() numbers the machines of every run it was given
    reproduce._ALL.update({(runs_row.name, variant): found for variant, found in runs.items()})
    full, tta = runs["default"], FIGURES[-1][0]
    lines = [f"| change to the full recipe | {' | '.join(name for _, name in FIGURES)} | flip_shift TTA vs full | "
             f"fit minutes |", "| --- |" + " --: |" * (len(FIGURES) + 2)]
    for variant, found in runs.items():
        delta = ""
        if variant != "default" and found and full and all(tta in r for r in found + full):
            delta = f"{100 * (statistics.mean(r[tta] for r in found) - statistics.mean(r[tta] for r in full)):+.2f} pt"
        figures = " | ".join(cell(found, key) for key, _ in FIGURES)
        name = "nothing (the full recipe)"
        if variant != "default":
            name = f"`{variant}` (`{' '.join(reproduce.flags(variant))}`)"
        lines.append(f"| {name} | {figures} | {delta} | {minutes(found)} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help=f"network [default: {MODEL}]")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs of every run [default: {EPOCHS}]")
    parser.add_argument("--variants", nargs="*", choices=["default", *ABLATIONS], default=["default", *ABLATIONS],
                        help="runs to train, 'default' being the full recipe [default: all]")
    parser.add_argument("--seeds", type=int, default=1, help="runs per variant [default: 1]")
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir [default: $TFDS_DATA_DIR]")
    parser.add_argument("--no-train", action="store_true", help="only print the table of finished runs")
    args = parser.parse_args(argv)

    os.chdir(reproduce.ROOT)
    runs = row(args.model, args.epochs)
    if not args.no_train:
        for seed in range(args.seeds):
            for variant in args.variants:
                if reproduce.read_run(runs, variant, seed) is None:
                    reproduce.train(runs, variant, seed, args.data_dir)
    print(table(args.model, args.epochs))
    for stale in reproduce.STALE:
        print(f"left out: {stale}: trained with other settings than today's command", file=sys.stderr)


if __name__ == "__main__":
    main()
