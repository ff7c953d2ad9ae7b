"""Training: ``model.fit`` with Keras callbacks, run folders, resume and final test metrics.

A run folder holds:

- ``model.keras``: the best checkpoint on validation accuracy (written to a
  temporary file and renamed into place, so a crash never leaves it half-written),
- ``history.csv``: one row per epoch (``CSVLogger``), learning rate and ``epoch_seconds``
  (the epoch's wall time, validation included) included,
- ``config.json``: every setting used, the dataset version and library versions,
- ``metrics.json``: ``test_accuracy`` and ``test_loss`` of ``model.keras`` on
  the test split, computed at the end, and ``final_test_accuracy``, that of the
  last epoch's weights (the same number when the last epoch is the best), and
  for colour datasets and runs trained with flips ``test_accuracy_tta_flip``,
  that of ``model.keras`` with test-time flip averaging; ``fit_seconds_this_call``,
  the wall time of this call's ``fit``, and ``fit_seconds``, the summed epoch times
  of all calls (a resumed run's whole training time),
- ``curves.png``: loss, accuracy and learning rate per epoch,
- ``evaluation/``: ``kcnn evaluate`` of ``model.keras`` on the test split
  (evaluation.json, confusion matrix, misclassified and random predictions),
- ``backup/``: ``BackupAndRestore`` state while the run is unfinished;
  re-running the same command resumes from the last completed epoch.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import kcnn
from kcnn.data import DEFAULT_VAL_SPLIT  # stdlib-only at import time

#: Training settings that do not depend on the dataset, in one place (airbench style).
DEFAULTS = dict(
    model="cnn3",  # architecture name, see kcnn.models.list_models()
    epochs=15,  # passes over the training split
    seed=0,  # seeds Python, NumPy, torch, TF, shuffling and augmentation
)
#: Named training recipes: optimizer, peak learning rate (per step), schedule, decoupled
#: weight decay (per step, as a fraction of lr), augmentation (True = the dataset's
#: default policy, or a name of kcnn.data.AUGMENTATIONS), batch size (images per step),
#: label smoothing (the fraction of each one-hot target spread evenly over the classes,
#: Szegedy et al. 2016, "Rethinking the Inception Architecture", section 7), ema (the
#: momentum, per step, of an exponential moving average of the weights; 0 = off), whiten
#: (start the first conv as a patch-whitening filter bank, kcnn.models.whiten_first_conv) and
#: val_split (the fraction of TFDS train held out for validation and checkpoint choice; 0 = train
#: on all of it, the checkpoint then tracking training accuracy, which peaks at the last epoch in practice).
#: Without --recipe a run gets :func:`default_recipe`: "digits" for MNIST ("digits_small" for
#: net24k), "cifar_whiten_full" for Fashion-MNIST, "cifar_whiten_shift_full" for colour datasets; explicit
#: options override single settings.
RECIPES = {
    # Adam, one-cycle to 2e-3, small affine augmentation, label smoothing 0.1. With label
    # smoothing 0.1, MNIST cnn3 in 15 epochs averaged 99.63% ± 0.03 over seeds 0-2 (CPU; README
    # "Results", docs/runs), where 0.0 had averaged 99.56% ± 0.04 (H100).
    "digits": dict(optimizer="adam", lr=2e-3, lr_schedule="onecycle", weight_decay=0.0, augment=True,
                   batch_size=128, label_smoothing=0.1, ema=0.0, whiten=False, val_split=DEFAULT_VAL_SPLIT),
    # "digits" for small digit networks (net24k's default on MNIST): a higher peak lr, batch 64 and
    # +-2 px shifts instead of the affine policy, under which the 24k net underfits (train 98.5% in
    # 10 epochs). MNIST net24k in 10 epochs averaged 99.50% ± 0.03 final over seeds 0-2, where
    # "digits" had averaged 99.08% ± 0.13 (CPU; README "Recipes" and "Results", docs/runs).
    "digits_small": dict(optimizer="adam", lr=5e-3, lr_schedule="onecycle", weight_decay=0.0, augment="shift",
                         batch_size=64, label_smoothing=0.1, ema=0.0, whiten=False, val_split=DEFAULT_VAL_SPLIT),
    # Adam, one-cycle to 2e-3, horizontal flips only. On CIFAR-10 cnn3 (seed 0, one run each,
    # README "Single runs") it beat cifar_sgd: 74.98% vs 71.22% in 5 epochs; 81.00% in 15.
    "cifar": dict(optimizer="adam", lr=2e-3, lr_schedule="onecycle", weight_decay=0.0, augment="flip",
                  batch_size=128, label_smoothing=0.0, ema=0.0, whiten=False, val_split=DEFAULT_VAL_SPLIT),
    # "cifar" at half the batch and twice the peak lr (4 times the lr per image), the colour
    # default from 2026-11-23 until "cifar_adamw": CIFAR-10 cnn3 underfits in 5 epochs (train
    # 73.6% under "cifar"), and more, larger steps fit further. Seed 0, 5 epochs (CPU, README
    # "Single runs"): 76.73% against "cifar"'s 74.98%; batch 32 at 2e-3 gave 76.62%, batch 16
    # 76.51%, batch 64 at 2e-3 75.92%. Seeds 0-1 (README "Results" prose; records in git at
    # 2f05ed0): 76.71% in 5 epochs, 80.41% in 15; "cifar" (H100): 75.06%, 80.64%.
    "cifar_b64": dict(optimizer="adam", lr=4e-3, lr_schedule="onecycle", weight_decay=0.0, augment="flip",
                      batch_size=64, label_smoothing=0.0, ema=0.0, whiten=False, val_split=DEFAULT_VAL_SPLIT),
    # "cifar_b64" as AdamW: decoupled weight decay 0.05 (per step, times the lr; Loshchilov &
    # Hutter 2019), the colour default on 2026-11-23, until "cifar_whiten". CIFAR-10 cnn3 over seeds
    # 0-1 (CPU; README "Results" prose, records in git at f7a8f43):
    # 81.32% in 15 epochs against "cifar_b64"'s 80.41%, 77.00% in 5 against 76.71%; cnn2 73.39%
    # in 10 against 73.13%. Weight decay 0.2 gave 76.65% in 5 epochs (seed 0, README "Single runs").
    "cifar_adamw": dict(optimizer="adam", lr=4e-3, lr_schedule="onecycle", weight_decay=0.05, augment="flip",
                        batch_size=64, label_smoothing=0.0, ema=0.0, whiten=False, val_split=DEFAULT_VAL_SPLIT),
    # "cifar_adamw" with the first conv started as a patch-whitening filter bank (airbench's
    # initialization, kcnn.models.whiten_first_conv), the colour default on 2026-11-24 until
    # "cifar_whiten_ls". CIFAR-10 over seeds 0-1 (CPU; README "Results" prose, records in git at
    # 466e869): cnn3 82.09% in 15 epochs against "cifar_adamw"'s 81.32%, 78.19% in 5 against
    # 77.00%; cnn2 73.81% in 10 against 73.39%.
    "cifar_whiten": dict(optimizer="adam", lr=4e-3, lr_schedule="onecycle", weight_decay=0.05, augment="flip",
                         batch_size=64, label_smoothing=0.0, ema=0.0, whiten=True, val_split=DEFAULT_VAL_SPLIT),
    # "cifar_whiten" with label smoothing 0.1, the colour default on 2026-11-24 until
    # "cifar_whiten_shift_full". CIFAR-10 over seeds 0-1 (CPU; README "Results", records in git at
    # b9ceccb): cnn3 78.91% in 5 epochs against "cifar_whiten"'s 78.19% (past the seed's 78.47%);
    # cnn2 74.70% in 10 against 73.81%; cnn3 81.88% in 15 against 82.09%, a loss within the two
    # seeds' spread (0.17 and 0.11 points).
    "cifar_whiten_ls": dict(optimizer="adam", lr=4e-3, lr_schedule="onecycle", weight_decay=0.05, augment="flip",
                            batch_size=64, label_smoothing=0.1, ema=0.0, whiten=True, val_split=DEFAULT_VAL_SPLIT),
    # "cifar_whiten_ls" with airbench's flip + 2-pixel translate ("flip_shift") instead of flips
    # alone; not a default. CIFAR-10 (CPU, README "Single runs"): cnn3 in 15 epochs 82.70% and 82.37%
    # over seeds 0-1 against "cifar_whiten_ls"'s 82.00% and 81.76% (train accuracy 84.7% against
    # 89.1%: less overfitting), but cnn3 in 5 epochs 78.71% against 79.05% and cnn2 in 10 74.06%
    # against 74.39% (seed 0), where the shorter or smaller fits underfit under the extra shifts.
    # On all 50,000 training images it is "cifar_whiten_shift_full", the colour default.
    "cifar_whiten_shift": dict(optimizer="adam", lr=4e-3, lr_schedule="onecycle", weight_decay=0.05,
                               augment="flip_shift", batch_size=64, label_smoothing=0.1, ema=0.0, whiten=True,
                               val_split=DEFAULT_VAL_SPLIT),
    # "cifar_whiten_shift" trained on the full train split (no validation split; the epoch of best
    # training accuracy is kept, the last one in every run so far), the default for colour datasets.
    # CIFAR-10 cnn3 over seeds 0-1 (CPU; README "Results", docs/runs): 83.12% in 15 epochs against
    # "cifar_whiten_ls"'s 81.88%, 79.35% in 5 against 78.91%; cnn2 74.59% in 10 against 74.70%
    # (within the 0.45 spread of "cifar_whiten_ls"'s two seeds). The 11% more data and steps
    # outweigh what the shifts cost the shorter fits (README "Recipes").
    "cifar_whiten_shift_full": dict(optimizer="adam", lr=4e-3, lr_schedule="onecycle", weight_decay=0.05,
                                    augment="flip_shift", batch_size=64, label_smoothing=0.1, ema=0.0, whiten=True,
                                    val_split=0.0),
    # "cifar_whiten" trained on the full train split (no validation split; the epoch of best training
    # accuracy is kept, the last one in every run so far), Fashion-MNIST's default: cnn3 in 15 epochs
    # over seeds 0-2 (CPU; README "Results", docs/runs) 93.59% ± 0.09 against "cifar_whiten"'s 93.33%.
    "cifar_whiten_full": dict(optimizer="adam", lr=4e-3, lr_schedule="onecycle", weight_decay=0.05, augment="flip",
                              batch_size=64, label_smoothing=0.0, ema=0.0, whiten=True, val_split=0.0),
    # SGD with Nesterov momentum 0.9, one-cycle to 0.05, weight decay 5e-4, pad-4 crop + flip
    # (kcnn's colour default until the models took PyTorch's initialization).
    "cifar_sgd": dict(optimizer="sgd", lr=0.05, lr_schedule="onecycle", weight_decay=5e-4, augment=True,
                      batch_size=128, label_smoothing=0.0, ema=0.0, whiten=False, val_split=DEFAULT_VAL_SPLIT),
    # The seeds' plain tutorial setup, the baseline of scripts/reproduce.py: Adam at
    # Keras' default 1e-3, constant, no augmentation, no weight decay, batch 64. The
    # seeds' own optimizer settings are not recorded anywhere kcnn can read, so this is
    # the common setup of such tutorials, not a verified copy of each seed.
    "seed": dict(optimizer="adam", lr=1e-3, lr_schedule="constant", weight_decay=0.0, augment=False,
                 batch_size=64, label_smoothing=0.0, ema=0.0, whiten=False, val_split=DEFAULT_VAL_SPLIT),
}
#: Peak learning rate for an optimizer chosen over the recipe's, when no lr is given.
DEFAULT_LR = {"adam": 2e-3, "sgd": 0.05}
OPTIMIZERS = ("adam", "sgd")
#: --mixed-precision choices: Keras' mixed_bfloat16 / mixed_float16 dtype policies (None: float32).
MIXED_PRECISION = (None, "bfloat16", "float16")
LR_SCHEDULES = ("constant", "step", "cosine", "onecycle")
#: onecycle: fraction of all steps spent warming up from lr/25 to lr.
ONECYCLE_WARMUP = 0.2
#: whiten: the first conv's patch whitening is estimated on the train split's first this many images
#: (all the training images when there are fewer; never validation images).
WHITEN_IMAGES = 5000
#: step: multiply lr by 0.1 after 50% and 75% of the epochs.
STEP_BOUNDARIES, STEP_FACTOR = (0.5, 0.75), 0.1
#: Settings that do not change what a run computes; they may differ on resume. The recipe is only
#: a name for the settings recorded one by one beside it: ``--recipe cifar_adamw --whiten`` and
#: ``--recipe cifar_whiten`` train the same run.
_NOT_IDENTITY = ("device", "data_dir", "output", "verbose", "recipe")
#: Settings added after run folders were first written, with the value older folders trained with.
_ADDED_SETTINGS = {"label_smoothing": 0.0, "ema": 0.0, "mixed_precision": None, "whiten": False}


#: Default recipes that differ from the image-shape rule of :func:`default_recipe`.
#: Fashion-MNIST: clothes survive a horizontal flip (a digit does not); on cnn3 in 15 epochs over
#: seeds 0-2 (README "Results", docs/runs) "cifar_whiten_full" averaged 93.59%, "cifar_whiten" 93.33%
#: (its records in git at 6b818a2), "cifar" 93.10% (in git at 69adf6d), "digits" 90.61% and "seed"
#: 92.27% (H100). Label smoothing, CIFAR-10's lever,
#: did not help "cifar" here (seed 0: 93.04% against 93.40%, README "Single runs").
DATASET_RECIPES = {"fashion_mnist": "cifar_whiten_full"}
#: Default recipes of one architecture on one dataset, by (dataset, model); they win over
#: :data:`DATASET_RECIPES`. MNIST net24k in 10 epochs: see "digits_small" in :data:`RECIPES`.
MODEL_RECIPES = {("mnist", "net24k"): "digits_small"}


def default_recipe(image_shape, dataset: str | None = None, model: str | None = None) -> str:
    """The recipe ``kcnn train DATASET --model MODEL`` uses without ``--recipe``.

    Args:
        image_shape: ``(H, W, C)`` of the dataset's images.
        dataset: TFDS name; one in :data:`DATASET_RECIPES` gets that recipe.
        model: architecture name; a (dataset, model) in :data:`MODEL_RECIPES` gets that recipe.

    Returns:
        The :data:`MODEL_RECIPES` entry, else the :data:`DATASET_RECIPES` entry, else
        ``"cifar_whiten_shift_full"`` for colour images (C = 3) and ``"digits"`` for gray ones.
    """
    if (dataset, model) in MODEL_RECIPES:
        return MODEL_RECIPES[(dataset, model)]
    if dataset in DATASET_RECIPES:
        return DATASET_RECIPES[dataset]
    return "cifar_whiten_shift_full" if image_shape[-1] == 3 else "digits"


def describe_recipe(name: str) -> str:
    """One line of a recipe's settings, for ``--help`` (written from :data:`RECIPES`).

    Example: ``describe_recipe("cifar_b64")`` is ``"adam 0.004 onecycle, flip, batch 64"``;
    weight decay, label smoothing, EMA and whitening are named only when on, the validation split
    only when it is not ``kcnn.data.DEFAULT_VAL_SPLIT`` (0 reads "no validation split"), and an
    ``augment`` of ``True`` reads as ``kcnn.data.default_augmentation``'s policies, "affine (gray) /
    crop_flip (colour)", and ``False`` as "no augmentation".

    Raises:
        KeyError: ``name`` is not in :data:`RECIPES`.
    """
    from kcnn.data import default_augmentation  # stdlib-only at import time

    r = RECIPES[name]
    dataset_default = f"{default_augmentation((28, 28, 1))} (gray) / {default_augmentation((32, 32, 3))} (colour)"
    augment = {True: dataset_default, False: "no augmentation"}.get(r["augment"], r["augment"])
    parts = [f"{r['optimizer']} {r['lr']:g} {r['lr_schedule']}", augment, f"batch {r['batch_size']}"]
    parts += [f"{label} {r[key]:g}" for key, label in
              (("weight_decay", "weight decay"), ("label_smoothing", "label smoothing"), ("ema", "ema"))
              if r[key]]
    parts += ["whitened first conv"] * bool(r["whiten"])
    if r["val_split"] != DEFAULT_VAL_SPLIT:
        parts.append(f"val split {r['val_split']:g}" if r["val_split"] else "no validation split")
    return ", ".join(parts)


def describe_default_recipes() -> str:
    """Which recipe ``kcnn train`` picks without ``--recipe``, in words, for ``--help``.

    Written from :data:`MODEL_RECIPES`, :data:`DATASET_RECIPES` and :func:`default_recipe`'s
    image-shape rule, e.g. ``"digits_small for net24k on mnist, cifar_whiten for fashion_mnist,
    cifar_whiten_shift_full for colour images, digits for gray ones"``.
    """
    parts = [f"{recipe} for {model} on {dataset}" for (dataset, model), recipe in MODEL_RECIPES.items()]
    parts += [f"{recipe} for {dataset}" for dataset, recipe in DATASET_RECIPES.items()]
    parts += [f"{default_recipe((32, 32, 3))} for colour images", f"{default_recipe((28, 28, 1))} for gray ones"]
    return ", ".join(parts)


def resolve_recipe(image_shape, recipe: str | None = None, dataset: str | None = None, model: str | None = None,
                   **overrides) -> dict:
    """The recipe's settings with every non-None override applied, plus ``recipe``: its name.

    Without ``recipe``, the :func:`default_recipe` of ``image_shape``, ``dataset`` and ``model``.

    An optimizer chosen over the recipe's, with no lr given, gets :data:`DEFAULT_LR`.

    Raises:
        ValueError: unknown recipe name.
    """
    name = recipe or default_recipe(image_shape, dataset, model)
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe; valid: {', '.join(RECIPES)}. Received: recipe={name!r}")
    settings = dict(RECIPES[name], recipe=name)
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("optimizer", settings["optimizer"]) != settings["optimizer"] and "lr" not in given:
        given["lr"] = DEFAULT_LR.get(given["optimizer"], settings["lr"])
    settings.update(given)
    return settings


def run_settings(dataset: str, image_shape, *, model: str = DEFAULTS["model"], epochs: int = DEFAULTS["epochs"],
                 recipe: str | None = None, val_split: float | None = None, seed: int = DEFAULTS["seed"],
                 mixed_precision: str | None = None, device: str = "auto", data_dir: str | None = None,
                 batch_size: int | None = None, **overrides) -> dict:
    """The settings :func:`train` records as ``config.json["settings"]`` for these arguments.

    Args:
        dataset: TFDS name.
        image_shape: the dataset's ``(H, W, C)``; with dataset and model, picks the default
            recipe (see :func:`default_recipe`).
        model, epochs, recipe, val_split, seed, mixed_precision, device, data_dir,
            batch_size: as for :func:`train`.
        **overrides: optimizer, lr, lr_schedule, weight_decay, augment,
            label_smoothing, ema, whiten; None = the recipe's (so is ``val_split=None``).

    Raises:
        ValueError: unknown recipe name (other values are checked by :func:`train`).
    """
    settings = resolve_recipe(image_shape, recipe, dataset, model, **overrides,
                              batch_size=None if batch_size is None else int(batch_size),
                              val_split=None if val_split is None else float(val_split))
    return dict(dataset=dataset, model=model, epochs=int(epochs), **settings, seed=int(seed),
                mixed_precision=mixed_precision, device=device, data_dir=data_dir)


RUNS_DIR = "runs"


class RunFolderError(ValueError):
    """An output folder holds a different or finished run."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message names the epoch and step, and the kept checkpoint."""


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run folder.
        metrics: contents of ``metrics.json`` (``test_accuracy``, ``test_loss``, ...).
        history: ``history.csv`` rows as dicts, one per epoch.
        resumed_from_epoch: number of epochs already done when this call began.
    """

    run_dir: Path
    metrics: dict
    history: list
    resumed_from_epoch: int


def make_lr_schedule(name: str, lr: float, steps_per_epoch: int, epochs: int):
    """A Keras learning-rate schedule, evaluated per optimizer step.

    ``constant``: ``lr``. ``step``: ``PiecewiseConstantDecay``, x0.1 after 50%
    and 75% of training. ``cosine``: ``CosineDecay`` from ``lr`` to 0.
    ``onecycle``: ``CosineDecay`` with linear warm-up from ``lr/25`` to ``lr``
    over the first 20% of steps, then cosine to 0 (Smith & Topin 2017's
    one-cycle shape, from Keras' own schedule).

    Raises:
        ValueError: unknown schedule name.
    """
    import keras

    total = max(1, steps_per_epoch * epochs)
    if name == "constant":
        return lr
    if name == "step":
        bounds = [int(total * b) for b in STEP_BOUNDARIES]
        values = [lr * STEP_FACTOR**i for i in range(len(bounds) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total)
    if name == "onecycle":
        warmup = max(1, int(total * ONECYCLE_WARMUP))
        return keras.optimizers.schedules.CosineDecay(
            lr / 25, decay_steps=total - warmup, warmup_target=lr, warmup_steps=warmup
        )
    raise ValueError(
        f"Unknown lr_schedule; valid: {', '.join(LR_SCHEDULES)}. Received: lr_schedule={name!r}"
    )


def make_optimizer(name: str, learning_rate, weight_decay: float = 0.0, ema: float = 0.0):
    """``keras.optimizers.Adam`` or ``SGD(momentum=0.9, nesterov=True)``.

    Args:
        ema: above 0, the optimizer also keeps an exponential moving average of
            the weights with this momentum per step (Keras' ``use_ema``,
            ``ema_momentum``; Polyak & Juditsky 1992).

    Raises:
        ValueError: unknown optimizer name.
    """
    import keras

    options = dict(weight_decay=weight_decay or None, use_ema=bool(ema), ema_momentum=ema or 0.99)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, **options)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, **options)
    raise ValueError(f"Unknown optimizer; valid: {', '.join(OPTIMIZERS)}. Received: optimizer={name!r}")


def make_loss(label_smoothing: float = 0.0):
    """The training loss and accuracy metric, ``(loss, metric)``.

    0: ``sparse_categorical_crossentropy`` on integer labels ``(batch,)``. Above 0:
    ``keras.losses.CategoricalCrossentropy(label_smoothing=...)``, which needs one-hot
    labels ``(batch, num_classes)``, with ``categorical_accuracy`` logged as ``accuracy``.
    """
    import keras

    if not label_smoothing:
        return "sparse_categorical_crossentropy", "accuracy"
    return (keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
            keras.metrics.CategoricalAccuracy(name="accuracy"))


def _one_hot_labels(dataset, num_classes: int):
    """``(images, labels (batch,))`` batches as ``(images, one_hot (batch, num_classes) float32)``; None stays None."""
    if dataset is None:
        return None
    import tensorflow as tf

    return dataset.map(lambda images, labels: (images, tf.one_hot(labels, num_classes)),
                       num_parallel_calls=tf.data.AUTOTUNE)


def _write_json(path: Path, obj) -> None:
    """Write JSON to a temporary file in the same folder, then rename into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_history(path: Path) -> list[dict]:
    """Rows of a ``history.csv`` as dicts of floats (``epoch`` as int).

    Cells ``CSVLogger`` writes as ``NA`` (its ``val_*`` columns when a run has no
    validation split) are left out of their row.
    """
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in ("NA", "")}
            for row in rows]


