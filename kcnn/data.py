"""Input pipelines: TFDS datasets and folders of images as tf.data, augmented by Keras preprocessing layers.

Any TFDS image-classification dataset with ``image`` and ``label`` features
loads by name (mnist, fashion_mnist, cifar10 and cifar100 are the ones kcnn is
tuned for; cifar100 with its 100 fine labels, TFDS' supervised keys). It is read
from a TFDS data_dir, given by ``data_dir=`` / ``--data-dir`` or the
``TFDS_DATA_DIR`` environment variable (TFDS' own default, ``~/tensorflow_datasets``,
otherwise); one that is not there is downloaded and prepared by TFDS when
``download=True`` (``kcnn train`` does, unless ``--no-download``). A folder of
class folders loads through :mod:`kcnn.folders`.

Pipeline (train): decode into memory -> permute indices -> batch -> gather ->
augment (``keras.layers.Pipeline`` in ``tf.data.map``) -> prefetch (AUTOTUNE).
A folder split too large to hold decoded (:data:`MEMORY_BUDGET`) is read from its files each pass
in the same order instead. Batches are ``((batch, H, W, C) uint8, (batch,) int64)``: augmentation output
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
import sys
from pathlib import Path

#: Default train/validation split: the last 10% of TFDS' train split validates.
DEFAULT_VAL_SPLIT = 0.1
#: A folder's images are brought to (H, W) without --image-size: twice CIFAR's side, small enough for
#: these small CNNs to train on a CPU, large enough that most photos stay recognisable.
DEFAULT_IMAGE_SIZE = (64, 64)
#: Share of each class's files that tests when a folder has no test/ folder (kcnn.folders).
DEFAULT_TEST_SPLIT = 0.2
#: A folder split whose decoded images would take more bytes than this is read from its files each
#: epoch instead of being held in memory.
MEMORY_BUDGET = 2 * 2**30
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
    """What kcnn needs to know of a TFDS dataset or a folder of images.

    Attributes:
        name: TFDS name, e.g. ``"cifar10"``, or the folder's absolute path.
        version: TFDS version string of the prepared copy, e.g. ``"3.0.2"``; ``"folder"`` for a folder.
        class_names: label names in label-index order (TFDS metadata, or the class folders' names).
        image_shape: ``(H, W, C)`` of one uint8 image (a folder's: the size its images are brought to).
        num_train: examples in TFDS' ``train`` split (a folder's: its training files, validation
            files to be cut from them included).
        num_test: examples in the ``test`` split.
        data_dir: the TFDS data_dir root it was read from, or the folder.
        folder: the files of a folder dataset by split (:class:`kcnn.folders.FolderSplits`), else None.
    """

    name: str
    version: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    num_train: int
    num_test: int
    data_dir: str
    folder: object = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> str:
        """Where the data is read from, for the run's header: ``"cifar10 3.0.2 from the TFDS data_dir
        /data (50,000 train / 10,000 test)"`` or ``"folder /photos (5 classes, ...), images 64x64x3"``."""
        shape = "x".join(str(d) for d in self.image_shape)
        if self.folder is None:
            return (f"{self.name} {self.version} from the TFDS data_dir {self.data_dir} "
                    f"({self.num_train:,} train / {self.num_test:,} test, {shape} images)")
        return f"folder {self.name} ({self.folder.describe()}), images brought to {shape}"


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


def _tfds():
    """Import TensorFlow Datasets with TensorFlow kept off any GPU (torch owns it) and its start-up
    notices off the terminal (:mod:`kcnn.quiet`)."""
    from kcnn.quiet import import_tensorflow

    tf = import_tensorflow()

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # already initialized: nothing to change
        pass
    import tensorflow_datasets as tfds

    return tfds


def _builder(name: str, data_dir: str | None, download: bool = False):
    """The TFDS builder of ``name``, prepared (downloaded first when ``download``) and checked.

    Raises:
        ValueError: unknown dataset, or not an image-classification dataset.
        DataNotFoundError: not prepared and ``download`` is False, or the download failed.
        DataCorruptError: the prepared files are missing or truncated.
    """
    tfds = _tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"Unknown dataset {name!r}: TFDS has no such builder and no such folder exists "
            f"(kcnn is tuned for {', '.join(KNOWN_DATASETS)}; a folder of class folders trains too)"
        ) from None
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(
            f"Dataset {name!r} is not an image-classification dataset "
            f"(needs 'image' and 'label' features; has {sorted(features.keys())})"
        )
    if not builder.is_prepared():
        root = data_dir or os.environ.get("TFDS_DATA_DIR") or str(builder.data_dir_root)
        if not download:
            raise DataNotFoundError(
                f"Dataset {name!r} is not prepared in the TFDS data_dir {root} and --no-download was given: "
                f"drop --no-download to download it, or pass --data-dir (or set TFDS_DATA_DIR) to a data_dir "
                f"that holds it")
        _download(builder, name, root)
    check_files(builder)
    return builder


