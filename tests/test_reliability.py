"""Interrupted training: SIGKILL and Ctrl-C mid-run, then the same command again."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kcnn.runs import read_history


def start_training(fake_data_dir, out, epochs):
    # batch size 1 makes each epoch ~72 steps, long enough to be interrupted inside one.
    cmd = [sys.executable, "-m", "kcnn", "train", "mnist", "--model", "net24k", "--epochs", str(epochs),
           "--batch-size", "1", "--val-split", "0.25", "--data-dir", fake_data_dir, "--output", str(out)]
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="2")
    # As from a terminal: SIGINT not ignored, even when the test run itself is a background job.
    return cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


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


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_resumes_and_replays_the_uninterrupted_run(fake_data_dir, tmp_path):
    straight = tmp_path / "straight"
    _, proc = start_training(fake_data_dir, straight, epochs=5)
    assert proc.wait(timeout=600) == 0, proc.stdout.read()[-3000:]
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
    history = read_history(out / "history.csv")
    assert [r["epoch"] for r in history] == [0, 1, 2, 3, 4]
    assert not (out / "backup").exists()
    # Same optimizer state, schedule position and random streams (order, augmentation,
    # dropout): the resumed epochs are the uninterrupted run's, number for number.
    expected = read_history(straight / "history.csv")
    assert len(expected) == len(history)
    for row, want in zip(history, expected):
        assert row.pop("epoch_seconds") > 0 and want.pop("epoch_seconds") > 0  # wall time: not replayed
        assert row == pytest.approx(want, rel=1e-4, abs=1e-6), (row, want)
    metrics = json.loads((out / "metrics.json").read_text())
    want = json.loads((straight / "metrics.json").read_text())
    assert metrics["epochs"] == 5
    assert 0 < metrics["peak_rss_gib"] < 3  # issue "Speed": kcnn train stays under 3 GiB
    assert metrics["test_accuracy"] == want["test_accuracy"]
    assert metrics["test_loss"] == pytest.approx(want["test_loss"], rel=1e-4)


@pytest.mark.slow
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


@pytest.mark.slow
def test_failed_checkpoint_write_keeps_the_previous_model(fake_data_dir, tmp_path, monkeypatch):
    import errno

    import keras
    import numpy as np

    from kcnn.training import train

    out = tmp_path / "run"
    kwargs = dict(model="net24k", batch_size=16, val_split=0.25, data_dir=fake_data_dir, output=str(out),
                  verbose=0)
    train("mnist", epochs=1, **kwargs)
    good = (out / "model.keras").read_bytes()
    (out / "metrics.json").unlink()
    (out / "config.json").unlink()  # let a 2-epoch run reuse the folder

    real_save = keras.Model.save

    def full_disk(self, filepath, *args, **kw):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half")
        raise OSError(errno.ENOSPC, "No space left on device", str(filepath))

    monkeypatch.setattr(keras.Model, "save", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        train("mnist", epochs=2, **kwargs)
    monkeypatch.setattr(keras.Model, "save", real_save)
    assert (out / "model.keras").read_bytes() == good
    model = keras.saving.load_model(out / "model.keras")
    assert np.all(np.isfinite(model.predict(np.zeros((1, 28, 28, 1), np.uint8), verbose=0)))


@pytest.mark.slow
def test_backup_corrupted_while_saving_falls_back_to_the_previous_one(fake_data_dir, tmp_path):
    import keras

    from kcnn.training import train

    class InterruptAt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    out = tmp_path / "run"
    kwargs = dict(model="net24k", epochs=3, batch_size=16, val_split=0.25, data_dir=fake_data_dir,
                  output=str(out), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train("mnist", callbacks=[InterruptAt()], **kwargs)
    backup = out / "backup"
    previous = sorted(p.name for p in backup.iterdir())
    assert len(previous) == 4  # latest and previous weights and metadata
    # A crash while writing epoch 2's weights: the weights file is garbage, metadata still says 1.
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n garbage")
    meta = [p for p in backup.iterdir() if p.name.startswith("training_metadata") and p.name != "training_metadata.json"]
    (backup / "training_metadata.json").write_text(meta[0].read_text())
    result = train("mnist", **kwargs)
    assert result.resumed_from_epoch == 1
    assert [r["epoch"] for r in result.history] == [0, 1, 2]


def test_ctrl_c_at_an_epoch_boundary_stops_after_that_epoch_is_saved(fake_data_dir, tmp_path):
    import keras

    from kcnn.training import train

    class CtrlCAtEpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                os.kill(os.getpid(), signal.SIGINT)  # while the epoch's files are being written

    out = tmp_path / "run"
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(KeyboardInterrupt):
            train("mnist", model="net24k", epochs=3, batch_size=16, val_split=0.25, data_dir=fake_data_dir,
                  output=str(out), verbose=0, callbacks=[CtrlCAtEpochEnd()])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
    finally:
        signal.signal(signal.SIGINT, before)
    assert backed_up_epochs(out) == 1
    assert [r["epoch"] for r in read_history(out / "history.csv")] == [0]
