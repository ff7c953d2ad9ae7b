"""The Keras callbacks of a training run, and the order :func:`make_callbacks` puts them in.

Each class is a small subclass of a stock Keras callback or a plain ``keras.callbacks.Callback``;
what two of them share (whether the loss diverged) is passed in, not looked up.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from pathlib import Path

import keras

from kcnn import metadata as model_metadata
from kcnn.runs import RunFolder


class EpochSeeding(keras.callbacks.Callback):
    """Keys every random stream of an epoch to its number, so a resumed run replays the original.

    At each epoch's start: the data order and augmentation (``datasets.set_epoch``), each
    ``SeedGenerator`` of the model, whose state Keras does not save with the weights, set to
    ``(its initial seed + 7919 * epoch, 0)``, and on the torch backend torch's global generator,
    reseeded from ``(seed, epoch)``: Keras' ``Dropout`` there draws its masks from it
    (``torch.nn.functional.dropout``), not from its ``SeedGenerator``.

    Args:
        datasets: a :class:`kcnn.data.Datasets` (or None: no data to key).
        seed: the run's random seed.
    """

    def __init__(self, datasets=None, seed: int = 0):
        super().__init__()
        self.datasets, self.seed = datasets, int(seed)

    def on_train_begin(self, logs=None):
        self.generators = [v for v in self.model.variables if v.path.endswith("seed_generator_state")]
        self.initial = [int(keras.ops.convert_to_numpy(v)[0]) for v in self.generators]

    def on_epoch_begin(self, epoch, logs=None):
        if self.datasets is not None:
            self.datasets.set_epoch(epoch)
        for v, first in zip(self.generators, self.initial):
            v.assign(keras.ops.convert_to_tensor([(first + 7919 * epoch) % 2**31, 0], v.dtype))
        if keras.backend.backend() == "torch":
            import torch

            torch.manual_seed((self.seed * 1_000_003 + 7919 * epoch) % 2**63)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to the epoch logs (``learning_rate``)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def optimizer_step(model) -> int:
    """Optimizer steps taken so far (``model.optimizer.iterations``), a plain number; a resumed run's
    count goes on from the backup."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class StepLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before each step to ``schedule(step)``, ``step`` being the
    optimizer's own count of steps (``iterations``), so a resumed run goes on with the same rates.

    For a schedule Keras has no class for (:func:`kcnn.training.triangular_lr`): a schedule of our
    own given to the optimizer would be saved in the ``.keras`` file's optimizer config, which
    plain ``keras.saving.load_model`` then cannot read; this way the file names only stock classes.

    Args:
        schedule: ``step -> learning rate``, both plain Python numbers.
    """

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.schedule(optimizer_step(self.model)))


class Lookahead(keras.callbacks.Callback):
    """airbench's lookahead (K. Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", 2024,
    after Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back").

    Every ``every`` optimizer steps a slow copy of every float variable of the model (weights and
    batch-norm moving statistics) moves towards the variable, ``slow += (1 - decay) * (variable -
    slow)``, and the variable is set to it. ``decay = base * (step / total_steps) ** 3``: nothing at
    first, ``base`` (``0.95 ** 5``) by the end. The copy is also pulled in at each epoch's end, so
    the weights saved there are the slow copy itself and a resumed run starts from them exactly
    (airbench syncs at multiples of 5 steps only, and at its last step).

    Args:
        total_steps: the run's optimizer steps (epochs x steps per epoch).
        every: steps between pulls (airbench: 5).
        base: the decay at the last step (airbench: ``0.95 ** 5``).
    """

    def __init__(self, total_steps: int, every: int = 5, base: float = 0.95**5):
        super().__init__()
        self.total_steps, self.every, self.base = max(1, int(total_steps)), int(every), float(base)

    def on_train_begin(self, logs=None):
        self.variables = [v for v in self.model.variables if "float" in str(v.dtype)]
        self.slow = None  # copied at the first step: a resumed run's weights are restored after this hook

    def on_train_batch_begin(self, batch, logs=None):
        if self.slow is None:  # stop_gradient: plain tensors, no autograd history kept (torch)
            self.slow = [keras.ops.copy(keras.ops.stop_gradient(v.value)) for v in self.variables]

    def pull(self, step: int):
        decay = self.base * min(1.0, step / self.total_steps) ** 3
        for i, variable in enumerate(self.variables):
            value = keras.ops.stop_gradient(variable.value)
            self.slow[i] = self.slow[i] + (1.0 - decay) * (value - self.slow[i])
            variable.assign(self.slow[i])

    def on_train_batch_end(self, batch, logs=None):
        step = optimizer_step(self.model)
        if step % self.every == 0:
            self.pull(step)

    def on_epoch_end(self, epoch, logs=None):
        step = optimizer_step(self.model)
        if step % self.every:  # at a multiple of every, on_train_batch_end pulled already
            self.pull(step)


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds``, the epoch's wall time (training and validation), to the epoch logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self.start


class Divergence(keras.callbacks.TerminateOnNaN):
    """``TerminateOnNaN`` that also records where the loss stopped being finite.

    Attributes:
        where: ``(epoch, step)``, both 1-based, of the first non-finite loss; None while finite.
    """

    where = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.where is None:
            self.where = (self.epoch + 1, batch + 1)
        super().on_batch_end(batch, logs)


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` that saves beside ``filepath``, puts kcnn's ``metadata`` into the file
    (:mod:`kcnn.metadata`: class names, input rule), renames it into place, and saves nothing once
    ``divergence`` has seen a non-finite loss."""

    def __init__(self, filepath: Path, divergence: Divergence, metadata: dict | None = None, **kwargs):
        self.final_path, self.divergence, self.metadata = Path(filepath), divergence, metadata
        super().__init__(str(self.final_path.with_name(f".{self.final_path.stem}.partial.keras")), **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        if self.divergence.where is None:
            super().on_epoch_end(epoch, logs)
        if os.path.exists(self.filepath):
            if self.metadata is not None:
                model_metadata.write(self.filepath, self.metadata)
            os.replace(self.filepath, self.final_path)


class BackupUnlessDiverged(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that never overwrites the last good backup with diverged weights."""

    def __init__(self, backup_dir, divergence: Divergence, **kwargs):
        super().__init__(str(backup_dir), **kwargs)
        self.divergence = divergence

    def on_epoch_end(self, epoch, logs=None):
        if self.divergence.where is None:
            super().on_epoch_end(epoch, logs)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' ``EarlyStopping`` on a maximized metric that, in a resumed run, starts from the epochs
    already done (``rows`` of ``history.csv``): the same best value and the same count of epochs
    without improvement, so the run stops where the uninterrupted one would."""

    def __init__(self, rows: list[dict], **kwargs):
        super().__init__(mode="max", **kwargs)
        self.rows = rows

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for row in self.rows:  # as on_epoch_end counts: one more epoch waited, none after a new best
            value = row.get(self.monitor)
            if value is None:
                continue
            self.wait += 1
            if self.best is None or value > self.best:  # Keras starts at None
                self.best, self.wait = value, 0


class DeferredInterrupt(keras.callbacks.Callback):
    """Ctrl-C during ``fit`` stops at the next batch or epoch boundary.

    The SIGINT handler only sets a flag, and this callback (run last, so after the backup) raises
    ``KeyboardInterrupt`` at the next boundary. A signal that raised at once could land in a
    finalizer (a tf.data iterator being freed between epochs), where Python reports and drops it.
    A second Ctrl-C raises at once. Call :meth:`restore` after ``fit`` in any case.
    """

    pending, previous = False, None

    def on_train_begin(self, logs=None):
        # Not from other threads (signal.signal would fail), nor where SIGINT is ignored (nohup,
        # background jobs), as Python itself leaves it then.
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
            self.previous = signal.signal(signal.SIGINT, self.handler)

    def handler(self, signum, frame):
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True

    def restore(self):
        """Give SIGINT back to the handler it had before ``fit``."""
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def check(self, *args, **kwargs):
        if self.pending:
            self.restore()
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_begin = on_epoch_end = check

    def on_train_end(self, logs=None):
        self.restore()


@dataclasses.dataclass
class FitCallbacks:
    """The callbacks of one ``fit``: ``all`` in order, and the two :func:`kcnn.training.train` asks after."""

    all: list
    divergence: Divergence
    interrupt: DeferredInterrupt


def make_callbacks(run: RunFolder, monitor: str, best_so_far: float | None, *, datasets=None, seed: int = 0,
                   ema: bool = False, tensorboard: bool = False, metadata: dict | None = None,
                   patience: int = 0, extra=()) -> FitCallbacks:
    """kcnn's callbacks for ``fit`` into ``run``, with ``extra`` (the caller's) run before them.

    Order matters: the logs are filled (lr, epoch time) before ``CSVLogger`` writes them, and the
    backup is written last, so a crash in between leaves at most one extra CSV row, which resume
    drops. With EMA, Keras' ``SwapEMAWeights`` evaluates and checkpoints the averaged weights and
    the next callback swaps them out again, so the backup holds the trained weights and the
    average as optimizer state (an exact resume).

    Args:
        run: the run folder.
        monitor: ``"val_accuracy"``, or ``"accuracy"`` without a validation split.
        best_so_far: the best ``monitor`` of the epochs already done (a resumed run), or None.
        datasets, seed: for :class:`EpochSeeding`.
        ema: the optimizer keeps a moving average of the weights.
        tensorboard: Keras' ``TensorBoard`` writes each epoch's logs (loss, accuracy, their validation
            twins, learning rate) as scalars into ``run.tensorboard`` (``train/`` and ``validation/``).
        metadata: :func:`kcnn.metadata.make` of the run, written into each checkpoint.
        patience: above 0, :class:`ResumableEarlyStopping` stops after this many epochs without a
            better ``monitor``.
        extra: callbacks of the caller.
    """
    divergence, interrupt = Divergence(), DeferredInterrupt()
    swap_in, swap_out = [], []
    if ema:
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
        swap_in = [swap]
        swap_out = [keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: swap.on_epoch_begin(epoch + 1))]
    checkpoint = AtomicModelCheckpoint(run.model, divergence, metadata, monitor=monitor, mode="max",
                                       save_best_only=True, initial_value_threshold=best_so_far)
    # double_checkpoint: Keras keeps the previous backup and falls back to it when the latest
    # cannot be read (a crash or full disk while saving).
    backup = BackupUnlessDiverged(run.backup, divergence, double_checkpoint=True, delete_checkpoint=False)
    # scalars per epoch only: no graph (Keras draws it from TensorFlow functions) and no profiler
    board = [keras.callbacks.TensorBoard(str(run.tensorboard), write_graph=False, profile_batch=0)
             for _ in range(tensorboard)]
    stopping = [ResumableEarlyStopping(run.read_history(), monitor=monitor, patience=patience)
                for _ in range(patience > 0)]
    ordered = [EpochSeeding(datasets, seed), *extra, divergence, LearningRateLogger(),
               EpochTimer(), *board, *stopping,
               keras.callbacks.CSVLogger(str(run.history), append=True),
               *swap_in, checkpoint, *swap_out, backup, interrupt]
    return FitCallbacks(all=ordered, divergence=divergence, interrupt=interrupt)
