"""The learning-rate range test (L. N. Smith, "Cyclical Learning Rates for Training Neural Networks",
2017; fastai's ``lr_find``): ``kcnn lr-find``.

A fresh model of a run's settings trains for ``steps`` steps on the run's own pipeline, with the
learning rate growing exponentially from ``start`` to ``end`` (:class:`LRRangeTest`, a Keras
callback on ``model.fit``). The training loss, smoothed by an exponential moving average (debiased,
as fastai does), is recorded per step; the test stops early once the smoothed loss exceeds
:data:`DIVERGED` times its minimum, or is not finite. The suggested rate is the steepest descent of
the smoothed loss against log(lr) before its minimum. Nothing of a run folder is touched: the curve
goes into its own output folder as ``lr_find.json`` and ``lr_find.png``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import keras
import numpy as np

from kcnn import data, figures, files
from kcnn.config import TrainConfig
from kcnn.errors import UsageError
from kcnn.fused import training_fast_path
from kcnn.runs import next_numbered
from kcnn.training import build_model, fit_verbosity, resolve_config

log = logging.getLogger(__name__)

#: Default range of the test, learning rates (fastai's: 1e-7 to 10).
START_LR, END_LR = 1e-7, 10.0
#: Momentum of the loss's moving average (fastai's 0.98).
SMOOTHING = 0.98
#: The test stops once the smoothed loss exceeds this many times its minimum (fastai: 4).
DIVERGED = 4.0
#: Where the range tests go without --output: LR_FIND_DIR/{dataset}-{model}-{N}.
LR_FIND_DIR = "runs/lr_find"


class LRRangeTest(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before each step, ``start * (end / start) ** (step / (steps - 1))``,
    records the loss after it, and stops training when the smoothed loss diverges.

    Attributes:
        lrs, losses, smoothed: per step, the learning rate used, the batch's loss and its smoothed value.
        stopped_early: whether the loss diverged before ``steps``.
    """

    def __init__(self, steps: int, start: float = START_LR, end: float = END_LR, smoothing: float = SMOOTHING):
        super().__init__()
        if not 0 < start < end:
            raise UsageError(f"the range test needs 0 < start < end. Received: start={start}, end={end}")
        self.steps, self.start, self.end, self.smoothing = int(steps), float(start), float(end), smoothing
        self.lrs, self.losses, self.smoothed, self.stopped_early = [], [], [], False
        self._average, self._best, self._previous_mean = 0.0, math.inf, 0.0

    def lr_at(self, step: int) -> float:
        return self.start * (self.end / self.start) ** (step / max(1, self.steps - 1))

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.lr_at(len(self.lrs)))

    def on_train_batch_end(self, batch, logs=None):
        # Keras logs the running mean of the epoch's batch losses; the step's own loss is what it added
        mean, step = float((logs or {}).get("loss", math.nan)), len(self.lrs) + 1
        loss = step * mean - (step - 1) * self._previous_mean if step > 1 else mean
        self._previous_mean = mean
        self.lrs.append(self.lr_at(len(self.lrs)))
        self.losses.append(loss)
        self._average = self.smoothing * self._average + (1 - self.smoothing) * loss
        smoothed = self._average / (1 - self.smoothing ** len(self.losses))  # debiased, as Adam's moments
        self.smoothed.append(smoothed)
        self._best = min(self._best, smoothed)
        if not math.isfinite(smoothed) or smoothed > DIVERGED * self._best or len(self.lrs) >= self.steps:
            self.stopped_early = len(self.lrs) < self.steps
            self.model.stop_training = True


def suggest(lrs, smoothed) -> float:
    """The learning rate of the steepest descent of ``smoothed`` loss against log(lr), among the
    points before the loss's minimum (the rule of fastai's ``lr_find`` "steep" suggestion).

    Raises:
        UsageError: fewer than 3 points before the minimum (the range test was too short).
    """
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    finite = np.isfinite(smoothed)
    lrs, smoothed = lrs[finite], smoothed[finite]
    lowest = int(np.argmin(smoothed)) if len(smoothed) else 0
    if lowest < 2:
        raise UsageError(f"the loss fell for only {lowest} steps of the range test; give more --steps or a lower "
                         f"--start. Received: {len(lrs)} steps")
    slope = np.gradient(smoothed[:lowest + 1], np.log(lrs[:lowest + 1]))
    return float(lrs[int(np.argmin(slope))])


def lr_find(dataset: str | None = None, config: TrainConfig | None = None, *, steps: int | None = None,
            start: float = START_LR, end: float = END_LR, output: str | Path | None = None,
            verbose: int | str = "auto", **overrides) -> dict:
    """Run the range test on a fresh model of ``dataset``'s run settings (as :func:`kcnn.train` resolves
    them: recipe, then ``config``, then ``overrides``) and write ``lr_find.json`` and ``lr_find.png``.

    Args:
        steps: training steps (None: one epoch of the training split, at most 1,000).
        start, end: the range of learning rates.
        output: the folder (None: a new ``runs/lr_find/DATASET-MODEL-N``).

    Returns:
        ``{"lrs", "losses", "smoothed", "suggested_lr", "recipe", "recipe_lr", "stopped_early", "files"}``.

    Raises:
        UsageError: bad settings, ``steps`` below 1, or a range test too short to suggest a value.
    """
    config, info = resolve_config(dataset, config, overrides)
    ds = data.load_datasets(info, batch_size=config.batch_size, val_split=config.val_split, augment=config.augment,
                            seed=config.seed, one_hot=config.one_hot)
    per_epoch = math.ceil(ds.num_train / config.batch_size)
    steps = min(per_epoch, 1000) if steps is None else steps
    if steps < 1:
        raise UsageError(f"steps must be >= 1. Received: steps={steps}")
    keras.utils.set_random_seed(config.seed)
    # kcnn train's model (whitened first conv included), its rate a variable the test sets each step
    net = build_model(dataclasses.replace(config, lr=start, lr_schedule="constant", ema=0.0), info, ds)
    test = LRRangeTest(steps, start, end)
    stem = f"{Path(config.dataset).name}-{config.model}"
    folder = Path(output) if output is not None else next_numbered(Path(LR_FIND_DIR), stem)
    log.info(f"range test of {config.model} on {info.describe()}: lr from {start:.1e} to {end:.1e} over "
             f"{steps} steps (batch {config.batch_size}, recipe {config.recipe})")
    with training_fast_path(net):
        net.fit(ds.train.repeat(), epochs=1, steps_per_epoch=steps, callbacks=[test], shuffle=False,
                verbose=fit_verbosity(verbose))
    result = {"lrs": test.lrs, "losses": test.losses, "smoothed": test.smoothed,
              "suggested_lr": suggest(test.lrs, test.smoothed), "recipe": config.recipe, "recipe_lr": config.lr,
              "stopped_early": test.stopped_early, "settings": config.to_dict()}
    title = f"{config.model} on {Path(config.dataset).name}: learning-rate range test"
    written = [files.write_json(folder / "lr_find.json", result, sort_keys=False),
               figures.plot_lr_find(test.lrs, test.smoothed, result["suggested_lr"], config.lr,
                                    folder / "lr_find.png", title=title)]
    log.info(f"suggested lr {result['suggested_lr']:.1e} (recipe {config.recipe} uses {config.lr:.1e})")
    for path in written:
        log.info(f"wrote {path}")
    return {**result, "files": [str(p) for p in written]}
