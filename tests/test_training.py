"""kcnn.training: what a run writes, its checkpoint and metrics, resume, recipes in effect, replay of a run."""

import json
import re

import keras
import numpy as np
import pytest
import torch
from helpers import FAST_ARGS, InterruptAt, run_cli, tiny_train

from kcnn.config import TrainConfig
from kcnn.data import load_info, load_split_arrays
from kcnn.runs import read_history
from kcnn.training import train


def test_cli_train_writes_the_run_folder(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "mnist", "--epochs", "2", "--data-dir", fake_data_dir,
                     "--output", str(out), *FAST_ARGS)
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


@pytest.mark.slow
def test_default_run_folders_are_numbered(fake_data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for expected in ("mnist-net24k-1", "mnist-net24k-2"):
        result = run_cli("train", "mnist", "--epochs", "1", "--data-dir", fake_data_dir, *FAST_ARGS)
        assert result.exit_code == 0, result.output
        assert (tmp_path / "runs" / expected / "metrics.json").exists()


def test_interrupted_run_resumes_where_it_stopped(fake_data_dir, tmp_path, caplog):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        tiny_train(fake_data_dir, out, epochs=3, callbacks=[InterruptAt(2)])
    assert "re-run the same command to resume" in caplog.records[-1].getMessage()  # the Python API logs it
    assert [r["epoch"] for r in read_history(out / "history.csv")] == [0, 1]
    assert (out / "model.keras").exists() and not (out / "metrics.json").exists()

    result = tiny_train(fake_data_dir, out, epochs=3)
    assert result.resumed_from_epoch == 2
    assert [r["epoch"] for r in result.history] == [0, 1, 2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    seconds = [r["epoch_seconds"] for r in result.history]  # both calls' epochs are timed
    assert min(seconds) > 0
    assert metrics["fit_seconds"] == round(sum(seconds), 1) > seconds[-1]
    assert metrics["fit_seconds_this_call"] >= seconds[-1]  # this call trained one epoch


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


class FirstConvAtStart(keras.callbacks.Callback):
    """The first conv's kernel and bias when fit begins."""

    def on_train_begin(self, logs=None):
        from kcnn.models import first_conv

        self.weights = [keras.ops.convert_to_numpy(w) for w in first_conv(self.model).weights]


@pytest.mark.parametrize("whiten", [False, True])
def test_whiten_starts_fit_from_the_first_convs_whitening_on_the_training_images(fake_data_dir, tmp_path, whiten,
                                                                                caplog):
    from kcnn.models import create_model, whiten_first_conv

    start = FirstConvAtStart()
    train("cifar10", model="cnn2", epochs=1, batch_size=32, whiten=whiten, data_dir=fake_data_dir,
          output=str(tmp_path / "run"), verbose=0, callbacks=[start])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    images = load_split_arrays(load_info("cifar10", fake_data_dir), f"train[:{config['resolved']['num_train']}]")[0]
    reference = create_model("cnn2", (32, 32, 3), 10)
    whiten_first_conv(reference, images)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in reference.get_layer("conv1").weights)
    assert config["settings"]["whiten"] is whiten
    assert np.allclose(start.weights[0], kernel, atol=1e-6) is whiten  # all 32 filters: 16 +/- pairs
    assert np.allclose(start.weights[1], bias, atol=1e-6) is whiten
    lines = [record.getMessage() for record in caplog.records]
    assert any(line.startswith(f"first conv whitened on {len(images)} training images") for line in lines) is whiten


def test_a_frozen_first_conv_is_whitened_without_whiten_and_stays_as_whitened(fake_data_dir, tmp_path, caplog):
    from kcnn.models import create_model, whiten_first_conv

    start = FirstConvAtStart()
    result = train("cifar10", model="whitened8_narrow", epochs=1, batch_size=32, whiten=False,
                   data_dir=fake_data_dir, output=str(tmp_path / "run"), verbose=0, callbacks=[start])
    assert result.run_dir == tmp_path / "run"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    images = load_split_arrays(load_info("cifar10", fake_data_dir), f"train[:{config['resolved']['num_train']}]")[0]
    reference = create_model("whitened8_narrow", (32, 32, 3), 10)
    whiten_first_conv(reference, images)
    whitened = [keras.ops.convert_to_numpy(w) for w in reference.get_layer("whiten").weights]
    for got, expected in zip(start.weights, whitened, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-6)
    trained = keras.saving.load_model(tmp_path / "run" / "model.keras").get_layer("whiten")
    for got, expected in zip(trained.weights, whitened, strict=True):  # frozen: the epoch left it as it was
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, atol=1e-6)
    assert any(r.getMessage().startswith("first conv whitened on") for r in caplog.records)


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
    images, labels = load_split_arrays(load_info("mnist", fake_data_dir), "test")
    rare = int(np.bincount(labels, minlength=10).argmin())
    result = tiny_train(fake_data_dir, tmp_path / "run", epochs=3, callbacks=[BestAtFirstEpoch(3, rare)])
    best = keras.saving.load_model(tmp_path / "run" / "model.keras")
    best_accuracy = float((best.predict(images, verbose=0).argmax(axis=1) == labels).mean())
    assert result.metrics["best_epoch"] == 1
    assert result.metrics["test_accuracy"] == pytest.approx(best_accuracy)
    assert result.metrics["final_test_accuracy"] == pytest.approx(np.mean(labels == rare))
    assert best_accuracy != pytest.approx(np.mean(labels == rare))  # the two really differ here


