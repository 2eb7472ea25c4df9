"""Chat tab handlers: a multi-turn conversation about images, the answer streamed piece by piece.

The conversation lives in a per-session ``gr.State`` as a list of turns
``{"role", "content", "images": [PIL], "files": [paths]}``; the chatbot display is rebuilt from it.
The model sees the same turns (``images`` per message, as ``ChatPipeline.stream`` takes them).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import gradio as gr

from janusflow_core.limits import (
    MAX_IMAGES_PER_MESSAGE,
    MAX_NEW_TOKENS,
    SEED,
    TEMPERATURE,
    TOP_P,
    InputError,
    check_number,
)

from .components import refusals, refuse
from .engine import Engine, EngineError
from .inputs import check_text, open_image
from .sessions import Runs, session_id

log = logging.getLogger(__name__)
MESSAGE_SHAPE = '{"text": str, "files": [file, ...]} (files may be empty)'
DEFAULT_QUESTION = "Describe the image."  # an image sent without text
ABOUT_AN_IMAGE = re.compile(r"\b(image|picture|photo|screenshot)s?\b", re.IGNORECASE)

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
    return [{"role": t["role"], "content": t["content"], "images": t.get("images", [])} for t in turns]


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
    def __init__(self, engine: Engine):
        self.engine = engine
        self.runs = Runs("chat answer")

    def submit(self, message: Any, temperature: float, top_p: float, max_new_tokens: int, seed: int,
               conversation: list[Turn] | None, request: gr.Request) -> Iterator[tuple[Any, str, list[Turn]]]:
        """Ask a question (with optional images) and stream the answer.

        Yields (chatbot messages, stats line, conversation) after every decoded piece; the last yield
        carries the tokens/s line.
        """
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
            try:
                loaded = self.engine.get()
            except EngineError as exc:
                raise refuse(str(exc)) from None
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

    def stop(self, request: gr.Request) -> None:
        """Stop the answer being written in this session (within one token)."""
        self.runs.stop(session_id(request))

    def clear(self, request: gr.Request) -> tuple[list, str, list]:
        """Stop any answer in progress, send nothing more of it, and forget the conversation."""
        self.runs.stop(session_id(request), discard=True, wait_s=2.0)  # within a token, in practice
        return [], "", []
