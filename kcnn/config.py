"""Training settings: one :class:`TrainConfig`, five recipes, and which recipe a run gets by default.

A recipe is a small set of changes to :class:`TrainConfig`'s field defaults, which are the plain
setup of the reference tutorials (``baseline``). ``kcnn train DATASET`` resolves a config as:
field defaults, then the recipe's changes (the default recipe of the dataset and model unless
``--recipe`` names one), then every option the user gave. ``config.json`` records the resolved
settings as ``TrainConfig.to_dict()``; ``kcnn train --config RUN/config.json`` replays them.

Imports only the standard library, so ``kcnn --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from kcnn.device import DEVICE_PATTERN
from kcnn.errors import UsageError

#: Default train/validation split: the last 10% of TFDS' train split validates.
DEFAULT_VAL_SPLIT = 0.1
#: A folder's images are brought to (H, W) without --image-size: twice CIFAR's side, small enough for
#: these small CNNs to train on a CPU, large enough that most photos stay recognisable.
DEFAULT_IMAGE_SIZE = (64, 64)
#: Share of each class's files that tests when a folder has no test/ folder (kcnn.data.folders).
DEFAULT_TEST_SPLIT = 0.2
#: Augmentation policies by name (kcnn.data.augment builds them).
AUGMENTATIONS = ("none", "flip", "crop_flip", "flip_erase", "shift", "affine", "flip_shift", "altflip_shift",
                 "flip_shift_cutout", "flip_shift_mixup", "flip_shift_cutmix", "flip_shift_randaugment")
#: Policies that mix two images and their labels (MixUp, CutMix): training takes one-hot labels.
LABEL_MIXING = ("flip_shift_mixup", "flip_shift_cutmix")

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine", "onecycle", "triangular")
#: Test-time augmentation (kcnn.evaluation.predict_probs): none, the mirror, or the mirror and shifts.
TTA = ("none", "flip", "flip_shift")
#: --mixed-precision choices: Keras' mixed_bfloat16 / mixed_float16 dtype policies (None: float32).
MIXED_PRECISION = ("bfloat16", "float16")
#: whiten: the first conv's patch whitening is estimated on the train split's first this many images
#: (all of them when there are fewer; never validation images).
WHITEN_IMAGES = 5000
#: Smallest and largest side of --image-size, pixels (net24k's valid convolutions and pools leave 1 px of 16).
IMAGE_SIDE = (16, 1024)
#: Peak learning rate for an optimizer chosen over the recipe's when no lr is given.
DEFAULT_LR = {"adam": 2e-3, "sgd": 0.05}


def default_augmentation(image_shape) -> str:
    """The default policy for images of ``image_shape`` ``(H, W, C)``: ``crop_flip`` for colour
    images (C = 3, CIFAR), ``affine`` for gray digits/clothes."""
    return "crop_flip" if image_shape[-1] == 3 else "affine"


def _setting(default, help: str, *, low=None, high=None, high_open=False, low_open=False, choices=None,
             recipe=True, shown=None):
    """A :class:`TrainConfig` field: its help line, range or choices, whether recipes set it, and how
    ``--help`` shows its default when not as the value itself (``shown``)."""
    return dataclasses.field(default=default, metadata=dict(help=help, low=low, high=high, low_open=low_open,
                                                            high_open=high_open, choices=choices, recipe=recipe,
                                                            shown=shown))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. The defaults are the ``baseline`` recipe.

    ``dataset``, ``model``, ``epochs`` and ``seed`` say what to train; the fields marked by
    ``recipe=True`` are what a recipe sets; ``device`` and ``data_dir`` say where it runs and do not
    change what it computes (nor does ``recipe``, only a name for where the settings came from).
    Construction validates every field (``UsageError("... Received: name=value")``).
    """

    dataset: str = _setting("mnist", "TFDS name (mnist, fashion_mnist, cifar10, cifar100, ...) or a folder of "
                            "class folders", recipe=False)
    model: str = _setting("cnn3", "Architecture (`kcnn models`)", recipe=False)
    epochs: int = _setting(15, "Passes over the training split", low=1, recipe=False)
    recipe: str | None = _setting(None, "The recipe the settings started from (a label)", recipe=False)
    optimizer: str = _setting("adam", "Adam, or Nesterov SGD", choices=OPTIMIZERS)
    momentum: float = _setting(0.9, "SGD's Nesterov momentum", low=0, high=1, high_open=True)
    lr: float = _setting(1e-3, "Peak learning rate", low=0, high=10, low_open=True)
    lr_schedule: str = _setting("constant", "Learning-rate schedule, per step", choices=LR_SCHEDULES)
    weight_decay: float = _setting(0.0, "Decoupled weight decay per step, times the lr (AdamW)", low=0)
    bn_bias_lr: float = _setting(1.0, "Learning-rate multiplier of batch-norm biases", low=0, high=1024,
                                 low_open=True)
    lookahead: bool = _setting(False, "Lookahead every 5 steps (airbench)")
    augment: str = _setting("none", "Augmentation policy", choices=AUGMENTATIONS)
    batch_size: int = _setting(64, "Images per optimizer step", low=1)
    label_smoothing: float = _setting(0.0, "Label smoothing", low=0, high=1, high_open=True)
    ema: float = _setting(0.0, "EMA momentum; 0 = off", low=0, high=1, high_open=True)
    whiten: bool = _setting(False, "Whitened first conv (airbench)")
    tta: str = _setting("none", "TTA of an extra test figure", choices=TTA)
    val_split: float = _setting(DEFAULT_VAL_SPLIT, "Share of the train split that picks the kept epoch; 0 = none",
                                low=0, high=0.5)
    seed: int = _setting(0, "Random seed (weights, data order, augmentation, dropout)", recipe=False)
    patience: int = _setting(0, "Epochs without gain before stopping; 0 = off", low=0, recipe=False)
    image_size: tuple[int, int] | None = _setting(None, "Size a folder's images are brought to", recipe=False,
                                                  shown=" ".join(map(str, DEFAULT_IMAGE_SIZE)))
    channels: int | None = _setting(None, "A folder's images gray (1) or RGB (3)", choices=(1, 3),
                                    recipe=False, shown="by the images")
    test_split: float = _setting(DEFAULT_TEST_SPLIT, "Share of a folder's classes held out to test", low=0, high=0.5,
                                 low_open=True, recipe=False)
    mixed_precision: str | None = _setting(None, "Half-precision compute, for CUDA", choices=MIXED_PRECISION,
                                           recipe=False, shown="float32")
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N", recipe=False)
    devices: int | str = _setting(1, "Split each batch over N devices or all (jax, tensorflow)", recipe=False)
    data_dir: str | None = _setting(None, "TFDS data_dir", recipe=False,
                                    shown="$TFDS_DATA_DIR, else ~/tensorflow_datasets")
    download: bool = _setting(True, "Download a TFDS dataset the data_dir lacks", recipe=False)
    tensorboard: bool = _setting(False, "TensorBoard logs in RUN/tensorboard", recipe=False)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check(field, getattr(self, field.name))
        if not DEVICE_PATTERN.match(self.device):
            raise UsageError(f"device must be one of auto, cpu, cuda, cuda:N. Received: device={self.device!r}")
        devices = int(self.devices) if isinstance(self.devices, str) and self.devices.isdigit() else self.devices
        if devices != "all" and (not isinstance(devices, int) or isinstance(devices, bool) or devices < 1):
            raise UsageError(f"devices must be a whole number >= 1 or 'all'. Received: devices={self.devices!r}")
        object.__setattr__(self, "devices", devices)  # "2" from the command line is 2
        if self.image_size is not None:
            size = self.image_size
            if (isinstance(size, str) or len(size) != 2
                    or not all(isinstance(d, int) and not isinstance(d, bool) and IMAGE_SIDE[0] <= d <= IMAGE_SIDE[1]
                               for d in size)):
                raise UsageError(f"image_size must be two whole numbers of pixels in [{IMAGE_SIDE[0]}, "
                                 f"{IMAGE_SIDE[1]}]. Received: image_size={size!r}")
            object.__setattr__(self, "image_size", tuple(size))  # JSON gives a list

    @property
    def one_hot(self) -> bool:
        """Whether training takes one-hot labels ``(batch, classes)``: for label smoothing, or for a
        policy of :data:`LABEL_MIXING`, whose mixed labels are no longer one class."""
        return bool(self.label_smoothing) or self.augment in LABEL_MIXING

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict: ``config.json["settings"]``."""
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """The settings that decide what the run computes (all but those of :data:`NOT_IDENTITY`)."""
        return {k: v for k, v in self.to_dict().items() if k not in NOT_IDENTITY}

    def differences(self, other: TrainConfig) -> str:
        """How ``other`` computes differently: ``"key: ours there, theirs here; ..."``, "" for the same run."""
        mine, theirs = self.identity(), other.identity()
        return "; ".join(f"{k}: {mine[k]!r} there, {theirs[k]!r} here" for k in mine if mine[k] != theirs[k])

    def command(self) -> str:
        """The ``kcnn train`` command line that trains this run: its recipe (for a name kcnn no longer
        has, the recipe it differs least from) and every setting that differs from the recipe."""
        fields = settings_fields(recipe_only=True) + [_field(name) for name in ("mixed_precision", *DATA_SETTINGS)]

        def changed(recipe):
            reference = resolve(self.dataset, base=TrainConfig(dataset=self.dataset), recipe=recipe)
            return [(f.name, getattr(self, f.name)) for f in fields
                    if getattr(self, f.name) != getattr(reference, f.name)]

        recipe = self.recipe if self.recipe in RECIPES else min(RECIPES, key=lambda name: len(changed(name)))
        parts = ["kcnn", "train", self.dataset, "--recipe", recipe, "--model", self.model,
                 "--epochs", str(self.epochs), "--seed", str(self.seed)]
        for name, value in changed(recipe):
            option = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                parts.append(option if value else "--no-" + option[2:])
            elif isinstance(value, tuple):
                parts += [option, *map(str, value)]
            else:
                parts += [option, str(value)]
        return " ".join(parts)

    @classmethod
    def from_dict(cls, settings: dict) -> TrainConfig:
        """A config from ``config.json["settings"]`` (of a record :func:`migrate_record` brought to
        :data:`FORMAT_VERSION`). Settings it lacks take the field defaults: the values runs trained
        with before the setting existed.

        Raises:
            UsageError: an unknown setting, or a value out of range.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise UsageError(f"Unknown setting {unknown[0]!r}; valid: {', '.join(sorted(names))}. "
                             f"Received: {unknown[0]}={repr(settings[unknown[0]])[:40]}")
        return cls(**settings)

    @classmethod
    def from_record(cls, record: dict) -> TrainConfig:
        """The config of a ``config.json``-shaped record of any kcnn version (:func:`migrate_record`),
        a model card of ``kcnn export`` (it holds the same keys), or a bare dict of settings."""
        if "settings" not in record:
            return cls.from_dict(record)
        return cls.from_dict(migrate_record(record)["settings"])

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """The config of a run's ``config.json``, a run record of ``docs/runs``, a model card of
        ``kcnn export``, or a JSON object of settings.

        Raises:
            UsageError: the file is missing, not JSON, or holds unknown or bad settings; the message
                names the file.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return cls.from_record(data.get("config", data))  # a record of docs/runs: {"metrics", "config"}
        except (OSError, ValueError, AttributeError) as e:  # UsageError is a ValueError
            raise UsageError(f"{path}: not a kcnn run config ({e})") from None


#: The format of ``config.json`` (and of the run records and model cards that hold its keys).
#: 1, written without a ``format_version`` key: ``settings.augment`` may be True (the dataset's
#: policy) or False, and ``history.csv`` may lack ``epoch_seconds``. 2: policy names, every epoch timed.
FORMAT_VERSION = 2


def migrate_record(record: dict) -> dict:
    """A ``config.json``-shaped record (``settings``, ``dataset``, ...) brought to :data:`FORMAT_VERSION`;
    ``record`` itself is not changed. (A run folder's ``history.csv``: :meth:`kcnn.runs.RunFolder.migrate`.)

    Raises:
        UsageError: a record of a newer kcnn, or a format-1 ``augment=True`` without the image shape
            that names its policy.
    """
    version = record.get("format_version", 1)
    if version > FORMAT_VERSION:
        raise UsageError(f"a record of format {version}, newer than this kcnn's {FORMAT_VERSION}; upgrade kcnn. "
                         f"Received: format_version={version!r}")
    settings = dict(record.get("settings", {}))
    if version < 2 and isinstance(settings.get("augment"), bool):
        dataset = record.get("dataset")  # a model card names it, with the model's input shape beside
        shape = (dataset.get("image_shape") if isinstance(dataset, dict)
                 else record.get("input", {}).get("shape", [0])[1:])
        if settings["augment"] and not shape:
            raise UsageError("augment=True names the dataset's policy; the record has no image shape to resolve it")
        settings["augment"] = default_augmentation(shape) if settings["augment"] else "none"
    return {**record, "settings": settings, "format_version": FORMAT_VERSION}


#: ``kcnn tune``'s search space, one line per setting: ("log", low, high) draws on a log scale,
#: ("float", low, high) uniformly, ("choice", values) one of them. Each stays inside the range and
#: choices of its TrainConfig field (check_search_space, tested).
SEARCH_SPACE = {
    "lr": ("log", 1e-4, 3e-2),
    "weight_decay": ("float", 0.0, 0.1),
    "batch_size": ("choice", (32, 64, 128)),
    "augment": ("choice", ("none", "shift", "affine", "flip", "flip_shift")),
    "label_smoothing": ("float", 0.0, 0.2),
}


def check_search_space(space: dict) -> dict:
    """``space`` (as :data:`SEARCH_SPACE`), checked against :class:`TrainConfig`'s fields.

    Raises:
        UsageError: an unknown setting, a setting recipes do not set, a kind other than log, float or
            choice, an empty or reversed range, or a bound or choice the field refuses.
    """
    tunable = {f.name: f for f in settings_fields(recipe_only=True)}
    for name, spec in space.items():
        if name not in tunable:
            raise UsageError(f"Unknown setting {name!r} in the search space; tunable: {', '.join(sorted(tunable))}. "
                             f"Received: {name}={spec!r}")
        kind, *bounds = spec
        values = bounds[0] if kind == "choice" else bounds
        if kind not in ("log", "float", "choice") or not values or (kind != "choice" and (
                len(bounds) != 2 or not bounds[0] < bounds[1] or (kind == "log" and bounds[0] <= 0))):
            raise UsageError(f"{name} in the search space must be (log|float, low, high) with low < high, or "
                             f"(choice, values). Received: {name}={spec!r}")
        for value in values:
            try:
                _check(tunable[name], value)
            except UsageError as e:
                raise UsageError(f"the search space of {name} leaves its range: {e}") from None
    return space


#: Settings that do not change what a run computes; a run may resume with others. (``devices``
#: splits each batch, which changes sums' rounding only: tests/test_backends.py bounds it.)
NOT_IDENTITY = ("device", "devices", "data_dir", "download", "recipe", "tensorboard")
#: Settings of where the data comes from that ``TrainConfig.command()`` repeats when they differ
#: from the field defaults (recipes do not set them).
DATA_SETTINGS = ("image_size", "channels", "test_split")


def _check(field: dataclasses.Field, value) -> None:
    """Raise ``UsageError`` naming ``field`` when ``value`` is outside its choices or range."""
    meta, name = field.metadata, field.name
    if field.type in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))
                                           or (field.type == "int" and not isinstance(value, int))):
        raise UsageError(f"{name} must be a number. Received: {name}={value!r}")
    if field.type == "bool" and not isinstance(value, bool):
        raise UsageError(f"{name} must be True or False. Received: {name}={value!r}")
    if field.type == "str" and not isinstance(value, str):
        raise UsageError(f"{name} must be a string. Received: {name}={value!r}")
    if meta["choices"] and value not in meta["choices"] and not (value is None and "None" in field.type):
        raise UsageError(f"Unknown {name}; valid: {', '.join(map(str, meta['choices']))}. Received: {name}={value!r}")
    low, high = meta["low"], meta["high"]
    below = low is not None and (value <= low if meta["low_open"] else value < low)
    above = high is not None and (value >= high if meta["high_open"] else value > high)
    if below or above:
        raise UsageError(f"{name} must be {describe_range(field)}. Received: {name}={value!r}")


def describe_range(field: dataclasses.Field) -> str:
    """A field's range: ``in [0, 1)``, ``>= 1``."""
    meta = field.metadata
    if meta["high"] is None:
        return f"{'>' if meta['low_open'] else '>='} {meta['low']}"
    return f"in {'(' if meta['low_open'] else '['}{meta['low']}, {meta['high']}{')' if meta['high_open'] else ']'}"


def _field(name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(TrainConfig) if f.name == name)


def settings_fields(recipe_only: bool = False) -> list[dataclasses.Field]:
    """:class:`TrainConfig`'s fields, or only those a recipe sets."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata["recipe"] or not recipe_only]


#: The recipes: what each is for, and its changes to :class:`TrainConfig`'s defaults. Each was
#: chosen by measured runs: docs/recipes.md gives their figures and docs/experiments.md the levers tried.
RECIPES = {
    # Adam at Keras' 1e-3, constant, no augmentation, batch 64: the setup the reference tutorials
    # share (not a verified copy of each), the baseline column of scripts/reproduce.py.
    "baseline": dict(),
    # Digits: affine augmentation and a one-cycle schedule beat the baseline on MNIST cnn3.
    "digits": dict(lr=2e-3, lr_schedule="onecycle", augment="affine", batch_size=128, label_smoothing=0.1),
    # Small digit networks underfit under "digits"' affine policy; whole-pixel shifts suit them.
    "digits_small": dict(lr=5e-3, lr_schedule="onecycle", augment="shift", label_smoothing=0.1),
    # Clothes survive a mirror: flips, AdamW, whitened first conv, all 60,000 training images.
    "fashion": dict(lr=4e-3, lr_schedule="onecycle", weight_decay=0.05, augment="flip", whiten=True,
                    val_split=0.0),
    # Colour images: AdamW, flip + 2-pixel shifts (airbench), label smoothing 0.1, whitened first conv.
    "cifar": dict(lr=4e-3, lr_schedule="onecycle", weight_decay=0.05, augment="flip_shift", label_smoothing=0.1,
                  whiten=True),
    # airbench94's training (K. Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", 2024), for the
    # whitened nets: batch 1024, Nesterov SGD with momentum 0.85, its triangular schedule, label smoothing
    # 0.2, batch-norm biases at 64x the rate, lookahead, alternating flips with 2-pixel shifts, all 50,000
    # training images, and the mirror-and-shift TTA in the run's figures. Its lr 11.5 and weight decay
    # 0.0153 "per 1024 examples" (torch SGD on a summed loss) become, on Keras' mean loss and decoupled
    # decay: lr = 11.5 / (1 + 1 / (1 - 0.85)) = 1.5, and weight decay = 0.0153 / 11.5 / (1 - 0.85) = 0.00887
    # (torch's coupled L2 term, 0.0153 / 11.5 per unit of rate, acts 1 / (1 - momentum) times through the momentum).
    "airbench": dict(optimizer="sgd", momentum=0.85, lr=1.5, lr_schedule="triangular", weight_decay=0.00887,
                     batch_size=1024, label_smoothing=0.2, bn_bias_lr=64.0, lookahead=True, augment="altflip_shift",
                     whiten=True, val_split=0.0, tta="flip_shift"),
}
#: What each recipe is for, one line each (``kcnn recipes``).
PURPOSES = {
    "baseline": "the reference tutorials' plain setup, to compare against",
    "digits": "handwritten digits and other gray images (MNIST)",
    "digits_small": "networks of a few 10k weights on digits (net24k)",
    "fashion": "gray images that survive a mirror (Fashion-MNIST)",
    "cifar": "colour images (CIFAR-10, CIFAR-100, other TFDS colour datasets)",
    "airbench": "the whitened nets (whitened8, whitened8_narrow): airbench94's fast CIFAR training",
}
#: The recipe ``kcnn train`` picks without ``--recipe``: the first row whose dataset, model and image
#: channels match (None matches any).
DEFAULT_RECIPES = (
    ("mnist", "net24k", None, "digits_small"),
    ("fashion_mnist", None, None, "fashion"),
    (None, "whitened8", None, "airbench"),
    (None, "whitened8_narrow", None, "airbench"),
    (None, None, 3, "cifar"),
    (None, None, None, "digits"),
)


def default_recipe(dataset: str, model: str, image_shape) -> str:
    """The :data:`DEFAULT_RECIPES` entry for ``dataset``, ``model`` and images of ``image_shape`` (H, W, C)."""
    for want_dataset, want_model, channels, recipe in DEFAULT_RECIPES:
        if want_dataset in (None, dataset) and want_model in (None, model) and channels in (None, image_shape[-1]):
            return recipe
    raise AssertionError("DEFAULT_RECIPES ends in a row that matches everything")


def resolve(dataset: str | None = None, image_shape=None, base: TrainConfig | None = None, **given) -> TrainConfig:
    """The config of a run: ``base`` (else the field defaults), then a recipe, then ``given``.

    Without ``base``, the recipe is ``given["recipe"]`` or :func:`default_recipe` (which needs
    ``image_shape``); with ``base``, only a ``recipe`` in ``given`` applies one. An optimizer
    given without an lr gets :data:`DEFAULT_LR`. None values in ``given`` are ignored.

    Args:
        dataset: TFDS name (None: the base's).
        image_shape: ``(H, W, C)`` of the dataset's images.
        base: a config to start from, e.g. :meth:`TrainConfig.load` of a run (``--config``).
        **given: :class:`TrainConfig` fields.

    Raises:
        UsageError: unknown recipe or setting, or a value out of range.
    """
    given = {k: v for k, v in given.items() if v is not None}
    if dataset is not None:
        given["dataset"] = dataset
    settings = (base or TrainConfig()).to_dict()
    settings.update({k: given[k] for k in ("dataset", "model") if k in given})
    recipe = given.get("recipe")
    if base is None and recipe is None:
        recipe = default_recipe(settings["dataset"], settings["model"], image_shape)
    if recipe is not None:
        if recipe not in RECIPES:
            raise UsageError(f"Unknown recipe; valid: {', '.join(RECIPES)}. Received: recipe={recipe!r}")
        settings.update({f.name: f.default for f in settings_fields(recipe_only=True)}, **RECIPES[recipe])
        settings["recipe"] = recipe
    if given.get("optimizer", settings["optimizer"]) != settings["optimizer"] and "lr" not in given:
        given["lr"] = DEFAULT_LR[given["optimizer"]] if given["optimizer"] in DEFAULT_LR else settings["lr"]
    settings.update(given)
    return TrainConfig.from_dict(settings)


def describe_recipe(name: str) -> str:
    """A recipe's changes to the baseline in one line, e.g. ``"lr 0.005, lr_schedule onecycle, ..."``.

    Raises:
        KeyError: ``name`` is not in :data:`RECIPES`.
    """
    changes = RECIPES[name]
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in changes.items()) or "-"


def describe_recipes() -> str:
    """The recipes, the baseline's settings and the defaults table, as ``kcnn recipes`` prints them."""
    base = TrainConfig()
    lines = ["recipe        for / changes to the baseline"]
    for name in RECIPES:
        lines.append(f"{name:<13} {PURPOSES[name]}")
        lines.append(f"{'':<13}   {describe_recipe(name)}")
    lines.append("")
    lines.append("baseline: " + ", ".join(f"{f.name} {getattr(base, f.name)}" for f in settings_fields(True)))
    lines.append("")
    lines.append("default recipe without --recipe (first matching row):")
    width = max(len(model or "any") for _, model, _, _ in DEFAULT_RECIPES)
    lines.append(f"dataset        {'model':<{width}} channels  recipe")
    for dataset, model, channels, recipe in DEFAULT_RECIPES:
        lines.append(f"{dataset or 'any':<14} {model or 'any':<{width}} {channels or 'any':<9} {recipe}")
    return "\n".join(lines)
