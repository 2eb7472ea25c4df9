"""Drive the app in a real Chromium through Playwright (the browser test and the README screenshots).

Chromium is the distribution's package (Debian: ``apt-get install chromium``, /usr/bin/chromium),
started headless by Playwright with ``executable_path``; nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}

# Record every length the last answer bubble takes and whether the message box was locked meanwhile;
# every new source of the live preview and whether the Generate button was locked during the run.
_WATCH_CHAT = """() => { window.__answerLengths = []; const root = document.querySelector('#chatbot');
  new MutationObserver(() => { const bots = root.querySelectorAll('.bot');
    const n = bots.length ? bots[bots.length - 1].innerText.length : -1;
    const seen = window.__answerLengths; if (n > 0 && seen[seen.length - 1] !== n) seen.push(n); })
  .observe(root, {subtree: true, childList: true, characterData: true});
  window.__inputLocked = false; const box = document.querySelector('#chat-input');
  new MutationObserver(() => { if (box.querySelector('textarea').disabled) window.__inputLocked = true; })
  .observe(box, {subtree: true, attributes: true}); }"""
_WATCH_PREVIEW = """() => { window.__previewSources = []; const root = document.querySelector('#preview');
  new MutationObserver(() => { const img = root.querySelector('img'); const src = img && img.getAttribute('src');
    const seen = window.__previewSources; if (src && seen[seen.length - 1] !== src) seen.push(src); })
  .observe(root, {subtree: true, childList: true, attributes: true});
  window.__buttonLocked = false; const button = document.querySelector('#generate-btn');
  new MutationObserver(() => { if (button.disabled) window.__buttonLocked = true; })
  .observe(button, {attributes: true}); }"""
_INPUT_READY = """() => { const box = document.querySelector('#chat-input textarea');
  return box && !box.disabled && box.value === '' && !document.querySelector('#chat-input .pending'); }"""


def find_chromium() -> str | None:
    """$CHROMIUM, else ``chromium`` on PATH, else /usr/bin/chromium; None when there is none."""
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@contextmanager
def chromium_page(executable: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport=VIEWPORT)
        finally:
            browser.close()


def open_app(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#chat-input textarea")
    page.wait_for_function("() => document.querySelector('#model-status').innerText.includes('device')")


def set_number(page: Any, elem_id: str, value: float) -> None:
    """Type a value into a slider's number box (what a user does to pick an exact value)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def move_slider(page: Any, elem_id: str, value: int) -> None:
    """Move an integer slider (step 1) to ``value`` with the arrow keys, as a keyboard user does."""
    handle = page.locator(f"#{elem_id} input[type=range]")
    current = int(float(handle.input_value()))
    handle.focus()
    for _ in range(abs(value - current)):
        handle.press("ArrowRight" if value > current else "ArrowLeft")
    page.wait_for_function(f"() => document.querySelector('#{elem_id} input[type=number]').value == '{value}'")


def ask(page: Any, question: str, image: str | Path | None = None, timeout_s: float = 60) -> list[int]:
    """Send a question (with an image) and wait for the speed line; returns the answer lengths seen."""
    if image is not None:
        page.locator("#chat-input input[type=file]").set_input_files(str(image))
        page.wait_for_selector("#chat-input img")  # the thumbnail of the attached image
    page.locator("#chat-input textarea").fill(question)
    page.evaluate(_WATCH_CHAT)
    page.locator("#chat-input textarea").press("Enter")
    page.wait_for_function("() => document.querySelector('#chat-stats').innerText.includes('tokens/s')",
                           timeout=timeout_s * 1000)
    page.wait_for_function(_INPUT_READY, timeout=10_000)  # the box is emptied and enabled again
    page.mouse.move(0, 0)
    return page.evaluate("window.__answerLengths")


def refusal(page: Any, expected: str, timeout_s: float = 30) -> str:
    """Wait for an error toast containing ``expected``, close it, and return its text."""
    toast = page.locator(".toast-body", has_text=expected).last
    toast.wait_for(timeout=timeout_s * 1000)
    text = toast.inner_text()
    toast.locator(".toast-close").first.click()  # closed by hand, so that the next refusal's toast stands alone
    toast.wait_for(state="detached", timeout=5_000)
    return text


def usable(page: Any, *selectors: str, timeout_s: float = 10) -> None:
    """Wait until every element matched by ``selectors`` is enabled (raises on timeout)."""
    check = " && ".join(f"!document.querySelector({sel!r}).disabled" for sel in selectors)
    page.wait_for_function(f"() => {check}", timeout=timeout_s * 1000)


def generate(page: Any, prompt: str, steps: int, num_images: int = 1, timeout_s: float = 120) -> list[str]:
    """Run a generation from the Generate tab and wait for the gallery; returns the preview sources seen."""
    page.get_by_role("tab", name="Generate").click()
    page.locator("#prompt textarea").fill(prompt)
    move_slider(page, "steps", steps)
    set_number(page, "num-images", num_images)
    page.evaluate(_WATCH_PREVIEW)
    page.locator("#generate-btn").click()
    page.wait_for_function(f"() => document.querySelectorAll('#gallery img').length >= {num_images}",
                           timeout=timeout_s * 1000)
    page.wait_for_function("() => !document.querySelector('#generate-btn').disabled", timeout=10_000)
    page.mouse.move(0, 0)
    time.sleep(0.3)  # let the last images finish painting before a screenshot
    return page.evaluate("window.__previewSources")
