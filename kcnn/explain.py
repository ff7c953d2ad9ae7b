"""What a model learned and looks at: conv filters, feature maps, Grad-CAM.

Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep
Networks via Gradient-based Localization"): the last conv layer's feature maps
``A_k`` weighted by the spatial mean of d(class score)/dA_k, summed, ReLU'd,
upsampled to the input size and scaled to [0, 1]. The class score is the logit
(the final Dense layer before its softmax). Gradients need the backend's own
autograd; torch, tensorflow and jax are supported.
"""

from __future__ import annotations

import keras
import numpy as np
from PIL import Image

from kcnn.errors import UsageError


def conv_layers(model) -> list:
    """The model's 2-D convolution layers, input to output."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def find_conv_layer(model, which=None):
    """A conv layer by name, by index among the conv layers (negative counts from the end), or the first.

    Raises:
        UsageError: no conv layer, unknown name, index out of range; the
            message lists the conv layers.
    """
    convs = conv_layers(model)
    names = [layer.name for layer in convs]
    if not convs:
        raise UsageError(f"model {model.name!r} has no Conv2D layer")
    if which is None:
        return convs[0]
    text = str(which)
    if text.lstrip("-").isdigit():
        index = int(text)
        if -len(convs) <= index < len(convs):
            return convs[index]
        raise UsageError(f"conv layer index {index} is out of range; conv layers: {', '.join(names)} "
                         f"(0..{len(convs) - 1})")
    if text in names:
        return convs[names.index(text)]
    raise UsageError(f"no conv layer named {text!r}; conv layers: {', '.join(names)}")


def block_output(model, conv):
    """The last of the layers that directly follow ``conv`` in a chain and keep its feature maps'
    layout, BatchNormalization and activations (ReLU, Activation); ``conv`` itself when none does."""
    layers, last = list(model.layers), conv
    for layer in layers[layers.index(conv) + 1:]:
        follows = getattr(layer, "input", None) is last.output
        if not (follows and isinstance(layer, (keras.layers.BatchNormalization, keras.layers.ReLU,
                                               keras.layers.Activation))):
            break
        last = layer
    return last


def feature_maps(model, layer, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run one image ``(H, W, C)`` uint8 up to ``layer``.

    Returns:
        ``(seen, maps)``: the layer's input (the image as the model sees it
        after its own preprocessing, if ``layer`` is the first conv) and the
        layer's output, each ``(h, w, channels)`` float32.
    """
    probe = keras.Model(model.input, [layer.input, layer.output])  # one input: called with a bare tensor
    seen, maps = probe(image[None], training=False)
    return (_channels_last(keras.ops.convert_to_numpy(seen)[0], layer),
            _channels_last(keras.ops.convert_to_numpy(maps)[0], layer))


def _channels_last(array: np.ndarray, layer) -> np.ndarray:
    """One image's ``(C, h, w)`` feature maps of a channels_first layer as ``(h, w, C)``."""
    return np.moveaxis(array, 0, -1) if getattr(layer, "data_format", None) == "channels_first" else array


def gradcam(model, image: np.ndarray, class_index: int | None = None, layer=None) -> tuple[np.ndarray, int]:
    """Grad-CAM heatmap of one image.

    Args:
        model: a kcnn-style classifier: conv layers, then a final Dense with softmax, or logits
            followed by a softmax layer of their own (the whitened nets, ``resnet9``).
        image: ``(H, W, C)`` uint8, the model's input spec.
        class_index: class to explain; None = the predicted class.
        layer: conv layer (default: the last one). Its block's output is explained: the conv's
            output after the BatchNormalization and activation layers that directly follow it,
            as in Keras' Grad-CAM example (the conv output before batch norm can weigh out
            negative everywhere, an empty heatmap).

    Returns:
        ``(heatmap, class_index)``: heatmap ``(H, W)`` float32 in [0, 1].

    Raises:
        NotImplementedError: backend other than torch, tensorflow or jax.
    """
    conv = layer or conv_layers(model)[-1]
    layer = block_output(model, conv)
    head = model.layers[-1]
    probe = keras.Model(model.input, [layer.output, head.input])
    x = image[None]

    def logits_of(features_input):
        if not isinstance(head, keras.layers.Dense):  # a softmax layer of its own: its input are the logits
            return features_input
        kernel, bias = head.kernel, head.bias  # Dense with softmax: the logits before it
        return keras.ops.matmul(features_input, kernel) + (bias if bias is not None else 0)

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        with torch.enable_grad():
            maps, before_head = probe(x, training=False)
            maps.retain_grad()
            logits = logits_of(before_head)
            if class_index is None:
                class_index = int(torch.argmax(logits[0]))
            logits[0, class_index].backward()
        grads = maps.grad.detach().cpu().numpy()[0]
        maps = maps.detach().cpu().numpy()[0]
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            maps, before_head = probe(x, training=False)
            logits = logits_of(before_head)
            if class_index is None:
                class_index = int(tf.argmax(logits[0]))
            score = logits[0, class_index]
        grads = tape.gradient(score, maps).numpy()[0]
        maps = maps.numpy()[0]
    elif backend == "jax":
        import jax

        maps, _ = probe(x, training=False)
        rest = keras.Model(layer.output, head.input)  # the network from the block's output on
        logits = logits_of(rest(maps, training=False))
        if class_index is None:
            class_index = int(np.argmax(logits[0]))
        grads = np.asarray(jax.grad(lambda m: logits_of(rest(m, training=False))[0, class_index])(maps))[0]
        maps = np.asarray(maps)[0]
    else:
        raise NotImplementedError(f"Grad-CAM needs the torch, tensorflow or jax backend; this is {backend}")
    maps, grads = _channels_last(maps, conv), _channels_last(grads, conv)
    weights = grads.mean(axis=(0, 1))
    cam = np.maximum((maps * weights).sum(axis=-1), 0)

    cam = np.asarray(Image.fromarray(cam.astype(np.float32), "F").resize(
        (image.shape[1], image.shape[0]), Image.Resampling.BILINEAR))
    cam = np.maximum(cam, 0)
    peak = float(cam.max())
    return (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32), int(class_index)