def _logs_epoch_seconds(path: Path) -> bool:
    """Whether a run's ``history.csv`` gets an ``epoch_seconds`` column: yes for a new file or one
    that has it; no for one written before kcnn timed epochs, whose resumed rows must keep its
    header's columns (``CSVLogger`` appends without rewriting the header)."""
    if not path.exists() or path.stat().st_size == 0:
        return True
    with open(path, newline="") as f:
        return "epoch_seconds" in next(csv.reader(f), [])


def _truncate_history(path: Path, epochs_done: int) -> None:
    """Keep only rows of epochs the backup holds (a crash may leave one extra row)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header = rows[0]
    kept = [header] + [r for r in rows[1:]  # drop a half-written last line too
                       if len(r) == len(header) and r[0].isdigit() and int(r[0]) < epochs_done]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)
    os.replace(tmp, path)


def _identity(config: dict) -> dict:
    """The settings that decide what a run computes; a setting an older folder lacks gets its old value."""
    settings = {**_ADDED_SETTINGS, **config["settings"]}
    return {k: v for k, v in settings.items() if k not in _NOT_IDENTITY}


def _saved_identity(folder: Path) -> dict | None:
    """The :func:`_identity` of the run in ``folder``; None when its config.json is not valid run JSON."""
    try:
        return _identity(json.loads((folder / "config.json").read_text()))
    except (ValueError, KeyError):
        return None


def _differences(folder: Path, identity: dict) -> str:
    """Which settings of the run in ``folder`` differ from ``identity``, as "key: saved there, KEY here; ...".

    Falls back to naming ``folder/config.json`` when it cannot be read.
    """
    try:
        return config_differences(json.loads((folder / "config.json").read_text()), identity)
    except (ValueError, KeyError):
        return f"{folder / 'config.json'} unreadable"


def config_differences(config: dict, settings: dict) -> str:
    """How a run saved with ``config`` (its ``config.json``) differs from a run of ``settings``.

    Args:
        config: a run folder's ``config.json``, as a dict.
        settings: from :func:`run_settings`, e.g. what today's command would train.

    Returns:
        "" when both compute the same run (settings such as the device may differ),
        else "key: saved there, KEY here; ...".

    Raises:
        KeyError: ``config`` has no ``"settings"``.
    """
    saved, identity = _identity(config), _identity({"settings": settings})
    return "; ".join(f"{k}: {saved.get(k)!r} there, {identity.get(k)!r} here"
                     for k in {**saved, **identity} if saved.get(k) != identity.get(k))


def _next_run_dir(root: Path, stem: str) -> Path:
    pattern = re.compile(rf"^{re.escape(stem)}-(\d+)$")
    numbers = [int(m.group(1)) for p in root.glob(f"{stem}-*") if (m := pattern.match(p.name))]
    return root / f"{stem}-{max(numbers, default=0) + 1}"


def resolve_run_dir(settings: dict, output: str | None, overwrite: bool = False) -> tuple[Path, bool]:
    """Choose the run folder and whether the run resumes.

    With ``output`` None: an unfinished run under ``runs/`` with the same
    settings resumes (so re-running a command continues it); otherwise a new
    ``runs/{dataset}-{model}-{N}`` is made. With ``output`` given: an empty or
    new folder starts a run, an unfinished run with the same settings resumes.

    Returns:
        ``(run_dir, resume)``.

    Raises:
        RunFolderError: ``output`` holds a finished run or a run with other
            settings, and ``overwrite`` is False.
    """
    identity = _identity({"settings": settings})

    def state(folder: Path):
        if not (folder / "config.json").exists():
            return "empty"
        if _saved_identity(folder) != identity:
            return "other"
        return "finished" if (folder / "metrics.json").exists() else "unfinished"

    if output is None:
        root = Path(RUNS_DIR)
        stem = f"{settings['dataset']}-{settings['model']}"
        candidates = sorted(root.glob(f"{stem}-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for folder in candidates:
            if state(folder) == "unfinished":
                return folder, True
        return _next_run_dir(root, stem), False

    folder = Path(output)
    current = state(folder)
    if overwrite and current != "empty":
        shutil.rmtree(folder)
        return folder, False
    if current == "unfinished":
        return folder, True
    if current == "finished":
        raise RunFolderError(
            f"{folder} already holds a finished run with these settings "
            f"(see {folder / 'metrics.json'}); pass --overwrite to train it again"
        )
    if current == "other":
        raise RunFolderError(
            f"{folder} holds a run with other settings ({_differences(folder, identity)}); "
            "choose another --output or pass --overwrite"
        )
    return folder, False


def _callbacks(run_dir: Path, monitor: str, best_so_far: float | None, extra, datasets=None, seed=0,
               ema: bool = False):
    import keras

    class EpochSeeding(keras.callbacks.Callback):
        """Keys every random stream of an epoch to its number, so a resumed run replays the original.

        At each epoch's start: the data order and augmentation (``Datasets.set_epoch``),
        each ``SeedGenerator`` of the model, whose state Keras does not save with the
        weights, set to ``(its initial seed + epoch, 0)``, and on the torch backend
        torch's global generator, reseeded from ``(seed, epoch)``: Keras' ``Dropout``
        there draws its masks from it (``torch.nn.functional.dropout``), not from its
        ``SeedGenerator``.
        """

        def on_train_begin(self, logs=None):
            self.generators = [v for v in self.model.variables if v.path.endswith("seed_generator_state")]
            self.initial = [int(keras.ops.convert_to_numpy(v)[0]) for v in self.generators]

        def on_epoch_begin(self, epoch, logs=None):
            if datasets is not None:
                datasets.set_epoch(epoch)
            for v, first in zip(self.generators, self.initial):
                v.assign(keras.ops.convert_to_tensor([(first + 7919 * epoch) % 2**31, 0], v.dtype))
            if keras.backend.backend() == "torch":
                import torch

                torch.manual_seed((int(seed) * 1_000_003 + 7919 * epoch) % 2**63)

    class LearningRateLogger(keras.callbacks.Callback):
        """Adds the optimizer's current learning rate to the epoch logs."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                lr = self.model.optimizer.learning_rate
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))

    class EpochTimer(keras.callbacks.Callback):
        """Adds ``epoch_seconds``, the epoch's wall time (training and validation), to the epoch logs."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["epoch_seconds"] = time.perf_counter() - self.start

    class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
        """``ModelCheckpoint`` that saves to a temporary file and renames it into place."""

        def __init__(self, filepath: Path, **kwargs):
            self.final_path = filepath
            super().__init__(str(filepath.with_name(f".{filepath.stem}.partial.keras")), **kwargs)

        def on_epoch_end(self, epoch, logs=None):
            if divergence.where is None:
                super().on_epoch_end(epoch, logs)
            if os.path.exists(self.filepath):
                os.replace(self.filepath, self.final_path)

    class Divergence(keras.callbacks.TerminateOnNaN):
        """``TerminateOnNaN`` that also records where the loss stopped being finite."""

        where = None

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)) and self.where is None:
                self.where = (self.epoch + 1, batch + 1)
            super().on_batch_end(batch, logs)

    class BackupUnlessDiverged(keras.callbacks.BackupAndRestore):
        """``BackupAndRestore`` that never overwrites the last good backup with diverged weights."""

        def on_epoch_end(self, epoch, logs=None):
            if divergence.where is None:
                super().on_epoch_end(epoch, logs)

    class DeferredInterrupt(keras.callbacks.Callback):
        """Ctrl-C during ``fit`` stops at the next batch or epoch boundary.

        The SIGINT handler only sets a flag, and this callback (run last, so after
        the backup) raises ``KeyboardInterrupt`` at the next boundary. A signal that
        raised at once could land in a finalizer (a tf.data or DataLoader iterator
        being freed between epochs), where Python reports and drops it. A second
        Ctrl-C raises at once.
        """

        pending, previous = False, None

        def on_train_begin(self, logs=None):
            # Not from other threads (signal.signal would fail), nor where SIGINT is
            # ignored (nohup, background jobs), as Python itself leaves it then.
            if (threading.current_thread() is threading.main_thread()
                    and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
                self.previous = signal.signal(signal.SIGINT, self.handler)

        def handler(self, signum, frame):
            if self.pending:
                raise KeyboardInterrupt
            self.pending = True

        def restore(self):
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

    divergence = Divergence()
    # With EMA, Keras' SwapEMAWeights evaluates the validation split with the averaged
    # weights and puts them in the model for the checkpoint; right after it, they are
    # swapped out again, so the backup holds the trained weights and the average as
    # optimizer state (an exact resume), and the next epoch trains on the trained weights.
    ema_in, ema_out = [], []
    if ema:
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
        ema_in = [swap]
        ema_out = [keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: swap.on_epoch_begin(epoch + 1))]
    # Order matters: logs are filled (lr) before CSVLogger writes them, and the
    # backup is written last, so a crash in between leaves at most one extra
    # CSV row, which resume drops.
    return divergence, [
        EpochSeeding(),
        *extra,
        divergence,
        LearningRateLogger(),
        *([EpochTimer()] if _logs_epoch_seconds(run_dir / "history.csv") else []),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        *ema_in,
        AtomicModelCheckpoint(
            run_dir / "model.keras", monitor=monitor, mode="max", save_best_only=True,
            initial_value_threshold=best_so_far,
        ),
        *ema_out,
        # double_checkpoint: Keras keeps the previous backup and falls back to it
        # if the latest cannot be read (a crash or full disk while saving).
        BackupUnlessDiverged(str(run_dir / "backup"), double_checkpoint=True, delete_checkpoint=False),
        DeferredInterrupt(),
    ]


def train(dataset: str, *, model: str = DEFAULTS["model"], epochs: int = DEFAULTS["epochs"],
          batch_size: int | None = None, recipe: str | None = None, lr: float | None = None,
          optimizer: str | None = None, lr_schedule: str | None = None, weight_decay: float | None = None,
          label_smoothing: float | None = None, ema: float | None = None, whiten: bool | None = None,
          val_split: float | None = None, augment: bool | str | None = None,
          seed: int = DEFAULTS["seed"], device: str = "auto", mixed_precision: str | None = None,
          data_dir: str | None = None,
          output: str | None = None, overwrite: bool = False, verbose: int | str = "auto", callbacks=(),
          log=print) -> TrainResult:
    """Train a registered model on a TFDS dataset; the Python API of ``kcnn train``.

    Args:
        dataset: TFDS name (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"``...).
        model: architecture name from :func:`kcnn.models.list_models`.
        epochs: total epochs (a resumed run trains only the missing ones).
        recipe: a name of :data:`RECIPES`; None = :func:`default_recipe` of the dataset and model.
            batch_size, lr, optimizer, lr_schedule, weight_decay, label_smoothing, ema,
            whiten, val_split and augment default to the recipe's (None).
        batch_size: images per step.
        lr: peak learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (Nesterov momentum 0.9).
        lr_schedule: one of :data:`LR_SCHEDULES`.
        weight_decay: decoupled weight decay (0 = off).
        label_smoothing: in [0, 1): train on targets ``(1 - label_smoothing) * one_hot
            + label_smoothing / num_classes`` (Keras' ``CategoricalCrossentropy``); 0 = off.
        ema: in [0, 1): momentum per step of an exponential moving average of the
            weights (Keras' ``use_ema``); validation, the checkpoint and the final
            weights use the average, training steps the weights themselves. 0 = off.
        whiten: start the first ``Conv2D`` as a patch-whitening filter bank estimated on
            the train split's first :data:`WHITEN_IMAGES` images
            (:func:`kcnn.models.whiten_first_conv`; airbench's initialization).
        val_split: fraction of the train split held out for validation (0 = none;
            the checkpoint then tracks training accuracy); None = the recipe's.
        augment: True (dataset default), False, or a policy of :data:`kcnn.data.AUGMENTATIONS`;
            None = the recipe's.
        seed: global seed.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        mixed_precision: ``"bfloat16"`` or ``"float16"`` to train under Keras'
            ``mixed_*`` dtype policy (float32 weights, half-precision compute; the
            softmax head stays float32; float16 gets Keras' loss scaling). Meant for
            CUDA; None = float32.
        data_dir: TFDS data_dir (None: ``TFDS_DATA_DIR`` or TFDS' default).
        output: run folder (None: resume the latest unfinished matching run
            under ``runs/`` or make a new numbered one).
        overwrite: delete what ``output`` holds and start again.
        verbose: Keras ``fit`` verbosity (``"auto"`` shows the progress bar).
        callbacks: extra Keras callbacks, run before kcnn's own.
        log: function that prints one line of progress.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: bad argument (unknown model/dataset/optimizer/schedule, CUDA
            not available, out-of-range numbers).
        RunFolderError: ``output`` holds another or a finished run.
        kcnn.data.DataNotFoundError: the dataset is not prepared in the data_dir.
        TrainingDiverged: the loss became NaN/Inf (last good checkpoint and backup kept).
        KeyboardInterrupt: Ctrl-C; the last completed epoch is saved, re-running resumes.
    """
    from kcnn.device import resolve_device

    import keras

    from kcnn import data, figures, models
    from kcnn.device import describe_device, runtime_versions
    from kcnn.evaluation import evaluate, load_split_arrays, predict_probs

    models.check_model_name(model)
    info = data.load_info(dataset, data_dir)  # fails fast, before any folder is made
    settings = run_settings(dataset, info.image_shape, model=model, epochs=epochs, recipe=recipe,
                            optimizer=optimizer, lr=lr, lr_schedule=lr_schedule, weight_decay=weight_decay,
                            augment=augment, label_smoothing=label_smoothing, ema=ema, whiten=whiten,
                            batch_size=batch_size,
                            val_split=val_split, seed=seed, mixed_precision=mixed_precision, device=device,
                            data_dir=data_dir)
    _validate(settings)
    device_name = resolve_device(device)
    run_dir, resume = resolve_run_dir(settings, output, overwrite)
    versions = runtime_versions()
    log(f"kcnn {kcnn.__version__} | backend {keras.backend.backend()} | device {device_name} | "
        f"keras {versions['keras']} | torch {versions['torch']} | tensorflow {versions['tensorflow']}")

    optimizer, peak_lr, lr_schedule = settings["optimizer"], settings["lr"], settings["lr_schedule"]
    weight_decay, augment, batch_size = settings["weight_decay"], settings["augment"], settings["batch_size"]
    keras.utils.set_random_seed(seed)
    ds = data.load_datasets(dataset, data_dir=data_dir, batch_size=batch_size, val_split=settings["val_split"],
                            augment=augment, seed=seed)
    steps_per_epoch = math.ceil(ds.num_train / batch_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    history_path = run_dir / "history.csv"
    epochs_done = 0
    metadata = run_dir / "backup" / "training_metadata.json"
    if resume and metadata.exists():
        epochs_done = int(json.loads(metadata.read_text())["epoch"])
    _truncate_history(history_path, epochs_done)
    if not resume or epochs_done == 0:
        history_path.unlink(missing_ok=True)
    monitor = "val_accuracy" if ds.val is not None else "accuracy"
    best = max((r[monitor] for r in read_history(history_path) if monitor in r), default=None)

    config = {
        "settings": settings,
        "resolved": {"device": device_name, "machine": describe_device(device_name),
                     "steps_per_epoch": steps_per_epoch, "num_train": ds.num_train, "num_val": ds.num_val,
                     "augmentation": (data.default_augmentation(info.image_shape) if augment is True
                                      else (augment or "none"))},
        "dataset": {"name": info.name, "version": info.version, "class_names": list(info.class_names),
                    "image_shape": list(info.image_shape), "data_dir": info.data_dir},
        "versions": versions,
    }
    _write_json(run_dir / "config.json", config)
    log(f"run folder: {run_dir}" + (f" (resuming after epoch {epochs_done})" if resume else ""))

    start = time.time()
    # Keras' torch backend takes "cuda:N"; tensorflow and jax call the same device "gpu:N".
    keras_device = device_name if keras.backend.backend() == "torch" else device_name.replace("cuda", "gpu")
    with keras.device(keras_device), _dtype_policy(mixed_precision):
        net = models.create_model(model, info.image_shape, info.num_classes)
        if settings["whiten"] and epochs_done == 0:  # a resumed run restores its weights instead
            images = load_split_arrays(dataset, f"train[:{min(WHITEN_IMAGES, ds.num_train)}]", data_dir)[0]
            eigenvalues = models.whiten_first_conv(net, images)
            log(f"first conv whitened on {len(images)} training images (leading patch variances "
                f"{', '.join(f'{v:.3g}' for v in eigenvalues[:3])})")
        schedule = make_lr_schedule(lr_schedule, peak_lr, steps_per_epoch, epochs)
        loss, metric = make_loss(settings["label_smoothing"])
        if settings["label_smoothing"]:
            ds.train, ds.val = (_one_hot_labels(d, info.num_classes) for d in (ds.train, ds.val))
        net.compile(optimizer=make_optimizer(optimizer, schedule, weight_decay, settings["ema"]), loss=loss,
                    metrics=[metric])
        divergence, fit_callbacks = _callbacks(run_dir, monitor, best, list(callbacks), ds, seed,
                                               ema=bool(settings["ema"]))
        try:
            net.fit(ds.train, validation_data=ds.val, epochs=epochs, verbose=verbose, shuffle=False,
                    callbacks=fit_callbacks)
        except KeyboardInterrupt:
            log(f"\nInterrupted. The last completed epoch is saved in {run_dir}; "
                "re-run the same command to resume.")
            raise
        finally:
            fit_callbacks[-1].restore()  # DeferredInterrupt: give Ctrl-C back to Python
        fit_seconds = time.time() - start
        if divergence.where is not None:
            _truncate_history(history_path, divergence.where[0] - 1)
            epoch, step = divergence.where
            raise TrainingDiverged(
                f"loss became NaN/Inf at epoch {epoch}, step {step}; training stopped. The last good "
                f"checkpoint and backup are kept in {run_dir} (lower --lr and use --overwrite to retry)")
        history = read_history(history_path)
        figures.plot_history(history, run_dir / "curves.png", title=f"{run_dir.name}: {model} on {dataset}")
        evaluation = evaluate(run_dir / "model.keras", dataset, data_dir=data_dir,
                              output=run_dir / "evaluation", log=lambda line: None)
        test_loss, test_accuracy = evaluation["loss"], evaluation["accuracy"]
        best_row = max(history, key=lambda r: r.get(monitor, -1.0)) if history else {}
        extra_metrics = {"final_test_accuracy": test_accuracy}
        last_is_best = not history or best_row is history[-1]
        mirror = info.image_shape[-1] == 3 or "flip" in config["resolved"]["augmentation"]
        if not last_is_best or mirror:
            images, labels = load_split_arrays(dataset, "test", data_dir)

            def accuracy(model, tta="none"):
                return float((predict_probs(model, images, tta=tta).argmax(axis=1) == labels).mean())

            if not last_is_best:  # net holds the last epoch's weights
                extra_metrics["final_test_accuracy"] = accuracy(net)
            if mirror:
                extra_metrics["test_accuracy_tta_flip"] = accuracy(
                    keras.saving.load_model(run_dir / "model.keras"), tta="flip")

    metrics = {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        **{key: float(value) for key, value in extra_metrics.items()},
        "test_examples": info.num_test,
        "best_epoch": int(best_row.get("epoch", -1)) + 1,
        f"best_{monitor}": best_row.get(monitor),
        "epochs": len(history),
        "fit_seconds_this_call": round(fit_seconds, 1),
        **fit_seconds_all_epochs(history),
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }
    _write_json(run_dir / "metrics.json", metrics)
    shutil.rmtree(run_dir / "backup", ignore_errors=True)  # finished: nothing to resume
    log(format_results(history, metrics, monitor))
    return TrainResult(run_dir=run_dir, metrics=metrics, history=history,
                       resumed_from_epoch=epochs_done)


@contextlib.contextmanager
def _dtype_policy(mixed_precision: str | None):
    """Keras' ``mixed_{mixed_precision}`` dtype policy inside the block, the previous one after."""
    import keras

    previous = keras.config.dtype_policy()
    if mixed_precision is not None:
        keras.config.set_dtype_policy(f"mixed_{mixed_precision}")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def fit_seconds_all_epochs(history: list[dict]) -> dict:
    """``{"fit_seconds": s}``, the summed ``epoch_seconds`` of every row of ``history`` (wall
    seconds, over every call of a resumed run), or ``{}`` when some row has none (run folders
    from before kcnn timed epochs)."""
    seconds = [row.get("epoch_seconds") for row in history]
    return {"fit_seconds": round(sum(seconds), 1)} if seconds and None not in seconds else {}


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, GiB (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


def _validate(s: dict) -> None:
    if s["epochs"] < 1:
        raise ValueError(f"epochs must be >= 1. Received: epochs={s['epochs']}")
    if s["batch_size"] < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={s['batch_size']}")
    if not (0 < s["lr"] <= 10):
        raise ValueError(f"lr must be in (0, 10]. Received: lr={s['lr']}")
    if s["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer; valid: {', '.join(OPTIMIZERS)}. Received: optimizer={s['optimizer']!r}")
    if s["lr_schedule"] not in LR_SCHEDULES:
        raise ValueError(f"Unknown lr_schedule; valid: {', '.join(LR_SCHEDULES)}. "
                         f"Received: lr_schedule={s['lr_schedule']!r}")
    if not 0.0 <= s["val_split"] <= 0.5:
        raise ValueError(f"val_split must be in [0, 0.5]. Received: val_split={s['val_split']}")
    if s["mixed_precision"] not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of bfloat16, float16 or None. "
                         f"Received: mixed_precision={s['mixed_precision']!r}")
    if not 0.0 <= s["ema"] < 1.0:
        raise ValueError(f"ema must be in [0, 1). Received: ema={s['ema']}")
    if not 0.0 <= s["label_smoothing"] < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1). Received: label_smoothing={s['label_smoothing']}")
    if s["weight_decay"] < 0:
        raise ValueError(f"weight_decay must be >= 0. Received: weight_decay={s['weight_decay']}")
    if not isinstance(s["whiten"], bool):
        raise ValueError(f"whiten must be True or False. Received: whiten={s['whiten']!r}")


def format_results(history: list[dict], metrics: dict, monitor: str = "val_accuracy") -> str:
    """A compact per-epoch results table and the final test figures.

    Columns: epoch, loss, acc, val_loss, val_acc, lr and s (the epoch's wall seconds), each only
    when the first row of ``history`` has it (no validation split: no val columns).
    """
    cols = [("epoch", "epoch", "5d"), ("loss", "loss", "8.4f"), ("accuracy", "acc", "7.4f"),
            ("val_loss", "val_loss", "8.4f"), ("val_accuracy", "val_acc", "7.4f"),
            ("learning_rate", "lr", "9.2e"), ("epoch_seconds", "s", "6.1f")]
    cols = [c for c in cols if not history or c[0] in history[0]]
    lines = [" ".join(f"{title:>{int(fmt.split('.')[0].rstrip('d'))}}" for _, title, fmt in cols)]
    for row in history:
        lines.append(" ".join(format(row[key] + (key == "epoch"), fmt) for key, _, fmt in cols))
    lines.append(f"test accuracy {metrics['test_accuracy']:.4f} | test loss {metrics['test_loss']:.4f} | "
                 f"best epoch {metrics['best_epoch']} by {monitor}"
                 + (f" | last epoch's weights: test accuracy {metrics['final_test_accuracy']:.4f}"
                    if metrics.get("final_test_accuracy", metrics["test_accuracy"]) != metrics["test_accuracy"]
                    else "")
                 + (f" | peak RSS {metrics['peak_rss_gib']:.2f} GiB" if "peak_rss_gib" in metrics else ""))
    return "\n".join(lines)
