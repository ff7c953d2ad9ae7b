"""Training speed: kcnn's real path against a plain PyTorch loop, on the same data, alternating.

kcnn path: the TFDS pipeline with the default recipe's augmentation and batch size (``kcnn train
DATASET --model MODEL``) -> ``model.fit`` with kcnn's own callbacks (CSV log, best checkpoint,
backup, NaN guard) and its fused batch norm. Reference: the same architecture in ``torch.nn``
(Conv2d/BatchNorm2d), the same batch size, the same augmentation done in torch on in-memory uint8
tensors. Both use Adam at a constant learning rate (``torch.optim.Adam(foreach=True)``), except under
the ``airbench`` recipe (the whitened nets), where both train as that recipe does: kcnn through
``kcnn.training.build_model`` and the recipe's callbacks (triangular schedule, lookahead), the
reference as airbench94's own loop (Nesterov SGD with the batch-norm biases in a parameter group at
64x the rate, ``LambdaLR``, label smoothing, its lookahead every 5 steps).
Both run ``--steps`` steps per segment after a warm-up segment, alternating for
``--rounds`` rounds; the script prints img/s, the ratio kcnn/reference, the input
pipeline's own rate (``--pipeline``) and the peak RSS of this process.

    TFDS_DATA_DIR=../shared/tfds .venv/bin/python scripts/bench_train.py
    TFDS_DATA_DIR=../shared/tfds .venv/bin/python scripts/bench_train.py --case cifar10:cnn3 --steps 50 --rounds 2
    TFDS_DATA_DIR=../shared/tfds .venv/bin/python scripts/bench_train.py --backend jax --no-levers

``--backend`` runs kcnn's path under another Keras backend (the fused batch norm and direct forward
are torch's; there kcnn runs stock Keras) against the same plain PyTorch reference.

Targets (docs/performance.md): ratio >= 1.0 for cnn3 on CIFAR-10, >= 0.90 for net24k on MNIST and for
whitened8 on CIFAR-10 (issue 45, against airbench94's network written in torch.nn as its code has it),
pipeline >= 5x the training rate.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path

import click
import numpy as np

import kcnn  # noqa: F401  (sets KERAS_BACKEND=torch unless chosen)
from kcnn.device import select_backend
from kcnn.fused import direct_forward, fused_batch_norm
from kcnn.runs import RunFolder

LR = 2e-3  # Adam learning rate (constant in both paths)


def torch_model(name: str, num_classes: int = 10):
    """The registered architecture written in plain torch.nn (NCHW inside)."""
    import torch
    from torch import nn

    class CNN3(nn.Module):
        def __init__(self):
            super().__init__()
            blocks = []
            for cin, cout, k in [(3, 32, 5), (32, 64, 3), (64, 128, 3)]:
                blocks += [nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
                           nn.ReLU(), nn.MaxPool2d(2)]
            self.features = nn.Sequential(*blocks)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(2048, 256), nn.ReLU(), nn.Dropout(0.5),
                                      nn.Linear(256, num_classes))

        def forward(self, x):  # (N, H, W, C) uint8
            x = x.permute(0, 3, 1, 2).float() / 255.0
            if x.shape[-1] != 32:
                x = nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            return self.head(self.features(x))

    class Net24k(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3), nn.ReLU(),
                                      nn.Conv2d(16, 24, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                      nn.Linear(384, 50), nn.ReLU(), nn.Linear(50, num_classes))

        def forward(self, x):
            x = (x.permute(0, 3, 1, 2).float() / 255.0 - 0.1307) / 0.3081
            return self.body(x)

    class Whitened8(nn.Module):
        """airbench94's network as its own code writes it (widths 64/256/256; 64/128/128 narrow)."""

        def __init__(self, widths):
            super().__init__()
            layers, cin = [nn.Conv2d(3, 24, 2), nn.GELU()], 24
            for width in widths:
                layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.MaxPool2d(2),
                           nn.BatchNorm2d(width, eps=1e-12, momentum=0.6), nn.GELU(),
                           nn.Conv2d(width, width, 3, padding=1, bias=False),
                           nn.BatchNorm2d(width, eps=1e-12, momentum=0.6), nn.GELU()]
                cin = width
            layers[0].requires_grad_(False)  # the frozen whitening
            for layer in layers:
                if isinstance(layer, nn.BatchNorm2d):
                    layer.weight.requires_grad_(False)
            self.body = nn.Sequential(*layers, nn.MaxPool2d(3), nn.Flatten(), nn.Linear(cin, num_classes, bias=False))

        def forward(self, x):
            return self.body(x.permute(0, 3, 1, 2).float() / 255.0) / 9

    return {"cnn3": CNN3, "net24k": Net24k, "whitened8": lambda: Whitened8((64, 256, 256)),
            "whitened8_narrow": lambda: Whitened8((64, 128, 128))}[name]()


