"""The ``kcnn`` command line (click).

Heavy libraries (Keras, torch, TensorFlow) are imported inside the commands, never at module
level, so ``kcnn --help`` answers at once.

Every command runs under :func:`handle_errors`: kcnn's own errors (:mod:`kcnn.errors`) become one
``Error:`` line and their exit status (2 for bad input, 1 for missing or damaged data or runs),
Ctrl-C exits 130, and anything else is a bug: its traceback, then a line asking for a report.
Library code logs through :mod:`logging`; the command line prints kcnn's records (INFO and above)
as plain lines, warnings on stderr.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import traceback

import click

import kcnn
from kcnn.config import RECIPES, describe_recipes, settings_fields  # stdlib-only at import time
from kcnn.device import BACKENDS
from kcnn.errors import DataError, KcnnError, UsageError
from kcnn.export import FORMATS, QUANTIZATIONS

#: The line after a bug's traceback.
BUG_REPORT = ("Error: this is a bug in kcnn or a library it uses, not a problem with your input; please report "
              "it with the traceback above and the output of `kcnn env`")


class _EchoHandler(logging.Handler):
    """Prints each log record's message as ``click.echo`` does: INFO on stdout, warnings and worse on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(record.getMessage(), err=record.levelno >= logging.WARNING)


@contextlib.contextmanager
def log_to_terminal():
    """Inside the block, kcnn's log records of level INFO and above print as plain lines; after it,
    the ``kcnn`` logger is as it was (a command run from Python leaves no handler behind). The records
    do not propagate meanwhile: a handler a library put on the root logger would print them twice."""
    logger, handler = logging.getLogger("kcnn"), _EchoHandler()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def handle_errors(command):
    """Decorate a command: adds ``--verbose``, prints kcnn's log lines, and turns exceptions into exit
    statuses (see the module docstring); ``--verbose`` shows every traceback."""

    @functools.wraps(command)
    def run(*args, verbose=False, **kwargs):
        from kcnn.quiet import import_tensorflow

        if os.environ.get("KERAS_BACKEND") == "tensorflow":  # `import keras` imports it: quietly, first
            import_tensorflow()
        try:
            with log_to_terminal():
                return command(*args, **kwargs)
        except (KeyboardInterrupt, click.exceptions.Abort):
            sys.exit(130)
        except click.ClickException:
            raise
        except KcnnError as e:
            if verbose:
                raise
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
        except Exception as e:
            tf = sys.modules.get("tensorflow")
            if not verbose and tf is not None and isinstance(e, tf.errors.DataLossError):
                # TFRecord CRC failures surface from inside tf.data while model.fit/predict iterate.
                detail = str(e.message).split(" [Op:")[0].split("}}")[-1].strip()
                click.echo(f"Error: the TFDS data is unreadable ({detail}); prepare the dataset again", err=True)
                sys.exit(1)
            traceback.print_exc()
            click.echo(BUG_REPORT, err=True)
            sys.exit(1)

    return click.option("--verbose", is_flag=True, help="Show full tracebacks on errors.")(run)


#: Options several commands share, defined once.
data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                               help="TFDS data_dir [default: $TFDS_DATA_DIR, else ~/tensorflow_datasets].")
download_option = click.option("--download/--no-download", default=True, show_default=True,
                               help="Download and prepare a TFDS dataset the data_dir lacks.")
