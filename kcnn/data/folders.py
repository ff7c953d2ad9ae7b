"""A user's own images: a folder of class folders as train, validation and test splits.

Layouts (Ultralytics' and TFDS ``ImageFolder``'s):

- ``ROOT/train/CLASS/*``, and optionally ``ROOT/val/CLASS/*`` and ``ROOT/test/CLASS/*``;
- ``ROOT/CLASS/*``: a plain folder of class folders, split here.

Keras' ``image_dataset_from_directory`` lists the files (its formats: bmp, gif, jpeg, jpg, png,
class folders searched recursively) and names the classes (folder names, sorted). Split folders that
are missing are cut from the training files, per class, in the order of the SHA-1 of each file's
name: the first ``round(n * test_split)`` files in that order test, the next
``round(rest * val_split)`` validate. The cut depends on neither the seed nor the file system's
order; each split lists its files in that order too, so the classes are mixed in ``train[:N]``.

Every image is decoded by :func:`decode`, the same PIL path ``kcnn predict`` feeds a model with
(:func:`kcnn.images.to_model_input`: colour centre-cropped to the aspect ratio and resized bicubic;
gray fitted on black), so a trained model sees photos at predict time exactly as it saw them in
training.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from kcnn.errors import DataError, UsageError
from kcnn.images import ImageError, read_image, to_model_input

#: Split folders of the train/val/test layout.
SPLIT_FOLDERS = ("train", "val", "test")
#: Files whose PIL mode is one of these are gray; a folder with any other is colour (C = 3).
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
#: Files looked at to decide between gray and colour when --channels is not given.
CHANNEL_PROBES = 32
#: The image files Keras' folder listing takes (``image_dataset_from_directory``'s formats).
LISTED_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def plural(count: int, noun: str) -> str:
    """``"1 image"``, ``"3 images"``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


class FolderError(DataError):
    """A folder cannot be read as a dataset; the message names it."""


@dataclasses.dataclass(frozen=True)
class FolderSplits:
    """The files of a folder dataset, by split.

    Attributes:
        root: the folder, absolute.
        class_names: the class folders' names, sorted (label order).
        files: ``{"train" | "val" | "test": [path, ...]}``; "val" is empty until :meth:`split_val`
            cuts it, or holds ``val/``'s files.
        labels: ``{split: [label, ...]}``, parallel to ``files``.
        val_folder: the validation files come from a ``val/`` folder.
    """

    root: Path
    class_names: tuple[str, ...]
    files: dict
    labels: dict
    val_folder: bool = False

    def split_val(self, val_split: float) -> FolderSplits:
        """These splits with ``round(n * val_split)`` of each class's training files moved to "val"
        (the next files in the split order after the test cut); unchanged with a ``val/`` folder."""
        if self.val_folder or not val_split:
            return self
        (val, val_labels), (train, train_labels) = _cut(self.files["train"], self.labels["train"], val_split)
        return dataclasses.replace(self, files={**self.files, "train": train, "val": val},
                                   labels={**self.labels, "train": train_labels, "val": val_labels})

    def describe(self) -> str:
        """``"10 classes, 40,000 train / 5,000 val / 5,000 test files"``."""
        counts = " / ".join(f"{len(self.files[s]):,} {s}" for s in SPLIT_FOLDERS if self.files[s])
        return f"{len(self.class_names)} classes, {counts} files"


def is_folder(dataset: str) -> bool:
    """True when ``dataset`` names an existing folder rather than a TFDS dataset."""
    return os.path.isdir(os.path.expanduser(dataset))


