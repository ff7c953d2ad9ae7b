"""Every export format of the shipped models side by side on this CPU: file size, load time, latency
at batch 1 (median and p95 of --rounds x --calls calls) and throughput at batch 64, and accuracy on the
whole test split; Keras on torch (the ``.keras`` file) is the reference each ratio is taken against.

Each file is written by kcnn's own writers (``kcnn.export.WRITERS``, int8 calibrated on the first 512
training images) and run through ``kcnn.export.load_runtime``, every runtime given this process's CPU
cores. The timings alternate the formats round by round, so that a slow minute of the host hits them
all alike. Load times are in-process, after each runtime's library is imported once.

    .venv/bin/python scripts/bench_export.py --data-dir ../shared/tfds --write docs/deploy.md

``--write`` replaces the table between the ``<!-- bench_export -->`` markers of that file.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from kcnn import data, metadata
from kcnn.export import SUFFIXES, WRITERS, checks, load_runtime
from kcnn.export.runtimes import cpu_threads
from kcnn.prediction import shipped_models

#: (label, format, quantized) in the table's order; the first is the reference.
FORMATS = [("Keras 3 on torch", "keras", False), ("ONNX Runtime", "onnx", False), ("ONNX Runtime int8", "onnx", True),
           ("LiteRT", "litert", False), ("LiteRT int8", "litert", True), ("torch.export", "torch", False)]
MARK = "<!-- bench_export -->"


def write_formats(model_path: Path, folder: Path, calibration: np.ndarray) -> dict[str, Path]:
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    paths = {"Keras 3 on torch": model_path}
    for label, fmt, quantized in FORMATS[1:]:
        path = folder / f"{model_path.stem}{'_int8' if quantized else ''}{SUFFIXES[fmt]}"
        WRITERS[fmt](model, path, None, calibration if quantized else None)
        paths[label] = path
    return paths


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(paths: dict[str, Path], images: np.ndarray, labels: np.ndarray, rounds: int, calls: int,
            batch_calls: int) -> dict[str, dict]:
    load_runtime(paths[FORMATS[0][0]])  # imports Keras before any timing
    runtimes, rows = {}, {}
    for label, path in paths.items():
        load_runtime(path)  # the library's import, once
        loads = [timed(lambda: runtimes.__setitem__(label, load_runtime(path))) for _ in range(3)]
        predictions = runtimes[label](images, checks.CHECK_BATCH)
        rows[label] = {"MB": path.stat().st_size / 1e6, "load_s": statistics.median(loads),
                       "accuracy": float((predictions.argmax(1) == labels).mean()), "b1": [], "b64": []}
    for key, batch, n in (("b1", 1, calls), ("b64", 64, batch_calls)):
        for label in paths:
            runtimes[label](images[:batch], batch)  # warm-up, and LiteRT's resize to this batch
        for r in range(rounds):
            for label in paths:
                for i in range(n):
                    start = (r * n + i) * batch % (len(images) - batch)
                    rows[label][key].append(timed(lambda: runtimes[label](images[start:start + batch], batch)))
    return rows


def table(results: dict[str, dict[str, dict]], meta: dict) -> str:
    lines = [f"Measured by `scripts/bench_export.py` on {meta['machine']} ({meta['threads']} threads per runtime), "
             f"{meta['rounds']} rounds x {meta['calls']} batch-1 calls and {meta['rounds']} x {meta['batch_calls']} "
             f"batch-64 calls per format, alternating; accuracy on the whole test split.", "",
             "| model | format | file MB | load s | batch 1 median ms | batch 1 p95 ms | batch 64 images/s "
             "| vs Keras, batch 1 | test accuracy |", "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for name, rows in results.items():
        reference = statistics.median(rows[FORMATS[0][0]]["b1"])
        for label, row in rows.items():
            b1 = sorted(row["b1"])
            lines.append(f"| {name} | {label} | {row['MB']:.2f} | {row['load_s']:.2f} | {1e3 * statistics.median(b1):.2f} "
                         f"| {1e3 * b1[int(0.95 * (len(b1) - 1))]:.2f} | {64 / statistics.median(row['b64']):,.0f} "
                         f"| {reference / statistics.median(b1):.1f}x | {row['accuracy']:.2%} |")
    return "\n".join(lines)


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False), required=True, help="TFDS data_dir of the test splits.")
@click.option("--rounds", default=5, show_default=True)
@click.option("--calls", default=50, show_default=True, help="Batch-1 calls per format and round.")
@click.option("--batch-calls", default=4, show_default=True, help="Batch-64 calls per format and round.")
@click.option("--write", "write_to", type=click.Path(dir_okay=False), default=None,
              help="Markdown file whose table between the bench_export markers is replaced.")
def main(data_dir, rounds, calls, batch_calls, write_to):
    results = {}
    for model_path in shipped_models():
        meta = metadata.read(model_path)
        dataset = meta["dataset"]
        info = data.load_info(dataset, data_dir)
        images, labels = data.load_split_arrays(info, "test")
        calibration = data.load_split_arrays(info, f"train[:{checks.CALIBRATION_IMAGES}]")[0]
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_formats(model_path, Path(tmp), calibration)
            name = f"{model_path.name} ({meta['card'].get('model', '?')})"
            results[name] = measure(paths, images, labels, rounds, calls, batch_calls)
        click.echo(f"measured {name}", err=True)
    setup = {"machine": f"{platform.machine()}, {cpu_threads()} CPU cores", "threads": cpu_threads(),
             "rounds": rounds, "calls": calls, "batch_calls": batch_calls}
    text = table(results, setup)
    click.echo(text)
    if write_to:
        doc = Path(write_to).read_text()
        head, _, rest = doc.partition(MARK)
        _, _, tail = rest.partition(MARK)
        Path(write_to).write_text(f"{head}{MARK}\n{text}\n{MARK}{tail}")


if __name__ == "__main__":
    main()
