"""The app in a real Chromium (Debian package, driven by Playwright): chat and live generation.

Locally the test skips when Chromium or Playwright is missing; in CI (CI=true) it fails instead,
so a broken browser set-up can never pass silently.
"""

from __future__ import annotations

import io
import os
import time
from contextlib import contextmanager

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from helpers_images import huge_png_header, text_as_png, truncated_png
from PIL import Image

from janusflow_core import GenerationPipeline
from tools.browser import (
    _INPUT_READY,
    _WATCH_CHAT,
    _WATCH_PREVIEW,
    ask,
    chromium_page,
    find_chromium,
    generate,
    move_slider,
    open_app,
    refusal,
    set_number,
    usable,
)
from tools.serve import serve

pytestmark = pytest.mark.browser
EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "three_triangles.png"
STEPS = 12
CLEAR = "#chatbot button[aria-label=Clear]"  # the chatbot's bin icon, the Chat tab's one Clear control


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
    with serve(tiny_model_dir) as (url, engine), chromium_page(chromium) as page:
        open_app(page, url)
        page.engine = engine  # for the tests that make the model fail mid-stream
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
    page.locator(CLEAR).click()
    page.wait_for_function("() => !document.querySelector('#chatbot .bot')")
    page.wait_for_function("() => document.querySelector('#chat-stats').innerText.trim() === ''")  # from the server


def test_previews_update_while_it_runs_and_the_gallery_fills(page, tmp_path):
    with hooked(page.engine, lambda *_: time.sleep(0.1)):  # 12 steps take over 1.2 s, as a larger model's would
        sources = generate(page, "a red circle", steps=STEPS, num_images=2)
    assert len(sources) >= 5  # the newest step's preview, several times a second
    box = page.locator("#preview img").bounding_box()
    assert box["width"] >= 256 and box["height"] >= 256  # 65 x 32 px enlarged to be seen
    assert page.evaluate("getComputedStyle(document.querySelector('#preview img')).imageRendering") == "pixelated"
    assert page.locator("#gallery img").count() >= 2
    assert page.evaluate("window.__buttonLocked")  # no second click while it ran; unlocked again after:
    assert page.locator("#generate-btn").is_enabled() and page.locator("#prompt textarea").is_enabled()
    assert f"{STEPS} steps" in page.inner_text("#gen-status")
    page.screenshot(path=str(tmp_path / "generate.png"))
    assert Image.open(tmp_path / "generate.png").size == (1280, 900)


BOX, SEND = "#chat-input textarea", "#chat-input [data-testid=submit-button]"
PROMPT, RUN = "#prompt textarea", "#generate-btn"


def not_covered(page, selector: str) -> bool:
    """Whether the middle of the last element matching ``selector`` is on top (nothing lies over it)."""
    return page.evaluate(f"""() => {{ const all = document.querySelectorAll({selector!r});
      const el = all[all.length - 1]; const r = el.getBoundingClientRect();
      const top = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
      return el === top || el.contains(top); }}""")


def send(page, text: str = "", files: list[Path] | None = None) -> None:
    for f in files or []:
        page.locator("#chat-input input[type=file]").set_input_files(str(f))
    if files:
        page.wait_for_function(f"() => document.querySelectorAll('#chat-input .delete-button').length == {len(files)}")
    page.locator(BOX).fill(text)
    page.locator(BOX).press("Enter")


def drop_attachments(page) -> None:
    while page.locator("#chat-input .delete-button").count():
        page.locator("#chat-input .delete-button").first.click()