def _download(builder, name: str, root: str) -> None:
    """``builder.download_and_prepare()`` with TFDS' progress bars; one-line errors.

    TFDS writes the prepared files into ``NAME/VERSION.incomplete*`` and renames the folder only
    when all of it is written (deleting it on any error or Ctrl-C), so a failed download leaves
    nothing a later run would read as data; downloads in progress keep ``.tmp`` names.

    Raises:
        DataNotFoundError: the download or the preparation failed.
    """
    from kcnn.quiet import no_retry_warnings

    print(f"{name} is not in the TFDS data_dir {root}: downloading and preparing it with TFDS "
          f"(--no-download refuses; without a network TFDS retries for about 3 minutes)",
          file=sys.stderr, flush=True)
    try:
        with no_retry_warnings():
            builder.download_and_prepare()
    except Exception as e:  # requests, OSError, checksum and builder errors alike
        cause = (str(e).strip().splitlines() or [""])[0] or type(e).__name__
        raise DataNotFoundError(
            f"Dataset {name!r} could not be downloaded into the TFDS data_dir {root}: {cause}. "
            f"Connect to the network and run again, or pass --data-dir (or set TFDS_DATA_DIR) to a "
            f"data_dir with a prepared copy") from None


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


def load_info(name: str, data_dir: str | None = None, *, download: bool = False, image_size=None,
              channels: int | None = None, test_split: float = DEFAULT_TEST_SPLIT) -> DatasetInfo:
    """Read the metadata of a TFDS dataset (prepared first when ``download``) or a folder of images.

    Args:
        name: TFDS name, or a folder (:func:`kcnn.folders.is_folder`) of class folders.
        data_dir: TFDS data_dir (None: ``TFDS_DATA_DIR``, else TFDS' default).
        download: prepare a TFDS dataset that is not in the data_dir (TFDS ``download_and_prepare``).
        image_size: a folder's images are brought to ``(H, W)`` (None: :data:`DEFAULT_IMAGE_SIZE`);
            a TFDS dataset takes only its own size.
        channels: 1 (gray) or 3 (RGB); None: a folder's by its files, a TFDS dataset's own.
        test_split: a folder's test share (see :mod:`kcnn.folders`); :func:`load_datasets` cuts the
            validation files.

    Raises:
        ValueError: unknown dataset name, not an image-classification dataset, an image size or
            channel count a TFDS dataset does not have; :class:`kcnn.folders.FolderError` for folders.
        DataNotFoundError: the dataset is not prepared and ``download`` is False, or the download failed.
    """
    from kcnn import folders

    if folders.is_folder(name):
        splits = folders.list_splits(name, test_split)
        height, width = image_size or DEFAULT_IMAGE_SIZE
        depth = channels or folders.detect_channels(splits.files["train"])
        return DatasetInfo(name=str(splits.root), version="folder", class_names=splits.class_names,
                           image_shape=(int(height), int(width), int(depth)),
                           num_train=len(splits.files["train"]),
                           num_test=len(splits.files["test"]), data_dir=str(splits.root), folder=splits)
    builder = _builder(name, data_dir, download)
    info = builder.info
    shape = tuple(int(d) for d in info.features["image"].shape)
    given = (*(image_size or shape[:2]), channels or shape[2])
    if tuple(given) != shape:
        raise ValueError(f"{name} has {shape[0]}x{shape[1]}x{shape[2]} images; --image-size and --channels "
                         f"bring folders of images to a size. Received: image_shape={tuple(given)}")
    return DatasetInfo(
        name=name,
        version=str(info.version),
        class_names=tuple(info.features["label"].names),
        image_shape=shape,
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


def _seed_generators(augmentation, image_shape) -> list:
    """The TensorFlow-side ``SeedGenerator`` of each random layer of ``augmentation``.

    Keras makes them on the first call inside a ``tf.data`` graph (``DataLayer``),
    so one throw-away trace on images of ``image_shape`` ``(H, W, C)`` creates them first.
    """
    import tensorflow as tf

    probe = tf.zeros([1, *image_shape], "float32")
    tf.data.Dataset.from_tensors(probe).map(lambda x: augmentation(x, training=True))
    return [layer._get_seed_generator("tensorflow") for layer in augmentation.layers
            if getattr(layer, "generator", None) is not None]


def _epoch_order(count: int, seed, epoch):
    """A ``tf.data.Dataset`` of one pass's indices ``0..count-1``, permuted: ``stateless_shuffle``
    keyed by ``(seed, epoch)`` (a full shuffle, no buffer); a fresh shuffle when ``seed`` is None."""
    import tensorflow as tf

    def one_pass(_):
        indices = tf.range(count, dtype=tf.int64)
        if seed is None:
            return tf.data.Dataset.from_tensor_slices(tf.random.shuffle(indices))
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
        return tf.data.Dataset.from_tensor_slices(tf.random.experimental.stateless_shuffle(indices, seed=key))

    # The flat_map makes each pass (each Keras epoch) read the epoch variable anew.
    return tf.data.Dataset.range(1).flat_map(one_pass).apply(tf.data.experimental.assert_cardinality(count))


def _augmenter(augmentation, image_shape, seed, epoch):
    """``(step, images, labels) -> (images, labels)``: ``augmentation`` on a uint8 batch, output
    rounded back to uint8, its random draws keyed by ``(seed, epoch, step)`` when ``seed`` is given;
    and whether batches may be augmented in parallel (not when keyed: calls would race on the
    generators' state)."""
    import tensorflow as tf

    if augmentation is None:
        return (lambda step, images, labels: (images, labels)), True
    _build_eagerly(augmentation, image_shape)
    generators = _seed_generators(augmentation, image_shape) if seed is not None else []

    def augment(step, images, labels):
        counter = tf.cast(epoch, tf.int64) * _DRAWS_PER_EPOCH + step * _DRAWS_PER_BATCH
        for i, generator in enumerate(generators):
            generator.state.assign(tf.stack([tf.constant(seed * 1000 + i, tf.int64), counter]))
        images = augmentation(tf.cast(images, "float32"), training=True)
        return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8), labels

    return augment, not generators


