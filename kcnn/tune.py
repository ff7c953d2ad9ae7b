"""``kcnn tune``: a search over :data:`kcnn.config.SEARCH_SPACE` with KerasTuner, each trial a kcnn
training run chosen by its validation accuracy.

KerasTuner's oracle (Bayesian optimization by default; Hyperband or random search) proposes the
settings; :meth:`KcnnTrials.run_trial` trains them through :func:`kcnn.train` (the same pipeline,
fast path and callbacks) into ``OUTPUT/trials/TRIAL_ID`` without reading the test split, and reports
the best validation accuracy. The tuner's state lives in ``OUTPUT/search``: the same command after an
interruption resumes the search, and a trial interrupted mid-run resumes its run folder. At the end
``OUTPUT/best_config.json`` holds the best trial's settings; ``kcnn train --config`` replays them and
reports the test figure once.

Several machines: KerasTuner's distributed mode, a chief process that holds the oracle and workers
that run trials, set by ``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP`` and
``KERASTUNER_ORACLE_PORT``; ``--chief HOST:PORT`` and ``--worker HOST:PORT`` set them. Every process
must see the same OUTPUT folder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import keras_tuner as kt

from kcnn import files
from kcnn.config import SEARCH_SPACE, TrainConfig, check_search_space
from kcnn.data.folders import plural
from kcnn.errors import UsageError
from kcnn.training import resolve_config, train

log = logging.getLogger(__name__)

#: --algorithm: the KerasTuner tuner each name runs.
ALGORITHMS = {"bayesian": kt.BayesianOptimization, "hyperband": kt.Hyperband, "random": kt.RandomSearch}
#: The objective every trial reports: the best validation accuracy of its epochs.
OBJECTIVE = "val_accuracy"


def draw(hp, name: str, spec) -> object:
    """The value of setting ``name`` that KerasTuner's ``hp`` draws for ``spec`` (see :data:`SEARCH_SPACE`)."""
    kind, *bounds = spec
    if kind == "choice":
        return hp.Choice(name, list(bounds[0]))
    return hp.Float(name, bounds[0], bounds[1], sampling="log" if kind == "log" else "linear")


class KcnnTrials:
    """The trial of a KerasTuner tuner as a kcnn training run (mixed into the class of :data:`ALGORITHMS`)."""

    def setup(self, dataset: str, base: TrainConfig, space: dict, epochs: int, overrides: dict) -> None:
        self.dataset, self.base, self.space, self.epochs, self.overrides = dataset, base, space, epochs, overrides

    def run_trial(self, trial, *args, **kwargs):
        values = {name: draw(trial.hyperparameters, name, spec) for name, spec in self.space.items()}
        epochs = int(trial.hyperparameters.values.get("tuner/epochs", self.epochs))  # Hyperband's budget
        settings = {**self.overrides, **values, "epochs": epochs}
        training_log = logging.getLogger("kcnn.training")
        level = training_log.level
        training_log.setLevel(logging.WARNING)  # a trial's own header and table would drown the search's lines
        try:
            result = train(self.dataset, self.base, output=Path(self.project_dir).parent / "trials" / trial.trial_id,
                           verbose=0, test=False, **settings)
        finally:
            training_log.setLevel(level)
        best = max(row[OBJECTIVE] for row in result.history)
        log.info(f"trial {trial.trial_id}: {OBJECTIVE} {best:.4f} with {describe(values)}")
        return {OBJECTIVE: best}


