"""kcnn's training fast path on torch (fused batch norm, direct forward) matches stock Keras, the saved model
holds only stock layers, and a Keras that lacks what the path relies on trains stock, with a warning."""

import json
import zipfile

import keras
import numpy as np
import pytest
import torch

from kcnn import fused
from kcnn.fused import direct_forward, fused_batch_norm, training_fast_path
from kcnn.models import create_model, list_models, reference_input_shape

SHAPES = {name: reference_input_shape(name) for name in list_models()}


def _images(shape, count=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *shape), dtype=np.uint8), np.arange(count) % 10


def _forward_backward(name, fused):
    """Training-mode outputs, every weight's gradient and the moving statistics after one step."""
    keras.utils.set_random_seed(0)  # equal weights and dropout masks
    model = create_model(name, SHAPES[name], 10)
    x, y = _images(SHAPES[name])
    with fused_batch_norm(model, enabled=fused) as switched:
        probs = model(torch.as_tensor(x), training=True)
        torch.nn.functional.nll_loss(torch.log(probs), torch.as_tensor(y)).backward()
    grads = {v.path: v.value.grad.numpy().copy() for v in model.trainable_variables}
    stats = {v.path: v.numpy() for v in model.non_trainable_variables if "moving" in v.path}
    return len(switched), probs.detach().numpy(), grads, stats


@pytest.mark.parametrize("name", list_models())
def test_fused_batch_norm_matches_stock_outputs_gradients_and_moving_statistics(name):
    count, probs, grads, stats = _forward_backward(name, fused=True)
    _, stock_probs, stock_grads, stock_stats = _forward_backward(name, fused=False)
    expected = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in create_model(
        name, SHAPES[name], 10).layers)
    assert count == expected  # every BatchNormalization of the model is switched
    np.testing.assert_allclose(probs, stock_probs, rtol=1e-5, atol=1e-6)
    for path, grad in stock_grads.items():  # float32 round-off of a different summation order
        if name == "resnet9":
            # 8 batch norms deep, max pools down to 1x1: round-off flips near-ties of a max between the
            # two summation orders and routes a few gradients elsewhere (about 0.5% of a kernel's norm)
            assert np.linalg.norm(grads[path] - grad) <= 1e-2 * np.linalg.norm(grad) + 1e-6, path
        else:
            np.testing.assert_allclose(grads[path], grad, rtol=1e-4, atol=2e-6, err_msg=path)
    assert stats.keys() == stock_stats.keys()
    for path, value in stock_stats.items():  # Keras' convention: biased batch variance
        np.testing.assert_allclose(stats[path], value, rtol=1e-5, atol=1e-6, err_msg=path)


def _fit_three_steps(fused, path=None):
    keras.utils.set_random_seed(1)
    model = create_model("cnn3", (32, 32, 3), 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x, y = _images((32, 32, 3), count=48, seed=1)
    with training_fast_path(model, enabled=fused):
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        if path is not None:
            model.save(path)
    stats = {v.path: v.numpy() for v in model.non_trainable_variables if "moving" in v.path}
    return model.predict(x, verbose=0), stats


def test_three_fit_steps_fused_track_stock_and_save_stock_layers(tmp_path):
    probs, stats = _fit_three_steps(True, tmp_path / "fused.keras")
    stock_probs, stock_stats = _fit_three_steps(False)
    np.testing.assert_allclose(probs, stock_probs, atol=1e-4)
    for path, value in stock_stats.items():
        # A conv bias right before a batch norm gets only round-off as gradient, which Adam scales up
        # to steps of up to lr: the biases drift apart by up to 3e-3 in 3 steps, and the moving means
        # (weight 1 - momentum = 0.1 a step) with them; the outputs do not see it (the norm removes it).
        atol = 5e-4 if path.endswith("moving_mean") else 1e-5
        np.testing.assert_allclose(stats[path], value, rtol=1e-4, atol=atol, err_msg=path)
    with zipfile.ZipFile(tmp_path / "fused.keras") as archive:
        layers = json.loads(archive.read("config.json"))["config"]["layers"]
    norms = [layer for layer in layers if "Normalization" in layer["class_name"]]
    assert [(n["module"], n["class_name"]) for n in norms] == [("keras.layers", "BatchNormalization")] * 3
    reloaded = keras.saving.load_model(tmp_path / "fused.keras")
    assert all("call" not in vars(layer) for layer in reloaded.layers)
    np.testing.assert_allclose(reloaded.predict(_images((32, 32, 3), 48, 1)[0], verbose=0), probs, atol=1e-6)


def test_the_switch_is_undone_after_the_block_and_skips_inference():
    model = create_model("cnn3", (32, 32, 3), 10)
    with fused_batch_norm(model) as switched:
        assert all("call" in vars(layer) for layer in switched)
        before = [v.numpy().copy() for v in model.non_trainable_variables]
        model.predict(_images((32, 32, 3), 4)[0], verbose=0)  # inference: stock path, statistics untouched
        assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.non_trainable_variables))
    assert switched and all("call" not in vars(layer) for layer in switched)


