"""CLI latency: `kcnn --help` and each subcommand's `--help`; `kcnn models`, `kcnn env`, a dataset
typo (`kcnn train mnsit`); `kcnn predict IMG --model M.keras` against a minimal plain-Keras script
that loads the same file and predicts the same image, and against `import keras` alone (the floor
of any command that loads a model on torch).

Runs each command --runs times, alternating, in fresh processes, and prints median wall
times and the ratio predict/minimal (targets: predict/minimal <= 1.15; --help <= 0.5 s;
models <= 1.5 s; a dataset typo <= 2 s; predict <= 5 s).

    .venv/bin/python scripts/bench_cli.py --model saved_models/mnist.keras
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from PIL import Image

MINIMAL = """
import sys, numpy as np, keras
from PIL import Image
model = keras.saving.load_model(sys.argv[1])
h, w, c = model.inputs[0].shape[1:]
x = np.asarray(Image.open(sys.argv[2]).convert("L" if c == 1 else "RGB").resize((w, h)), np.uint8)
p = model.predict(x.reshape(1, h, w, c), verbose=0)
print(int(p.argmax()), float(p.max()))
"""


def wall(cmd, env, check=True) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


@click.command()
@click.option("--model", default="saved_models/mnist.keras", show_default=True)
@click.option("--runs", default=5, show_default=True)
def main(model, runs):
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "torch"), TF_CPP_MIN_LOG_LEVEL="2")
    kcnn = str(Path(sys.executable).with_name("kcnn"))
    image = Path(tempfile.mkdtemp()) / "digit.png"
    a = np.full((280, 280), 255, np.uint8)
    a[60:220, 130:150] = 0  # a "1"
    Image.fromarray(a).save(image)
    from kcnn.cli import main as cli

    commands = {
        "kcnn --help": [kcnn, "--help"],
        **{f"kcnn {name} --help": [kcnn, name, "--help"] for name in sorted(cli.commands)},
        "kcnn models": [kcnn, "models"],
        "kcnn env": [kcnn, "env"],
        "kcnn train mnsit": [kcnn, "train", "mnsit"],
        "kcnn predict": [kcnn, "predict", str(image), "--model", model],
        "minimal keras script": [sys.executable, "-c", MINIMAL, model, str(image)],
        "import keras": [sys.executable, "-c", "import keras"],
    }
    wall(commands["kcnn predict"], env)  # warm the file cache
    times = {name: [] for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            times[name].append(wall(cmd, env, check=name != "kcnn train mnsit"))  # the typo exits 2
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:22s} median {med[name]:.3f} s  runs {[round(v, 3) for v in t]}")
    print(f"predict / minimal = {med['kcnn predict'] / med['minimal keras script']:.3f}  (target <= 1.15)")
    helps = {name: t for name, t in med.items() if name.endswith("--help")}
    slowest = max(helps, key=helps.get)
    print(f"slowest --help: {slowest} {helps[slowest]:.3f} s  (target <= 0.5 s)")


if __name__ == "__main__":
    main()
