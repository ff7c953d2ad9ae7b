"""Fused batch normalization for training on the torch backend; the model keeps its stock layers.

Keras 3 writes ``BatchNormalization`` on torch as about twenty separate ops (moments, the
normalization, the moving-statistics updates), each with its own backward pass. Torch has the same
math as one kernel, ``torch.native_batch_norm`` (what ``torch.nn.functional.batch_norm`` calls).
Keras used the fused call once (keras PR 18793) and dropped it (PR 19102) because the moving
statistics then needed ``mean.detach()``.

:func:`fused_batch_norm` swaps, for the duration of a ``with`` block, each ``BatchNormalization``
instance's ``call`` in training mode for that kernel, and updates the moving statistics itself in
Keras' convention: ``moving = moving * momentum + batch * (1 - momentum)``, with the *biased* batch
variance (torch's own running-variance update would use the unbiased one). The variance comes
from the kernel's saved inverse standard deviation, ``1 / invstd**2 - epsilon``. Everything else
runs the stock ``call``: inference, a frozen layer, a mask, renorm, synchronized BN, channels
other than axis 1, and non-float32 inputs (mixed precision).

Nothing is changed on the layer's class or config, so the ``.keras`` file saved inside the block
holds stock ``BatchNormalization`` layers. ``tests/test_fused.py`` checks outputs, gradients and
moving statistics against the stock layers for every registered model.
"""

from __future__ import annotations

import contextlib


def _fusable(layer) -> bool:
    """A built stock ``BatchNormalization`` over axis 1 (channels_first) without renorm or sync."""
    import keras

    return (isinstance(layer, keras.layers.BatchNormalization) and layer.built and layer.axis == 1
            and not layer.renorm and not getattr(layer, "synchronized", False))


def _fused_call(layer, stock_call):
    """``layer.call`` with the fused kernel in training mode and ``stock_call`` otherwise."""
    import torch

    def call(inputs, training=None, mask=None):
        if not (training and layer.trainable) or mask is not None or inputs.dtype != torch.float32:
            return stock_call(inputs, training=training, mask=mask)
        gamma = layer.gamma.value if layer.scale else None
        beta = layer.beta.value if layer.center else None
        outputs, mean, invstd = torch.native_batch_norm(inputs, gamma, beta, None, None, True, 0.0, layer.epsilon)
        with torch.no_grad():
            variance = invstd.reciprocal().square() - layer.epsilon  # biased, as Keras' moments
            momentum = layer.momentum
            layer.moving_mean.assign(layer.moving_mean.value * momentum + mean * (1.0 - momentum))
            layer.moving_variance.assign(layer.moving_variance.value * momentum + variance * (1.0 - momentum))
        return outputs

    return call


@contextlib.contextmanager
def fused_batch_norm(model, enabled: bool = True):
    """Inside the block, ``model``'s BatchNormalization layers train with torch's fused kernel.

    A no-op on other backends, with ``enabled=False``, or for layers :func:`_fusable` refuses.

    Yields:
        The layers switched (empty when none).
    """
    import keras

    layers = []
    if enabled and keras.backend.backend() == "torch":
        layers = [layer for layer in model._flatten_layers(include_self=False) if _fusable(layer)]
    for layer in layers:
        object.__setattr__(layer, "call", _fused_call(layer, type(layer).call.__get__(layer)))
    try:
        yield layers
    finally:
        for layer in layers:
            object.__delattr__(layer, "call")  # the class's call again