@pytest.mark.slow
@pytest.mark.realdata
def test_interrupted_run_on_real_mnist_ends_where_the_uninterrupted_one_does(real_data_dir, tmp_path):
    kwargs = dict(model="net24k", epochs=2, data_dir=real_data_dir, verbose=0)
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


def test_config_records_the_resolved_recipe(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "cifar10", "--epochs", "1", "--data-dir", fake_data_dir, "--output", str(out),
                     "--lr", "0.02", *FAST_ARGS)
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert (settings["recipe"], settings["optimizer"], settings["lr"], settings["augment"]) == (
        "cifar", "adam", 0.02, "flip_shift")
    # colour datasets: also the best checkpoint's accuracy with test-time flip averaging
    from kcnn.evaluation import predict_probs

    images, labels = load_split_arrays(load_info("cifar10", fake_data_dir), "test")
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
            config["settings"]["val_split"]) == ("fashion", "flip", True, 0.0)
    assert "val_accuracy" not in read_history(out / "history.csv")[0] and "by accuracy" in result.output
    assert 0.0 <= json.loads((out / "metrics.json").read_text())["test_accuracy_tta_flip"] <= 1.0


def test_baseline_recipe_from_the_command_line_sets_its_batch_size_and_augmentation(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "mnist", "--recipe", "baseline", "--epochs", "1", "--data-dir", fake_data_dir,
                     "--output", str(out), "--model", "net24k", "--val-split", "0.25")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["settings"]["batch_size"], config["settings"]["augment"]) == (64, "none")
    assert config["resolved"]["steps_per_epoch"] == -(-config["resolved"]["num_train"] // 64)
    assert config["resolved"]["augmentation"] == "none"
    result = run_cli("train", "mnist", "--augment", "flop", "--data-dir", fake_data_dir)
    assert result.exit_code == 2
    assert ("'flop' is not one of 'none', 'flip', 'crop_flip', 'flip_erase', 'shift', 'affine', 'flip_shift'"
            in result.output)


@pytest.mark.slow
def test_mixed_precision_trains_in_bfloat16_with_a_float32_head_and_restores_the_policy(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    result = tiny_train(fake_data_dir, out, model="cnn3", epochs=1, mixed_precision="bfloat16")
    assert keras.config.dtype_policy().name == "float32"
    assert json.loads((out / "config.json").read_text())["settings"]["mixed_precision"] == "bfloat16"
    model = keras.saving.load_model(out / "model.keras")
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("conv1").variable_dtype == "float32"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    probs = model.predict(np.zeros((2, 28, 28, 1), np.uint8), verbose=0)
    assert probs.dtype == np.float32 and np.all(np.isfinite(probs))
    assert 0 <= result.metrics["test_accuracy"] <= 1


def test_label_smoothing_trains_on_smoothed_targets_and_the_file_loads_compiled_in_plain_keras(fake_data_dir,
                                                                                               tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "mnist", "--epochs", "1", "--label-smoothing", "0.2", "--data-dir", fake_data_dir,
                     "--output", str(out), *FAST_ARGS)
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


@pytest.mark.slow
def test_a_run_replays_from_its_config_json_with_the_same_settings_and_test_accuracy(fake_data_dir, tmp_path):
    first = tiny_train(fake_data_dir, tmp_path / "first", epochs=2, lr=3e-3, label_smoothing=0.05)
    replay = run_cli("train", "--config", first.run_dir / "config.json", "--output", tmp_path / "replay")
    assert replay.exit_code == 0, replay.output
    again = TrainConfig.load(tmp_path / "replay" / "config.json")
    assert again.to_dict() == first.config.to_dict()
    metrics = json.loads((tmp_path / "replay" / "metrics.json").read_text())
    assert metrics["test_accuracy"] == first.metrics["test_accuracy"]  # training on CPU is deterministic
    assert metrics["test_loss"] == pytest.approx(first.metrics["test_loss"], abs=1e-6)
    longer = train(config=TrainConfig.load(first.run_dir / "config.json"), epochs=3, output=str(tmp_path / "longer"),
                   verbose=0)  # the Python API: a config, then overrides
    assert longer.config == TrainConfig.from_dict({**first.config.to_dict(), "epochs": 3})
