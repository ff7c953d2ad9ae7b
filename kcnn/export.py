"""Export a finished run as a shippable model: a slim ``.keras`` file and its model card (JSON)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import kcnn
from kcnn import files
from kcnn.config import TrainConfig


def export_run(run_dir: str | Path, dest: str | Path) -> tuple[Path, Path]:
    """Write ``dest`` (``.keras``, weights only, no optimizer state, channels_last feature maps so
    that it predicts under every Keras backend, see :func:`kcnn.models.to_channels_last`) and
    ``dest`` with ``.json``.

    The card holds: dataset and TFDS version, class names in output order, input
    shape and dtype, what the output is, test accuracy and loss, epochs, the
    command that trained it, the machine it trained on, kcnn/keras/torch versions and the date.

    Raises:
        FileNotFoundError: ``run_dir`` lacks model.keras, config.json or metrics.json
            (an unfinished run).
        ValueError: ``dest`` does not end in ``.keras``.
    """
    import keras

    run_dir, dest = Path(run_dir), Path(dest)
    if dest.suffix != ".keras":
        raise ValueError(f"export destination must end in .keras. Received: dest={str(dest)!r}")
    for name in ("model.keras", "config.json", "metrics.json"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name}: missing; is the run finished?")
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    from kcnn.models import to_channels_last

    # channels_last: TensorFlow's CPU kernels may not run the channels_first layers torch trains with
    model = to_channels_last(keras.saving.load_model(run_dir / "model.keras", compile=False))
    with files.atomic_path(dest) as tmp:
        model.save(tmp)  # uncompiled: weights only, no optimizer state
    settings = config["settings"]
    card = {
        "format": "kcnn model card 1",
        "model": model.name,
        "dataset": config["dataset"]["name"],
        "tfds_version": config["dataset"]["version"],
        "class_names": config["dataset"]["class_names"],
        "input": {"shape": [None, *config["dataset"]["image_shape"]], "dtype": "uint8",
                  "range": "0..255, raw pixels; the model scales them itself"},
        "output": {"shape": [None, len(config["dataset"]["class_names"])],
                   "meaning": "class probabilities (softmax), in class_names order"},
        "test_accuracy": metrics["test_accuracy"],
        "test_loss": metrics["test_loss"],
        "epochs": metrics["epochs"],
        "command": TrainConfig.from_dict(settings, config["dataset"]["image_shape"]).command(),
        "settings": settings,
        "versions": {k: config["versions"].get(k) for k in ("kcnn", "keras", "torch", "tensorflow")},
        "trained_on": config.get("resolved", {}).get("machine"),  # None for runs from before it was recorded
        "exported_by": f"kcnn {kcnn.__version__}",
        "date": datetime.date.today().isoformat(),
    }
    return dest, files.write_json(dest.with_suffix(".json"), card, sort_keys=False)
