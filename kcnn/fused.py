"""Faster training on the torch backend with the same math; the model keeps its stock layers.

Two swaps, each for the duration of a ``with`` block, on one model instance: batch normalization
by torch's fused kernel (:func:`fused_batch_norm`), and a forward pass that calls each layer's
``call`` directly instead of through Keras' ``Layer.__call__`` (:func:`direct_forward`).
:func:`training_fast_path` applies both, as ``kcnn train`` does.

Batch normalization: Keras 3 writes ``BatchNormalization`` on torch as about twenty separate ops
(moments, the normalization, the moving-statistics updates), each with its own backward pass.
Torch has the same math as one kernel, ``torch.native_batch_norm`` (what
``torch.nn.functional.batch_norm`` calls). Keras does not use it because the moving statistics
would then need a detached update of their own, which :func:`_fused_call` makes: in Keras'
convention, ``moving = moving * momentum + batch * (1 - momentum)``, with the *biased* batch
variance (torch's own running-variance update would use the unbiased one), taken from the
kernel's saved inverse standard deviation, ``1 / invstd**2 - epsilon``. Everything else runs the
stock ``call``: inference, a frozen layer, a mask, renorm, synchronized BN, channels other than
axis 1, and non-float32 inputs (mixed precision).

What the swaps rely on is checked when a block starts (:func:`unsupported`): the torch backend,
``Layer.__call__`` running an instance's own ``call``, and the attributes the fused kernel reads
of each ``BatchNormalization``. When one is missing or behaves otherwise (a Keras upgrade), the
block runs stock Keras and logs one warning. The swaps use public Keras API only: ``model.layers``
and the signature of a layer's ``call``. A swap sets ``call`` on the instance with
``object.__setattr__``, which bypasses Keras' ``Layer.__setattr__``: that one would track the
function as part of the layer's state. Whatever fails inside the block, exactly the instances
swapped get their class's ``call`` back; a block on a model already inside one is refused.

Nothing is changed on a layer's or the model's class or config, so the ``.keras`` file saved
inside the block holds stock layers. ``tests/test_fused.py`` checks outputs, gradients and moving
statistics against stock Keras for every registered model; ``docs/performance.md`` measures each swap.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging

import keras

log = logging.getLogger(__name__)

#: What the fused kernel reads of a ``BatchNormalization``: its constructor arguments and weights.
BN_ATTRIBUTES = ("axis", "momentum", "epsilon", "center", "scale", "renorm", "gamma", "beta", "moving_mean",
                 "moving_variance")
#: The layers the direct forward calls without ``Layer.__call__``: stock layers whose ``__call__``
#: adds nothing their ``call`` needs in float32 training. Any other layer keeps ``__call__``, among
#: them Keras' preprocessing layers, which pick their backend there (they also run inside tf.data).
DIRECT_LAYERS = (keras.layers.Conv2D, keras.layers.Dense, keras.layers.BatchNormalization, keras.layers.ReLU,
                 keras.layers.Activation, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
                 keras.layers.GlobalAveragePooling2D, keras.layers.Flatten, keras.layers.Dropout,
                 keras.layers.Permute)


def _all_layers(model) -> list:
    """Every layer inside ``model``, nested models' layers included (public ``layers`` only)."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found += _all_layers(layer)
    return found


@functools.lru_cache(maxsize=None)
def _instance_call_runs() -> bool:
    """Whether ``Layer.__call__`` runs a ``call`` set on the instance (the swaps' one assumption about
    Keras' internals): a probe layer whose instance ``call`` adds 1."""
    probe = keras.layers.Identity()
    object.__setattr__(probe, "call", lambda inputs, *args, **kwargs: inputs + 1)
    return float(keras.ops.convert_to_numpy(probe(keras.ops.zeros((1,))))[0]) == 1.0


def unsupported(model) -> str | None:
    """Why the swaps cannot run on ``model`` with the installed Keras, or None when they can."""
    if keras.backend.backend() != "torch":
        return f"the {keras.backend.backend()} backend"
    if not _instance_call_runs():
        return f"Keras {keras.__version__}'s Layer.__call__ does not run an instance's own call"
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            missing = [name for name in BN_ATTRIBUTES if not hasattr(layer, name)]
            if missing:
                return f"Keras {keras.__version__}'s BatchNormalization has no {', '.join(missing)}"
    return None


@contextlib.contextmanager
def _swapped_calls(objects_and_calls):
    """Inside the block, each ``(obj, call)`` of the list has ``call`` set on the instance; after it,
    whatever happened, exactly those instances get their class's ``call`` back.

    Raises:
        RuntimeError: an instance already has a ``call`` of its own (a block inside another).
    """
    swapped = []
    try:
        for obj, call in objects_and_calls:
            if "call" in vars(obj):
                raise RuntimeError(f"{obj.name!r} is already switched to kcnn's fast path; the fast path's "
                                   "blocks do not nest")
            object.__setattr__(obj, "call", call)  # not Layer.__setattr__: it would track the function
            swapped.append(obj)
        yield swapped
    finally:
        for obj in swapped:
            object.__delattr__(obj, "call")


