"""PyTorch's own format: Keras' ``model.export(format="torch")``, a ``torch.export`` ExportedProgram
(``.pt2``) that plain PyTorch runs without Keras or kcnn::

    import torch
    module = torch.export.load("cifar10_cnn3.pt2").module()
    probabilities = module(torch.from_numpy(images))   # (batch, 32, 32, 3) uint8 -> (batch, 10) float32
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from kcnn.export.to_onnx import inference_graph

if TYPE_CHECKING:
    import numpy as np

#: The name under which the file's :mod:`kcnn.metadata` travels in the archive
#: (``torch.export.load(path, extra_files={"kcnn.json": ""})`` reads it).
METADATA_NAME = "kcnn.json"


def write(model, path: str | Path, model_metadata: dict | None = None, calibration: np.ndarray | None = None) -> dict:
    """Write ``model`` as an ExportedProgram to ``path`` (``.pt2``), its batch dimension dynamic, in
    inference mode (:func:`kcnn.export.to_onnx.inference_graph`).
    ``model`` should live on the CPU (:func:`kcnn.export.export` loads it there), so that the program
    runs on any machine. ``calibration`` must be None (no int8).

    Returns:
        ``{"input", "output", "batch"}`` as the program takes and gives them.
    """
    import torch

    if calibration is not None:
        raise ValueError("torch.export files are float32 only. Received: calibration images")
    batch = torch.export.Dim("batch", min=1)
    inference_graph(model).export(str(path), format="torch", verbose=False, dynamic_shapes={0: batch})
    program = torch.export.load(str(path))  # saved again with the metadata, which Keras' exporter cannot add
    extra = {METADATA_NAME: json.dumps(model_metadata)} if model_metadata is not None else None
    with open(path, "wb") as f:  # a file object: the archive's root is "archive", not the temporary name
        torch.export.save(program, f, extra_files=extra)
    return {"input": "one positional tensor (batch, H, W, C) uint8", "output": "(batch, classes) float32",
            "batch": "any"}
