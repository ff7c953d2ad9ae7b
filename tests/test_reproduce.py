"""scripts/reproduce.py: its run commands, and the table it builds from finished run folders and records."""

import dataclasses
import importlib.util
import json
import re
import shutil
import sys

import pytest

from helpers import REPO
from kcnn.cli import main

spec = importlib.util.spec_from_file_location("reproduce", REPO / "scripts" / "reproduce.py")
reproduce = sys.modules["reproduce"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(reproduce)

ROW = reproduce.Row("mnist", "net24k", 10, "99.26% best / 99.13% final", 0.994, 3)


@pytest.fixture(autouse=True)
def records(tmp_path, monkeypatch):
    """The run records of every test go to a temporary folder, never to the project's docs/runs."""
    monkeypatch.setattr(reproduce, "RECORDS", tmp_path / "records")
    return tmp_path / "records"


VERSIONS = {"python": "3.11.7", "keras": "3.15.1", "backend": "torch", "torch": "2.13.0+cpu"}


def fake_run(runs, variant, seed, accuracy, seconds=60.0, final=None, machine="CPU, 2 cores", all_calls=None,
             tta=None, row=ROW, shape=(28, 28, 1), figures=(), **changed):
    """A finished run folder of ``kcnn train`` for ``row`` with today's settings, but for ``changed``
    ones; ``figures``: more ``metrics.json`` entries."""
    folder = runs / reproduce.run_name(row, variant, seed)
    folder.mkdir(parents=True, exist_ok=True)
    settings = reproduce.today(row, variant, seed, shape).to_dict()
    (folder / "config.json").write_text(json.dumps({
        "settings": {**settings, **changed}, "versions": VERSIONS, "dataset": {"image_shape": list(shape)},
        "resolved": {"device": "cpu" if machine.startswith("CPU") else "cuda:0", "machine": machine}}))
    metrics = {"test_accuracy": accuracy, "fit_seconds_this_call": seconds, **dict(figures)}
    if final is not None:
        metrics["final_test_accuracy"] = final
    if all_calls is not None:
        metrics["fit_seconds"] = all_calls
    if tta is not None:
        metrics[reproduce.TTA] = tta
    (folder / "metrics.json").write_text(json.dumps(metrics))


def last_row_cells(table: str) -> list[str]:
    """The cells of a Markdown table's last line, stripped."""
    return [c.strip() for c in table.strip().splitlines()[-1].strip("|").split("|")]


def test_every_row_command_is_a_valid_kcnn_train_command():
    for row in reproduce.ROWS:
        for variant, given in reproduce.VARIANTS.items():
            cmd = reproduce.command(row, variant, 2, "/data")
            assert cmd[:3] == ["kcnn", "train", row.dataset]
            ctx = main.commands["train"].make_context("train", cmd[2:])  # raises on a bad option
            assert (ctx.params["model"], ctx.params["epochs"], ctx.params["seed"]) == (row.model, row.epochs, 2)
            assert {k: ctx.params[k] for k in given} == given
            assert ctx.params["output"].endswith(reproduce.run_name(row, variant, 2))
    assert len({r.name for r in reproduce.ROWS}) == len(reproduce.ROWS)
    assert all(r.seeds >= (2 if r.dataset.startswith("cifar") else 3) for r in reproduce.ROWS)


def test_table_gives_mean_spread_and_whether_the_default_meets_the_target(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "RUNS", tmp_path)
    fake_run(tmp_path, "default", 0, 0.9940, 100)
    fake_run(tmp_path, "default", 1, 0.9950, 200)
    fake_run(tmp_path, "default", 7, 0.9960, 300)  # any seed counts
    (tmp_path / reproduce.run_name(ROW, "baseline", 0)).mkdir()  # unfinished: no metrics.json
    cells = last_row_cells(reproduce.table([ROW]))
    assert cells[5] == "not run"
    assert cells[6] == "99.50% ± 0.10 (n=3, min 99.40%) (`digits_small`)"
    assert cells[7] == "yes"
    assert cells[9] == "—"  # digit runs record no flip averaging
    assert cells[10] == "— / 3.3 min"
    assert "Trained on: CPU, 2 cores; Python 3.11.7, keras 3.15.1 (torch), torch 2.13.0+cpu." in (
        reproduce.document([ROW]))

    fake_run(tmp_path, "baseline", 0, 0.9913)
    cells = last_row_cells(reproduce.table([dataclasses.replace(ROW, target=0.996)]))
    assert cells[5] == "99.13% (n=1, min 99.13%)"
    assert cells[7] == "no (-0.10 pt)"


def test_readmes_short_table_has_six_columns_with_the_full_tables_default_figure(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "RUNS", tmp_path)
    fake_run(tmp_path, "default", 0, 0.9940, 120)
    fake_run(tmp_path, "default", 1, 0.9950, 240)
    full = last_row_cells(reproduce.table([ROW]))
    short = last_row_cells(reproduce.summary([ROW]))
    assert len(short) == 6 and short[:4] == full[:4]
    assert full[6].startswith(short[4]) and short[5] == "3.0"  # 120 s and 240 s: 3.0 minutes a run


def test_a_run_trained_under_another_recipe_name_with_the_same_settings_counts_and_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "RUNS", tmp_path)
    fake_run(tmp_path, "default", 0, 0.9940)
    fake_run(tmp_path, "default", 1, 0.9960)
    fake_run(tmp_path, "default", 2, 0.9990, lr=2e-3)
    for seed in (1, 2):  # e.g. --recipe digits with digits_small's options; seed 2 also another lr: stale
        config = tmp_path / reproduce.run_name(ROW, "default", seed) / "config.json"
        saved = json.loads(config.read_text())
        saved["settings"]["recipe"] = "digits"
        config.write_text(json.dumps(saved))
    cells = last_row_cells(reproduce.table([ROW]))
    assert cells[6] == "99.50% ± 0.14 (n=2, min 99.40%) (`digits_small`; 1 trained as `digits` with the same settings)"
    assert reproduce.STALE == [f"{tmp_path / reproduce.run_name(ROW, 'default', 2)} (lr: 0.002 there, 0.005 here)"]


