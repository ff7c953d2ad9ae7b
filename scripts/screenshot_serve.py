"""Screenshot of kcnn serve's page after drawing a digit, for docs/images/serve.png; its page helpers
(:func:`served_page`, :func:`draw`) also drive ``tests/test_serve_page.py``.

Starts ``kcnn serve`` (the shipped models) on a free loopback port, opens the page in headless
Chromium (Debian's ``chromium`` package), draws a "4" on the canvas with mouse events sent over the
DevTools protocol (the page predicts when the stroke ends), waits for the answer, and saves a PNG.
Needs ``chromium`` on the PATH and ``pip install websocket-client``.

    .venv/bin/python scripts/screenshot_serve.py docs/images/serve.png
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import click


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 120) -> bytes:
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


class DevTools:
    """A minimal Chrome DevTools protocol client: ``call(method, **params)`` waits for its answer."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws, self.next_id = websocket.create_connection(ws_url, timeout=60), 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def value(self, expression: str):
        """The value of a JavaScript expression evaluated in the page."""
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 60):
        """Wait until a JavaScript expression is truthy in the page; returns its value."""
        deadline = time.time() + seconds
        while not (value := self.value(expression)):
            if time.time() > deadline:
                raise TimeoutError(f"the page never made {expression} true")
            time.sleep(0.2)
        return value


# A "4" in canvas pixels (the canvas is 256x256 at page position of its element): two strokes.
STROKES = [[(150, 40), (60, 160), (190, 160)], [(150, 40), (150, 230)]]


@contextlib.contextmanager
def served_page(width: int = 1150, height: int = 600):
    """``kcnn serve`` (the shipped models) on a free loopback port and its page open in headless
    Chromium; yields the page's :class:`DevTools`. Both processes end with the block."""
    port, debug_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-m", "kcnn", "serve", "--port", str(port)])
    profile = tempfile.mkdtemp(prefix="kcnn-chromium-")
    browser = subprocess.Popen(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                f"--remote-debugging-port={debug_port}", "--remote-allow-origins=*",
                                f"--user-data-dir={profile}", "about:blank"], stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        targets = json.loads(wait_for(f"http://127.0.0.1:{debug_port}/json"))
        page = DevTools(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        page.wait_for("document.getElementById('model').options.length > 0")
        yield page
    finally:
        browser.terminate()
        server.terminate()
        browser.wait(timeout=10)
        server.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


def draw(page: DevTools, strokes=STROKES) -> None:
    """Draw ``strokes`` (canvas pixels) on the page's canvas with mouse events; the page predicts
    when each stroke ends."""
    box = page.value("(() => { const r = document.getElementById('pad').getBoundingClientRect(); "
                     "return [r.left, r.top]; })()")
    for stroke in strokes:
        points = [(box[0] + x, box[1] + y) for x, y in stroke]
        page.call("Input.dispatchMouseEvent", type="mousePressed", x=points[0][0], y=points[0][1],
                  button="left", clickCount=1)
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            for t in range(1, 21):
                page.call("Input.dispatchMouseEvent", type="mouseMoved", x=x0 + (x1 - x0) * t / 20,
                          y=y0 + (y1 - y0) * t / 20, button="left", buttons=1)
        page.call("Input.dispatchMouseEvent", type="mouseReleased", x=points[-1][0], y=points[-1][1],
                  button="left", clickCount=1)
        time.sleep(1.5)


@click.command()
@click.argument("output", default="docs/images/serve.png")
@click.option("--model", default="", show_default=True, help="Model chosen in the page's menu ('': auto).")
def main(output, model):
    with served_page() as page:
        page.value(f"document.getElementById('model').value = '{model}'")
        draw(page)
        time.sleep(2)
        shot = page.call("Page.captureScreenshot", format="png")["data"]
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        with open(output, "wb") as f:
            f.write(base64.b64decode(shot))
        print(f"wrote {output}")


if __name__ == "__main__":
    main()