figure_format_option = click.option("--format", "fmt", type=click.Choice(["png", "svg", "pdf"]), default="png",
                                    show_default=True, help="Figure format.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(kcnn.__version__, prog_name="kcnn")
def main():
    """Train, evaluate, explain and serve small CNN image classifiers.

    Keras 3 models on the PyTorch backend (KERAS_BACKEND defaults to torch),
    fed by tf.data/TFDS. A TFDS dataset is downloaded on first use into the
    TFDS data_dir (--data-dir, else TFDS_DATA_DIR, else ~/tensorflow_datasets);
    a folder of class folders (your own images) trains too.
    """


def _setting_option(field):
    """The click option of one :class:`kcnn.config.TrainConfig` field: its type, range and help from
    the field, no default of its own (an option not given leaves the recipe's or the config's)."""
    meta, name = field.metadata, "--" + field.name.replace("_", "-")
    shown = "[recipe]" if meta["recipe"] else f"[default: {meta['shown'] or field.default}]"
    kwargs = dict(default=None, help=f"{meta['help']} {shown}.")
    if field.type == "bool":
        return click.option(f"{name}/--no-{name[2:]}", **kwargs)
    if field.name == "image_size":
        kwargs.update(type=int, nargs=2, metavar="H W")
    elif field.name == "channels":
        kwargs.update(type=click.Choice(["1", "3"]), callback=lambda ctx, param, value: value and int(value))
    elif meta["choices"]:
        kwargs["type"] = click.Choice(meta["choices"])
    elif field.type in ("int", "float") and (meta["low"], meta["high"]) != (None, None):
        bounds = dict(min=meta["low"], max=meta["high"], min_open=meta["low_open"], max_open=meta["high_open"])
        kwargs["type"] = click.IntRange(**bounds) if field.type == "int" else click.FloatRange(**bounds)
    elif field.type in ("int", "float"):
        kwargs["type"] = int if field.type == "int" else float
    elif field.name == "devices":
        kwargs["metavar"] = "N|all"
    elif field.name == "data_dir":
        kwargs["type"] = click.Path(file_okay=False)
    return click.option(name, **kwargs)


def _backend_option(f):
    """``--backend``: the Keras backend, set (:func:`kcnn.device.select_backend`) when the option is
    parsed, before the command imports Keras."""

    def choose(ctx, param, value):
        from kcnn.device import select_backend

        try:
            select_backend(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None

    return click.option("--backend", type=click.Choice(BACKENDS), default=None, expose_value=False,
                        callback=choose, help="Keras backend [default: $KERAS_BACKEND, else torch].")(f)


def _setting_options(f):
    for field in reversed(settings_fields()):
        if field.name not in ("dataset", "recipe"):
            f = _setting_option(field)(f)
    return f


def _run_settings(config_help: str):
    """DATASET, ``--recipe``, ``--config FILE`` (``config_help``) and every TrainConfig setting: the
    options of each command that trains (train, lr-find, tune), as Ultralytics' modes share theirs."""

    def decorate(f):
        f = _setting_options(f)
        f = click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                         help=config_help)(f)
        f = click.option("--recipe", type=click.Choice(list(RECIPES)), default=None,
                         help="Named settings (`kcnn recipes`) [default: by dataset and model].")(f)
        return click.argument("dataset", required=False)(f)

    return decorate


def _start_config(dataset, config_file, settings: dict):
    """The run config a training command starts from (``--config``), after the checks that answer a
    missing dataset or a typo in a dataset or model name before Keras, torch and TensorFlow load."""
    from kcnn import catalog
    from kcnn.config import TrainConfig

    if dataset is None and config_file is None:
        raise click.UsageError("give a DATASET or --config RUN/config.json")
    if dataset is not None:
        catalog.check_dataset_name(dataset)
    if settings.get("model") is not None:
        catalog.check_model_name(settings["model"])
    return TrainConfig.load(config_file) if config_file else None


@main.command()
@_run_settings("Replay a run: the settings of FILE (config.json); options override them.")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Run folder [default: runs/DATASET-MODEL-N, or the unfinished run of the same settings].")
@click.option("--overwrite", is_flag=True, help="Delete what --output holds and start again.")
@_backend_option
@handle_errors
def train(dataset, config_file, output, overwrite, **settings):
    """Train a model on DATASET: a TFDS name (mnist, cifar10, cifar100, ...; downloaded on first
    use) or a folder of images, FOLDER/CLASS/* or FOLDER/{train,val,test}/CLASS/*.

    Writes model.keras (the best epoch), history.csv, config.json, metrics.json, curves.png and
    evaluation/ into the run folder. Re-running the same command after a crash or Ctrl-C resumes.
    Options marked [recipe] default to the recipe's value (kcnn recipes).

    Example: kcnn train cifar10 --epochs 15
    """
    config = _start_config(dataset, config_file, settings)
    from kcnn.training import train as train_fn

    # a progress bar on a terminal, one line per epoch into a log file (nohup ... > run.log)
    train_fn(dataset, config, output=output, overwrite=overwrite, verbose="auto",
             **{k: v for k, v in settings.items() if v is not None})


@main.command("lr-find")
@_run_settings("The settings of a run (config.json); options override them.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Training steps of the test [default: one epoch, at most 1,000].")
@click.option("--start", type=click.FloatRange(min=0, min_open=True), default=1e-7, show_default=True,
              help="Learning rate of the first step.")
@click.option("--end", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Learning rate of the last step.")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Folder of lr_find.json and lr_find.png [default: runs/lr_find/DATASET-MODEL-N].")
@_backend_option
@handle_errors
def lr_find_cmd(dataset, config_file, steps, start, end, output, **settings):
    """Find a learning rate for DATASET (a TFDS name or a folder) with the range test (Smith 2017;
    fastai's lr_find): a fresh model of the run's settings trains while the learning rate grows
    exponentially from --start to --end; the smoothed loss against the rate is drawn, and the
    steepest descent suggested beside the recipe's rate. No run folder is touched.

    Example: kcnn lr-find cifar10 --steps 200
    """
    config = _start_config(dataset, config_file, settings)
    from kcnn.lr_find import lr_find

    lr_find(dataset, config, steps=steps, start=start, end=end, output=output,
            **{k: v for k, v in settings.items() if v is not None})


@main.command("tune")
@_run_settings("Start every trial from the settings of a run (config.json).")
@click.option("--trials", type=int, default=10, show_default=True, help="Trials to run (Bayesian, random).")
@click.option("--algorithm", type=click.Choice(["bayesian", "hyperband", "random"]), default="bayesian",
              show_default=True, help="KerasTuner's oracle.")
@click.option("--space", "space", multiple=True, metavar="NAME=KIND:...",
              help="A setting to search, replacing the default space: NAME=log:LOW:HIGH, NAME=float:LOW:HIGH or "
                   "NAME=choice:A,B (repeatable) [default: lr, weight_decay, batch_size, augment, label_smoothing].")
@click.option("--chief", metavar="HOST:PORT", default=None, help="Hold the oracle for workers on other machines.")
@click.option("--worker", metavar="HOST:PORT", default=None, help="Run trials for the chief at HOST:PORT.")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="The search's folder; the same one resumes [default: runs/tune/DATASET-MODEL].")
@_backend_option
@handle_errors
def tune_cmd(dataset, config_file, trials, algorithm, space, chief, worker, output, **settings):
    """Search settings for DATASET (a TFDS name or a folder) with KerasTuner: every trial is a kcnn
    training run of --epochs epochs (default 3) chosen by its validation accuracy; the test split is
    never read. Prints the trials, best first, and writes OUTPUT/best_config.json for
    `kcnn train --config`. Re-running the same command resumes an interrupted search.

    Example: kcnn tune mnist --model net24k --trials 12 --epochs 3
    """
    config = _start_config(dataset, config_file, settings)
    import importlib.util

    if importlib.util.find_spec("keras_tuner") is None or importlib.util.find_spec("sklearn") is None:
        raise UsageError("kcnn tune needs KerasTuner and scikit-learn: pip install 'kcnn[tune]'")
    from kcnn.tune import parse_space, tune

    given = {k: v for k, v in settings.items() if v is not None}
    tune(dataset, config, trials=trials, epochs=given.pop("epochs", 3), algorithm=algorithm,
         space=parse_space(space) if space else None, output=output, chief=chief, worker=worker, **given)


