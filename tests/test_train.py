"""`kcnn train` and kcnn.train: run folders, resume, errors; one real-data accuracy check."""

import hashlib
import json
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import REPO

from kcnn.cli import main
from kcnn.training import TrainingDiverged, read_history, train

FAST = ["--model", "net24k", "--batch-size", "16", "--val-split", "0.25"]


def run_cli(*args):
    return CliRunner().invoke(main, list(args))


def test_cli_train_writes_the_run_folder(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "mnist", "--epochs", "2", "--data-dir", fake_data_dir,
                     "--output", str(out), *FAST)
    assert result.exit_code == 0, result.output
    device = "cuda:0" if torch.cuda.is_available() else "cpu"  # --device auto
    assert f"backend torch | device {device}" in result.output
    assert {"model.keras", "history.csv", "config.json", "metrics.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "backup").exists()
    assert [r["epoch"] for r in read_history(out / "history.csv")] == [0, 1]
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["epochs"] == 2 and config["resolved"]["num_train"] == 72
    machine = config["resolved"]["machine"]
    if device == "cpu":
        assert re.fullmatch(r"CPU, \d+ cores", machine), machine
    else:
        assert machine == torch.cuda.get_device_name(0)
    assert config["versions"]["keras"] == keras.__version__
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_examples"] == 32
    assert "test_accuracy_tta_flip" not in metrics  # no flips for digits
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in result.output
    model = keras.saving.load_model(out / "model.keras")
    assert model.output.shape == (None, 10)


def test_a_run_without_validation_split_finishes_and_picks_the_checkpoint_by_train_accuracy(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "mnist", "--epochs", "2", "--data-dir", fake_data_dir, "--output", str(out),
                     "--model", "net24k", "--batch-size", "16", "--val-split", "0")
    assert result.exit_code == 0, result.output
    history = read_history(out / "history.csv")  # CSVLogger writes NA in its val_* columns
    assert [sorted(row) for row in history] == [["accuracy", "epoch", "epoch_seconds", "learning_rate", "loss"]] * 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert "best_accuracy" in metrics and "by accuracy" in result.output
    assert (out / "curves.png").exists()


def test_default_run_folders_are_numbered(fake_data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for expected in ("mnist-net24k-1", "mnist-net24k-2"):
        result = run_cli("train", "mnist", "--epochs", "1", "--data-dir", fake_data_dir, *FAST)
        assert result.exit_code == 0, result.output
        assert (tmp_path / "runs" / expected / "metrics.json").exists()


class InterruptAt(keras.callbacks.Callback):
    """Ctrl-C at the start of one epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_where_it_stopped(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    kwargs = dict(model="net24k", epochs=3, batch_size=16, val_split=0.25, data_dir=fake_data_dir,
                  output=str(out), verbose=0)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        train("mnist", callbacks=[InterruptAt(2)], log=lines.append, **kwargs)
    assert "re-run the same command to resume" in lines[-1]
    assert [r["epoch"] for r in read_history(out / "history.csv")] == [0, 1]
    assert (out / "model.keras").exists() and not (out / "metrics.json").exists()

    result = train("mnist", log=lines.append, **kwargs)
    assert result.resumed_from_epoch == 2
    assert [r["epoch"] for r in result.history] == [0, 1, 2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    seconds = [r["epoch_seconds"] for r in result.history]  # both calls' epochs are timed
    assert min(seconds) > 0
    assert metrics["fit_seconds"] == round(sum(seconds), 1) > seconds[-1]
    assert metrics["fit_seconds_this_call"] >= seconds[-1]  # this call trained one epoch


def test_a_history_from_before_epoch_times_keeps_its_columns_on_resume(tmp_path):
    from kcnn.training import _logs_epoch_seconds, fit_seconds_all_epochs

    path = tmp_path / "history.csv"
    assert _logs_epoch_seconds(path)  # a new run
    path.write_text("epoch,accuracy,epoch_seconds,learning_rate,loss\n0,0.5,12.5,0.001,1.2\n")
    assert _logs_epoch_seconds(path)
    path.write_text("epoch,accuracy,learning_rate,loss\n0,0.5,0.001,1.2\n")  # written before kcnn timed epochs
    assert not _logs_epoch_seconds(path)
    assert fit_seconds_all_epochs([{"epoch": 0, "epoch_seconds": 1.5}, {"epoch": 1, "epoch_seconds": 2.0}]) == {
        "fit_seconds": 3.5}
    assert fit_seconds_all_epochs([{"epoch": 0, "epoch_seconds": 1.0}, {"epoch": 1}]) == {}
    assert fit_seconds_all_epochs([]) == {}


def test_results_table_gives_the_epoch_times_where_the_history_has_them():
    from kcnn.training import format_results

    metrics = dict(test_accuracy=0.99, test_loss=0.03, best_epoch=2)
    timed = [dict(epoch=e, loss=0.1, accuracy=0.9, learning_rate=1e-3, epoch_seconds=40.3 + e) for e in (0, 1)]
    lines = format_results(timed, metrics, "accuracy").splitlines()
    assert lines[0].split() == ["epoch", "loss", "acc", "lr", "s"]
    assert lines[2].split()[-1] == "41.3"
    assert lines[-1] == "test accuracy 0.9900 | test loss 0.0300 | best epoch 2 by accuracy"
    untimed = [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in timed]
    assert format_results(untimed, metrics, "accuracy").splitlines()[0].split() == ["epoch", "loss", "acc", "lr"]


def test_finished_or_foreign_run_folder_is_refused(fake_data_dir, tmp_path):
    out = str(tmp_path / "run")
    assert run_cli("train", "mnist", "--epochs", "1", "--data-dir", fake_data_dir, "--output", out,
                   *FAST).exit_code == 0
    again = run_cli("train", "mnist", "--epochs", "1", "--data-dir", fake_data_dir, "--output", out, *FAST)
    assert again.exit_code == 2
    assert "already holds a finished run" in again.output and "--overwrite" in again.output
    other = run_cli("train", "mnist", "--epochs", "2", "--data-dir", fake_data_dir, "--output", out, *FAST)
    assert other.exit_code == 2
    assert f"{out} holds a run with other settings (epochs: 1 there, 2 here); choose another --output" in (
        " ".join(other.output.split()))
    redo = run_cli("train", "mnist", "--epochs", "2", "--data-dir", fake_data_dir, "--output", out,
                   "--overwrite", *FAST)
    assert redo.exit_code == 0, redo.output


def test_no_data_is_one_clear_line(tmp_path):
    result = run_cli("train", "mnist", "--data-dir", str(tmp_path / "empty"), "--output", str(tmp_path / "r"))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Dataset 'mnist' is not prepared")
    assert "TFDS_DATA_DIR" in lines[0] and "--data-dir" in lines[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("damage, problem", [("truncate", "truncated"), ("delete", "missing")])
def test_truncated_or_missing_data_files_are_one_line_naming_the_file(fake_data_dir, tmp_path, damage, problem):
    import shutil
    from pathlib import Path

    data_dir = tmp_path / "tfds"
    shutil.copytree(Path(fake_data_dir) / "mnist", data_dir / "mnist")
    (shard,) = data_dir.glob("mnist/*/mnist-test.tfrecord*")
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:1000])
    else:
        shard.unlink()
    result = run_cli("train", "mnist", "--data-dir", str(data_dir), "--output", str(tmp_path / "r"), *FAST)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {shard}: ")
    assert problem in lines[0] and lines[0].endswith("prepare the dataset again")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "cnn4"], "Unknown model 'cnn4'; valid models: cnn2, cnn2_simple, cnn3, net24k. Did you mean 'cnn3'?"),
    (["--device", "gpu"], "'gpu' is not one of auto, cpu, cuda, cuda:N"),
    (["--epochs", "0"], "0 is not in the range x>=1"),
    (["--optimizer", "rmsprop"], "'rmsprop' is not one of 'adam', 'sgd'"),
    (["--val-split", "0.9"], "0.9 is not in the range 0<=x<=0.5"),
    (["--label-smoothing", "1"], "1.0 is not in the range 0<=x<1"),
    (["--ema", "-0.5"], "-0.5 is not in the range 0<=x<1"),
])
def test_bad_arguments_exit_2_with_one_message(fake_data_dir, tmp_path, args, message):
    result = run_cli("train", "mnist", "--data-dir", fake_data_dir, "--output", str(tmp_path / "r"), *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_cuda_request_without_cuda_is_an_error(fake_data_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_cli("train", "mnist", "--device", "cuda", "--data-dir", fake_data_dir,
                     "--output", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert "device 'cuda' was requested but torch" in result.output and "sees no CUDA device" in result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_places_the_weights_on_the_gpu_and_the_file_loads_on_cpu(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "mnist", "--epochs", "1", "--device", "cuda", "--data-dir", fake_data_dir,
                     "--output", str(out), *FAST)
    assert result.exit_code == 0, result.output
    assert "| device cuda:0 |" in result.output
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    with keras.device("cuda:0"):
        gpu_model = keras.saving.load_model(out / "model.keras")
        assert {str(w.value.device) for w in gpu_model.weights} == {"cuda:0"}
        gpu_probs = keras.ops.convert_to_numpy(gpu_model(images, training=False))
    with keras.device("cpu"):
        cpu_model = keras.saving.load_model(out / "model.keras")
        assert {str(w.value.device) for w in cpu_model.weights} == {"cpu"}
        cpu_probs = keras.ops.convert_to_numpy(cpu_model(images, training=False))
    np.testing.assert_allclose(gpu_probs, cpu_probs, atol=2e-3)  # cuDNN may convolve in TF32


def original_has_optimizer(path):
    return getattr(keras.saving.load_model(path), "optimizer", None) is not None


def test_export_writes_an_optimizer_free_model_and_a_card_naming_the_machine(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "mnist", "--epochs", "1", "--label-smoothing", "0.1", "--ema", "0.9", "--whiten",
                   "--data-dir", fake_data_dir, "--output", str(out), *FAST).exit_code == 0
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    result = run_cli("export", str(unfinished), str(tmp_path / "x.keras"))
    assert result.exit_code == 2 and f"{unfinished / 'model.keras'}: missing; is the run finished?" in result.output
    result = run_cli("export", str(out), str(tmp_path / "shipped" / "digits.keras"))
    assert result.exit_code == 0, result.output
    exported = keras.saving.load_model(tmp_path / "shipped" / "digits.keras")
    assert getattr(exported, "optimizer", None) is None and original_has_optimizer(out / "model.keras")
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    original = keras.saving.load_model(out / "model.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(exported(images)),
                               keras.ops.convert_to_numpy(original(images)), atol=1e-6)
    assert "channels_first" in {getattr(layer, "data_format", None) for layer in original.layers}
    assert {getattr(layer, "data_format", None) for layer in exported.layers} <= {None, "channels_last"}
    card = json.loads((tmp_path / "shipped" / "digits.json").read_text())
    config, metrics = (json.loads((out / f).read_text()) for f in ("config.json", "metrics.json"))
    assert card["trained_on"] == config["resolved"]["machine"]
    assert (card["test_accuracy"], card["dataset"], card["model"]) == (metrics["test_accuracy"], "mnist", "net24k")
    assert card["command"].startswith("kcnn train mnist --recipe digits_small --model net24k --epochs 1 "
                                      "--batch-size 16")
    assert "--label-smoothing 0.1 --ema 0.9 --whiten" in card["command"]


class FirstConvAtStart(keras.callbacks.Callback):
    """The first conv's kernel and bias when fit begins."""

    def on_train_begin(self, logs=None):
        from kcnn.models import first_conv

        self.weights = [keras.ops.convert_to_numpy(w) for w in first_conv(self.model).weights]


@pytest.mark.parametrize("whiten", [False, True])
def test_whiten_starts_fit_from_the_first_convs_whitening_on_the_training_images(fake_data_dir, tmp_path, whiten):
    from kcnn.evaluation import load_split_arrays
    from kcnn.models import create_model, whiten_first_conv

    start, lines = FirstConvAtStart(), []
    train("cifar10", model="cnn2", epochs=1, batch_size=32, whiten=whiten, data_dir=fake_data_dir,
          output=str(tmp_path / "run"), verbose=0, callbacks=[start], log=lines.append)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    images = load_split_arrays("cifar10", f"train[:{config['resolved']['num_train']}]", fake_data_dir)[0]
    reference = create_model("cnn2", (32, 32, 3), 10)
    whiten_first_conv(reference, images)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in reference.get_layer("conv1").weights)
    assert config["settings"]["whiten"] is whiten
    assert np.allclose(start.weights[0], kernel, atol=1e-6) is whiten  # all 32 filters: 16 +/- pairs
    assert np.allclose(start.weights[1], bias, atol=1e-6) is whiten
    assert any(line.startswith(f"first conv whitened on {len(images)} training images") for line in lines) is whiten


def test_help_imports_no_heavy_library():
    code = ("import sys; from click.testing import CliRunner; from kcnn.cli import main; "
            "r = CliRunner().invoke(main, ['train', '--help']); assert r.exit_code == 0; "
            "print(sorted(m for m in ('keras', 'torch', 'tensorflow', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "kcnn", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("kcnn, version ")


def test_each_epoch_draws_from_streams_keyed_to_its_number_also_after_resume(fake_data_dir, tmp_path, monkeypatch):
    from kcnn import data

    pipelines = []
    load_datasets = data.load_datasets
    monkeypatch.setattr(data, "load_datasets", lambda *a, **k: pipelines.append(load_datasets(*a, **k))
                        or pipelines[-1])

    class Record(keras.callbacks.Callback):
        """Per epoch: the epoch the data pipeline is keyed to, and the dropout RNG states.

        Keras' Dropout on the torch backend draws from torch's global generator, so
        its state is recorded beside the SeedGenerator's.
        """

        def __init__(self):
            super().__init__()
            self.rows = {}

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                states = [keras.ops.convert_to_numpy(v).tolist() for v in self.model.variables
                          if v.path.endswith("seed_generator_state")]
                torch_state = hashlib.sha1(torch.random.get_rng_state().numpy().tobytes()).hexdigest()
                self.rows[int(pipelines[-1].epoch.numpy())] = (states, torch_state)

    kwargs = dict(model="cnn3", epochs=3, batch_size=16, val_split=0.25, data_dir=fake_data_dir,
                  verbose=0, log=lambda line: None)
    straight, resumed = Record(), Record()
    train("mnist", output=str(tmp_path / "straight"), callbacks=[straight], **kwargs)
    with pytest.raises(KeyboardInterrupt):
        train("mnist", output=str(tmp_path / "run"), callbacks=[InterruptAt(1)], **kwargs)
    train("mnist", output=str(tmp_path / "run"), callbacks=[resumed], **kwargs)
    assert sorted(straight.rows) == [0, 1, 2] and sorted(resumed.rows) == [1, 2]
    assert len(straight.rows[0][0]) == 1  # cnn3's dropout
    for part in (0, 1):  # the SeedGenerator's state, torch's generator: a new stream each epoch
        assert len({repr(straight.rows[epoch][part]) for epoch in range(3)}) == 3
    assert resumed.rows == {1: straight.rows[1], 2: straight.rows[2]}


class BestAtFirstEpoch(keras.callbacks.Callback):
    """Reports falling validation accuracy, so epoch 1 is the best checkpoint, and after the last
    epoch sets the weights so that the model answers ``last_class`` for every image."""

    def __init__(self, epochs, last_class):
        super().__init__()
        self.epochs, self.last_class = epochs, last_class

    def on_epoch_end(self, epoch, logs=None):
        logs["val_accuracy"] = 1.0 - 0.1 * epoch
        if epoch == self.epochs - 1:
            for w in self.model.weights:
                w.assign(keras.ops.zeros(w.shape, w.dtype))
            self.model.get_layer("probabilities").bias.assign(keras.ops.one_hot(self.last_class, 10))


def test_metrics_give_the_last_epochs_test_accuracy_beside_the_best_checkpoints(fake_data_dir, tmp_path):
    from kcnn.evaluation import load_split_arrays

    images, labels = load_split_arrays("mnist", "test", fake_data_dir)
    rare = int(np.bincount(labels, minlength=10).argmin())
    result = train("mnist", model="net24k", epochs=3, batch_size=16, val_split=0.25,
                   data_dir=fake_data_dir, output=str(tmp_path / "run"),
                   callbacks=[BestAtFirstEpoch(3, rare)], verbose=0, log=lambda line: None)
    best = keras.saving.load_model(tmp_path / "run" / "model.keras")
    best_accuracy = float((best.predict(images, verbose=0).argmax(axis=1) == labels).mean())
    assert result.metrics["best_epoch"] == 1
    assert result.metrics["test_accuracy"] == pytest.approx(best_accuracy)
    assert result.metrics["final_test_accuracy"] == pytest.approx(np.mean(labels == rare))
    assert best_accuracy != pytest.approx(np.mean(labels == rare))  # the two really differ here


@pytest.mark.realdata
def test_interrupted_run_on_real_mnist_ends_where_the_uninterrupted_one_does(real_data_dir, tmp_path):
    kwargs = dict(model="net24k", epochs=2, data_dir=real_data_dir, verbose=0, log=lambda line: None)
    straight = train("mnist", output=str(tmp_path / "straight"), **kwargs)
    assert straight.metrics["test_examples"] == 10_000
    assert straight.metrics["test_accuracy"] >= 0.97, straight.metrics
    with pytest.raises(KeyboardInterrupt):
        train("mnist", output=str(tmp_path / "run"), callbacks=[InterruptAt(1)], **kwargs)
    resumed = train("mnist", output=str(tmp_path / "run"), **kwargs)
    assert resumed.resumed_from_epoch == 1
    # The bar is 0.3 points; keyed random streams make it match exactly on CPU. On CUDA, cuDNN's
    # nondeterministic kernels leave last digits to chance (an H100 gave 98.03% resumed vs 98.09% straight).
    assert abs(resumed.metrics["test_accuracy"] - straight.metrics["test_accuracy"]) <= 0.003
    if not torch.cuda.is_available():
        assert resumed.metrics["test_accuracy"] == straight.metrics["test_accuracy"]



class PoisonWeights(keras.callbacks.Callback):
    """Turns every weight into NaN before one step, as a diverging run does."""

    def __init__(self, epoch, step):
        super().__init__()
        self.at = (epoch, step)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            for w in self.model.trainable_weights:
                w.assign(keras.ops.full(w.shape, float("nan")))


def test_divergence_stops_and_keeps_the_last_good_checkpoint(fake_data_dir, tmp_path):
    import numpy as np

    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as err:
        train("mnist", model="net24k", epochs=3, batch_size=16, val_split=0.25, data_dir=fake_data_dir,
              output=str(out), verbose=0, log=lambda line: None, callbacks=[PoisonWeights(1, 2)])
    assert str(err.value).startswith("loss became NaN/Inf at epoch 2, step 3; training stopped.")
    assert [r["epoch"] for r in read_history(out / "history.csv")] == [0]
    assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    model = keras.saving.load_model(out / "model.keras")
    assert np.all(np.isfinite(model.predict(np.zeros((2, 28, 28, 1), np.uint8), verbose=0)))


def test_recipes_follow_the_dataset_and_options_override_them():
    from kcnn.training import resolve_recipe

    assert resolve_recipe((28, 28, 1)) == dict(recipe="digits", optimizer="adam", lr=2e-3, lr_schedule="onecycle",
                                               weight_decay=0.0, augment=True, batch_size=128,
                                               label_smoothing=0.1, ema=0.0, whiten=False, val_split=0.1)
    assert resolve_recipe((32, 32, 3), recipe="seed") == dict(recipe="seed", optimizer="adam", lr=1e-3,
                                                              lr_schedule="constant", weight_decay=0.0,
                                                              augment=False, batch_size=64, label_smoothing=0.0,
                                                              ema=0.0, whiten=False, val_split=0.1)
    assert resolve_recipe((28, 28, 1), recipe="seed", batch_size=32)["batch_size"] == 32
    cifar = resolve_recipe((32, 32, 3))
    assert (cifar["recipe"], cifar["optimizer"], cifar["lr"], cifar["augment"], cifar["batch_size"],
            cifar["weight_decay"], cifar["whiten"], cifar["label_smoothing"], cifar["val_split"]) == (
        "cifar_whiten_shift_full", "adam", 4e-3, "flip_shift", 64, 0.05, True, 0.1, 0.0)
    assert resolve_recipe((32, 32, 3), lr=0.1, augment=False)["lr"] == 0.1
    assert resolve_recipe((28, 28, 1), optimizer="sgd")["lr"] == 0.05  # the optimizer's own default
    assert resolve_recipe((28, 28, 1), recipe="cifar_sgd")["optimizer"] == "sgd"
    assert resolve_recipe((28, 28, 1), dataset="mnist")["recipe"] == "digits"
    fashion = resolve_recipe((28, 28, 1), dataset="fashion_mnist")  # clothes mirror; digits do not
    assert (fashion["recipe"], fashion["augment"], fashion["whiten"], fashion["val_split"]) == (
        "cifar_whiten_full", "flip", True, 0.0)
    assert resolve_recipe((28, 28, 1), dataset="fashion_mnist", val_split=0.2)["val_split"] == 0.2
    assert resolve_recipe((28, 28, 1), recipe="cifar")["batch_size"] == 128
    assert resolve_recipe((32, 32, 3), dataset="cifar100")["recipe"] == "cifar_whiten_shift_full"
    assert resolve_recipe((28, 28, 1), "digits", "fashion_mnist")["recipe"] == "digits"  # --recipe wins
    small = resolve_recipe((28, 28, 1), dataset="mnist", model="net24k")  # the small digit net's own default
    assert (small["recipe"], small["lr"], small["augment"], small["batch_size"]) == ("digits_small", 5e-3, "shift", 64)
    assert resolve_recipe((28, 28, 1), dataset="mnist", model="cnn3")["recipe"] == "digits"
    assert resolve_recipe((28, 28, 1), dataset="fashion_mnist", model="net24k")["recipe"] == "cifar_whiten_full"
    assert resolve_recipe((28, 28, 1), "digits", "mnist", "net24k")["recipe"] == "digits"
    with pytest.raises(ValueError, match="Unknown recipe; valid: digits, digits_small, cifar, cifar_b64, cifar_adamw, "
                                         "cifar_whiten, cifar_whiten_ls, cifar_whiten_shift, cifar_whiten_shift_full, "
                                         "cifar_whiten_full, cifar_sgd, seed. Received: recipe='fast'"):
        resolve_recipe((28, 28, 1), recipe="fast")


def test_train_help_states_every_recipes_settings_and_the_defaults_from_the_tables(monkeypatch):
    from kcnn import training
    from kcnn.training import describe_default_recipes, describe_recipe

    assert describe_recipe("cifar_sgd") == ("sgd 0.05 onecycle, affine (gray) / crop_flip (colour), batch 128, "
                                            "weight decay 0.0005")
    assert describe_recipe("digits_small") == "adam 0.005 onecycle, shift, batch 64, label smoothing 0.1"
    assert describe_recipe("seed") == "adam 0.001 constant, no augmentation, batch 64"
    assert describe_default_recipes() == ("digits_small for net24k on mnist, cifar_whiten_full for fashion_mnist, "
                                          "cifar_whiten_shift_full for colour images, digits for gray ones")
    monkeypatch.setitem(training.RECIPES, "cifar", dict(training.RECIPES["cifar"], ema=0.999, lr=3e-3, whiten=True))
    assert describe_recipe("cifar") == "adam 0.003 onecycle, flip, batch 128, ema 0.999, whitened first conv"
    monkeypatch.setitem(training.DATASET_RECIPES, "cifar100", "cifar_sgd")
    assert "cifar_sgd for cifar100, cifar_whiten_shift_full for colour images" in describe_default_recipes()
    assert describe_recipe("cifar_adamw") == "adam 0.004 onecycle, flip, batch 64, weight decay 0.05"
    assert describe_recipe("cifar_whiten") == ("adam 0.004 onecycle, flip, batch 64, weight decay 0.05, "
                                               "whitened first conv")
    assert describe_recipe("cifar_whiten_ls") == ("adam 0.004 onecycle, flip, batch 64, weight decay 0.05, "
                                                  "label smoothing 0.1, whitened first conv")
    assert describe_recipe("cifar_whiten_shift_full") == ("adam 0.004 onecycle, flip_shift, batch 64, "
                                                          "weight decay 0.05, label smoothing 0.1, "
                                                          "whitened first conv, no validation split")
    assert describe_recipe("cifar_whiten_full") == ("adam 0.004 onecycle, flip, batch 64, weight decay 0.05, "
                                                    "whitened first conv, no validation split")
    monkeypatch.setitem(training.RECIPES, "seed", dict(training.RECIPES["seed"], val_split=0.2))
    assert describe_recipe("seed") == "adam 0.001 constant, no augmentation, batch 64, val split 0.2"
    monkeypatch.undo()
    text = " ".join(run_cli("train", "--help").output.split())  # undo click's line wrapping
    for name in training.RECIPES:
        assert f"{name} ({describe_recipe(name)})" in text
    assert f"[default: {describe_default_recipes()}]" in text


def readme_recipes_table() -> dict:
    """README's Recipes table as ``{recipe name: [cell, ...]}``, the header row left out."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| recipe | optimizer |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        name, *cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[re.match(r"`(\w+)`", name).group(1)] = cells
    return rows


def test_readme_recipes_table_states_every_recipes_settings():
    from kcnn.data import default_augmentation
    from kcnn.training import RECIPES

    table = readme_recipes_table()
    assert list(table) == list(RECIPES)
    for name, (optimizer, lr, schedule, decay, augment, batch, smoothing, ema, whiten, val_split) in table.items():
        recipe = RECIPES[name]
        if recipe["augment"] is True:  # the dataset's policy, named for the datasets the recipe is meant for
            policies = {default_augmentation((28, 28, 1)), default_augmentation((32, 32, 3))}
        else:
            policies = {recipe["augment"] or "none"}
        assert (re.match(r"[a-z]+", optimizer.lower()).group(), float(lr), schedule.replace("-", ""), float(decay),
                augment.strip("`") in policies, int(batch), float(smoothing), float(ema), whiten == "yes",
                float(val_split)) == (recipe["optimizer"], recipe["lr"], recipe["lr_schedule"],
                                      recipe["weight_decay"], True, recipe["batch_size"], recipe["label_smoothing"],
                                      recipe["ema"], recipe["whiten"], recipe["val_split"]), name


def test_config_records_the_resolved_recipe(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "cifar10", "--epochs", "1", "--data-dir", fake_data_dir, "--output", str(out),
                     "--lr", "0.02", *FAST)
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert (settings["recipe"], settings["optimizer"], settings["lr"], settings["augment"]) == (
        "cifar_whiten_shift_full", "adam", 0.02, "flip_shift")
    # colour datasets: also the best checkpoint's accuracy with test-time flip averaging
    from kcnn.evaluation import load_split_arrays, predict_probs

    images, labels = load_split_arrays("cifar10", "test", fake_data_dir)
    probs = predict_probs(keras.saving.load_model(out / "model.keras"), images, tta="flip")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy_tta_flip"] == pytest.approx(np.mean(probs.argmax(axis=1) == labels))


def test_fashion_mnist_trains_on_the_whole_train_split_with_flips_and_a_whitened_first_conv_by_default(
        fake_data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "fashion_mnist", "--epochs", "1", "--data-dir", fake_data_dir, "--output", str(out),
                     "--model", "net24k", "--batch-size", "16")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["settings"]["recipe"], config["resolved"]["augmentation"], config["settings"]["whiten"],
            config["settings"]["val_split"]) == ("cifar_whiten_full", "flip", True, 0.0)
    assert "val_accuracy" not in read_history(out / "history.csv")[0] and "by accuracy" in result.output
    assert 0.0 <= json.loads((out / "metrics.json").read_text())["test_accuracy_tta_flip"] <= 1.0


def test_seed_recipe_from_the_command_line_sets_its_batch_size_and_augmentation(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "mnist", "--recipe", "seed", "--epochs", "1", "--data-dir", fake_data_dir,
                     "--output", str(out), "--model", "net24k", "--val-split", "0.25")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["settings"]["batch_size"], config["settings"]["augment"]) == (64, False)
    assert config["resolved"]["steps_per_epoch"] == -(-config["resolved"]["num_train"] // 64)
    assert config["resolved"]["augmentation"] == "none"
    result = run_cli("train", "mnist", "--augment", "flop", "--data-dir", fake_data_dir)
    assert result.exit_code == 2
    assert ("'flop' is not one of 'none', 'flip', 'crop_flip', 'flip_erase', 'shift', 'affine', 'flip_shift'"
            in result.output)


def test_mixed_precision_trains_in_bfloat16_with_a_float32_head_and_restores_the_policy(fake_data_dir, tmp_path):
    import numpy as np

    out = tmp_path / "run"
    result = train("mnist", model="cnn3", epochs=1, batch_size=16, val_split=0.25, mixed_precision="bfloat16",
                   data_dir=fake_data_dir, output=str(out), verbose=0, log=lambda line: None)
    assert keras.config.dtype_policy().name == "float32"
    assert json.loads((out / "config.json").read_text())["settings"]["mixed_precision"] == "bfloat16"
    model = keras.saving.load_model(out / "model.keras")
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("conv1").variable_dtype == "float32"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    probs = model.predict(np.zeros((2, 28, 28, 1), np.uint8), verbose=0)
    assert probs.dtype == np.float32 and np.all(np.isfinite(probs))
    assert 0 <= result.metrics["test_accuracy"] <= 1


def test_unknown_mixed_precision_is_one_line_exit_2(fake_data_dir):
    result = CliRunner().invoke(main, ["train", "mnist", "--mixed-precision", "int8", "--data-dir", fake_data_dir])
    assert result.exit_code == 2
    assert "Invalid value for '--mixed-precision': 'int8' is not one of 'bfloat16', 'float16'." in result.output


def test_label_smoothing_trains_on_smoothed_targets_and_the_file_loads_compiled_in_plain_keras(fake_data_dir,
                                                                                               tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "mnist", "--epochs", "1", "--label-smoothing", "0.2", "--data-dir", fake_data_dir,
                     "--output", str(out), *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["settings"]["label_smoothing"] == 0.2
    assert {"accuracy", "val_accuracy"} <= set(read_history(out / "history.csv")[0])
    model = keras.saving.load_model(out / "model.keras")  # compiled, no kcnn objects needed
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(8) % 10
    probs = model.predict(images, verbose=0)
    targets = 0.8 * np.eye(10)[labels] + 0.2 / 10
    expected = -(targets * np.log(np.clip(probs, 1e-7, 1))).sum(axis=1).mean()
    loss = model.evaluate(images, np.eye(10, dtype="float32")[labels], verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(expected, rel=1e-4)


def test_a_run_folder_from_before_label_smoothing_ema_mixed_precision_and_whiten_still_resumes(tmp_path):
    from kcnn.training import RunFolderError, resolve_recipe, resolve_run_dir

    # folders from before label smoothing trained without it, so they resume only into a run without it
    settings = dict(dataset="mnist", model="cnn3", epochs=2, **resolve_recipe((28, 28, 1), label_smoothing=0.0),
                    seed=0, mixed_precision=None, device="auto", data_dir=None)
    older = {k: v for k, v in settings.items() if k not in ("label_smoothing", "ema", "mixed_precision", "whiten")}
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"settings": older}))  # unfinished: no metrics.json
    assert resolve_run_dir(settings, str(folder)) == (folder, True)
    with pytest.raises(RunFolderError, match=r"\(ema: 0.0 there, 0.999 here\)"):
        resolve_run_dir({**settings, "ema": 0.999}, str(folder))
    with pytest.raises(RunFolderError, match=r"\(whiten: False there, True here\)"):
        resolve_run_dir({**settings, "whiten": True}, str(folder))


def test_a_run_folder_of_the_same_settings_under_another_recipe_name_resumes(tmp_path):
    from kcnn.training import RunFolderError, resolve_recipe, resolve_run_dir

    run = dict(dataset="cifar10", model="cnn3", epochs=2, seed=0, mixed_precision=None,
               device="auto", data_dir=None)
    renamed = dict(run, **resolve_recipe((32, 32, 3), "cifar_adamw", whiten=True))
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"settings": renamed}))  # unfinished: no metrics.json
    assert resolve_run_dir(dict(run, **resolve_recipe((32, 32, 3), "cifar_whiten")), str(folder)) == (folder, True)
    with pytest.raises(RunFolderError, match=r"other settings \(whiten: True there, False here\)"):
        resolve_run_dir(dict(run, **resolve_recipe((32, 32, 3), "cifar_adamw")), str(folder))


class RecordEMA(keras.callbacks.Callback):
    """Per epoch end: the trained weights and the optimizer's moving averages of them; and
    reports rising validation accuracy, so every epoch's checkpoint is saved."""

    def __init__(self):
        super().__init__()
        self.trained, self.average = {}, {}

    def on_epoch_end(self, epoch, logs=None):
        self.trained[epoch] = [keras.ops.convert_to_numpy(w) for w in self.model.trainable_weights]
        self.average[epoch] = [keras.ops.convert_to_numpy(v) for v in self.model.optimizer.variables
                               if v.path.endswith("_average")]
        logs["val_accuracy"] = 0.1 * (epoch + 1)


def test_ema_checkpoints_the_averaged_weights_and_resumes_exactly(fake_data_dir, tmp_path):
    kwargs = dict(model="net24k", epochs=2, batch_size=16, val_split=0.25, ema=0.9, data_dir=fake_data_dir,
                  verbose=0, log=lambda line: None)
    straight, resumed = RecordEMA(), RecordEMA()
    train("mnist", output=str(tmp_path / "straight"), callbacks=[straight], **kwargs)
    with pytest.raises(KeyboardInterrupt):
        train("mnist", output=str(tmp_path / "run"), callbacks=[RecordEMA(), InterruptAt(1)], **kwargs)
    train("mnist", output=str(tmp_path / "run"), callbacks=[resumed], **kwargs)

    def saved(folder):
        return [keras.ops.convert_to_numpy(w) for w in
                keras.saving.load_model(tmp_path / folder / "model.keras").trainable_weights]

    assert len(straight.average[1]) == len(straight.trained[1]) > 0
    for checkpoint, average, trained in zip(saved("straight"), straight.average[1], straight.trained[1]):
        np.testing.assert_array_equal(checkpoint, average)
        assert not np.array_equal(average, trained)
    for a, b in zip(resumed.trained[1] + resumed.average[1], straight.trained[1] + straight.average[1]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(saved("run"), saved("straight")):
        np.testing.assert_array_equal(a, b)
