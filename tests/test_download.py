"""Download on first use: TFDS' own builders fed archives generated here (no network), failures,
`kcnn data`, CIFAR-100's fine labels, and a first run with nothing but kcnn's lines on the terminal."""

import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds
from helpers import FAST, run_cli, tiny_train

from kcnn import data
from kcnn.data import tfds_access

FINE_NAMES = [f"fine{i:02d}" for i in range(100)]
COARSE_NAMES = [f"coarse{i:02d}" for i in range(20)]


def cifar100_archive(folder, sizes=(("train", 300), ("test", 200)), seed=0):
    """``cifar-100-binary.tar.gz`` in the layout TFDS' cifar100 builder reads; returns it and the
    ``{split: {image bytes (HWC): fine label}}`` it holds. Records: coarse, fine, 3072 bytes CHW."""
    rng = np.random.default_rng(seed)
    archive, labels = folder / "cifar-100-binary.tar.gz", {}
    with tarfile.open(archive, "w:gz") as tar:
        def add(name, payload):
            info = tarfile.TarInfo(f"cifar-100-binary/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        for split, count in sizes:
            fine = np.arange(count) % 100
            coarse = (fine + 7) % 20  # unlike the fine label, so reading the wrong one shows
            images = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
            add(f"{split}.bin", np.concatenate([coarse[:, None], fine[:, None], images], 1).astype(np.uint8).tobytes())
            hwc = images.reshape(count, 3, 32, 32).transpose(0, 2, 3, 1)
            labels[split] = {image.tobytes(): int(label) for image, label in zip(hwc, fine)}
        add("fine_label_names.txt", "\n".join(FINE_NAMES).encode())
        add("coarse_label_names.txt", "\n".join(COARSE_NAMES).encode())
    return archive, labels


@pytest.fixture
def serve(monkeypatch):
    """Make TFDS' download manager hand out local files (by URL file name) or raise, instead of the network."""
    import promise
    from etils import epath

    def install(archives=None, error=None):
        def download(self, resource):
            url = resource if isinstance(resource, str) else resource.url
            if error is not None:
                raise error
            return promise.Promise.resolve(epath.Path(archives[url.rsplit("/", 1)[-1]]))

        monkeypatch.setattr(tfds.download.DownloadManager, "_download_or_get_cache", download)
        monkeypatch.setattr(tfds.core.utils.gcs_utils, "is_dataset_on_gcs", lambda *a, **k: False)
        monkeypatch.setattr(tfds_access, "unreachable_host", lambda urls: None)  # the hosts "answer"

    return install


@pytest.mark.slow
def test_cifar100_downloads_on_first_use_and_trains_on_its_100_fine_labels(tmp_path, serve):
    archive, labels = cifar100_archive(tmp_path)
    serve({archive.name: archive})
    data_dir = tmp_path / "tfds"
    result = tiny_train(str(data_dir), tmp_path / "run", dataset="cifar100", epochs=1,
                        **{**FAST, "model": "cnn2_simple", "batch_size": 32})
    assert tfds.builder("cifar100", data_dir=str(data_dir)).is_prepared()
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["dataset"]["class_names"] == FINE_NAMES and record["dataset"]["name"] == "cifar100"
    assert result.metrics["test_examples"] == 200
    images, test_labels = data.load_split_arrays(data.load_info("cifar100", str(data_dir)), "test")
    assert images.shape == (200, 32, 32, 3)
    assert [labels["test"][image.tobytes()] for image in images] == test_labels.tolist()  # fine, not coarse
    # 100 classes: evaluation lists the most confused pairs; the summary shows only the worst classes
    evaluation = json.loads((tmp_path / "run" / "evaluation" / "evaluation.json").read_text())
    assert len(evaluation["per_class"]) == 100 and 0 < len(evaluation["most_confused"]) <= 10


@pytest.mark.slow
def test_the_whitened_net_trains_on_cifar100_with_its_recipe_and_answers_its_100_classes(tmp_path, serve):
    """There is no CIFAR-100 copy here: TFDS' own builder prepares a generated archive, as a download would."""
    import keras

    archive, _ = cifar100_archive(tmp_path, sizes=(("train", 200), ("test", 100)))
    serve({archive.name: archive})
    result = tiny_train(str(tmp_path / "tfds"), tmp_path / "run", dataset="cifar100", epochs=1,
                        **{**FAST, "model": "whitened8_narrow", "batch_size": 50})
    assert result.config.recipe == "airbench" and result.metrics["test_examples"] == 100
    assert 0 <= result.metrics["test_accuracy_tta_flip_shift"] <= 1
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert model.output_shape == (None, 100) and model.get_layer("whiten").trainable is False


def test_kcnn_data_prepares_a_dataset_and_says_where(tmp_path, serve):
    archive, _ = cifar100_archive(tmp_path, sizes=(("train", 100), ("test", 100)))
    serve({archive.name: archive})
    result = run_cli("data", "cifar100", "--data-dir", tmp_path / "tfds")
    assert result.exit_code == 0, result.output
    assert f"cifar100 3.0.2 from the TFDS data_dir {tmp_path / 'tfds'} (100 train / 100 test" in result.output


def test_a_failed_download_is_one_line_and_leaves_nothing_prepared(tmp_path, serve, monkeypatch):
    serve(error=requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='www.cs.toronto.edu', port=443): Max retries exceeded\nsecond line"))
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "tfds"
    result = run_cli("train", "cifar100", "--data-dir", data_dir, "--epochs", "1")
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last == (f"Error: Dataset 'cifar100' could not be downloaded into the TFDS data_dir {data_dir}: "
                    f"HTTPSConnectionPool(host='www.cs.toronto.edu', port=443): Max retries exceeded. Connect to "
                    f"the network and run again, or pass --data-dir (or set TFDS_DATA_DIR) to a data_dir with a "
                    f"prepared copy")
    assert "Traceback" not in result.output
    assert not tfds.builder("cifar100", data_dir=str(data_dir)).is_prepared()
    assert not list(data_dir.glob("cifar100/*/dataset_info.json")) and not (tmp_path / "runs").exists()


def test_offline_a_host_that_does_not_resolve_is_final_and_nothing_follows_the_error(tmp_path, monkeypatch):
    import socket
    import time

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(tfds.download.DownloadManager, "download",  # must not be reached
                        lambda *a, **k: pytest.fail("TFDS' downloader started"))
    start = time.monotonic()
    result = run_cli("data", "mnist", "--data-dir", tmp_path / "tfds")
    assert time.monotonic() - start < 60 and result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("mnist is not in the TFDS data_dir") and len(lines) == 2  # the notice, the error
    assert lines[-1].startswith("Error: Dataset 'mnist' could not be downloaded into the TFDS data_dir ")
    assert "cannot resolve host storage.googleapis.com (Name or service not known)" in lines[-1]
    assert not list((tmp_path / "tfds").glob("mnist/*/dataset_info.json"))


def test_a_refused_connection_is_final_and_a_slow_one_is_left_to_tfds_retries(monkeypatch):
    import socket

    with socket.socket() as closed:  # a port nothing listens on: the connection is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert tfds_access.unreachable_host([f"http://127.0.0.1:{port}/a.gz"]) == f"connection to 127.0.0.1:{port} refused"
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert tfds_access.unreachable_host([f"http://127.0.0.1:{listening.getsockname()[1]}/a.gz"]) is None

    def slow(self, address):
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket.socket, "connect", slow)
    assert tfds_access.unreachable_host([f"http://127.0.0.1:{port}/a.gz"]) is None  # TFDS' retries decide


