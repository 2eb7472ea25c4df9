"""Chat tab handlers: a multi-turn conversation about images, the answer streamed piece by piece, and
drawing inside the conversation.

The conversation lives in a per-session ``gr.State`` as a list of turns
``{"role", "content", "images": [PIL], "files": [paths]}``; the chatbot display is rebuilt from it.
The model sees the same turns (``images`` per message, as ``ChatPipeline.stream`` takes them), except
drawings: the Draw button or a message starting with ``/draw `` generates one image from the text with the
Generate tab's settings (``GenerateHandlers.begin`` / ``follow``: the same batcher, previews and preview
budget), shown as an assistant message that holds the newest preview, then the image. A drawing exchange
(``{"draw": prompt}`` then ``{"drawn": True, "images": [image]}``) is not shown to the model as text; its
image goes with the next question, as if the user had attached it, so the model reads what it drew the way
it reads an upload.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import gradio as gr
from gradio import processing_utils
from gradio.utils import get_upload_folder
from PIL import Image

from janusflow_core.limits import (
    MAX_IMAGES_PER_MESSAGE,
    MAX_NEW_TOKENS,
    SEED,
    TEMPERATURE,
    TOP_P,
    InputError,
    check_number,
)

from .components import loaded_or_refuse, refusals, refuse
from .engine import Engine
from .generate import GenerateHandlers, Settings, describe
from .inputs import check_text, open_image
from .sessions import Runs, session_id

log = logging.getLogger(__name__)
MESSAGE_SHAPE = '{"text": str, "files": [file, ...]} (files may be empty)'
DEFAULT_QUESTION = "Describe the image."  # an image sent without text
ABOUT_AN_IMAGE = re.compile(r"\b(image|picture|photo|screenshot)s?\b", re.IGNORECASE)
DRAW_PREFIX = "/draw"  # a message "/draw a red circle" draws, as the Draw button does with "a red circle"
DRAW_NAMES = {"prompt": "The drawing prompt"}  # the pipeline's refusals, in the chat's words

Turn = dict[str, Any]


def display(turns: list[Turn]) -> list[dict[str, Any]]:
    """Conversation turns -> gr.Chatbot messages (images first, then the text)."""
    out = []
    for t in turns:
        content: list[Any] = [{"path": p} for p in t.get("files", [])]
        content.append(t["content"])
        out.append({"role": t["role"], "content": content})
    return out


def model_messages(turns: list[Turn]) -> list[dict[str, Any]]:
    """What the model reads: the turns, without the drawing exchanges, whose images go with the next user
    message (first, before the user's own; at most MAX_IMAGES_PER_MESSAGE in all, the newest kept)."""
    out, drawn = [], []
    for t in turns:
        if t.get("draw") is not None:  # the request of a drawing: the model reads its image instead
            continue
        if t.get("drawn"):
            drawn += t.get("images", [])
            continue
        images = list(t.get("images", []))
        if t["role"] == "user" and drawn:
            images, drawn = (drawn + images)[-MAX_IMAGES_PER_MESSAGE:], []
        out.append({"role": t["role"], "content": t["content"], "images": images})
    return out


def draw_prompt(text: str) -> str | None:
    """The prompt of a ``/draw ...`` message (possibly empty), else None (any other message is a question)."""
    text = text.strip()
    n = len(DRAW_PREFIX)
    if text[:n].lower() != DRAW_PREFIX or (len(text) > n and not text[n].isspace()):
        return None
    return text[n:].strip()


def to_file(image: Image.Image, name: str) -> str:
    """A PNG of ``image`` in gradio's upload folder (named by its content), for the chatbot to show."""
    return processing_utils.save_pil_to_cache(image, get_upload_folder(), name=name, format="png")


def stats_line(stats: dict[str, Any], stopped: bool = False) -> str:
    n, s = stats.get("new_tokens", 0), stats.get("seconds", 0.0)
    rate = stats.get("tokens_per_s", 0.0)
    text = f"**{n}** tokens in {s:.2f} s · **{rate:.1f} tokens/s** · prompt {stats.get('prompt_tokens', 0)} tokens"
    return text + (" · stopped" if stopped else "")


def parse_message(message: Any) -> tuple[str, list[str]]:
    """A MultimodalTextbox value ``{"text", "files"}`` (or a plain string, from a direct call) -> (text,
    file paths). Raises InputError for anything else."""
    if message is None:
        return "", []
    if isinstance(message, str):
        return message, []
    if not isinstance(message, dict) or not isinstance(message.get("files") or [], list):
        raise InputError(f"The message must be {MESSAGE_SHAPE}; got {message!r:.40}")
    files = []
    for f in message.get("files") or []:
        path = f.get("path") if isinstance(f, dict) else f
        if not isinstance(path, str) or not path:
            raise InputError(f"Each file of a message must be a file (handle_file(path)); got {f!r:.40}")
        files.append(path)
    return message.get("text") or "", files


class ChatHandlers:
    def __init__(self, engine: Engine, drawing: GenerateHandlers | None = None):
        self.engine = engine
        self.runs = Runs("chat answer")  # answers and drawings alike: one at a time per session
        self.drawing = drawing or GenerateHandlers(engine)  # the Generate tab's (one preview budget per app)

    def submit(self, message: Any, temperature: float, top_p: float, max_new_tokens: int, seed: int,
               conversation: list[Turn] | None, request: gr.Request, draw_cfg: float | None = None,
               draw_steps: int | None = None, draw_seed: int = 42, draw_sampler: str = "euler",
               draw_preview: str = "x1", draw_init_image: str | None = None, draw_strength: float = 1.0,
               draw_negative_prompt: str | None = None, draw_shift: float = 1.0, draw_guidance_interval_lo: float = 0.0,
               draw_guidance_interval_hi: float = 1.0, draw_guidance: str = "cfg",
               ) -> Iterator[tuple[Any, str, list[Turn]]]:
        """Ask a question (with optional images) and stream the answer; a message that starts with ``/draw ``
        draws instead (:meth:`draw`, with the ``draw_*`` settings: the Generate tab's).

        Yields (chatbot messages, stats line, conversation) after every decoded piece; the last yield
        carries the tokens/s line.
        """
        if isinstance(message, (str, dict)):
            text = message if isinstance(message, str) else message.get("text")
            if isinstance(text, str) and draw_prompt(text) is not None:
                yield from self._draw(message, Settings(
                    draw_cfg, draw_steps, draw_seed, draw_sampler, draw_preview, draw_init_image, draw_strength,
                    draw_negative_prompt, draw_shift, draw_guidance_interval_lo, draw_guidance_interval_hi,
                    draw_guidance), conversation, request)
                return
        with refusals():
            temperature = check_number("Temperature", temperature, TEMPERATURE)
            top_p = check_number("Top-p", top_p, TOP_P)
            max_new_tokens = check_number("Max new tokens", max_new_tokens, MAX_NEW_TOKENS, integer=True)
            seed = check_number("Seed", seed, SEED, integer=True)
            text, files = parse_message(message)
            text = check_text("message", text, required=False)
            if not text and not files:
                raise InputError("Type a question, or attach an image to ask about.")
            if len(files) > MAX_IMAGES_PER_MESSAGE:
                raise InputError(f"{len(files)} images in one message; the limit is {MAX_IMAGES_PER_MESSAGE}.")
            images = [open_image(f) for f in files]
        text = text or DEFAULT_QUESTION
        turns = list(conversation or [])
        if not images and not any(t.get("images") for t in turns) and ABOUT_AN_IMAGE.search(text):
            gr.Warning("No image is attached, so the answer comes from the text alone. Attach one with the "
                       "clip icon, drop it on the box or paste it.")
        sid = session_id(request)
        with self.runs.start(sid) as run, self.engine.model_slot(run.event) as held:
            if not held:  # stopped while waiting for a free model run
                return
            loaded = loaded_or_refuse(self.engine)
            user = {"role": "user", "content": text, "images": images, "files": files}
            pending = turns + [user]
            try:  # the pipeline owns the context window: the oldest exchanges go first
                messages, dropped = loaded.chat.fit_context(model_messages(pending), max_new_tokens=max_new_tokens)
            except InputError as exc:
                raise refuse(f"This message does not fit the model's context: {exc}") from None
            if dropped:
                gr.Warning(f"The conversation is longer than the model's context; the oldest {dropped} "
                           f"exchange(s) were left out of this answer.")
            yield display(pending + [{"role": "assistant", "content": ""}]), "", turns
            stats: dict[str, Any] = {}
            answer = ""
            sampled = temperature > 0  # each call samples from its own seeded generator (core SeededSampler)
            pieces = loaded.chat.stream(messages, max_new_tokens=max_new_tokens, temperature=temperature,
                                        top_p=top_p, seed=seed if sampled else None, stop_event=run.event,
                                        stats=stats)
            try:
                for piece in pieces:
                    if run.discarded:  # Clear was pressed: a late update would bring the conversation back
                        return
                    answer += piece
                    yield display(pending + [{"role": "assistant", "content": answer}]), "", turns
            except (ValueError, RuntimeError) as exc:
                raise refuse(f"The answer failed: {exc}") from None
            except Exception as exc:  # a bug: the operator gets the traceback, the user one line
                log.exception("chat answer failed")
                raise refuse(f"The answer failed ({type(exc).__name__}): {exc}") from None
            finally:
                pieces.close()
            if run.discarded:
                return
            done = pending + [{"role": "assistant", "content": answer}]
            yield display(done), stats_line(stats, stopped=run.stopped), done

    def draw(self, message: Any, cfg: float | None = None, steps: int | None = None, seed: int = 42,
             sampler: str = "euler", preview: str = "x1", init_image: str | None = None, strength: float = 1.0,
             negative_prompt: str | None = None, shift: float = 1.0, guidance_interval_lo: float = 0.0,
             guidance_interval_hi: float = 1.0, guidance: str = "cfg", conversation: list[Turn] | None = None,
             request: gr.Request = None) -> Iterator[tuple[Any, str, list[Turn]]]:
        """Draw one image from the message's text (a leading ``/draw`` is optional here) with the given settings
        (the Generate tab's), streaming the newest preview into the conversation as the assistant's message.

        Yields (chatbot messages, stats line, conversation): the request with a "Drawing …" message, then
        the newest step's status (and preview, when one is due), then the image, which stays in the
        conversation for the next question to be about. Stop ends it at a step end and keeps the last step's
        predicted image; Clear sends nothing more.
        """
        yield from self._draw(message, Settings(cfg, steps, seed, sampler, preview, init_image, strength,
                                                negative_prompt, shift, guidance_interval_lo, guidance_interval_hi,
                                                guidance), conversation, request)

    def _draw(self, message: Any, settings: Settings, conversation: list[Turn] | None,
              request: gr.Request) -> Iterator[tuple[Any, str, list[Turn]]]:
        drawing = self.drawing
        with refusals():
            text, files = parse_message(message)
            text = check_text("message", text, required=False)
            prompt = draw_prompt(text)
            prompt = text if prompt is None else prompt
            if not prompt:
                raise InputError("Type what to draw: the text of the message is the drawing prompt "
                                 f"(\"{DRAW_PREFIX} a red circle\", or \"a red circle\" and the Draw button).")
            if files:
                raise InputError("A drawing is made from the text alone; remove the attached image (to start from "
                                 "an image, put it in the Generate tab's Init image).")
            image = drawing.precheck(settings)
        turns = list(conversation or [])
        with self.runs.start(session_id(request)) as run, self.engine.model_slot(run.event, kind="generation") as held:
            if not held:  # stopped while waiting for a free model run
                return
            loaded = loaded_or_refuse(self.engine)
            with refusals():
                started = drawing.begin(loaded, run, prompt, 1, settings, image, names=DRAW_NAMES)
            user = {"role": "user", "content": f"{DRAW_PREFIX} {prompt}", "images": [], "files": [], "draw": prompt}
            pending = turns + [user]
            yield display(pending + [{"role": "assistant", "content": "Drawing …"}]), "", turns
            start, shown = time.perf_counter(), []
            try:
                with closing(drawing.follow(run, loaded, started.states, settings.preview)) as updates:
                    for state, sheet, done in updates:
                        if run.discarded:  # Clear was pressed: a late update would bring the conversation back
                            return
                        if done:
                            break
                        if sheet is not None:
                            shown = [to_file(sheet, "preview")]
                        status = f"Step {state.index + 1} / {state.num_steps} · {time.perf_counter() - start:.1f} s"
                        yield display(pending + [{"role": "assistant", "content": status, "files": shown}]), "", turns
                    image = loaded.generator.decode(state.result)[0]
            except (ValueError, FloatingPointError, RuntimeError) as exc:
                raise refuse(f"The drawing failed: {exc}") from None
            except Exception as exc:  # a bug: the operator gets the traceback, the user one line
                log.exception("drawing failed")
                raise refuse(f"The drawing failed ({type(exc).__name__}): {exc}") from None
            if run.discarded:
                return
            seconds = time.perf_counter() - start
            if state.finished:
                caption = f"Drew \"{prompt}\" ({describe(started)}, {state.num_steps} steps)."
                stats = f"Drawn in {seconds:.1f} s · {state.num_steps} steps"
            else:
                caption = (f"Stopped at step {state.index + 1} / {state.num_steps}: the image predicted then "
                           f"({describe(started)}).")
                stats = f"Drawn in {seconds:.1f} s · stopped at step {state.index + 1} / {state.num_steps}"
            drawn = {"role": "assistant", "content": caption, "images": [image], "files": [to_file(image, "drawn")],
                     "drawn": True}
            done_turns = pending + [drawn]
            yield display(done_turns), stats, done_turns

    def stop(self, request: gr.Request) -> None:
        """Stop the answer being written in this session (within one token), or its drawing (at a step end)."""
        self.runs.stop(session_id(request))

    def clear(self, request: gr.Request) -> tuple[list, str, list]:
        """Stop any answer in progress, send nothing more of it, and forget the conversation."""
        self.runs.stop(session_id(request), discard=True, wait_s=2.0)  # within a token, in practice
        return [], "", []
