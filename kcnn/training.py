"""Training: ``model.fit`` with Keras callbacks into a run folder, then the test figures.

:func:`train` is the Python API of ``kcnn train``: it resolves a :class:`kcnn.config.TrainConfig`,
picks the run folder (:class:`kcnn.runs.RunFolder`: start, resume or refuse), builds and compiles
the model from factory functions here, fits it with the callbacks of :mod:`kcnn.callbacks`, and
writes ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import resource
import sys
import time
from pathlib import Path

import keras

import kcnn
from kcnn import config as configs
from kcnn import data, figures, models
from kcnn import metadata as model_metadata
from kcnn.callbacks import Lookahead, StepLearningRate, make_callbacks
from kcnn.config import TrainConfig
from kcnn.device import describe_device, distribution_scope, resolve_device, resolve_devices, runtime_versions
from kcnn.errors import DataError, UsageError
from kcnn.evaluation import evaluate_arrays, predict_probs
from kcnn.fused import training_fast_path
from kcnn.prediction import load_classifier
from kcnn.runs import RunFolder, truncate_history

log = logging.getLogger(__name__)

#: onecycle: fraction of all steps spent warming up from lr/25 to lr (Smith & Topin 2017's shape).
ONECYCLE_WARMUP = 0.2
#: step: multiply lr by 0.1 after 50% and 75% of the epochs.
STEP_BOUNDARIES, STEP_FACTOR = (0.5, 0.75), 0.1
#: triangular: share of the steps that warm up, and the rate at the first and last step as shares of
#: the peak (airbench94's get_lr: 23%, 0.2, 0.07).
TRIANGULAR_WARMUP, TRIANGULAR_START, TRIANGULAR_END = 0.23, 0.2, 0.07
#: --lookahead: steps between pulls towards the slow weights (airbench94: every 5 steps).
LOOKAHEAD_EVERY = 5


class TrainingDiverged(DataError):
    """The loss became NaN or Inf; the message names the epoch and step, and the kept checkpoint."""


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run folder.
        config: the resolved settings.
        metrics: contents of ``metrics.json`` (``test_accuracy``, ``test_loss``, ...).
        history: ``history.csv`` rows as dicts, one per epoch.
        resumed_from_epoch: epochs already done when this call began.
    """

    run_dir: Path
    config: TrainConfig
    metrics: dict
    history: list
    resumed_from_epoch: int


