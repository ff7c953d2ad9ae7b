"""kcnn.callbacks through fit: epoch-keyed random streams, divergence, EMA checkpoints, exact resume."""

import hashlib
import json

import keras
import numpy as np
import pytest
import torch
from helpers import InterruptAt, tiny_train

from kcnn.runs import read_history
from kcnn.training import TrainingDiverged


@pytest.mark.slow
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

    straight, resumed = Record(), Record()
    tiny_train(fake_data_dir, tmp_path / "straight", model="cnn3", epochs=3, callbacks=[straight])
    with pytest.raises(KeyboardInterrupt):
        tiny_train(fake_data_dir, tmp_path / "run", model="cnn3", epochs=3, callbacks=[InterruptAt(1)])
    tiny_train(fake_data_dir, tmp_path / "run", model="cnn3", epochs=3, callbacks=[resumed])
    assert sorted(straight.rows) == [0, 1, 2] and sorted(resumed.rows) == [1, 2]
    assert len(straight.rows[0][0]) == 1  # cnn3's dropout
    for part in (0, 1):  # the SeedGenerator's state, torch's generator: a new stream each epoch
        assert len({repr(straight.rows[epoch][part]) for epoch in range(3)}) == 3
    assert resumed.rows == {1: straight.rows[1], 2: straight.rows[2]}


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
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as err:
        tiny_train(fake_data_dir, out, epochs=3, callbacks=[PoisonWeights(1, 2)])
    assert str(err.value).startswith("loss became NaN/Inf at epoch 2, step 3; training stopped.")
    assert [r["epoch"] for r in read_history(out / "history.csv")] == [0]
    assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    model = keras.saving.load_model(out / "model.keras")
    assert np.all(np.isfinite(model.predict(np.zeros((2, 28, 28, 1), np.uint8), verbose=0)))


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


@pytest.mark.slow
def test_ema_checkpoints_the_averaged_weights_and_resumes_exactly(fake_data_dir, tmp_path):
    straight, resumed = RecordEMA(), RecordEMA()
    tiny_train(fake_data_dir, tmp_path / "straight", epochs=2, ema=0.9, callbacks=[straight])
    with pytest.raises(KeyboardInterrupt):
        tiny_train(fake_data_dir, tmp_path / "run", epochs=2, ema=0.9, callbacks=[RecordEMA(), InterruptAt(1)])
    tiny_train(fake_data_dir, tmp_path / "run", epochs=2, ema=0.9, callbacks=[resumed])

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


class FlatValidation(keras.callbacks.Callback):
    """Reports the same validation accuracy every epoch: no epoch improves on the first."""

    def on_epoch_end(self, epoch, logs=None):
        logs["val_accuracy"] = 0.5


def test_patience_stops_a_run_that_stops_improving_and_says_so(fake_data_dir, tmp_path, caplog):
    result = tiny_train(fake_data_dir, tmp_path / "run", epochs=5, patience=2, callbacks=[FlatValidation()])
    assert len(result.history) == 3 and result.metrics["epochs"] == 3  # best at epoch 1, then 2 without
    assert any(r.getMessage().startswith("stopped early after epoch 3 of 5") for r in caplog.records)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["settings"]["patience"] == 2


def test_early_stopping_resumes_with_the_epochs_already_waited():
    from kcnn.callbacks import ResumableEarlyStopping

    rows = [{"epoch": 0, "val_accuracy": 0.6}, {"epoch": 1, "val_accuracy": 0.7}, {"epoch": 2, "val_accuracy": 0.65}]
    stopping = ResumableEarlyStopping(rows, monitor="val_accuracy", patience=3)
    stopping.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    stopping.on_train_begin()
    assert (stopping.best, stopping.wait) == (0.7, 1)  # as the uninterrupted run had it after epoch 3
