"""TFDS access: a dataset's builder, its download on first use, the integrity check of its files,
and one split read as a ``tf.data.Dataset``.

A dataset is read from a TFDS data_dir, given by ``data_dir=`` / ``--data-dir`` or the
``TFDS_DATA_DIR`` environment variable (TFDS' own default, ``~/tensorflow_datasets``, otherwise);
one that is not there is downloaded and prepared by TFDS when ``download=True``.

Without a network TFDS' downloader retries each file with back-off for minutes, also when the
host name does not resolve. :func:`_download` checks first whether the dataset's download hosts
resolve and accept a connection (:func:`unreachable_host`): a host that does not resolve or
refuses is final, and the download is not started; a slow or flaky network keeps TFDS' retries.
"""

from __future__ import annotations

import logging
import socket
import urllib.parse
from pathlib import Path

import tensorflow_datasets as tfds

from kcnn.catalog import KNOWN_DATASETS
from kcnn.errors import DataError, UsageError
from kcnn.quiet import no_retry_warnings

log = logging.getLogger(__name__)

#: Bytes TFRecord adds around each record: length (8), its CRC (4) and the data's CRC (4).
TFRECORD_FRAMING = 16
#: Seconds the reachability check waits for a connection to a download host before it lets TFDS try.
CONNECT_TIMEOUT = 10


class DataNotFoundError(DataError):
    """The dataset is not prepared in the TFDS data_dir and cannot be downloaded."""


class DataCorruptError(DataError):
    """A prepared dataset's files are missing, truncated or unreadable; the message names them."""


def builder(name: str, data_dir: str | None, download: bool = False):
    """The TFDS builder of ``name``, prepared (downloaded first when ``download``) and checked.

    Raises:
        UsageError: unknown dataset, or not an image-classification dataset.
        DataNotFoundError: not prepared and ``download`` is False, or the download failed.
        DataCorruptError: the prepared files are missing or truncated.
    """
    try:
        found = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UsageError(
            f"Unknown dataset {name!r}: TFDS has no such builder and no such folder exists "
            f"(kcnn is tuned for {', '.join(KNOWN_DATASETS)}; a folder of class folders trains too)"
        ) from None
    features = found.info.features
    if "image" not in features or "label" not in features:
        raise UsageError(
            f"Dataset {name!r} is not an image-classification dataset "
            f"(needs 'image' and 'label' features; has {sorted(features.keys())})"
        )
    if not found.is_prepared():
        root = str(found.data_dir_root)
        if not download:
            raise DataNotFoundError(
                f"Dataset {name!r} is not prepared in the TFDS data_dir {root} and --no-download was given: "
                f"drop --no-download to download it, or pass --data-dir (or set TFDS_DATA_DIR) to a data_dir "
                f"that holds it")
        _download(found, name, root)
    check_files(found)
    return found


def _not_downloaded(name: str, root: str, cause: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"Dataset {name!r} could not be downloaded into the TFDS data_dir {root}: {cause}. "
        f"Connect to the network and run again, or pass --data-dir (or set TFDS_DATA_DIR) to a "
        f"data_dir with a prepared copy")


def _download(found, name: str, root: str) -> None:
    """``builder.download_and_prepare()`` with TFDS' progress bars; one-line errors.

    TFDS writes the prepared files into ``NAME/VERSION.incomplete*`` and renames the folder only
    when all of it is written (deleting it on any error or Ctrl-C), so a failed download leaves
    nothing a later run would read as data; downloads in progress keep ``.tmp`` names.

    Raises:
        DataNotFoundError: a download host is unreachable, or the download or preparation failed.
    """
    log.warning(f"{name} is not in the TFDS data_dir {root}: downloading and preparing it with TFDS "
                f"(--no-download refuses)")
    cause = unreachable_host(download_urls(found))
    if cause is not None:
        raise _not_downloaded(name, root, cause)
    try:
        with no_retry_warnings():
            found.download_and_prepare()
    except Exception as e:  # requests, OSError, checksum and builder errors alike
        raise _not_downloaded(name, root, (str(e).strip().splitlines() or [""])[0] or type(e).__name__) from None


def download_urls(found) -> list[str]:
    """The URLs of the files a TFDS builder downloads: the ``url`` of each of its recorded checksums
    (TFDS keeps one ``checksums.tsv`` per builder); empty when it records none."""
    try:
        return sorted(found.url_infos or {})
    except Exception:  # a builder without recorded checksums (a manual or generated dataset)
        return []


def unreachable_host(urls, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """Why a download from ``urls`` cannot start, or None when every host answers or is merely slow.

    A host name that does not resolve, or a connection refused, is final: nothing retrying the
    same address would change it. A connection that times out is not (a slow network): TFDS'
    own retries decide then.

    Returns:
        ``"cannot resolve host www.cs.toronto.edu (...)"`` or ``"connection to HOST:PORT refused"``,
        else None.
    """
    seen = set()
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        if not host or (host, port) in seen or parts.scheme not in ("http", "https"):
            continue
        seen.add((host, port))
        try:
            addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            return f"cannot resolve host {host} ({e.strerror or e})"
        refused = None
        for family, kind, proto, _, address in addresses:
            try:
                with socket.socket(family, kind, proto) as connection:
                    connection.settimeout(timeout)
                    connection.connect(address)
                refused = None
                break
            except ConnectionRefusedError:
                refused = f"connection to {host}:{port} refused"
            except OSError:  # timed out, unreachable route: not final
                refused = None
                break
        if refused:
            return refused
    return None


def check_files(found) -> None:
    """Check that every split's TFRecord shards exist and have the size TFDS recorded.

    TFDS' ``dataset_info.json`` stores each split's payload in bytes and its
    example count; a TFRecord file adds :data:`TFRECORD_FRAMING` bytes per
    example, so the shards' sizes must add up exactly. This catches truncated
    and missing files before any training starts, by file name; bytes damaged
    in place are caught by TFRecord's CRCs when read.

    Raises:
        DataCorruptError: a shard is missing or the sizes do not add up.
    """
    if str(found.info.file_format.value) != "tfrecord":
        return
    for split in found.info.splits.values():
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


def read_split(name: str, split: str, data_dir: str):
    """``tfds.load`` one split of a prepared dataset as unbatched ``((H, W, C) uint8, () int64)``
    pairs, in the split's order, no download."""
    return tfds.load(name, split=split, data_dir=data_dir, as_supervised=True, download=False,
                     shuffle_files=False)
