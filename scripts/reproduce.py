"""Reproduce the reference tutorials' figures and kcnn's targets, and write the results table.

Each row is one (dataset, architecture, epochs) of the reference tutorials. For every row it
trains the ``baseline`` recipe (the tutorials' plain setup) and kcnn's default recipe over
several seeds, each run as ``kcnn train ... --output runs/reproduce/NAME``, then prints a
Markdown table (mean ± sample standard deviation of the test accuracy of each run's
``model.keras``, or of its last epoch's weights where the target is a final figure, runs counted,
mean wall time of ``fit``) and writes it to ``docs/results.md`` and between the ``reproduce``
markers of README.md. A third column, ``full``, is the default trained on every training image
(``--val-split 0``); it is trained only when asked (``--variants full``) and reads "= default"
where the default already has no validation split.

Each finished run (its ``metrics.json`` exists) is copied to a record, ``docs/runs/NAME.json``
(its ``metrics.json`` and ``config.json``, a few KB), which is committed: the table is built from
the records, so it rebuilds from a clean checkout, where the run folders (checkpoints, in the
ignored ``runs/``) are not. Runs with a folder or a record are read, not retrained, and an
unfinished one resumes, so the script can be stopped and run again; cells with no finished run
yet read "not run". ``--no-train`` only rebuilds the table. A finished run whose settings differ
from what today's command would train (a recipe changed since) is left out of the table and named
on stderr, and training stops at it rather than overwrite it: move its folder out of
``runs/reproduce`` and its record out of ``docs/runs`` to train it again. Every record replays
with ``kcnn train --config docs/runs/NAME.json``.

    TFDS_DATA_DIR=../shared/tfds .venv/bin/python scripts/reproduce.py            # everything (~20 h on 2 CPU cores)
    TFDS_DATA_DIR=../shared/tfds .venv/bin/python scripts/reproduce.py --rows mnist:net24k:10
    .venv/bin/python scripts/reproduce.py --no-train                              # table from finished runs

The tutorials' figures are those their own READMEs publish; the tutorials are named in the
docstrings of :mod:`kcnn.models`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from kcnn.config import TrainConfig, resolve

ROOT = Path(__file__).resolve().parent.parent
RUNS = Path("runs/reproduce")
#: One JSON per finished run, {"metrics": its metrics.json, "config": its config.json}; kept in git.
RECORDS = Path("docs/runs")
TABLE = Path("docs/results.md")
BEGIN, END = "<!-- reproduce:begin -->", "<!-- reproduce:end -->"
#: The columns of every row, by the name that run names carry: what ``kcnn train`` is given beyond
#: the row's dataset, model, epochs and seed.
VARIANTS = {"baseline": {"recipe": "baseline"}, "default": {}, "full": {"val_split": 0.0}}
#: Runs of ``scripts/ablation.py``, by the name their runs carry: the default recipe (``airbench`` on the
#: whitened nets) with one of its methods taken out, then with each augmentation policy of the
#: tutorials' future work in place of its alternating flip (each also flips at random and shifts,
#: so ``random_flip`` is what they add to).
ABLATIONS = {"no_lookahead": {"lookahead": False}, "no_bn_bias_lr": {"bn_bias_lr": 1.0},
             "random_flip": {"augment": "flip_shift"}, "no_label_smoothing": {"label_smoothing": 0.0},
             "onecycle": {"lr_schedule": "onecycle"},
             **{policy: {"augment": f"flip_shift_{policy}"} for policy in ("cutout", "mixup", "cutmix", "randaugment")}}


def overrides(variant: str) -> dict:
    """What ``kcnn train`` is given for ``variant`` (a column or an ablation) beyond the row's run."""
    return VARIANTS[variant] if variant in VARIANTS else ABLATIONS[variant]


@dataclasses.dataclass(frozen=True)
class Row:
    dataset: str
    model: str
    epochs: int
    tutorial_figure: str  # the reference tutorial's published test accuracy, as published
    target: float  # kcnn's target test accuracy, fraction
    seeds: int  # runs per variant: >= 3 for the MNIST family, >= 2 for CIFAR-10
    final: bool = False  # the target is the last epoch's accuracy, not the best checkpoint's

    @property
    def metric(self) -> str:
        """The ``metrics.json`` key the row reports."""
        return "final_test_accuracy" if self.final else "test_accuracy"

    @property
    def name(self) -> str:
        return f"{self.dataset}:{self.model}:{self.epochs}"