def train(dataset: str | None = None, config: TrainConfig | None = None, *, output: str | Path | None = None,
          overwrite: bool = False, verbose: int | str = "auto", callbacks=(), test: bool = True,
          **overrides) -> TrainResult:
    """Train a registered model on a TFDS dataset; the Python API of ``kcnn train``.

    Args:
        dataset: TFDS name (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"``...);
            None: the one of ``config``.
        config: settings to start from (e.g. ``TrainConfig.load("runs/X/config.json")``, a replay);
            None: the field defaults and the dataset's default recipe (:func:`kcnn.config.resolve`).
        output: run folder (None: resume the latest unfinished run of the same settings under
            ``runs/`` or make a new numbered one).
        overwrite: delete what ``output`` holds and start again.
        verbose: Keras ``fit`` verbosity: 0 silent, 1 a progress bar, 2 one line per epoch; ``"auto"``
            (:func:`fit_verbosity`): a progress bar on a terminal or in a notebook, else one line an epoch.
        callbacks: extra Keras callbacks, run before kcnn's own.
        test: evaluate the test split at the end (False: ``kcnn tune``'s trials, which choose by
            the validation split and never read the test split).
        **overrides: :class:`kcnn.config.TrainConfig` fields (``model="net24k"``, ``epochs=2``,
            ``recipe="cifar"``, ``batch_size=32``...); None values are ignored.

    Returns:
        A :class:`TrainResult`.

    Progress (the header, the dataset, the results table) goes to the ``kcnn.training`` logger at
    level INFO: the command line prints it; a Python caller sees it under its own logging setup.

    Raises:
        UsageError: unknown model, dataset, recipe or setting, a value out of range, or CUDA asked
            for and not available.
        kcnn.runs.RunFolderError: ``output`` holds another or a finished run.
        kcnn.data.DataNotFoundError: the dataset is not prepared in the data_dir.
        TrainingDiverged: the loss became NaN/Inf (last good checkpoint and backup kept).
        KeyboardInterrupt: Ctrl-C; the last completed epoch is saved, re-running resumes.
    """
    config, info = resolve_config(dataset, config, overrides)
    device = resolve_device(config.device)  # these fail before any folder is made
    devices = resolve_devices(config.devices, config.device)
    run, resume = RunFolder.resolve(config, output, overwrite)
    versions = runtime_versions()
    log.info(_header(device, versions, devices))
    log.info(f"dataset {info.describe()}")
    keras.utils.set_random_seed(config.seed)
    ds = data.load_datasets(info, batch_size=config.batch_size, val_split=config.val_split, augment=config.augment,
                            seed=config.seed, one_hot=config.one_hot)
    info = ds.info  # a folder's with its validation files cut
    if ds.skipped:
        log.warning(_describe_skipped(ds.skipped))
    epochs_done = run.start(resume)
    run.write_json("config.json", _config_record(config, info, ds, device, versions, devices))
    monitor = "val_accuracy" if ds.val is not None else "accuracy"  # the logged metric that picks the checkpoint
    log.info(f"run folder: {run.path}" + (f" (resuming after epoch {epochs_done})" if resume else ""))
    # Keras' torch backend takes "cuda:N"; tensorflow and jax call the same device "gpu:N".
    keras_device = device if keras.backend.backend() == "torch" else device.replace("cuda", "gpu")
    # with several devices the distribution places the weights and batches; the test runs on one
    placement = keras.device(keras_device) if not devices else contextlib.nullcontext()
    with placement, _dtype_policy(config.mixed_precision):
        with distribution_scope(devices):
            net = build_model(config, info, ds, fresh=epochs_done == 0)
            fit_seconds = _fit(net, ds, run, config, monitor, callbacks, fit_verbosity(verbose))
        history = run.read_history()
        metrics = (_test_metrics(net, run, config, info, history, monitor) if test
                   else _history_metrics(history, monitor))
    seconds = [row.get("epoch_seconds") for row in history]
    if seconds and None not in seconds:  # every epoch timed (a migrated run's first ones are not)
        metrics["fit_seconds"] = round(sum(seconds), 1)
    metrics.update(fit_seconds_this_call=round(fit_seconds, 1), peak_rss_gib=round(peak_rss_gib(), 2),
                   skipped_files=len(ds.skipped))
    if run.model.exists():  # the file alone now names its test figures too
        model_metadata.write(run.model, model_file_metadata(config, info, metrics))
    run.write_json("metrics.json", metrics)
    run.finish()
    if len(history) < config.epochs:
        log.info(f"stopped early after epoch {len(history)} of {config.epochs}: {monitor} did not improve for "
                 f"{config.patience} epochs (--patience)")
    log.info(format_results(history, metrics, monitor))
    return TrainResult(run_dir=run.path, config=config, metrics=metrics, history=history,
                       resumed_from_epoch=epochs_done)


def resolve_config(dataset: str | None, config: TrainConfig | None, overrides: dict):
    """``(config, dataset info)``: the settings of a run and the metadata of its dataset, which is
    downloaded first when it is a TFDS dataset the data_dir lacks (unless ``download=False``).

    Raises:
        UsageError: no dataset, unknown model/recipe/setting, a value out of range, a batch asked
            for that is larger than the training split.
        kcnn.data.DataNotFoundError: the dataset is not prepared and cannot be downloaded.
    """
    name = dataset or (config.dataset if config else None)
    if name is None:
        raise UsageError("train needs a dataset or a config. Received: dataset=None, config=None")

    def setting(key):  # given, else the config's, else the field default: what the data is read with
        given = overrides.get(key)
        return given if given is not None else getattr(config or TrainConfig(), key)

    models.check_model_name(setting("model"))
    reading = {key: setting(key) for key in ("data_dir", "download", "image_size", "channels", "test_split")}
    TrainConfig(**reading)  # bad values fail here, with the field's message
    info = data.load_info(name, **reading)  # fails fast, before any folder is made
    explicit = overrides.get("batch_size") is not None or config is not None  # asked for, not a recipe's
    config = configs.resolve(info.name, info.image_shape, base=config, **overrides)
    return check_batch_size(config, info, explicit), info


