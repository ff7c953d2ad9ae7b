"""tf.data pipelines for ``model.fit``: a dataset's train, validation and test splits as batches.

Pipeline (train): decode into memory -> permute indices -> batch -> gather ->
augment (``keras.layers.Pipeline`` in ``tf.data.map``) -> labels as the loss needs them ->
prefetch (AUTOTUNE). A folder split too large to hold decoded (:data:`MEMORY_BUDGET`) is read
from its files each pass in the same order instead. Batches are ``((batch, H, W, C) uint8,
labels)``, labels ``(batch,)`` int64, or ``(batch, classes)`` float32 one-hot for a loss with label
smoothing: augmentation output is rounded back to uint8, so training sees the same dtype as
inference.

Randomness is keyed, not carried: the order of epoch ``e`` is a function of
``(seed, e)`` and the augmentation of its step ``s`` a function of
``(seed, e, s)``, with ``e`` read from a variable that :meth:`Datasets.set_epoch`
sets (as torch's ``DistributedSampler.set_epoch``). A run resumed at epoch
``e`` therefore sees exactly the batches the uninterrupted run saw.

Keras has no public way to key a preprocessing layer's draws inside ``tf.data``: its random
layers draw there from a TensorFlow-side ``SeedGenerator`` that ``layer._get_seed_generator``
makes on first use, and :func:`_seed_generators` sets those generators' state per step. The one
private name is checked where it is used, with an error naming the Keras version.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from kcnn.config import DEFAULT_VAL_SPLIT, default_augmentation
from kcnn.data import folders, tfds_access
from kcnn.data.augment import alternates_flip, make_augmentation, mixes_labels
from kcnn.data.info import DatasetInfo
from kcnn.errors import UsageError

#: A folder split whose decoded images would take more bytes than this is read from its files each
#: epoch instead of being held in memory.
MEMORY_BUDGET = 2 * 2**30


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
    skipped: list = dataclasses.field(default_factory=list)  # [(path, reason)] of undecodable files

    def set_epoch(self, epoch: int) -> None:
        """Key the next pass over ``train`` (order and augmentation) to ``epoch`` (0-based)."""
        self.epoch.assign(int(epoch))


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
    if not augmentation.built:
        augmentation(np.zeros((1, *image_shape), "float32"), training=False)


def _seed_generators(augmentation, image_shape) -> list:
    """The TensorFlow-side ``SeedGenerator`` of each random layer of ``augmentation``.

    Keras makes them on the first call inside a ``tf.data`` graph (``DataLayer``),
    so one throw-away trace on images of ``image_shape`` ``(H, W, C)`` creates them first.
    """
    probe = tf.zeros([1, *image_shape], "float32")
    tf.data.Dataset.from_tensors(probe).map(lambda x: augmentation(x, training=True))
    random_layers = [layer for layer in augmentation.layers if getattr(layer, "generator", None) is not None]
    if not all(hasattr(layer, "_get_seed_generator") for layer in random_layers):
        raise RuntimeError(f"Keras {keras.__version__}'s random preprocessing layers have no _get_seed_generator, "
                           "which kcnn's keyed augmentation sets; install the Keras range pyproject.toml gives")
    return [layer._get_seed_generator("tensorflow") for layer in random_layers]


def _epoch_order(count: int, seed, epoch):
    """A ``tf.data.Dataset`` of one pass's indices ``0..count-1``, permuted: ``stateless_shuffle``
    keyed by ``(seed, epoch)`` (a full shuffle, no buffer); a fresh shuffle when ``seed`` is None."""

    def one_pass(_):
        indices = tf.range(count, dtype=tf.int64)
        if seed is None:
            return tf.data.Dataset.from_tensor_slices(tf.random.shuffle(indices))
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
        return tf.data.Dataset.from_tensor_slices(tf.random.experimental.stateless_shuffle(indices, seed=key))

    # The flat_map makes each pass (each Keras epoch) read the epoch variable anew.
    return tf.data.Dataset.range(1).flat_map(one_pass).apply(tf.data.experimental.assert_cardinality(count))


def _first_orientations(count: int, seed):
    """``(count,)`` bool: which images of a split start mirrored under the alternating flip, a coin per
    image keyed by ``seed`` (drawn afresh when ``seed`` is None)."""
    if seed is None:
        return tf.random.uniform([count]) < 0.5
    return tf.random.stateless_uniform([count], seed=tf.constant([seed, 7919], tf.int64)) < 0.5


def _augmenter(augmentation, image_shape, seed, epoch, num_classes=None, count=None):
    """``(step, indices, images, labels) -> (images, labels)``: ``augmentation`` on a uint8 batch, output
    rounded back to uint8, its random draws keyed by ``(seed, epoch, step)`` when ``seed`` is given;
    and whether batches may be augmented in parallel (not when keyed: calls would race on the
    generators' state). A label-mixing policy (:func:`kcnn.data.augment.mixes_labels`) gets the
    labels one-hot over ``num_classes`` and gives them mixed, ``(batch, num_classes)`` float32.
    An alternating-flip policy (:func:`kcnn.data.augment.alternates_flip`) first mirrors image
    ``i`` of the split's ``count`` when its first orientation (:func:`_first_orientations`) differs
    from the epoch's parity: airbench's alternating flip, keyed by epoch like the rest."""
    if augmentation is None:
        return (lambda step, indices, images, labels: (images, labels)), True
    mixing = mixes_labels(augmentation)
    if mixing and num_classes is None:
        raise ValueError("a label-mixing augmentation needs num_classes")
    _build_eagerly(augmentation, image_shape)
    generators = _seed_generators(augmentation, image_shape) if seed is not None else []
    mirrored = _first_orientations(count, seed) if alternates_flip(augmentation) else None

    def augment(step, indices, images, labels):
        if mirrored is not None:
            flip = tf.not_equal(tf.gather(mirrored, indices), tf.equal(tf.math.floormod(epoch, 2), 1))
            images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
        counter = tf.cast(epoch, tf.int64) * _DRAWS_PER_EPOCH + step * _DRAWS_PER_BATCH
        for i, generator in enumerate(generators):
            generator.state.assign(tf.stack([tf.constant(seed * 1000 + i, tf.int64), counter]))
        images = tf.cast(images, "float32")
        if mixing:
            mixed = augmentation({"images": images, "labels": tf.one_hot(labels, num_classes)}, training=True)
            images, labels = mixed["images"], mixed["labels"]
        else:
            images = augmentation(images, training=True)
        return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8), labels

    return augment, not generators


def make_pipeline(ds, *, batch_size: int, training: bool, augmentation=None, seed=None, epoch=None,
                  num_classes: int | None = None):
    """Turn a TFDS ``(image uint8, label int64)`` dataset into batches for ``model.fit``.

    Training pipelines hold the split in memory as two tensors and gather each batch by the pass's
    order (:func:`_epoch_order`); evaluation pipelines keep the split's order and are cached after
    the first pass.

    Args:
        ds: unbatched ``tf.data.Dataset`` of ``((H, W, C) uint8, () int64)``.
        batch_size: images per batch.
        training: shuffle (and augment) when True.
        augmentation: a layer from :func:`make_augmentation`, or None.
        seed: shuffle and augmentation seed (int); None draws fresh randomness each pass.
        epoch: ``tf.Variable`` (int64 scalar) read at the start of each pass; the
            pass's order and augmentation are functions of ``(seed, epoch)``
            (see the module docstring). None: every pass is keyed to epoch 0.
        num_classes: the labels' classes; needed by a label-mixing ``augmentation``.

    Returns:
        ``tf.data.Dataset`` of ``((batch, H, W, C) uint8, (batch,) int64)`` (mixed labels
        ``(batch, num_classes)`` float32 under a label-mixing policy), prefetched.
    """
    if not training:
        return ds.cache().batch(batch_size).prefetch(tf.data.AUTOTUNE)
    epoch = tf.constant(0, tf.int64) if epoch is None else epoch
    # Eager tensors: captured by the functions below by reference, not copied into a graph.
    images, labels = (tf.concat(parts, 0) for parts in zip(*ds.batch(4096)))
    augment, parallel = _augmenter(augmentation, images.shape[1:], seed, epoch, num_classes, int(labels.shape[0]))

    def gather(step, index):
        return augment(step, index, tf.gather(images, index), tf.gather(labels, index))

    order = _epoch_order(int(labels.shape[0]), seed, epoch)
    return (order.batch(batch_size).enumerate()
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE if parallel else None).prefetch(tf.data.AUTOTUNE))


def make_file_pipeline(paths, labels, image_shape, *, batch_size: int, training: bool, augmentation=None,
                       seed=None, epoch=None, num_classes: int | None = None):
    """:func:`make_pipeline` for a split read from its image files each pass (a folder too large to
    hold decoded): the same order (a permutation of file indices keyed by ``(seed, epoch)``), the
    same augmentation, so the batches equal those of the in-memory pipeline of the decoded files.

    Args:
        paths: image files (all decodable: :func:`kcnn.folders.decode_all` checked them).
        labels: their labels.
        image_shape: ``(H, W, C)`` the files are decoded to (:func:`kcnn.data.folders.decode`).
        batch_size, training, augmentation, seed, epoch, num_classes: as :func:`make_pipeline`.

    Returns:
        ``tf.data.Dataset`` of ``((batch, H, W, C) uint8, (batch,) int64)``, prefetched.
    """
    files = tf.constant([str(p) for p in paths])
    targets = tf.constant(np.asarray(labels, np.int64))
    shape = tuple(int(d) for d in image_shape)

    def read(index):
        image = tf.numpy_function(lambda p: folders.decode(p.decode(), shape), [tf.gather(files, index)], tf.uint8,
                                  stateful=False)
        return index, tf.ensure_shape(image, shape), tf.gather(targets, index)

    epoch = tf.constant(0, tf.int64) if epoch is None else epoch
    order = _epoch_order(len(paths), seed, epoch) if training else tf.data.Dataset.range(len(paths))
    # deterministic: parallel reads, the order kept
    batches = order.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size)
    if not training:
        return batches.map(lambda indices, images, labels: (images, labels)).prefetch(tf.data.AUTOTUNE)
    augment, parallel = _augmenter(augmentation, shape, seed, epoch, num_classes, len(paths))
    return (batches.enumerate().map(lambda step, batch: augment(step, *batch),
                                    num_parallel_calls=tf.data.AUTOTUNE if parallel else None)
            .prefetch(tf.data.AUTOTUNE))


def split_names(num_train: int, val_split: float) -> tuple[str, str | None, int]:
    """TFDS split-slicing strings for train and validation, and the validation size.

    The last ``round(val_split * num_train)`` examples of ``train`` validate.
    Returns ``(train_split, val_split_or_None, num_val)``.

    Raises:
        UsageError: ``val_split`` outside [0, 0.5].
    """
    if not 0.0 <= val_split <= 0.5:
        raise UsageError(f"val_split must be in [0, 0.5]. Received: val_split={val_split}")
    num_val = round(num_train * val_split)
    if num_val == 0:
        return "train", None, 0
    cut = num_train - num_val
    return f"train[:{cut}]", f"train[{cut}:]", num_val


def load_split(info: DatasetInfo, split: str):
    """One split of a prepared TFDS dataset as unbatched ``((H, W, C) uint8, () int64)`` pairs."""
    return tfds_access.read_split(info.name, split, info.data_dir)


def load_split_arrays(info: DatasetInfo, split: str = "test"):
    """A whole split as NumPy: ``((N, H, W, C) uint8, (N,) int64)``.

    Args:
        info: the dataset (:func:`kcnn.data.load_info`; a folder's says how to read its files).
        split: TFDS split string; a folder's ``train``, ``val``, ``test`` or ``train[:N]``.

    Raises:
        UsageError: unknown split.
    """
    if info.folder is not None:
        return folders.decode_split(info, split)[:2]
    ds = load_split(info, split).batch(1024).prefetch(tf.data.AUTOTUNE)
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def _folder_pipelines(info: DatasetInfo, *, batch_size: int, eval_batch_size: int, augmentation, seed: int,
                      epoch, memory_budget: int) -> tuple[dict, dict, list]:
    """A folder's train/val/test pipelines: held decoded in memory while a split fits in
    ``memory_budget`` bytes, else read from its files each pass. Returns ``(pipelines, sizes, skipped)``."""
    pipelines, sizes, skipped = {}, {}, []
    for split in ("train", "val", "test"):
        if not info.folder.files[split]:
            pipelines[split], sizes[split] = None, 0
            continue
        in_memory = len(info.folder.files[split]) * math.prod(info.image_shape) <= memory_budget
        images, labels, paths, bad = folders.decode_split(info, split, keep=in_memory)
        skipped += bad
        sizes[split] = len(labels)
        training = split == "train"
        options = dict(batch_size=batch_size if training else eval_batch_size, training=training,
                       augmentation=augmentation if training else None, seed=seed, epoch=epoch,
                       num_classes=info.num_classes)
        if in_memory:
            pipelines[split] = make_pipeline(tf.data.Dataset.from_tensor_slices((images, labels)), **options)
        else:
            pipelines[split] = make_file_pipeline(paths, labels, info.image_shape, **options)
    return pipelines, sizes, skipped


def one_hot_labels(dataset, num_classes: int):
    """``(images, labels (batch,))`` batches as ``(images, one_hot (batch, num_classes) float32)``; None stays None."""
    if dataset is None:
        return None
    if len(dataset.element_spec[1].shape) == 2:  # mixed by the augmentation already
        return dataset
    return dataset.map(lambda images, labels: (images, tf.one_hot(labels, num_classes)),
                       num_parallel_calls=tf.data.AUTOTUNE)


def load_datasets(info: DatasetInfo, *, batch_size: int = 128, val_split: float = DEFAULT_VAL_SPLIT,
                  augment: str | bool = True, seed: int = 0, eval_batch_size: int = 512,
                  one_hot: bool = False, memory_budget: int | None = None) -> Datasets:
    """Load train/validation/test pipelines of a TFDS dataset or a folder of images.

    Args:
        info: the dataset (:func:`kcnn.data.load_info`).
        batch_size: training batch size (images).
        val_split: fraction of TFDS ``train`` (of each class of a folder's training files, when it
            has no ``val/``) held out for validation (0 = none).
        augment: True for the dataset's default policy, False for none, or a
            policy name from :data:`kcnn.config.AUGMENTATIONS`.
        seed: shuffle and augmentation seed.
        eval_batch_size: batch size of the validation and test pipelines.
        one_hot: train and validation labels as one-hot ``(batch, classes)`` float32, for a loss
            with label smoothing (:func:`kcnn.training.make_loss`); the test split keeps int labels.
        memory_budget: bytes of decoded images a folder split may hold in memory (None: :data:`MEMORY_BUDGET`).

    Raises:
        UsageError: unknown policy, bad val_split.
        kcnn.data.folders.FolderError: a folder split none of whose images can be read.
    """
    info = info.with_val_split(val_split)
    if augment is True:
        augment = default_augmentation(info.image_shape)
    augmentation = make_augmentation(augment or "none", seed=seed)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    if info.folder is not None:
        pipelines, sizes, skipped = _folder_pipelines(
            info, batch_size=batch_size, eval_batch_size=eval_batch_size, augmentation=augmentation, seed=seed,
            epoch=epoch, memory_budget=MEMORY_BUDGET if memory_budget is None else memory_budget)
        ds = Datasets(train=pipelines["train"], val=pipelines["val"], test=pipelines["test"], info=info,
                      num_train=sizes["train"], num_val=sizes["val"], epoch=epoch, skipped=skipped)
    else:
        train_split, val_name, num_val = split_names(info.num_train, val_split)
        train = make_pipeline(load_split(info, train_split), batch_size=batch_size, training=True,
                              augmentation=augmentation, seed=seed, epoch=epoch, num_classes=info.num_classes)
        val = None
        if val_name is not None:
            val = make_pipeline(load_split(info, val_name), batch_size=eval_batch_size, training=False)
        test = make_pipeline(load_split(info, "test"), batch_size=eval_batch_size, training=False)
        ds = Datasets(train=train, val=val, test=test, info=info, num_train=info.num_train - num_val,
                      num_val=num_val, epoch=epoch)
    if one_hot:
        ds.train, ds.val = (one_hot_labels(d, info.num_classes) for d in (ds.train, ds.val))
    return ds
