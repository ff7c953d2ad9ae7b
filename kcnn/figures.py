"""Figures, headless: matplotlib ``Figure`` objects on the Agg canvas (no pyplot, no display).

Every function writes one file (format from its suffix: png, svg or pdf) to a
temporary name and renames it into place, and returns the path.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from kcnn import files
from kcnn.errors import UsageError

FORMATS = ("png", "svg", "pdf")
#: Confusion matrices name every class and print every cell up to this many classes.
NAMED_CLASSES = 20
#: Smallest figure, inches (width, height): room for a title and a colourbar beside a small layer.
MIN_FIGURE = (6.0, 3.0)


def _figure(width: float, height: float):
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path) -> Path:
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise UsageError(f"figure format must be one of {', '.join(FORMATS)}. Received: {path.name}")
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=110)
    return path


def _show_image(ax, image: np.ndarray):
    """Draw a ``(H, W, 1|3)`` image (uint8 0..255 or float 0..1) without axes."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_history(rows: list[dict], path, title: str = "Training curves") -> Path:
    """Loss and accuracy (train vs validation) per epoch, and the learning rate on a second panel."""
    fig = _figure(13, 3.8)
    axes = fig.subplots(1, 3)
    epochs = [r["epoch"] + 1 for r in rows]
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [r[key] for r in rows], "o-", label=f"train {label}")
        if rows and f"val_{key}" in rows[0]:
            ax.plot(epochs, [r[f"val_{key}"] for r in rows], "s-", label=f"validation {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if rows and "learning_rate" in rows[0]:
        axes[2].plot(epochs, [r["learning_rate"] for r in rows], "o-", color="tab:green")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("learning rate (end of epoch)")
    axes[2].grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_lr_find(lrs, smoothed, suggested: float, recipe_lr: float, path, title: str) -> Path:
    """The range test's smoothed training loss against the learning rate (log axis), the suggested
    rate and the recipe's rate marked."""
    fig = _figure(7, 4.2)
    ax = fig.subplots()
    ax.semilogx(lrs, smoothed, "-", color="tab:blue", label="training loss (smoothed)")
    ax.axvline(suggested, color="tab:red", linestyle="--", label=f"suggested {suggested:.1e} (steepest descent)")
    ax.axvline(recipe_lr, color="tab:gray", linestyle=":", label=f"the recipe's lr {recipe_lr:.1e}")
    finite = [v for v in smoothed if np.isfinite(v)]
    if finite:  # the divergence at the end would squash the interesting part
        ax.set_ylim(min(finite) - 0.05 * abs(min(finite)), min(max(finite), 2.5 * finite[0]))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_confusion_matrix(cm: np.ndarray, class_names, path, title: str = "Confusion matrix") -> Path:
    """Counts and row-normalised confusion matrices side by side, labelled by class name.

    Up to :data:`NAMED_CLASSES` classes every cell shows its value and every class its name; with
    more (CIFAR-100), the figure keeps a fixed size, cells are colour only, and ticks mark every
    tenth class index (names and the most confused pairs are in evaluation.json).
    """
    n = len(class_names)
    named = n <= NAMED_CLASSES
    size = max(5.0, 0.45 * n + 2) if named else 9.0
    fig = _figure(2 * size + 1, size)
    axes = fig.subplots(1, 2)
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    for ax, matrix, label, fmt in ((axes[0], cm, "count", "d"), (axes[1], normalised, "fraction of true class", ".2f")):
        im = ax.imshow(matrix, cmap="Blues")
        fig.colorbar(im, ax=ax, shrink=0.8, label=label)
        if named:
            ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
            ax.set_yticks(range(n), class_names, fontsize=8)
            hi = matrix.max() if matrix.size else 0
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, format(matrix[i, j], fmt), ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] > hi / 2 else "black")
        else:
            ax.set_xticks(range(0, n, 10))
            ax.set_yticks(range(0, n, 10))
        ax.set_xlabel("predicted" + ("" if named else " (class index)"))
        ax.set_ylabel("true" + ("" if named else " (class index)"))
    axes[0].set_title("counts")
    axes[1].set_title("row-normalised")
    fig.suptitle(title)
    return _save(fig, path)


