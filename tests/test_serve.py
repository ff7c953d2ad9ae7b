"""kcnn serve: the JSON API gives kcnn predict's numbers, refuses bad uploads with one-line 4xx errors and
keeps serving, survives concurrent load; the page is offline; the CLI warns and fails cleanly."""

import base64
import io
import json
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import uvicorn
from drawings import draw_digit
from helpers import free_port, run_cli
from PIL import Image

from kcnn import serve
from kcnn.prediction import shipped_models


@pytest.fixture(scope="module")
def url():
    """The shipped models served on a loopback port by uvicorn in a thread, stopped after the module."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(serve.create_app(serve.load_models([])), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield base
    server.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A drawn digit as PNG, and a photo-like colour image as JPEG."""
    folder = tmp_path_factory.mktemp("uploads")
    draw_digit(3, np.random.default_rng(0)).save(folder / "three.png")
    rng = np.random.default_rng(1)
    photo = np.clip(np.linspace(0, 255, 80)[None, :, None] + rng.normal(0, 20, (60, 80, 3)), 0, 255)
    Image.fromarray(photo.astype(np.uint8)).save(folder / "photo.jpg", quality=90)
    return folder


def post(url, data, model="mnist", **params):
    return httpx.post(f"{url}/predict", params={"model": model, **params}, timeout=60, **data)


def test_predict_gives_kcnn_predicts_numbers_for_files_and_raw_bytes(url, images):
    for name, model in (("three.png", "mnist"), ("photo.jpg", "cifar10"), ("three.png", "cifar10")):
        path = images / name
        cli = run_cli("predict", path, "--model", next(p for p in shipped_models() if p.stem == model),
                      "--top-k", "3", "--format", "json")
        assert cli.exit_code == 0, cli.output
        expected = json.loads(cli.output)[0]["top_k"]
        multipart = post(url, {"files": {"image": (name, path.read_bytes())}}, model, top_k=3)
        raw = post(url, {"content": path.read_bytes()}, model, top_k=3)
        for response in (multipart, raw):
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["labels"] == expected and answer["model"] == model
            assert answer["preprocessed_shape"] == ([28, 28, 1] if model == "mnist" else [32, 32, 3])


def test_explain_returns_the_model_input_and_gradcam_as_pngs(url, images):
    response = post(url, {"files": {"f": ("three.png", (images / "three.png").read_bytes())}}, top_k=1, explain=1)
    assert response.status_code == 200, response.text
    for key in ("preprocessed", "gradcam"):
        header, encoded = response.json()[key].split(",", 1)
        assert header == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as im:
            assert im.format == "PNG" and im.size == (224, 224) and im.mode == "RGB"


def test_models_health_and_an_offline_page(url):
    models = httpx.get(f"{url}/models").json()
    assert sorted(m["name"] for m in models) == sorted(p.stem for p in shipped_models())
    mnist = next(m for m in models if m["name"] == "mnist")
    assert mnist["class_names"] == [str(d) for d in range(10)] and mnist["input_shape"] == [28, 28, 1]
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "models": len(models)}
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text


def test_bad_requests_get_one_line_errors_and_the_next_request_is_served(url, images, tmp_path):
    png = (images / "three.png").read_bytes()
    big = Image.new("L", (8000, 8000))  # 64 Mpx: above the 50 Mpx guard, a small file
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    photo = (images / "photo.jpg").read_bytes()

    def chunks():  # a body without Content-Length, over the limit
        for _ in range(serve.MAX_UPLOAD_BYTES // 2**20 + 1):
            yield b"\0" * 2**20

    cases = [
        (413, "upload larger than the limit", dict(content=b"\0" * (serve.MAX_UPLOAD_BYTES + 1))),
        (413, "upload larger than the limit", dict(content=chunks())),
        (422, "upload: not an image PIL can read", dict(content=b"name,label\n1,2\n")),
        (422, "photo.jpg: truncated or corrupt image data", dict(files={"f": ("photo.jpg", photo[:len(photo) // 2])})),
        (413, "decompression-bomb guard", dict(content=buf.getvalue())),
        (422, "upload: empty file (0 bytes)", dict(content=b"")),
        (400, "the form has no file", dict(files={"note": (None, "not a file")})),
    ]
    for status, message, data in cases:
        response = post(url, data)
        assert response.status_code == status, (message, response.text)
        assert message in response.json()["error"] and "\n" not in response.json()["error"]
        assert post(url, {"content": png}).status_code == 200  # the server keeps serving
    for params, status, message in (({"model": "nope"}, 404, "no model 'nope'; loaded:"),
                                    ({"top_k": 0}, 422, "top_k must be >= 1"),
                                    ({"top_k": "x"}, 422, "top_k: Input should be a valid integer")):
        response = post(url, {"content": png}, **params)
        assert response.status_code == status and message in response.json()["error"]
    response = httpx.post(f"{url}/predict", content=png)
    assert response.status_code == 400 and "several models are loaded" in response.json()["error"]
    for method, path, status in (("GET", "/nowhere", 404), ("GET", "/predict", 405)):  # routing refusals too
        response = httpx.request(method, f"{url}{path}")
        assert response.status_code == status and response.json() == {"error": f"{method} {path}: " + (
            "Not Found" if status == 404 else "Method Not Allowed")}


@pytest.mark.slow
def test_200_concurrent_requests_all_succeed(url, images):
    bodies = [(images / "three.png").read_bytes(), (images / "photo.jpg").read_bytes()]

    def one(i):
        start = time.perf_counter()
        response = post(url, {"content": bodies[i % 2]}, "mnist" if i % 2 == 0 else "cifar10", top_k=3)
        return response.status_code, time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(200)))
    wall = time.perf_counter() - start
    assert [status for status, _ in results] == [200] * 200
    latencies = sorted(seconds for _, seconds in results)
    print(f"\n200 requests, 8 at a time: {200 / wall:.0f} requests/s, p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p95 {latencies[189] * 1000:.0f} ms")


def test_serve_warns_for_every_interface_and_refuses_a_busy_port(monkeypatch):
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kwargs: started.append((host, port)))
    port = free_port()
    result = run_cli("serve", "--host", "0.0.0.0", "--port", port)
    assert result.exit_code == 0 and started == [("0.0.0.0", port)]
    assert result.output.count("Warning: --host 0.0.0.0") == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = run_cli("serve", "--port", taken)
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{taken}" in result.output
    result = run_cli("serve", "missing.keras", "--port", free_port())
    assert result.exit_code == 1 and "missing.keras" in result.output