def test_no_download_refuses_in_one_line(tmp_path):
    result = run_cli("train", "cifar100", "--data-dir", tmp_path / "empty", "--no-download",
                     "--output", tmp_path / "r")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Dataset 'cifar100' is not prepared in the TFDS data_dir")
    assert "--no-download" in lines[0] and "--data-dir" in lines[0] and not (tmp_path / "r").exists()


def test_a_batch_larger_than_the_training_split_fails_before_anything_is_written(fake_data_dir, tmp_path):
    result = run_cli("train", "mnist", "--data-dir", fake_data_dir, "--batch-size", "100000",
                     "--output", tmp_path / "r")
    assert result.exit_code == 2
    assert result.output.strip() == ("Error: batch_size is larger than the 86 training images of mnist (after "
                                     "the validation split). Received: batch_size=100000")
    assert not (tmp_path / "r").exists()


def _kcnn(*args, cwd):
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as on a user's machine
    return subprocess.run([sys.executable, "-m", "kcnn", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.mark.slow
def test_nothing_but_kcnns_lines_reach_the_terminal(fake_data_dir, tmp_path):
    described = _kcnn("data", "mnist", "--data-dir", fake_data_dir, cwd=tmp_path)
    assert described.returncode == 0 and described.stderr == ""
    assert described.stdout.startswith("mnist 3.0.1 from the TFDS data_dir")
    refused = _kcnn("data", "cifar100", "--data-dir", tmp_path / "empty", "--no-download", cwd=tmp_path)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("Error: Dataset 'cifar100'")
    trained = _kcnn("train", "mnist", "--data-dir", fake_data_dir, "--model", "net24k", "--epochs", "1",
                    "--batch-size", "32", "--output", tmp_path / "run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.startswith("kcnn ") and trained.stderr == ""
    assert trained.stdout.splitlines()[1].startswith("dataset mnist 3.0.1 from the TFDS data_dir")


def test_urllib3_retry_warnings_are_dropped_during_a_download_only(caplog):
    import logging

    from kcnn.quiet import no_retry_warnings

    logger = logging.getLogger("urllib3.connectionpool")
    with no_retry_warnings():
        logger.warning("Retrying (%r) after connection broken by %r: %s", "Retry(total=9)", "NameResolutionError", "/a")
        logger.warning("Connection pool is full, discarding connection")
    logger.warning("Retrying (%r) after connection broken by %r: %s", "Retry(total=8)", "NameResolutionError", "/a")
    assert [r.getMessage()[:20] for r in caplog.records] == ["Connection pool is f", "Retrying ('Retry(tot"]