def _list(directory: Path, class_names=None) -> tuple[list[str], list[int], list[str]]:
    """``(paths, labels, class_names)`` of the images under ``directory``'s class folders (Keras' listing).

    Raises:
        FolderError: no class folders (images lying loose in ``directory``), class folders without
            an image Keras lists, or fewer than 2 classes; each message says where images go.
    """
    folders = sorted(d.name for d in directory.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        loose = sum(1 for f in directory.iterdir() if f.suffix.lower() in LISTED_FORMATS)
        lying = f" ({plural(loose, 'image')} {'lies' if loose == 1 else 'lie'} directly in it)" if loose else ""
        raise FolderError(f"{directory}: no class folders; put the images in one folder per class, "
                          f"{directory}/CLASS/*.jpg{lying}")
    try:
        ds = keras.utils.image_dataset_from_directory(
            directory, labels="inferred", class_names=class_names, shuffle=False, batch_size=None, verbose=False)
    except ValueError as e:
        if str(e).startswith("No images found"):
            raise FolderError(f"{directory}: its class folders ({', '.join(folders)}) hold no images of the "
                              f"formats listed ({', '.join(LISTED_FORMATS)})") from None
        raise FolderError(f"{directory}: {str(e).splitlines()[0]}") from None
    names = list(ds.class_names)
    if class_names is None and len(names) < 2:
        raise FolderError(f"{directory}: one class folder ({names[0]}); a classifier needs at least 2, each "
                          f"in a folder of its own, {directory}/CLASS/*.jpg")
    labels = [names.index(Path(p).relative_to(directory).parts[0]) for p in ds.file_paths]
    return list(ds.file_paths), labels, names


def _key(path: str) -> str:
    """The split order of a file: the SHA-1 of its name (then its path, to break ties)."""
    return hashlib.sha1(Path(path).name.encode()).hexdigest() + path


def _in_key_order(paths, labels) -> tuple[list, list]:
    """Files and labels sorted by :func:`_key`: the classes mixed, so that ``train[:N]`` samples them all."""
    pairs = sorted(zip(paths, labels), key=lambda pair: _key(pair[0]))
    return [p for p, _ in pairs], [y for _, y in pairs]


def _cut(paths, labels, fraction: float) -> tuple[tuple[list, list], tuple[list, list]]:
    """Per class, the first ``round(n * fraction)`` files in :func:`_key` order, and the rest; both in key order."""
    taken, kept = ([], []), ([], [])
    for label in sorted(set(labels)):
        members = sorted((p for p, y in zip(paths, labels) if y == label), key=_key)
        count = round(len(members) * fraction)
        for i, path in enumerate(members):
            target = taken if i < count else kept
            target[0].append(path)
            target[1].append(label)
    return _in_key_order(*taken), _in_key_order(*kept)


def list_splits(root: str | Path, test_split: float) -> FolderSplits:
    """The train, validation and test files of a folder dataset (see the module docstring); without
    a ``val/`` folder, :meth:`FolderSplits.split_val` cuts the validation files.

    Args:
        root: ``ROOT`` with ``train/`` (and maybe ``val/``, ``test/``) or with class folders.
        test_split: share of each class's files that tests when there is no ``test/`` folder.

    Raises:
        FolderError: no such folder, no images in class folders, split folders whose classes
            differ from ``train/``'s, or a split left empty.
    """
    root = Path(os.path.expanduser(str(root))).resolve()
    if not root.is_dir():
        raise FolderError(f"{root}: no such folder")
    layout = (root / "train").is_dir()
    paths, labels, names = _list(root / "train" if layout else root)
    files, targets = {"val": []}, {"val": []}
    for split in ("test", "val"):
        if layout and (root / split).is_dir():
            files[split], targets[split] = _in_key_order(*_list(root / split, class_names=names)[:2])
        elif split == "test":
            (files[split], targets[split]), (paths, labels) = _cut(paths, labels, test_split)
    files["train"], targets["train"] = _in_key_order(paths, labels)
    for split in ("train", "test"):
        if not files[split]:
            raise FolderError(f"{root}: the {split} split is empty ({plural(len(paths), 'training file')}); "
                              f"add images or change --test-split")
    empty = [name for label, name in enumerate(names) if label not in set(targets["train"])]
    if empty:
        raise FolderError(f"{root}: no training image of class {', '.join(empty)} after the test split; every "
                          f"class needs at least one (add images or lower --test-split)")
    return FolderSplits(root=root, class_names=tuple(names), files=files, labels=targets,
                        val_folder=bool(files["val"]))


def detect_channels(paths, probes: int = CHANNEL_PROBES) -> int:
    """1 when the first ``probes`` readable files are all gray (:data:`GRAY_MODES`), else 3."""
    for path in paths[:probes]:
        try:
            with Image.open(path) as im:
                if im.mode not in GRAY_MODES:
                    return 3
        except OSError:
            continue
    return 1


def decode(path: str, image_shape) -> "object":
    """One image file as the model input ``image_shape`` ``(H, W, C)`` uint8, as ``kcnn predict`` makes it.

    Raises:
        kcnn.images.ImageError: the file cannot be read (the message names it).
    """
    return to_model_input(read_image(path), tuple(image_shape))


def decode_all(paths, image_shape, keep: bool = True, workers: int | None = None):
    """Decode ``paths`` in threads (PIL releases the GIL while decoding).

    Returns:
        ``(images, good, skipped)``: ``(n_good, H, W, C)`` uint8 (None unless ``keep``), the indices
        of the files that decoded, and ``[(path, reason), ...]`` for those that did not.
    """
    def one(path):
        try:
            return decode(path, image_shape), None
        except ImageError as e:
            return None, str(e).split(": ", 1)[-1]

    images, good, skipped = [], [], []
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for i, (path, (image, reason)) in enumerate(zip(paths, pool.map(one, paths))):
            if reason is not None:
                skipped.append((path, reason))
                continue
            good.append(i)
            if keep:
                images.append(image)
    stacked = np.stack(images) if keep and images else (np.zeros((0, *image_shape), np.uint8) if keep else None)
    return stacked, good, skipped


def _split_files(info, split: str) -> tuple[list, list]:
    """The files and labels of a folder dataset's ``split``: ``train``, ``val``, ``test`` or ``train[:N]``.

    Raises:
        UsageError: another split name.
    """
    name, _, count = split.partition("[:")
    if name not in info.folder.files or (count and not count.rstrip("]").isdigit()):
        raise UsageError(f"A folder's splits are train, val, test and train[:N]. Received: split={split!r}")
    end = int(count.rstrip("]")) if count else None
    return info.folder.files[name][:end], info.folder.labels[name][:end]


def decode_split(info, split: str, keep: bool = True):
    """Decode a folder split's files to ``info.image_shape``.

    Args:
        info: the folder's :class:`kcnn.data.DatasetInfo`.
        split: ``train``, ``val``, ``test`` or ``train[:N]``.
        keep: return the decoded images (False: only check that they decode).

    Returns:
        ``(images, labels, paths, skipped)``: ``(N, H, W, C)`` uint8 (None unless ``keep``), ``(N,)``
        int64, the N decodable files, and ``[(path, reason)]`` of the files skipped.

    Raises:
        FolderError: no file of the split can be read.
    """
    paths, labels = _split_files(info, split)
    images, good, skipped = decode_all(paths, info.image_shape, keep=keep)
    if paths and not good:
        raise FolderError(f"{info.name}: none of the {len(paths)} {split} images can be read "
                          f"({skipped[0][0]}: {skipped[0][1]})")
    return images, np.asarray(labels, np.int64)[good], [paths[i] for i in good], skipped