def _train_step(name, shape, direct):
    keras.utils.set_random_seed(0)
    model = create_model(name, shape, 10)
    x, y = _images(shape)
    with fused_batch_norm(model), direct_forward(model, enabled=direct) as used:
        probs = model(torch.as_tensor(x), training=True)
        torch.nn.functional.nll_loss(torch.log(probs), torch.as_tensor(y)).backward()
    return used, probs.detach().numpy(), [v.value.grad.numpy().copy() for v in model.trainable_variables]


@pytest.mark.parametrize("name", list_models())
def test_the_direct_forward_runs_the_same_ops(name):
    used, probs, grads = _train_step(name, SHAPES[name], direct=True)
    _, stock_probs, stock_grads = _train_step(name, SHAPES[name], direct=False)
    assert used is (name != "resnet9")  # resnet9's residual units branch: no chain, stock Keras' forward
    np.testing.assert_array_equal(probs, stock_probs)  # the same ops in the same order: equal to the bit
    for grad, stock in zip(grads, stock_grads, strict=True):
        np.testing.assert_array_equal(grad, stock)


def test_the_direct_forward_leaves_branching_models_and_the_model_afterwards_alone():
    branching = create_model("cnn3", (28, 28, 1), 10)  # gray to RGB: a Concatenate of three inputs
    with direct_forward(branching) as used:
        assert not used and "call" not in vars(branching)
    chain = create_model("net24k", (28, 28, 1), 10)
    with direct_forward(chain) as used:
        assert used and "call" in vars(chain)
    assert "call" not in vars(chain)


def test_a_keras_without_what_the_path_reads_trains_stock_with_one_warning(caplog, monkeypatch):
    # as a Keras release that renamed a BatchNormalization attribute would be
    monkeypatch.setattr(fused, "BN_ATTRIBUTES", (*fused.BN_ATTRIBUTES, "renamed_in_a_new_keras"))
    model = create_model("cnn3", SHAPES["cnn3"], 10)
    with training_fast_path(model) as (switched, direct):
        assert switched == [] and direct is False
        assert all("call" not in vars(layer) for layer in [model, *model.layers])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "BatchNormalization has no renamed_in_a_new_keras" in warnings[0]


def test_a_failure_inside_the_block_restores_exactly_the_switched_layers_and_blocks_do_not_nest():
    model = create_model("cnn3", SHAPES["cnn3"], 10)
    with pytest.raises(ZeroDivisionError):
        with training_fast_path(model) as (switched, direct):
            assert len(switched) == 3 and direct
            with pytest.raises(RuntimeError, match="already switched to kcnn's fast path; .* do not nest"):
                with fused_batch_norm(model):
                    pass
            assert all("call" in vars(layer) for layer in switched)  # the refused inner block undid nothing
            1 / 0
    assert all("call" not in vars(layer) for layer in [model, *model.layers])
