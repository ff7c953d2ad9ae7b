"""kcnn.prediction and `kcnn predict`: files, folders and arrays, output formats, bad input, the shipped models."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from helpers import CIFAR_NAMES
from drawings import drawing_set
from kcnn.cli import main
from kcnn.prediction import ModelFileError, load_classifier, predict, shipped_models

SHIPPED = {p.stem: p for p in shipped_models()}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Untrained cifar10-shaped and mnist-shaped classifiers with model cards."""
    from kcnn.models import create_model

    folder = tmp_path_factory.mktemp("models")
    for stem, name, shape, names in [("tinycifar", "cnn2_simple", (32, 32, 3), CIFAR_NAMES),
                                     ("tinymnist", "net24k", (28, 28, 1), [str(i) for i in range(10)])]:
        create_model(name, shape, 10).save(folder / f"{stem}.keras")
        dataset = "cifar10" if shape[-1] == 3 else "mnist"
        (folder / f"{stem}.json").write_text(json.dumps({"dataset": dataset, "class_names": names}))
    return folder


@pytest.fixture
def images(tmp_path):
    """A folder of real-format images: png/jpeg/bmp/gif/webp/tiff, many modes, a nested folder."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    (tmp_path / "sub").mkdir()
    rgb.save(tmp_path / "a.png")
    rgb.save(tmp_path / "b.jpg", quality=80)
    rgb.save(tmp_path / "c.bmp")
    rgb.convert("P").save(tmp_path / "d.gif")
    rgb.save(tmp_path / "e.webp")
    rgb.convert("CMYK").save(tmp_path / "f.tiff")
    rgb.convert("RGBA").save(tmp_path / "sub" / "g.png")
    rgb.convert("L").save(tmp_path / "sub" / "h.png")
    rgb.convert("1").save(tmp_path / "sub" / "i.png")
    Image.fromarray(rng.integers(0, 65535, (30, 30), dtype=np.uint16)).save(tmp_path / "sub" / "j.png")
    rgb.convert("LA").save(tmp_path / "sub" / "k.png")
    (tmp_path / "notes.txt").write_text("not an image, and not picked from folders")
    return tmp_path


EXPECTED_FILES = ["a.png", "b.jpg", "c.bmp", "d.gif", "e.webp", "f.tiff",
                  "sub/g.png", "sub/h.png", "sub/i.png", "sub/j.png", "sub/k.png"]


def test_a_top_k_above_the_class_count_lists_and_names_every_class(tiny_models, images):
    result = CliRunner().invoke(main, ["predict", str(images / "a.png"), "--top-k", "50",
                                       "--model", str(tiny_models / "tinycifar.keras")])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split()[-1] == "top-10" and row.count(";") == 9


def test_cli_predicts_files_folders_and_globs(tiny_models, images):
    result = CliRunner().invoke(main, ["predict", str(images), str(images / "a.*"),
                                       "--model", str(tiny_models / "tinycifar.keras"),
                                       "--model", str(tiny_models / "tinymnist.keras"),
                                       "--format", "json", "--top-k", "3"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    paths = [str(Path(r["path"]).relative_to(images)) for r in rows]
    assert paths == [p for p in EXPECTED_FILES for _ in range(2)] + ["a.png", "a.png"]
    assert [r["model"] for r in rows[:2]] == ["tinycifar", "tinymnist"]
    for r in rows:
        assert set(r) == {"path", "model", "label", "probability", "top_k"}
        assert len(r["top_k"]) == 3 and r["top_k"][0]["label"] == r["label"]
        probs = [t["probability"] for t in r["top_k"]]
        assert probs == sorted(probs, reverse=True) and 0 <= probs[-1] <= probs[0] <= 1
    assert rows[0]["label"] in CIFAR_NAMES and rows[1]["label"] in [str(i) for i in range(10)]


def test_cli_table_and_csv(tiny_models, images):
    model = str(tiny_models / "tinycifar.keras")
    table = CliRunner().invoke(main, ["predict", str(images / "a.png"), "--model", model])
    assert table.exit_code == 0
    head, row = table.stdout.splitlines()
    assert head.split() == ["path", "model", "label", "probability"]
    assert row.split()[:2] == [str(images / "a.png"), "tinycifar"]
    csv_out = CliRunner().invoke(main, ["predict", str(images / "a.png"), "--model", model,
                                        "--format", "csv", "--top-k", "2"])
    assert csv_out.stdout.splitlines()[0] == "path,model,label,probability,top_k"


def test_bad_inputs_each_get_one_line_and_the_rest_is_predicted(tiny_models, tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (10, 10), (9, 9, 9)).save(good)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, I am text")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.new("1", (7100, 7100)).save(tmp_path / "bomb.png")
    (tmp_path / "nothing_here").mkdir()
    inputs = ["good.png", "missing.png", "empty.png", "text.png", "cut.jpg", "bomb.png", "nothing_here"]
    result = CliRunner().invoke(main, ["predict", *[str(tmp_path / n) for n in inputs],
                                       "--model", str(tiny_models / "tinycifar.keras"), "--format", "csv"])
    assert result.exit_code == 1
    errors = result.stderr.strip().splitlines()
    expected = {"missing.png": "no such file or folder", "empty.png": "empty file (0 bytes)",
                "text.png": "not an image PIL can read", "cut.jpg": "truncated or corrupt image data",
                "bomb.png": "above the limit of 50,000,000 pixels", "nothing_here": "folder holds no images"}
    assert len(errors) == len(expected)
    for name, reason in expected.items():
        assert any(line.startswith(f"Error: {tmp_path / name}: ") and reason in line for line in errors), name
    assert [line.split(",")[0] for line in result.stdout.splitlines()[1:]] == [str(good)]


@pytest.mark.parametrize("kind, message", [
    ("missing", "no such model file"),
    ("corrupt", "cannot load as a Keras model"),
    ("not_keras", "not a .keras model file"),
    ("not_classifier", "not an image classifier"),
])
def test_bad_model_files_get_one_line(tmp_path, images, kind, message):
    import keras

    path = tmp_path / ("model.h5" if kind == "not_keras" else "model.keras")
    if kind == "corrupt":
        path.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    elif kind == "not_keras":
        path.write_bytes(b"\x89HDF")
    elif kind == "not_classifier":
        inputs = keras.Input((8,))
        keras.Model(inputs, keras.layers.Dense(3)(inputs)).save(path)
    result = CliRunner().invoke(main, ["predict", str(images / "a.png"), "--model", str(path)])
    assert result.exit_code == 1  # a damaged or foreign model file is bad data: 1, as predict gives for bad images
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: {message}"), result.output
    assert "Traceback" not in result.output


def test_python_api_takes_arrays(tiny_models):
    batch = np.random.default_rng(4).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    clf = load_classifier(tiny_models / "tinycifar.keras")
    rows = predict(batch, [clf], top_k=2)
    assert [r["path"] for r in rows] == [f"array[{i}]" for i in range(5)]
    direct = clf.model.predict(batch, verbose=0)
    assert [r["label"] for r in rows] == [CIFAR_NAMES[i] for i in direct.argmax(1)]
    np.testing.assert_allclose([r["probability"] for r in rows], direct.max(1), atol=1e-6)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_classifier("nope.keras")


def test_predict_imports_no_tensorflow(tiny_models, images):
    # (matplotlib is imported by `import keras` itself, keras/src/visualization.)
    code = ("import sys; from kcnn.cli import main; from click.testing import CliRunner; "
            f"r = CliRunner().invoke(main, ['predict', {str(images / 'a.png')!r}, '--model', "
            f"{str(tiny_models / 'tinycifar.keras')!r}]); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.skipif("mnist" not in SHIPPED, reason="saved_models/mnist.keras is not built")
def test_shipped_mnist_model_reads_user_drawings():
    items = drawing_set(per_digit=30, seed=2026)  # 300 drawings, black strokes on white, RGB
    rows = predict([im for im, _ in items], [SHIPPED["mnist"]])
    accuracy = np.mean([int(r["label"]) == label for r, (_, label) in zip(rows, items)])
    print(f"user-style drawings: {accuracy:.3f} accuracy on {len(items)}")
    assert accuracy >= 0.90


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(SHIPPED))
def test_shipped_models_score_their_cards_test_accuracy_on_the_real_test_split(stem):
    from helpers import find_real_data_dir, shipped_test_probabilities
    from kcnn.data import load_info

    card = json.loads(SHIPPED[stem].with_suffix(".json").read_text())
    data_dir = find_real_data_dir(card["dataset"])
    if data_dir is None:
        pytest.skip(f"{card['dataset']} is not prepared: set TFDS_DATA_DIR or put it at ../shared/tfds")
    assert load_info(card["dataset"], data_dir).version == card["tfds_version"]
    probs, labels = shipped_test_probabilities(stem)
    accuracy = np.mean(probs.argmax(1) == labels)
    print(f"{stem}: {accuracy:.4f} on {len(labels)} test images; card {card['test_accuracy']:.4f}")
    assert accuracy == pytest.approx(card["test_accuracy"], abs=0.001)  # 10 images: other kernels, same weights


@pytest.mark.skipif(not SHIPPED, reason="no shipped models")
def test_shipped_models_answer_with_no_model_option(tmp_path):
    Image.new("RGB", (300, 200), (255, 255, 255)).save(tmp_path / "blank.png")
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "blank.png"), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert [r["model"] for r in json.loads(result.stdout)] == sorted(SHIPPED)
    for stem, path in SHIPPED.items():
        card = json.loads(path.with_suffix(".json").read_text())
        assert {"dataset", "tfds_version", "class_names", "input", "output", "test_accuracy",
                "test_loss", "epochs", "command", "versions", "trained_on", "date"} <= set(card)
        assert path.stat().st_size < 10_000_000  # whitened8's 1,971,328 float32 weights: 7.9 MB


def test_bad_array_inputs_are_reported_by_position(tiny_models):
    good = np.zeros((32, 32, 3), np.uint8)
    rows = predict([good, np.zeros((32, 32, 3), np.float32)], [tiny_models / "tinycifar.keras"])
    assert rows[0]["path"] == "array[0]" and "label" in rows[0]
    assert rows[1] == {"path": "array[1]", "error": "array[1]: array input must be uint8 (H, W) or (H, W, 1|3); "
                                                      "got float32 (32, 32, 3)"}


def test_large_folders_show_a_progress_bar_on_stderr(tiny_models, tmp_path):
    for i in range(5):
        Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    result = CliRunner().invoke(main, ["predict", str(tmp_path), "--model", str(tiny_models / "tinycifar.keras"),
                                       "--batch-size", "2", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "predicting" in result.stderr
    assert len(result.stdout.splitlines()) == 6