def _fusable(layer) -> bool:
    """A built stock ``BatchNormalization`` over axis 1 (channels_first) without renorm or sync."""
    return (isinstance(layer, keras.layers.BatchNormalization) and layer.built and layer.axis == 1
            and not layer.renorm and not getattr(layer, "synchronized", False))


def _fused_call(layer):
    """``layer.call`` with the fused kernel in training mode and the class's ``call`` otherwise."""
    import torch

    stock_call = type(layer).call.__get__(layer)

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


def _batch_norm_swaps(model) -> list:
    return [(layer, _fused_call(layer)) for layer in _all_layers(model) if _fusable(layer)]


def _chain(model) -> list | None:
    """The layers after the input of a single-input chain model (each layer fed by the one before),
    else None."""
    layers = list(model.layers)
    if len(getattr(model, "inputs", None) or []) != 1 or len(layers) < 2:
        return None
    if not all(getattr(layer, "input", None) is previous.output for previous, layer in zip(layers, layers[1:])):
        return None
    return layers[1:]


def _direct_swaps(model) -> list:
    """``[(model, call)]``, the forward that calls each layer's ``call`` in turn; ``[]`` for a model that
    is not a chain (a branch, several inputs) or computes under a mixed-precision policy (whose casts
    ``Layer.__call__`` does)."""
    layers = _chain(model)
    if layers is None or any(layer.dtype_policy.compute_dtype != "float32" for layer in layers):
        return []
    # (layer, its call directly, it takes training); layer.call is looked up at each step, so that
    # a batch norm swapped in the same block runs its fused call
    steps = [(layer, type(layer) in DIRECT_LAYERS, "training" in inspect.signature(layer.call).parameters)
             for layer in layers]

    def call(inputs, training=None, mask=None):
        x = inputs
        for layer, direct, takes_training in steps:
            fn = layer.call if direct else layer  # otherwise through Layer.__call__
            x = fn(x, training=training) if takes_training else fn(x)
        return x

    return [(model, call)]


@contextlib.contextmanager
def _fast_path(model, enabled: bool, make_swaps):
    """Inside the block, the swaps ``make_swaps(model)`` gives; none when not ``enabled`` or when
    :func:`unsupported` gives a reason (then logged once as a warning). Yields the objects swapped."""
    reason = unsupported(model) if enabled else None
    if reason is not None and keras.backend.backend() == "torch":
        log.warning(f"Warning: training without kcnn's fast path ({reason}): stock Keras, same math, slower")
    swaps = make_swaps(model) if enabled and reason is None else []
    with _swapped_calls(swaps) as swapped:
        yield swapped


@contextlib.contextmanager
def fused_batch_norm(model, enabled: bool = True):
    """Inside the block, ``model``'s BatchNormalization layers train with torch's fused kernel.

    A no-op on other backends, with ``enabled=False``, or for layers :func:`_fusable` refuses.

    Yields:
        The layers switched (empty when none).

    Raises:
        RuntimeError: the model's layers are already switched (a block inside another).
    """
    with _fast_path(model, enabled, _batch_norm_swaps) as swapped:
        yield swapped


@contextlib.contextmanager
def direct_forward(model, enabled: bool = True):
    """Inside the block, a chain ``model`` runs its layers' ``call`` one after the other.

    Keras' ``Layer.__call__`` spends Python time per layer and step on argument conversion, dtype
    standardization, name scopes and tree flattening. On ``net24k`` that is most of a training
    step (``docs/performance.md``). This forward passes the tensors straight from one layer's
    ``call`` to the next, with ``training`` for the layers that take it; layers outside
    :data:`DIRECT_LAYERS` still go through ``__call__``. It is the same sequence of ops. It is a
    no-op (yields False) on other backends, for models that are not a chain (a branch, several
    inputs), and under a mixed-precision policy.

    Raises:
        RuntimeError: the model is already switched (a block inside another).
    """
    with _fast_path(model, enabled, _direct_swaps) as swapped:
        yield bool(swapped)


@contextlib.contextmanager
def training_fast_path(model, enabled: bool = True):
    """:func:`fused_batch_norm` and :func:`direct_forward` together (the direct forward second, so that
    it calls the switched layers); yields ``(switched BN layers, direct forward on)``.

    Raises:
        RuntimeError: the model is already inside a fast-path block.
    """
    with _fast_path(model, enabled, lambda m: _batch_norm_swaps(m) + _direct_swaps(m)) as swapped:
        yield [obj for obj in swapped if obj is not model], any(obj is model for obj in swapped)