def test_a_resumed_runs_fit_time_counts_the_epochs_of_every_call(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "RUNS", tmp_path)
    fake_run(tmp_path, "default", 0, 0.9940, seconds=60, all_calls=600)  # resumed: 60 s in the last call
    fake_run(tmp_path, "default", 1, 0.9950, seconds=300)  # a record from before epoch times
    cells = last_row_cells(reproduce.table([ROW]))
    assert cells[10] == "— / 7.5 min"


def test_the_flip_averaged_column_averages_the_default_runs_that_all_record_it_and_leaves_meets_alone(
        tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "RUNS", tmp_path)
    fake_run(tmp_path, "default", 0, 0.9930, tta=0.9950)
    fake_run(tmp_path, "default", 1, 0.9930, tta=0.9970)
    fake_run(tmp_path, "baseline", 0, 0.9900, tta=0.9999)  # the baseline's is not shown
    table = reproduce.table([ROW])
    cells = last_row_cells(table)
    assert (cells[7], cells[9]) == ("no (-0.10 pt)", "99.60% ± 0.14 (n=2, min 99.50%)")
    assert "default, flip-averaged" in table.splitlines()[0]

    fake_run(tmp_path, "default", 2, 0.9930)  # one run without it: no mean of the others
    cells = last_row_cells(reproduce.table([ROW]))
    assert cells[9] == "—"


def test_readme_table_is_replaced_between_the_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{reproduce.BEGIN}\nold table\n{reproduce.END}\nafter\n")
    reproduce.write_readme(readme, "| new |\n")
    assert readme.read_text() == f"# x\n\nbefore\n{reproduce.BEGIN}\n| new |\n{reproduce.END}\nafter\n"
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="README.md: no <!-- reproduce:begin --> ... <!-- reproduce:end --> markers"):
        reproduce.write_readme(readme, "| new |\n")


def test_an_unknown_row_is_refused_with_the_valid_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main(["--rows", "mnist:cnn9:15", "--no-train"])
    assert exit_info.value.code == 2
    assert "unknown row 'mnist:cnn9:15'; valid: mnist:cnn3:15, mnist:net24k:10" in capsys.readouterr().err


