"""The package's structure: modules import only along the flow docs/design.md draws, library code logs
instead of printing, and every error kcnn raises on purpose belongs to kcnn.errors' hierarchy."""

import ast
import logging
from pathlib import Path

import pytest
from helpers import REPO, tiny_train

from kcnn import errors

PACKAGE = REPO / "kcnn"
#: The layers of docs/design.md, lowest first: a module may import its own layer's modules and lower ones.
#: The package itself (kcnn/__init__.py: the version and a lazy facade of the public API, resolved when
#: an attribute is read) sits on top, and any module may read its constants.
LAYERS = [
    {"kcnn.errors", "kcnn.files", "kcnn.quiet", "kcnn.metadata"},
    {"kcnn.device", "kcnn.config", "kcnn.catalog"},
    {"kcnn.images", "kcnn.models", "kcnn.fused", "kcnn.runs"},
    {"kcnn.data", "kcnn.data.tfds_access", "kcnn.data.folders", "kcnn.data.info", "kcnn.data.augment",
     "kcnn.data.pipelines"},
    {"kcnn.prediction", "kcnn.explain", "kcnn.figures", "kcnn.callbacks"},
    {"kcnn.evaluation", "kcnn.export", "kcnn.export.card", "kcnn.export.checks", "kcnn.export.runtimes",
     "kcnn.export.to_onnx", "kcnn.export.to_litert", "kcnn.export.to_torch", "kcnn.export.litert_convert"},
    {"kcnn.training", "kcnn.serve"},
    {"kcnn.lr_find", "kcnn.tune"},
    {"kcnn.cli"},
    {"kcnn", "kcnn.__main__"},
]
LAYER = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def kcnn_imports(path: Path) -> set[str]:
    """The kcnn modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("kcnn")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kcnn"):
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in LAYER else node.module
                      for alias in node.names}
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    assert {module_name(path) for path in SOURCES} == set(LAYER)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_modules_import_only_their_own_layer_and_lower_ones(path):
    name = module_name(path)
    upward = sorted(m for m in kcnn_imports(path) if LAYER[m] > LAYER[name] and m != "kcnn")
    assert upward == [], f"{name} (layer {LAYER[name]}) imports {upward}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_library_code_logs_instead_of_printing(path):
    calls = [node.lineno for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]
    assert calls == [], f"{path.name} calls print on lines {calls}"


def test_kcnns_errors_have_the_cli_exit_codes():
    from kcnn.data import DataCorruptError, DataNotFoundError, FolderError
    from kcnn.export import ExportParityError
    from kcnn.images import ImageError
    from kcnn.prediction import ModelFileError
    from kcnn.runs import RunFolderError
    from kcnn.training import TrainingDiverged

    assert issubclass(errors.UsageError, ValueError) and errors.UsageError.exit_code == 2
    assert RunFolderError.exit_code == 2
    for data_error in (DataCorruptError, DataNotFoundError, FolderError, ExportParityError, ImageError,
                       ModelFileError, TrainingDiverged):
        assert issubclass(data_error, errors.DataError) and data_error.exit_code == 1
        assert not issubclass(data_error, ValueError)


def test_the_python_api_logs_through_the_callers_logging(fake_data_dir, tmp_path, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="kcnn"):
        tiny_train(fake_data_dir, tmp_path / "run", epochs=1)
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert messages[0][0] == "kcnn.training" and messages[0][1].startswith("kcnn ")
    assert any(m.startswith("test accuracy") for _, m in [(n, m.splitlines()[-1]) for n, m in messages])
    assert capsys.readouterr().out == ""  # nothing printed behind the caller's back


def test_dir_lists_the_lazy_public_api_and_auto_verbosity_draws_a_bar_only_for_a_person(monkeypatch):
    import io
    import sys

    import kcnn
    from kcnn.training import fit_verbosity

    assert {"train", "TrainConfig", "predict", "create_model", "list_models"} <= set(dir(kcnn))

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # a log file or a pipe: one line an epoch
    assert fit_verbosity("auto") == 2 and fit_verbosity(0) == 0
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert fit_verbosity("auto") == 1
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setitem(sys.modules, "ipykernel", object())  # a notebook's kernel
    assert fit_verbosity("auto") == 1