def check_batch_size(config: TrainConfig, info, explicit: bool = True) -> TrainConfig:
    """``config``, or, when one batch is larger than the training split (after the validation cut,
    which a folder with its own ``val/`` does not make) and the recipe chose it, ``config`` with the
    whole split as one batch, said in one warning line (as Ultralytics and fastai do).

    Raises:
        UsageError: the batch is larger than the training split and was asked for (``explicit``).
    """
    num_train = info.train_size(config.val_split)
    if config.batch_size <= num_train:
        return config
    if explicit:
        raise UsageError(f"batch_size is larger than the {num_train:,} training images of {info.name} "
                         f"(after the validation split). Received: batch_size={config.batch_size}")
    log.warning(f"the recipe's batch_size {config.batch_size} is larger than the {num_train:,} training images of "
                f"{info.name}: training on all of them as one batch (batch_size={num_train})")
    return dataclasses.replace(config, batch_size=num_train)


def _describe_skipped(skipped: list) -> str:
    """``"skipped 3 files that cannot be read: a.jpg (truncated ...); ... (all listed in config.json)"``."""
    shown = "; ".join(f"{path} ({reason})" for path, reason in skipped[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return f"skipped {len(skipped)} files that cannot be read: {shown}{more} (all listed in config.json)"


def _header(device: str, v: dict, devices=()) -> str:
    """The run's first line: kcnn, backend, device (or the ``devices`` of data parallelism) and the
    library versions ``v`` (``runtime_versions()``)."""
    where = f"devices {','.join(devices)}" if devices else f"device {device}"
    extra = f" | jax {v['jax']}" if v["backend"] == "jax" else ""
    return (f"kcnn {kcnn.__version__} | backend {v['backend']} | {where} | "
            f"keras {v['keras']} | torch {v['torch']} | tensorflow {v['tensorflow']}{extra}")


def _config_record(config: TrainConfig, info, ds, device: str, versions: dict, devices=()) -> dict:
    """What ``config.json`` holds: the settings, what they resolved to (the backend in ``versions``),
    the dataset and versions, in format :data:`kcnn.config.FORMAT_VERSION`."""
    return {
        "format_version": configs.FORMAT_VERSION,
        "settings": config.to_dict(),
        "resolved": {"device": device, "devices": list(devices) or [device], "machine": describe_device(device),
                     "steps_per_epoch": steps_per_epoch(config, ds),
                     "num_train": ds.num_train, "num_val": ds.num_val, "augmentation": config.augment},
        "dataset": {"name": info.name, "version": info.version, "class_names": list(info.class_names),
                    "image_shape": list(info.image_shape), "data_dir": info.data_dir,
                    "skipped_files": [{"path": str(path), "reason": reason} for path, reason in ds.skipped]},
        "versions": versions,
    }


def build_model(config: TrainConfig, info, ds, fresh: bool = True):
    """The compiled ``keras.Model`` of ``config``, its loss matching the labels ``ds`` gives
    (:func:`make_loss`); with ``fresh`` and ``config.whiten``, its first conv whitened on the first
    :data:`kcnn.config.WHITEN_IMAGES` training images (a resumed run restores its weights instead).
    A model whose first conv is frozen (``whitened8``: a whitening layer that never trains) is
    whitened whatever ``config.whiten`` says: random frozen filters would only lose information."""
    net = models.create_model(config.model, info.image_shape, info.num_classes)
    if fresh and (config.whiten or not models.first_conv(net).trainable):
        count = min(configs.WHITEN_IMAGES, ds.num_train)
        images = data.load_split_arrays(info, f"train[:{count}]")[0]
        eigenvalues = models.whiten_first_conv(net, images)
        log.info(f"first conv whitened on {len(images)} training images (leading patch variances "
                 f"{', '.join(f'{v:.3g}' for v in eigenvalues[:3])})")
    schedule = make_lr_schedule(config.lr_schedule, config.lr, steps_per_epoch(config, ds), config.epochs)
    loss, metric = make_loss(config.label_smoothing, config.one_hot)
    net.compile(optimizer=make_optimizer(config.optimizer, schedule, config.weight_decay, config.ema,
                                         config.momentum), loss=loss, metrics=[metric])
    if config.bn_bias_lr != 1:
        scale_gradients(net, batch_norm_biases(net), config.bn_bias_lr)
    return net


def batch_norm_biases(model) -> list:
    """The trainable ``beta`` variables of the model's ``BatchNormalization`` layers."""
    return [layer.beta for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization) and layer.center and layer.trainable]


def scale_gradients(model, variables, factor: float) -> None:
    """Multiply the gradients of ``variables`` by ``factor`` before ``model.optimizer`` applies them.

    With SGD this is a learning rate ``factor`` times larger for those variables, their weight
    decay unchanged: airbench94's batch-norm biases at 64x the rate (K. Jordan, "94% on CIFAR-10
    in 3.29 Seconds on a Single GPU", 2024: 22 -> 17 epochs to 94%), which torch writes as a
    parameter group. Keras optimizers have no per-variable rate, and a subclass would put a class
    of ours into the ``.keras`` file's optimizer config (plain ``load_model`` then fails), so the
    optimizer instance's ``apply``, which every backend's train step calls, is wrapped instead
    (set with ``object.__setattr__``, outside Keras' attribute tracking); its class and config
    stay stock. :func:`build_model` sets it on every build, so a resumed run has it too.

    Args:
        model: a compiled ``keras.Model``.
        variables: some of ``model.trainable_variables``.
        factor: the multiplier.
    """
    chosen = {id(v) for v in variables}
    optimizer, stock_apply = model.optimizer, model.optimizer.apply

    def apply(grads, trainable_variables=None):
        # jax's stateless_apply passes no variables: the optimizer's own, in the model's order
        order = model.trainable_variables if trainable_variables is None else trainable_variables
        grads = [g * factor if g is not None and id(v) in chosen else g for g, v in zip(grads, order)]
        return stock_apply(grads, trainable_variables)

    object.__setattr__(optimizer, "apply", apply)


def triangular_lr(step: int, total: int, peak: float) -> float:
    """airbench94's triangular schedule at ``step`` of ``total``: linear from
    ``TRIANGULAR_START * peak`` to ``peak`` over the first :data:`TRIANGULAR_WARMUP` of the steps,
    then linear to ``TRIANGULAR_END * peak`` at the last."""
    warmup = int(total * TRIANGULAR_WARMUP)
    if step < warmup:
        share = step / warmup
        return peak * (TRIANGULAR_START * (1 - share) + share)
    share = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * ((1 - share) + TRIANGULAR_END * share)


def steps_per_epoch(config: TrainConfig, ds) -> int:
    """Optimizer steps in one pass over ``ds``' training split (the last batch may be smaller)."""
    return math.ceil(ds.num_train / config.batch_size)


def recipe_callbacks(config: TrainConfig, ds) -> list:
    """The callbacks a recipe's settings need for training on ``ds``: :class:`kcnn.callbacks.StepLearningRate`
    for the triangular schedule, :class:`kcnn.callbacks.Lookahead` for ``lookahead``."""
    total = steps_per_epoch(config, ds) * config.epochs
    found = []
    if config.lr_schedule == "triangular":
        found.append(StepLearningRate(lambda step: triangular_lr(step, total, config.lr)))
    if config.lookahead:
        found.append(Lookahead(total, every=LOOKAHEAD_EVERY))
    return found


def model_file_metadata(config: TrainConfig, info, metrics: dict | None = None) -> dict:
    """:func:`kcnn.metadata.make` of a run's ``model.keras``: its classes, input rule and dataset, and as
    its card the architecture, the command that trains it, the settings and (once known) the test figures."""
    results = {k: v for k, v in (metrics or {}).items()
               if k in ("test_accuracy", "test_loss", "epochs") or k.startswith("test_accuracy_tta_")}
    card = {"model": config.model, "command": config.command(), "settings": config.to_dict(), **results}
    return model_metadata.make(info.class_names, info.image_shape, info.name, card)


def fit_verbosity(verbose: int | str) -> int:
    """Keras ``fit``'s ``verbose`` for ours: ``"auto"`` is 1 (a progress bar) on a terminal or in a
    Jupyter kernel and 2 (one line an epoch) elsewhere. Keras' own ``"auto"`` is 1 everywhere, and
    its progress bar redraws with control characters whenever ``posix`` is imported, so a log file
    or a pipe would get a bar full of them."""
    if verbose != "auto":
        return verbose
    return 1 if sys.stdout.isatty() or "ipykernel" in sys.modules else 2


def _fit(net, ds, run: RunFolder, config: TrainConfig, monitor: str, extra_callbacks, verbose) -> float:
    """``net.fit`` into ``run``; returns the wall seconds of this call's fit.

    Raises:
        TrainingDiverged: the loss became NaN/Inf (the history is cut back to the last good epoch).
        KeyboardInterrupt: Ctrl-C, after the last completed epoch is saved.
    """
    best = max((row[monitor] for row in run.read_history() if monitor in row), default=None)
    callbacks = make_callbacks(run, monitor, best, datasets=ds, seed=config.seed, ema=bool(config.ema),
                               tensorboard=config.tensorboard, metadata=model_file_metadata(config, ds.info),
                               patience=config.patience, extra=[*extra_callbacks, *recipe_callbacks(config, ds)])
    start = time.time()
    try:
        with training_fast_path(net):  # fused batch norm, direct forward (torch); the saved file stays stock
            net.fit(ds.train, validation_data=ds.val, epochs=config.epochs, verbose=verbose, shuffle=False,
                    callbacks=callbacks.all)
    except KeyboardInterrupt:
        log.warning(f"\nInterrupted. The last completed epoch is saved in {run.path}; re-run the same command "
                    f"to resume.")
        raise
    finally:
        callbacks.interrupt.restore()  # give Ctrl-C back to Python
    if callbacks.divergence.where is not None:
        epoch, step = callbacks.divergence.where
        truncate_history(run.history, epoch - 1)
        raise TrainingDiverged(
            f"loss became NaN/Inf at epoch {epoch}, step {step}; training stopped. The last good "
            f"checkpoint and backup are kept in {run.path} (lower --lr and use --overwrite to retry)")
    return time.time() - start


def _history_metrics(history: list, monitor: str) -> dict:
    """The kept epoch (1-based), its ``monitor`` value, and the epochs trained."""
    best_row = max(history, key=lambda r: r.get(monitor, -1.0)) if history else {}
    return {"best_epoch": int(best_row.get("epoch", -1)) + 1, f"best_{monitor}": best_row.get(monitor),
            "epochs": len(history)}


def _test_metrics(net, run: RunFolder, config: TrainConfig, info, history: list, monitor: str) -> dict:
    """Test figures of ``model.keras`` (with ``evaluation/`` and ``curves.png`` written), of the last
    epoch's weights in ``net`` when another epoch was kept, with test-time flip averaging for
    colour datasets and runs trained with flips, and with ``config.tta`` (``test_accuracy_tta_NAME``)."""
    figures.plot_history(history, run.curves, title=f"{run.path.name}: {config.model} on {config.dataset}")
    images, labels = data.load_split_arrays(info, "test")  # decoded once, for every figure below
    clf = load_classifier(run.model)
    view_probs = {}  # model.keras' probabilities of each TTA view, predicted once for every figure
    evaluation = evaluate_arrays(clf, images, labels, info, output=run.evaluation, view_probs=view_probs)
    best_row = max(history, key=lambda r: r.get(monitor, -1.0)) if history else {}
    metrics = {"test_accuracy": float(evaluation["accuracy"]), "test_loss": float(evaluation["loss"]),
               "final_test_accuracy": float(evaluation["accuracy"]), "test_examples": int(evaluation["examples"]),
               **_history_metrics(history, monitor)}
    last_is_best = not history or best_row is history[-1]
    mirror = info.image_shape[-1] == 3 or "flip" in config.augment

    def accuracy(model, tta="none", views=None):
        return float((predict_probs(model, images, tta=tta, view_probs=views).argmax(axis=1) == labels).mean())

    if not last_is_best:  # net holds the last epoch's weights
        metrics["final_test_accuracy"] = accuracy(net)
    for tta in dict.fromkeys(["flip"] * mirror + [config.tta]):
        if tta != "none":
            metrics[f"test_accuracy_tta_{tta}"] = accuracy(clf.model, tta=tta, views=view_probs)
    return metrics


def make_lr_schedule(name: str, lr: float, steps_per_epoch: int, epochs: int):
    """A Keras learning-rate schedule, evaluated per optimizer step.

    ``constant``: ``lr``. ``step``: ``PiecewiseConstantDecay``, x0.1 after 50%
    and 75% of training. ``cosine``: ``CosineDecay`` from ``lr`` to 0.
    ``onecycle``: ``CosineDecay`` with linear warm-up from ``lr/25`` to ``lr``
    over the first 20% of steps, then cosine to 0 (Smith & Topin 2017's
    one-cycle shape, from Keras' own schedule). ``triangular``: the rate of the
    first step, a plain number that :class:`kcnn.callbacks.StepLearningRate`
    then sets before each step (:func:`triangular_lr`; see that class for why).

    Raises:
        UsageError: unknown schedule name.
    """
    total = max(1, steps_per_epoch * epochs)
    if name == "constant":
        return lr
    if name == "step":
        bounds = [int(total * b) for b in STEP_BOUNDARIES]
        values = [lr * STEP_FACTOR**i for i in range(len(bounds) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total)
    if name == "triangular":
        return triangular_lr(0, total, lr)
    if name == "onecycle":
        warmup = max(1, int(total * ONECYCLE_WARMUP))
        return keras.optimizers.schedules.CosineDecay(  # a run of one step: no cosine part (Keras needs 1)
            lr / 25, decay_steps=max(1, total - warmup), warmup_target=lr, warmup_steps=warmup
        )
    raise UsageError(
        f"Unknown lr_schedule; valid: {', '.join(configs.LR_SCHEDULES)}. Received: lr_schedule={name!r}"
    )


def make_optimizer(name: str, learning_rate, weight_decay: float = 0.0, ema: float = 0.0, momentum: float = 0.9):
    """``keras.optimizers.Adam`` or ``SGD(momentum=momentum, nesterov=True)``.

    Args:
        ema: above 0, the optimizer also keeps an exponential moving average of
            the weights with this momentum per step (Keras' ``use_ema``,
            ``ema_momentum``; Polyak & Juditsky 1992).

    Raises:
        UsageError: unknown optimizer name.
    """
    options = dict(weight_decay=weight_decay or None, use_ema=bool(ema), ema_momentum=ema or 0.99)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, **options)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=True, **options)
    raise UsageError(f"Unknown optimizer; valid: {', '.join(configs.OPTIMIZERS)}. Received: optimizer={name!r}")


