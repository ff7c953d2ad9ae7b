"""Backend and device selection: which accelerator the model and training step use."""

from __future__ import annotations

import re

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(device: str = "auto") -> str:
    """Turn a ``--device`` value into a concrete device name.

    Args:
        device: ``"auto"`` (CUDA when torch sees a GPU, else CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``.

    Returns:
        ``"cpu"`` or ``"cuda:N"``.

    Raises:
        ValueError: the value is not one of the forms above, or CUDA was asked
            for and torch sees no CUDA device (no silent fallback to CPU), or
            the CUDA index is out of range.
    """
    if not isinstance(device, str) or not DEVICE_PATTERN.match(device):
        raise ValueError(
            "device must be one of auto, cpu, cuda, cuda:N. "
            f"Received: device={device!r}"
        )
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was requested but torch {torch.__version__} "
            "sees no CUDA device; use --device cpu or --device auto"
        )
    index = int(device.split(":")[1]) if ":" in device else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(
            f"device {device!r} was requested but only {count} CUDA device(s) "
            f"exist (cuda:0..cuda:{count - 1})"
        )
    return f"cuda:{index}"


def describe_device(device_name: str) -> str:
    """A human name for a resolved device, for logs and results tables.

    Args:
        device_name: ``"cpu"`` or ``"cuda:N"``, as :func:`resolve_device` returns.

    Returns:
        The GPU's name as torch reports it (``"NVIDIA H100 80GB HBM3"``), or
        ``"CPU, N cores"`` with N the cores this process may use.
    """
    if device_name.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device_name)
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU, {cores} cores"


def runtime_versions() -> dict:
    """Versions of the libraries a run depends on, for logs and config files."""
    import platform

    import keras

    import kcnn

    versions = {
        "kcnn": kcnn.__version__,
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    for module in ("torch", "tensorflow", "tensorflow_datasets", "numpy"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:  # pragma: no cover - optional at predict time
            versions[module] = None
    return versions
