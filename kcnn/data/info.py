"""The one description of a dataset that kcnn passes around: :class:`DatasetInfo`, read by
:func:`load_info` from a TFDS builder or a folder of class folders, and :func:`info_for_model`
for the dataset as a trained model saw it."""

from __future__ import annotations

import dataclasses

from kcnn.config import DEFAULT_IMAGE_SIZE, DEFAULT_TEST_SPLIT, DEFAULT_VAL_SPLIT
from kcnn.data import folders, tfds_access
from kcnn.errors import UsageError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What kcnn needs to know of a TFDS dataset or a folder of images, and where to read it.

    Attributes:
        name: TFDS name, e.g. ``"cifar10"``, or the folder's absolute path.
        version: TFDS version string of the prepared copy, e.g. ``"3.0.2"``; ``"folder"`` for a folder.
        class_names: label names in label-index order (TFDS metadata, or the class folders' names).
        image_shape: ``(H, W, C)`` of one uint8 image (a folder's: the size its images are brought to).
        num_train: examples in TFDS' ``train`` split (a folder's: its training files, validation
            files to be cut from them included).
        num_test: examples in the ``test`` split.
        data_dir: the TFDS data_dir root it was read from, or the folder.
        folder: the files of a folder dataset by split (:class:`kcnn.data.folders.FolderSplits`), else None.
    """

    name: str
    version: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    num_train: int
    num_test: int
    data_dir: str
    folder: folders.FolderSplits | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_size(self, val_split: float) -> int:
        """Training examples left after the validation cut of ``val_split`` (none for a folder with
        its own ``val/``)."""
        if self.folder is not None and self.folder.val_folder:
            return self.num_train
        return self.num_train - round(self.num_train * val_split)

    def with_val_split(self, val_split: float) -> DatasetInfo:
        """A folder's info with its validation files cut (:meth:`FolderSplits.split_val`); a TFDS
        dataset's unchanged (its validation examples are sliced when read)."""
        if self.folder is None:
            return self
        return dataclasses.replace(self, folder=self.folder.split_val(val_split))

    def describe(self) -> str:
        """Where the data is read from, for the run's header: ``"cifar10 3.0.2 from the TFDS data_dir
        /data (50,000 train / 10,000 test)"`` or ``"folder /photos (5 classes, ...), images 64x64x3"``."""
        shape = "x".join(str(d) for d in self.image_shape)
        if self.folder is None:
            return (f"{self.name} {self.version} from the TFDS data_dir {self.data_dir} "
                    f"({self.num_train:,} train / {self.num_test:,} test, {shape} images)")
        return f"folder {self.name} ({self.folder.describe()}), images brought to {shape}"


def load_info(name: str, data_dir: str | None = None, *, download: bool = False, image_size=None,
              channels: int | None = None, test_split: float = DEFAULT_TEST_SPLIT) -> DatasetInfo:
    """Read the metadata of a TFDS dataset (prepared first when ``download``) or a folder of images.

    Args:
        name: TFDS name, or a folder (:func:`kcnn.data.folders.is_folder`) of class folders.
        data_dir: TFDS data_dir (None: ``TFDS_DATA_DIR``, else TFDS' default).
        download: prepare a TFDS dataset that is not in the data_dir (TFDS ``download_and_prepare``).
        image_size: a folder's images are brought to ``(H, W)`` (None: :data:`DEFAULT_IMAGE_SIZE`);
            a TFDS dataset takes only its own size.
        channels: 1 (gray) or 3 (RGB); None: a folder's by its files, a TFDS dataset's own.
        test_split: a folder's test share (see :mod:`kcnn.data.folders`); :meth:`DatasetInfo.with_val_split`
            cuts the validation files.

    Raises:
        UsageError: unknown dataset name, not an image-classification dataset, an image size or
            channel count a TFDS dataset does not have.
        kcnn.data.folders.FolderError: a folder that cannot be read as a dataset.
        DataNotFoundError: the dataset is not prepared and ``download`` is False, or the download failed.
    """
    if folders.is_folder(name):
        splits = folders.list_splits(name, test_split)
        height, width = image_size or DEFAULT_IMAGE_SIZE
        depth = channels or folders.detect_channels(splits.files["train"])
        return DatasetInfo(name=str(splits.root), version="folder", class_names=splits.class_names,
                           image_shape=(int(height), int(width), int(depth)),
                           num_train=len(splits.files["train"]),
                           num_test=len(splits.files["test"]), data_dir=str(splits.root), folder=splits)
    builder = tfds_access.builder(name, data_dir, download)
    info = builder.info
    shape = tuple(int(d) for d in info.features["image"].shape)
    given = (*(image_size or shape[:2]), channels or shape[2])
    if tuple(given) != shape:
        raise UsageError(f"{name} has {shape[0]}x{shape[1]}x{shape[2]} images; --image-size and --channels "
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


def info_for_model(dataset: str, input_shape, settings: dict, data_dir: str | None = None,
                   download: bool = False) -> DatasetInfo:
    """:func:`load_info` of ``dataset`` as a model taking ``input_shape`` ``(H, W, C)`` images was
    trained on it: a folder brought to that size and split by the run's ``settings`` (its
    ``test_split`` and ``val_split``; the defaults when the model has no record of them)."""
    if not folders.is_folder(dataset):
        return load_info(dataset, data_dir, download=download)
    height, width, channels = input_shape
    info = load_info(dataset, image_size=(height, width), channels=channels,
                     test_split=settings.get("test_split", DEFAULT_TEST_SPLIT))
    return info.with_val_split(settings.get("val_split", DEFAULT_VAL_SPLIT))