def make_loss(label_smoothing: float = 0.0, one_hot: bool = False):
    """The training loss and accuracy metric, ``(loss, metric)``.

    Integer labels ``(batch,)`` (no smoothing, not ``one_hot``): ``sparse_categorical_crossentropy``.
    Otherwise ``keras.losses.CategoricalCrossentropy(label_smoothing=...)`` on one-hot or mixed
    labels ``(batch, num_classes)`` (:attr:`kcnn.config.TrainConfig.one_hot`), with
    ``categorical_accuracy`` (the arg-max class of a mixed label) logged as ``accuracy``.
    """
    if not label_smoothing and not one_hot:
        return "sparse_categorical_crossentropy", "accuracy"
    return (keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
            keras.metrics.CategoricalAccuracy(name="accuracy"))


@contextlib.contextmanager
def _dtype_policy(mixed_precision: str | None):
    """Keras' ``mixed_{mixed_precision}`` dtype policy inside the block, the previous one after."""
    previous = keras.config.dtype_policy()
    if mixed_precision is not None:
        keras.config.set_dtype_policy(f"mixed_{mixed_precision}")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, GiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


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
    tested = f"test accuracy {metrics['test_accuracy']:.4f} | test loss {metrics['test_loss']:.4f} | " if (
        "test_accuracy" in metrics) else ""
    lines.append(tested + f"best epoch {metrics['best_epoch']} by {monitor}"
                 + (f" | last epoch's weights: test accuracy {metrics['final_test_accuracy']:.4f}"
                    if metrics.get("final_test_accuracy", metrics.get("test_accuracy")) != metrics.get("test_accuracy")
                    else "")
                 + (f" | peak RSS {metrics['peak_rss_gib']:.2f} GiB" if "peak_rss_gib" in metrics else "")
                 + (f" | {metrics['skipped_files']} unreadable files skipped" if metrics.get("skipped_files") else ""))
    return "\n".join(lines)
