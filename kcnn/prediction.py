"""Prediction: any real image in, class names and probabilities out (the API of ``kcnn predict``).

Imports Keras and PIL only: no TensorFlow, TFDS or matplotlib.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from kcnn import metadata
from kcnn.errors import DataError, UsageError
from kcnn.images import ImageError, find_images, read_image, to_model_input

log = logging.getLogger(__name__)


class ModelFileError(DataError):
    """A model file is missing, corrupt, or not an image classifier; the message names it."""


@dataclasses.dataclass
class Classifier:
    """A loaded ``.keras`` classifier and what is needed to feed it.

    Attributes:
        path: the ``.keras`` file.
        name: short name shown in results (file stem, or run folder name).
        model: the ``keras.Model``; ``(batch, H, W, C)`` uint8 -> ``(batch, classes)``.
        class_names: output order (:func:`read_card`), or "0".."N-1" when nothing names them.
        input_shape: ``(H, W, C)``.
        dataset: TFDS name or folder the model was trained on, or None.
        input_rule: how an image is brought to the input (:data:`kcnn.metadata.INPUT_RULES`).
        settings: the settings of the run that trained it (:func:`read_card`), or ``{}``.
    """

    path: Path
    name: str
    model: object
    class_names: list
    input_shape: tuple
    dataset: str | None
    input_rule: str = "colour"
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def digit_style(self) -> bool:
        """Gray digits, fitted the MNIST way (:func:`kcnn.images.prepare_digit`)."""
        return self.input_rule == "digits"


def shipped_models_dir() -> Path | None:
    """Where the shipped models are: ``$KCNN_MODELS_DIR``, the source tree's
    ``saved_models/``, or ``<prefix>/share/kcnn/saved_models`` of a wheel install."""
    candidates = [os.environ.get("KCNN_MODELS_DIR"),
                  Path(__file__).resolve().parents[1] / "saved_models",
                  Path(sys.prefix) / "share" / "kcnn" / "saved_models"]
    for candidate in candidates:
        if candidate and list(Path(candidate).glob("*.keras")):
            return Path(candidate)
    return None


def shipped_models() -> list[Path]:
    """The shipped ``.keras`` files, sorted by name (empty if none are installed)."""
    folder = shipped_models_dir()
    return sorted(folder.glob("*.keras")) if folder else []


def read_card(path: Path) -> dict:
    """What is known of a model file, as ``{"dataset", "class_names", "input_rule", "settings"}`` (each
    may be missing): the metadata inside the file (:mod:`kcnn.metadata`), else its model card
    ``<stem>.json`` beside it, else its run folder's ``config.json``; ``{}`` for none."""
    inside = metadata.read(path)
    if inside is not None:
        return {"dataset": inside.get("dataset"), "class_names": inside.get("class_names"),
                "input_rule": inside.get("input", {}).get("rule"),
                "settings": inside.get("card", {}).get("settings", {})}
    card = path.with_suffix(".json")
    if card.exists():
        return json.loads(card.read_text())
    config = path.parent / "config.json"
    if config.exists():
        record = json.loads(config.read_text())
        dataset = record.get("dataset", {})
        return {"dataset": dataset.get("name"), "class_names": dataset.get("class_names"),
                "settings": record.get("settings", {})}
    return {}


