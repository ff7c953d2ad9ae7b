"""kcnn.catalog, the table the command line answers from without Keras: it matches the registry, and
`kcnn models` and a dataset typo are answered without importing TensorFlow or torch."""

import subprocess
import sys

import numpy as np
import pytest
from helpers import run_cli

from kcnn import catalog
from kcnn.models import create_model, list_models, reference_input_shape


def test_the_table_matches_the_registry_name_by_name():
    assert sorted(catalog.MODELS) == list_models()
    for name, (_, shape, _, parameters) in catalog.MODELS.items():
        assert shape == reference_input_shape(name)
        model = create_model(name, shape, 10)
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == parameters, name


def test_kcnn_models_is_a_table_with_parameters_and_the_default_recipe():
    result = run_cli("models")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["model", "parameters", "input", "default"]
    row = next(line for line in lines if line.startswith("net24k"))
    assert row.split()[:4] == ["net24k", "24,488", "28x28x1", "digits_small"] and "(mnist)" in row


@pytest.mark.parametrize("args", [["models"], ["train", "mnsit"], ["data", "cifar1O"]])
def test_names_are_answered_without_tensorflow_or_torch(args, tmp_path):
    code = ("import sys; from kcnn.cli import main\n"
            "try:\n    main(sys.argv[1:], standalone_mode=False)\n"
            "except SystemExit:\n    pass\n"
            "print('tensorflow' in sys.modules, 'torch' in sys.modules, 'keras' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.stdout.splitlines()[-1] == "False False False", proc.stdout + proc.stderr
    if args[0] != "models":
        assert "Did you mean" in proc.stdout + proc.stderr


def test_a_typo_suggests_the_known_dataset():
    result = run_cli("train", "mnsit")
    assert result.exit_code == 2
    assert result.output.strip().startswith("Error: Unknown dataset 'mnsit'. Did you mean 'mnist'?")