ROWS = (
    Row("mnist", "cnn3", 15, "99.39%", 0.996, 3),
    Row("mnist", "net24k", 10, "99.26% best / 99.13% final", 0.994, 3, final=True),
    Row("fashion_mnist", "cnn3", 15, "—", 0.935, 3),
    Row("cifar10", "cnn3", 15, "78.47%", 0.850, 2),
    Row("cifar10", "cnn3", 5, "78.47% in 15 epochs", 0.7847, 2),  # time to the tutorial's accuracy
    Row("cifar10", "cnn2", 10, "75–80%", 0.820, 2),
)


#: Image shape of each row's dataset (TFDS metadata), which picks the default recipe.
IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


def run_name(row: Row, variant: str, seed: int) -> str:
    return f"{row.dataset}-{row.model}-{row.epochs}ep-{variant}-seed{seed}"


def command(row: Row, variant: str, seed: int, data_dir: str | None) -> list[str]:
    """The ``kcnn train`` command of one run (printed, and run as a subprocess)."""
    cmd = ["kcnn", "train", row.dataset, "--model", row.model, "--epochs", str(row.epochs),
           "--seed", str(seed), "--output", str(RUNS / run_name(row, variant, seed))]
    cmd += flags(variant)
    if data_dir:
        cmd += ["--data-dir", data_dir]
    return cmd


def flags(variant: str) -> list[str]:
    """``kcnn train``'s options for :func:`overrides`, e.g. ``["--val-split", "0.0"]``, ``["--no-lookahead"]``."""
    out = []
    for key, value in overrides(variant).items():
        flag = key.replace("_", "-")
        out += [f"--{flag}" if value else f"--no-{flag}"] if isinstance(value, bool) else [f"--{flag}", str(value)]
    return out


def today(row: Row, variant: str, seed: int, image_shape) -> TrainConfig:
    """The settings today's command of (row, variant, seed) trains."""
    return resolve(row.dataset, image_shape, model=row.model, epochs=row.epochs, seed=seed, **overrides(variant))


def read_run(row: Row, variant: str, seed: int) -> dict | None:
    """The finished run's metrics and resolved recipe name, or None.

    Raises:
        SystemExit: the run's folder or record holds a run of other settings than
            today's command (a recipe changed since); it is left as it is.
    """
    metrics = _read(run_name(row, variant, seed), row, variant, seed)
    if metrics and metrics["stale"]:
        raise SystemExit(f"{metrics['source']}: trained with other settings than today's command "
                         f"({metrics['stale']}); move it out of {metrics['source'].parent} to train this run again")
    return metrics


def read_runs(row: Row, variant: str) -> list[dict]:
    """Every finished run of the row and variant, whatever its seed, that has the row's metric and
    today's settings; the others are listed in :data:`STALE`."""
    prefix = run_name(row, variant, 0)[:-1]
    names = {p.name for p in RUNS.glob(f"{prefix}*") if p.is_dir()} | {p.stem for p in RECORDS.glob(f"{prefix}*.json")}
    found = [m for name in sorted(names) if name[len(prefix):].isdigit()
             and (m := _read(name, row, variant, int(name[len(prefix):]))) and row.metric in m]
    STALE.extend(f"{m['source']} ({m['stale']})" for m in found if m["stale"])
    return [m for m in found if not m["stale"]]


#: Finished runs left out of the table: trained with other settings than today's command.
STALE: list[str] = []


def _read(name: str, row: Row, variant: str, seed: int) -> dict | None:
    """The metrics of the finished run ``name``, with ``recipe`` (the recipe today's ``kcnn train``
    command of (row, variant, seed) resolves to), ``trained_as`` (the recipe named when the run
    trained), machine, ``source`` (the folder or record read) and ``stale``: how its settings differ
    from today's command, or "". A run trained under another recipe name with the same settings is
    not stale (the name is not a setting, see ``kcnn.config.TrainConfig.identity``).

    A finished folder in :data:`RUNS` is read first, and copied to its record in :data:`RECORDS`
    unless stale; else the record is read; with neither, None.
    """
    folder, source = RUNS / name, RECORDS / f"{name}.json"
    finished = (folder / "metrics.json").exists()
    if finished:
        record = {part: json.loads((folder / f"{part}.json").read_text()) for part in ("metrics", "config")}
    elif source.exists():
        record = json.loads(source.read_text())
    else:
        return None
    config, shape = record["config"], record["config"]["dataset"]["image_shape"]
    now = today(row, variant, seed, shape)
    stale = TrainConfig.from_record(config).differences(now)
    if finished:
        if not stale:
            RECORDS.mkdir(parents=True, exist_ok=True)
            source.write_text(json.dumps(record, indent=1) + "\n")
        source = folder
    return dict(record["metrics"], recipe=now.recipe, trained_as=config["settings"]["recipe"],
                machine=run_machine(config), source=source, stale=stale)