def _shift(x, most: int, mode: str, gen):
    """Each image of a float ``(N, C, H, W)`` batch moved by whole pixels in [-most, most], the border
    filled by ``mode`` (``"constant"``: zeros, ``"reflect"``: mirrored)."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    padded = F.pad(x, (most, most, most, most), mode=mode)
    dy = torch.randint(0, 2 * most + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * most + 1, (n,), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def _flip(x, gen):
    import torch

    flip = torch.rand(len(x), generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def torch_augment(x, policy: str, gen):
    """kcnn's policies (``kcnn.data.make_augmentation``) in torch on a uint8 (N, H, W, C) batch."""
    import torch
    import torch.nn.functional as F

    n, h, w, c = x.shape
    if policy == "none":
        return x
    x = x.permute(0, 3, 1, 2).float()
    if policy == "crop_flip":
        out = _flip(_shift(x, 4, "constant", gen), gen)
    elif policy == "flip_shift":
        out = _shift(_flip(x, gen), round(h * 2 / 32), "reflect", gen)
    elif policy == "altflip_shift":  # TorchLoop.run mirrored the batch already
        out = _shift(x, round(h * 2 / 32), "reflect", gen)
    elif policy == "shift":
        out = _shift(x, round(h * 0.08), "constant", gen)
    elif policy == "affine":
        angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
        scale = 1 + (torch.rand(n, generator=gen) * 2 - 1) * 0.1
        shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.2  # 10% of the size, in [-1, 1] units
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, (n, c, h, w), align_corners=False)
        out = F.grid_sample(x, grid, align_corners=False)
    else:
        raise ValueError(f"no torch version of augmentation policy {policy!r}")
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class TorchLoop:
    """Plain PyTorch training on in-memory uint8 arrays; under the airbench recipe (``config``), as
    airbench94's own loop trains (its optimizer, schedule, loss, lookahead and alternating flip)."""

    def __init__(self, name, images, labels, config, seed=0):
        import torch

        torch.manual_seed(seed)
        self.model, self.batch, self.policy = torch_model(name), config.batch_size, config.augment
        self.airbench = config.recipe == "airbench"
        if self.airbench:  # airbench94's param groups: BN biases at bn_bias_lr x the rate, decay unchanged
            biases = [m.bias for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            others = [p for p in self.model.parameters() if p.requires_grad and all(p is not b for b in biases)]
            decay = config.weight_decay * (1 - config.momentum)  # kcnn's decoupled decay as torch's L2 term
            self.opt = torch.optim.SGD([dict(params=biases, lr=config.lr * config.bn_bias_lr,
                                             weight_decay=decay / config.bn_bias_lr),
                                        dict(params=others, lr=config.lr, weight_decay=decay)],
                                       momentum=config.momentum, nesterov=True, foreach=True)
            self.slow = {k: v.clone() for k, v in self.model.state_dict().items()}
        else:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, foreach=True)
        self.loss = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda step: 1.0)
        self.images, self.labels = torch.from_numpy(images), torch.from_numpy(labels)
        self.gen = torch.Generator().manual_seed(seed)
        self.first = torch.rand(len(images), generator=self.gen) < 0.5  # altflip_shift's first orientations
        self.order, self.pos, self.passes, self.steps = torch.randperm(len(images), generator=self.gen), 0, 0, 0

    def run(self, steps: int) -> float:
        import torch

        self.model.train()
        start = time.perf_counter()
        for _ in range(steps):
            if self.pos + self.batch > len(self.order):
                self.order, self.pos = torch.randperm(len(self.images), generator=self.gen), 0
                self.passes += 1
            idx = self.order[self.pos:self.pos + self.batch]
            self.pos += self.batch
            x = self.images[idx]
            if self.policy == "altflip_shift":
                x = torch.where((self.first[idx] ^ bool(self.passes % 2))[:, None, None, None], x.flip(2), x)
            x = torch_augment(x, self.policy, self.gen)
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss(self.model(x), self.labels[idx])
            loss.backward()
            self.opt.step()
            self.schedule.step()
            self.steps += 1
            if self.airbench and self.steps % 5 == 0:  # airbench94's LookaheadState.update
                for slow, value in zip(self.slow.values(), self.model.state_dict().values()):
                    if value.dtype == torch.float32:
                        slow.lerp_(value, 1 - 0.95**5 * 0.5**3)  # a mid-run decay
                        value.copy_(slow)
        return steps * self.batch / (time.perf_counter() - start)


