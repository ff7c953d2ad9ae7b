"""kcnn export: an optimizer-free, channels_last .keras file and a model card whose command retrains the run;
ONNX, LiteRT and torch.export files that their own runtimes run, in a process without kcnn or Keras, with
the .keras model's probabilities; int8 files that keep the accuracy within the bound, at most half the size;
one line and no file for a bad request."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import FAST_ARGS, config_of_command, find_real_data_dir, run_cli, shipped_test_probabilities, tiny_train

from kcnn.config import TrainConfig
from kcnn.export import SUFFIXES, checks


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


@pytest.fixture(scope="module")
def mnist_run(fake_data_dir, tmp_path_factory):
    """A finished 1-epoch net24k run on the tiny generated MNIST."""
    return tiny_train(fake_data_dir, tmp_path_factory.mktemp("export") / "run", epochs=1).run_dir


def keras_probabilities(path, images):
    return keras.ops.convert_to_numpy(keras.saving.load_model(path, compile=False)(images))


def test_onnx_export_matches_keras_in_onnx_runtime_and_refuses_a_mismatch(mnist_run, fake_data_dir, tmp_path,
                                                                         monkeypatch):
    import onnxruntime

    result = run_cli("export", mnist_run, "--format", "onnx", "--data-dir", fake_data_dir)
    assert result.exit_code == 0, result.output
    onnx_file = mnist_run / "export" / "mnist_net24k.onnx"
    assert f"wrote {onnx_file} (" in result.output and "against Keras on 32 mnist test images" in result.output
    card = json.loads(onnx_file.with_name(onnx_file.name + ".json").read_text())
    check = card["onnx"]["check"]
    assert check["max_abs_difference"] <= 1e-4 and check["top1_agreement"] == 1
    assert check["accuracy"] == check["keras_accuracy"]
    assert card["class_names"] == [str(d) for d in range(10)] and card["input"]["shape"] == [None, 28, 28, 1]
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("image", "tensor(uint8)")]
    props = session.get_modelmeta().custom_metadata_map  # the names and input rule travel in the graph
    assert json.loads(props["class_names"]) == card["class_names"] and props["input_rule"] == "digits"
    assert props["input"] == "image: (batch, 28, 28, 1) uint8, raw pixels"
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)  # any batch size
    (got,) = session.run(["probabilities"], {"image": images})
    assert got.shape == (3, 10) and np.abs(got - keras_probabilities(mnist_run / "model.keras", images)).max() <= 1e-4

    monkeypatch.setattr(checks, "FLOAT_TOLERANCE", -1.0)  # any difference fails: the file is not kept
    result = run_cli("export", mnist_run, tmp_path / "bad.onnx", "--format", "onnx", "--data-dir", fake_data_dir)
    assert result.exit_code == 1 and f"{tmp_path / 'bad.onnx'}: not written" in result.output
    assert not list(tmp_path.glob("*bad*"))


def no_module(name):
    """importlib.util.find_spec as if ``name`` were not installed."""
    import importlib.util

    real = importlib.util.find_spec
    return lambda module, *args: None if module == name else real(module, *args)


@pytest.mark.parametrize("args, code, message", [
    (["--format", "tflite"], 2, "Invalid value for '--format': 'tflite' is not one of"),
    (["--format", "torch", "--quantize", "int8"], 2,
     "--quantize int8 applies to --format onnx or litert. Received: format='torch', quantize='int8'"),
    (["--format", "keras", "--quantize", "int8"], 2, "--quantize int8 applies to --format onnx or litert."),
    (["DEST/model.keras", "--format", "onnx"], 2, "onnx export destination must end in .onnx. Received: dest="),
    (["FILE/sub/model.tflite", "--format", "litert"], 2, "FILE/sub/model.tflite: cannot write there ("),
    (["DEST/model.tflite", "--format", "litert", "missing:ai_edge_litert"], 2,
     "litert export needs ai-edge-litert: pip install 'kcnn[litert]'"),
    (["DEST/model.onnx", "--format", "onnx", "missing:onnxruntime"], 2,
     "onnx export needs onnxruntime: pip install 'kcnn[onnx]'"),
    (["DEST/model.onnx", "--format", "onnx", "--quantize", "int8", "--data-dir", "EMPTY"], 1,
     "int8 quantization calibrates on the run's training images, and mnist cannot be read here"),
    (["UNFINISHED", "DEST/model.pt2", "--format", "torch"], 1, "model.keras: missing; is the run finished?"),
])
def test_a_bad_export_request_gets_one_line_and_leaves_no_file(mnist_run, tmp_path, monkeypatch, args, code, message):
    (tmp_path / "FILE").write_text("a file, not a folder")
    (tmp_path / "UNFINISHED").mkdir()
    (tmp_path / "UNFINISHED" / "config.json").write_text((mnist_run / "config.json").read_text())
    (tmp_path / "EMPTY").mkdir()
    for arg in args:
        if arg.startswith("missing:"):
            monkeypatch.setattr("importlib.util.find_spec", no_module(arg.split(":")[1]))
    args = [arg.replace("DEST", str(tmp_path / "dest")).replace("FILE", str(tmp_path / "FILE"))
            .replace("EMPTY", str(tmp_path / "EMPTY")) for arg in args if not arg.startswith("missing:")]
    run = str(tmp_path / "UNFINISHED") if args[0] == "UNFINISHED" else str(mnist_run)
    result = run_cli("export", run, *[a for a in args if a != "UNFINISHED"])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]  # click adds its usage line
    assert result.exit_code == code and len(errors) == 1 and message.replace("FILE", str(tmp_path / "FILE")) in errors[0]
    assert "Traceback" not in result.output
    assert not list((tmp_path / "dest").glob("*")) if (tmp_path / "dest").exists() else True
    assert not (mnist_run / "export").exists() or not list((mnist_run / "export").glob("*.partial*"))


#: A script for a fresh Python that imports neither kcnn nor Keras: each format in its own runtime,
#: the way docs/deploy.md shows it. argv: the file, images .npy, where to save the probabilities.
FRESH_RUNTIME = {
    ".onnx": """
