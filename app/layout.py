"""The page: a header with the model line, a Chat tab and a Generate tab, and their API endpoints.

Public endpoints (callable with gradio_client, see docs/api.md): ``/chat`` (streams), ``/draw`` (streams),
``/stop_chat``, ``/clear_chat``, ``/generate`` (streams), ``/stop_generate``, ``/random_seed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import APIRouter

from janusflow_core.limits import (
    GUIDANCE,
    GUIDANCE_INTERVAL,
    IMAGES,
    MAX_MESSAGE_CHARS,
    MAX_NEW_TOKENS,
    SEED,
    SHIFT,
    STEPS,
    STRENGTH,
    TEMPERATURE,
    TOP_P,
    check_choice,
    check_number,
)
from janusflow_core.sampling import GUIDANCE as GUIDANCE_RULES
from janusflow_core.sampling import SOLVERS

from .chat import MESSAGE_SHAPE, ChatHandlers
from .components import checked, refuse
from .engine import Engine, EngineError
from .generate import GUIDANCE_NAMES, PREVIEW_MODES, SAMPLER_NAMES, GenerateHandlers
from .inputs import MAX_UPLOAD, check_image_upload, check_text

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"
PROMPT_EXAMPLES = ["a green triangle", "three squares", "a circle above a triangle",
                   "a blue circle and a yellow square", "a square left of a circle"]
MODEL_QUEUE = "model"  # chats: --concurrency at a time
GENERATION_QUEUE = "generation"  # generations: --gen-concurrency at a time, sharing each forward (the batcher)
KEYS = "Enter sends · Shift+Enter: new line"  # the prompt box and the message box alike
PRIVATE = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}

CSS = """
#preview img, #gallery img, #chatbot img, #chat-examples img, #init-image img { image-rendering: pixelated; }
#chatbot .bot img { min-width: 192px; min-height: 192px; object-fit: contain; }  /* a drawing, enlarged */
#preview img { object-fit: contain !important; width: 100%; height: 100%; }
#model-status { font-size: 0.95em; opacity: 0.9; }
#gen-status, #chat-stats { min-height: 1.6em; }
"""
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="sky")


def chat_examples() -> list[list[dict[str, Any]]]:
    index = EXAMPLES_DIR / "examples.json"
    if not index.exists():
        return []
    return [[{"text": e["question"], "files": [str(EXAMPLES_DIR / e["image"])]}]
            for e in json.loads(index.read_text())]


def interactive(on: bool, n: int) -> Callable[[], Any]:
    """An event function that makes its ``n`` outputs usable (``on``) or not."""
    def switch() -> Any:
        updates = tuple(gr.update(interactive=on) for _ in range(n))
        return updates[0] if n == 1 else updates

    return switch


def locked_run(triggers: list[Any], fn: Callable[..., Any], inputs: list[Any], outputs: list[Any], *,
               lock: list[Any], status: Any, **run_options: Any) -> Any:
    """Wire ``triggers`` -> lock ``lock`` -> run ``fn`` -> unlock ``lock``, whatever way the run ends.

    Gradio 6's page runs a ``.then`` step after success (and after a cancel or a lost connection) but
    not after an error, and a ``.failure`` step after an error or a cancel: the unlock is attached to
    both, so the controls come back after a result, a refusal, a failure in the middle of a stream, a
    Stop and a Clear. Unlocking twice (a cancel fires both) is harmless. The run is the public API
    endpoint; the lock and unlock steps are private and skip the queue. Returns the run's event.

    The run's progress and error state go to ``status`` (a status line), with the spinner hidden: gradio
    would otherwise lay an opaque "Error" badge over the outputs (a Chatbot shows it whatever
    ``show_progress`` says) until it is closed. Refusals show as toasts that close themselves.
    """
    run = gr.on(triggers, interactive(False, len(lock)), None, lock, **PRIVATE).then(
        fn, inputs, outputs, show_progress="hidden", show_progress_on=[status], **run_options)
    unlock = interactive(True, len(lock))
    run.then(unlock, None, lock, **PRIVATE)
    run.failure(unlock, None, lock, **PRIVATE)
    return run


def create_demo(engine: Engine, *, preview_height: int = 384) -> gr.Blocks:
    """Build the Blocks app around ``engine`` (nothing is loaded here)."""
    gen = GenerateHandlers(engine)
    chat = ChatHandlers(engine, drawing=gen)  # drawings in the chat share the Generate tab's preview budget
    defaults = engine.sampling_defaults()  # the generation pipeline's: the model's sampling.json

    def model_status() -> Iterator[str]:
        yield engine.status()
        if engine.state != "ready":
            try:
                engine.get()
            except EngineError:
                pass
            yield engine.status()

    with gr.Blocks(title="JanusFlow", delete_cache=(1800, 3600)) as demo:
        gr.Markdown("# JanusFlow\nOne model that reads images and draws them "
                    "([paper](https://arxiv.org/abs/2411.07975)): ask about a picture, or watch a prompt turn "
                    "from noise into an image, step by step.")
        status = gr.Markdown(engine.status(), elem_id="model-status")

        with gr.Tabs():
            with gr.Tab("Chat", id="chat", elem_id="chat-tab"):
                conversation = gr.State([])
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        chatbot = gr.Chatbot(label="Conversation", height=470, elem_id="chatbot", buttons=["copy"],
                                             feedback_options=None, layout="bubble",
                                             placeholder="Upload or paste an image and ask about it, or just chat.")
                        box = gr.MultimodalTextbox(label="Message", file_types=["image"], file_count="multiple",
                                                   placeholder=f"Ask about the image, or /draw a red circle…  ({KEYS})",
                                                   max_plain_text_length=MAX_MESSAGE_CHARS,
                                                   elem_id="chat-input", autofocus=True)
                        # one Clear control: the chatbot's own bin icon (top right, once there is a conversation)
                        with gr.Row():
                            draw = gr.Button("Draw", size="sm", elem_id="chat-draw")  # the Generate tab's settings
                            stop_chat = gr.Button("Stop", variant="stop", size="sm", elem_id="chat-stop")
                        stats = gr.Markdown(label="stats", elem_id="chat-stats")
                    with gr.Column(scale=1, min_width=260):
                        with gr.Accordion("Answer settings", open=True):
                            temperature = gr.Slider(*TEMPERATURE, value=0.0, step=0.05, label="Temperature",
                                                    info="0 = greedy (always the most likely token)",
                                                    elem_id="temperature")
                            top_p = gr.Slider(*TOP_P, value=0.95, step=0.01, label="Top-p", elem_id="top-p")
                            max_new = gr.Slider(*MAX_NEW_TOKENS, value=256, step=1, precision=0,
                                                label="Max new tokens", elem_id="max-new-tokens")
                            chat_seed = gr.Number(value=42, precision=0, minimum=SEED[0], maximum=SEED[1],
                                                  label="Seed", info="used when temperature > 0",
                                                  elem_id="chat-seed")
                        examples = chat_examples()
                        if examples:
                            gr.Examples(examples, inputs=[box], label="Examples (click to load)",
                                        elem_id="chat-examples")

            with gr.Tab("Generate", id="generate", elem_id="generate-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=300):
                        prompt = gr.Textbox(label="Prompt", lines=1, max_lines=6, max_length=MAX_MESSAGE_CHARS,
                                            placeholder=f"a blue circle and a yellow square  ({KEYS})",
                                            elem_id="prompt")
                        prompt_tokens = gr.Markdown(gen.token_line(""), elem_id="prompt-tokens")
                        negative = gr.Textbox(label="Negative prompt", lines=1, max_lines=3,
                                              max_length=MAX_MESSAGE_CHARS, elem_id="negative-prompt",
                                              placeholder="what the image should not be (optional), e.g. red")
                        with gr.Row():
                            run = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                            stop_gen = gr.Button("Stop", variant="stop", elem_id="generate-stop")
                        cfg = gr.Slider(*GUIDANCE, value=defaults.guidance_scale, step=0.1, label="CFG",
                                        info="classifier-free guidance weight", elem_id="cfg")
                        steps = gr.Slider(*STEPS, value=defaults.steps, step=1, precision=0, label="Steps",
                                          elem_id="steps")
                        with gr.Row(equal_height=True):
                            gen_seed = gr.Number(value=42, precision=0, minimum=SEED[0], maximum=SEED[1],
                                                 label="Seed", scale=4, elem_id="gen-seed")
                            dice = gr.Button("Random", scale=1, min_width=80, elem_id="dice")
                        num_images = gr.Slider(*IMAGES, value=1, step=1, precision=0, label="Number of images",
                                               elem_id="num-images")
                        with gr.Accordion("Start from an image", open=False, elem_id="init-accordion"):
                            init_image = gr.Image(label="Init image", type="filepath", image_mode=None,
                                                  sources=["upload", "clipboard"], height=192, elem_id="init-image")
                            strength = gr.Slider(*STRENGTH, value=0.6, step=0.05, label="Strength",
                                                 info="0 < S ≤ 1: how much of the run re-draws the image "
                                                      "(small keeps it, 1 ignores it)", elem_id="strength")
                        with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                            sampler = gr.Radio([(SAMPLER_NAMES[k], k) for k in SOLVERS], value="euler",
                                               label="Sampler")
                            guidance = gr.Radio([(GUIDANCE_NAMES[k], k) for k in GUIDANCE_RULES], value="cfg",
                                                label="Guidance", elem_id="guidance")
                            shift = gr.Slider(*SHIFT, value=1.0, step=0.1, label="Shift",
                                              info="time shift of the steps (1 = uniform, > 1 more steps near the "
                                                   "noise)", elem_id="shift")
                            with gr.Row():
                                interval_lo = gr.Slider(*GUIDANCE_INTERVAL, value=0.0, step=0.05,
                                                        label="Guidance interval LO", elem_id="guidance-lo",
                                                        info="guided only for t in [LO, HI] (0 noise, 1 image)")
                                interval_hi = gr.Slider(*GUIDANCE_INTERVAL, value=1.0, step=0.05,
                                                        label="Guidance interval HI", elem_id="guidance-hi")
                            preview_mode = gr.Radio([(label, key) for key, label in PREVIEW_MODES.items()],
                                                    value="x1", label="Live preview shows")
                        gr.Examples([[p] for p in PROMPT_EXAMPLES], inputs=[prompt], label="Try")
                    with gr.Column(scale=3):
                        preview = gr.Image(label="Live preview", type="pil", format="png", interactive=False,
                                           height=preview_height, elem_id="preview", buttons=["fullscreen"])
                        progress = gr.Markdown(label="status", elem_id="gen-status")
                        gallery = gr.Gallery(label="Images", format="png", columns=4, height="auto", fit_columns=False,
                                             object_fit="contain", elem_id="gallery",
                                             buttons=["download", "fullscreen"])

        # -- what each input accepts: the core's limits, checked before gradio's own preprocessing -------
        checked(box, expected=MESSAGE_SHAPE)
        for component, name, bounds, integer in [
                (temperature, "Temperature", TEMPERATURE, False), (top_p, "Top-p", TOP_P, False),
                (max_new, "Max new tokens", MAX_NEW_TOKENS, True), (chat_seed, "Seed", SEED, True),
                (cfg, "CFG", GUIDANCE, False), (steps, "Steps", STEPS, True), (gen_seed, "Seed", SEED, True),
                (num_images, "Number of images", IMAGES, True)]:
            checked(component, partial(check_number, name, bounds=bounds, integer=integer))
        for component, name, bounds in [(shift, "Shift", SHIFT),
                                        (interval_lo, "Guidance interval LO", GUIDANCE_INTERVAL),
                                        (interval_hi, "Guidance interval HI", GUIDANCE_INTERVAL)]:
            checked(component, partial(check_number, name, bounds=bounds))
        checked(strength, partial(check_number, "Strength", bounds=STRENGTH, above_low=True))
        checked(sampler, partial(check_choice, "Sampler", choices=SOLVERS))
        checked(guidance, partial(check_choice, "Guidance", choices=GUIDANCE_RULES))
        checked(preview_mode, partial(check_choice, "Preview", choices=PREVIEW_MODES))
        checked(prompt, partial(check_text, "prompt", required=False))
        checked(negative, partial(check_text, "negative prompt", required=False))
        checked(init_image, check_image_upload)
        sampling = [cfg, steps, gen_seed, sampler, preview_mode]  # what a drawing in the chat borrows, in order
        options = [init_image, strength, negative, shift, interval_lo, interval_hi, guidance]

        # -- events --------------------------------------------------------------------------------
        ask = locked_run([box.submit], chat.submit,
                         [box, temperature, top_p, max_new, chat_seed, conversation, *sampling, *options],
                         [chatbot, stats, conversation], lock=[box, draw], status=stats, api_name="chat",
                         concurrency_id=MODEL_QUEUE)
        ask.success(lambda: None, None, box, **PRIVATE)  # the message was sent: empty the box
        drawn = locked_run([draw.click], chat.draw, [box, *sampling, *options, conversation],
                           [chatbot, stats, conversation], lock=[box, draw], status=stats, api_name="draw",
                           concurrency_id=GENERATION_QUEUE)
        drawn.success(lambda: None, None, box, **PRIVATE)
        stop_chat.click(chat.stop, None, None, api_name="stop_chat", queue=False)
        chatbot.clear(chat.clear, None, [chatbot, stats, conversation], api_name="clear_chat", queue=False,
                      show_progress="hidden", cancels=[ask, drawn]).then(interactive(True, 2), None, [box, draw],
                                                                         **PRIVATE)

        go = locked_run([run.click, prompt.submit], gen.run,
                        [prompt, cfg, steps, gen_seed, num_images, sampler, preview_mode, *options],
                        [preview, progress, gallery], lock=[run, prompt], status=progress, api_name="generate",
                        concurrency_id=GENERATION_QUEUE)
        stop_gen.click(gen.stop, None, None, api_name="stop_generate", queue=False)
        dice.click(gen.randomise, None, gen_seed, api_name="random_seed", queue=False)
        prompt.change(gen.token_line, prompt, prompt_tokens, trigger_mode="always_last", **PRIVATE)

        demo.load(model_status, None, status, api_visibility="private", concurrency_limit=None).then(
            gen.token_line, prompt, prompt_tokens, **PRIVATE)
        go.then(gen.token_line, prompt, prompt_tokens, **PRIVATE)  # the model may have loaded meanwhile
    refuse_short_calls(demo, required={"chat": 5, "generate": 7})  # their inputs before issue 25's options
    return demo


def refuse_short_calls(demo: gr.Blocks, required: dict[str, int] | None = None) -> None:
    """Answer an API call with too few inputs with a refusal that lists them (gradio's own check raises a
    ValueError, which clients see as a generic error and the console as a traceback).

    ``required``: for an endpoint whose later inputs were added after it was published, how many leading
    inputs a call must send; the inputs it leaves out after those get the page's initial values, so a raw
    HTTP call written for the older endpoint still runs (gradio_client fills them in itself)."""
    check = demo.validate_inputs
    required = required or {}

    def validate_inputs(block_fn: Any, inputs: list[Any]) -> None:
        wanted = required.get(block_fn.api_name)
        if wanted is not None and wanted <= len(inputs) < len(block_fn.inputs):
            inputs.extend(None if isinstance(b, gr.State) else b.value for b in block_fn.inputs[len(inputs):])
        try:
            check(block_fn, inputs)
        except ValueError:
            names = [getattr(b, "label", None) or type(b).__name__ for b in block_fn.inputs
                     if not isinstance(b, gr.State)]
            least = f"{wanted} to {len(names)}" if wanted is not None else f"{len(names)}"
            raise refuse(f"/{block_fn.api_name or block_fn.name} takes {least} inputs ({', '.join(names)}); "
                         f"got {len(inputs)}.") from None

    demo.validate_inputs = validate_inputs  # type: ignore[method-assign]


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           concurrency: int = 2, gen_concurrency: int = 8, quiet: bool = False, api: APIRouter | None = None,
           **kwargs: Any) -> tuple[Any, str, str | None]:
    """Queue and serve; returns gradio's (app, local URL, share URL). ``concurrency`` chats run at once (each
    decodes on its own), and ``gen_concurrency`` generations (they share each model forward, so more of them
    at once raise the images per second; the rest wait in the queue).

    ``api``'s routes (the OpenAI-compatible API, ``OpenAIAPI.router``) are served by the same server, on the
    same host and port; they are in place before it starts answering.
    """
    if api is not None:
        kwargs["app_kwargs"] = {**kwargs.get("app_kwargs", {}), "routes": list(api.routes)}
    for fn in demo.fns.values():
        if fn.concurrency_id == GENERATION_QUEUE:
            fn.concurrency_limit = gen_concurrency
    demo.queue(default_concurrency_limit=concurrency)
    return demo.launch(server_name=host, server_port=port, share=share, quiet=quiet, theme=THEME, css=CSS,
                       allowed_paths=[str(EXAMPLES_DIR)], max_file_size=MAX_UPLOAD, footer_links=["api"],
                       **kwargs)
