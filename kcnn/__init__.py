"""kcnn: train, evaluate, explain and serve small CNN image classifiers.

Keras 3 functional models on the PyTorch backend, fed by tf.data/TFDS pipelines.
Importing ``kcnn`` is cheap: Keras, torch and TensorFlow are imported only when a
function that needs them is called.  ``KERAS_BACKEND`` defaults to ``"torch"``
unless the user has chosen another backend before the first Keras import.
"""

import os

__version__ = "0.1.0"

#: The backend the user's environment chose before kcnn set its default (None: none chose).
ENV_BACKEND = os.environ.get("KERAS_BACKEND")
# Must happen before anything imports keras (keras reads it once, at import).
os.environ.setdefault("KERAS_BACKEND", "torch")
# Hide TensorFlow C++ INFO/WARNING chatter (tf.data only serves input here).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["__version__", "train", "TrainConfig", "predict", "create_model", "list_models"]


def __dir__():
    # the lazy public API beside the module's own names, as dir(kcnn) and tab completion show them
    return sorted(set(globals()) | set(__all__))


def __getattr__(name):
    # Lazy public API, so `import kcnn` and `kcnn --help` stay fast.
    if name == "train":
        from kcnn.training import train

        return train
    if name == "TrainConfig":
        from kcnn.config import TrainConfig

        return TrainConfig
    if name == "predict":
        from kcnn.prediction import predict

        return predict
    if name in ("create_model", "list_models"):
        from kcnn import models

        return getattr(models, name)
    raise AttributeError(f"module 'kcnn' has no attribute {name!r}")
