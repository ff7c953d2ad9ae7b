"""Screenshot of kcnn serve's page after drawing a digit, for docs/images/serve.png (not a test).

Starts ``kcnn serve`` (the shipped models) on a free loopback port, opens the page in headless
Chromium (Debian's ``chromium`` package), draws a "4" on the canvas with mouse events sent over the
DevTools protocol (the page predicts when the stroke ends), waits for the answer, and saves a PNG.
Needs ``chromium`` on the PATH and ``pip install websocket-client``.

    .venv/bin/python scripts/screenshot_serve.py docs/images/serve.png
"""

from __future__ import annotations

import base64
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


# A "4" in canvas pixels (the canvas is 256x256 at page position of its element): two strokes.
STROKES = [[(150, 40), (60, 160), (190, 160)], [(150, 40), (150, 230)]]


@click.command()
@click.argument("output", default="docs/images/serve.png")
@click.option("--model", default="mnist", show_default=True, help="Model chosen in the page's menu.")
def main(output, model):
    port, debug_port = free_port(), free_port()
    server = subprocess.Popen([sys.executable, "-m", "kcnn", "serve", "--port", str(port)])
    profile = tempfile.mkdtemp(prefix="kcnn-chromium-")
    browser = subprocess.Popen(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                f"--remote-debugging-port={debug_port}", "--remote-allow-origins=*", f"--user-data-dir={profile}",
                                "about:blank"], stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        targets = json.loads(wait_for(f"http://127.0.0.1:{debug_port}/json"))
        page = DevTools(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        page.call("Emulation.setDeviceMetricsOverride", width=900, height=600, deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        time.sleep(2)
        page.call("Runtime.evaluate", expression=f"document.getElementById('model').value = '{model}'")
        box = page.call("Runtime.evaluate", returnByValue=True, expression=(
            "(() => { const r = document.getElementById('pad').getBoundingClientRect(); "
            "return [r.left, r.top]; })()"))["result"]["value"]
        for stroke in STROKES:
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
        time.sleep(2)
        shot = page.call("Page.captureScreenshot", format="png")["data"]
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        with open(output, "wb") as f:
            f.write(base64.b64decode(shot))
        print(f"wrote {output}")
    finally:
        browser.terminate()
        server.terminate()
        browser.wait(timeout=10)
        server.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
