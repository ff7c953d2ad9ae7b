"""Model zoo: registry, pinned parameter counts, forward shapes, gradients, .keras round trip."""

import keras
import numpy as np
import pytest

from kcnn.models import create_model, list_models

NATIVE_SHAPE = {"cnn3": (32, 32, 3), "cnn2": (32, 32, 3), "net24k": (28, 28, 1),
                "cnn2_simple": (28, 28, 1)}


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_registry_lists_every_seed_architecture():
    assert list_models() == ["cnn2", "cnn2_simple", "cnn3", "net24k"]


@pytest.mark.parametrize("name, shape, classes, expected", [
    ("cnn3", (32, 32, 3), 10, 622_346),    # seed 3-conv CNN, 'same' padding
    ("cnn3", (28, 28, 1), 10, 622_346),    # MNIST resized to 32x32 and repeated to RGB inside
    ("cnn3", (32, 32, 3), 100, 622_346 - 2_570 + 25_700),
    ("net24k", (28, 28, 1), 10, 24_488),   # the seed's 24,488-parameter MNIST net
    ("cnn2", (32, 32, 3), 10, 545_290),    # Flatten 4096 -> Dense 128
    ("cnn2_simple", (28, 28, 1), 10, 25_258),
    ("cnn2_simple", (32, 32, 3), 10, 30_634),
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
    assert str(err.value) == ("Unknown model 'cnn4'; valid models: cnn2, cnn2_simple, cnn3, net24k. "
                              "Did you mean 'cnn3'?")


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


def test_unknown_data_format_is_rejected():
    with pytest.raises(ValueError) as err:
        create_model("cnn3", data_format="nchw")
    assert str(err.value) == ("data_format must be 'channels_first' or 'channels_last'. "
                              "Received: data_format='nchw'")


@pytest.mark.parametrize("name", list_models())
def test_weights_start_from_pytorchs_default_initialization(name):
    # The seeds are PyTorch programs: every weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
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
