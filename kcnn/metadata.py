"""What a ``.keras`` file needs to be used alone: its class names, the rule that brings an image to
its input, the dataset and a model-card summary, as one JSON member of the archive itself.

A ``.keras`` file is a zip archive (Keras' ``config.json``, ``metadata.json``, ``model.weights.h5``).
kcnn adds :data:`MEMBER`; Keras reads only its own members, so the file still loads with plain
``keras.saving.load_model`` under every backend, ``safe_mode`` on (``tests/test_metadata.py``).
Keras offers no public hook for user metadata in the archive. The member is written by rewriting
the archive beside the file and renaming it into place (:mod:`kcnn.files`), so a crash leaves the
file as it was.

Input rules (:data:`INPUT_RULES`, :func:`kcnn.images.to_model_input`):
``"digits"``: gray digits fitted the MNIST way; ``"gray"``: gray, fitted into the input on black;
``"colour"``: RGB, centre-cropped to the input's aspect ratio and resized. Standard library only.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from kcnn import files

#: The archive member kcnn writes into a ``.keras`` file.
MEMBER = "kcnn.json"
#: ``format`` of the member's JSON.
FORMAT = "kcnn model metadata 1"
#: How an image is brought to the model's input (see the module docstring).
INPUT_RULES = ("digits", "gray", "colour")
#: Datasets whose gray images are prepared the MNIST way (:func:`kcnn.images.prepare_digit`).
DIGIT_DATASETS = ("mnist",)


def input_rule(dataset: str | None, channels: int) -> str:
    """The input rule of a model for ``dataset`` taking ``channels`` (1 or 3) channels."""
    if channels == 3:
        return "colour"
    return "digits" if dataset in DIGIT_DATASETS else "gray"


def make(class_names, image_shape, dataset: str | None, card: dict | None = None) -> dict:
    """The metadata of a model taking ``image_shape`` ``(H, W, C)`` uint8 images and giving
    probabilities of ``class_names`` in that order; ``card``: a model-card summary (test accuracy,
    the command that trained it, ...)."""
    return {"format": FORMAT, "class_names": [str(name) for name in class_names],
            "input": {"shape": [int(d) for d in image_shape], "dtype": "uint8",
                      "rule": input_rule(dataset, int(image_shape[-1]))},
            "dataset": dataset, "card": dict(card or {})}


def write(path: str | Path, metadata: dict) -> Path:
    """Put ``metadata`` into the ``.keras`` archive ``path`` as :data:`MEMBER` (replacing one there),
    atomically; returns ``path``."""
    path = Path(path)
    with files.atomic_path(path) as tmp:
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as target:
            for item in source.infolist():
                if item.filename != MEMBER:
                    target.writestr(item, source.read(item.filename))
            target.writestr(MEMBER, json.dumps(metadata, indent=1))
    return path


def read(path: str | Path) -> dict | None:
    """The kcnn metadata of a ``.keras`` file, or None when it has none (a file from other Keras
    code, or one kcnn wrote before it added the member) or is not a zip archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            if MEMBER not in archive.namelist():
                return None
            return json.loads(archive.read(MEMBER))
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