def test_every_chat_refusal_leaves_the_page_usable_and_the_conversation_readable(page, tmp_path):
    page.get_by_role("tab", name="Chat").click()
    set_number(page, "temperature", 1.5)
    set_number(page, "max-new-tokens", 20)
    ask(page, "hello")  # a conversation to keep readable
    bubbles = page.locator("#chatbot .message-row").count()
    refusals = [
        ("what is this?", [text_as_png(tmp_path / "notes.png")], "notes.png is not a readable image"),
        ("what is this?", [truncated_png(tmp_path / "cut.png")], "cut.png could not be decoded as an image"),
        ("what is this?", [huge_png_header(tmp_path / "big.png", 8000, 8000)],
         "big.png is 8000 x 8000 = 64.0 megapixels; the limit is 50 megapixels"),
        ("", [], "Type a question, or attach an image to ask about."),
        ("   ", [], "Type a question, or attach an image to ask about."),
    ]
    for text, files, expected in refusals:
        send(page, text, files)
        page.locator(".toast-body", has_text=expected).wait_for(timeout=30_000)
        usable(page, BOX, SEND)  # the message box is open again at once
        chat_box, toasts = page.locator("#chatbot").bounding_box(), page.locator(".toast-body").bounding_box()
        assert toasts["y"] + toasts["height"] < chat_box["y"] or toasts["x"] > chat_box["x"] + chat_box["width"]
        assert not_covered(page, "#chatbot .bot")  # the answer is on top: no badge over the conversation
        assert page.locator("#chatbot .message-row").count() == bubbles  # nothing was added or lost
        assert page.locator("#chatbot [data-testid=status-tracker] .error").count() == 0
        refusal(page, expected)
        drop_attachments(page)
    # the one Clear control of the Chat tab unlocks too, even right after a refusal
    send(page, "")
    refusal(page, "Type a question")
    clears = page.evaluate("""() => [...document.querySelectorAll('#chat-tab button')].filter(b =>
      b.checkVisibility({opacityProperty: true, visibilityProperty: true})
      && /clear/i.test(b.innerText + ' ' + (b.getAttribute('aria-label') || ''))).map(b => b.outerHTML.slice(0, 99))""")
    assert len(clears) == 1 and page.locator(CLEAR).count() == 1, clears
    page.locator(CLEAR).click()
    page.wait_for_function("() => !document.querySelector('#chatbot .bot')")
    usable(page, BOX)
    ask(page, "and now?")  # a good request in the same page
    assert page.locator("#chatbot .bot").count() == 1 and "tokens/s" in page.inner_text("#chat-stats")


def test_every_generation_refusal_leaves_the_page_usable(page):
    page.get_by_role("tab", name="Generate").click()
    page.locator(PROMPT).fill("")
    page.locator(RUN).click()
    refusal(page, "The prompt is empty; write some text")
    usable(page, RUN, PROMPT)
    page.locator(PROMPT).fill("Ω" * 300)  # 600 byte tokens; the tiny model's limit is 495
    page.wait_for_function("() => document.querySelector('#prompt-tokens').innerText.includes('too long')")
    counted = page.inner_text("#prompt-tokens")
    n, limit = counted.split(" tokens")[0].split(" / ")
    assert int(n) > int(limit)
    page.locator(PROMPT).press("Enter")  # Enter sends here as in the chat box
    refusal(page, f"The prompt is {n} tokens; the limit is {limit}. Shorten it.")
    usable(page, RUN, PROMPT)
    status = page.inner_text("#gen-status")
    page.locator(PROMPT).fill("a red")
    page.locator(PROMPT).press("Shift+Enter")  # a new line, not a run
    page.locator(PROMPT).type("circle")
    assert page.locator(PROMPT).input_value() == "a red\ncircle" and page.inner_text("#gen-status") == status
    page.wait_for_function(f"() => /^\\d+ \\/ {limit} tokens$/.test("
                           "document.querySelector('#prompt-tokens').innerText)")
    generate(page, "a red circle", steps=3)  # then a good request in the same page
    assert "Done" in page.inner_text("#gen-status")


@contextmanager
def hooked(engine, hook):
    """Run ``hook`` after every forward pass of the language model (one token, or one solver step)."""
    handle = engine.get().chat.model.language_model.model.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def failing_after(engine, calls: int):
    """Make the language model raise on its ``calls``-th forward pass from now (a crash mid-stream)."""
    count = [0]

    def hook(*_):
        count[0] += 1
        if count[0] >= calls:
            raise RuntimeError("injected failure")

    return hooked(engine, hook)


def test_a_failure_in_the_middle_of_a_stream_unlocks_everything(page):
    page.get_by_role("tab", name="Chat").click()
    set_number(page, "temperature", 1.5)  # sampled: a long answer, whatever ran before
    set_number(page, "max-new-tokens", 300)
    with failing_after(page.engine, 40):
        page.evaluate(_WATCH_CHAT)
        send(page, "describe")
        refusal(page, "The answer failed: injected failure")
        assert page.evaluate("window.__answerLengths").__len__() >= 1  # part of the answer had been shown
        usable(page, BOX, SEND)
    ask(page, "again")
    assert "tokens/s" in page.inner_text("#chat-stats")

    page.get_by_role("tab", name="Generate").click()
    page.locator(PROMPT).fill("a red circle")
    move_slider(page, "steps", 10)
    # the prompt pass, then five Euler steps of 0.1 s each (time for previews to stream), then a failure
    with hooked(page.engine, lambda *_: time.sleep(0.1)), failing_after(page.engine, 7):
        page.evaluate(_WATCH_PREVIEW)
        page.locator(RUN).click()
        refusal(page, "Generation failed: injected failure")
        assert len(page.evaluate("window.__previewSources")) >= 1  # previews had streamed
        usable(page, RUN, PROMPT)
    generate(page, "a green triangle", steps=3)
    assert "Done" in page.inner_text("#gen-status")


