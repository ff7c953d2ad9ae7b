"""Backend and device selection: which accelerator the model and training step use.

Keras, torch and TensorFlow are imported inside the functions: the command line imports this
module when it starts (``--backend`` is chosen before Keras loads).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import sys

import kcnn

from kcnn.errors import UsageError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(device: str = "auto") -> str:
    """Turn a ``--device`` value into a concrete device name.

    Args:
        device: ``"auto"`` (CUDA when torch sees a GPU, else CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``.

    Returns:
        ``"cpu"`` or ``"cuda:N"``.

    Raises:
        UsageError: the value is not one of the forms above, or CUDA was asked
            for and torch sees no CUDA device (no silent fallback to CPU), or
            the CUDA index is out of range.
    """
    if not isinstance(device, str) or not DEVICE_PATTERN.match(device):
        raise UsageError(
            "device must be one of auto, cpu, cuda, cuda:N. "
            f"Received: device={device!r}"
        )
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise UsageError(
            f"device {device!r} was requested but torch {torch.__version__} "
            "sees no CUDA device; use --device cpu or --device auto"
        )
    index = int(device.split(":")[1]) if ":" in device else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise UsageError(
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

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU, {cores} cores"


def runtime_versions() -> dict:
    """Versions of the libraries a run depends on, for logs and config files."""
    import keras

    versions = {
        "kcnn": kcnn.__version__,
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    jax = ("jax",) if versions["backend"] == "jax" else ()
    for module in ("torch", "tensorflow", "tensorflow_datasets", "numpy", *jax):
        versions[module] = _installed_version(module)
    return versions


def _installed_version(module: str) -> str | None:
    """``module.__version__`` when it is imported, else its distribution's version as installed
    (``kcnn env`` need not import TensorFlow to name it); None when it is not installed."""
    if module in sys.modules:
        return getattr(sys.modules[module], "__version__", None)
    for distribution in importlib.metadata.packages_distributions().get(module, []):
        return importlib.metadata.version(distribution)
    return None


#: The Keras backends kcnn trains and predicts under (``--backend``).
BACKENDS = ("torch", "jax", "tensorflow")


def select_backend(name: str | None) -> str:
    """Make ``name`` the Keras backend of this process; call before anything imports Keras.

    Sets ``KERAS_BACKEND``. With ``name`` None, the environment's ``KERAS_BACKEND`` stays, else
    kcnn's default, torch.

    Returns:
        The backend Keras will use.

    Raises:
        UsageError: ``name`` is not one of :data:`BACKENDS`; it conflicts with a ``KERAS_BACKEND``
            the user set; Keras is already imported under another backend; or the backend's
            library (jax, tensorflow) is not installed.
    """
    if name is None:
        return os.environ["KERAS_BACKEND"]
    if name not in BACKENDS:
        raise UsageError(f"Unknown backend; valid: {', '.join(BACKENDS)}. Received: backend={name!r}")
    if kcnn.ENV_BACKEND not in (None, name):
        raise UsageError(f"--backend {name} conflicts with KERAS_BACKEND={kcnn.ENV_BACKEND} in the environment; "
                         "drop one of them")
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != name:
        raise UsageError(f"Keras is already imported with the {sys.modules['keras'].backend.backend()} backend "
                         f"in this process; the {name} backend needs a new one. Received: backend={name!r}")
    if importlib.util.find_spec(name) is None:
        raise UsageError(f"the {name} backend needs the {name} package: pip install {name}")
    os.environ["KERAS_BACKEND"] = name
    return name


def distribution_support(backend: str) -> str | None:
    """How kcnn spreads a batch over devices under ``backend``: ``"keras"`` (Keras'
    ``keras.distribution.DataParallel``), ``"mirrored"`` (``tf.distribute.MirroredStrategy``) or
    None. Keras has ``keras.distribution`` for jax; for torch from the release after 3.15, found
    here by the feature, not the version: Keras 3.15's ``keras.distribution.list_devices()`` fails
    with an ``AttributeError`` on a backend without a distribution library."""
    if backend == "tensorflow":
        return "mirrored"
    if backend == "jax":
        return "keras"
    import keras

    try:
        keras.distribution.list_devices()
    except AttributeError:
        return None
    return "keras"


def list_devices(backend: str) -> list[str]:
    """The devices data parallelism spreads over: the backend's accelerators, else its CPU devices
    (one, unless split for tests: ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` for jax,
    ``tf.config.set_logical_device_configuration`` for tensorflow)."""
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")]
    import keras

    return list(keras.distribution.list_devices())


def resolve_devices(devices: int | str, device: str = "auto") -> list[str]:
    """The devices a run trains on: ``[]`` for one (no distribution), else the first ``devices``
    of :func:`list_devices` (``"all"``: every one).

    Raises:
        UsageError: the backend has no data parallelism in the installed Keras (the message names the
            backends that do), fewer devices exist than asked for, or ``device`` is not ``"auto"``.
    """
    import keras

    backend = keras.backend.backend()
    if devices == 1:
        return []
    if device != "auto":
        raise UsageError(f"devices spreads over the backend's own devices; leave device at auto. "
                         f"Received: devices={devices!r}, device={device!r}")
    if distribution_support(backend) is None:
        raise UsageError(f"devices={devices} needs keras.distribution, which Keras {keras.__version__} has for "
                         f"the jax backend (and tensorflow's MirroredStrategy) but not for {backend}; "
                         "train with --backend jax or --backend tensorflow")
    found = list_devices(backend)
    count = len(found) if devices == "all" else devices
    if count > len(found):
        raise UsageError(f"devices={devices} but the {backend} backend sees {len(found)}: {', '.join(found)}")
    return found[:count] if count > 1 else []


def distribution_scope(devices: list[str]):
    """A context manager inside which a model is built and fitted data-parallel over ``devices``
    (:func:`resolve_devices`): each global batch split evenly, the gradients averaged. A
    ``contextlib.nullcontext`` for ``[]``."""
    import keras

    if not devices:
        return contextlib.nullcontext()
    if distribution_support(keras.backend.backend()) == "mirrored":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy(devices).scope()
    return keras.distribution.DataParallel(devices=devices).scope()
