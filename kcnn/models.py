"""Model zoo: the classic small CNNs of the reference tutorials and the stronger CIFAR networks their
future work asks for (ResNet-9, airbench's whitened nets), as Keras 3 functional models.

One registry, one small builder per architecture (the timm pattern)::

    >>> from kcnn.models import create_model, list_models
    >>> list_models()
    ['cnn2', 'cnn2_simple', 'cnn3', 'net24k', 'resnet9', 'whitened8', 'whitened8_narrow']
    >>> model = create_model("cnn3", input_shape=(32, 32, 3), num_classes=10)

Every model takes raw ``uint8`` images ``(batch, H, W, C)`` of its dataset and
does its own scaling inside (``Rescaling``/``Normalization``), so a saved
``.keras`` file needs no outside preprocessing. Every model ends in softmax:
``model.predict`` returns class probabilities ``(batch, num_classes)`` float32.
Only ``keras.layers`` are used, so the models build and load under the torch,
tensorflow and jax backends alike.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import keras
import numpy as np
from keras import layers

from kcnn.catalog import unknown_model
from kcnn.errors import UsageError

_REGISTRY: dict[str, Callable[..., keras.Model]] = {}

#: The reference tutorials' 3-conv CNN, kcnn's default architecture.
DEFAULT_MODEL = "cnn3"


def register_model(fn: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
    """Add a builder ``fn(input_shape, num_classes, data_format) -> keras.Model`` to the registry."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of every registered architecture, sorted."""
    return sorted(_REGISTRY)


def reference_input_shape(name: str) -> tuple[int, int, int]:
    """``(H, W, C)`` of the images an architecture was designed for: its builder's default
    ``input_shape`` (``cnn3``: CIFAR-10's ``(32, 32, 3)``; ``net24k``: MNIST's ``(28, 28, 1)``).

    Raises:
        UsageError: unknown name.
    """
    return tuple(inspect.signature(_REGISTRY[check_model_name(name)]).parameters["input_shape"].default)


def check_model_name(name: str) -> str:
    """Return ``name`` if registered.

    Raises:
        UsageError: unknown name; the message lists the valid names and the
            closest match.
    """
    if name in _REGISTRY:
        return name
    raise unknown_model(name, list_models())


def default_data_format() -> str:
    """Layout of the feature maps inside kcnn's models: ``"channels_first"`` on the torch backend.

    torch's CPU kernels run NCHW natively; Keras' channels_last on torch permutes
    around every conv and pool, and the 3-conv CNN trains 1.3x faster in
    channels_first (``scripts/bench_train.py``). Other backends use
    ``keras.config.image_data_format()``. Inputs are ``(batch, H, W, C)`` either way.
    """
    return "channels_first" if keras.backend.backend() == "torch" else keras.config.image_data_format()


def create_model(
    name: str = DEFAULT_MODEL,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    data_format: str | None = None,
) -> keras.Model:
    """Build a registered architecture.

    Args:
        name: one of :func:`list_models`.
        input_shape: ``(height, width, channels)`` of the raw uint8 images.
        num_classes: width of the softmax output.
        data_format: layout of the feature maps inside the model,
            ``"channels_first"`` or ``"channels_last"``; None = :func:`default_data_format`.
            The input stays ``(batch, H, W, C)``; channels_first models permute
            it after their own preprocessing. Weights are the same either way
            (``Flatten(data_format=...)`` keeps the channels_last feature order).

    Returns:
        An uncompiled functional ``keras.Model`` mapping ``(batch, *input_shape)``
        uint8 to ``(batch, num_classes)`` float32 probabilities. Its ``name`` is
        the architecture's name.

    Raises:
        UsageError: unknown name, an input shape that is not ``(H, W, C)`` with
            C in {1, 3}, ``num_classes < 2`` or an unknown data_format.
    """
    check_model_name(name)
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3) or min(input_shape) < 1:
        raise UsageError(
            "input_shape must be (height, width, channels) with 1 or 3 channels. "
            f"Received: input_shape={input_shape}"
        )
    if int(num_classes) < 2:
        raise UsageError(f"num_classes must be >= 2. Received: num_classes={num_classes}")
    data_format = data_format or default_data_format()
    if data_format not in ("channels_first", "channels_last"):
        raise UsageError("data_format must be 'channels_first' or 'channels_last'. "
                         f"Received: data_format={data_format!r}")
    return _REGISTRY[name](input_shape, int(num_classes), data_format=data_format)


