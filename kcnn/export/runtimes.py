"""Run an exported file in its own runtime, as its users will: Keras for ``.keras``, ONNX Runtime for
``.onnx``, the LiteRT interpreter (``ai-edge-litert``) for ``.tflite`` and plain PyTorch for ``.pt2``.

The export checks and ``scripts/bench_export.py`` call every format through :func:`load_runtime`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from kcnn.errors import UsageError
from kcnn.quiet import native_notices_hidden

if TYPE_CHECKING:
    import numpy as np

def cpu_threads() -> int:
    """The CPU cores this process may use (its affinity), which each runtime is given."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Runtime:
    """An exported classifier loaded in its runtime: ``runtime(images)`` maps ``(N, H, W, C)`` uint8 to
    ``(N, num_classes)`` float32 probabilities, in calls of at most ``batch`` images.

    Attributes:
        name: the runtime and its version, e.g. ``"ONNX Runtime 1.32.0"``.
    """

    name = ""

    def __init__(self, path: Path):
        self.path = path

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, images: np.ndarray, batch: int = 500) -> np.ndarray:
        import numpy as np

        return np.concatenate([np.asarray(self.predict_batch(images[i:i + batch]), dtype=np.float32)
                               for i in range(0, len(images), batch)])


class KerasRuntime(Runtime):
    def __init__(self, path: Path):
        super().__init__(path)
        import keras

        self.name = f"Keras {keras.__version__} ({keras.backend.backend()})"
        self.model = keras.saving.load_model(path, compile=False)
        self._no_grad = _no_grad()

    def predict_batch(self, images):
        import keras

        with self._no_grad():
            return keras.ops.convert_to_numpy(self.model(images, training=False))


class OnnxRuntime(Runtime):
    def __init__(self, path: Path):
        super().__init__(path)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = cpu_threads()
        self.name = f"ONNX Runtime {onnxruntime.__version__}"
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input, self.output = self.session.get_inputs()[0].name, self.session.get_outputs()[0].name

    def predict_batch(self, images):
        return self.session.run([self.output], {self.input: images})[0]


class LiteRTRuntime(Runtime):
    """The LiteRT interpreter; the batch dimension is resized to each call's (the file is exported at 1)."""

    def __init__(self, path: Path):
        super().__init__(path)
        from importlib.metadata import version

        from ai_edge_litert.interpreter import Interpreter

        self.name = f"LiteRT {version('ai-edge-litert')}"
        with native_notices_hidden():  # the XNNPACK delegate's creation notice
            self.interpreter = Interpreter(model_path=str(path), num_threads=cpu_threads())
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None

    def predict_batch(self, images):
        if len(images) != self.batch:
            self.interpreter.resize_tensor_input(self.input["index"], [len(images), *images.shape[1:]])
            with native_notices_hidden():
                self.interpreter.allocate_tensors()
            self.batch = len(images)
        self.interpreter.set_tensor(self.input["index"], images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()


class TorchExportRuntime(Runtime):
    def __init__(self, path: Path):
        super().__init__(path)
        import torch

        self.name = f"torch.export (torch {torch.__version__})"
        self.module = torch.export.load(str(path)).module()
        self._torch = torch

    def predict_batch(self, images):
        import numpy as np

        with self._torch.no_grad():
            return self.module(self._torch.from_numpy(np.ascontiguousarray(images))).numpy()


def _no_grad():
    import contextlib

    import keras

    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad
    return contextlib.nullcontext


_CLASSES = {".keras": KerasRuntime, ".onnx": OnnxRuntime, ".tflite": LiteRTRuntime, ".pt2": TorchExportRuntime}


def load_runtime(path: str | Path) -> Runtime:
    """Load ``path`` in the runtime of its suffix (:data:`RUNTIMES`).

    Raises:
        UsageError: an unknown suffix.
    """
    path = Path(path)
    if path.suffix not in _CLASSES:
        raise UsageError(f"{path}: no runtime for {path.suffix or 'a file without a suffix'}; "
                         f"expected one of {', '.join(_CLASSES)}")
    return _CLASSES[path.suffix](path)