def test_clear_and_stop_in_the_middle_of_a_run_leave_everything_usable(page):
    page.get_by_role("tab", name="Chat").click()
    set_number(page, "temperature", 1.5)  # sampled: a long answer, whatever ran before
    set_number(page, "max-new-tokens", 300)
    with hooked(page.engine, lambda *_: time.sleep(0.03)):  # 300 tokens would take 9 s
        page.evaluate(_WATCH_CHAT)
        send(page, "describe")
        page.wait_for_function("() => window.__answerLengths.length >= 2")
        page.locator(CLEAR).click()  # cancels the answer
        page.wait_for_function("() => !document.querySelector('#chatbot .message-row')")
        usable(page, BOX, SEND)

        page.get_by_role("tab", name="Generate").click()
        page.locator(PROMPT).fill("a red circle")
        move_slider(page, "steps", 40)
        page.evaluate(_WATCH_PREVIEW)
        page.locator(RUN).click()
        page.wait_for_function("() => window.__previewSources.length >= 2")
        page.locator("#generate-stop").click()
        page.wait_for_function("() => document.querySelector('#gen-status').innerText.includes('Stopped at step')")
        usable(page, RUN, PROMPT)
    page.get_by_role("tab", name="Chat").click()
    set_number(page, "max-new-tokens", 20)
    ask(page, "hello again")  # the cleared answer's run has ended: this one is not refused as a second run
    assert page.locator("#chatbot .bot").count() == 1


try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the page fixture skips (or fails in CI) before any test needs it
    PlaywrightTimeout = TimeoutError


def set_slider(page, elem_id: str, value: float, tries: int = 5) -> None:
    """Type a slider's value and wait until the slider itself holds it (a click right after the typing could
    otherwise send the old value); typed again if the slider was still being laid out (an accordion that has
    just opened renders its contents then) and dropped it."""
    holds = f"() => Number(document.querySelector('#{elem_id} input[type=range]').value) == {value}"
    page.locator(f"#{elem_id} input[type=range]").wait_for(state="visible")
    for attempt in range(tries):
        set_number(page, elem_id, value)
        try:
            page.wait_for_function(holds, timeout=3_000)
            break
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise
    page.locator(f"#{elem_id} input[type=number]").blur()


def test_generate_from_an_init_image_with_strength_and_a_negative_prompt(page):
    page.get_by_role("tab", name="Generate").click()
    page.locator("#init-accordion").get_by_text("Start from an image").click()
    page.locator("#init-image input[type=file]").set_input_files(str(EXAMPLE))
    page.wait_for_selector("#init-image img")
    page.locator("#negative-prompt textarea").fill("a blue square")
    set_slider(page, "strength", 0)  # bad: 0 would change nothing
    page.locator(PROMPT).fill("a red circle")
    page.locator(RUN).click()
    refusal(page, "Strength must be a number above 0 and at most 1, got 0")
    usable(page, RUN, PROMPT)
    set_slider(page, "strength", 0.5)
    page.locator("#advanced").get_by_text("Advanced").click()
    set_slider(page, "guidance-lo", 0.8)  # bad: LO above HI
    set_slider(page, "guidance-hi", 0.2)
    page.locator(RUN).click()
    refusal(page, "got LO 0.8 above HI 0.2")
    usable(page, RUN, PROMPT)
    set_slider(page, "guidance-lo", 0.2)  # then a good request in the same page
    set_slider(page, "guidance-hi", 0.9)
    set_number(page, "gen-seed", 7)
    generate(page, "a red circle", steps=STEPS)
    status = page.inner_text("#gen-status")
    assert "from the init image at strength 0.5" in status and "seed 7" in status
    src = page.locator("#gallery img").first.get_attribute("src")
    shown = Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")
    cfg = float(page.locator("#cfg input[type=number]").input_value())
    direct = GenerationPipeline(page.engine.get().bundle)(
        "a red circle", steps=STEPS, guidance_scale=cfg, seed=7, init_image=Image.open(EXAMPLE), strength=0.5,
        negative_prompt="a blue square", guidance_interval=(0.2, 0.9))
    assert shown.tobytes() == direct.images[0].tobytes()  # what the page showed is what these settings make


