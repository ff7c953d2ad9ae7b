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
#: flip_shift_cutout: the erased square's share of the image, 16x16 of 32x32 (DeVries & Taylor 2017,
#: "Improved Regularization of Convolutional Neural Networks with Cutout": 16 px on CIFAR-10), and its
#: fill, mid-gray (the paper zeroes normalized pixels: the mean colour).
CUTOUT_AREA = 0.25
CUTOUT_FILL = 128.0
#: flip_shift_mixup: Beta(alpha, alpha) of the mixing weight (Zhang et al. 2018, "mixup": 0.2 on ImageNet,
#: Keras' default).
MIXUP_ALPHA = 0.2
#: flip_shift_randaugment: RandAugment's operations per image and magnitude (Cubuk et al. 2020; N=2, Keras'
#: defaults).
RANDAUGMENT_OPS, RANDAUGMENT_FACTOR = 2, 0.5


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
        ``"altflip_shift"``: ``"flip_shift"`` with airbench's alternating flip in place of
            the random one: each image's orientation is drawn once per run, and every odd epoch
            mirrors them all, so every image is seen both ways in every two epochs. The mirror
            is applied by :mod:`kcnn.data.pipelines`, which knows each image's index and the
            epoch (:func:`alternates_flip`); the layers here are the shift alone.
        ``"flip_shift_cutout"``: ``"flip_shift"``, then cutout: every image gets a
            square of :data:`CUTOUT_AREA` of its area (16x16 on 32x32) at a random place
            filled with :data:`CUTOUT_FILL` (Keras ``RandomErasing``, fixed scale).
        ``"flip_shift_mixup"``: ``"flip_shift"``, then MixUp (Zhang et al. 2018, Keras
            ``MixUp``, alpha :data:`MIXUP_ALPHA`): each image blended with another of the
            batch, and its one-hot label with the same weight.
        ``"flip_shift_cutmix"``: ``"flip_shift"``, then CutMix (Yun et al. 2019, Keras
            ``CutMix``): a rectangle pasted from another image of the batch, the labels
            mixed by its area.
        ``"flip_shift_randaugment"``: ``"flip_shift"``, then RandAugment (Cubuk et al. 2020,
            Keras ``RandAugment``, :data:`RANDAUGMENT_OPS` operations at factor
            :data:`RANDAUGMENT_FACTOR`).
        ``"none"``: returns ``None``.

    The label-mixing policies (:data:`kcnn.config.LABEL_MIXING`) take and give
    ``{"images", "labels"}`` with one-hot labels (:func:`mixes_labels`).

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
        "altflip_shift": lambda: [shift(1, FLIP_SHIFT, fill="reflect")],
        "flip_shift_cutout": lambda: [flip(0), shift(1, FLIP_SHIFT, fill="reflect"),
                                      layers.RandomErasing(factor=(1.0, 1.0), scale=(CUTOUT_AREA, CUTOUT_AREA),
                                                           fill_value=CUTOUT_FILL, seed=layer_seed(2))],
        "flip_shift_mixup": lambda: [flip(0), shift(1, FLIP_SHIFT, fill="reflect"),
                                     layers.MixUp(alpha=MIXUP_ALPHA, seed=layer_seed(2))],
        "flip_shift_cutmix": lambda: [flip(0), shift(1, FLIP_SHIFT, fill="reflect"), layers.CutMix(seed=layer_seed(2))],
        "flip_shift_randaugment": lambda: [flip(0), shift(1, FLIP_SHIFT, fill="reflect"),
                                           layers.RandAugment(value_range=(0, 255), num_ops=RANDAUGMENT_OPS,
                                                              factor=RANDAUGMENT_FACTOR, seed=layer_seed(2))],
        "affine": lambda: [layers.RandomRotation(10 / 360, fill_mode="constant", seed=layer_seed(0)),
                           layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=layer_seed(1)),
                           layers.RandomZoom(0.1, fill_mode="constant", seed=layer_seed(2))],
    }[policy]()
    return layers.Pipeline(steps, name=f"augment_{policy}")


def mixes_labels(augmentation) -> bool:
    """Whether a policy of :func:`make_augmentation` mixes images and labels (MixUp, CutMix), and so
    takes ``{"images", "labels"}`` with one-hot labels."""
    return augmentation is not None and any(isinstance(layer, (layers.MixUp, layers.CutMix))
                                            for layer in augmentation.layers)


def alternates_flip(augmentation) -> bool:
    """Whether a policy of :func:`make_augmentation` wants airbench's alternating flip (``altflip_*``),
    which the pipeline applies before the policy's layers."""
    return augmentation is not None and augmentation.name.startswith("augment_altflip")
