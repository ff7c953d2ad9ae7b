"""The airbench recipe's pieces: triangular schedule, batch-norm biases at a higher rate, lookahead,
the test-time-augmented figure, and exact resume of a run that uses them all."""

import json

import keras
import numpy as np
import pytest
from helpers import InterruptAt, tiny_train

from kcnn import create_model
from kcnn import metadata as model_metadata
from kcnn.callbacks import Lookahead
from kcnn.evaluation import predict_probs
from kcnn.training import (TRIANGULAR_END, TRIANGULAR_START, batch_norm_biases, make_optimizer, scale_gradients,
                           triangular_lr)


def test_triangular_schedule_warms_up_from_a_fifth_of_the_peak_then_falls_to_seven_percent():
    total, peak = 100, 1.5
    rates = [triangular_lr(step, total, peak) for step in range(total + 1)]
    top = int(np.argmax(rates))
    assert rates[0] == pytest.approx(TRIANGULAR_START * peak) and top == 23 and rates[top] == pytest.approx(peak)
    assert rates[-1] == pytest.approx(TRIANGULAR_END * peak)
    assert np.all(np.diff(rates[:top + 1]) > 0) and np.all(np.diff(rates[top:]) < 0)


def one_sgd_step(factor, tmp_path=None):
    """Trainable variables before and after one SGD step of whitened8_narrow on 8 random images,
    the batch-norm biases' gradients times ``factor``; with ``tmp_path``, the model saved there."""
    keras.utils.set_random_seed(0)
    model = create_model("whitened8_narrow", (16, 16, 3), 10)
    model.compile(optimizer=make_optimizer("sgd", 0.1, momentum=0.85), loss="sparse_categorical_crossentropy")
    if factor != 1:
        scale_gradients(model, batch_norm_biases(model), factor)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8), rng.integers(0, 10, 8)
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    if tmp_path is not None:
        model.save(tmp_path / "scaled.keras")
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    chosen = [any(v is b for b in batch_norm_biases(model)) for v in model.trainable_variables]
    return [a - b for a, b in zip(after, before)], chosen


def test_batch_norm_biases_step_64_times_as_far_and_the_saved_file_stays_stock(tmp_path):
    plain, _ = one_sgd_step(1)
    scaled, chosen = one_sgd_step(64, tmp_path)
    assert sum(chosen) == 6  # two batch norms in each of the three blocks
    for a, b, is_bias in zip(plain, scaled, chosen):
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(b, 64 * a if is_bias else a, rtol=1e-4, atol=1e-7)
    loaded = keras.saving.load_model(tmp_path / "scaled.keras")  # compiled: the optimizer's config is stock SGD
    assert type(loaded.optimizer).__name__ == "SGD" and float(loaded.optimizer.momentum) == pytest.approx(0.85)


def test_lookahead_pulls_the_weights_to_the_slow_copy_every_fifth_step_and_at_each_epochs_end():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
    model.compile(optimizer="sgd", loss="mse")
    lookahead = Lookahead(total_steps=10, every=5, base=0.5)
    lookahead.set_model(model)
    lookahead.on_train_begin()
    lookahead.on_train_batch_begin(0)
    start = [keras.ops.convert_to_numpy(v).copy() for v in lookahead.variables]
    assert len(start) == 6  # kernel, bias, gamma, beta and the moving statistics

    def move_to(step):
        for v in lookahead.variables:
            v.assign(v + 1.0)
        model.optimizer.iterations.assign(step)

    move_to(4)
    lookahead.on_train_batch_end(3)  # not a fifth step: untouched
    for v, s in zip(lookahead.variables, start):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), s + 1.0)
    move_to(5)  # now 2 past the slow copy
    lookahead.on_train_batch_end(4)
    decay = 0.5 * (5 / 10) ** 3
    for v, s in zip(lookahead.variables, start):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), s + (1 - decay) * 2.0, rtol=1e-6)
    pulled = [keras.ops.convert_to_numpy(v).copy() for v in lookahead.variables]
    move_to(7)
    lookahead.on_epoch_end(0)
    decay = 0.5 * (7 / 10) ** 3
    for v, p in zip(lookahead.variables, pulled):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), p + (1 - decay) * 1.0, rtol=1e-6)


class RecordWeights(keras.callbacks.Callback):
    """The weights and the learning rate at each epoch's end."""

    def __init__(self):
        super().__init__()
        self.weights, self.rates = {}, {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = [keras.ops.convert_to_numpy(v).copy() for v in self.model.weights]
        self.rates[epoch] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


@pytest.mark.slow
def test_a_run_of_the_airbench_recipe_resumes_exactly_and_reports_its_tta_figure(fake_data_dir, tmp_path):
    options = dict(dataset="cifar10", recipe="airbench", model="whitened8_narrow", epochs=2, batch_size=16)
    straight, resumed = RecordWeights(), RecordWeights()
    result = tiny_train(fake_data_dir, tmp_path / "straight", callbacks=[straight], **options)
    with pytest.raises(KeyboardInterrupt):
        tiny_train(fake_data_dir, tmp_path / "run", callbacks=[InterruptAt(1)], **options)
    tiny_train(fake_data_dir, tmp_path / "run", callbacks=[resumed], **options)
    for a, b in zip(resumed.weights[1], straight.weights[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert resumed.rates[1] == straight.rates[1] < straight.rates[0]
    assert result.config.lookahead and result.config.augment == "altflip_shift"
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    from kcnn import data

    images, labels = data.load_split_arrays(data.load_info("cifar10", fake_data_dir), "test")
    model = keras.saving.load_model(tmp_path / "straight" / "model.keras")
    probs = predict_probs(model, images, tta="flip_shift")
    assert metrics["test_accuracy_tta_flip_shift"] == pytest.approx(np.mean(probs.argmax(axis=1) == labels))
    card = model_metadata.read(tmp_path / "straight" / "model.keras")["card"]  # the file names its figures too
    assert card["test_accuracy_tta_flip_shift"] == metrics["test_accuracy_tta_flip_shift"]