import onnxruntime
session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
probabilities = session.run(["probabilities"], {"image": images})[0]
""",
    ".tflite": """
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=path)
inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
interpreter.resize_tensor_input(inp["index"], images.shape)
interpreter.allocate_tensors()
interpreter.set_tensor(inp["index"], images)
interpreter.invoke()
probabilities = interpreter.get_tensor(out["index"])
""",
    ".pt2": """
import torch
module = torch.export.load(path).module()
with torch.no_grad():
    probabilities = module(torch.from_numpy(images)).numpy()
""",
}


def run_fresh(path, images, tmp_path):
    """Probabilities of ``images`` from the exported ``path`` in a new Python without kcnn or Keras."""
    np.save(tmp_path / "images.npy", images)
    script = ("import sys\nimport numpy as np\npath, images = sys.argv[1], np.load(sys.argv[2])\n"
              + FRESH_RUNTIME[path.suffix]
              + "assert not {'keras', 'kcnn'} & set(m.split('.')[0] for m in sys.modules), 'imported Keras or kcnn'\n"
              + "np.save(sys.argv[3], probabilities)\n")
    done = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "images.npy"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(tmp_path / "out.npy")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "litert", "torch"])
def test_each_format_runs_in_its_own_runtime_without_kcnn_or_keras(mnist_run, fake_data_dir, tmp_path, fmt):
    dest = tmp_path / f"digits{SUFFIXES[fmt]}"
    result = run_cli("export", mnist_run, dest, "--format", fmt, "--data-dir", fake_data_dir)
    assert result.exit_code == 0, result.output
    card = json.loads(dest.with_name(dest.name + ".json").read_text())
    assert card[fmt]["check"]["max_abs_difference"] <= checks.FLOAT_TOLERANCE
    images = np.random.default_rng(2).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    got = run_fresh(dest, images, tmp_path)
    assert got.shape == (5, 10) and got.dtype == np.float32
    assert np.abs(got - keras_probabilities(mnist_run / "model.keras", images)).max() <= checks.FLOAT_TOLERANCE
    if fmt == "torch":  # the class names travel inside the archive
        import torch

        extra = {"kcnn.json": ""}
        torch.export.load(dest, extra_files=extra)
        assert json.loads(extra["kcnn.json"])["class_names"] == card["class_names"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_int8_export_through_the_command_line_records_its_accuracy(mnist_run, fake_data_dir, tmp_path, fmt):
    # the generated digits are noise, so the bound is opened; the real-data test below holds the real bounds
    result = run_cli("export", mnist_run, "--format", fmt, "--quantize", "int8", "--max-drop", "100",
                     "--data-dir", fake_data_dir)
    assert result.exit_code == 0, result.output
    dest = mnist_run / "export" / f"mnist_net24k_int8{SUFFIXES[fmt]}"
    assert f"wrote {dest} (" in result.output and "x smaller than float32" in result.output
    card = json.loads(dest.with_name(dest.name + ".json").read_text())
    check = card[fmt]["check"]
    assert card[fmt]["quantize"] == "int8" and check["max_drop_points"] == 100
    assert check["accuracy_drop_points"] == pytest.approx(100 * (check["keras_accuracy"] - check["accuracy"]))
    images = np.random.default_rng(3).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    assert run_fresh(dest, images, tmp_path).shape == (4, 10)
    if fmt == "onnx":  # the quantized graph keeps the float graph's names and input rule
        import onnxruntime

        props = onnxruntime.InferenceSession(str(dest), providers=["CPUExecutionProvider"]).get_modelmeta()
        assert json.loads(props.custom_metadata_map["class_names"]) == card["class_names"]


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("dataset, fmt", [("mnist", "onnx"), ("mnist", "litert"), ("mnist", "torch"),
                                          ("cifar10", "onnx"), ("cifar10", "litert")])
def test_the_shipped_models_keep_their_accuracy_on_real_test_images(tmp_path, dataset, fmt):
    """The shipped model through the export's own writer and check, on 2,000 real test images: float
    agrees top-1 on every one; int8 stays within the accuracy bound and is at most half the size."""
    from kcnn import data
    from kcnn.export import QUANTIZABLE, WRITERS, load_runtime
    from kcnn.prediction import shipped_models

    real_data_dir = find_real_data_dir(dataset)
    if real_data_dir is None:
        pytest.skip(f"no prepared {dataset}")
    model = keras.saving.load_model(next(p for p in shipped_models() if p.stem == dataset), compile=False)
    info = data.load_info(dataset, real_data_dir)
    images, labels = data.load_split_arrays(info, "test[:2000]")
    calibration = data.load_split_arrays(info, f"train[:{checks.CALIBRATION_IMAGES}]")[0]
    probs, all_labels = shipped_test_probabilities(dataset)  # the .keras model's, predicted once a session
    assert np.array_equal(all_labels[:len(labels)], labels)
    expected = probs[:len(images)]
    sizes = {}
    for kind, images_in in [("float", None)] + ([("int8", calibration)] if fmt in QUANTIZABLE else []):
        path = tmp_path / f"{kind}{SUFFIXES[fmt]}"
        WRITERS[fmt](model, path, None, images_in)
        sizes[kind] = path.stat().st_size
        result = checks.compare(load_runtime(path)(images), expected, labels,
                                checks.int8_max_drop(dataset) if kind == "int8" else None)
        assert checks.passed(result), (kind, result)
    assert fmt not in QUANTIZABLE or sizes["float"] >= 2 * sizes["int8"], sizes


@pytest.mark.parametrize("fmt", ["onnx", "torch"])
def test_a_model_that_resizes_its_input_exports_in_inference_mode(tmp_path, fmt):
    """cnn3 on 28x28 digits starts with Resizing, whose call defaults to training=True: traced bare, the
    batch norms after it would normalize by the batch's statistics instead of the moving ones."""
    from kcnn.export import WRITERS, load_runtime
    from kcnn.models import create_model

    keras.utils.set_random_seed(0)
    model = create_model("cnn3", (28, 28, 1), 10)
    images = np.random.default_rng(4).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    path = tmp_path / f"digits{SUFFIXES[fmt]}"
    WRITERS[fmt](model, path)
    assert np.abs(load_runtime(path)(images) - expected).max() <= checks.FLOAT_TOLERANCE
