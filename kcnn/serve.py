"""``kcnn serve``: a local web page and a JSON API over loaded classifiers (FastAPI on uvicorn).

FastAPI rather than Gradio: the API is the product for engineers, and one static page
(``kcnn/static/index.html``, plain JavaScript, no asset from a CDN) gives the drawing canvas and
the upload; Gradio would bring a large front end that fetches fonts from the internet. FastAPI's
own ``/docs`` page loads Swagger UI from a CDN, so it is off; ``/openapi.json`` stays.

Endpoints:
    ``GET /``: the page. ``GET /health``: ``{"status": "ok", "models": N}``.
    ``GET /models``: the loaded models with their cards.
    ``POST /predict?model=NAME&top_k=K&explain=0|1``: an image file, as multipart form data (any
    field name) or as the raw request body. Returns ``{model, labels: [{label, probability}],
    preprocessed_shape}``, and with ``explain=1`` also ``preprocessed`` and ``gradcam``, PNG data
    URLs of the model's input and of the Grad-CAM overlay.

Each request goes through :func:`kcnn.prediction.predict` and the same image rules as
``kcnn predict`` (same numbers). Bad input gets a 4xx with ``{"error": "one line"}``. Models load
once, at start; a lock per model serializes its use (Grad-CAM's gradients, torch's autograd state),
and requests run in worker threads, so the server keeps answering while one predicts.
"""

from __future__ import annotations

import base64
import io
import logging
import socket
import threading
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, Request  # Request: FastAPI reads annotations by name, so a module global
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from kcnn.errors import UsageError
from kcnn.explain import gradcam
from kcnn.figures import gradcam_overlay
from kcnn.images import ImageError, decode_image, to_model_input
from kcnn.prediction import load_classifiers, predict

log = logging.getLogger(__name__)

