"""kcnn serve's throughput: requests/s and latency percentiles of POST /predict at a given concurrency.

Serves the models (default: the shipped ones) on a loopback port with uvicorn in this process, as
``kcnn serve`` does, sends a drawn-like digit and a photo-like image in turn, and prints one line
per mode: plain prediction, and with ``explain=1`` (the page's request: model input and Grad-CAM).

    .venv/bin/python scripts/bench_serve.py --requests 400 --concurrency 8
"""

from __future__ import annotations

import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import click
import httpx
import numpy as np
import uvicorn
from PIL import Image, ImageDraw

from kcnn import serve


def sample_images() -> dict:
    """``{model name: PNG bytes}``: a thick "7" stroke on white for digit models, a gradient photo for colour."""
    digit = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(digit).line([(40, 40), (160, 40), (80, 170)], fill=0, width=18)
    photo = Image.fromarray(np.tile(np.linspace(0, 255, 96, dtype=np.uint8)[None, :, None], (64, 1, 3)))
    out = {}
    for name, im in (("digit", digit), ("photo", photo)):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out[name] = buf.getvalue()
    return out


@click.command()
@click.argument("models", nargs=-1)
@click.option("--requests", "count", default=400, show_default=True, help="Requests per mode.")
@click.option("--concurrency", default=8, show_default=True, help="Requests in flight at a time.")
def main(models, count, concurrency):
    loaded = serve.load_models(models)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(serve.create_app(loaded), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    images = sample_images()
    names = list(loaded)
    with httpx.Client(timeout=120) as client:
        for explain in (0, 1):
            def one(i):
                name = names[i % len(names)]
                body = images["digit" if loaded[name].clf.digit_style else "photo"]
                start = time.perf_counter()
                response = client.post(f"http://127.0.0.1:{port}/predict", content=body,
                                       params={"model": name, "top_k": 5, "explain": explain})
                return response.status_code, time.perf_counter() - start

            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                results = list(pool.map(one, range(count)))
            wall = time.perf_counter() - start
            ms = np.array([seconds for _, seconds in results]) * 1000
            failed = sum(status != 200 for status, _ in results)
            print(f"explain={explain}: {count} requests over {', '.join(names)}, {concurrency} at a time: "
                  f"{count / wall:.1f} requests/s, latency p50 {np.percentile(ms, 50):.0f} ms, "
                  f"p95 {np.percentile(ms, 95):.0f} ms, p99 {np.percentile(ms, 99):.0f} ms, {failed} failed")
    server.should_exit = True


if __name__ == "__main__":
    main()
