"""kcnn.runs and kcnn.files: run-folder states, resume across kcnn versions and recipe names, history, atomic writes."""

import json

import pytest
from helpers import FAST_ARGS, run_cli

from kcnn import files
from kcnn.config import FORMAT_VERSION, resolve
from kcnn.runs import RunFolder, RunFolderError, read_history, truncate_history


def test_a_run_folder_of_format_1_is_migrated_once_and_resumed_epochs_append_under_its_header(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    settings = resolve("mnist", (28, 28, 1), recipe="baseline").to_dict()
    run.config.write_text(json.dumps({"settings": {**settings, "augment": False},
                                      "dataset": {"image_shape": [28, 28, 1]}}))  # no format_version: 1
    run.history.write_text("epoch,accuracy,learning_rate,loss\n0,0.5,0.001,1.2\n")  # before kcnn timed epochs
    run.migrate()
    record = json.loads(run.config.read_text())
    assert record["format_version"] == FORMAT_VERSION and record["settings"]["augment"] == "none"
    header = "epoch,accuracy,epoch_seconds,learning_rate,loss"  # CSVLogger's order: epoch, then the keys sorted
    assert run.history.read_text().splitlines() == [header, "0,0.5,NA,0.001,1.2"]
    assert read_history(run.history) == [{"epoch": 0, "accuracy": 0.5, "learning_rate": 0.001, "loss": 1.2}]
    before = run.history.read_text(), run.config.read_text()
    run.migrate()  # a folder of the current format is left alone
    assert (run.history.read_text(), run.config.read_text()) == before


def test_truncating_the_history_keeps_the_backed_up_epochs_and_drops_a_half_written_row(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,1.5\n1,1.2\n2,1.")  # a crash mid-write of epoch 2
    truncate_history(path, 2)
    assert path.read_text().splitlines() == ["epoch,loss", "0,1.5", "1,1.2"]
    truncate_history(path, 1)
    assert path.read_text().splitlines() == ["epoch,loss", "0,1.5"]


@pytest.mark.slow
def test_finished_or_foreign_run_folder_is_refused(fake_data_dir, tmp_path):
    out = str(tmp_path / "run")
    assert run_cli("train", "mnist", "--epochs", "1", "--data-dir", fake_data_dir, "--output", out,
                   *FAST_ARGS).exit_code == 0
    again = run_cli("train", "mnist", "--epochs", "1", "--data-dir", fake_data_dir, "--output", out, *FAST_ARGS)
    assert again.exit_code == 2
    assert "already holds a finished run" in again.output and "--overwrite" in again.output
    other = run_cli("train", "mnist", "--epochs", "2", "--data-dir", fake_data_dir, "--output", out, *FAST_ARGS)
    assert other.exit_code == 2
    assert f"{out} holds a run with other settings (epochs: 1 there, 2 here); choose another --output" in (
        " ".join(other.output.split()))
    redo = run_cli("train", "mnist", "--epochs", "2", "--data-dir", fake_data_dir, "--output", out,
                   "--overwrite", *FAST_ARGS)
    assert redo.exit_code == 0, redo.output


def write_unfinished(folder, config, **changed):
    """An unfinished run folder (config.json, no metrics.json) of ``config``'s settings with ``changed`` ones."""
    folder.mkdir()
    settings = {**config.to_dict(), **changed}
    (folder / "config.json").write_text(json.dumps({"settings": settings, "dataset": {"image_shape": [28, 28, 1]}}))


def test_a_run_folder_from_before_label_smoothing_ema_mixed_precision_and_whiten_still_resumes(tmp_path):
    config = resolve("mnist", (28, 28, 1), recipe="baseline", epochs=2)
    folder = tmp_path / "run"
    write_unfinished(folder, config)
    older = json.loads((folder / "config.json").read_text())
    for key in ("label_smoothing", "ema", "mixed_precision", "whiten"):  # settings kcnn added later
        del older["settings"][key]
    older["settings"]["augment"] = False  # how older kcnn wrote "no augmentation"
    (folder / "config.json").write_text(json.dumps(older))
    run, resume = RunFolder.resolve(config, folder)
    assert (run.path, resume) == (folder, True)
    with pytest.raises(RunFolderError, match=r"\(ema: 0.0 there, 0.999 here\)"):
        RunFolder.resolve(resolve(base=config, ema=0.999), folder)
    with pytest.raises(RunFolderError, match=r"\(whiten: False there, True here\)"):
        RunFolder.resolve(resolve(base=config, whiten=True), folder)


def test_a_run_folder_of_the_same_settings_under_another_recipe_name_resumes(tmp_path):
    config = resolve("cifar10", (32, 32, 3), epochs=2)
    folder = tmp_path / "run"
    write_unfinished(folder, config, recipe="cifar_whiten_shift")  # a recipe name kcnn no longer has
    run, resume = RunFolder.resolve(config, folder)
    assert (run.path, resume) == (folder, True)
    with pytest.raises(RunFolderError, match=r"other settings \(whiten: True there, False here\)"):
        RunFolder.resolve(resolve(base=config, whiten=False), folder)


def test_an_atomic_write_that_fails_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = files.write_json(tmp_path / "sub" / "metrics.json", {"a": 1})
    with pytest.raises(RuntimeError), files.atomic_path(path) as tmp:
        tmp.write_text('{"a": 2')  # half written
        raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]
    files.write_text(path, '{"a": 3}')
    assert json.loads(path.read_text()) == {"a": 3}