#: Largest upload accepted, bytes (the request body, multipart or raw).
MAX_UPLOAD_BYTES = 20 * 2**20
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
#: Side, in pixels, of the PNGs of the model's input and Grad-CAM that the page shows.
PREVIEW_SIDE = 224
#: Hosts that only this machine reaches; any other ``--host`` gets a warning at start.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServeError(Exception):
    """A request kcnn refuses: ``status`` (HTTP 4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class ServedModel:
    """A loaded :class:`kcnn.prediction.Classifier`, its card as ``GET /models`` lists it, and its lock."""

    def __init__(self, clf):
        self.clf, self.lock = clf, threading.Lock()

    def card(self) -> dict:
        clf = self.clf
        return {"name": clf.name, "file": str(clf.path), "dataset": clf.dataset, "input_shape": list(clf.input_shape),
                "class_names": list(clf.class_names), "digit_style": clf.digit_style, "input_rule": clf.input_rule}

    def predict(self, image, top_k: int, explain: bool) -> dict:
        """The response of ``POST /predict`` for one PIL image (:func:`kcnn.images.decode_image`)."""
        clf = self.clf
        with self.lock:
            (result,) = predict([image], [clf], top_k=min(top_k, len(clf.class_names)))
            answer = {"model": clf.name, "labels": result["top_k"], "preprocessed_shape": list(clf.input_shape)}
            if explain:
                x = to_model_input(image, clf.input_shape, clf.digit_style)
                heatmap, _ = gradcam(clf.model, x)
                overlay = (gradcam_overlay(x, heatmap) * 255).round().astype(np.uint8)  # as kcnn viz gradcam
                answer.update(preprocessed=_png_data_url(np.repeat(x, 3 // x.shape[-1], axis=-1)),
                              gradcam=_png_data_url(overlay))
        return answer


def _png_data_url(rgb) -> str:
    """``data:image/png;base64,...`` of ``rgb`` ``(H, W, 3)`` uint8, scaled up to :data:`PREVIEW_SIDE`
    with nearest-neighbour sampling so that each model pixel stays a visible square."""
    im = Image.fromarray(rgb)
    scale = max(1, PREVIEW_SIDE // max(im.size))
    im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def load_models(paths) -> dict:
    """``{name: ServedModel}`` of ``paths`` (``.keras`` files), or of every shipped model when empty.

    Raises:
        kcnn.prediction.ModelFileError: a file cannot be used, or none is given and none is shipped.
        UsageError: two models have the same name (file stem).
    """
    models = {}
    for clf in load_classifiers(paths):
        if clf.name in models:
            raise UsageError(f"two models are named {clf.name!r} ({models[clf.name].clf.path}, {clf.path}); "
                             "rename one file")
        models[clf.name] = ServedModel(clf)
    return models


def create_app(models: dict):
    """The FastAPI application serving ``models`` (:func:`load_models`)."""
    app = FastAPI(title="kcnn", docs_url=None, redoc_url=None)
    page = (Path(__file__).parent / "static" / "index.html").read_text()

    @app.exception_handler(ServeError)
    async def refused(request, error: ServeError):
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def not_served(request, error: StarletteHTTPException):  # 404, 405: the same shape as the others
        return JSONResponse({"error": f"{request.method} {request.url.path}: {error.detail}"},
                            status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error: RequestValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or "request"
        return JSONResponse({"error": f"{where}: {first['msg']}"}, status_code=422)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": len(models)}

    @app.get("/models")
    async def list_models():
        return [served.card() for served in models.values()]

    @app.post("/predict")
    async def predict(request: Request, model: str | None = None, top_k: int = 5, explain: bool = False):
        if model is None and len(models) > 1:
            raise ServeError(400, f"several models are loaded; choose one with ?model= ({', '.join(models)})")
        served = models.get(model or next(iter(models)))
        if served is None:
            raise ServeError(404, f"no model {model!r}; loaded: {', '.join(models)}")
        if top_k < 1:
            raise ServeError(422, f"top_k must be >= 1. Received: top_k={top_k}")
        data, name = await read_upload(request)

        try:
            image = await run_in_threadpool(decode_image, data, name)
        except ImageError as e:
            raise ServeError(413 if "decompression-bomb" in str(e) else 422, str(e)) from None
        return await run_in_threadpool(served.predict, image, top_k, explain)

    return app


async def read_upload(request) -> tuple[bytes, str]:
    """``(bytes, file name)`` of the image in ``request``: the first file of a multipart form, else
    the raw body. Reads at most :data:`MAX_UPLOAD_BYTES` (a larger ``Content-Length`` is refused
    before reading).

    Raises:
        ServeError: 413 for a body over the limit; 400 for a form without a file.
    """
    too_big = ServeError(413, f"upload larger than the limit of {MAX_UPLOAD_BYTES // 2**20} MiB")
    if int(request.headers.get("content-length") or 0) > MAX_UPLOAD_BYTES:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            raise too_big
        chunks.append(chunk)
    body = b"".join(chunks)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body, "upload"

    async def replay():  # the form parser reads the body already read, from a fresh request
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form()
    files = [value for value in form.values() if hasattr(value, "read")]
    if not files:
        raise ServeError(400, "the form has no file; send the image as a file field or as the raw body")
    return await files[0].read(), files[0].filename or "upload"


def check_port(host: str, port: int) -> None:
    """Raise ``UsageError`` when ``host:port`` cannot be bound (in use, or not this machine's address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UsageError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or "
                             f"--host") from None


def serve(paths=(), host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Load ``paths`` (none: the shipped models) and serve them until Ctrl-C (uvicorn, one process).
    The address goes to the ``kcnn.serve`` logger (INFO), a warning for a host outside loopback (WARNING).

    Raises:
        UsageError: the port cannot be bound; a model cannot be loaded (``ModelFileError``).
    """
    check_port(host, port)
    models = load_models(paths)
    if host not in LOOPBACK:
        log.warning(f"Warning: --host {host} serves these models to every machine that can reach this one; "
            "kcnn serve has no authentication")
    url_host = f"[{host}]" if ":" in host else host
    log.info(f"kcnn serve: http://{url_host}:{port}/ with {', '.join(models)}; API: POST /predict, GET /models, "
        "GET /health; Ctrl-C stops")
    uvicorn.run(create_app(models), host=host, port=port, log_level="warning")
