"""What kcnn offers by name, without importing Keras, torch or TensorFlow: the architectures'
table and the datasets kcnn is tuned for, so that ``kcnn models`` answers at once and a typo in a
model or dataset name is answered with a suggestion before any heavy import.

``tests/test_catalog.py`` builds every registered model and checks this table against it.
"""

from __future__ import annotations

import difflib
import os

from kcnn.config import default_recipe
from kcnn.errors import UsageError

#: name: (the reference tutorial or paper it comes from, its reference input (H, W, C), the dataset of that
#: input, trainable parameters with 10 classes at that input, as the tutorials count them: batch
#: norm's moving statistics left out). kcnn.models.register_model holds the builders.
MODELS = {
    "cnn2": ("Image Classification using CNN", (32, 32, 3), "cifar10", 545_290),
    "cnn2_simple": ("Convolutional Neural Networks with PyTorch", (28, 28, 1), "mnist", 25_258),
    "cnn3": ("CNN Image Classification - MNIST & CIFAR-10", (32, 32, 3), "cifar10", 622_346),
    "net24k": ("CNN MNIST Classification with PyTorch", (28, 28, 1), "mnist", 24_488),
    "resnet9": ("ResNet-9, Page 2018 (How to Train Your ResNet)", (32, 32, 3), "cifar10", 6_573_120),
    "whitened8": ("airbench94's whitened net, Jordan 2024", (32, 32, 3), "cifar10", 1_971_328),
    "whitened8_narrow": ("airbench93's whitened net, Jordan 2024", (32, 32, 3), "cifar10", 568_704),
}
#: Datasets kcnn documents and tests; other TFDS image datasets work too.
KNOWN_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "stl10")


def describe_models() -> str:
    """The table ``kcnn models`` prints: name, parameters, input, the recipe ``kcnn train`` gives it on
    its reference dataset, and the reference."""
    width = max(map(len, MODELS))
    lines = [f"{'model':<{width}} {'parameters':>10}  {'input':<8}  {'default recipe':<22}  reference"]
    for name, (reference, shape, dataset, parameters) in MODELS.items():
        recipe = f"{default_recipe(dataset, name, shape)} ({dataset})"
        lines.append(f"{name:<{width}} {parameters:>10,}  {'x'.join(map(str, shape)):<8}  {recipe:<22}  \"{reference}\"")
    return "\n".join(lines)


def check_dataset_name(name: str) -> None:
    """Raise at once for a name that is no folder, no dataset kcnn knows, and close to one it knows
    (``mnsit``): a typo, answered before TFDS is imported. Other names go on to TFDS' registry.

    Raises:
        UsageError: ``"Unknown dataset 'mnsit'. Did you mean 'mnist'? ..."``.
    """
    if name in KNOWN_DATASETS or os.path.isdir(os.path.expanduser(name)):
        return
    close = difflib.get_close_matches(name, KNOWN_DATASETS, n=1, cutoff=0.75)
    if close:
        raise UsageError(f"Unknown dataset {name!r}. Did you mean {close[0]!r}? (kcnn is tuned for "
                         f"{', '.join(KNOWN_DATASETS)}; any TFDS image dataset or a folder of class folders "
                         f"trains too)")


def unknown_model(name: str, valid) -> UsageError:
    """The error for a model ``name`` not among ``valid``, naming the closest one:
    ``"Unknown model 'cnn4'; valid models: ... Did you mean 'cnn3'?"``."""
    close = difflib.get_close_matches(str(name), sorted(valid), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UsageError(f"Unknown model {name!r}; valid models: {', '.join(sorted(valid))}.{hint}")


def check_model_name(name: str) -> None:
    """Raise :func:`unknown_model` for a name that is not in :data:`MODELS`."""
    if name not in MODELS:
        raise unknown_model(name, MODELS)
