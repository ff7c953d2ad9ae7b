"""Augmentation policies, built from Keras preprocessing layers: :func:`make_augmentation`.

The policies' names are :data:`kcnn.config.AUGMENTATIONS` (a setting of every run); the default
for a dataset is :func:`kcnn.config.default_augmentation`. The layers run inside ``tf.data.map``
(:mod:`kcnn.data.pipelines`), where Keras switches them to TensorFlow ops whatever the backend.
"""

from __future__ import annotations

from keras import layers

from kcnn.config import AUGMENTATIONS
from kcnn.errors import UsageError

#: flip_shift: the largest shift, as a fraction of each side (2 pixels on 32x32, airbench's translate).
FLIP_SHIFT = 2 / 32
#: flip_erase: probability that an image gets one erased rectangle (the paper's p = 0.5).
ERASE_PROBABILITY = 0.5


def make_augmentation(policy: str, seed: int | None = None):
    """Build an augmentation policy from Keras preprocessing layers.

    Policies:
        ``"crop_flip"``: pad-4 random crop and horizontal flip (the CIFAR
            standard), as ``RandomTranslation(±4/32, fill 0, nearest)`` (a
            per-image integer shift with zero fill is exactly a crop from the
            zero-padded image) followed by ``RandomFlip("horizontal")``.
        ``"flip"``: horizontal flip only.
        ``"flip_erase"``: horizontal flip, then random erasing (Zhong et al.
            2017, "Random Erasing Data Augmentation", arXiv:1708.04896): with
            probability :data:`ERASE_PROBABILITY` per image, a rectangle of
            2-33% of the image is filled with noise (Keras ``RandomErasing``).
        ``"shift"``: a random shift of up to ±8% of each side (±2 pixels on
            28x28), rounded to whole pixels, zero fill; the light augmentation
            for small digit networks that underfit under ``"affine"``.
        ``"affine"``: small rotation (±10°), shift (±10%) and zoom (±10%), no
            flips (digits are not mirror-symmetric).
        ``"flip_shift"``: horizontal flip, then a random shift of up to
            :data:`FLIP_SHIFT` of each side (±2 pixels on 32x32), rounded to whole
            pixels, the border mirrored (Keras' ``"reflect"``: d c b a | a b c d):
            airbench's flip + 2-pixel translate (K. Jordan, "94% on CIFAR-10 in
            3.29 Seconds on a Single GPU", 2024), a milder crop than
            ``"crop_flip"``'s.
        ``"none"``: returns ``None``.

    The layers run inside ``tf.data.map`` (Keras switches them to TensorFlow
    ops there, whatever the backend) on float images ``(batch, H, W, C)`` in
    [0, 255].

    Raises:
        UsageError: unknown policy.
    """
    if policy not in AUGMENTATIONS:
        raise UsageError(f"Unknown augmentation policy; valid: {', '.join(AUGMENTATIONS)}. Received: policy={policy!r}")
    if policy == "none":
        return None

    def layer_seed(i):  # one seed per layer: equal seeds would draw equal numbers
        return None if seed is None else seed + i

    def flip(i):
        return layers.RandomFlip("horizontal", seed=layer_seed(i))

    def shift(i, fraction, fill="constant"):  # whole pixels: nearest-neighbour interpolation
        return layers.RandomTranslation(fraction, fraction, fill_mode=fill, interpolation="nearest", seed=layer_seed(i))

    steps = {
        "flip": lambda: [flip(0)],
        "crop_flip": lambda: [shift(0, 4 / 32), flip(1)],
        # A (p, p) factor: Keras draws each image's probability from it, so exactly p.
        "flip_erase": lambda: [flip(0), layers.RandomErasing(factor=(ERASE_PROBABILITY,) * 2, seed=layer_seed(1))],
        "shift": lambda: [shift(0, 0.08)],
        "flip_shift": lambda: [flip(0), shift(1, FLIP_SHIFT, fill="reflect")],
        "affine": lambda: [layers.RandomRotation(10 / 360, fill_mode="constant", seed=layer_seed(0)),
                           layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=layer_seed(1)),
                           layers.RandomZoom(0.1, fill_mode="constant", seed=layer_seed(2))],
    }[policy]()
    return layers.Pipeline(steps, name=f"augment_{policy}")
