"""Export a finished run as a shippable model: a slim ``.keras`` file and its model card (JSON)."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import kcnn


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
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.partial.keras")
    model.save(tmp)  # uncompiled: weights only, no optimizer state
    os.replace(tmp, dest)
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
        "command": settings.get("command") or _command(settings),
        "settings": settings,
        "versions": {k: config["versions"].get(k) for k in ("kcnn", "keras", "torch", "tensorflow")},
        "trained_on": config.get("resolved", {}).get("machine"),  # None for runs from before it was recorded
        "exported_by": f"kcnn {kcnn.__version__}",
        "date": datetime.date.today().isoformat(),
    }
    card_path = dest.with_suffix(".json")
    tmp_card = card_path.with_name(f".{card_path.name}.tmp")
    tmp_card.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp_card, card_path)
    return dest, card_path


def _command(s: dict) -> str:
    """The ``kcnn train`` command line equivalent to a run's settings."""
    parts = ["kcnn", "train", s["dataset"]] + (["--recipe", s["recipe"]] if s.get("recipe") else [])
    parts += ["--model", s["model"], "--epochs", str(s["epochs"]),
             "--batch-size", str(s["batch_size"]), "--optimizer", s["optimizer"],
             "--lr-schedule", s["lr_schedule"], "--val-split", str(s["val_split"]),
             "--seed", str(s["seed"])]
    if s.get("lr") is not None:
        parts += ["--lr", str(s["lr"])]
    for key in ("weight_decay", "label_smoothing", "ema", "mixed_precision"):  # left out when 0 or None
        if s.get(key):
            parts += [f"--{key.replace('_', '-')}", str(s[key])]
    if s.get("whiten"):
        parts.append("--whiten")
    if isinstance(s.get("augment"), str):
        parts += ["--augment", s["augment"]]
    elif s.get("augment") is False:
        parts += ["--augment", "none"]
    return " ".join(parts)