def load_classifier(path: str | Path) -> Classifier:
    """Load a ``.keras`` image classifier with Keras' ``safe_mode`` on.

    Raises:
        ModelFileError: missing file, not a ``.keras`` file, corrupt, or not a
            classifier (one ``(batch, H, W, 1|3)`` input, one ``(batch, N)``
            output), or a card whose class names do not match the output.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if path.suffix != ".keras":
        raise ModelFileError(f"{path}: not a .keras model file")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: cannot load as a Keras model: not a Keras model file (a .keras file is a "
                             f"zip archive; this is not one)")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for bad archives
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ModelFileError(f"{path}: cannot load as a Keras model ({first})") from None
    ins, outs = getattr(model, "inputs", None) or [], getattr(model, "outputs", None) or []
    if (len(ins) != 1 or len(outs) != 1 or len(ins[0].shape) != 4 or ins[0].shape[-1] not in (1, 3)
            or None in ins[0].shape[1:] or len(outs[0].shape) != 2 or (outs[0].shape[-1] or 0) < 2):
        got = f"inputs {[tuple(t.shape) for t in ins]}, outputs {[tuple(t.shape) for t in outs]}"
        raise ModelFileError(f"{path}: not an image classifier: expected one (batch, H, W, 1|3) input "
                             f"and one (batch, classes) output; got {got}")
    num_classes = int(outs[0].shape[-1])
    input_shape = tuple(int(d) for d in ins[0].shape[1:])
    card = read_card(path)
    names = card.get("class_names")
    if not names:
        log.warning(f"{path}: no class names in the file or beside it; its classes are shown as 0..{num_classes - 1}")
        names = [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ModelFileError(f"{path}: its card lists {len(names)} class names but the model "
                             f"outputs {num_classes} classes")
    name = path.parent.name if path.stem == "model" else path.stem
    rule = card.get("input_rule") or metadata.input_rule(card.get("dataset"), input_shape[-1])
    return Classifier(path=path, name=name, model=model, class_names=list(names), input_shape=input_shape,
                      dataset=card.get("dataset"), input_rule=rule, settings=card.get("settings") or {})


def load_classifiers(paths=()) -> list[Classifier]:
    """:func:`load_classifier` of each of ``paths``, or of every shipped model when there are none.

    Raises:
        ModelFileError: a file cannot be used, or none is given and none is shipped.
    """
    paths = list(paths) or shipped_models()
    if not paths:
        raise ModelFileError("no model given and no shipped models found in saved_models/")
    return [load_classifier(path) for path in paths]


def _probabilities(model, batch: np.ndarray) -> np.ndarray:
    out = np.asarray(keras.ops.convert_to_numpy(model(batch, training=False)), dtype=np.float64)
    if out.min() < 0 or not np.allclose(out.sum(axis=1), 1.0, atol=1e-3):  # logits: softmax them
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    return out


def _top_k(probs: np.ndarray, names: list, k: int) -> list[list[dict]]:
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[{"label": names[j], "probability": float(p[j])} for j in row] for p, row in zip(probs, order)]


def predict(inputs, models=None, *, top_k: int = 1, batch_size: int = 256, progress=None,
            on_error=None) -> list[dict]:
    """Classify images with one or more models.

    Args:
        inputs: paths (files, folders, globs) as ``str``/``Path``, or a uint8
            array ``(batch, H, W, C)``, or a list of arrays/PIL images.
        models: ``.keras`` paths or :class:`Classifier` objects; None = every
            shipped model (``saved_models/``).
        top_k: how many classes to list per image (clipped to the class count).
        batch_size: images read and predicted at a time.
        progress: optional callable ``progress(n)`` called after each batch
            with the number of images done in it.
        on_error: optional callable ``on_error(message)`` for an input that
            failed; by default failures are collected in the result list as
            ``{"path", "error"}`` entries.

    Returns:
        One dict per image per model, in input order: ``path``, ``model``,
        ``label`` (top-1 class name), ``probability`` (its probability), and
        ``top_k`` (list of ``{label, probability}``, best first).

    Raises:
        ModelFileError: a model file cannot be used, or no model was given and
            none is shipped.
        UsageError: ``top_k`` or ``batch_size`` below 1.
    """
    if top_k < 1 or batch_size < 1:
        raise UsageError(f"top_k and batch_size must be >= 1. Received: top_k={top_k}, batch_size={batch_size}")
    if models is None:
        models = shipped_models()
        if not models:
            raise ModelFileError("no model given and no shipped models found in saved_models/; "
                                 "pass --model FILE.keras")
    classifiers = [m if isinstance(m, Classifier) else load_classifier(m) for m in models]

    results: list[dict] = []

    def fail(message):
        if on_error is not None:
            on_error(message)
        else:
            results.append({"path": message.split(": ", 1)[0], "error": message})

    items = _as_items(inputs, fail)
    for start in range(0, len(items), batch_size):
        chunk, read = items[start:start + batch_size], []  # read: (key, PIL image or error message)
        for key, source in chunk:
            try:
                read.append((key, read_image(source) if isinstance(source, Path) else _as_pil(source)))
            except ImageError as e:  # path errors already start with the path
                read.append((key, str(e) if isinstance(source, Path) else f"{key}: {e}"))
        images = [im for _, im in read if not isinstance(im, str)]
        per_model = []
        for clf in classifiers if images else []:
            batch = np.stack([to_model_input(im, clf.input_shape, clf.digit_style) for im in images])
            per_model.append(_top_k(_probabilities(clf.model, batch), clf.class_names, top_k))
        done = 0
        for key, im in read:  # results in input order, failures where they occurred
            if isinstance(im, str):
                fail(im)
                continue
            for clf, tops in zip(classifiers, per_model):
                top = tops[done]
                results.append({"path": key, "model": clf.name, "label": top[0]["label"],
                                "probability": top[0]["probability"], "top_k": top})
            done += 1
        if progress is not None:
            progress(len(chunk))
    return results


def _as_items(inputs, fail) -> list[tuple[str, object]]:
    if isinstance(inputs, np.ndarray) and inputs.ndim == 4:
        return [(f"array[{i}]", a) for i, a in enumerate(inputs)]
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths = [x for x in inputs if isinstance(x, (str, Path))]
    others = [(f"array[{i}]", x) for i, x in enumerate(inputs) if not isinstance(x, (str, Path))]
    files, errors = find_images(paths)
    for message in errors:
        fail(message)
    return [(str(p), p) for p in files] + others


def _as_pil(x):
    if isinstance(x, Image.Image):
        return x
    a = np.asarray(x)
    if a.dtype != np.uint8:
        raise ImageError(f"array input must be uint8 (H, W) or (H, W, 1|3); got {a.dtype} {a.shape}")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ImageError(f"array input must be uint8 (H, W) or (H, W, 1|3); got {a.dtype} {a.shape}")
    return Image.fromarray(a)