def to_channels_last(model: keras.Model) -> keras.Model:
    """The same function as ``model``, a :func:`create_model` model, with channels_last feature maps.

    For ``.keras`` files that others load in plain Keras: TensorFlow's CPU kernels run NCHW
    convolutions only with its oneDNN operations on (``TF_ENABLE_ONEDNN_OPTS=1``, on by default only
    on some CPUs), so a channels_first file can fail to predict under the tensorflow backend. The
    weights move unchanged (see :func:`create_model`); the input stays ``(batch, H, W, C)`` uint8.

    Args:
        model: built by :func:`create_model` (its ``name`` is the architecture's).

    Returns:
        ``model`` itself when no layer is channels_first, else a new uncompiled model.

    Raises:
        UsageError: ``model.name`` is not a registered architecture.
    """
    if all(getattr(layer, "data_format", None) != "channels_first" for layer in model.layers):
        return model
    portable = create_model(model.name, model.input_shape[1:], model.output_shape[-1], data_format="channels_last")
    portable.set_weights(model.get_weights())
    return portable


def _inputs(input_shape) -> keras.KerasTensor:
    return keras.Input(shape=input_shape, dtype="uint8", name="image")


def _to_layout(x, data_format):
    """``(batch, H, W, C)`` -> ``(batch, C, H, W)`` for channels_first models."""
    return layers.Permute((3, 1, 2), name="to_channels_first")(x) if data_format == "channels_first" else x


def _to_tutorial_input(x, input_shape, size=32):
    """Rescale uint8 to [0, 1], resize to ``size`` x ``size`` and make 3 channels.

    This is how the tutorial "CNN Image Classification - MNIST & CIFAR-10" fed
    MNIST to its CIFAR-shaped network (resize 28->32, gray repeated to RGB).
    """
    x = layers.Rescaling(1.0 / 255, name="rescale")(x)
    if tuple(input_shape[:2]) != (size, size):
        x = layers.Resizing(size, size, data_format="channels_last", name="resize")(x)
    if input_shape[-1] == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    return x


def torch_default_init(fan_in: int) -> dict:
    """Initializers of PyTorch's ``nn.Conv2d``/``nn.Linear`` defaults, as Keras layer kwargs.

    The reference tutorials are PyTorch programs, so their layers start from
    ``kaiming_uniform_(a=sqrt(5))`` weights and ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    biases: both are ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, i.e. Keras'
    ``VarianceScaling(scale=1/3, mode="fan_in", distribution="uniform")`` for the
    kernel. Keras' own default (Glorot-uniform kernel, zero bias) makes the softmax
    layer's weights about 2.4x larger on a 128-wide input, and the networks then learn
    far slower (measured in docs/models.md, "Initialization").

    Args:
        fan_in: inputs per output unit (``in_channels * kh * kw`` for a conv,
            ``in_features`` for a dense layer).

    Returns:
        ``{"kernel_initializer": ..., "bias_initializer": ...}`` for ``Conv2D``/``Dense``.
    """
    bound = 1.0 / math.sqrt(fan_in)
    return {"kernel_initializer": keras.initializers.VarianceScaling(1.0 / 3, "fan_in", "uniform"),
            "bias_initializer": keras.initializers.RandomUniform(-bound, bound)}


def _conv(x, filters, kernel_size, data_format, **kwargs):
    """``Conv2D`` with PyTorch's default initialization, applied to ``x``."""
    channels = x.shape[1 if data_format == "channels_first" else -1]
    return layers.Conv2D(filters, kernel_size, data_format=data_format,
                         **torch_default_init(channels * kernel_size * kernel_size), **kwargs)(x)


def _dense(x, units, **kwargs):
    """``Dense`` with PyTorch's default initialization, applied to ``x``."""
    return layers.Dense(units, **torch_default_init(x.shape[-1]), **kwargs)(x)


def _batch_norm(x, data_format, name, momentum=0.9, epsilon=1e-5, scale=True):
    """``BatchNormalization`` over the channel axis, by default with PyTorch's defaults (eps 1e-5;
    running stats keep 0.9 per step)."""
    return layers.BatchNormalization(axis=1 if data_format == "channels_first" else -1, momentum=momentum,
                                     epsilon=epsilon, scale=scale, name=name)(x)


