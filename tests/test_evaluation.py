"""kcnn.evaluation: metrics on known predictions, test-time augmentation, `kcnn evaluate`'s files."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import CIFAR_NAMES, assert_image_file, written

from kcnn.cli import main
from kcnn.evaluation import (confusion_matrix, format_summary, most_confused_pairs, per_class_metrics, summarize,
                             top_k_accuracy)


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


def test_tta_figures_sharing_view_probs_predict_each_view_once_and_equal_fresh_ones(cifar_model):
    import keras

    from kcnn.evaluation import predict_probs

    model = keras.saving.load_model(cifar_model / "cifar.keras")
    images = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    fresh = {tta: predict_probs(model, images, tta=tta) for tta in ("none", "flip", "flip_shift")}
    calls = []
    predict = model.predict
    model.predict = lambda view, **kwargs: calls.append(view) or predict(view, **kwargs)
    shared = {}
    for tta in ("none", "flip", "flip_shift"):
        assert np.array_equal(predict_probs(model, images, tta=tta, view_probs=shared), fresh[tta]), tta
    assert len(calls) == len(shared) == 10  # not 1 + 2 + 10
    assert np.array_equal(calls[0], images) and np.array_equal(calls[1], images[:, :, ::-1])


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


def test_most_confused_pairs_are_the_largest_off_diagonal_cells():
    cm = np.array([[5, 2, 0], [7, 1, 3], [0, 3, 9]])
    assert most_confused_pairs(cm, ["a", "b", "c"], count=3) == [
        {"true": "b", "predicted": "a", "count": 7}, {"true": "b", "predicted": "c", "count": 3},
        {"true": "c", "predicted": "b", "count": 3}]
    assert most_confused_pairs(np.eye(3, dtype=int), ["a", "b", "c"]) == []


def test_a_100_class_summary_lists_the_worst_classes_and_a_readable_confusion_matrix(tmp_path):
    from PIL import Image

    from kcnn.figures import plot_confusion_matrix

    rng = np.random.default_rng(0)
    names = [f"class{i:02d}" for i in range(100)]
    labels = np.arange(1000) % 100
    result = summarize(rng.dirichlet(np.ones(100), 1000), labels, names)
    lines = format_summary(result).splitlines()
    assert len(lines) == 3 + 10 + 1 and lines[-1].startswith("most confused: ")
    worst = sorted(result["per_class"], key=lambda n: result["per_class"][n]["f1"])[:10]
    assert [line.split()[0] for line in lines[3:13]] == worst
    sizes = {}
    for n in (20, 100):
        path = plot_confusion_matrix(np.asarray(result["confusion_matrix"])[:n, :n], names[:n], tmp_path / f"{n}.png")
        with Image.open(path) as im:
            sizes[n] = im.size
    assert sizes[100][0] <= sizes[20][0]  # 100 classes: no larger than 20 named ones
