"""Export a finished run as a shippable model and its model card (JSON): a slim ``.keras`` file, or
an ONNX graph checked against the ``.keras`` model with ONNX Runtime.

Keras, ONNX and the data modules are imported by the functions that need them: the command line
reads :data:`FORMATS` when it starts.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import logging
from pathlib import Path

import kcnn
from kcnn import files, metadata
from kcnn.config import TrainConfig, migrate_record
from kcnn.errors import DataError, KcnnError, UsageError

log = logging.getLogger(__name__)

#: ``kcnn export --format``: Keras' own file, or ONNX (opset of the torch exporter) for ONNX Runtime.
FORMATS = ("keras", "onnx")
#: The largest difference of any class probability, ONNX Runtime against Keras, an ONNX export may have.
ONNX_TOLERANCE = 1e-4
#: Random images the parity check uses when the run's test split cannot be read here.
RANDOM_CHECK_IMAGES = 256
#: Name of the ONNX graph's output (the torch exporter names it by a node number).
ONNX_OUTPUT = "probabilities"


class ExportParityError(DataError):
    """ONNX Runtime's probabilities differ from the ``.keras`` model's by more than :data:`ONNX_TOLERANCE`."""


def default_destination(run_dir: str | Path, fmt: str = "keras") -> Path:
    """``RUN/export/DATASET_MODEL.{keras,onnx}``, from the run's ``config.json`` (a folder dataset: its name).

    Raises:
        DataError: the run has no ``config.json``.
    """
    run_dir = Path(run_dir)
    _require(run_dir, "config.json")
    settings = json.loads((run_dir / "config.json").read_text())["settings"]
    return run_dir / "export" / f"{Path(settings['dataset']).name}_{settings['model']}.{fmt}"


def _require(run_dir: Path, *names: str) -> None:
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
    _require(run_dir, "model.keras", "config.json", "metrics.json")
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
    card = model_card(run_dir)
    from kcnn.models import to_channels_last

    # channels_last: TensorFlow's CPU kernels may not run the channels_first layers torch trains with
    model = to_channels_last(keras.saving.load_model(run_dir / "model.keras", compile=False))
    with files.atomic_path(dest) as tmp:
        model.save(tmp)  # uncompiled: weights only, no optimizer state
        metadata.write(tmp, card_metadata(card))  # the file alone names its classes and input rule
    return dest, files.write_json(dest.with_suffix(".json"), card, sort_keys=False)


def card_metadata(card: dict) -> dict:
    """:func:`kcnn.metadata.make` of a model card: what an exported file carries inside."""
    summary = {k: card[k] for k in ("model", "command", "test_accuracy", "test_loss", "epochs")}
    summary["settings"] = migrate_record(card)["settings"]
    return metadata.make(card["class_names"], card["input"]["shape"][1:], card["dataset"], summary)


def export_onnx(run_dir: str | Path, dest: str | Path, data_dir: str | None = None) -> tuple[Path, Path]:
    """Write ``dest`` (``.onnx``): the run's model as an ONNX graph through Keras'
    ``model.export(format="onnx")`` on the torch backend, preprocessing inside. Input ``image``
    ``(batch, H, W, C)`` uint8 as the ``.keras`` file takes, any batch size; output
    ``probabilities`` ``(batch, num_classes)`` float32. Beside it ``dest`` with ``.json``: the
    :func:`model_card`, with the input and output names and the parity check's figures.

    The parity check runs ONNX Runtime and the ``.keras`` model on the run's test split (read from
    ``data_dir``, never downloaded) or, where that cannot be read here, :data:`RANDOM_CHECK_IMAGES`
    random images, and compares the probabilities. ``dest`` is written only when it passes.

    Raises:
        DataError: an unfinished run.
        UsageError: ``dest`` does not end in ``.onnx``; a backend other than torch; ``onnx`` or
            ``onnxruntime`` not installed.
        ExportParityError: a probability differs by more than :data:`ONNX_TOLERANCE`, or a top-1 class.
    """
    import keras

    run_dir, dest = Path(run_dir), Path(dest)
    if dest.suffix != ".onnx":
        raise UsageError(f"ONNX export destination must end in .onnx. Received: dest={str(dest)!r}")
    if keras.backend.backend() != "torch":  # Keras' tensorflow and jax exporters need tf2onnx or jax2onnx
        raise UsageError(f"ONNX export runs on the torch backend. Received: backend={keras.backend.backend()!r}")
    for package in ("onnx", "onnxruntime"):  # write_onnx's and onnx_parity's: a message, not a traceback
        if importlib.util.find_spec(package) is None:
            raise UsageError(f"ONNX export needs {package}: pip install 'kcnn[onnx]'")
    from kcnn.prediction import load_classifier

    card = model_card(run_dir)
    clf = load_classifier(run_dir / "model.keras")
    images, source = _check_images(clf, card, data_dir or card["settings"].get("data_dir"))
    expected = clf.model.predict(images, batch_size=500, verbose=0)  # also marks the model called, as export needs
    with files.atomic_path(dest) as tmp:
        opset = write_onnx(clf.model, tmp, card_metadata(card))
        parity = onnx_parity(tmp, images, expected)
        parity["images"] = source
        log.info(f"ONNX Runtime {parity['onnxruntime']} against Keras on {source}: max |difference| of a probability "
            f"{parity['max_abs_difference']:.2e}, same top-1 class for {parity['top1_agreement']:.2%}")
        if parity["max_abs_difference"] > ONNX_TOLERANCE or parity["top1_agreement"] < 1:
            raise ExportParityError(f"{dest}: not written; ONNX Runtime's probabilities differ from Keras' by "
                                    f"{parity['max_abs_difference']:.2e} (tolerance {ONNX_TOLERANCE:g}) or in top-1")
    card.update(format="kcnn model card 1 (onnx)",
                onnx={"input": "image", "output": ONNX_OUTPUT, "opset": opset, "parity": parity})
    return dest, files.write_json(dest.with_suffix(".json"), card, sort_keys=False)


def _check_images(clf, card: dict, data_dir: str | None):
    """``(images uint8 (N, H, W, C), description)``: the test split of the run's dataset as ``clf`` was
    trained on it (:func:`kcnn.data.info_for_model`), else random images."""
    import numpy as np

    from kcnn import data

    try:
        info = data.info_for_model(card["settings"]["dataset"], clf.input_shape, card["settings"], data_dir)
        images = data.load_split_arrays(info, "test")[0]
        return images, f"{len(images):,} {card['dataset']} test images"
    except (KcnnError, OSError):
        shape = card["input"]["shape"][1:]
        images = np.random.default_rng(0).integers(0, 256, (RANDOM_CHECK_IMAGES, *shape), dtype=np.uint8)
        return images, f"{RANDOM_CHECK_IMAGES} random images ({card['dataset']} is not readable here)"


def write_onnx(model, path: str | Path, model_metadata: dict | None = None) -> int:
    """Keras' ONNX export of ``model`` (on torch: TorchScript tracing, the batch dimension dynamic)
    into ``path``, its input named ``image`` (the Keras input's name) and its output
    :data:`ONNX_OUTPUT`. ``model`` must have been called once (Keras' export needs it).
    ``model_metadata`` (:mod:`kcnn.metadata`) goes into the graph's ``metadata_props``:
    ``class_names`` (a JSON list), ``input_rule``, ``input`` (shape and dtype), ``dataset`` and
    ``kcnn`` (the whole JSON), which ONNX Runtime gives as ``session.get_modelmeta().custom_metadata_map``.

    Returns:
        The graph's ONNX opset version."""
    import warnings

    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python ints in Keras' shape code
        model.export(str(path), format="onnx", verbose=False)
    graph = onnx.load(str(path))
    old = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = [ONNX_OUTPUT if name == old else name for name in node.output]
    graph.graph.output[0].name = ONNX_OUTPUT
    if model_metadata is not None:
        onnx.helper.set_model_props(graph, {
            "class_names": json.dumps(model_metadata["class_names"]), "input_rule": model_metadata["input"]["rule"],
            "input": f"image: (batch, {', '.join(map(str, model_metadata['input']['shape']))}) uint8, raw pixels",
            "dataset": str(model_metadata["dataset"]), "kcnn": json.dumps(model_metadata)})
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))


def onnx_parity(path: str | Path, images, expected) -> dict:
    """ONNX Runtime's probabilities for ``images`` ``(N, H, W, C)`` uint8 against ``expected``
    ``(N, num_classes)`` (the Keras model's), in batches of 500.

    Returns:
        ``{"max_abs_difference", "top1_agreement" (share, 0..1), "tolerance", "onnxruntime" (version)}``.
    """
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run([ONNX_OUTPUT], {"image": images[i:i + 500]})[0]
                          for i in range(0, len(images), 500)])
    return {"max_abs_difference": float(np.abs(got - expected).max()),
            "top1_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
            "tolerance": ONNX_TOLERANCE, "onnxruntime": onnxruntime.__version__}