@main.command("data")
@click.argument("dataset")
@data_dir_option
@download_option
@handle_errors
def data_cmd(dataset, data_dir, download):
    """Prepare DATASET ahead of training and say where it is: a TFDS name is downloaded and
    prepared if the data_dir lacks it; a folder of class folders is listed and every image read,
    naming the files that cannot be."""
    from kcnn.catalog import check_dataset_name

    check_dataset_name(dataset)  # a typo is answered before TensorFlow loads
    from kcnn import data
    from kcnn.data.folders import plural

    info = data.load_info(dataset, data_dir, download=download)
    if info.folder is None:
        click.echo(info.describe())
        return
    readable, skipped = {}, []
    for split in (split for split in ("train", "val", "test") if info.folder.files[split]):
        _, labels, _, bad = data.decode_split(info, split, keep=False)
        readable[split], skipped = len(labels), skipped + bad
    shape = "x".join(map(str, info.image_shape))
    click.echo(f"folder {info.name}: {len(info.class_names)} classes ({', '.join(info.class_names)}); readable "
               f"images: {' / '.join(f'{count:,} {split}' for split, count in readable.items())}; brought to {shape}")
    for path, reason in skipped:
        click.echo(f"cannot read {path}: {reason}")
    if skipped:
        click.echo(f"{plural(len(skipped), 'unreadable file')}, which training and testing leave out")


