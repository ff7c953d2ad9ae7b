"""Run folders: their layout, their history, and whether a command starts, resumes or is refused.

A run folder holds:

- ``model.keras``: the checkpoint of best validation accuracy (best training accuracy without a
  validation split), written beside and renamed into place (:mod:`kcnn.files`),
- ``history.csv``: one row per epoch (``CSVLogger``), with ``learning_rate`` and ``epoch_seconds``
  (the epoch's wall time, validation included),
- ``config.json``: ``settings`` (:meth:`kcnn.config.TrainConfig.to_dict`), ``resolved`` (device,
  machine, split sizes), ``dataset`` (name, version, class names, image shape) and ``versions``,
- ``metrics.json``: test figures of ``model.keras`` and of the last epoch's weights, fit times,
- ``curves.png`` and ``evaluation/`` (``kcnn evaluate`` of ``model.keras`` on the test split),
- ``backup/``: ``BackupAndRestore`` state while the run is unfinished.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

from kcnn import files
from kcnn.config import FORMAT_VERSION, TrainConfig, migrate_record
from kcnn.errors import UsageError

#: Where runs go without --output: RUNS_DIR/{dataset}-{model}-{N}.
RUNS_DIR = "runs"


class RunFolderError(UsageError):
    """An output folder holds a different or finished run."""


def read_history(path: str | Path) -> list[dict]:
    """Rows of a ``history.csv`` as dicts of floats (``epoch`` as int).

    Cells ``CSVLogger`` writes as ``NA`` (its ``val_*`` columns when a run has no validation
    split) are left out of their row. A missing file gives ``[]``.
    """
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in ("NA", "")}
            for row in rows]


def truncate_history(path: str | Path, epochs_done: int) -> None:
    """Keep only the rows of the first ``epochs_done`` epochs (a crash may leave one extra or a
    half-written row)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header = rows[0]
    kept = [header] + [r for r in rows[1:]
                       if len(r) == len(header) and r[0].isdigit() and int(r[0]) < epochs_done]
    with files.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)


def next_numbered(root: Path, stem: str) -> Path:
    """``root/stem-N`` with N one above the highest number already there (1 for the first)."""
    pattern = re.compile(rf"^{re.escape(stem)}-(\d+)$")
    numbers = [int(m.group(1)) for p in root.glob(f"{stem}-*") if (m := pattern.match(p.name))]
    return root / f"{stem}-{max(numbers, default=0) + 1}"


