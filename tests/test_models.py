"""Model zoo: registry, pinned parameter counts, forward shapes, gradients, .keras round trip."""

import keras
import numpy as np
import pytest

from kcnn.config import IMAGE_SIDE
from kcnn.models import WHITEN_EPS, create_model, first_conv, list_models, whiten_first_conv

NATIVE_SHAPE = {"cnn3": (32, 32, 3), "cnn2": (32, 32, 3), "net24k": (28, 28, 1),
                "cnn2_simple": (28, 28, 1), "resnet9": (32, 32, 3), "whitened8": (32, 32, 3),
                "whitened8_narrow": (32, 32, 3)}
#: The reference tutorials' networks (PyTorch programs, PyTorch's initialization); the others follow their papers.
TUTORIAL_MODELS = ["cnn2", "cnn2_simple", "cnn3", "net24k"]


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_registry_lists_every_seed_architecture():
    assert list_models() == ["cnn2", "cnn2_simple", "cnn3", "net24k", "resnet9", "whitened8", "whitened8_narrow"]


@pytest.mark.parametrize("name, shape, classes, expected", [
    ("cnn3", (32, 32, 3), 10, 622_346),    # the tutorial's 3-conv CNN, 'same' padding
    ("cnn3", (28, 28, 1), 10, 622_346),    # MNIST resized to 32x32 and repeated to RGB inside
    ("cnn3", (32, 32, 3), 100, 622_346 - 2_570 + 25_700),
    ("net24k", (28, 28, 1), 10, 24_488),   # the tutorial's 24,488-parameter MNIST net
    ("cnn2", (32, 32, 3), 10, 545_290),    # Flatten 4096 -> Dense 128
    ("cnn2_simple", (28, 28, 1), 10, 25_258),
    ("cnn2_simple", (32, 32, 3), 10, 30_634),
    ("resnet9", (32, 32, 3), 10, 6_573_120),   # convs 6,567,552 + BN 4,480 + Dense 5,120
    ("resnet9", (28, 28, 1), 100, 6_573_120 - 2 * 64 * 9 - 5_120 + 51_200),
    ("whitened8", (32, 32, 3), 10, 1_971_328),  # airbench94: widths 64/256/256, whitening frozen
    ("whitened8", (28, 28, 1), 10, 1_971_328),  # 27 -> 13 -> 6 -> 3 -> 1 pixels, as 31 -> ... on 32x32
    ("whitened8_narrow", (32, 32, 3), 10, 568_704),  # airbench93: widths 64/128/128
    ("whitened8_narrow", (32, 32, 3), 100, 568_704 - 1_280 + 12_800),
])
def test_parameter_counts(name, shape, classes, expected):
    assert trainable_count(create_model(name, shape, classes)) == expected


@pytest.mark.parametrize("name", list_models())
def test_forward_on_uint8_gives_probabilities(name):
    shape = NATIVE_SHAPE[name]
    model = create_model(name, shape, 10)
    x = np.random.default_rng(0).integers(0, 256, (3, *shape), dtype=np.uint8)
    probs = keras.ops.convert_to_numpy(model(x, training=False))
    assert probs.shape == (3, 10)
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert model.inputs[0].dtype == "uint8"


@pytest.mark.parametrize("name", list_models())
def test_every_model_takes_the_smallest_images_kcnn_accepts(name):
    side = IMAGE_SIDE[0]
    for shape in ((side, side, 1), (side, side + 7, 3)):
        probs = create_model(name, shape, 10)(np.zeros((2, *shape), np.uint8))
        assert tuple(probs.shape) == (2, 10)


@pytest.mark.parametrize("name", list_models())
def test_gradients_reach_every_trainable_weight(name):
    import torch

    shape = NATIVE_SHAPE[name]
    keras.utils.set_random_seed(0)
    model = create_model(name, shape, 10)
    x = np.random.default_rng(1).integers(0, 256, (16, *shape), dtype=np.uint8)
    y = np.arange(16) % 10
    probs = model(x, training=True)
    loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, probs))
    loss.backward()
    for weight in model.trainable_weights:
        grad = weight.value.grad
        assert grad is not None, weight.path
        assert torch.count_nonzero(grad) > 0, weight.path


@pytest.mark.parametrize("name", list_models())
def test_keras_file_round_trip_gives_equal_outputs(name, tmp_path):
    shape = NATIVE_SHAPE[name]
    model = create_model(name, shape, 10)
    x = np.random.default_rng(2).integers(0, 256, (4, *shape), dtype=np.uint8)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.name == name
    np.testing.assert_allclose(model.predict(x, verbose=0), loaded.predict(x, verbose=0),
                               rtol=0, atol=1e-6)


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(ValueError) as err:
        create_model("cnn4")
    assert str(err.value) == ("Unknown model 'cnn4'; valid models: cnn2, cnn2_simple, cnn3, net24k, resnet9, "
                              "whitened8, whitened8_narrow. Did you mean 'cnn3'?")


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 2), (0, 32, 3)])
def test_bad_input_shape_is_rejected(shape):
    with pytest.raises(ValueError, match=r"input_shape must be \(height, width, channels\)"):
        create_model("cnn3", shape, 10)


def test_default_layout_on_torch_is_channels_first():
    from kcnn.models import default_data_format

    assert keras.backend.backend() == "torch"
    assert default_data_format() == "channels_first"
    assert create_model("cnn3").get_layer("conv1").data_format == "channels_first"


