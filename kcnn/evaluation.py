"""Evaluation: accuracy, loss, top-k, confusion matrix, per-class precision/recall/F1, figures.

The metric functions are plain NumPy on ``(N,)`` int labels and ``(N, classes)``
probabilities; :func:`evaluate` runs a model over a TFDS split and writes
``evaluation.json`` and figures (the API of ``kcnn evaluate``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kcnn import data, figures, files
from kcnn.config import TTA
from kcnn.errors import UsageError
from kcnn.prediction import load_classifier

log = logging.getLogger(__name__)

# Test-time augmentation (TTA, from kcnn.config): "none", "flip" (average each image's probabilities
# with its mirror's), or "flip_shift" (with the mirror, each also shifted by TTA_SHIFTS: 10 views,
# airbench's multi-crop idea).

#: flip_shift test-time views: (down, right) shifts in pixels, the edges filled as Keras' "reflect" does.
TTA_SHIFTS = ((0, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))

#: Pairs of classes that evaluation.json and the summary list as most often confused.
MOST_CONFUSED = 10
#: Above this many classes the summary lists only the classes of lowest F1 (CIFAR-100: 100 lines otherwise).
SUMMARY_CLASSES = 20
#: Probabilities are clipped here before the log, as Keras' cross-entropy does.
EPSILON = 1e-7


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``(classes, classes)`` int64 counts; row = true class, column = predicted class."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(
        num_classes, num_classes)


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 (0 where undefined) and support per class, from a confusion matrix."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def top_k_accuracy(probs: np.ndarray, y_true, k: int) -> float:
    """Fraction of rows whose true class is among the ``k`` most probable."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == np.asarray(y_true)[:, None], axis=1)))


def cross_entropy(probs: np.ndarray, y_true) -> float:
    """Mean negative log-probability of the true class (natural log)."""
    p = np.clip(probs[np.arange(len(probs)), np.asarray(y_true)], EPSILON, 1.0)
    return float(-np.mean(np.log(p)))


def most_confused_pairs(cm: np.ndarray, class_names, count: int = MOST_CONFUSED) -> list[dict]:
    """The ``count`` largest off-diagonal cells of a confusion matrix, largest first (ties: row, then
    column order): ``[{"true": name, "predicted": name, "count": n}, ...]``, only cells above 0."""
    cm = np.asarray(cm)
    off = cm * (1 - np.eye(len(cm), dtype=cm.dtype))
    order = np.argsort(-off, axis=None, kind="stable")[:count]
    return [{"true": class_names[i], "predicted": class_names[j], "count": int(off[i, j])}
            for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j] > 0]