def make_pipeline(ds, *, batch_size: int, training: bool, augmentation=None, seed=None, epoch=None):
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

    Returns:
        ``tf.data.Dataset`` of ``((batch, H, W, C) uint8, (batch,) int64)``, prefetched.
    """
    import tensorflow as tf

    if not training:
        return ds.cache().batch(batch_size).prefetch(tf.data.AUTOTUNE)
    epoch = tf.constant(0, tf.int64) if epoch is None else epoch
    # Eager tensors: captured by the functions below by reference, not copied into a graph.
    images, labels = (tf.concat(parts, 0) for parts in zip(*ds.batch(4096)))
    augment, parallel = _augmenter(augmentation, images.shape[1:], seed, epoch)

    def gather(step, index):
        return augment(step, tf.gather(images, index), tf.gather(labels, index))

    order = _epoch_order(int(labels.shape[0]), seed, epoch)
    return (order.batch(batch_size).enumerate()
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE if parallel else None).prefetch(tf.data.AUTOTUNE))


def make_file_pipeline(paths, labels, image_shape, *, batch_size: int, training: bool, augmentation=None,
                       seed=None, epoch=None):
    """:func:`make_pipeline` for a split read from its image files each pass (a folder too large to
    hold decoded): the same order (a permutation of file indices keyed by ``(seed, epoch)``), the
    same augmentation, so the batches equal those of the in-memory pipeline of the decoded files.

    Args:
        paths: image files (all decodable: :func:`kcnn.folders.decode_all` checked them).
        labels: their labels.
        image_shape: ``(H, W, C)`` the files are decoded to (:func:`kcnn.folders.decode`).
        batch_size, training, augmentation, seed, epoch: as :func:`make_pipeline`.

    Returns:
        ``tf.data.Dataset`` of ``((batch, H, W, C) uint8, (batch,) int64)``, prefetched.
    """
    import numpy as np
    import tensorflow as tf

    from kcnn.folders import decode

    files = tf.constant([str(p) for p in paths])
    targets = tf.constant(np.asarray(labels, np.int64))
    shape = tuple(int(d) for d in image_shape)

    def read(index):
        image = tf.numpy_function(lambda p: decode(p.decode(), shape), [tf.gather(files, index)], tf.uint8,
                                  stateful=False)
        return tf.ensure_shape(image, shape), tf.gather(targets, index)

    epoch = tf.constant(0, tf.int64) if epoch is None else epoch
    order = _epoch_order(len(paths), seed, epoch) if training else tf.data.Dataset.range(len(paths))
    # deterministic: parallel reads, the order kept
    batches = order.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size)
    if not training:
        return batches.prefetch(tf.data.AUTOTUNE)
    augment, parallel = _augmenter(augmentation, shape, seed, epoch)
    return (batches.enumerate().map(lambda step, batch: augment(step, *batch),
                                    num_parallel_calls=tf.data.AUTOTUNE if parallel else None)
            .prefetch(tf.data.AUTOTUNE))


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


def _folder_split(info: DatasetInfo, split: str) -> tuple[list, list]:
    """The files and labels of a folder dataset's ``split``: ``train``, ``val``, ``test`` or ``train[:N]``.

    Raises:
        ValueError: another split name.
    """
    name, _, count = split.partition("[:")
    if name not in info.folder.files or (count and not count.rstrip("]").isdigit()):
        raise ValueError(f"A folder's splits are train, val, test and train[:N]. Received: split={split!r}")
    end = int(count.rstrip("]")) if count else None
    return info.folder.files[name][:end], info.folder.labels[name][:end]


def decode_folder_split(info: DatasetInfo, split: str, keep: bool = True):
    """Decode a folder split's files to ``info.image_shape``.

    Returns:
        ``(images, labels, paths, skipped)``: ``(N, H, W, C)`` uint8 (None unless ``keep``), ``(N,)``
        int64, the N decodable files, and ``[(path, reason)]`` of the files skipped.

    Raises:
        kcnn.folders.FolderError: no file of the split can be read.
    """
    import numpy as np

    from kcnn.folders import FolderError, decode_all

    paths, labels = _folder_split(info, split)
    images, good, skipped = decode_all(paths, info.image_shape, keep=keep)
    if paths and not good:
        raise FolderError(f"{info.name}: none of the {len(paths)} {split} images can be read "
                          f"({skipped[0][0]}: {skipped[0][1]})")
    return images, np.asarray(labels, np.int64)[good], [paths[i] for i in good], skipped


def load_split_arrays(name: str, split: str = "test", data_dir: str | None = None, info: DatasetInfo | None = None):
    """A whole split as NumPy: ``((N, H, W, C) uint8, (N,) int64)``.

    Args:
        name: TFDS name, or a folder (then ``info`` from :func:`load_info` says how to read it).
        split: TFDS split string; a folder's ``train``, ``val``, ``test`` or ``train[:N]``.
        data_dir: TFDS data_dir.
        info: a folder's :func:`load_info` (its files, image size and splits).

    Raises:
        ValueError: unknown dataset or split. DataNotFoundError: not prepared.
    """
    import numpy as np
    import tensorflow as tf

    if info is not None and info.folder is not None:
        return decode_folder_split(info, split)[:2]
    ds = load_split(name, split, data_dir).batch(1024).prefetch(tf.data.AUTOTUNE)
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def _folder_pipelines(info: DatasetInfo, *, batch_size: int, eval_batch_size: int, augmentation, seed: int,
                      epoch, memory_budget: int) -> tuple[dict, dict, list]:
    """A folder's train/val/test pipelines: held decoded in memory while a split fits in
    ``memory_budget`` bytes, else read from its files each pass. Returns ``(pipelines, sizes, skipped)``."""
    import math

    import tensorflow as tf

    pipelines, sizes, skipped = {}, {}, []
    for split in ("train", "val", "test"):
        if not info.folder.files[split]:
            pipelines[split], sizes[split] = None, 0
            continue
        in_memory = len(info.folder.files[split]) * math.prod(info.image_shape) <= memory_budget
        images, labels, paths, bad = decode_folder_split(info, split, keep=in_memory)
        skipped += bad
        sizes[split] = len(labels)
        training = split == "train"
        options = dict(batch_size=batch_size if training else eval_batch_size, training=training,
                       augmentation=augmentation if training else None, seed=seed, epoch=epoch)
        if in_memory:
            pipelines[split] = make_pipeline(tf.data.Dataset.from_tensor_slices((images, labels)), **options)
        else:
            pipelines[split] = make_file_pipeline(paths, labels, info.image_shape, **options)
    return pipelines, sizes, skipped


def load_datasets(name: str, *, data_dir: str | None = None, batch_size: int = 128,
                  val_split: float = DEFAULT_VAL_SPLIT, augment: str | bool = True,
                  seed: int = 0, eval_batch_size: int = 512, info: DatasetInfo | None = None,
                  memory_budget: int | None = None) -> Datasets:
    """Load train/validation/test pipelines of a TFDS dataset or a folder of images.

    Args:
        name: TFDS dataset name, or a folder.
        data_dir: TFDS data_dir; None uses ``TFDS_DATA_DIR`` or TFDS' default.
        batch_size: training batch size (images).
        val_split: fraction of TFDS ``train`` (of each class of a folder's training files, when it
            has no ``val/``) held out for validation (0 = none).
        augment: True for the dataset's default policy, False for none, or a
            policy name from :data:`AUGMENTATIONS`.
        seed: shuffle and augmentation seed.
        eval_batch_size: batch size of the validation and test pipelines.
        info: :func:`load_info` of ``name`` (needed for a folder: its files, splits and image size).
        memory_budget: bytes of decoded images a folder split may hold in memory (None: :data:`MEMORY_BUDGET`).

    Raises:
        ValueError: unknown dataset or policy, bad val_split.
        DataNotFoundError: the dataset is not prepared in the data_dir.
        kcnn.folders.FolderError: a folder split none of whose images can be read.
    """
    info = info or load_info(name, data_dir)
    if info.folder is not None:
        info = dataclasses.replace(info, folder=info.folder.split_val(val_split))
    if augment is True:
        augment = default_augmentation(info.image_shape)
    augmentation = make_augmentation(augment or "none", seed=seed)
    import tensorflow as tf

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    if info.folder is not None:
        pipelines, sizes, skipped = _folder_pipelines(
            info, batch_size=batch_size, eval_batch_size=eval_batch_size, augmentation=augmentation, seed=seed,
            epoch=epoch, memory_budget=MEMORY_BUDGET if memory_budget is None else memory_budget)
        return Datasets(train=pipelines["train"], val=pipelines["val"], test=pipelines["test"], info=info,
                        num_train=sizes["train"], num_val=sizes["val"], epoch=epoch, skipped=skipped)
    train_split, val_name, num_val = split_names(info.num_train, val_split)

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