class KcnnLoop:
    """kcnn's path: TFDS pipeline with default augmentation, model.fit with kcnn's callbacks and, as
    ``kcnn train`` does, torch's fused batch norm and the direct forward (``fused=False``: Keras' stock
    BatchNormalization; ``direct=False``: Keras' ``Layer.__call__`` for every layer)."""

    def __init__(self, dataset, name, data_dir, seed=0, fused=True, direct=True):
        import keras

        from kcnn import data, models, training
        from kcnn.callbacks import make_callbacks
        from kcnn.config import resolve

        keras.utils.set_random_seed(seed)
        info = data.load_info(dataset, data_dir)
        # what `kcnn train DATASET --model NAME` uses (Adam at a constant rate, but for the airbench recipe)
        self.config = resolve(dataset, info.image_shape, model=name)
        if self.config.recipe != "airbench":
            self.config = dataclasses.replace(self.config, optimizer="adam", lr=LR, lr_schedule="constant",
                                              weight_decay=0.0, label_smoothing=0.0)
        self.batch, self.policy = self.config.batch_size, self.config.augment
        self.ds = data.load_datasets(info, batch_size=self.batch, val_split=self.config.val_split,
                                     augment=self.policy, seed=seed, one_hot=self.config.one_hot)
        self.train_iter = self.ds.train.repeat()
        self.model = training.build_model(self.config, self.ds.info, self.ds)
        self.extra = training.recipe_callbacks(self.config, self.ds)
        self.make_callbacks, self.epoch, self.fused, self.direct = make_callbacks, 0, fused, direct
        self.tmp = Path(tempfile.mkdtemp(prefix="kcnn-bench-"))

    def run(self, steps: int) -> float:
        run_dir = self.tmp / f"segment{self.epoch}"
        run_dir.mkdir()
        callbacks = self.make_callbacks(RunFolder(run_dir), "accuracy", None, datasets=self.ds, extra=self.extra).all
        start = time.perf_counter()
        with fused_batch_norm(self.model, enabled=self.fused), direct_forward(self.model, enabled=self.direct):
            self.model.fit(self.train_iter, epochs=self.epoch + 1, initial_epoch=self.epoch, steps_per_epoch=steps,
                           callbacks=callbacks, verbose=0, shuffle=False)
        self.epoch += 1
        return steps * self.batch / (time.perf_counter() - start)

    def pipeline_rate(self, steps: int) -> float:
        it = iter(self.train_iter)
        next(it)
        start = time.perf_counter()
        for _ in range(steps):
            next(it)
        return steps * self.batch / (time.perf_counter() - start)


@click.command()
@click.option("--case", "cases", multiple=True, default=["cifar10:cnn3", "mnist:net24k"], show_default=True,
              help="DATASET:MODEL to measure (repeatable).")