def run_machine(config: dict) -> str:
    """Where a run trained: device name and library versions, from its ``config.json``."""
    resolved, versions = config["resolved"], config["versions"]
    # runs before config.json named the machine trained on this project's 2-core dev machine's CPU
    where = resolved.get("machine") or ("CPU" if resolved["device"] == "cpu" else resolved["device"])
    return (f"{where}; Python {versions['python']}, keras {versions['keras']} ({versions['backend']}), "
            f"torch {versions['torch']}")


def train(row: Row, variant: str, seed: int, data_dir: str | None) -> None:
    cmd = command(row, variant, seed, data_dir)
    log = RUNS / f"{run_name(row, variant, seed)}.log"
    print("$ " + " ".join(cmd) + f"  > {log}", flush=True)
    RUNS.mkdir(parents=True, exist_ok=True)
    kcnn = Path(sys.executable).with_name("kcnn")
    with open(log, "w") as out:
        rc = subprocess.call([str(kcnn)] + cmd[1:], stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
    if rc != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"{log}: kcnn train exited {rc}: {tail[0]}")


#: ``metrics.json`` key of test-time flip averaging (``kcnn evaluate --tta flip``), recorded by runs that
#: trained with flips; digit runs have none.
TTA = "test_accuracy_tta_flip"


def cell(runs: list[dict], metric: str = "test_accuracy") -> str:
    if not runs:
        return "not run"
    if any(metric not in r for r in runs):
        return "—"
    accs = [100 * r[metric] for r in runs]
    spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
    return f"{statistics.mean(accs):.2f}%{spread} (n={len(accs)}, min {min(accs):.2f}%)"


def minutes(runs: list[dict]) -> str:
    """Mean fit time per run, in minutes, for each machine the runs trained on (machines numbered as in
    the caption when the table holds runs of several): ``fit_seconds``, all epochs of a resumed run
    included, or for records without it ``fit_seconds_this_call``."""
    machines = sorted({r["machine"] for rs in _ALL.values() for r in rs})
    by_machine: dict[str, list[float]] = {}
    for r in runs:
        seconds = r.get("fit_seconds") or r.get("fit_seconds_this_call")  # records before epoch times: the latter
        if seconds:
            by_machine.setdefault(r["machine"], []).append(seconds / 60)
    parts = [f"{statistics.mean(t):.1f} min" + (f" [{machines.index(m) + 1}]" if len(machines) > 1 else "")
             for m, t in sorted(by_machine.items())]
    return ", ".join(parts) or "—"


def machines_caption() -> str:
    """The machines of every run in the table: 'M' alone, or '[1] M1; [2] M2' when several."""
    machines = sorted({r["machine"] for rs in _ALL.values() for r in rs})
    if len(machines) <= 1:
        return machines[0] if machines else "no machine yet"
    return "; ".join(f"[{i}] {m}" for i, m in enumerate(machines, 1))


#: Every finished run of the table, by (row name, variant); filled by :func:`table`.
_ALL: dict[tuple[str, str], list[dict]] = {}


def full_is_default(row: Row) -> bool:
    """Whether the row's default recipe has no validation split already, so ``full`` trains the same runs."""
    return today(row, "default", 0, IMAGE_SHAPES[row.dataset]).val_split == 0


def full_cell(row: Row, runs: list[dict]) -> str:
    """The ``full`` column: "= default" where :func:`full_is_default`."""
    return "= default" if full_is_default(row) else cell(runs, row.metric)


