"""LiteRT (``.tflite``, for Android, iOS and microcontrollers): Keras' ``model.export(format="litert")``
on the TensorFlow backend, which runs TensorFlow's LiteRT converter, float32 or full-integer int8.

kcnn trains on torch, and Keras picks its backend once per process, so the conversion runs in a child
Python with ``KERAS_BACKEND=tensorflow`` (:mod:`kcnn.export.litert_convert`) on the model saved with
channels_last feature maps. The other path, ``litert-torch`` on the torch backend, would add
``transformers`` and a dozen other packages; TensorFlow is already one of kcnn's dependencies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from kcnn.errors import DataError

if TYPE_CHECKING:
    import numpy as np


def write(model, path: str | Path, model_metadata: dict | None = None, calibration: np.ndarray | None = None) -> dict:
    """Write ``model`` as a LiteRT flatbuffer to ``path``: float32, or full-integer int8 (uint8 input,
    int8 kernels, float32 probabilities out) when ``calibration`` ``(N, H, W, C)`` uint8 images are
    given as the representative dataset. The input's batch dimension is 1 as written; the
    interpreter resizes it (``resize_tensor_input``) to any batch.

    ``model_metadata`` is not written into the flatbuffer; the model card beside the file carries it.

    Returns:
        ``{"input", "output", "batch"}`` and for int8 ``"float_bytes"`` and ``"quantization"``.

    Raises:
        DataError: the converter failed (its last line of output).
    """
    import numpy as np

    from kcnn.models import to_channels_last

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "model.keras"
        to_channels_last(model).save(source)  # TensorFlow's CPU kernels run channels_last only
        args = [str(source), str(path)]
        if calibration is not None:
            np.save(Path(tmp) / "calibration.npy", calibration)
            float_path = Path(tmp) / "float.tflite"
            args += ["--calibration", str(Path(tmp) / "calibration.npy"), "--float", str(float_path)]
        _convert(args, path)
        info = {"input": "image (1, H, W, C) uint8, batch resizable", "output": "(batch, classes) float32",
                "batch": "1 as written; resize_tensor_input sets any"}
        if calibration is not None:
            info["float_bytes"] = float_path.stat().st_size
            info["quantization"] = (f"LiteRT converter full-integer quantization (int8 kernels, uint8 input), "
                                    f"representative dataset of {len(calibration)} training images")
        return info


def _convert(args: list[str], path: Path) -> None:
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-m", "kcnn.export.litert_convert", *args], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0 or not path.is_file():
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise DataError(f"{path}: LiteRT conversion failed ({lines[-1] if lines else f'exit {done.returncode}'})")
