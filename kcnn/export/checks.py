"""What every export is checked on before its file is kept: the images (the run's test split, else
random ones), the calibration images of int8 quantization (the run's training split), and the
comparison of the exported file's probabilities with the ``.keras`` model's.

A float export must give the same probabilities within :data:`FLOAT_TOLERANCE` and the same top-1
class for every image. An int8 export must lose at most :func:`int8_max_drop` points of test
accuracy (issue 47's bounds: 0.1 on MNIST, 0.5 on CIFAR-10 and the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kcnn.errors import DataError, KcnnError

if TYPE_CHECKING:
    import numpy as np

#: The largest difference of any class probability, exported file against Keras, a float export may have.
FLOAT_TOLERANCE = 1e-4
#: Random images the parity check uses when the run's test split cannot be read here.
RANDOM_CHECK_IMAGES = 256
#: Training images that calibrate int8 quantization (ONNX Runtime's and LiteRT's "a few hundred").
CALIBRATION_IMAGES = 512
#: The most test accuracy, in points, int8 quantization may cost on a dataset; others: DEFAULT_INT8_MAX_DROP.
INT8_MAX_DROP = {"mnist": 0.1}
DEFAULT_INT8_MAX_DROP = 0.5
#: Batch size of the check's calls into each runtime.
CHECK_BATCH = 500


class ExportParityError(DataError):
    """The exported file's probabilities differ from the ``.keras`` model's by more than the tolerance."""


class ExportAccuracyError(ExportParityError):
    """An int8 export loses more test accuracy than its bound."""


@dataclass
class CheckImages:
    """Images to compare an export on: ``images`` ``(N, H, W, C)`` uint8, ``labels`` ``(N,)`` int64
    (None for random images) and ``description`` (e.g. "10,000 cifar10 test images")."""

    images: np.ndarray
    labels: np.ndarray | None
    description: str


def int8_max_drop(dataset: str) -> float:
    """The accuracy an int8 export of a model of ``dataset`` may lose, in points."""
    return INT8_MAX_DROP.get(dataset, DEFAULT_INT8_MAX_DROP)


def _dataset_info(clf, card: dict, data_dir: str | None):
    from kcnn import data

    return data.info_for_model(card["settings"]["dataset"], clf.input_shape, card["settings"], data_dir)


def check_images(clf, card: dict, data_dir: str | None) -> CheckImages:
    """The test split of the run's dataset as ``clf`` (a :class:`kcnn.prediction.Classifier`) was
    trained on it (:func:`kcnn.data.info_for_model`, read from ``data_dir``, never downloaded), else
    :data:`RANDOM_CHECK_IMAGES` random images."""
    import numpy as np

    from kcnn import data

    try:
        images, labels = data.load_split_arrays(_dataset_info(clf, card, data_dir), "test")
        return CheckImages(images, labels, f"{len(images):,} {card['dataset']} test images")
    except (KcnnError, OSError):
        shape = card["input"]["shape"][1:]
        images = np.random.default_rng(0).integers(0, 256, (RANDOM_CHECK_IMAGES, *shape), dtype=np.uint8)
        return CheckImages(images, None, f"{RANDOM_CHECK_IMAGES} random images ({card['dataset']} is not readable here)")


def calibration_images(clf, card: dict, data_dir: str | None) -> np.ndarray:
    """The first :data:`CALIBRATION_IMAGES` training images of the run's dataset (all of a smaller
    one), ``(N, H, W, C)`` uint8.

    Raises:
        DataError: the dataset cannot be read from ``data_dir`` (int8 needs real images to calibrate).
    """
    from kcnn import data

    try:
        info = _dataset_info(clf, card, data_dir)
        return data.load_split_arrays(info, f"train[:{min(CALIBRATION_IMAGES, info.num_train)}]")[0]
    except (KcnnError, OSError) as e:
        raise DataError(f"int8 quantization calibrates on the run's training images, and {card['dataset']} "
                        f"cannot be read here ({str(e).splitlines()[0]}); give --data-dir") from None


def compare(got: np.ndarray, expected: np.ndarray, labels: np.ndarray | None, max_drop: float | None = None) -> dict:
    """An exported file's probabilities ``got`` against the ``.keras`` model's ``expected``, both
    ``(N, num_classes)``.

    Args:
        labels: ``(N,)`` true classes, or None (random images): then no accuracy is reported.
        max_drop: None for a float export (checked on :data:`FLOAT_TOLERANCE`); for int8, the
            accuracy it may lose, in points.

    Returns:
        ``{"max_abs_difference", "top1_agreement" (0..1), "tolerance" | "max_drop_points"}``, and with
        labels ``"accuracy"`` and ``"keras_accuracy"`` (0..1) and ``"accuracy_drop_points"``.
    """
    import numpy as np

    result = {"max_abs_difference": float(np.abs(got - expected).max()),
              "top1_agreement": float((got.argmax(1) == expected.argmax(1)).mean())}
    if labels is not None:
        result["accuracy"] = float((got.argmax(1) == labels).mean())
        result["keras_accuracy"] = float((expected.argmax(1) == labels).mean())
        result["accuracy_drop_points"] = round(100 * (result["keras_accuracy"] - result["accuracy"]), 4)
    if max_drop is None:
        result["tolerance"] = FLOAT_TOLERANCE
    else:
        result["max_drop_points"] = max_drop
    return result


def passed(result: dict) -> bool:
    """Whether a :func:`compare` result keeps the file: a float one within tolerance with every top-1
    the same; an int8 one within its accuracy bound."""
    if "tolerance" in result:
        return result["max_abs_difference"] <= result["tolerance"] and result["top1_agreement"] == 1
    return result["accuracy_drop_points"] <= result["max_drop_points"]


def describe(result: dict) -> str:
    """One line for the user: the accuracy figures of an int8 check, the differences of a float one."""
    where = f"{result['runtime']} against Keras on {result['images']}"
    same = f"same top-1 class for {result['top1_agreement']:.2%}"
    if "tolerance" in result:
        return (f"{where}: max |difference| of a probability {result['max_abs_difference']:.1e} "
                f"(tolerance {result['tolerance']:g}), {same}")
    return (f"{where}: accuracy {result['accuracy']:.2%} against {result['keras_accuracy']:.2%} "
            f"({0.0 - result['accuracy_drop_points']:+.2f} points, bound -{result['max_drop_points']:g}), {same}")
