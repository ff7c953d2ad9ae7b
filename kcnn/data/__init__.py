"""Input data: TFDS datasets and folders of images as tf.data pipelines, augmented by Keras
preprocessing layers.

Any TFDS image-classification dataset with ``image`` and ``label`` features loads by name
(mnist, fashion_mnist, cifar10 and cifar100 are the ones kcnn is tuned for; cifar100 with its 100
fine labels, TFDS' supervised keys); a folder of class folders loads as a dataset too. One
:class:`DatasetInfo` describes either, and every function below takes it.

Modules, in the order data flows through them:

- :mod:`kcnn.data.tfds_access`: TFDS builders, download on first use, the integrity check of the
  prepared files, one split read as ``tf.data``;
- :mod:`kcnn.data.folders`: a folder of class folders listed, split and decoded (PIL);
- :mod:`kcnn.data.info`: :class:`DatasetInfo` and :func:`load_info` over both;
- :mod:`kcnn.data.augment`: augmentation policies from Keras preprocessing layers;
- :mod:`kcnn.data.pipelines`: the ``tf.data`` pipelines ``model.fit`` reads, and whole splits as arrays.

Importing the package imports TensorFlow, with its start-up notices kept off the terminal
(:func:`kcnn.quiet.import_tensorflow`) and kept off any GPU (torch owns it; tf.data only serves
input here).
"""

from kcnn.quiet import import_tensorflow

_tf = import_tensorflow()
try:
    _tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # already initialized: nothing to change
    pass

from kcnn.data.augment import ERASE_PROBABILITY, FLIP_SHIFT, make_augmentation  # noqa: E402
from kcnn.data.folders import FolderError, decode_split, is_folder  # noqa: E402
from kcnn.data.info import DatasetInfo, info_for_model, load_info  # noqa: E402
from kcnn.data.pipelines import (  # noqa: E402
    MEMORY_BUDGET, Datasets, load_datasets, load_split_arrays, make_file_pipeline, make_pipeline, split_names)
from kcnn.data.tfds_access import DataCorruptError, DataNotFoundError  # noqa: E402

__all__ = ["DataCorruptError", "DataNotFoundError", "DatasetInfo", "Datasets", "ERASE_PROBABILITY", "FLIP_SHIFT",
           "FolderError", "MEMORY_BUDGET", "decode_split", "info_for_model", "is_folder", "load_datasets",
           "load_info", "load_split_arrays", "make_augmentation", "make_file_pipeline", "make_pipeline",
           "split_names"]
