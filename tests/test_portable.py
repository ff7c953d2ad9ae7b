"""`.keras` files work in plain Keras under every backend (kcnn itself under each: test_backends.py)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from kcnn import metadata
from kcnn.prediction import shipped_models

BACKENDS = ["torch", "tensorflow"] + (["jax"] if importlib.util.find_spec("jax") else [])

# Runs in a fresh interpreter that never imports kcnn: every .keras file of a folder on its images
# (NAME.npy beside NAME.keras), the probabilities saved as NAME-BACKEND.npy.
PLAIN_KERAS = """
import sys, pathlib, numpy as np, keras
folder = pathlib.Path(sys.argv[1])
for path in sorted(folder.glob("*.keras")):
    model = keras.saving.load_model(path)
    np.save(folder / f"{path.stem}-{keras.backend.backend()}.npy", model.predict(np.load(folder / f"{path.stem}.npy"), verbose=0))
print(keras.backend.backend())
"""


def plain_env(backend):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    return env


def models_to_check(tmp_path):
    import keras

    from kcnn.models import create_model, to_channels_last

    from kcnn.fused import fused_batch_norm

    keras.utils.set_random_seed(7)
    built = create_model("cnn3", (28, 28, 1), 10)  # Resizing + gray-to-RGB inside; channels_first on torch
    built.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with fused_batch_norm(built):  # trained as kcnn trains: moving statistics from the fused kernel
        built.fit(np.zeros((32, 28, 28, 1), np.uint8) + np.arange(32, dtype=np.uint8)[:, None, None, None],
                  np.arange(32) % 10, batch_size=8, epochs=1, verbose=0)
    to_channels_last(built).save(tmp_path / "cnn3_mnist.keras")  # as kcnn export writes it
    metadata.write(tmp_path / "cnn3_mnist.keras",  # with kcnn's member in the archive, which Keras must ignore
                   metadata.make([str(i) for i in range(10)], (28, 28, 1), "mnist"))
    return [tmp_path / "cnn3_mnist.keras"] + shipped_models()


def plain_keras_probabilities(folder):
    """``{backend: {stem: probabilities}}`` of every ``folder/STEM.keras`` on ``folder/STEM.npy``, each
    backend in one fresh interpreter that never imports kcnn."""
    found = {}
    for backend in BACKENDS:
        proc = subprocess.run([sys.executable, "-c", PLAIN_KERAS, str(folder)], capture_output=True, text=True,
                              env=plain_env(backend), cwd=folder, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.strip().splitlines()[-1] == backend
        found[backend] = {path.stem: np.load(folder / f"{path.stem}-{backend}.npy") for path in folder.glob("*.keras")}
    return found


def assert_backends_agree(probabilities, shape):
    for backend, by_model in probabilities.items():
        for name, probs in by_model.items():
            assert probs.shape == shape, name
            diff = float(np.abs(probs - probabilities["torch"][name]).max())
            assert diff <= 1e-4, f"{name}: {backend} vs torch differ by {diff}"


@pytest.mark.slow
def test_keras_files_agree_under_every_backend(tmp_path):
    import json
    import shutil

    if len(BACKENDS) < 2:
        pytest.skip("only one Keras backend installed")
    folder = tmp_path / "files"
    folder.mkdir()
    for model_path in models_to_check(tmp_path):
        shutil.copy(model_path, folder / model_path.name)
        card = model_path.with_suffix(".json")
        shape = (json.loads(card.read_text())["input"]["shape"][1:] if card.exists() else [28, 28, 1])
        np.save(folder / f"{model_path.stem}.npy", np.random.default_rng(0).integers(0, 256, (8, *shape), np.uint8))
    assert_backends_agree(plain_keras_probabilities(folder), (8, 10))


@pytest.mark.slow
def test_every_registered_model_saved_on_torch_predicts_alike_under_every_backend(tmp_path):
    """Each architecture, built on torch (channels_first inside), saved as kcnn export saves it, loads in
    plain Keras under tensorflow and jax and gives torch's probabilities."""
    import keras

    from kcnn.models import create_model, list_models, reference_input_shape, to_channels_last

    if len(BACKENDS) < 2:
        pytest.skip("only one Keras backend installed")
    rng = np.random.default_rng(1)
    for name in list_models():
        keras.utils.set_random_seed(3)
        shape = reference_input_shape(name)
        to_channels_last(create_model(name, shape, 10)).save(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}.npy", rng.integers(0, 256, (4, *shape), dtype=np.uint8))
    probabilities = plain_keras_probabilities(tmp_path)
    assert sorted(probabilities["torch"]) == list_models()
    assert_backends_agree(probabilities, (4, 10))