def _conv_bn_relu_pool(x, filters, kernel_size, index, data_format):
    x = _conv(x, filters, kernel_size, data_format, padding="same", name=f"conv{index}")
    x = _batch_norm(x, data_format, f"bn{index}")
    x = layers.ReLU(name=f"relu{index}")(x)
    return layers.MaxPooling2D(2, data_format=data_format, name=f"pool{index}")(x)


def _classifier_head(x, num_classes):
    # float32 even under a mixed-precision policy: half-precision softmax loses the small probabilities.
    return _dense(x, num_classes, activation="softmax", dtype="float32", name="probabilities")


@register_model
def cnn3(input_shape=(32, 32, 3), num_classes=10, data_format="channels_last") -> keras.Model:
    """The reference tutorial's 3-conv CNN ("CNN Image Classification - MNIST & CIFAR-10").

    Conv 32@5x5 -> BN -> ReLU -> MaxPool2; Conv 64@3x3 -> BN -> ReLU -> MaxPool2;
    Conv 128@3x3 -> BN -> ReLU -> MaxPool2; Flatten (2048) -> Dense 256 ReLU ->
    Dropout 0.5 -> Dense softmax. 'same' padding, on 32x32x3: inputs of another
    size or with one channel are resized to 32x32 and repeated to RGB inside the
    model, as the tutorial did for MNIST. 622,346 trainable parameters for 10
    classes (the tutorial's README says ~400K, which its own layer list does not
    add up to).
    """
    inputs = _inputs(input_shape)
    x = _to_layout(_to_tutorial_input(inputs, input_shape), data_format)
    for index, (filters, kernel) in enumerate([(32, 5), (64, 3), (128, 3)], start=1):
        x = _conv_bn_relu_pool(x, filters, kernel, index, data_format)
    x = layers.Flatten(data_format=data_format, name="flatten")(x)
    x = _dense(x, 256, activation="relu", name="fc1")
    x = layers.Dropout(0.5, name="dropout")(x)
    return keras.Model(inputs, _classifier_head(x, num_classes), name="cnn3")


@register_model
def net24k(input_shape=(28, 28, 1), num_classes=10, data_format="channels_last") -> keras.Model:
    """The reference tutorial's 24,488-parameter MNIST net ("CNN MNIST Classification with PyTorch").

    Conv 8@3x3 valid -> ReLU -> MaxPool2; Conv 16@3x3 -> ReLU; Conv 24@3x3 ->
    ReLU -> MaxPool2; Flatten (384 on 28x28) -> Dense 50 ReLU -> Dense softmax.
    Inputs are standardized with the MNIST mean/std the tutorial used
    (0.1307, 0.3081). Exactly 24,488 trainable parameters on 28x28x1, 10 classes.
    """
    inputs = _inputs(input_shape)
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = layers.Normalization(mean=0.1307, variance=0.3081**2, name="standardize")(x)
    x = _to_layout(x, data_format)
    x = _conv(x, 8, 3, data_format, activation="relu", name="conv1")
    x = layers.MaxPooling2D(2, data_format=data_format, name="pool1")(x)
    x = _conv(x, 16, 3, data_format, activation="relu", name="conv2")
    x = _conv(x, 24, 3, data_format, activation="relu", name="conv3")
    x = layers.MaxPooling2D(2, data_format=data_format, name="pool3")(x)
    x = layers.Flatten(data_format=data_format, name="flatten")(x)
    x = _dense(x, 50, activation="relu", name="fc1")
    return keras.Model(inputs, _classifier_head(x, num_classes), name="net24k")


@register_model
def cnn2(input_shape=(32, 32, 3), num_classes=10, data_format="channels_last") -> keras.Model:
    """The reference tutorial's 2-conv CNN ("Image Classification using CNN").

    [Conv 32@3x3 -> BN -> ReLU -> MaxPool2] -> [Conv 64@3x3 -> BN -> ReLU ->
    MaxPool2] -> Flatten (4096) -> Dense 128 ReLU -> Dropout 0.5 -> Dense
    softmax, on 32x32x3 (other inputs resized/repeated as in :func:`cnn3`).
    545,290 trainable parameters for 10 classes.
    """
    inputs = _inputs(input_shape)
    x = _to_layout(_to_tutorial_input(inputs, input_shape), data_format)
    x = _conv_bn_relu_pool(x, 32, 3, 1, data_format)
    x = _conv_bn_relu_pool(x, 64, 3, 2, data_format)
    x = layers.Flatten(data_format=data_format, name="flatten")(x)
    x = _dense(x, 128, activation="relu", name="fc1")
    x = layers.Dropout(0.5, name="dropout")(x)
    return keras.Model(inputs, _classifier_head(x, num_classes), name="cnn2")