@click.option("--steps", default=100, show_default=True, help="Steps per timed segment.")
@click.option("--rounds", default=3, show_default=True, help="Alternating rounds (kcnn, reference) per case.")
@click.option("--data-dir", default=None, help="TFDS data_dir [default: $TFDS_DATA_DIR].")
@click.option("--pipeline/--no-pipeline", default=True, show_default=True, help="Also time the input pipeline alone.")
@click.option("--levers/--no-levers", default=True, show_default=True,
              help="Also time kcnn without the direct forward, and with stock Keras (each lever on its own).")
@click.option("--backend", type=click.Choice(["torch", "jax", "tensorflow"]), default=None,
              callback=lambda ctx, param, value: select_backend(value),
              help="Keras backend of kcnn's path [default: $KERAS_BACKEND, else torch].")
@click.option("--tf-threads", default=0, show_default=True,
              help="TensorFlow's intra- and inter-op threads for the input pipeline (0: TensorFlow's choice).")
def main(cases, steps, rounds, data_dir, pipeline, levers, backend, tf_threads):
    import keras
    import torch

    levers = levers and backend == "torch"  # the levers are the torch backend's

    if tf_threads:
        from kcnn.quiet import import_tensorflow

        tf = import_tensorflow()
        tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(tf_threads)

    from kcnn.data import load_split_arrays
    from kcnn.training import peak_rss_gib

    print(f"keras {keras.__version__} ({keras.backend.backend()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, TensorFlow threads {tf_threads or 'default'}, "
          f"{steps} steps x {rounds} rounds")
    rows = []
    for case in cases:
        dataset, name = case.split(":")
        kc = KcnnLoop(dataset, name, data_dir)
        images, labels = load_split_arrays(kc.ds.info, f"train[:{kc.ds.num_train}]")
        ref = TorchLoop(name, images, labels, kc.config)
        loops = [("kcnn", kc), ("torch", ref)]
        if levers:  # without the direct forward (fused batch norm only), and stock Keras
            loops += [("kcnn, fused BN only", KcnnLoop(dataset, name, data_dir, direct=False)),
                      ("kcnn, stock Keras", KcnnLoop(dataset, name, data_dir, fused=False, direct=False))]
        for _, loop in loops:
            loop.run(max(10, steps // 5))  # warm-up (also fills the tf.data cache)
        rates = {label: [] for label, _ in loops}
        for _ in range(rounds):  # alternating, so that the host's swings hit every loop alike
            for label, loop in loops:
                rates[label].append(loop.run(steps))
        k, r = float(np.median(rates["kcnn"])), float(np.median(rates["torch"]))
        pairs = [round(a / b, 2) for a, b in zip(rates["kcnn"], rates["torch"])]
        p = kc.pipeline_rate(steps * 2) if pipeline else float("nan")
        bn_only, stock = (float(np.median(rates[label])) / r if label in rates else float("nan")
                          for label in ("kcnn, fused BN only", "kcnn, stock Keras"))
        rows.append((case, k, r, k / r, pairs, bn_only, stock, p, p / k))
        print(f"{case} (batch {kc.batch}, {kc.policy}): " + ", ".join(f"{label} {np.median(v):.0f} img/s {[round(x) for x in v]}"
                                      for label, v in rates.items()) + f", pipeline {p:.0f} img/s", flush=True)
    peak = peak_rss_gib()
    print("\n| case | kcnn img/s | plain torch img/s | kcnn/torch (pairwise) | fused BN only/torch "
          "| stock Keras/torch | pipeline img/s | pipeline/kcnn |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for case, k, r, ratio, pairs, bn_only, stock, p, pr in rows:
        print(f"| {case} | {k:.0f} | {r:.0f} | {ratio:.2f} ({min(pairs)}-{max(pairs)}) | {bn_only:.2f} | {stock:.2f} "
              f"| {p:.0f} | {pr:.1f}x |")
    print(f"peak RSS of this process: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