@main.command()
def recipes():
    """List the recipes, the baseline they change, and which one each dataset and model gets."""
    click.echo(describe_recipes())


PREDICT_HELP = """Classify images with the shipped models or --model FILE.keras.

PATHS are image files, folders (searched recursively by image extension) or
glob patterns. With no --model, every model in saved_models/ answers: one line
per image per model.

\b
How an image is brought to the model's input:
- PIL reads it (PNG, JPEG, BMP, GIF, WebP, TIFF); EXIF orientation applied;
  above 50 Mpx it is refused (decompression-bomb guard).
- Transparency is composited on white; 16-bit gray is scaled by its range.
- Colour models (CIFAR): RGB, centre-cropped to square, resized to 32x32.
- Digit models (MNIST): made like MNIST itself: ink light on dark (inverted
  if the background is light), cropped to the ink, scaled to fit 20x20
  keeping aspect, placed in 28x28 by centre of mass. 28x28 images on a dark
  background pass unchanged.
- Other gray models (Fashion-MNIST): gray, inverted if the background is
  light, fitted into 28x28 keeping aspect.

Exit status 1 if any input failed (each failure: one line on stderr).
"""


@main.command(help=PREDICT_HELP)
@click.argument("paths", nargs=-1, required=True)
@click.option("--model", "model_files", multiple=True, metavar="FILE.keras",
              help="Model file (repeatable) [default: every shipped model].")
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Classes listed per image.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="Output format on stdout.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Images read and predicted at a time.")
@_backend_option
@handle_errors
def predict(paths, model_files, top_k, fmt, batch_size):
    from kcnn.images import find_images
    from kcnn.prediction import load_classifier, predict as predict_fn, shipped_models

    files = model_files or shipped_models()
    classifiers = [load_classifier(f) for f in files] if files else None
    failures = []

    def on_error(message):
        failures.append(message)
        click.echo(f"Error: {message}", err=True)

    found, missing = find_images(paths)  # expand folders and globs once
    for message in missing:
        on_error(message)
    if len(found) > batch_size:
        with click.progressbar(length=len(found), label="predicting", file=sys.stderr) as bar:
            results = predict_fn(found, classifiers, top_k=top_k, batch_size=batch_size,
                                 progress=bar.update, on_error=on_error)
    else:
        results = predict_fn(found, classifiers, top_k=top_k, batch_size=batch_size, on_error=on_error)
    click.echo(format_predictions(results, fmt, top_k), nl=False)
    if failures:
        sys.exit(1)


