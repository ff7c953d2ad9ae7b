"""ONNX: Keras' ``model.export(format="onnx")`` on the torch backend, and int8 by ONNX Runtime's
static quantizer (QDQ format, calibrated on training images).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: Name of the ONNX graph's output (the torch exporter names it by a node number).
ONNX_OUTPUT = "probabilities"
#: Images per calibration batch fed to ONNX Runtime's quantizer.
CALIBRATION_BATCH = 32


def write(model, path: str | Path, model_metadata: dict | None = None, calibration: np.ndarray | None = None) -> dict:
    """Write ``model`` as ONNX to ``path``: float32, or int8 when ``calibration`` images are given.

    Args:
        model: a Keras classifier taking ``(batch, H, W, C)`` uint8.
        model_metadata: :mod:`kcnn.metadata` of the model, written into the graph's ``metadata_props``.
        calibration: ``(N, H, W, C)`` uint8 training images; with them the float graph is quantized by
            :func:`quantize`.

    Returns:
        ``{"opset", "input", "output"}`` and for int8 ``"float_bytes"`` (the float graph's size) and
        ``"quantization"`` (how).
    """
    path = Path(path)
    if calibration is None:
        opset = write_float(model, path, model_metadata)
        return {"opset": opset, "input": "image", "output": ONNX_OUTPUT}
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "float.onnx"
        opset = write_float(model, float_path, model_metadata)
        how = quantize(float_path, path, calibration, Path(tmp))  # keeps the graph's metadata_props
        return {"opset": opset, "input": "image", "output": ONNX_OUTPUT, "float_bytes": float_path.stat().st_size,
                "quantization": how}


def inference_graph(model):
    """``model`` called with ``training=False`` inside a new functional model of the same input, and
    called once, as Keras' torch exporters need.

    Keras' ONNX and torch exporters trace ``model(x)`` without ``training``; a layer's call then takes
    the first default it meets in the call context, and ``Resizing`` (the MNIST-on-``cnn3`` input,
    :func:`kcnn.models.create_model`) declares ``training=True``: the batch norms after it would be
    traced with batch statistics. The wrapper pins inference for every layer."""
    import keras
    import numpy as np

    image = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name="image")
    graph = keras.Model(image, model(image, training=False), name=model.name)
    graph(np.zeros((1, *model.input_shape[1:]), dtype=model.inputs[0].dtype), training=False)
    return graph


def write_float(model, path: str | Path, model_metadata: dict | None = None) -> int:
    """Keras' ONNX export of ``model`` (on torch: TorchScript tracing, the batch dimension dynamic)
    into ``path``, its input named ``image`` (the Keras input's name) and its output
    :data:`ONNX_OUTPUT`, in inference mode (:func:`inference_graph`).
    ``model_metadata`` (:mod:`kcnn.metadata`) goes into the graph's ``metadata_props``:
    ``class_names`` (a JSON list), ``input_rule``, ``input`` (shape and dtype), ``dataset`` and
    ``kcnn`` (the whole JSON), which ONNX Runtime gives as ``session.get_modelmeta().custom_metadata_map``.

    Returns:
        The graph's ONNX opset version."""
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python ints in Keras' shape code
        inference_graph(model).export(str(path), format="onnx", verbose=False)
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


def quantize(float_path: Path, path: Path, calibration: np.ndarray, workdir: Path) -> str:
    """ONNX Runtime's static int8 quantization of the graph at ``float_path`` into ``path``: QDQ
    format, int8 weights per channel, uint8 activations, ranges calibrated (min-max) on
    ``calibration`` ``(N, H, W, C)`` uint8, after ONNX Runtime's recommended pre-processing (shape
    inference and graph optimization) in ``workdir``.

    Static quantization covers every kcnn network's convolutions and dense layers, weights and
    activations. ONNX Runtime's dynamic quantization is weight-only and by default quantizes MatMul and
    Gemm, the dense layers: the convolutions, most of a CNN's compute, would stay float32.

    Returns:
        A description of the quantization, for the model card.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": calibration[i:i + CALIBRATION_BATCH]}
                                 for i in range(0, len(calibration), CALIBRATION_BATCH)])

        def get_next(self):
            return next(self.batches, None)

    prepared = workdir / "prepared.onnx"
    quant_pre_process(str(float_path), str(prepared))
    quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return (f"ONNX Runtime static quantization, QDQ, int8 weights per channel, uint8 activations, "
            f"calibrated on {len(calibration)} training images")
