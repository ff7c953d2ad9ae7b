"""Export a finished run as a file that runs outside kcnn, with its model card (JSON) beside it.

Formats (``kcnn export --format``), each through the library that owns it:

- ``keras``: a slim ``.keras`` file, no optimizer state (:func:`export_run`).
- ``onnx``: Keras' ONNX export for ONNX Runtime; ``--quantize int8``: ONNX Runtime's static QDQ quantizer.
- ``litert``: Keras' LiteRT export (TensorFlow's converter) for phones and microcontrollers;
  ``--quantize int8``: full-integer quantization on a representative dataset.
- ``torch``: Keras' ``torch.export`` ExportedProgram (``.pt2``) that plain PyTorch loads.

Every exported file keeps the model's contract: input ``(batch, H, W, C)`` uint8 raw pixels,
output ``(batch, num_classes)`` float32 probabilities, preprocessing inside. Before a file is kept
it runs in its own runtime on the run's test images (:mod:`kcnn.export.checks`): a float export must
match the ``.keras`` model's probabilities, an int8 one must keep its accuracy within a bound.

Keras, the runtimes and the data modules are imported by the functions that need them: the command
line reads :data:`FORMATS` when it starts.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from kcnn import files
from kcnn.errors import DataError, UsageError
from kcnn.export import checks, to_litert, to_onnx, to_torch
from kcnn.export.card import (
    card_metadata,
    card_path_of,
    check_writable,
    default_destination,
    export_run,
    model_card,
)
from kcnn.export.checks import FLOAT_TOLERANCE, ExportAccuracyError, ExportParityError
from kcnn.export.runtimes import load_runtime
from kcnn.export.to_onnx import ONNX_OUTPUT
from kcnn.export.to_onnx import write_float as write_onnx

__all__ = ["FORMATS", "QUANTIZATIONS", "SUFFIXES", "Exported", "ExportAccuracyError", "ExportParityError",
           "FLOAT_TOLERANCE", "ONNX_OUTPUT", "card_metadata", "card_path_of", "default_destination", "export", "export_run",
           "load_runtime", "model_card", "write_onnx"]

#: ``kcnn export --format``.
FORMATS = ("keras", "onnx", "litert", "torch")
#: The file suffix of each format.
SUFFIXES = {"keras": ".keras", "onnx": ".onnx", "litert": ".tflite", "torch": ".pt2"}
#: ``kcnn export --quantize`` and the formats that take it.
QUANTIZATIONS = ("int8",)
QUANTIZABLE = ("onnx", "litert")
#: Each format's writer: ``write(model, path, model_metadata, calibration) -> dict`` for the card.
WRITERS = {"onnx": to_onnx.write, "litert": to_litert.write, "torch": to_torch.write}
#: Python packages each format needs beyond kcnn's own, and the pip extra that installs them.
REQUIRES = {"onnx": (("onnx", "onnxscript", "onnxruntime"), "onnx"), "litert": (("ai_edge_litert",), "litert"),
            "torch": ((), None)}
#: Formats written by Keras' torch exporters (``litert`` converts in a TensorFlow child process).
TORCH_BACKEND_ONLY = ("onnx", "torch")


@dataclass
class Exported:
    """What :func:`export` wrote: ``path``, its ``card_path``, its size in bytes, the float file's size
    for int8, and the check's result (:func:`kcnn.export.checks.compare`, None for ``keras``)."""

    path: Path
    card_path: Path
    size: int
    float_size: int | None = None
    check: dict | None = None

    def summary(self) -> str:
        """One line: the file, its size (and how much smaller than float32), and the check's result."""
        size = f"{self.size / 1e6:.2f} MB"
        if self.float_size:
            size += f", {self.float_size / self.size:.1f}x smaller than float32"
        return f"wrote {self.path} ({size})" + (f"; {checks.describe(self.check)}" if self.check else "")


