"""kcnn export: an optimizer-free, channels_last .keras file and a model card whose command retrains the run."""

import json

import keras
import numpy as np
from helpers import FAST_ARGS, config_of_command, run_cli

from kcnn.config import TrainConfig


def original_has_optimizer(path):
    return getattr(keras.saving.load_model(path), "optimizer", None) is not None


def test_export_writes_an_optimizer_free_model_and_a_card_naming_the_machine(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "mnist", "--epochs", "1", "--label-smoothing", "0.1", "--ema", "0.9", "--whiten",
                   "--data-dir", fake_data_dir, "--output", str(out), *FAST_ARGS).exit_code == 0
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
    retrained = config_of_command(card["command"], (28, 28, 1))
    assert retrained.identity() == TrainConfig.load(out / "config.json").identity()
