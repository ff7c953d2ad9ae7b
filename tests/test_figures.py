"""Evaluation metrics, `kcnn evaluate`, `kcnn viz *`: figures are valid files that reflect the model."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kcnn.cli import main
from kcnn.evaluation import confusion_matrix, per_class_metrics, summarize, top_k_accuracy

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_confusion_matrix_of_a_known_prediction_set():
    y_true = [0, 0, 1, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 2, 2, 0, 2]
    expected = np.array([[1, 1, 0],
                         [0, 2, 1],
                         [1, 0, 3]])
    assert np.array_equal(confusion_matrix(y_true, y_pred, 3), expected)


def test_per_class_metrics_match_a_direct_computation():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    m = per_class_metrics(confusion_matrix(y_true, y_pred, 4))
    for c in range(4):
        tp = np.sum((y_pred == c) & (y_true == c))
        precision, recall = tp / np.sum(y_pred == c), tp / np.sum(y_true == c)
        assert m["precision"][c] == pytest.approx(precision)
        assert m["recall"][c] == pytest.approx(recall)
        assert m["f1"][c] == pytest.approx(2 * precision * recall / (precision + recall))
        assert m["support"][c] == np.sum(y_true == c)


def test_summary_accuracy_loss_and_top5():
    probs = np.array([[0.7, 0.1, 0.1, 0.05, 0.05, 0.0],
                      [0.1, 0.2, 0.3, 0.2, 0.1, 0.1]])
    s = summarize(probs, [0, 5], [str(i) for i in range(6)])
    assert s["accuracy"] == 0.5
    assert s["loss"] == pytest.approx(-(np.log(0.7) + np.log(0.1)) / 2)
    assert s["top5_accuracy"] == top_k_accuracy(probs, [0, 5], 5) == 0.5
    assert "top5_accuracy" not in summarize(probs[:, :5] / probs[:, :5].sum(1, keepdims=True), [0, 4],
                                            list("abcde"))


@pytest.fixture(scope="module")
def cifar_model(tmp_path_factory):
    """A small untrained cifar10-shaped cnn3 with a model card, and a photo-like image."""
    import keras

    from kcnn.models import create_model

    folder = tmp_path_factory.mktemp("figs")
    keras.utils.set_random_seed(0)
    create_model("cnn3", (32, 32, 3), 10).save(folder / "cifar.keras")
    (folder / "cifar.json").write_text(json.dumps({"dataset": "cifar10", "class_names": CIFAR_NAMES}))
    gradient = np.linspace(0, 255, 64, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(gradient, (48, 1))] * 3, axis=-1)).save(folder / "photo.png")
    return folder


def assert_image_file(path, fmt="png"):
    if fmt == "svg":
        assert "<svg" in path.read_text()[:2000]
    elif fmt == "pdf":
        assert path.read_bytes()[:5] == b"%PDF-"
    else:
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) > 100


def written(result):
    from pathlib import Path

    return [Path(line.split("wrote ", 1)[1]) for line in result.output.splitlines() if line.startswith("wrote ")]


def test_evaluate_writes_json_and_figures(cifar_model, fake_data_dir, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(cifar_model / "cifar.keras"), "cifar10",
                                       "--data-dir", fake_data_dir, "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in written(result))
    assert names == ["confusion_matrix.png", "evaluation.json", "misclassified.png", "predictions.png"]
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["examples"] == 32 and np.sum(report["confusion_matrix"]) == 32
    assert set(report["per_class"]) == set(CIFAR_NAMES) and "top5_accuracy" in report
    for path in written(result)[1:]:
        assert_image_file(path)


def test_flip_tta_averages_each_image_with_its_mirror(cifar_model):
    import keras

    from kcnn.evaluation import predict_probs

    model = keras.saving.load_model(cifar_model / "cifar.keras")
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    plain, mirrored = predict_probs(model, images), predict_probs(model, images[:, :, ::-1])
    assert not np.allclose(plain, mirrored)  # the model is not mirror-symmetric
    assert np.allclose(predict_probs(model, images, tta="flip"), (plain + mirrored) / 2)
    symmetric = np.concatenate([images[:, :, :16], images[:, :, :16][:, :, ::-1]], axis=2)
    assert np.allclose(predict_probs(model, symmetric, tta="flip"), predict_probs(model, symmetric))
    with pytest.raises(ValueError, match=r"^Unknown test-time augmentation; valid: none, flip, flip_shift. "
                                         r"Received: tta='rot90'$"):
        predict_probs(model, images, tta="rot90")


@pytest.mark.parametrize("down, right", [(1, 1), (1, -1), (-1, 1), (-2, 0), (0, 2)])
def test_shift_images_moves_pixels_and_fills_edges_as_keras_random_translation(down, right):
    import keras

    from kcnn.evaluation import shift_images

    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3)).astype("float32")
    shifted = shift_images(images, down, right)
    assert shifted.shape == images.shape and shifted.dtype == images.dtype
    inner = shifted[:, max(down, 0):5 + min(down, 0), max(right, 0):7 + min(right, 0)]
    assert np.array_equal(inner, images[:, max(-down, 0):5 - max(down, 0), max(-right, 0):7 - max(right, 0)])
    keras_shift = keras.layers.RandomTranslation((down / 5, down / 5), (right / 7, right / 7), fill_mode="reflect",
                                                interpolation="nearest")
    assert np.array_equal(keras.ops.convert_to_numpy(keras_shift(images, training=True)), shifted)


def test_flip_shift_tta_averages_ten_views(cifar_model):
    import keras

    from kcnn.evaluation import TTA_SHIFTS
    from kcnn.evaluation import predict_probs, shift_images

    model = keras.saving.load_model(cifar_model / "cifar.keras")
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    views = [shift_images(view, down, right) for view in (images, images[:, :, ::-1]) for down, right in TTA_SHIFTS]
    assert len(views) == 10
    probs = predict_probs(model, images, tta="flip_shift")
    assert np.allclose(probs, np.mean([predict_probs(model, view) for view in views], axis=0))
    assert not np.allclose(probs, predict_probs(model, images, tta="flip"))
    assert np.allclose(probs.sum(axis=1), 1.0)


def test_evaluate_with_flip_tta_reports_it(cifar_model, fake_data_dir, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(cifar_model / "cifar.keras"), "cifar10", "--tta", "flip",
                                       "--data-dir", fake_data_dir, "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "test-time augmentation flip" in result.output
    assert json.loads((tmp_path / "evaluation.json").read_text())["tta"] == "flip"


def test_evaluate_refuses_a_model_for_other_images(cifar_model, fake_data_dir, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(cifar_model / "cifar.keras"), "mnist",
                                       "--data-dir", fake_data_dir, "--output", str(tmp_path)])
    assert result.exit_code == 2
    assert "model takes (32, 32, 3) images and outputs 10 classes; mnist has (28, 28, 1) images" in result.output


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_filter_figure_formats(cifar_model, tmp_path, fmt):
    result = CliRunner().invoke(main, ["viz", "filters", str(cifar_model / "cifar.keras"), "--output",
                                       str(tmp_path), "--format", fmt])
    assert result.exit_code == 0, result.output
    (path,) = written(result)
    assert path.name == f"filters_cifar_conv1.{fmt}"
    assert_image_file(path, fmt)


def test_filter_figure_changes_with_the_weights(cifar_model, tmp_path):
    import keras

    def render(model_path, out):
        result = CliRunner().invoke(main, ["viz", "filters", str(model_path), "--layer", "1", "--output", str(out)])
        assert result.exit_code == 0, result.output
        (path,) = written(result)
        return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)

    before = render(cifar_model / "cifar.keras", tmp_path / "a")
    same = render(cifar_model / "cifar.keras", tmp_path / "b")
    model = keras.saving.load_model(cifar_model / "cifar.keras")
    conv = model.get_layer("conv2")
    conv.kernel.assign(keras.ops.flip(conv.kernel, axis=0))
    model.save(tmp_path / "flipped.keras")
    after = render(tmp_path / "flipped.keras", tmp_path / "c")
    assert np.array_equal(before, same)
    assert before.shape != after.shape or np.abs(before - after).sum() > 0


def test_activations_for_all_conv_layers(cifar_model, tmp_path):
    result = CliRunner().invoke(main, ["viz", "activations", str(cifar_model / "cifar.keras"),
                                       str(cifar_model / "photo.png"), "--layer", "all", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in written(result)] == [f"activations_cifar_photo_conv{i}.png" for i in (1, 2, 3)]
    for path in written(result):
        assert_image_file(path)


def test_gradcam_heatmap_has_the_input_size_and_unit_range(cifar_model):
    import keras

    from kcnn.explain import gradcam

    model = keras.saving.load_model(cifar_model / "cifar.keras")
    image = np.asarray(Image.open(cifar_model / "photo.png").convert("RGB").resize((32, 32)))
    heatmap, index = gradcam(model, image)
    assert heatmap.shape == (32, 32) and heatmap.dtype == np.float32
    assert heatmap.min() >= 0 and heatmap.max() <= 1
    assert index == int(np.argmax(model.predict(image[None], verbose=0)))
    _, named = gradcam(model, image, class_index=3)
    assert named == 3


def test_gradcam_cli_and_unknown_class(cifar_model, tmp_path):
    ok = CliRunner().invoke(main, ["viz", "gradcam", str(cifar_model / "cifar.keras"), str(cifar_model / "photo.png"),
                                   "--class", "cat", "--output", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert_image_file(written(ok)[0])
    bad = CliRunner().invoke(main, ["viz", "gradcam", str(cifar_model / "cifar.keras"), str(cifar_model / "photo.png"),
                                    "--class", "unicorn", "--output", str(tmp_path)])
    assert bad.exit_code == 2 and "no class 'unicorn'" in bad.output


def test_unknown_layer_lists_the_conv_layers(cifar_model, tmp_path):
    result = CliRunner().invoke(main, ["viz", "filters", str(cifar_model / "cifar.keras"), "--layer", "dense"])
    assert result.exit_code == 2
    assert "no conv layer named 'dense'; conv layers: conv1, conv2, conv3" in result.output


def test_history_is_redrawn_from_csv(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n"
                                          "0,0.5,0.001,1.2,0.55,1.1\n1,0.6,0.0005,1.0,0.62,0.9\n")
    result = CliRunner().invoke(main, ["viz", "history", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert written(result) == [tmp_path / "curves.png"]
    assert_image_file(tmp_path / "curves.png")