def summarize(probs: np.ndarray, y_true, class_names) -> dict:
    """All metrics of one prediction set, JSON-ready."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    per_class = per_class_metrics(cm)
    result = {
        "examples": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)),
        "loss": cross_entropy(probs, y_true),
        "per_class": {name: {key: (int(per_class[key][i]) if key == "support" else float(per_class[key][i]))
                             for key in ("precision", "recall", "f1", "support")}
                      for i, name in enumerate(class_names)},
        "confusion_matrix": cm.tolist(),
        "most_confused": most_confused_pairs(cm, list(class_names)),
        "class_names": list(class_names),
    }
    if len(class_names) > 5:
        result["top5_accuracy"] = top_k_accuracy(probs, y_true, 5)
    return result


def shift_images(images: np.ndarray, down: int, right: int) -> np.ndarray:
    """Images moved ``down`` rows and ``right`` columns (negative: up, left), edges mirrored.

    The uncovered border is the image mirrored about its edge, the edge pixel included,
    ``(d c b a | a b c d | d c b a)``: as Keras' ``RandomTranslation(fill_mode="reflect")`` fills it
    in training (NumPy's ``symmetric`` padding).

    Args:
        images: ``(N, H, W, C)``, any dtype.
        down, right: shifts in pixels, each at most the image's height or width.

    Returns:
        ``(N, H, W, C)``, the dtype of ``images``.
    """
    pad = max(abs(down), abs(right))
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    height, width = images.shape[1:3]
    return np.ascontiguousarray(padded[:, pad - down:pad - down + height, pad - right:pad - right + width])


def tta_views(tta: str) -> list[tuple[bool, int, int]]:
    """The views ``tta`` averages, each as ``(mirrored, down, right)``: ``"none"`` the image alone,
    ``"flip"`` it and its mirror, ``"flip_shift"`` each of those shifted by :data:`TTA_SHIFTS` (10).

    Raises:
        UsageError: unknown ``tta``.
    """
    check_tta(tta)
    mirrors = (False, True) if tta in ("flip", "flip_shift") else (False,)
    shifts = TTA_SHIFTS if tta == "flip_shift" else ((0, 0),)
    return [(mirrored, down, right) for mirrored in mirrors for down, right in shifts]


def predict_probs(model, images: np.ndarray, *, tta: str = "none", batch_size: int = 512,
                  view_probs: dict | None = None) -> np.ndarray:
    """Class probabilities of a Keras classifier, optionally averaged over flipped and shifted copies.

    Args:
        model: ``keras.Model`` mapping ``(N, H, W, C)`` uint8 to ``(N, classes)`` probabilities.
        images: ``(N, H, W, C)`` uint8.
        tta: ``"none"``; ``"flip"``: the mean of the probabilities of each image
            and of its left-right mirror (test-time flip averaging; meant for
            datasets trained with random flips, such as CIFAR, not for digits);
            ``"flip_shift"``: the mean over the image and its mirror, each as it is
            and shifted one pixel diagonally four ways (:data:`TTA_SHIFTS`,
            :func:`shift_images`): 10 views, for models trained with flips and shifts.
        batch_size: images per forward pass.
        view_probs: each view's ``(N, classes)`` probabilities by :func:`tta_views` key, from
            earlier calls on the same model and images: views found there are not predicted again,
            and the others are added (one pass for "none", "flip" and "flip_shift" figures together).

    Returns:
        ``(N, classes)`` float64 probabilities.

    Raises:
        UsageError: unknown ``tta``.
    """
    views = tta_views(tta)
    view_probs = {} if view_probs is None else view_probs
    for mirrored, down, right in views:
        if (mirrored, down, right) not in view_probs:
            view = np.ascontiguousarray(images[:, :, ::-1]) if mirrored else images
            view = shift_images(view, down, right) if (down, right) != (0, 0) else view
            view_probs[mirrored, down, right] = model.predict(view, batch_size=batch_size, verbose=0).astype(np.float64)
    return sum(view_probs[key] for key in views) / len(views)


def evaluate(model_path, dataset: str, *, split: str = "test", data_dir: str | None = None,
             output: str | Path | None = None, fmt: str = "png", batch_size: int = 512,
             seed: int = 0, tta: str = "none", download: bool = False) -> dict:
    """Evaluate a ``.keras`` classifier on a split of a TFDS dataset or a folder of images, write
    ``evaluation.json`` and figures (:func:`evaluate_arrays`), and log the summary; the API of
    ``kcnn evaluate``.

    A folder is read at the model's input size and split as the model's run split it (the
    ``test_split`` and ``val_split`` of its config.json or model card; the defaults otherwise).

    Returns:
        The metrics dict written to ``evaluation.json``, plus ``"files"``: paths written.

    Raises:
        kcnn.prediction.ModelFileError: bad model file.
        UsageError: unknown ``tta``; the model's input shape or class count does not fit the dataset.
        kcnn.data.DataNotFoundError: dataset not prepared (and ``download`` False, or it failed).
    """
    check_tta(tta)
    clf = load_classifier(model_path)
    info = data.info_for_model(dataset, clf.input_shape, clf.settings, data_dir, download)
    images, labels = data.load_split_arrays(info, split)
    default = Path("runs") / "evaluate" / f"{clf.name}-{Path(info.name).name}-{split}"  # a folder: its name
    result = evaluate_arrays(clf, images, labels, info, split=split, output=default if output is None else output,
                             fmt=fmt, batch_size=batch_size, seed=seed, tta=tta)
    log.info(format_summary(result))
    for path in result["files"]:
        log.info(f"wrote {path}")
    return result


def evaluate_arrays(clf, images: np.ndarray, labels: np.ndarray, info, *, split: str = "test",
                    output: str | Path, fmt: str = "png", batch_size: int = 512, seed: int = 0,
                    tta: str = "none", view_probs: dict | None = None) -> dict:
    """Evaluate the classifier ``clf`` on ``images`` ``(N, H, W, C)`` uint8 with ``labels`` ``(N,)``
    int, a split of the dataset ``info``: write ``evaluation.json`` and three figures into ``output``.

    Figures: ``confusion_matrix`` (counts and row-normalised), ``misclassified``
    (the most confidently wrong images), ``predictions`` (random images with
    their predicted labels). ``tta`` and ``view_probs`` are passed to :func:`predict_probs`; every
    metric and figure then comes from the averaged probabilities.

    Returns:
        The metrics dict written to ``evaluation.json``, plus ``"files"``: paths written.

    Raises:
        UsageError: unknown ``tta``; the model's input shape or class count does not fit the dataset.
    """
    if tuple(clf.input_shape) != tuple(info.image_shape) or len(clf.class_names) != info.num_classes:
        raise UsageError(f"{clf.path}: model takes {clf.input_shape} images and outputs "
                         f"{len(clf.class_names)} classes; {info.name} has {info.image_shape} images "
                         f"and {info.num_classes} classes")
    probs = predict_probs(clf.model, images, tta=tta, batch_size=batch_size, view_probs=view_probs)
    result = summarize(probs, labels, info.class_names)
    result.update(model=str(clf.path), dataset=info.name, split=split, tfds_version=info.version, tta=tta)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    names = list(info.class_names)
    written = [
        files.write_json(out / "evaluation.json", result, sort_keys=False),
        figures.plot_confusion_matrix(np.asarray(result["confusion_matrix"]), names,
                                      out / f"confusion_matrix.{fmt}", title=f"{clf.name} on {info.name} {split}"),
        figures.plot_image_grid(*_most_confident_errors(images, labels, probs), names,
                                out / f"misclassified.{fmt}", title="Most confident mistakes"),
        figures.plot_image_grid(*_random_sample(images, labels, probs, seed), names,
                                out / f"predictions.{fmt}", title="Random test predictions"),
    ]
    result["files"] = [str(p) for p in written]
    return result


def check_tta(tta: str) -> None:
    """Raise :class:`UsageError` unless ``tta`` is one of :data:`TTA`."""
    if tta not in TTA:
        raise UsageError(f"Unknown test-time augmentation; valid: {', '.join(TTA)}. Received: tta={tta!r}")


def _most_confident_errors(images, labels, probs, count: int = 25):
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != labels)
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:count]
    return images[order], labels[order], probs[order]


def _random_sample(images, labels, probs, seed: int, count: int = 25):
    idx = np.random.default_rng(seed).choice(len(images), size=min(count, len(images)), replace=False)
    return images[idx], labels[idx], probs[idx]


def format_summary(result: dict) -> str:
    """Accuracy, loss, top-5 and a per-class table, for the terminal."""
    head = f"accuracy {result['accuracy']:.4f} | loss {result['loss']:.4f}"
    if result.get("tta", "none") != "none":
        head += f" | test-time augmentation {result['tta']}"
    if "top5_accuracy" in result:
        head += f" | top-5 accuracy {result['top5_accuracy']:.4f}"
    lines = [head + f" | {result['examples']} examples"]
    classes = list(result["per_class"].items())
    if len(classes) > SUMMARY_CLASSES:  # the worst classes only, by F1
        classes = sorted(classes, key=lambda item: item[1]["f1"])[:SUMMARY_CLASSES // 2]
        lines.append(f"the {len(classes)} classes of lowest F1 (all in evaluation.json)")
    width = max(len("class"), *(len(n) for n, _ in classes)) + 2
    lines.append(f"{'class':<{width}}precision  recall      f1  support")
    for name, m in classes:
        lines.append(f"{name:<{width}}{m['precision']:9.4f} {m['recall']:7.4f} {m['f1']:7.4f} {m['support']:8d}")
    pairs = result.get("most_confused", [])[:5]
    if pairs:
        lines.append("most confused: " + "; ".join(f"{p['true']} → {p['predicted']} ({p['count']} images)"
                                                   for p in pairs))
    return "\n".join(lines)
