"""kcnn tune: KerasTuner over kcnn training runs on tiny generated data; bad input; resume after Ctrl-C; a chief
and two workers on 127.0.0.1 running every trial exactly once."""

import json
import os
import socket
import subprocess
import sys

import pytest
from helpers import free_port, run_cli

from kcnn.config import SEARCH_SPACE, TrainConfig, check_search_space

SMALL = ["--model", "net24k", "--batch-size", "16", "--val-split", "0.25", "--epochs", "1",
         "--space", "lr=log:1e-3:1e-1", "--space", "augment=choice:none,shift"]


def test_the_default_space_stays_inside_train_configs_ranges():
    assert check_search_space(SEARCH_SPACE) == SEARCH_SPACE


def test_a_search_runs_its_trials_on_the_validation_split_and_writes_the_best_config(fake_data_dir, tmp_path):
    out = tmp_path / "search"
    result = run_cli("tune", "mnist", "--data-dir", fake_data_dir, "--trials", "3", "--output", out, *SMALL)
    assert result.exit_code == 0, result.output
    trials = json.loads((out / "trials.json").read_text())
    assert sorted(t["trial_id"] for t in trials) == ["0", "1", "2"]
    assert all(t["status"] == "COMPLETED" and set(t["settings"]) == {"lr", "augment"} for t in trials)
    assert [t["score"] for t in trials] == sorted((t["score"] for t in trials), reverse=True)  # best first
    for trial in trials:  # the test split is never read: no test figures, no evaluation folder
        metrics = json.loads((out / "trials" / trial["trial_id"] / "metrics.json").read_text())
        assert "test_accuracy" not in metrics and not (out / "trials" / trial["trial_id"] / "evaluation").exists()
    best = TrainConfig.load(out / "best_config.json")
    assert (best.lr, best.augment) == (trials[0]["settings"]["lr"], trials[0]["settings"]["augment"])
    assert best.model == "net24k" and best.epochs == 1
    assert result.output.strip().splitlines()[-1] == (f"best trial {trials[0]['trial_id']}: val_accuracy "
                                                      f"{trials[0]['score']:.4f}; replay it with kcnn train "
                                                      f"--config {out / 'best_config.json'}")


def test_ctrl_c_during_a_search_leaves_a_folder_the_same_command_resumes(fake_data_dir, tmp_path, monkeypatch):
    from kcnn import tune

    out, calls, real_train = tmp_path / "search", [], tune.train

    def interrupted_second_trial(*args, **kwargs):
        calls.append(kwargs["output"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(tune, "train", interrupted_second_trial)
    args = ["tune", "mnist", "--data-dir", fake_data_dir, "--trials", "3", "--output", out, *SMALL]
    assert run_cli(*args).exit_code == 130
    monkeypatch.setattr(tune, "train", real_train)
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    trials = json.loads((out / "trials.json").read_text())
    assert sorted(t["trial_id"] for t in trials) == ["0", "1", "2"] and all(t["status"] == "COMPLETED" for t in trials)


@pytest.mark.parametrize("args, message", [
    (["--space", "nesterov=float:0:1"], "Unknown setting 'nesterov' in the search space"),
    (["--space", "lr=log:1e-3:20"], "the search space of lr leaves its range: lr must be in (0, 10]"),
    (["--space", "lr=between:1:2"], "--space takes NAME=log:LOW:HIGH"),
    (["--trials", "0"], "trials and epochs must be >= 1. Received: trials=0"),
])
def test_bad_search_input_gets_one_line(fake_data_dir, tmp_path, args, message):
    result = run_cli("tune", "mnist", "--data-dir", fake_data_dir, "--output", tmp_path / "s", *args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


def test_a_chief_on_a_busy_port_is_one_line(fake_data_dir, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("tune", "mnist", "--data-dir", fake_data_dir, "--output", tmp_path / "s",
                         "--chief", f"127.0.0.1:{port}", *SMALL)
    assert result.exit_code == 2 and result.output.strip().startswith(f"Error: the chief cannot listen on "
                                                                      f"127.0.0.1:{port}")


@pytest.mark.slow
def test_a_chief_and_two_workers_run_every_trial_exactly_once(fake_data_dir, tmp_path):
    out, address = tmp_path / "search", f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "kcnn", "tune", "mnist", "--data-dir", fake_data_dir, "--trials", "4",
               "--algorithm", "random", "--output", str(out), *SMALL]
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    chief = subprocess.Popen([*command, "--chief", address], env=env, stdout=subprocess.PIPE, text=True,
                             cwd=tmp_path)
    workers = [subprocess.Popen([*command, "--worker", address], env={**env, "KERASTUNER_TUNER_ID": f"tuner{i}"},
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
               for i in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    chief_output = chief.communicate(timeout=600)[0]
    assert chief.returncode == 0 and all(w.returncode == 0 for w in workers)
    ran = [line.split(":")[0] for text in outputs for line in text.splitlines() if line.startswith("trial ")]
    assert sorted(ran) == [f"trial {i}" for i in range(4)]  # each trial once, whichever worker ran it
    trials = json.loads((out / "trials.json").read_text())  # the chief's record of all of them
    assert sorted(t["trial_id"] for t in trials) == ["0", "1", "2", "3"]
    assert all(t["status"] == "COMPLETED" for t in trials) and "best trial" in chief_output
