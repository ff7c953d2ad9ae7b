"""kcnn.explain: Grad-CAM and conv-layer lookup."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kcnn.cli import main


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


@pytest.mark.parametrize("name", ["cnn3", "net24k", "resnet9", "whitened8_narrow"])
def test_gradcam_explains_the_predicted_class_of_every_kind_of_head(name):
    """cnn3 and net24k end in a Dense with softmax; resnet9 and the whitened nets in logits, a
    rescaling and a softmax layer of its own (the class scores are that layer's input)."""
    from kcnn.explain import gradcam
    from kcnn.models import create_model

    model = create_model(name, (32, 32, 3), 10)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    heatmap, index = gradcam(model, image)
    assert heatmap.shape == (32, 32) and 0 <= heatmap.min() and heatmap.max() <= 1
    assert index == int(np.argmax(model.predict(image[None], verbose=0)))


def test_unknown_layer_lists_the_conv_layers(cifar_model, tmp_path):
    result = CliRunner().invoke(main, ["viz", "filters", str(cifar_model / "cifar.keras"), "--layer", "dense"])
    assert result.exit_code == 2
    assert "no conv layer named 'dense'; conv layers: conv1, conv2, conv3" in result.output


def test_gradcam_of_the_shipped_digit_model_is_never_empty_on_drawn_digits():
    """The last conv block's output (after batch norm and ReLU) is explained: on the conv output before
    batch norm, drawn digits weighed out negative everywhere and gave empty heatmaps."""
    from drawings import drawing_set

    from kcnn.images import to_model_input
    from kcnn.prediction import load_classifier, shipped_models

    from kcnn.explain import gradcam

    clf = load_classifier(next(p for p in shipped_models() if p.stem == "mnist"))
    for image, digit in drawing_set(per_digit=2):
        heatmap, _ = gradcam(clf.model, to_model_input(image, clf.input_shape, clf.digit_style))
        assert heatmap.max() == 1.0, digit