def format_predictions(results: list, fmt: str, top_k: int = 1) -> str:
    """Render predict() results as an aligned table, one JSON array, or CSV."""
    if fmt == "json":
        import json

        return json.dumps(results, indent=2) + "\n"
    topk = lambda r: "; ".join(f"{t['label']} {t['probability']:.4f}" for t in r["top_k"])  # noqa: E731
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "model", "label", "probability"] + (["top_k"] if top_k > 1 else []))
        for r in results:
            writer.writerow([r["path"], r["model"], r["label"], f"{r['probability']:.6f}"]
                            + ([topk(r)] if top_k > 1 else []))
        return buf.getvalue()
    if not results:
        return ""
    shown = max(len(r["top_k"]) for r in results)  # --top-k 50 on 10 classes lists 10
    rows = [["path", "model", "label", "probability"] + ([f"top-{shown}"] if top_k > 1 else [])]
    rows += [[r["path"], r["model"], r["label"], f"{r['probability']:.4f}"] + ([topk(r)] if top_k > 1 else [])
             for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n" for row in rows)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("dest", type=click.Path(dir_okay=False), required=False)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="keras", show_default=True,
              help="keras: an optimizer-free .keras file; onnx: ONNX Runtime; litert: a .tflite file for "
                   "phones; torch: a torch.export .pt2 that plain PyTorch loads. Every format but keras is "
                   "checked against the .keras model on the run's test images before it is kept.")
@click.option("--quantize", type=click.Choice(QUANTIZATIONS), default=None,
              help="onnx, litert: int8, calibrated on 512 training images; refused when it loses more test "
                   "accuracy than --max-drop.")
@click.option("--max-drop", type=click.FloatRange(min=0), default=None,
              help="Test accuracy, in points, --quantize may lose [default: 0.1 on mnist, else 0.5].")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="TFDS data_dir of the check's test images and the calibration images [default: the run's].")
@_backend_option
@handle_errors
def export(run_dir, dest, fmt, quantize, max_drop, data_dir):
    """Export a finished run as DEST (.keras, .onnx, .tflite or .pt2) and its model card (JSON) beside it
    [default DEST: RUN_DIR/export/DATASET_MODEL[_int8].SUFFIX]."""
    from kcnn.export import export as export_run

    exported = export_run(run_dir, dest, fmt, quantize, data_dir, max_drop)
    click.echo(exported.summary())
    click.echo(f"wrote {exported.card_path}")


def _model_inputs(args, model_files):
    """Yield ``(classifier, image path, model input)`` for every model and IMAGE of a viz command.

    MODEL.keras files may be given among the arguments or with --model; without
    any, the shipped models are used.
    """
    from pathlib import Path

    from kcnn.images import read_image, to_model_input
    from kcnn.prediction import load_classifiers

    models = list(model_files) + [a for a in args if a.endswith(".keras")]
    images = [Path(a) for a in args if not a.endswith(".keras")]
    if not images:
        raise click.UsageError("give at least one IMAGE")
    for clf in load_classifiers(models):
        for image in images:
            yield clf, image, to_model_input(read_image(image), clf.input_shape, clf.digit_style)


@main.command()
@click.argument("model", metavar="MODEL.keras")
@click.argument("dataset")
@click.option("--split", default="test", show_default=True,
              help="TFDS split (slicing allowed, e.g. train[90%:]); a folder's train, val or test.")
@data_dir_option
@download_option
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: runs/evaluate/MODEL-DATASET-SPLIT].")
@click.option("--tta", default="none", show_default=True,  # kcnn.evaluation.TTA checks it (numpy: not at --help)
              help="Test-time augmentation: 'flip' averages each image's probabilities with its "
                   "mirror's (for models trained with flips, e.g. CIFAR; not for digits); 'flip_shift' "
                   "also averages over both shifted one pixel diagonally four ways (10 views, for models "
                   "trained with flips and shifts, e.g. flip_shift).")
@figure_format_option
@_backend_option
@handle_errors
def evaluate(model, dataset, split, data_dir, download, output, tta, fmt):
    """Evaluate MODEL.keras on DATASET (a TFDS name or a folder of class folders): accuracy, loss,
    top-5, per-class metrics, figures.

    Writes evaluation.json, confusion_matrix, misclassified and predictions figures.
    """
    from kcnn.catalog import check_dataset_name

    check_dataset_name(dataset)  # a typo is answered before Keras and TensorFlow load
    from kcnn.evaluation import evaluate as evaluate_fn

    evaluate_fn(model, dataset, split=split, data_dir=data_dir, output=output, fmt=fmt, tta=tta, download=download)


