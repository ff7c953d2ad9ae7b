"""Input pipelines: TFDS datasets as tf.data, augmented by Keras preprocessing layers.

Any TFDS image-classification dataset with ``image`` and ``label`` features
loads by name (mnist, fashion_mnist, cifar10 and cifar100 are the ones kcnn is
tuned for). Data never downloads implicitly: it is read from a prepared TFDS
data_dir, given by ``data_dir=`` / ``--data-dir`` or the ``TFDS_DATA_DIR``
environment variable (TFDS' own default, ``~/tensorflow_datasets``, otherwise).

Pipeline (train): decode into memory -> permute indices -> batch -> gather ->
augment (``keras.layers.Pipeline`` in ``tf.data.map``) -> prefetch (AUTOTUNE).
Batches are ``((batch, H, W, C) uint8, (batch,) int64)``: augmentation output
is rounded back to uint8, so training sees the same dtype as inference.

Randomness is keyed, not carried: the order of epoch ``e`` is a function of
``(seed, e)`` and the augmentation of its step ``s`` a function of
``(seed, e, s)``, with ``e`` read from a variable that :meth:`Datasets.set_epoch`
sets (as torch's ``DistributedSampler.set_epoch``). A run resumed at epoch
``e`` therefore sees exactly the batches the uninterrupted run saw.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

#: Default train/validation split: the last 10% of TFDS' train split validates.
DEFAULT_VAL_SPLIT = 0.1
#: Datasets kcnn documents and tests; other TFDS image datasets work too.
KNOWN_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
#: Augmentation policies by name.
AUGMENTATIONS = ("none", "flip", "crop_flip", "flip_erase", "shift", "affine", "flip_shift")
#: flip_shift: the largest shift, as a fraction of each side (2 pixels on 32x32, airbench's translate).
FLIP_SHIFT = 2 / 32
#: flip_erase: probability that an image gets one erased rectangle (the paper's p = 0.5).
ERASE_PROBABILITY = 0.5


class DataNotFoundError(RuntimeError):
    """The dataset is not prepared in the TFDS data_dir and cannot be downloaded."""


class DataCorruptError(RuntimeError):
    """A prepared dataset's files are missing, truncated or unreadable; the message names them."""


#: Bytes TFRecord adds around each record: length (8), its CRC (4) and the data's CRC (4).
TFRECORD_FRAMING = 16


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What kcnn needs to know of a TFDS dataset.

    Attributes:
        name: TFDS name, e.g. ``"cifar10"``.
        version: TFDS version string of the prepared copy, e.g. ``"3.0.2"``.
        class_names: label names in label-index order (from TFDS metadata).
        image_shape: ``(H, W, C)`` of one uint8 image.
        num_train: examples in TFDS' ``train`` split.
        num_test: examples in TFDS' ``test`` split.
        data_dir: the TFDS data_dir root it was read from.
    """

    name: str
    version: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    num_train: int
    num_test: int
    data_dir: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclasses.dataclass
class Datasets:
    """The three pipelines of a training run, and their sizes in examples."""

    train: object  # tf.data.Dataset
    val: object | None  # tf.data.Dataset, or None when val_split == 0
    test: object  # tf.data.Dataset
    info: DatasetInfo
    num_train: int
    num_val: int
    epoch: object = None  # tf.Variable (int64) the train pipeline reads at each pass

    def set_epoch(self, epoch: int) -> None:
        """Key the next pass over ``train`` (order and augmentation) to ``epoch`` (0-based)."""
        self.epoch.assign(int(epoch))


def _tfds():
    """Import TensorFlow Datasets with TensorFlow kept off any GPU (torch owns it)."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # already initialized: nothing to change
        pass
    import tensorflow_datasets as tfds

    return tfds


def _builder(name: str, data_dir: str | None):
    tfds = _tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown dataset {name!r}: TFDS has no such builder "
            f"(kcnn is tuned for {', '.join(KNOWN_DATASETS)})"
        ) from None
    if not builder.is_prepared():
        root = data_dir or os.environ.get("TFDS_DATA_DIR") or str(builder.data_dir_root)
        raise DataNotFoundError(
            f"Dataset {name!r} is not prepared in the TFDS data_dir {root} and kcnn "
            "does not download. Point kcnn at a data_dir that holds it: set "
            "TFDS_DATA_DIR=/path/to/tfds or pass --data-dir /path/to/tfds."
        )
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(
            f"Dataset {name!r} is not an image-classification dataset "
            f"(needs 'image' and 'label' features; has {sorted(features.keys())})"
        )
    check_files(builder)
    return builder


