"""kcnn export: an optimizer-free, channels_last .keras file and a model card whose command retrains the run;
an ONNX graph that ONNX Runtime runs with the .keras model's probabilities."""

import json

import keras
import numpy as np
import pytest
from helpers import FAST_ARGS, config_of_command, find_real_data_dir, run_cli

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
    assert result.exit_code == 1 and f"{unfinished / 'model.keras'}: missing; is the run finished?" in result.output
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


def test_onnx_export_matches_keras_in_onnx_runtime_and_refuses_a_mismatch(fake_data_dir, tmp_path, monkeypatch):
    import onnxruntime

    from kcnn import export

    out = tmp_path / "run"
    assert run_cli("train", "mnist", "--epochs", "1", "--data-dir", fake_data_dir, "--output", str(out),
                   *FAST_ARGS).exit_code == 0
    result = run_cli("export", str(out), "--format", "onnx", "--data-dir", fake_data_dir)
    assert result.exit_code == 0, result.output
    assert "against Keras on 32 mnist test images" in result.output
    onnx_file = out / "export" / "mnist_net24k.onnx"
    card = json.loads(onnx_file.with_suffix(".json").read_text())
    assert card["onnx"]["parity"]["max_abs_difference"] <= 1e-4 and card["onnx"]["parity"]["top1_agreement"] == 1
    assert card["class_names"] == [str(d) for d in range(10)] and card["input"]["shape"] == [None, 28, 28, 1]
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("image", "tensor(uint8)")]
    props = session.get_modelmeta().custom_metadata_map  # the names and input rule travel in the graph
    assert json.loads(props["class_names"]) == card["class_names"] and props["input_rule"] == "digits"
    assert props["input"] == "image: (batch, 28, 28, 1) uint8, raw pixels"
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)  # any batch size
    (got,) = session.run(["probabilities"], {"image": images})
    expected = keras.ops.convert_to_numpy(keras.saving.load_model(out / "model.keras")(images))
    assert got.shape == (3, 10) and np.abs(got - expected).max() <= 1e-4

    monkeypatch.setattr(export, "ONNX_TOLERANCE", -1.0)  # any difference fails: the file is not kept
    result = run_cli("export", str(out), str(tmp_path / "bad.onnx"), "--format", "onnx", "--data-dir", fake_data_dir)
    assert result.exit_code == 1 and f"{tmp_path / 'bad.onnx'}: not written" in result.output
    assert not list(tmp_path.glob("*bad*"))
    result = run_cli("export", str(out), str(tmp_path / "model.keras"), "--format", "onnx")
    assert result.exit_code == 2 and "ONNX export destination must end in .onnx" in result.output


@pytest.mark.slow
@pytest.mark.realdata
def test_onnx_runtime_agrees_with_keras_on_real_cifar10_test_images(tmp_path):
    from kcnn import data
    from kcnn.export import onnx_parity, write_onnx
    from kcnn.prediction import shipped_models

    real_data_dir = find_real_data_dir("cifar10")
    if real_data_dir is None:
        pytest.skip("no prepared cifar10")
    model = keras.saving.load_model(next(p for p in shipped_models() if p.stem == "cifar10"))
    images = data.load_split_arrays(data.load_info("cifar10", real_data_dir), "test[:2000]")[0]
    expected = model.predict(images, verbose=0)
    write_onnx(model, tmp_path / "cifar10.onnx")
    parity = onnx_parity(tmp_path / "cifar10.onnx", images, expected)
    assert parity["max_abs_difference"] <= 1e-4 and parity["top1_agreement"] == 1.0