@main.group()
def viz():
    """Figures: learned filters, feature maps, Grad-CAM, training curves."""


@viz.command("filters")
@click.argument("models", nargs=-1, metavar="[MODEL.keras]...")
@click.option("--layer", default=None, help="Conv layer name or index [default: the first].")
@click.option("--output", type=click.Path(file_okay=False), default="runs/viz", show_default=True)
@figure_format_option
@_backend_option
@handle_errors
def viz_filters(models, layer, output, fmt):
    """Grid of a conv layer's learned kernels (shipped models if no MODEL)."""
    from pathlib import Path

    import keras

    from kcnn import figures
    from kcnn.explain import conv_layers, find_conv_layer
    from kcnn.prediction import load_classifiers

    for clf in load_classifiers(models):
        conv = find_conv_layer(clf.model, layer)
        kernel = keras.ops.convert_to_numpy(conv.kernel)
        path = figures.plot_filters(kernel, Path(output) / f"filters_{clf.name}_{conv.name}.{fmt}",
                                    title=f"{clf.name}: {conv.name} kernels {tuple(kernel.shape)}",
                                    gray_input=clf.input_shape[-1] == 1 and conv is conv_layers(clf.model)[0])
        click.echo(f"wrote {path}")


@viz.command("activations")
@click.argument("args", nargs=-1, required=True, metavar="[MODEL.keras] IMAGE...")
@click.option("--model", "model_files", multiple=True, metavar="FILE.keras", help="Model file (repeatable).")
@click.option("--layer", default=None, help="Conv layer name or index, or 'all' [default: the first].")
@click.option("--output", type=click.Path(file_okay=False), default="runs/viz", show_default=True)
@figure_format_option
@_backend_option
@handle_errors
def viz_activations(args, model_files, layer, output, fmt):
    """An image as the model sees it, beside every channel of a conv layer's feature maps."""
    from pathlib import Path

    from kcnn import figures
    from kcnn.explain import conv_layers, feature_maps, find_conv_layer

    for clf, image, x in _model_inputs(args, model_files):
        first = conv_layers(clf.model)[0]
        layers = conv_layers(clf.model) if layer == "all" else [find_conv_layer(clf.model, layer)]
        for conv in layers:
            seen, maps = feature_maps(clf.model, conv, x)
            seen_title = ("model input\n(after its own preprocessing)" if conv is first
                          else f"input to {conv.name}, channel 0\n(of {seen.shape[-1]} pooled feature maps)")
            path = figures.plot_activations(
                seen, maps, Path(output) / f"activations_{clf.name}_{image.stem}_{conv.name}.{fmt}",
                title=f"{clf.name}: {conv.name} feature maps of {image.name}", seen_title=seen_title)
            click.echo(f"wrote {path}")


@viz.command("gradcam")
@click.argument("args", nargs=-1, required=True, metavar="[MODEL.keras] IMAGE...")
@click.option("--model", "model_files", multiple=True, metavar="FILE.keras", help="Model file (repeatable).")
@click.option("--class", "class_name", default=None, help="Class to explain [default: the predicted one].")
@click.option("--output", type=click.Path(file_okay=False), default="runs/viz", show_default=True)
@figure_format_option
@_backend_option
@handle_errors
def viz_gradcam(args, model_files, class_name, output, fmt):
    """Grad-CAM heatmap of the last conv layer, overlaid on the image (Selvaraju et al. 2017)."""
    from pathlib import Path

    from kcnn import figures
    from kcnn.explain import gradcam

    for clf, image, x in _model_inputs(args, model_files):
        if class_name is not None and class_name not in clf.class_names:
            raise UsageError(f"{clf.path}: no class {class_name!r}; classes: {', '.join(clf.class_names)}")
        wanted = None if class_name is None else clf.class_names.index(class_name)
        heatmap, index = gradcam(clf.model, x, wanted)
        path = figures.plot_gradcam(
            x, heatmap, Path(output) / f"gradcam_{clf.name}_{image.stem}.{fmt}",
            title=f"{clf.name}: Grad-CAM for {clf.class_names[index]!r} on {image.name}")
        click.echo(f"wrote {path}")