def table(rows) -> str:
    lines = [
        "| dataset | model | epochs | tutorial's figure | target | kcnn, baseline recipe | kcnn default | "
        "default meets target | default on all training images | default, flip-averaged | "
        "fit time per run (baseline / default) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    _ALL.clear()
    STALE.clear()
    _ALL.update({(row.name, variant): read_runs(row, variant) for row in rows for variant in VARIANTS})
    for row in rows:
        found = {variant: _ALL[(row.name, variant)] for variant in VARIANTS}
        default = found["default"]
        name = f"`{default[0]['recipe']}`" if default else "`default`"
        renamed = [r["trained_as"] for r in default if r["trained_as"] != r["recipe"]]
        if renamed:  # runs trained under another recipe name, with the same settings
            name += (f"; {len(renamed)} trained as {', '.join(f'`{n}`' for n in sorted(set(renamed)))} "
                     f"with the same settings")
        mean = statistics.mean(r[row.metric] for r in default) if default else None
        met = "—" if mean is None else ("yes" if mean >= row.target else f"no ({100 * (mean - row.target):+.2f} pt)")
        lines.append(
            f"| {row.dataset} | {row.model} | {row.epochs} | {row.tutorial_figure} | ≥ {100 * row.target:.2f}% | "
            f"{cell(found['baseline'], row.metric)} | {cell(default, row.metric)} ({name}) | {met} | "
            f"{full_cell(row, found['full'])} | {cell(default, TTA)} | "
            f"{minutes(found['baseline'])} / {minutes(default)} |")
    return "\n".join(lines)


def document(rows) -> str:
    finals = ", ".join(f"{r.dataset} {r.model}" for r in rows if r.final)
    body = table(rows)
    return (f"Test accuracy of each run's `model.keras` (the epoch of best validation accuracy; of best training "
            f"accuracy without a validation split) on the dataset's test split; for the rows whose target is a "
            f"final figure ({finals}), of the last epoch's weights. \"All training images\": the default with "
            f"`--val-split 0`. Flip-averaged: the same `model.keras` averaging each test image's predictions "
            f"with its mirror's (`kcnn evaluate --tta flip`; not a target figure). Mean ± sample standard "
            f"deviation over the seeds run (n), from `scripts/reproduce.py`, data `../shared/tfds` (CIFAR-10 is "
            f"the JPEG-derived copy). Trained on: {machines_caption()}. Commands: `kcnn train DATASET --model "
            f"MODEL --epochs E --seed S [--recipe baseline | --val-split 0]`.\n\n" + body + "\n")


def summary(rows) -> str:
    """README's short table (6 columns) of the default recipe's figures; :func:`document` first
    (it reads the runs). The full table, with the baseline, the targets, all training images and
    flip averaging, is docs/results.md."""
    lines = ["| dataset | model | epochs | tutorial's figure | kcnn (default recipe) | minutes per run, 2 CPU cores |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        default = _ALL[(row.name, "default")]
        lines.append(f"| {row.dataset} | {row.model} | {row.epochs} | {row.tutorial_figure} | "
                     f"{cell(default, row.metric)} | {minutes(default).removesuffix(' min')} |")
    return ("Test accuracy, mean ± standard deviation over the seeds run (n), of `kcnn train DATASET --model MODEL "
            "--epochs E`; CIFAR-10 on the JPEG-derived copy. The baseline, the targets and more columns: "
            "`docs/results.md`.\n\n" + "\n".join(lines) + "\n")


def write_readme(readme: Path, text: str) -> None:
    """Replace what lies between the reproduce markers of README.md."""
    body = readme.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(body):
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} markers to put the table between")
    readme.write_text(pattern.sub(lambda m: f"{BEGIN}\n{text}{END}", body))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="*", default=None, metavar="DATASET:MODEL:EPOCHS",
                        help=f"rows to train [default: all: {' '.join(r.name for r in ROWS)}]")
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=["baseline", "default"],
                        help="columns to train [default: baseline default]")
    parser.add_argument("--seeds", type=int, default=None, help="runs per variant [default: the row's, 2-3]")
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir [default: $TFDS_DATA_DIR]")
    parser.add_argument("--no-train", action="store_true", help="only build the table from finished runs")
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    names = {r.name: r for r in ROWS}
    unknown = sorted(set(args.rows or ()) - set(names))
    if unknown:
        parser.error(f"unknown row {unknown[0]!r}; valid: {', '.join(names)}")
    selected = [names[n] for n in args.rows] if args.rows else list(ROWS)
    if not args.no_train:
        for row in selected:
            for seed in range(args.seeds or row.seeds):
                for variant in args.variants:
                    if variant == "full" and full_is_default(row):
                        continue
                    if read_run(row, variant, seed) is None:
                        train(row, variant, seed, args.data_dir)
    text = document(ROWS)
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text("# kcnn results\n\n" + text)
    write_readme(Path("README.md"), summary(ROWS))
    print(text)
    for stale in STALE:
        print(f"left out: {stale}: trained with other settings than today's command", file=sys.stderr)
    print(f"wrote {TABLE} and the table in README.md")


if __name__ == "__main__":
    main()