@register_model
def cnn2_simple(input_shape=(28, 28, 1), num_classes=10, data_format="channels_last") -> keras.Model:
    """The reference tutorial's 2-conv CNN ("Convolutional Neural Networks with PyTorch").

    Two Conv 32@3x3 'same' + ReLU, each followed by 2x2 max pooling, Flatten,
    Dense softmax; built on the dataset's own input shape. 25,258 trainable
    parameters on 28x28x1 and 30,634 on 32x32x3 (10 classes).
    """
    inputs = _inputs(input_shape)
    x = _to_layout(layers.Rescaling(1.0 / 255, name="rescale")(inputs), data_format)
    for index in (1, 2):
        x = _conv(x, 32, 3, data_format, padding="same", activation="relu", name=f"conv{index}")
        x = layers.MaxPooling2D(2, data_format=data_format, name=f"pool{index}")(x)
    x = layers.Flatten(data_format=data_format, name="flatten")(x)
    return keras.Model(inputs, _classifier_head(x, num_classes), name="cnn2_simple")


def _conv_bn(x, filters, data_format, name, momentum=0.9, epsilon=1e-5, scale=True):
    """3x3 'same' ``Conv2D`` without bias (the batch norm after it centres) -> ``BatchNormalization``."""
    x = _conv(x, filters, 3, data_format, padding="same", use_bias=False, name=f"{name}_conv")
    return _batch_norm(x, data_format, f"{name}_bn", momentum, epsilon, scale)


def _scaled_logits_head(x, num_classes, scale):
    """Bias-free ``Dense`` logits times ``scale``, then softmax (float32, as :func:`_classifier_head`)."""
    x = _dense(x, num_classes, use_bias=False, name="logits")
    x = layers.Rescaling(scale, dtype="float32", name="logit_scale")(x)
    return layers.Activation("softmax", dtype="float32", name="probabilities")(x)