def test_a_final_figure_row_reports_the_last_epochs_accuracy(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "RUNS", tmp_path)
    final_row = dataclasses.replace(ROW, final=True)
    fake_run(tmp_path, "default", 0, 0.9950, final=0.9930)
    fake_run(tmp_path, "default", 1, 0.9960, final=0.9950)
    fake_run(tmp_path, "default", 2, 0.9990)  # from before final_test_accuracy: not counted
    cells = last_row_cells(reproduce.table([final_row]))
    assert cells[6] == "99.40% ± 0.14 (n=2, min 99.30%) (`digits_small`)"
    assert cells[7] == "yes"
    assert "last epoch's weights" in reproduce.document([final_row])
    assert [r.name for r in reproduce.ROWS if r.final] == ["mnist:net24k:10"]


def test_runs_from_several_machines_are_numbered_in_the_caption_and_timed_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "RUNS", tmp_path)
    fake_run(tmp_path, "default", 0, 0.9940, 600)
    fake_run(tmp_path, "default", 1, 0.9950, 30, machine="NVIDIA H100 80GB HBM3")
    fake_run(tmp_path, "default", 2, 0.9960, 90, machine="NVIDIA H100 80GB HBM3")
    document = reproduce.document([ROW])
    assert ("Trained on: [1] CPU, 2 cores; Python 3.11.7, keras 3.15.1 (torch), torch 2.13.0+cpu; "
            "[2] NVIDIA H100 80GB HBM3; Python 3.11.7") in document
    cells = last_row_cells(document)
    assert cells[10] == "— / 10.0 min [1], 1.0 min [2]"


def test_a_run_trained_before_its_recipe_changed_is_left_out_and_never_overwritten(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "RUNS", tmp_path)
    monkeypatch.chdir(tmp_path)  # main() writes docs/results.md and README.md under ROOT
    monkeypatch.setattr(reproduce, "ROOT", tmp_path)
    monkeypatch.setattr(reproduce, "ROWS", (ROW,))
    (tmp_path / "README.md").write_text(f"{reproduce.BEGIN}\n{reproduce.END}\n")
    fake_run(tmp_path, "default", 0, 0.9950)
    fake_run(tmp_path, "default", 1, 0.9990, label_smoothing=0.2)  # the recipe then had other settings
    stale = tmp_path / reproduce.run_name(ROW, "default", 1)
    before = {p.name: p.read_bytes() for p in stale.iterdir()}

    cells = last_row_cells(reproduce.table([ROW]))
    assert cells[6] == "99.50% (n=1, min 99.50%) (`digits_small`)"
    assert reproduce.STALE == [f"{stale} (label_smoothing: 0.2 there, 0.1 here)"]
    with pytest.raises(SystemExit, match=re.escape(
            f"{stale}: trained with other settings than today's command (label_smoothing: 0.2 there, 0.1 here); "
            f"move it out of {tmp_path} to train this run again")):
        reproduce.main(["--rows", ROW.name, "--variants", "default", "--seeds", "2"])
    reproduce.main(["--no-train"])
    assert (f"left out: {stale} (label_smoothing: 0.2 there, 0.1 here): trained with other settings than "
            "today's command") in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in stale.iterdir()} == before


