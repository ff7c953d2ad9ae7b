"""kcnn serve's page in headless Chromium, driven as a person would through the DevTools protocol: a
drawing goes to the digit model by default, changing the model predicts again, a bad file clears the
result and says why. Needs Debian's chromium and websocket-client (.ci/run installs both)."""

import importlib.util
import shutil
import sys

import pytest
from helpers import REPO

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("chromium") is None or importlib.util.find_spec("websocket") is None,
                                 reason="needs chromium on the PATH and websocket-client")]

sys.path.insert(0, str(REPO / "scripts"))
from screenshot_serve import draw, served_page  # noqa: E402

SHOWN = """JSON.stringify({title: document.getElementById('title').textContent,
  bars: [...document.querySelectorAll('.bar .name')].map((e) => e.textContent),
  error: document.getElementById('error').textContent, seen: document.getElementById('seen').src})"""


def shown(page):
    import json

    return json.loads(page.value(SHOWN))


def test_the_page_sends_a_drawing_to_the_digit_model_predicts_again_and_clears_on_errors(tmp_path):
    with served_page() as page:
        menu = page.value("document.getElementById('model').selectedOptions[0].textContent")
        assert menu == "auto: drawing → mnist, photo → cifar10"  # the default is shown
        draw(page)  # a "4"
        page.wait_for("document.getElementById('title').textContent.includes('mnist')")
        first = shown(page)
        assert first["title"] == "Prediction of mnist for drawing.png" and first["bars"][0] == "4"
        assert len(first["bars"]) == 5 and first["seen"].startswith("data:image/png")

        page.value("const m = document.getElementById('model'); m.value = 'cifar10'; m.onchange()")
        page.wait_for("document.getElementById('title').textContent.includes('cifar10')")
        assert shown(page)["title"] == "Prediction of cifar10 for drawing.png"
        page.value("const k = document.getElementById('topk'); k.value = '3'; k.onchange()")
        page.wait_for("document.querySelectorAll('.bar').length === 3")

        notes = tmp_path / "notes.png"
        notes.write_text("not an image")
        node = page.call("DOM.querySelector", nodeId=page.call("DOM.getDocument")["root"]["nodeId"],
                         selector="#file")["nodeId"]
        page.call("DOM.setFileInputFiles", files=[str(notes)], nodeId=node)
        page.value("document.getElementById('file').dispatchEvent(new Event('change'))")
        page.wait_for("document.getElementById('error').textContent.length > 0")
        failed = shown(page)
        assert failed["error"] == "notes.png: not an image PIL can read"
        assert failed["bars"] == [] and failed["title"] == "Prediction" and failed["seen"] == ""