def check_files(builder) -> None:
    """Check that every split's TFRecord shards exist and have the size TFDS recorded.

    TFDS' ``dataset_info.json`` stores each split's payload in bytes and its
    example count; a TFRecord file adds :data:`TFRECORD_FRAMING` bytes per
    example, so the shards' sizes must add up exactly. This catches truncated
    and missing files before any training starts, by file name; bytes damaged
    in place are caught by TFRecord's CRCs when read.

    Raises:
        DataCorruptError: a shard is missing or the sizes do not add up.
    """
    if str(builder.info.file_format.value) != "tfrecord":
        return
    for split in builder.info.splits.values():
        paths = [Path(p) for p in split.filepaths]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise DataCorruptError(
                f"{missing[0]}: missing ({len(missing)} of {len(paths)} files of split "
                f"{split.name!r}); prepare the dataset again")
        size = sum(p.stat().st_size for p in paths)
        expected = int(split.num_bytes) + TFRECORD_FRAMING * int(split.num_examples)
        if size != expected:
            where = str(paths[0]) if len(paths) == 1 else f"{paths[0].parent} ({split.name} shards)"
            raise DataCorruptError(
                f"{where}: {size} bytes, expected {expected} from dataset_info.json "
                f"({'truncated' if size < expected else 'too long'}); prepare the dataset again")


def load_info(name: str, data_dir: str | None = None) -> DatasetInfo:
    """Read a prepared dataset's metadata.

    Raises:
        ValueError: unknown dataset name, or not an image-classification dataset.
        DataNotFoundError: the dataset is not prepared in the data_dir.
    """
    builder = _builder(name, data_dir)
    info = builder.info
    return DatasetInfo(
        name=name,
        version=str(info.version),
        class_names=tuple(info.features["label"].names),
        image_shape=tuple(int(d) for d in info.features["image"].shape),
        num_train=int(info.splits["train"].num_examples),
        num_test=int(info.splits["test"].num_examples),
        data_dir=str(builder.data_dir_root),
    )