def dirac_init(model: keras.Model, names) -> None:
    """Start each named 3x3 ``Conv2D`` as a partial identity, in place: filter ``i`` of the first
    ``min(in, out)`` passes input channel ``i`` through its centre tap, the other filters keep their
    initialization. airbench's ``torch.nn.init.dirac_(w[:w.size(1)])`` (K. Jordan, "94% on CIFAR-10
    in 3.29 Seconds on a Single GPU", 2024: dirac init saves 3 of its 17 epochs to 94%). Only the
    weights change, so the saved ``.keras`` file holds stock initializers."""
    for name in names:
        conv = model.get_layer(name)
        kernel = keras.ops.convert_to_numpy(conv.kernel).copy()
        kh, kw, channels, filters = kernel.shape
        k = min(channels, filters)
        kernel[:, :, :, :k] = 0
        kernel[kh // 2, kw // 2, np.arange(k), np.arange(k)] = 1
        conv.kernel.assign(kernel)


def _whitened8(input_shape, num_classes, data_format, widths, name) -> keras.Model:
    inputs = _inputs(input_shape)
    x = _to_layout(layers.Rescaling(1.0 / 255, name="rescale")(inputs), data_format)
    # 2x2 patch whitening, frozen: kcnn train --whiten (the whitened recipe) sets it from the data.
    x = _conv(x, 24, 2, data_format, padding="valid", trainable=False, name="whiten")
    x = layers.Activation("gelu", name="whiten_gelu")(x)
    convs = []
    for index, width in enumerate(widths, start=1):
        block = f"block{index}"
        x = _conv(x, width, 3, data_format, padding="same", use_bias=False, name=f"{block}_conv1")
        x = layers.MaxPooling2D(2, data_format=data_format, name=f"{block}_pool")(x)
        # airbench's BatchNorm(momentum=0.6) in torch's sense: Keras keeps 0.4 of the running statistic
        x = _batch_norm(x, data_format, f"{block}_bn1", momentum=0.4, epsilon=1e-12, scale=False)
        x = layers.Activation("gelu", name=f"{block}_gelu1")(x)
        x = _conv_bn(x, width, data_format, f"{block}_2", momentum=0.4, epsilon=1e-12, scale=False)
        x = layers.Activation("gelu", name=f"{block}_gelu2")(x)
        convs += [f"{block}_conv1", f"{block}_2_conv"]
    # 'same': a 1x1 map (16x16 input) still pools; 3x3 (32x32 input) gives 1x1 either way
    x = layers.MaxPooling2D(3, padding="same", data_format=data_format, name="pool")(x)
    x = layers.Flatten(data_format=data_format, name="flatten")(x)
    model = keras.Model(inputs, _scaled_logits_head(x, num_classes, 1 / 9), name=name)
    dirac_init(model, convs)
    return model


@register_model
def whitened8(input_shape=(32, 32, 3), num_classes=10, data_format="channels_last") -> keras.Model:
    """airbench94's network (K. Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", 2024).

    A frozen 2x2 'valid' Conv 24 (patch whitening, set by ``whiten``) -> GELU; three blocks of
    Conv 3x3 -> MaxPool2 -> BN -> GELU -> Conv 3x3 -> BN -> GELU, widths 64/256/256, bias-free
    convs started as partial identities (:func:`dirac_init`), batch norms without a learned scale
    (momentum 0.6 in torch's sense); MaxPool3; bias-free Dense logits times 1/9; softmax. Any input
    of at least 16x16 pixels, 1 or 3 channels. 1,971,328 trainable parameters for 10 classes on
    32x32x3 (the whitening's 312 frozen).
    """
    return _whitened8(input_shape, num_classes, data_format, (64, 256, 256), "whitened8")


@register_model
def whitened8_narrow(input_shape=(32, 32, 3), num_classes=10, data_format="channels_last") -> keras.Model:
    """:func:`whitened8` with widths 64/128/128: airbench93's network (93% in 11 epochs on CIFAR-10).
    568,704 trainable parameters for 10 classes on 32x32x3."""
    return _whitened8(input_shape, num_classes, data_format, (64, 128, 128), "whitened8_narrow")


def _residual(x, filters, data_format, name):
    """x + (Conv-BN-ReLU twice)(x): the residual unit of ResNet-9."""
    y = layers.ReLU(name=f"{name}_relu1")(_conv_bn(x, filters, data_format, f"{name}_1"))
    y = layers.ReLU(name=f"{name}_relu2")(_conv_bn(y, filters, data_format, f"{name}_2"))
    return layers.Add(name=f"{name}_add")([x, y])


@register_model
def resnet9(input_shape=(32, 32, 3), num_classes=10, data_format="channels_last") -> keras.Model:
    """ResNet-9 of D. Page's "How to Train Your ResNet" (2018; DAWNBench, 94% on CIFAR-10 in 24
    epochs), the "deeper architecture (ResNet style)" the reference tutorials ask for.

    Prep Conv 64 -> BN -> ReLU; layer1 Conv 128 -> BN -> ReLU -> MaxPool2 plus a residual unit of two
    Conv 128 -> BN -> ReLU; layer2 Conv 256 -> BN -> ReLU -> MaxPool2; layer3 Conv 512 -> BN -> ReLU
    -> MaxPool2 plus a residual unit; global max pooling; bias-free Dense logits times 1/8; softmax.
    3x3 'same' bias-free convs. Any input of at least 8x8 pixels, 1 or 3 channels. 6,573,120
    trainable parameters for 10 classes.
    """
    inputs = _inputs(input_shape)
    x = _to_layout(layers.Rescaling(1.0 / 255, name="rescale")(inputs), data_format)
    x = layers.ReLU(name="prep_relu")(_conv_bn(x, 64, data_format, "prep"))
    for index, (filters, residual) in enumerate([(128, True), (256, False), (512, True)], start=1):
        x = layers.ReLU(name=f"layer{index}_relu")(_conv_bn(x, filters, data_format, f"layer{index}"))
        x = layers.MaxPooling2D(2, data_format=data_format, name=f"layer{index}_pool")(x)
        if residual:
            x = _residual(x, filters, data_format, f"layer{index}_res")
    x = layers.GlobalMaxPooling2D(data_format=data_format, name="pool")(x)
    return keras.Model(inputs, _scaled_logits_head(x, num_classes, 0.125), name="resnet9")


#: Patch whitening: added to each eigenvalue before dividing by its square root, in squared
#: units of the first conv's input ([0, 1] pixels in cnn3), as airbench does (5e-4), so the
#: flattest directions are not blown up.
WHITEN_EPS = 5e-4


def first_conv(model: keras.Model) -> layers.Conv2D:
    """The model's first ``Conv2D`` layer, in the functional graph's order.

    Raises:
        UsageError: the model has no ``Conv2D`` layer.
    """
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            return layer
    raise UsageError(f"Model {model.name!r} has no Conv2D layer to whiten.")


def whiten_first_conv(model: keras.Model, images, eps: float = WHITEN_EPS, batch_size: int = 250) -> np.ndarray:
    """Initialize the first ``Conv2D`` as a patch-whitening filter bank, in place.

    The recipe of airbench (K. Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single
    GPU", 2024, after tysam-code's hlb-CIFAR10): the kernel's ``F`` filters become the
    ``F // 2`` leading eigenvectors ``v`` of the covariance of the layer's input patches,
    each scaled by ``1 / sqrt(eigenvalue + eps)``, and their negatives; the bias centres
    each filter's output on ``images``. A filter's output then has variance
    ``eigenvalue / (eigenvalue + eps)`` (about 1) on these images, the first ``F // 2``
    outputs are uncorrelated, and filter ``F // 2 + j`` is ``-1`` times filter ``j``
    (so ReLU keeps both signs). Filters beyond ``2 * min(F // 2, kh * kw * C)`` keep
    their initialization. Only the initial weights change: the architecture, what
    trains and the saved ``.keras`` file are as without it.

    Args:
        model: a built model whose first ``Conv2D`` (see :func:`first_conv`) has a
            kernel ``(kh, kw, C, F)``.
        images: ``(N, H, W, C)`` uint8 training images in the model's input shape
            (``kcnn train --whiten`` uses the train split's first
            :data:`kcnn.config.WHITEN_IMAGES`); the patches are
            those of the layer's input, after the model's own preprocessing, at every
            position where the kernel fits inside the image (``N * (H' - kh + 1) *
            (W' - kw + 1)`` patches).
        eps: added to each eigenvalue, in squared units of the layer's input.
        batch_size: images per forward pass and per covariance chunk.

    Returns:
        The patch covariance's eigenvalues, ``(kh * kw * C,)`` float64, largest first.

    Raises:
        UsageError: no ``Conv2D`` layer, fewer than 2 images, or images whose shape is
            not the model's input shape.
    """
    conv = first_conv(model)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != tuple(model.input_shape[1:]) or len(images) < 2:
        raise UsageError(f"whiten_first_conv needs at least 2 images of shape {tuple(model.input_shape[1:])}. "
                         f"Received: images.shape={images.shape}")
    kh, kw, channels, filters = conv.kernel.shape
    to_conv = keras.Model(model.input, conv.input)
    dim = kh * kw * channels
    total, outer, count = np.zeros(dim), np.zeros((dim, dim)), 0
    for start in range(0, len(images), batch_size):
        x = keras.ops.convert_to_numpy(to_conv(images[start:start + batch_size], training=False))
        if conv.data_format == "channels_first":
            x = x.transpose(0, 2, 3, 1)
        # (n, H', W', C, kh, kw) -> rows of (kh, kw, C), the kernel's order
        patches = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
        patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, dim).astype(np.float64)
        total += patches.sum(axis=0)
        outer += patches.T @ patches
        count += len(patches)
    mean = total / count
    eigenvalues, eigenvectors = np.linalg.eigh(outer / count - np.outer(mean, mean))
    eigenvalues, eigenvectors = eigenvalues[::-1].clip(min=0), eigenvectors[:, ::-1]
    k = min(filters // 2, dim)
    leading = eigenvectors[:, :k] / np.sqrt(eigenvalues[:k] + eps)
    kernel = keras.ops.convert_to_numpy(conv.kernel).reshape(dim, filters).copy()
    kernel[:, :2 * k] = np.concatenate([leading, -leading], axis=1)
    conv.kernel.assign(kernel.reshape(kh, kw, channels, filters).astype("float32"))
    if conv.use_bias:
        bias = keras.ops.convert_to_numpy(conv.bias).copy()
        bias[:2 * k] = -(mean @ kernel[:, :2 * k])
        conv.bias.assign(bias.astype("float32"))
    return eigenvalues
