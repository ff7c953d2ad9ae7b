"""The model card of a finished run (JSON beside every exported file) and the slim ``.keras`` export.

Keras is imported by the function that needs it: the command line imports :mod:`kcnn.export` when it
starts.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import kcnn
from kcnn import files, metadata
from kcnn.config import TrainConfig, migrate_record
from kcnn.errors import DataError, UsageError


def default_destination(run_dir: str | Path, suffix: str = ".keras", tag: str = "") -> Path:
    """``RUN/export/DATASET_MODEL[_TAG]SUFFIX``, from the run's ``config.json`` (a folder dataset: its
    name), e.g. ``runs/mnist-net24k-1/export/mnist_net24k_int8.tflite``.

    Raises:
        DataError: the run has no ``config.json``.
    """
    run_dir = Path(run_dir)
    require(run_dir, "config.json")
    settings = json.loads((run_dir / "config.json").read_text())["settings"]
    name = f"{Path(settings['dataset']).name}_{settings['model']}" + (f"_{tag}" if tag else "")
    return run_dir / "export" / f"{name}{suffix}"


def require(run_dir: Path, *names: str) -> None:
    """Raise :class:`DataError` naming the first of ``names`` missing from ``run_dir``."""
    for name in names:
        if not (run_dir / name).exists():
            raise DataError(f"{run_dir / name}: missing; is the run finished?")


def model_card(run_dir: str | Path) -> dict:
    """The model card of a finished run: dataset and TFDS version, class names in output order, input
    shape and dtype, what the output is, test accuracy and loss, epochs, the command that trained it,
    the machine and backend it trained on, kcnn/keras/torch versions and the date.

    Raises:
        DataError: ``run_dir`` lacks model.keras, config.json or metrics.json (an unfinished run).
    """
    run_dir = Path(run_dir)
    require(run_dir, "model.keras", "config.json", "metrics.json")
    config = migrate_record(json.loads((run_dir / "config.json").read_text()))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    settings, dataset = config["settings"], config["dataset"]
    return {
        "format": "kcnn model card 1",
        "model": settings["model"],
        "dataset": dataset["name"],
        "tfds_version": dataset["version"],
        "class_names": dataset["class_names"],
        "input": {"shape": [None, *dataset["image_shape"]], "dtype": "uint8",
                  "range": "0..255, raw pixels; the model scales them itself"},
        "output": {"shape": [None, len(dataset["class_names"])],
                   "meaning": "class probabilities (softmax), in class_names order"},
        "test_accuracy": metrics["test_accuracy"],
        "test_loss": metrics["test_loss"],
        **{k: v for k, v in metrics.items() if k.startswith("test_accuracy_tta_")},  # with test-time augmentation
        "epochs": metrics["epochs"],
        "command": TrainConfig.from_dict(settings).command(),
        "settings": settings,
        "versions": {k: config["versions"].get(k) for k in ("kcnn", "keras", "backend", "torch", "tensorflow")},
        "trained_on": config.get("resolved", {}).get("machine"),  # None for runs from before it was recorded
        "exported_by": f"kcnn {kcnn.__version__}",
        "date": datetime.date.today().isoformat(),
    }


def export_run(run_dir: str | Path, dest: str | Path) -> tuple[Path, Path]:
    """Write ``dest`` (``.keras``, weights only, no optimizer state, channels_last feature maps so
    that it predicts under every Keras backend, see :func:`kcnn.models.to_channels_last`) and
    ``dest`` with ``.json``, its :func:`model_card`.

    Raises:
        DataError: ``run_dir`` lacks model.keras, config.json or metrics.json (an unfinished run).
        UsageError: ``dest`` does not end in ``.keras``.
    """
    import keras

    run_dir, dest = Path(run_dir), Path(dest)
    if dest.suffix != ".keras":
        raise UsageError(f"export destination must end in .keras. Received: dest={str(dest)!r}")
    check_writable(dest)
    card = model_card(run_dir)
    from kcnn.models import to_channels_last

    # channels_last: TensorFlow's CPU kernels may not run the channels_first layers torch trains with
    model = to_channels_last(keras.saving.load_model(run_dir / "model.keras", compile=False))
    with files.atomic_path(dest) as tmp:
        model.save(tmp)  # uncompiled: weights only, no optimizer state
        metadata.write(tmp, card_metadata(card))  # the file alone names its classes and input rule
    return dest, files.write_json(card_path_of(dest), card, sort_keys=False)


def card_path_of(dest: str | Path) -> Path:
    """Where the model card of an exported file goes: ``X.json`` beside ``X.keras`` (as the shipped
    models and :func:`kcnn.prediction.read_card` have it), ``X.onnx.json`` beside ``X.onnx`` and so on,
    so that the formats of one run, exported into one folder, keep a card each."""
    dest = Path(dest)
    return dest.with_suffix(".json") if dest.suffix == ".keras" else dest.with_name(dest.name + ".json")



def check_writable(dest: Path) -> None:
    """Raise :class:`UsageError` unless ``dest``'s folder exists or can be made, and takes new files.

    Checked before an export's work, so that a bad destination costs no conversion."""
    folder = Path(dest).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{dest}: cannot write there ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{dest}: cannot write there (the folder {folder} is not writable)")
    if Path(dest).is_dir():
        raise UsageError(f"{dest}: is a folder; give a file name")


def card_metadata(card: dict) -> dict:
    """:func:`kcnn.metadata.make` of a model card: what an exported file carries inside."""
    summary = {k: card[k] for k in ("model", "command", "test_accuracy", "test_loss", "epochs")}
    summary["settings"] = migrate_record(card)["settings"]
    return metadata.make(card["class_names"], card["input"]["shape"][1:], card["dataset"], summary)
