"""The kcnn command line: one-line errors and exit codes, help, the commands README.md gives."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch
from helpers import FAST_ARGS, REPO, run_cli


@pytest.mark.parametrize("damage, problem", [("truncate", "truncated"), ("delete", "missing")])
def test_truncated_or_missing_data_files_are_one_line_naming_the_file(fake_data_dir, tmp_path, damage, problem):
    from pathlib import Path

    data_dir = tmp_path / "tfds"
    shutil.copytree(Path(fake_data_dir) / "mnist", data_dir / "mnist")
    (shard,) = data_dir.glob("mnist/*/mnist-test.tfrecord*")
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:1000])
    else:
        shard.unlink()
    result = run_cli("train", "mnist", "--data-dir", str(data_dir), "--output", str(tmp_path / "r"), *FAST_ARGS)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {shard}: ")
    assert problem in lines[0] and lines[0].endswith("prepare the dataset again")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "cnn4"], "Unknown model 'cnn4'; valid models: cnn2, cnn2_simple, cnn3, net24k, resnet9, whitened8, whitened8_narrow. Did you mean 'cnn3'?"),
    (["--device", "gpu"], "Error: device must be one of auto, cpu, cuda, cuda:N. Received: device='gpu'"),
    (["--config", "missing.json"], "Error: missing.json: not a kcnn run config"),
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


def test_usage_errors_exit_2_data_errors_exit_1_and_bugs_keep_their_traceback(fake_data_dir, tmp_path,
                                                                              monkeypatch):
    bad = run_cli("train", "mnist", "--data-dir", fake_data_dir, "--model", "cnn4", "--output", tmp_path / "r")
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
    missing = run_cli("data", "mnist", "--data-dir", tmp_path / "empty", "--no-download")
    assert missing.exit_code == 1 and missing.output.strip().startswith("Error: Dataset 'mnist' is not prepared")
    assert len(missing.output.strip().splitlines()) == 1
    from kcnn import models

    def broken(name):  # a bug inside kcnn: a plain ValueError, not a kcnn error
        raise ValueError("an internal mistake")

    monkeypatch.setattr(models, "check_model_name", broken)
    bug = run_cli("train", "mnist", "--data-dir", fake_data_dir, "--output", tmp_path / "r")
    assert bug.exit_code == 1 and "Traceback (most recent call last)" in bug.output
    assert "ValueError: an internal mistake" in bug.output and "in check_model_name" not in bug.output.split(
        "Traceback")[0]
    assert bug.output.strip().splitlines()[-1].startswith("Error: this is a bug in kcnn") and "kcnn env" in bug.output
    assert not (tmp_path / "r").exists()


def test_cuda_request_without_cuda_is_an_error(fake_data_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_cli("train", "mnist", "--device", "cuda", "--data-dir", fake_data_dir,
                     "--output", str(tmp_path / "r"), *FAST_ARGS)
    assert result.exit_code == 2
    assert "device 'cuda' was requested but torch" in result.output and "sees no CUDA device" in result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_places_the_weights_on_the_gpu_and_the_file_loads_on_cpu(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "mnist", "--epochs", "1", "--device", "cuda", "--data-dir", fake_data_dir,
                     "--output", str(out), *FAST_ARGS)
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


def test_help_imports_no_heavy_library():
    code = ("import sys; from click.testing import CliRunner; from kcnn.cli import main; "
            "r = CliRunner().invoke(main, ['train', '--help']); assert r.exit_code == 0; "
            "print(sorted(m for m in ('keras', 'torch', 'tensorflow', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "kcnn", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("kcnn, version ")


def test_unknown_mixed_precision_is_one_line_exit_2(fake_data_dir):
    result = run_cli("train", "mnist", "--mixed-precision", "int8", "--data-dir", fake_data_dir)
    assert result.exit_code == 2
    assert "Invalid value for '--mixed-precision': 'int8' is not one of 'bfloat16', 'float16'." in result.output


def test_train_without_a_dataset_or_config_is_a_usage_error():
    result = run_cli("train")
    assert result.exit_code == 2 and "give a DATASET or --config RUN/config.json" in result.output


def test_train_help_fits_a_screen():
    # two 37-line terminal pages: every TrainConfig field plus --recipe, --config, --output, --overwrite,
    # --backend and --verbose at 80 columns
    assert len(run_cli("train", "--help").output.splitlines()) <= 74


def readme_quickstart() -> list[str]:
    """The commands of README.md's first bash block after the heading "Quickstart"."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip().startswith("kcnn ")]


@pytest.mark.slow
def test_the_readme_quickstart_commands_run(fake_data_dir, tmp_path):
    """Each quickstart command exits 0 as typed, in a fresh process and folder, on the tiny generated MNIST."""
    commands = readme_quickstart()
    assert [c.split()[1] for c in commands] == ["train", "predict", "evaluate"]
    shutil.copytree(REPO / "docs" / "images", tmp_path / "docs" / "images")
    env = dict(os.environ, TFDS_DATA_DIR=fake_data_dir)
    for command in commands:
        result = subprocess.run([sys.executable, "-m", "kcnn", *shlex.split(command)[1:]], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-2000:])


def test_a_missing_file_exits_1_in_predict_and_viz_alike(tmp_path):
    model = REPO / "saved_models" / "mnist.keras"
    for args in (["predict", tmp_path / "missing.png", "--model", model],
                 ["viz", "gradcam", model, tmp_path / "missing.png", "--output", tmp_path],
                 ["viz", "filters", tmp_path / "missing.keras", "--output", tmp_path]):
        result = run_cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "missing" in result.output and "Traceback" not in result.output
