"""The app in a real Chromium (Debian package, driven by Playwright): chat and live generation.

Locally the test skips when Chromium or Playwright is missing; in CI (CI=true) it fails instead,
so a broken browser set-up can never pass silently.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from PIL import Image

from app.browser import ask, chromium_page, find_chromium, generate, open_app, set_number
from app.testing import serve

pytestmark = pytest.mark.browser
EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "three_triangles.png"
STEPS = 12


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; CI must install it (apt-get install -y chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def page(tiny_model_dir):
    chromium = find_chromium()
    if chromium is None:
        _missing("Chromium is not installed (no $CHROMIUM, no chromium on PATH, no /usr/bin/chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the playwright Python package is not installed")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with serve(tiny_model_dir) as (url, _), chromium_page(chromium) as page:
        open_app(page, url)
        yield page
    torch.set_num_threads(before)


def test_chat_answer_grows_in_the_browser(page, tmp_path):
    assert "device cpu" in page.inner_text("#model-status")  # the model line is shown once loaded
    set_number(page, "temperature", 1.5)  # the random tiny model writes spaces (and so streams) when sampling
    set_number(page, "max-new-tokens", 300)
    lengths = ask(page, "How many triangles are there?", image=EXAMPLE)
    # the bubble changed many times while the answer streamed (markdown may re-flow a partial answer)
    assert len(set(lengths)) >= 5 and lengths[-1] > min(lengths)
    assert page.locator("#chatbot .user img").count() == 1  # the uploaded image sits in the user's message
    assert page.evaluate("window.__inputLocked")  # no second message while answering; open again after:
    assert page.locator("#chat-input textarea").is_enabled()
    assert "tokens/s" in page.inner_text("#chat-stats")
    page.screenshot(path=str(tmp_path / "chat.png"))
    assert Image.open(tmp_path / "chat.png").size == (1280, 900)
    page.locator("#chat-clear").click()
    page.wait_for_function("() => !document.querySelector('#chatbot .bot')")
    assert page.inner_text("#chat-stats").strip() == ""


def test_preview_updates_every_step_and_the_gallery_fills(page, tmp_path):
    sources = generate(page, "a red circle", steps=STEPS, num_images=2)
    assert len(sources) >= STEPS  # a new preview image for every step
    box = page.locator("#preview img").bounding_box()
    assert box["width"] >= 256 and box["height"] >= 256  # 65 x 32 px enlarged to be seen
    assert page.evaluate("getComputedStyle(document.querySelector('#preview img')).imageRendering") == "pixelated"
    assert page.locator("#gallery img").count() >= 2
    assert page.evaluate("window.__buttonLocked")  # no second click while it ran; unlocked again after:
    assert page.locator("#generate-btn").is_enabled() and page.locator("#prompt textarea").is_enabled()
    assert f"{STEPS} steps" in page.inner_text("#gen-status")
    page.screenshot(path=str(tmp_path / "generate.png"))
    assert Image.open(tmp_path / "generate.png").size == (1280, 900)


def test_a_missing_browser_fails_in_ci_and_skips_locally(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must install it"):
        _missing("Chromium is not installed")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="Chromium is not installed"):
        _missing("Chromium is not installed")
