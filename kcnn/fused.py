"""Faster training on the torch backend with the same math; the model keeps its stock layers.

Three swaps, each for the duration of a ``with`` block, on one model instance: batch normalization
by torch's fused kernel (:func:`fused_batch_norm`), convolutions and dense layers as one op with
their bias (:func:`fused_bias`), and a forward pass that calls each layer's ``call`` directly
instead of through Keras' ``Layer.__call__`` (:func:`direct_forward`). :func:`training_fast_path`
applies all three, as ``kcnn train`` does.

Batch normalization: Keras 3 writes ``BatchNormalization`` on torch as about twenty separate ops (moments, the
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

Nothing is changed on a layer's or the model's class or config, so the ``.keras`` file saved
inside the block holds stock layers. ``tests/test_fused.py`` checks outputs, gradients and moving
statistics against stock Keras for every registered model; ``docs/performance.md`` measures each swap.
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
def _swapped_calls(model, enabled: bool, fusable, make_call):
    """Inside the block, each layer of ``model`` that ``fusable(layer)`` accepts has its ``call`` set, on
    the instance, to ``make_call(layer, stock_call)``; after it, the class's ``call`` again. Only on the
    torch backend and when ``enabled``. Yields the layers switched."""
    import keras

    layers = []
    if enabled and keras.backend.backend() == "torch":
        layers = [layer for layer in model._flatten_layers(include_self=False) if fusable(layer)]
    for layer in layers:
        object.__setattr__(layer, "call", make_call(layer, type(layer).call.__get__(layer)))
    try:
        yield layers
    finally:
        for layer in layers:
            object.__delattr__(layer, "call")


@contextlib.contextmanager
def fused_batch_norm(model, enabled: bool = True):
    """Inside the block, ``model``'s BatchNormalization layers train with torch's fused kernel.

    A no-op on other backends, with ``enabled=False``, or for layers :func:`_fusable` refuses.

    Yields:
        The layers switched (empty when none).
    """
    with _swapped_calls(model, enabled, _fusable, _fused_call) as layers:
        yield layers


def _chain(model) -> list | None:
    """The layers after the input of a single-input chain model (each layer fed by the one before),
    else None."""
    layers = list(model.layers)
    if len(getattr(model, "inputs", None) or []) != 1 or len(layers) < 2:
        return None
    if not all(getattr(layer, "input", None) is previous.output for previous, layer in zip(layers, layers[1:])):
        return None
    return layers[1:]


def _is_preprocessing(layer) -> bool:
    """Keras' preprocessing layers (Rescaling, Normalization, Resizing) pick their backend in
    ``Layer.__call__`` (they also run inside tf.data), so they keep it."""
    return type(layer).__module__.startswith("keras.src.layers.preprocessing")


@contextlib.contextmanager
def direct_forward(model, enabled: bool = True):
    """Inside the block, a chain ``model`` runs its layers' ``call`` one after the other.

    Keras' ``Layer.__call__`` spends Python time per layer and step on argument conversion, dtype
    standardization, name scopes and tree flattening. On ``net24k`` that is most of a training
    step (``docs/performance.md``). This forward passes the tensors straight from one layer's
    ``call`` to the next, with ``training`` for the layers that take it; the preprocessing layers
    still go through ``__call__``. It is the same sequence of ops. It is a no-op (yields False)
    on other backends, for models that are not a chain (a branch, several inputs), and under a
    mixed-precision policy, whose casts ``__call__`` does.
    """
    import keras

    layers = _chain(model) if enabled and keras.backend.backend() == "torch" else None
    if layers is not None and any(layer.dtype_policy.compute_dtype != "float32" for layer in layers):
        layers = None
    if layers is None:
        yield False
        return
    steps = [(layer if _is_preprocessing(layer) else layer.call, getattr(layer, "_call_has_training_arg", False))
             for layer in layers]

    def call(inputs, training=None, mask=None):
        x = inputs
        for fn, takes_training in steps:
            x = fn(x, training=training) if takes_training else fn(x)
        return x

    object.__setattr__(model, "call", call)
    try:
        yield True
    finally:
        object.__delattr__(model, "call")


def _bias_fusable(layer) -> bool:
    """A built stock ``Conv2D`` (channels_first, stride 1 or valid padding, no dilation, one group) or
    ``Dense`` with a bias and neither LoRA nor quantization."""
    import keras

    if type(layer) not in (keras.layers.Conv2D, keras.layers.Dense):
        return False
    plain = (layer.built and layer.use_bias and not getattr(layer, "lora_enabled", False)
             and getattr(layer, "quantization_mode", None) is None)
    if type(layer) is keras.layers.Conv2D:
        return (plain and layer.data_format == "channels_first" and layer.groups == 1
                and tuple(layer.dilation_rate) == (1, 1) and all(k % 2 for k in layer.kernel_size)
                and (layer.padding == "valid" or tuple(layer.strides) == (1, 1)))
    return plain


def _bias_call(layer, stock_call):
    """``layer.call`` as one torch op with its bias (``conv2d``, ``linear``) for float32 inputs."""
    import keras
    import torch
    import torch.nn.functional as F

    if isinstance(layer, keras.layers.Conv2D):  # Keras' "same" at stride 1, odd kernel: symmetric padding
        rank, padding = 4, tuple(k // 2 for k in layer.kernel_size) if layer.padding == "same" else 0

        def op(x):  # kernel (kh, kw, in, out) -> torch's (out, in, kh, kw)
            return F.conv2d(x, layer.kernel.value.permute(3, 2, 0, 1), layer.bias.value, layer.strides, padding)
    else:
        rank = 2

        def op(x):
            return F.linear(x, layer.kernel.value.T, layer.bias.value)

    def call(inputs, *args, **kwargs):
        if inputs.dtype != torch.float32 or inputs.ndim != rank:
            return stock_call(inputs, *args, **kwargs)
        outputs = op(inputs)
        return layer.activation(outputs) if layer.activation is not None else outputs

    return call


@contextlib.contextmanager
def fused_bias(model, enabled: bool = True):
    """Inside the block, ``model``'s ``Conv2D`` and ``Dense`` layers run as one torch op with their
    bias (``torch.nn.functional.conv2d`` / ``linear``), where Keras adds the bias as an op of its own
    (11 adds per ``cnn3`` step, ``docs/performance.md``). Same math; the activation follows as in
    Keras. A no-op on other backends, with ``enabled=False``, and for layers :func:`_bias_fusable`
    refuses; non-float32 inputs run the stock ``call``.

    Yields:
        The layers switched.
    """
    with _swapped_calls(model, enabled, _bias_fusable, _bias_call) as layers:
        yield layers


@contextlib.contextmanager
def training_fast_path(model, enabled: bool = True):
    """:func:`fused_batch_norm`, :func:`fused_bias` and :func:`direct_forward` together (the direct
    forward last, so that it calls the switched layers); yields ``(switched BN layers, direct forward on)``."""
    with fused_batch_norm(model, enabled) as layers, fused_bias(model, enabled), \
            direct_forward(model, enabled) as direct:
        yield layers, direct