@pytest.mark.parametrize("name", list_models())
def test_both_layouts_compute_the_same_function_with_the_same_weights(name):
    shape = NATIVE_SHAPE[name]
    last = create_model(name, shape, 10, data_format="channels_last")
    first = create_model(name, shape, 10, data_format="channels_first")
    # Flatten(data_format="channels_first") orders features as channels_last does,
    # so weights move between layouts unchanged.
    first.set_weights(last.get_weights())
    x = np.random.default_rng(3).integers(0, 256, (4, *shape), dtype=np.uint8)
    np.testing.assert_allclose(first.predict(x, verbose=0), last.predict(x, verbose=0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_to_channels_last_keeps_the_function_and_leaves_no_channels_first_layer(name):
    from kcnn.models import to_channels_last

    shape = NATIVE_SHAPE[name]
    first = create_model(name, shape, 10, data_format="channels_first")
    last = to_channels_last(first)
    assert {getattr(layer, "data_format", None) for layer in last.layers} <= {None, "channels_last"}
    assert to_channels_last(last) is last
    x = np.random.default_rng(5).integers(0, 256, (4, *shape), dtype=np.uint8)
    np.testing.assert_allclose(last.predict(x, verbose=0), first.predict(x, verbose=0), rtol=0, atol=1e-5)


def test_unknown_data_format_is_rejected():
    with pytest.raises(ValueError) as err:
        create_model("cnn3", data_format="nchw")
    assert str(err.value) == ("data_format must be 'channels_first' or 'channels_last'. "
                              "Received: data_format='nchw'")


@pytest.mark.parametrize("name", TUTORIAL_MODELS)
def test_weights_start_from_pytorchs_default_initialization(name):
    # The reference tutorials are PyTorch programs: every weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    keras.utils.set_random_seed(0)
    model = create_model(name, input_shape=(32, 32, 3), num_classes=10)
    checked = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
            bound = 1 / np.sqrt(np.prod(kernel.shape[:-1]))
            for weights, spread in ((kernel, 0.9), (bias, 0.5)):
                assert np.abs(weights).max() <= bound, layer.name
                assert np.abs(weights).max() > spread * bound, layer.name  # fills the range; not zeros
            checked += 1
        if isinstance(layer, keras.layers.BatchNormalization):
            assert (layer.epsilon, layer.momentum) == (1e-5, 0.9), layer.name
    assert checked >= 3


def smooth_images(shape, count=48, seed=0):
    """uint8 images whose neighbouring pixels correlate, as in photographs (not white noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, shape[0] // 4 + 1, shape[1] // 4 + 1, shape[2])).astype("float32")
    fine = keras.ops.convert_to_numpy(keras.ops.image.resize(coarse, shape[:2], data_format="channels_last"))
    return np.clip(fine + rng.normal(0, 10, (count, *shape)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("name", list_models())
def test_whitened_first_conv_outputs_centred_uncorrelated_unit_variance_pairs(name, data_format):
    shape = NATIVE_SHAPE[name]
    model = create_model(name, shape, 10, data_format=data_format)
    images = smooth_images(shape)
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    eigenvalues = whiten_first_conv(model, images)
    conv = first_conv(model)
    kh, kw, channels, filters = conv.kernel.shape
    assert eigenvalues.shape == (kh * kw * channels,) and np.all(np.diff(eigenvalues) <= 0)
    conv.activation = keras.activations.linear  # look before net24k's / cnn2_simple's ReLU
    out = keras.ops.convert_to_numpy(keras.Model(model.input, conv.output)(images))
    if data_format == "channels_first":
        out = out.transpose(0, 2, 3, 1)
    pad = kh // 2 if conv.padding == "same" else 0  # positions where the kernel fits inside the image
    out = out[:, pad:out.shape[1] - pad, pad:out.shape[2] - pad].reshape(-1, filters).astype(np.float64)
    k = min(filters // 2, kh * kw * channels)  # cnn2_simple: 9 pairs from 3x3x1 patches, 14 filters left
    np.testing.assert_allclose(out[:, :k], -out[:, k:2 * k], atol=1e-4)
    if conv.use_bias:  # resnet9's first conv has none: the batch norm after it centres
        np.testing.assert_allclose(out.mean(axis=0)[:2 * k], 0, atol=1e-3)
    cov = np.cov(out[:, :k], rowvar=False, bias=True)
    expected = eigenvalues[:k] / (eigenvalues[:k] + WHITEN_EPS)
    np.testing.assert_allclose(cov, np.diag(expected), atol=2e-3)
    # Only the first conv changed.
    changed = [not np.array_equal(b, keras.ops.convert_to_numpy(w)) for b, w in zip(before, model.weights)]
    assert [w.path for w, c in zip(model.weights, changed) if c] == [w.path for w in (conv.kernel, conv.bias) if w is not None]
    kernel_before = before[[w.path for w in model.weights].index(conv.kernel.path)]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(conv.kernel)[..., 2 * k:], kernel_before[..., 2 * k:])


def test_whitening_needs_images_of_the_models_input_shape():
    model = create_model("cnn3", (32, 32, 3), 10)
    with pytest.raises(ValueError) as err:
        whiten_first_conv(model, np.zeros((4, 28, 28, 1), np.uint8))
    assert str(err.value) == ("whiten_first_conv needs at least 2 images of shape (32, 32, 3). "
                              "Received: images.shape=(4, 28, 28, 1)")


def test_whitening_a_model_without_a_conv_is_an_error():
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)), name="mlp")
    with pytest.raises(ValueError) as err:
        whiten_first_conv(model, np.zeros((4, 8, 8, 1), np.uint8))
    assert str(err.value) == "Model 'mlp' has no Conv2D layer to whiten."