@viz.command("batch")
@click.argument("source", metavar="RUN|DATASET")
@click.option("--epoch", type=click.IntRange(min=1), default=1, show_default=True,
              help="The epoch whose first batch is drawn (order and augmentation are keyed to it).")
@click.option("--count", type=click.IntRange(1, 256), default=32, show_default=True, help="Images drawn.")
@data_dir_option
@click.option("--output", type=click.Path(file_okay=False), default="runs/viz", show_default=True)
@figure_format_option
@handle_errors
def viz_batch(source, epoch, count, data_dir, output, fmt):
    """A grid of training images as the model sees them: the first batch of an epoch, augmented, of a
    run (its config.json: dataset, augmentation, seed) or of a dataset or folder under its default recipe."""
    from pathlib import Path

    from kcnn import catalog, data, figures
    from kcnn.config import TrainConfig, resolve

    run = Path(source) / "config.json"
    if run.exists():
        config = TrainConfig.load(run)
        info = data.load_info(config.dataset, data_dir or config.data_dir, image_size=config.image_size,
                              channels=config.channels, test_split=config.test_split)
    else:
        catalog.check_dataset_name(source)
        info = data.load_info(source, data_dir, download=False)
        config = resolve(info.name, info.image_shape)
    ds = data.load_datasets(info, batch_size=count, val_split=config.val_split, augment=config.augment,
                            seed=config.seed)
    ds.set_epoch(epoch - 1)
    images, labels = (x.numpy() for x in next(iter(ds.train)))
    name = Path(config.dataset).name
    path = figures.plot_image_grid(
        images, labels, None, info.class_names, Path(output) / f"batch_{name}_epoch{epoch}.{fmt}", cols=8,
        title=f"{name}: training batch of epoch {epoch}, augment {config.augment}, seed {config.seed}")
    click.echo(f"wrote {path}")


@viz.command("history")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Figure path [default: RUN_DIR/curves.FORMAT].")
@figure_format_option
@handle_errors
def viz_history(run_dir, output, fmt):
    """Redraw a run's training curves from its history.csv."""
    from pathlib import Path

    from kcnn import figures
    from kcnn.runs import read_history

    rows = read_history(Path(run_dir) / "history.csv")
    if not rows:
        raise DataError(f"{Path(run_dir) / 'history.csv'}: missing or empty")
    path = figures.plot_history(rows, output or Path(run_dir) / f"curves.{fmt}", title=f"{Path(run_dir).name}")
    click.echo(f"wrote {path}")


@main.command()
@click.argument("models", nargs=-1, metavar="[MODEL.keras]...")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every network interface; a warning is printed).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port.")
@_backend_option
@handle_errors
def serve(models, host, port):
    """Serve models (default: the shipped ones) on a local web page, where you draw a digit or drop a
    photo and see the top-k classes, the model's input and Grad-CAM, and as a JSON API:
    POST /predict?model=NAME&top_k=K (an image file, multipart or raw), GET /models, GET /health."""

    from kcnn.serve import serve as serve_fn

    serve_fn(models, host=host, port=port)


@main.command()
@_backend_option
@handle_errors
def env():
    """Print backend, device and library versions (paste into bug reports)."""
    from kcnn.device import resolve_device, runtime_versions

    for key, value in runtime_versions().items():
        click.echo(f"{key}: {value}")
    click.echo(f"device (auto): {resolve_device('auto')}")


@main.command("models")
def list_models_cmd():
    """List the architectures: parameters, input, default recipe and the reference tutorial."""
    from kcnn.catalog import describe_models

    click.echo(describe_models())