def test_finished_runs_are_recorded_so_the_table_rebuilds_without_their_folders(tmp_path, monkeypatch, records):
    runs = tmp_path / "runs"
    monkeypatch.setattr(reproduce, "RUNS", runs)
    fake_run(runs, "default", 0, 0.9940, 100)
    fake_run(runs, "default", 1, 0.9960, 300)
    fake_run(runs, "default", 2, 0.9990, label_smoothing=0.2)  # stale: not recorded
    table = reproduce.table([ROW])
    names = [f"{reproduce.run_name(ROW, 'default', seed)}.json" for seed in (0, 1)]
    assert sorted(p.name for p in records.iterdir()) == names
    record = json.loads((records / f"{reproduce.run_name(ROW, 'default', 0)}.json").read_text())
    assert record["metrics"] == {"test_accuracy": 0.9940, "fit_seconds_this_call": 100}
    assert record["config"]["settings"]["seed"] == 0

    shutil.rmtree(runs)  # a clean checkout: records only
    assert reproduce.table([ROW]) == table
    assert reproduce.STALE == []
    assert reproduce.read_run(ROW, "default", 1)["test_accuracy"] == 0.9960  # finished: not trained again

    config = json.loads(json.dumps(record["config"]))
    config["settings"]["epochs"] = 5  # a record of another command under this name
    (records / f"{reproduce.run_name(ROW, 'default', 0)}.json").write_text(json.dumps({**record, "config": config}))
    cell = reproduce.table([ROW]).splitlines()[-1].split("|")[7].strip()
    assert cell == "99.60% (n=1, min 99.60%) (`digits_small`)"
    stale = records / f"{reproduce.run_name(ROW, 'default', 0)}.json"
    assert reproduce.STALE == [f"{stale} (epochs: 5 there, 10 here)"]
    with pytest.raises(SystemExit, match=re.escape(
            f"{stale}: trained with other settings than today's command (epochs: 5 there, 10 here); "
            f"move it out of {records} to train this run again")):
        reproduce.read_run(ROW, "default", 0)


def test_the_all_training_images_column_reads_its_runs_or_equals_a_default_without_validation(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "RUNS", tmp_path)
    fake_run(tmp_path, "full", 0, 0.9955)
    assert last_row_cells(reproduce.table([ROW]))[8] == "99.55% (n=1, min 99.55%)"
    assert reproduce.today(ROW, "full", 0, (28, 28, 1)).val_split == 0.0
    fashion = reproduce.Row("fashion_mnist", "cnn3", 15, "—", 0.935, 3)  # its default trains on every image
    assert last_row_cells(reproduce.table([fashion]))[8] == "= default"


spec = importlib.util.spec_from_file_location("ablation", REPO / "scripts" / "ablation.py")
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)
NARROW = ablation.row(ablation.MODEL, ablation.EPOCHS)


def test_each_ablation_command_takes_exactly_its_own_methods_out_of_the_airbench_recipe():
    full = reproduce.today(NARROW, "default", 0, (32, 32, 3))
    assert full.recipe == "airbench"
    for variant, given in reproduce.ABLATIONS.items():
        cmd = reproduce.command(NARROW, variant, 1, None)
        ctx = main.commands["train"].make_context("train", cmd[2:])  # raises on a bad option
        assert {k: ctx.params[k] for k in given} == given
        ablated = reproduce.today(NARROW, variant, 0, (32, 32, 3))
        changed = {f.name for f in dataclasses.fields(full) if getattr(full, f.name) != getattr(ablated, f.name)}
        assert changed == set(given), variant  # a method the recipe has, and nothing else


def test_ablation_table_gives_each_variants_tta_figure_against_the_full_recipes(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "RUNS", tmp_path)
    keys = [key for key, _ in ablation.FIGURES]
    for seed, shift in enumerate((0.9010, 0.9030)):
        fake_run(tmp_path, "default", seed, 0.89, row=NARROW, shape=(32, 32, 3), figures=zip(keys[1:], (0.895, shift)))
    fake_run(tmp_path, "no_lookahead", 0, 0.88, row=NARROW, shape=(32, 32, 3), figures=zip(keys[1:], (0.885, 0.8970)))
    fake_run(tmp_path, "onecycle", 0, 0.88, row=NARROW, shape=(32, 32, 3), figures=[])  # a run without TTA figures
    lines = ablation.table(NARROW.model, NARROW.epochs).splitlines()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    cells = {row[0].split(" ")[0]: row for row in rows}  # by the variant's name
    assert cells["nothing"][3] == "90.20% ± 0.14 (n=2, min 90.10%)"
    assert cells["`no_lookahead`"][3:5] == ["89.70% (n=1, min 89.70%)", "-0.50 pt"]
    assert cells["`onecycle`"][1:5] == ["88.00% (n=1, min 88.00%)", "—", "—", ""]
    assert cells["`random_flip`"][1] == "not run"
