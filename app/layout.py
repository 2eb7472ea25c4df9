"""The page: a header with the model line, a Chat tab and a Generate tab, and their API endpoints.

Public endpoints (callable with gradio_client, see docs/api.md): ``/chat`` (streams),
``/stop_chat``, ``/clear_chat``, ``/generate`` (streams), ``/stop_generate``, ``/random_seed``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from .chat import MAX_NEW_TOKENS, ChatHandlers
from .components import labelled
from .engine import Engine, EngineError
from .generate import CFG_RANGE, MAX_IMAGES, MAX_STEPS, PREVIEW_MODES, GenerateHandlers
from .inputs import MAX_PROMPT_CHARS, MAX_SEED, MAX_UPLOAD

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"
PROMPT_EXAMPLES = ["a green triangle", "three squares", "a circle above a triangle",
                   "a blue circle and a yellow square", "a square left of a circle"]
DEFAULT_STEPS = 30  # the paper's demo
MODEL_QUEUE = "model"  # chat and generation share one concurrency limit

CSS = """
#preview img, #gallery img, #chatbot img, #chat-examples img { image-rendering: pixelated; }
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


def create_demo(engine: Engine, *, preview_height: int = 384) -> gr.Blocks:
    """Build the Blocks app around ``engine`` (nothing is loaded here)."""
    chat = ChatHandlers(engine)
    gen = GenerateHandlers(engine)
    cfg_default = min(max(float(engine.sampling_defaults().get("cfg", 2.0)), CFG_RANGE[0]), CFG_RANGE[1])

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
            with gr.Tab("Chat", id="chat"):
                conversation = gr.State([])
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        chatbot = gr.Chatbot(label="Conversation", height=470, elem_id="chatbot", buttons=["copy"],
                                             feedback_options=None, layout="bubble",
                                             placeholder="Upload or paste an image and ask about it, or just chat.")
                        box = gr.MultimodalTextbox(label="Message", file_types=["image"], file_count="multiple",
                                                   placeholder="Ask about the image…  (Enter sends)",
                                                   elem_id="chat-input", autofocus=True)
                        with gr.Row():
                            stop_chat = gr.Button("Stop", variant="stop", size="sm", elem_id="chat-stop")
                            clear_chat = gr.Button("Clear", size="sm", elem_id="chat-clear")
                        stats = gr.Markdown(label="stats", elem_id="chat-stats")
                    with gr.Column(scale=1, min_width=260):
                        with gr.Accordion("Answer settings", open=True):
                            temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature",
                                                    info="0 = greedy (always the most likely token)",
                                                    elem_id="temperature")
                            top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="Top-p")
                            max_new = gr.Slider(1, MAX_NEW_TOKENS, value=256, step=1, precision=0,
                                                label="Max new tokens", elem_id="max-new-tokens")
                            chat_seed = gr.Number(value=42, precision=0, minimum=0, maximum=MAX_SEED, label="Seed",
                                                  info="used when temperature > 0")
                        examples = chat_examples()
                        if examples:
                            gr.Examples(examples, inputs=[box], label="Examples (click to load)",
                                        elem_id="chat-examples")

            with gr.Tab("Generate", id="generate"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=300):
                        prompt = gr.Textbox(label="Prompt", lines=2, max_length=MAX_PROMPT_CHARS,
                                            placeholder="a blue circle and a yellow square", elem_id="prompt")
                        with gr.Row():
                            run = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                            stop_gen = gr.Button("Stop", variant="stop", elem_id="generate-stop")
                        cfg = gr.Slider(*CFG_RANGE, value=cfg_default, step=0.1, label="CFG",
                                        info="classifier-free guidance weight", elem_id="cfg")
                        steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, precision=0, label="Steps",
                                          elem_id="steps")
                        with gr.Row(equal_height=True):
                            gen_seed = gr.Number(value=42, precision=0, minimum=0, maximum=MAX_SEED, label="Seed",
                                                 scale=4, elem_id="gen-seed")
                            dice = gr.Button("Random", scale=1, min_width=80, elem_id="dice")
                        num_images = gr.Slider(1, MAX_IMAGES, value=1, step=1, precision=0, label="Images",
                                               elem_id="num-images")
                        with gr.Accordion("Advanced", open=False):
                            sampler = gr.Radio([("Euler", "euler"), ("Heun", "heun")], value="euler", label="Sampler")
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
        for component in (box, temperature, top_p, max_new, chat_seed, cfg, steps, gen_seed, num_images, sampler,
                          preview_mode):
            labelled(component)

        # -- events --------------------------------------------------------------------------------
        # Each run is a chain: lock what starts it (private), the run itself (the public endpoint), unlock.
        # Chaining keeps the order; the endpoint can also be called on its own through the API.
        def lock() -> dict:
            return gr.update(interactive=False)

        def unlock() -> dict:
            return gr.update(interactive=True)

        private = {"queue": False, "api_visibility": "private"}
        ask = box.submit(lock, None, box, **private).then(
            chat.submit, [box, temperature, top_p, max_new, chat_seed, conversation], [chatbot, stats, conversation],
            api_name="chat", concurrency_id=MODEL_QUEUE, show_progress="minimal")
        ask.then(unlock, None, box, **private)
        ask.success(lambda: None, None, box, **private)  # the message was sent: empty the box
        stop_chat.click(chat.stop, None, None, api_name="stop_chat", queue=False)
        clear_chat.click(chat.clear, None, [chatbot, stats, conversation], api_name="clear_chat", queue=False,
                         cancels=[ask])
        chatbot.clear(chat.clear, None, [chatbot, stats, conversation], cancels=[ask], **private)  # its bin icon

        go = gr.on([run.click, prompt.submit], lambda: (lock(), lock()), None, [run, prompt], **private).then(
            gen.run, [prompt, cfg, steps, gen_seed, num_images, sampler, preview_mode], [preview, progress, gallery],
            api_name="generate", concurrency_id=MODEL_QUEUE, show_progress="minimal")
        go.then(lambda: (unlock(), unlock()), None, [run, prompt], **private)
        stop_gen.click(gen.stop, None, None, api_name="stop_generate", queue=False)
        dice.click(gen.randomise, None, gen_seed, api_name="random_seed", queue=False)

        demo.load(model_status, None, status, api_visibility="private", concurrency_limit=None)
    return demo


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           concurrency: int = 2, quiet: bool = False, **kwargs: Any) -> tuple[Any, str, str | None]:
    """Queue (``concurrency`` model runs at once) and serve; returns gradio's (app, local URL, share URL)."""
    demo.queue(default_concurrency_limit=concurrency)
    return demo.launch(server_name=host, server_port=port, share=share, quiet=quiet, theme=THEME, css=CSS,
                       allowed_paths=[str(EXAMPLES_DIR)], max_file_size=MAX_UPLOAD, footer_links=["api"],
                       **kwargs)