def describe(values: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def parse_address(address: str) -> tuple[str, str]:
    """``"HOST:PORT"`` as ``(host, port)``.

    Raises:
        UsageError: not HOST:PORT with a port in 1..65535.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"an oracle address is HOST:PORT. Received: {address!r}")
    return host, port


def distribute(chief: str | None = None, worker: str | None = None) -> str:
    """Set KerasTuner's distribution variables for a chief (the oracle) or a worker; returns the
    process's role (``"chief"``, ``"worker"`` or ``"alone"``).

    Raises:
        UsageError: both given, a bad address, or the chief's port already in use.
    """
    if chief and worker:
        raise UsageError("a process is the chief or a worker, not both. Received: --chief and --worker")
    if not (chief or worker):
        return "alone"
    host, port = parse_address(chief or worker)
    if chief:
        with socket.socket() as probe:
            try:
                probe.bind((host, int(port)))
            except OSError as e:
                raise UsageError(f"the chief cannot listen on {host}:{port} ({e.strerror}); choose another "
                                 f"port") from None
    os.environ.update(KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=port,
                      KERASTUNER_TUNER_ID="chief" if chief else os.environ.get("KERASTUNER_TUNER_ID",
                                                                                f"tuner{os.getpid()}"))
    return "chief" if chief else "worker"


def tune(dataset: str | None = None, config: TrainConfig | None = None, *, trials: int = 10, epochs: int = 3,
         algorithm: str = "bayesian", space: dict | None = None, output: str | Path | None = None,
         chief: str | None = None, worker: str | None = None, **overrides) -> dict:
    """Search ``space`` (None: :data:`SEARCH_SPACE`) over ``trials`` trials of ``epochs`` epochs each.

    Args:
        dataset, config, **overrides: the settings every trial starts from, as :func:`kcnn.train` takes them.
        algorithm: ``"bayesian"``, ``"hyperband"`` (``epochs`` is then its largest budget) or ``"random"``.
        output: the search's folder (None: ``runs/tune/DATASET-MODEL``); the same folder resumes.
        chief, worker: ``HOST:PORT`` of the oracle, for a distributed search (:func:`distribute`).

    Returns:
        ``{"trials": [{"trial_id", "status", "score", "settings"}], "best": {...} or None,
        "best_config": path or None}``; the chief's is empty (its workers run the trials).

    Raises:
        UsageError: bad settings or search space, ``trials`` or ``epochs`` below 1, no validation
            split to choose by, an unknown algorithm, or a bad or busy oracle address.
    """
    if trials < 1 or epochs < 1:
        raise UsageError(f"trials and epochs must be >= 1. Received: trials={trials}, epochs={epochs}")
    if algorithm not in ALGORITHMS:
        raise UsageError(f"Unknown algorithm; valid: {', '.join(ALGORITHMS)}. Received: algorithm={algorithm!r}")
    space = check_search_space(dict(space or SEARCH_SPACE))
    base, info = resolve_config(dataset, config, overrides)
    if base.val_split == 0 and not (info.folder is not None and info.folder.val_folder):
        raise UsageError("kcnn tune chooses by the validation split, and the recipe has none; give --val-split")
    if "batch_size" in space:  # a batch larger than the training split would fail its trial
        room = info.train_size(base.val_split)
        fitting = tuple(b for b in space["batch_size"][1] if b <= room)
        if not fitting:
            raise UsageError(f"every batch_size of the search space is larger than the {room} training images. "
                             f"Received: batch_size={space['batch_size']!r}")
        space["batch_size"] = ("choice", fitting)
    role = distribute(chief, worker)
    folder = Path(output) if output is not None else Path("runs/tune") / f"{Path(base.dataset).name}-{base.model}"
    budget = dict(max_epochs=epochs, hyperband_iterations=1) if algorithm == "hyperband" else dict(max_trials=trials)
    tuner_class = type("KcnnTuner", (KcnnTrials, ALGORITHMS[algorithm]), {})
    tuner = tuner_class(objective=kt.Objective(OBJECTIVE, direction="max"), directory=str(folder),
                        project_name="search", overwrite=False, seed=base.seed, **budget)
    fixed = {k: v for k, v in overrides.items() if k not in space}
    tuner.setup(base.dataset, base, space, epochs, fixed)
    count = trials if algorithm != "hyperband" else "Hyperband's"
    log.info(f"searching {', '.join(space)} for {base.model} on {info.describe()}: {algorithm}, {count} trials "
             f"of {plural(epochs, 'epoch')} into {folder}")
    tuner.search(verbose=0)  # kcnn logs a line a trial and the table
    if role == "worker":
        return {"trials": [], "best": None, "best_config": None}
    return summarize(tuner, folder)


def summarize(tuner, folder: Path) -> dict:
    """The table of trials (logged, best first) and ``best_config.json``, the best trial's run config."""
    trials = [{"trial_id": t.trial_id, "status": str(t.status), "score": t.score,
               "settings": {k: v for k, v in t.hyperparameters.values.items() if not k.startswith("tuner/")}}
              for t in tuner.oracle.trials.values()]
    trials.sort(key=lambda t: -1.0 if t["score"] is None else -t["score"])
    log.info(f"{'trial':<8} {'status':<10} {OBJECTIVE:>12}  settings")
    for t in trials:
        score = "—" if t["score"] is None else f"{t['score']:.4f}"
        log.info(f"{t['trial_id']:<8} {t['status']:<10} {score:>12}  {describe(t['settings'])}")
    best = next((t for t in trials if t["score"] is not None), None)
    best_config = None
    if best is not None:
        record = json.loads((folder / "trials" / best["trial_id"] / "config.json").read_text())
        best_config = files.write_json(folder / "best_config.json", record)
        log.info(f"best trial {best['trial_id']}: {OBJECTIVE} {best['score']:.4f}; replay it with "
                 f"kcnn train --config {best_config}")
    files.write_json(folder / "trials.json", trials, sort_keys=False)
    return {"trials": trials, "best": best, "best_config": best_config}


def parse_space(entries) -> dict:
    """``--space`` entries, ``NAME=log:LOW:HIGH``, ``NAME=float:LOW:HIGH`` or ``NAME=choice:A,B,...``,
    as a search space (numbers read as numbers); checked by :func:`kcnn.config.check_search_space`.

    Raises:
        UsageError: an entry of another form, or a space the settings refuse.
    """
    def number(text):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    space = {}
    for entry in entries:
        name, _, spec = entry.partition("=")
        kind, _, rest = spec.partition(":")
        if kind == "choice" and rest:
            space[name] = ("choice", tuple(number(v) for v in rest.split(",")))
        elif kind in ("log", "float") and rest.count(":") == 1:
            low, high = (number(v) for v in rest.split(":"))
            space[name] = (kind, low, high)
        else:
            raise UsageError(f"--space takes NAME=log:LOW:HIGH, NAME=float:LOW:HIGH or NAME=choice:A,B. "
                             f"Received: {entry!r}")
    return check_search_space(space)
