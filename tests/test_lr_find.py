"""kcnn lr-find: the learning-rate range test on the run's own pipeline and model, on tiny generated data."""

import json

import numpy as np
import pytest
from helpers import run_cli

from kcnn.errors import UsageError
from kcnn.lr_find import LRRangeTest, lr_find, suggest


def test_the_curve_is_recorded_and_the_suggestion_lies_in_the_tested_range(photo_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a learnable folder: discs, bars and crosses
    result = run_cli("lr-find", photo_folder, "--image-size", "24", "24", "--model", "net24k", "--batch-size", "8",
                     "--steps", "30", "--start", "1e-5", "--end", "1", "--output", tmp_path / "lr")
    assert result.exit_code == 0, result.output
    curve = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert len(curve["lrs"]) == len(curve["losses"]) == 30 and not curve["stopped_early"]
    np.testing.assert_allclose(curve["lrs"][0], 1e-5) and np.testing.assert_allclose(curve["lrs"][-1], 1.0)
    assert np.all(np.diff(np.log(curve["lrs"])) > 0)  # exponential growth
    assert 1e-5 <= curve["suggested_lr"] <= 1
    line = next(line for line in result.output.splitlines() if line.startswith("suggested lr"))
    assert line == f"suggested lr {curve['suggested_lr']:.1e} (recipe cifar uses 4.0e-03)"
    assert (tmp_path / "lr" / "lr_find.png").stat().st_size > 0
    assert not (tmp_path / "runs").exists()  # no run folder made or touched


def test_a_diverging_loss_stops_the_test_early(photo_folder, tmp_path):
    curve = lr_find(str(photo_folder), image_size=(24, 24), model="net24k", batch_size=8, steps=60, start=1e-3,
                    end=1e8, optimizer="sgd", output=tmp_path / "lr", verbose=0)
    assert curve["stopped_early"] and len(curve["lrs"]) < 60
    last = curve["smoothed"][-1]
    assert not np.isfinite(last) or last > 4 * min(curve["smoothed"])


def test_the_per_step_loss_is_taken_out_of_keras_running_mean():
    class Model:  # what the callback touches of a Keras model
        stop_training = False

    test, losses = LRRangeTest(5, 1e-3, 1e-1, smoothing=0.0), [2.0, 1.0, 3.0, 0.5]
    test.set_model(Model())
    for step, _ in enumerate(losses):
        test.on_train_batch_end(step, {"loss": float(np.mean(losses[:step + 1]))})
    np.testing.assert_allclose(test.losses, losses, rtol=1e-6)


def test_a_test_too_short_to_suggest_says_so():
    with pytest.raises(UsageError, match="the loss fell for only 0 steps"):
        suggest([1e-3, 1e-2, 1e-1], [1.0, 2.0, 3.0])