def check_request(fmt: str, quantize: str | None, dest: str | Path | None) -> None:
    """Refuse a bad format, quantization, destination suffix, backend or missing package at once.

    Raises:
        UsageError: any of these, naming the option and, for a missing package, its pip extra.
    """
    import keras

    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if quantize is not None and (quantize not in QUANTIZATIONS or fmt not in QUANTIZABLE):
        raise UsageError(f"--quantize {quantize} applies to --format {' or '.join(QUANTIZABLE)}. "
                         f"Received: format={fmt!r}, quantize={quantize!r}")
    if dest is not None and Path(dest).suffix != SUFFIXES[fmt]:
        raise UsageError(f"{fmt} export destination must end in {SUFFIXES[fmt]}. Received: dest={str(dest)!r}")
    backend = keras.backend.backend()
    if fmt in TORCH_BACKEND_ONLY and backend != "torch":  # Keras' other exporters need tf2onnx or jax2onnx
        raise UsageError(f"{fmt} export runs on the torch backend. Received: backend={backend!r}")
    packages, extra = REQUIRES.get(fmt, ((), None))
    for package in packages:
        if importlib.util.find_spec(package) is None:
            raise UsageError(f"{fmt} export needs {package.replace('_', '-')}: pip install 'kcnn[{extra}]'")


def export(run_dir: str | Path, dest: str | Path | None = None, fmt: str = "keras", quantize: str | None = None,
           data_dir: str | None = None, max_drop: float | None = None) -> Exported:
    """Export the finished run ``run_dir`` as ``dest`` in format ``fmt`` and write its model card with
    the check's figures beside it (:func:`card_path_of`). ``dest`` defaults to
    ``RUN/export/DATASET_MODEL[_int8].SUFFIX``. ``dest`` is written only when the check passes.

    Args:
        quantize: ``"int8"`` for ``onnx`` and ``litert``: calibrated on
            :data:`~kcnn.export.checks.CALIBRATION_IMAGES` training images of the run's dataset.
        data_dir: TFDS data_dir of the run's dataset [default: the run's]; never downloaded.
        max_drop: for int8, the test accuracy the file may lose, in points [default:
            :func:`kcnn.export.checks.int8_max_drop` of the dataset].

    Raises:
        DataError: an unfinished run; int8 without readable training and test images.
        UsageError: see :func:`check_request`; an unwritable destination.
        ExportParityError: a float file's probabilities differ by more than
            :data:`~kcnn.export.checks.FLOAT_TOLERANCE` or in a top-1 class.
        ExportAccuracyError: an int8 file loses more accuracy than ``max_drop``.
    """
    check_request(fmt, quantize, dest)
    dest = Path(dest) if dest else default_destination(run_dir, SUFFIXES[fmt], quantize or "")
    check_writable(dest)
    if fmt == "keras":
        path, card_path = export_run(run_dir, dest)
        return Exported(path, card_path, path.stat().st_size)
    return _export_checked(Path(run_dir), dest, fmt, quantize, data_dir, max_drop)


def _export_checked(run_dir: Path, dest: Path, fmt: str, quantize: str | None, data_dir: str | None,
                    max_drop: float | None) -> Exported:
    import keras

    from kcnn.prediction import load_classifier

    card = model_card(run_dir)
    data_dir = data_dir or card["settings"].get("data_dir")
    with keras.device("cpu"):  # an exported file runs on any machine: trace and check it on the CPU
        clf = load_classifier(run_dir / "model.keras")
        calibration = checks.calibration_images(clf, card, data_dir) if quantize else None
        test = checks.check_images(clf, card, data_dir)
        if quantize and test.labels is None:
            raise DataError(f"{dest}: not written; an int8 export is checked on the run's test images, "
                            f"and {test.description}")
        expected = clf.model.predict(test.images, batch_size=checks.CHECK_BATCH, verbose=0)  # the reference
        if quantize and max_drop is None:
            max_drop = checks.int8_max_drop(card["dataset"])
        with files.atomic_path(dest) as tmp:
            written = WRITERS[fmt](clf.model, tmp, card_metadata(card), calibration)
            runtime = load_runtime(tmp)
            result = checks.compare(runtime(test.images, checks.CHECK_BATCH), expected, test.labels,
                                    max_drop if quantize else None)
            result.update(runtime=runtime.name, images=test.description)
            if not checks.passed(result):
                error = ExportAccuracyError if quantize else ExportParityError
                raise error(f"{dest}: not written; {checks.describe(result)}")
            size = tmp.stat().st_size
    card.update(format=f"kcnn model card 1 ({fmt}{' ' + quantize if quantize else ''})",
                **{fmt: {**written, "quantize": quantize, "check": result}})
    card_path = files.write_json(card_path_of(dest), card, sort_keys=False)
    return Exported(dest, card_path, size, written.get("float_bytes"), result)

