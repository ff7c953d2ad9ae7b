"""kcnn.figures through `kcnn viz`: filters, feature maps, Grad-CAM overlays and curves are valid files that
reflect the model."""

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import assert_image_file, written
from PIL import Image

from kcnn.cli import main


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_filter_figure_formats(cifar_model, tmp_path, fmt):
    result = CliRunner().invoke(main, ["viz", "filters", str(cifar_model / "cifar.keras"), "--output",
                                       str(tmp_path), "--format", fmt])
    assert result.exit_code == 0, result.output
    (path,) = written(result)
    assert path.name == f"filters_cifar_conv1.{fmt}"
    assert_image_file(path, fmt)


def test_gray_models_filters_are_gray_and_small_layers_get_a_readable_figure(tmp_path):
    from kcnn.models import create_model

    for name in ("cnn3", "net24k"):  # cnn3 repeats gray input into RGB; net24k convolves it directly
        create_model(name, (28, 28, 1), 10).save(tmp_path / f"{name}.keras")
    result = CliRunner().invoke(main, ["viz", "filters", str(tmp_path / "cnn3.keras"), str(tmp_path / "net24k.keras"),
                                       "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for path in written(result):
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"), dtype=np.int16)
            assert im.size[0] >= 600  # figures.MIN_FIGURE: the title and colourbar have room
        assert np.abs(pixels - pixels[..., :1]).max() == 0, path.name  # gray patches, no colour noise


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


@pytest.mark.slow
def test_activations_for_all_conv_layers(cifar_model, tmp_path):
    result = CliRunner().invoke(main, ["viz", "activations", str(cifar_model / "cifar.keras"),
                                       str(cifar_model / "photo.png"), "--layer", "all", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in written(result)] == [f"activations_cifar_photo_conv{i}.png" for i in (1, 2, 3)]
    for path in written(result):
        assert_image_file(path)


def test_gradcam_cli_and_unknown_class(cifar_model, tmp_path):
    ok = CliRunner().invoke(main, ["viz", "gradcam", str(cifar_model / "cifar.keras"), str(cifar_model / "photo.png"),
                                   "--class", "cat", "--output", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert_image_file(written(ok)[0])
    bad = CliRunner().invoke(main, ["viz", "gradcam", str(cifar_model / "cifar.keras"), str(cifar_model / "photo.png"),
                                    "--class", "unicorn", "--output", str(tmp_path)])
    assert bad.exit_code == 2 and "no class 'unicorn'" in bad.output


def test_history_is_redrawn_from_csv(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n"
                                          "0,0.5,0.001,1.2,0.55,1.1\n1,0.6,0.0005,1.0,0.62,0.9\n")
    result = CliRunner().invoke(main, ["viz", "history", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert written(result) == [tmp_path / "curves.png"]
    assert_image_file(tmp_path / "curves.png")


@pytest.mark.slow
def test_viz_batch_draws_a_runs_augmented_batch_keyed_to_its_epoch(fake_data_dir, tmp_path):
    from helpers import tiny_train

    run = tiny_train(fake_data_dir, tmp_path / "run", dataset="cifar10", epochs=1).run_dir
    pictures = []
    for epoch in ("1", "1", "2"):
        result = CliRunner().invoke(main, ["viz", "batch", str(run), "--epoch", epoch, "--count", "8",
                                           "--output", str(tmp_path / epoch)])
        assert result.exit_code == 0, result.output
        (path,) = written(result)
        assert path.name == f"batch_cifar10_epoch{epoch}.png"
        pictures.append(np.asarray(Image.open(path).convert("RGB"), dtype=np.int16))
    assert np.array_equal(pictures[0], pictures[1]) and not np.array_equal(pictures[0], pictures[2])
    named = CliRunner().invoke(main, ["viz", "batch", "mnist", "--data-dir", fake_data_dir, "--output", str(tmp_path)])
    assert named.exit_code == 0 and written(named)[0].name == "batch_mnist_epoch1.png"