def default_augmentation(image_shape) -> str:
    """The default policy for images of ``image_shape`` ``(H, W, C)``: ``crop_flip`` for colour
    images (C = 3, CIFAR), ``affine`` for gray digits/clothes."""
    return "crop_flip" if image_shape[-1] == 3 else "affine"


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
        ValueError: unknown policy.
    """
    import keras
    from keras import layers

    if policy not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation policy; valid: {', '.join(AUGMENTATIONS)}. Received: policy={policy!r}")
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
    return keras.layers.Pipeline(steps, name=f"augment_{policy}")


#: Room in each augmentation seed-generator's counter for one batch and one epoch.
_DRAWS_PER_BATCH, _DRAWS_PER_EPOCH = 2**6, 2**30


def _build_eagerly(augmentation, image_shape) -> None:
    """Build ``augmentation`` and its layers with one eager call on a zero image ``(1, *image_shape)``.

    Left unbuilt, Keras builds a layer on its first call by running it on
    placeholder tensors under a ``StatelessScope``; inside a ``tf.data`` trace on
    the torch backend with a CUDA default device that run fails, and the
    TensorFlow-side ``SeedGenerator`` it made on the way stays uninitialized: the
    trace then fails with "'NoneType' object has no attribute 'assign'".
    """
    import numpy as np

    if not augmentation.built:
        augmentation(np.zeros((1, *image_shape), "float32"), training=False)


def _seed_generators(augmentation, images) -> list:
    """The TensorFlow-side ``SeedGenerator`` of each random layer of ``augmentation``.

    Keras makes them on the first call inside a ``tf.data`` graph (``DataLayer``),
    so one throw-away trace creates them first.
    """
    import tensorflow as tf

    probe = tf.zeros([1, *images.shape[1:]], "float32")
    tf.data.Dataset.from_tensors(probe).map(lambda x: augmentation(x, training=True))
    return [layer._get_seed_generator("tensorflow") for layer in augmentation.layers
            if getattr(layer, "generator", None) is not None]


def make_pipeline(ds, *, batch_size: int, training: bool, augmentation=None, seed=None, epoch=None):
    """Turn a TFDS ``(image uint8, label int64)`` dataset into batches for ``model.fit``.

    Training pipelines hold the split in memory as two tensors and draw each
    pass's order as a permutation of indices (``stateless_shuffle`` keyed by
    ``(seed, epoch)``: a full shuffle, no buffer); evaluation pipelines keep the
    split's order and are cached after the first pass.

    Args:
        ds: unbatched ``tf.data.Dataset`` of ``((H, W, C) uint8, () int64)``.
        batch_size: images per batch.
        training: shuffle (and augment) when True.
        augmentation: a layer from :func:`make_augmentation`, or None.
        seed: shuffle and augmentation seed (int); None draws fresh randomness each pass.
        epoch: ``tf.Variable`` (int64 scalar) read at the start of each pass; the
            pass's order and augmentation are functions of ``(seed, epoch)``
            (see the module docstring). None: every pass is keyed to epoch 0.

    Returns:
        ``tf.data.Dataset`` of ``((batch, H, W, C) uint8, (batch,) int64)``, prefetched.
    """
    import tensorflow as tf

    if not training:
        return ds.cache().batch(batch_size).prefetch(tf.data.AUTOTUNE)
    keyed = seed is not None
    if epoch is None:
        epoch = tf.constant(0, tf.int64)
    # Eager tensors: captured by the functions below by reference, not copied into a graph.
    images, labels = (tf.concat(parts, 0) for parts in zip(*ds.batch(4096)))
    count = int(labels.shape[0])

    def one_pass(_):
        indices = tf.range(count, dtype=tf.int64)
        if keyed:
            order = tf.random.experimental.stateless_shuffle(
                indices, seed=tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)]))
        else:
            order = tf.random.shuffle(indices)
        return tf.data.Dataset.from_tensor_slices(order)

    if augmentation is not None:
        _build_eagerly(augmentation, images.shape[1:])
    # The flat_map makes each pass (each Keras epoch) read the epoch variable anew.
    order = tf.data.Dataset.range(1).flat_map(one_pass).apply(tf.data.experimental.assert_cardinality(count))
    generators = _seed_generators(augmentation, images) if keyed and augmentation is not None else []

    def gather(step, index):
        batch_images, batch_labels = tf.gather(images, index), tf.gather(labels, index)
        if augmentation is None:
            return batch_images, batch_labels
        counter = tf.cast(epoch, tf.int64) * _DRAWS_PER_EPOCH + step * _DRAWS_PER_BATCH
        for i, generator in enumerate(generators):
            generator.state.assign(tf.stack([tf.constant(seed * 1000 + i, tf.int64), counter]))
        batch_images = augmentation(tf.cast(batch_images, "float32"), training=True)
        batch_images = tf.cast(tf.clip_by_value(tf.round(batch_images), 0, 255), tf.uint8)
        return batch_images, batch_labels

    # Sequential when keyed: parallel calls would race on the generators' state.
    parallel = None if generators else tf.data.AUTOTUNE
    return order.batch(batch_size).enumerate().map(gather, num_parallel_calls=parallel).prefetch(tf.data.AUTOTUNE)


def split_names(num_train: int, val_split: float) -> tuple[str, str | None, int]:
    """TFDS split-slicing strings for train and validation, and the validation size.

    The last ``round(val_split * num_train)`` examples of ``train`` validate.
    Returns ``(train_split, val_split_or_None, num_val)``.

    Raises:
        ValueError: ``val_split`` outside [0, 0.5].
    """
    if not 0.0 <= val_split <= 0.5:
        raise ValueError(f"val_split must be in [0, 0.5]. Received: val_split={val_split}")
    num_val = round(num_train * val_split)
    if num_val == 0:
        return "train", None, 0
    cut = num_train - num_val
    return f"train[:{cut}]", f"train[{cut}:]", num_val


def load_split(name: str, split: str, data_dir: str | None = None):
    """``tfds.load`` one split as unbatched ``((H, W, C) uint8, () int64)`` pairs, no download."""
    _builder(name, data_dir)  # clear errors for unknown / unprepared datasets
    tfds = _tfds()
    return tfds.load(name, split=split, data_dir=data_dir, as_supervised=True,
                     download=False, shuffle_files=False)


def load_split_arrays(name: str, split: str = "test", data_dir: str | None = None):
    """A whole TFDS split as NumPy: ``((N, H, W, C) uint8, (N,) int64)``.

    Raises:
        ValueError: unknown dataset. DataNotFoundError: not prepared.
    """
    import numpy as np
    import tensorflow as tf

    ds = load_split(name, split, data_dir).batch(1024).prefetch(tf.data.AUTOTUNE)
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def load_datasets(name: str, *, data_dir: str | None = None, batch_size: int = 128,
                  val_split: float = DEFAULT_VAL_SPLIT, augment: str | bool = True,
                  seed: int = 0, eval_batch_size: int = 512) -> Datasets:
    """Load train/validation/test pipelines of a TFDS dataset.

    Args:
        name: TFDS dataset name.
        data_dir: TFDS data_dir; None uses ``TFDS_DATA_DIR`` or TFDS' default.
        batch_size: training batch size (images).
        val_split: fraction of TFDS ``train`` held out for validation (0 = none).
        augment: True for the dataset's default policy, False for none, or a
            policy name from :data:`AUGMENTATIONS`.
        seed: shuffle and augmentation seed.
        eval_batch_size: batch size of the validation and test pipelines.

    Raises:
        ValueError: unknown dataset or policy, bad val_split.
        DataNotFoundError: the dataset is not prepared in the data_dir.
    """
    info = load_info(name, data_dir)
    train_split, val_name, num_val = split_names(info.num_train, val_split)
    if augment is True:
        augment = default_augmentation(info.image_shape)
    augmentation = make_augmentation(augment or "none", seed=seed)
    import tensorflow as tf

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

    def load(split):
        return load_split(name, split, data_dir)

    train = make_pipeline(load(train_split), batch_size=batch_size, training=True,
                          augmentation=augmentation, seed=seed, epoch=epoch)
    val = None
    if val_name is not None:
        val = make_pipeline(load(val_name), batch_size=eval_batch_size, training=False)
    test = make_pipeline(load("test"), batch_size=eval_batch_size, training=False)
    return Datasets(train=train, val=val, test=test, info=info,
                    num_train=info.num_train - num_val, num_val=num_val, epoch=epoch)
