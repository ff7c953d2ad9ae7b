"""Interrupted training: SIGKILL and Ctrl-C mid-run, then the same command again."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kcnn.training import read_history


def start_training(fake_data_dir, out, epochs):
    # batch size 1 makes each epoch ~72 steps, long enough to be interrupted inside one.
    cmd = [sys.executable, "-m", "kcnn", "train", "mnist", "--model", "net24k", "--epochs", str(epochs),
           "--batch-size", "1", "--val-split", "0.25", "--data-dir", fake_data_dir, "--output", str(out)]
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="2")
    return cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def backed_up_epochs(out):
    try:
        return json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def wait_for_epochs(proc, out, count, timeout=240):
    """Wait until BackupAndRestore has saved ``count`` completed epochs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training ended early ({proc.returncode}): {proc.stdout.read()[-2000:]}")
        if backed_up_epochs(out) >= count:
            return
        time.sleep(0.05)
    pytest.fail("training did not reach the wanted epoch in time")


def test_sigkill_mid_epoch_then_same_command_resumes_without_losing_or_repeating_epochs(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    cmd, proc = start_training(fake_data_dir, out, epochs=5)
    wait_for_epochs(proc, out, 2)
    time.sleep(0.3)  # inside epoch 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = backed_up_epochs(out)
    assert done >= 2
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="2"))
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"resuming after epoch {done}" in rerun.stdout
    assert [r["epoch"] for r in read_history(out / "history.csv")] == [0, 1, 2, 3, 4]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 5 and 0 <= metrics["test_accuracy"] <= 1
    assert not (out / "backup").exists()


def test_ctrl_c_exits_130_and_says_how_to_resume(fake_data_dir, tmp_path):
    out = tmp_path / "run"
    _, proc = start_training(fake_data_dir, out, epochs=50)
    wait_for_epochs(proc, out, 1)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-2000:]
    assert f"The last completed epoch is saved in {out}; re-run the same command to resume." in output
    assert "Traceback" not in output
    assert backed_up_epochs(out) >= 1