def plot_image_grid(images, labels, probs, class_names, path, title: str = "", cols: int = 5) -> Path:
    """Images with true and predicted labels and the predicted probability (red when wrong); with
    ``probs`` None, with their labels only (a training batch)."""
    count = len(images)
    cols = min(cols, max(count, 1))
    rows = max(1, math.ceil(count / cols))
    fig = _figure(2.3 * cols, 2.5 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, label, p in zip(axes, images, labels, [None] * count if probs is None else probs):
        _show_image(ax, image)
        ax.axis("on")
        if p is None:
            ax.set_title(class_names[int(label)], fontsize=8)
            continue
        pred = int(np.argmax(p))
        ax.set_title(f"true {class_names[int(label)]}\npred {class_names[pred]} {p[pred]:.2f}", fontsize=8,
                     color="tab:green" if pred == int(label) else "tab:red")
    if count == 0:
        axes[0].text(0.5, 0.5, "none", ha="center", va="center")
    fig.suptitle(title)
    return _save(fig, path)


def plot_filters(kernel: np.ndarray, path, title: str, max_filters: int = 64, max_inputs: int = 16,
                 gray_input: bool = False) -> Path:
    """Learned kernels of a conv layer, ``kernel`` shaped ``(kh, kw, in, out)``.

    A first layer (one or three input channels): each filter drawn as one patch, min-max scaled per
    filter: in colour on RGB input, in gray on gray input. ``gray_input``: the three input channels
    are copies of one gray image (a gray model that repeats its input into RGB), so each filter is
    drawn in gray as the sum of its three slices, which is what it computes on that input. Otherwise:
    one patch per (filter, input channel), tiled in one mosaic (rows: filters, columns: input
    channels) on a symmetric colormap (±max|w|) with a colourbar; at most 32 filters and
    ``max_inputs`` input channels are shown. Figures are at least :data:`MIN_FIGURE` inches, so
    that the title and colourbar of a small layer have room.
    """
    kh, kw, cin, cout = kernel.shape
    shown = min(cout, max_filters)
    if gray_input and cin == 3:
        kernel, cin = kernel.sum(axis=2, keepdims=True), 1
        title += ", summed over the 3 copies of the gray input"
    if cin in (1, 3):
        cols = min(8, shown)
        rows = math.ceil(shown / cols)
        fig = _figure(max(MIN_FIGURE[0], 1.2 * cols + 0.5), max(MIN_FIGURE[1], 1.2 * rows + 0.8))
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        for i, ax in enumerate(axes):
            ax.axis("off")
            if i < shown:
                w = kernel[..., i]
                w = (w - w.min()) / (np.ptp(w) or 1.0)
                ax.imshow(w[..., 0] if cin == 1 else w, cmap="gray" if cin == 1 else None, vmin=0, vmax=1,
                          interpolation="nearest")
                ax.set_title(str(i), fontsize=7)
    else:
        inputs = min(cin, max_inputs)
        shown = min(shown, 32)
        # One mosaic on one axes (a NaN gutter between kernels) rather than one axes
        # per kernel: the same picture, drawn in a fraction of the time.
        mosaic = np.full((shown * (kh + 1) - 1, inputs * (kw + 1) - 1), np.nan)
        for r in range(shown):
            for c in range(inputs):
                mosaic[r * (kh + 1):r * (kh + 1) + kh, c * (kw + 1):c * (kw + 1) + kw] = kernel[:, :, c, r]
        fig = _figure(max(MIN_FIGURE[0], 0.5 * inputs + 1.5), max(MIN_FIGURE[1], 0.5 * shown + 1.0))
        ax = fig.subplots()
        limit = float(np.abs(kernel).max()) or 1.0
        cmap = colormaps["RdBu_r"].with_extremes(bad="white")
        im = ax.imshow(mosaic, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_xticks([c * (kw + 1) + (kw - 1) / 2 for c in range(inputs)], range(inputs), fontsize=6)
        ax.set_yticks([r * (kh + 1) + (kh - 1) / 2 for r in range(shown)], range(shown), fontsize=6)
        ax.tick_params(length=0, top=True, labeltop=True, bottom=False, labelbottom=False)
        ax.set_xlabel("input channel")
        ax.xaxis.set_label_position("top")
        ax.set_ylabel("filter")
        for side in ax.spines.values():
            side.set_visible(False)
        fig.colorbar(im, ax=ax, shrink=0.6, label="weight")
        title += f" (filters 0-{shown - 1} of {cout}, inputs 0-{inputs - 1} of {cin})"
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_activations(seen: np.ndarray, maps: np.ndarray, path, title: str,
                     seen_title: str = "model input\n(after its own preprocessing)") -> Path:
    """What the layer takes, ``seen`` (its first channels: the image after the model's own
    preprocessing for a first conv, the pooled feature maps before a later one), titled
    ``seen_title``, beside every channel of its feature map ``maps`` ``(H, W, channels)``."""
    channels = maps.shape[-1]
    cols = min(16, channels)
    rows = math.ceil(channels / cols)
    fig = _figure(1.0 * cols + 3.2, max(3.0, 1.0 * rows + 0.8))
    grid = fig.add_gridspec(rows, cols + 3)
    ax = fig.add_subplot(grid[:, :3])
    image = seen - seen.min()
    image = image / (image.max() or 1.0)
    _show_image(ax, image if image.shape[-1] in (1, 3) else image[..., :1])
    ax.set_title(seen_title, fontsize=8)
    for i in range(channels):
        sub = fig.add_subplot(grid[i // cols, 3 + i % cols])
        sub.imshow(maps[..., i], cmap="viridis")
        sub.set_xticks([])
        sub.set_yticks([])
        sub.set_title(str(i), fontsize=6)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def gradcam_overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The Grad-CAM ``heatmap`` ``(H, W)`` in [0, 1], coloured by matplotlib's ``jet``, over ``image``
    ``(H, W, C)`` uint8 (gray or RGB): ``(H, W, 3)`` float in [0, 1]."""
    base = image.astype(np.float64) / 255.0
    if base.shape[-1] == 1:
        base = np.repeat(base, 3, axis=-1)
    return np.clip(0.55 * base + 0.45 * colormaps["jet"](heatmap)[..., :3], 0, 1)


def plot_gradcam(image: np.ndarray, heatmap: np.ndarray, path, title: str) -> Path:
    """The image, the Grad-CAM heatmap (0..1), and the heatmap overlaid on the image."""
    fig = _figure(10, 3.8)
    axes = fig.subplots(1, 3)
    _show_image(axes[0], image)
    axes[0].set_title("image")
    im = axes[1].imshow(heatmap, cmap="jet", vmin=0, vmax=1)
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    axes[1].set_title("Grad-CAM")
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    _show_image(axes[2], gradcam_overlay(image, heatmap))
    axes[2].set_title("overlay")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