class RunFolder:
    """One run's folder: the paths of its files and what state it is in.

    Attributes:
        path: the folder.
        model, history, config, metrics, curves, evaluation, backup, tensorboard: paths inside it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.model = self.path / "model.keras"
        self.history = self.path / "history.csv"
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.json"
        self.curves = self.path / "curves.png"
        self.evaluation = self.path / "evaluation"
        self.backup = self.path / "backup"
        self.tensorboard = self.path / "tensorboard"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def saved_config(self) -> TrainConfig | None:
        """The config in ``config.json``; None when there is none or it cannot be read."""
        try:
            return TrainConfig.load(self.config)
        except ValueError:
            return None

    def state(self, config: TrainConfig) -> str:
        """``"empty"``, ``"other"`` (a run of other settings or unreadable), ``"finished"`` or ``"unfinished"``."""
        if not self.config.exists():
            return "empty"
        saved = self.saved_config()
        if saved is None or saved.identity() != config.identity():
            return "other"
        return "finished" if self.metrics.exists() else "unfinished"

    def check_backend(self) -> None:
        """Raise :class:`RunFolderError` when the run was started under another Keras backend than
        this process's: its backup (optimizer state, random streams) is that backend's."""
        import keras

        try:
            started = json.loads(self.config.read_text())["versions"]["backend"]
        except (OSError, ValueError, KeyError, TypeError):
            return  # no record: a run of a kcnn that trained on torch only
        if started != keras.backend.backend():
            raise RunFolderError(f"{self.path} was started under the {started} backend and resumes only under it "
                                 f"(its backup is that backend's); add --backend {started}, or --overwrite "
                                 f"to start again under {keras.backend.backend()}")

    def epochs_done(self) -> int:
        """Epochs the backup holds (0 without one)."""
        metadata = self.backup / "training_metadata.json"
        return int(json.loads(metadata.read_text())["epoch"]) if metadata.exists() else 0

    def migrate(self) -> None:
        """Bring the folder's ``config.json`` and ``history.csv`` to :data:`kcnn.config.FORMAT_VERSION`
        (:func:`kcnn.config.migrate_record`); a ``history.csv`` without ``epoch_seconds`` gets the
        column, ``NA`` in the rows of epochs nobody timed, in the order Keras' ``CSVLogger`` writes it
        (``epoch``, then the other keys sorted), so the resumed epochs append under the same header."""
        record = json.loads(self.config.read_text())
        if record.get("format_version") == FORMAT_VERSION:
            return
        if self.history.exists():
            with open(self.history, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows and "epoch_seconds" not in rows[0]:
                header = ["epoch", *sorted([*(k for k in rows[0] if k != "epoch"), "epoch_seconds"])]
                with files.atomic_path(self.history) as tmp, open(tmp, "w", newline="") as f:
                    writer = csv.DictWriter(f, header, restval="NA")
                    writer.writeheader()
                    writer.writerows(rows)
        self.write_json("config.json", migrate_record(record))

    def start(self, resume: bool) -> int:
        """Make the folder (migrated, when it resumes) and bring ``history.csv`` in line with the
        backup; returns the epochs done."""
        self.path.mkdir(parents=True, exist_ok=True)
        if resume:
            self.migrate()
        done = self.epochs_done() if resume else 0
        truncate_history(self.history, done)
        if done == 0:
            self.history.unlink(missing_ok=True)
        return done

    def read_history(self) -> list[dict]:
        return read_history(self.history)

    def write_json(self, name: str, obj) -> Path:
        """Write ``obj`` to ``name`` in the folder, atomically."""
        return files.write_json(self.path / name, obj)

    def finish(self) -> None:
        """Drop the backup: a finished run has nothing to resume."""
        shutil.rmtree(self.backup, ignore_errors=True)

    @classmethod
    def resolve(cls, config: TrainConfig, output: str | Path | None = None,
                overwrite: bool = False) -> tuple[RunFolder, bool]:
        """Choose the run folder and whether the run resumes.

        With ``output`` None: the latest unfinished run under :data:`RUNS_DIR` with the same
        settings resumes (re-running a command continues it); else a new
        ``runs/{dataset}-{model}-{N}`` (a folder dataset: its name). With ``output``: an empty or new
        folder starts a run, an unfinished run of the same settings resumes.

        Returns:
            ``(folder, resume)``.

        Raises:
            RunFolderError: ``output`` holds a finished run or a run of other settings, and
                ``overwrite`` is False; the run to resume was started under another Keras backend.
        """
        if output is None:
            # a folder dataset is named by its last part: runs/photos-cnn3-1, not /data/photos-cnn3-1
            root, stem = Path(RUNS_DIR), f"{Path(config.dataset).name}-{config.model}"
            for path in sorted(root.glob(f"{stem}-*"), key=lambda p: p.stat().st_mtime, reverse=True):
                if cls(path).state(config) == "unfinished":
                    cls(path).check_backend()
                    return cls(path), True
            return cls(next_numbered(root, stem)), False
        folder = cls(output)
        state = folder.state(config)
        if overwrite and state != "empty":
            shutil.rmtree(folder.path)
            return folder, False
        if state == "finished":
            raise RunFolderError(f"{folder.path} already holds a finished run with these settings "
                                 f"(see {folder.metrics}); pass --overwrite to train it again")
        if state == "other":
            saved = folder.saved_config()
            why = saved.differences(config) if saved else f"{folder.config} unreadable"
            raise RunFolderError(f"{folder.path} holds a run with other settings ({why}); "
                                 "choose another --output or pass --overwrite")
        if state == "unfinished":
            folder.check_backend()
        return folder, state == "unfinished"