_WATCH_DRAWING = """() => { window.__drawSources = []; const root = document.querySelector('#chatbot');
  new MutationObserver(() => { const bots = root.querySelectorAll('.bot'); const last = bots[bots.length - 1];
    const img = last && last.querySelector('img'); const src = img && img.getAttribute('src');
    const seen = window.__drawSources; if (src && seen[seen.length - 1] !== src) seen.push(src); })
  .observe(root, {subtree: true, childList: true, attributes: true});
  window.__drawLocked = false; const button = document.querySelector('#chat-draw');
  new MutationObserver(() => { if (button.disabled) window.__drawLocked = true; })
  .observe(button, {attributes: true}); }"""


def test_draw_in_the_chat_then_ask_about_the_drawing(page):
    page.get_by_role("tab", name="Generate").click()
    move_slider(page, "steps", 2 * STEPS)  # a drawing takes the Generate tab's settings (from the test before:
    # the init image at strength 0.5, so 12 of the 24 steps run)
    page.get_by_role("tab", name="Chat").click()
    if page.locator(CLEAR).count():
        page.locator(CLEAR).click()
        page.wait_for_function("() => !document.querySelector('#chatbot .message-row')")
    set_number(page, "max-new-tokens", 20)
    send(page, "/draw")  # bad: nothing to draw
    refusal(page, "Type what to draw")
    usable(page, BOX, SEND, "#chat-draw")
    assert page.locator("#chatbot .message-row").count() == 0
    page.locator(BOX).fill("a red circle")
    with hooked(page.engine, lambda *_: time.sleep(0.1)):  # 12 steps take over 1.2 s: previews stream
        page.evaluate(_WATCH_DRAWING)
        page.locator("#chat-draw").click()
        page.wait_for_function("() => document.querySelector('#chat-stats').innerText.includes('Drawn in')",
                               timeout=120_000)
    page.wait_for_function(_INPUT_READY, timeout=10_000)  # the box is emptied and open again
    usable(page, "#chat-draw")
    sources = page.evaluate("window.__drawSources")
    assert len(sources) >= 3 and page.evaluate("window.__drawLocked")  # previews, then the image; locked meanwhile
    assert page.locator("#chatbot .bot img").count() == 1 and "/draw a red circle" in page.inner_text("#chatbot .user")
    caption = page.inner_text("#chatbot .bot")
    assert "seed 7" in caption and "from the init image at strength 0.5" in caption and "12 steps" in caption
    box = page.locator("#chatbot .bot img").bounding_box()
    assert box["width"] >= 128  # a 32 px image, enlarged to be seen
    ask(page, "How many circles are there?")  # a question about the drawing, in the same conversation
    assert page.locator("#chatbot .bot").count() == 2 and page.locator("#chatbot .bot img").count() == 1
    stats = page.inner_text("#chat-stats")
    with_image = page.engine.get().chat.prompt_length(
        [{"role": "user", "content": "How many circles are there?", "images": [Image.new("RGB", (32, 32))]}])
    assert f"prompt {with_image} tokens" in stats  # the model read the drawn image with the question
    with hooked(page.engine, lambda *_: time.sleep(0.2)):  # typed with the prefix this time, then stopped
        page.evaluate(_WATCH_DRAWING)
        send(page, "/draw a green triangle")
        page.wait_for_function("() => window.__drawSources.length >= 2", timeout=60_000)
        page.locator("#chat-stop").click()
        page.wait_for_function("() => document.querySelector('#chat-stats').innerText.includes('stopped at step')",
                               timeout=60_000)
    usable(page, BOX, SEND, "#chat-draw")
    assert page.locator("#chatbot .bot img").count() == 2 and "Stopped at step" in page.inner_text("#chatbot")


def test_a_missing_browser_fails_in_ci_and_skips_locally(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must install it"):
        _missing("Chromium is not installed")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="Chromium is not installed"):
        _missing("Chromium is not installed")
