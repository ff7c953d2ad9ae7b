"""airbench94's own training, on CPU in float32, on a TFDS copy of CIFAR-10: the peer that kcnn's
``airbench`` recipe is measured against (issue 45; K. Jordan, "94% on CIFAR-10 in 3.29 Seconds on a
Single GPU", 2024, ``pip install airbench`` 0.1.8).

airbench is a peer, not a dependency: it goes into a scratch folder, and this script puts that folder
on ``sys.path``. Its code as shipped needs CUDA and float16; this script changes only where it runs
(CUDA calls become no-ops on the CPU, float16 becomes float32, GPU timing events become wall clocks)
and where it reads CIFAR-10 (``cifar10/train.pt`` and ``test.pt`` in airbench's own format, written
from the TFDS data_dir, so both trainers see the same images). airbench imports torchvision for one
``transforms.Normalize`` and its download, and torchvision's wheels do not load beside CPU-only torch,
so a stand-in module gives that ``Normalize`` (:func:`torchvision_stand_in`). Its network, training
and test-time augmentation run as published.

    .venv/bin/pip install --no-deps --target /tmp/airbench-pkg airbench==0.1.8
    .venv/bin/python scripts/peer_airbench.py --airbench /tmp/airbench-pkg --data-dir ../shared/tfds --runs 2

About 64 minutes a run on 2 CPU cores. Prints, per run, the test accuracy without and with airbench's
TTA (mirror and two translations) and the wall minutes, then the mean over the runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np


class WallClockEvent:
    """``torch.cuda.Event(enable_timing=True)`` on the CPU: ``elapsed_time`` in milliseconds."""

    def __init__(self, *args, **kwargs):
        self.at = None

    def record(self, *args):
        self.at = time.perf_counter()

    def elapsed_time(self, end) -> float:
        return 1e3 * (end.at - self.at)


def run_on_cpu_in_float32():
    """Make airbench's CUDA and float16 calls run on the CPU in float32."""
    import torch

    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.half = lambda self, *args, **kwargs: self.float()
    torch.nn.Module.half = lambda self, *args, **kwargs: self.float()
    torch.cuda.Event = WallClockEvent
    torch.cuda.synchronize = lambda *args, **kwargs: None
    load = torch.load
    torch.load = lambda *args, **kwargs: load(*args, **{**kwargs, "map_location": "cpu"})


def torchvision_stand_in():
    """A ``torchvision`` module holding only what airbench reads of it with ``train.pt`` written:
    ``transforms.Normalize(mean, std)`` on ``(N, C, H, W)`` tensors, ``(x - mean) / std`` per channel."""
    import types

    import torch

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = (torch.as_tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in (mean, std))

        def __call__(self, x):
            return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    transforms = types.ModuleType("torchvision.transforms")
    transforms.Normalize = Normalize
    module = types.ModuleType("torchvision")
    module.transforms = transforms
    sys.modules.update({"torchvision": module, "torchvision.transforms": transforms})


def write_airbench_cifar10(folder: Path, data_dir: str | None) -> None:
    """``folder/cifar10/{train,test}.pt`` as airbench's CifarLoader writes them from torchvision:
    ``{"images": (N, 32, 32, 3) uint8, "labels": (N,) int64, "classes": names}``, from TFDS."""
    import torch

    from kcnn import data

    info = data.load_info("cifar10", data_dir)
    (folder / "cifar10").mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train.pt"), ("test", "test.pt")):
        images, labels = data.load_split_arrays(info, split)
        torch.save({"images": torch.from_numpy(images), "labels": torch.from_numpy(labels),
                    "classes": list(info.class_names)}, folder / "cifar10" / name)


@click.command()
@click.option("--airbench", "airbench_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="The scratch folder airbench 0.1.8 was installed into (pip install --target).")
@click.option("--data-dir", default=None, help="TFDS data_dir [default: $TFDS_DATA_DIR].")
@click.option("--runs", default=1, show_default=True, help="Training runs, each with a fresh network.")
@click.option("--epochs", default=9.9, show_default=True, help="airbench94's epochs (fewer: a smoke test).")
def main(airbench_dir, data_dir, runs, epochs):
    import torch

    sys.path.insert(0, str(Path(airbench_dir).resolve()))
    run_on_cpu_in_float32()
    torchvision_stand_in()
    import airbench

    loader_init = airbench.CifarLoader.__init__  # its test loader is made inside train() with gpu=0: the CPU here
    loader_init.__defaults__ = (*loader_init.__defaults__[:-1], "cpu")

    print(f"airbench from {Path(airbench.__file__).parent}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU float32", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="airbench-data-") as tmp, contextlib.chdir(tmp):
        write_airbench_cifar10(Path(tmp), data_dir)  # airbench reads 'cifar10/' in the working directory
        test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        for run in range(runs):
            loader = airbench.CifarLoader("cifar10", train=True, batch_size=1024, aug=dict(flip=True, translate=2),
                                          altflip=True)
            start = time.perf_counter()
            model = airbench.train94(loader, epochs=epochs, run=run, verbose=True)
            minutes = (time.perf_counter() - start) / 60
            plain, tta = (airbench.evaluate(model, test_loader, tta_level=level) for level in (0, 2))
            results.append((plain, tta, minutes))
            print(f"run {run}: test accuracy {plain:.4f}, with TTA {tta:.4f}, {minutes:.1f} minutes "
                  f"(training and airbench's own evaluations)", flush=True)
    plain, tta, minutes = (np.mean([r[i] for r in results]) for i in range(3))
    print(f"mean over {runs} runs: {plain:.4f}, with TTA {tta:.4f}, {minutes:.1f} minutes a run")


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "torch")
    main()
