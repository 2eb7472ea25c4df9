"""The OpenAI-compatible HTTP API, served under ``/v1`` beside the page (docs/api.md).

``GET /v1/models``, ``POST /v1/chat/completions`` (streamed as server-sent events or not) and
``POST /v1/images/generations``. The handlers call the same pipelines as the page, the same way: chat through
``ChatPipeline.stream``, images through ``GenerationPipeline.check_inputs`` / ``iterate`` / ``decode`` as the
Generate tab's handler does; each run holds one of the engine's model runs (``Engine.model_slot``: the
``--concurrency`` chats and ``--gen-concurrency`` generations the page's runs hold too, so API and page
generations share the batcher's forwards). A run works in its own thread and hands its pieces to the
request's event loop; a client that goes away sets the run's stop event (the chat stops within a token, a
generation after the current step). Requests are checked in ``openai_models.py``; every refusal has OpenAI's
error shape, and a failure of the server's own is a logged 500.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from janusflow_core.limits import InputError
from janusflow_core.sampling import stop_when

from .engine import Engine, EngineError, Loaded
from .openai_models import (
    GENERATION_NAMES,
    MAX_BODY_BYTES,
    APIError,
    ChatRequest,
    GenerationCall,
    ImageRequest,
    chat_call,
    generation_call,
    parse_json,
    refused,
)

log = logging.getLogger(__name__)
PREFIX = "/v1"
FILES_PATH = "/generated"  # images answered as URLs; outside /v1, so a browser opens them without the key
FILE_TTL_S = 3600  # an image URL lives an hour, as OpenAI's do
DISCONNECT_POLL_S = 0.25  # how often a waiting request checks that its client is still there
ROUTES = {f"{PREFIX}/models": "GET", f"{PREFIX}/chat/completions": "POST", f"{PREFIX}/images/generations": "POST"}


class EventStream(StreamingResponse):
    """Server-sent events whose generator is closed however the response ends (a client that hung up makes
    the send fail, and closing the generator stops its run)."""

    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[union-attr]


def sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


class Run:
    """``work(emit, stop)`` in a thread of its own, holding one model run; what it emits, its result or its
    exception reach the request's event loop through a queue."""

    def __init__(self, engine: Engine, work: Callable[[Callable[[Any], None], threading.Event], Any],
                 kind: str = "chat"):
        self.stop = threading.Event()
        self.kind = kind
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        threading.Thread(target=self._run, args=(engine, work), name="janusflow-api-run", daemon=True).start()

    def _put(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))
        except RuntimeError:  # the server's loop has closed (shutdown): nobody is listening
            self.stop.set()

    def _run(self, engine: Engine, work: Callable[..., Any]) -> None:
        try:
            with engine.model_slot(self.stop, kind=self.kind) as held:
                outcome = ("done", work(lambda item: self._put("item", item), self.stop) if held else None)
        except BaseException as exc:  # handed to the request, which answers it
            outcome = ("error", exc)
        self._put(*outcome)

    async def events(self, request: Request) -> AsyncIterator[tuple[str, Any]]:
        """("item", x) for each emitted x, then ("done", result) or ("error", exc). Ends early, stopping the
        run, when the client disconnects or the consumer closes it."""
        check_at = self._loop.time() + DISCONNECT_POLL_S
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(self._queue.get(), DISCONNECT_POLL_S)
                except TimeoutError:
                    kind, value = "", None
                if self._loop.time() >= check_at:
                    if await request.is_disconnected():
                        return
                    check_at = self._loop.time() + DISCONNECT_POLL_S
                if not kind:
                    continue
                yield kind, value
                if kind != "item":
                    return
        finally:
            self.stop.set()


class GeneratedFiles:
    """PNGs answered as URLs: random names in a private temporary folder, deleted after FILE_TTL_S."""

    NAME = re.compile(r"[0-9a-f]{32}\.png")

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="janusflow-api-"))
        weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)

    def save(self, png: bytes) -> str:
        self.prune()
        name = f"{uuid.uuid4().hex}.png"
        (self.folder / name).write_bytes(png)
        return name

    def prune(self) -> None:
        old = time.time() - FILE_TTL_S
        for f in self.folder.glob("*.png"):
            try:
                if f.stat().st_mtime < old:
                    f.unlink()
            except FileNotFoundError:
                pass

    def path(self, name: str) -> Path | None:
        p = self.folder / name
        return p if self.NAME.fullmatch(name) and p.is_file() else None


def png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class OpenAIAPI:
    """The ``/v1`` routes around an engine; ``api_key`` (when set) is required on every one of them."""

    def __init__(self, engine: Engine, *, api_key: str | None = None):
        self.engine = engine
        self.api_key = api_key or None
        self.files = GeneratedFiles()

    @property
    def router(self) -> APIRouter:
        r = APIRouter()
        r.add_api_route(f"{PREFIX}/models", self.models, methods=["GET"], include_in_schema=False)
        r.add_api_route(f"{PREFIX}/models/{{model_id:path}}", self.model, methods=["GET"], include_in_schema=False)
        r.add_api_route(f"{PREFIX}/chat/completions", self.chat, methods=["POST"], include_in_schema=False)
        r.add_api_route(f"{PREFIX}/images/generations", self.images, methods=["POST"], include_in_schema=False)
        r.add_api_route(f"{PREFIX}/{{path:path}}", self.unknown, include_in_schema=False,
                        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        r.add_api_route(f"{FILES_PATH}/{{name}}", self.file, methods=["GET"], name="janusflow_generated",
                        include_in_schema=False)
        return r

    # -- the frame every /v1 route runs in ----------------------------------------------------------------
    async def _answer(self, request: Request, handler: Callable[[Request], Any]) -> Response:
        try:
            self._check_key(request)
            return await handler(request)
        except APIError as exc:
            return exc.response()
        except Exception:  # a bug: the operator gets the traceback, the client a 500 in OpenAI's shape
            log.exception("%s %s failed", request.method, request.url.path)
            return APIError(500, "The server failed to answer this request (its log has the details).").response()

    def _check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise APIError(401, "Incorrect or missing API key: send the header 'Authorization: Bearer <key>' with "
                                "the key the server was started with.",
                           code="invalid_api_key")

    async def _body(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise self._too_large()
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise self._too_large()
        return parse_json(bytes(body))

    @staticmethod
    def _too_large() -> APIError:
        return APIError(413, f"The request body is over {MAX_BODY_BYTES // 2**20} MB.", code="request_too_large")

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.engine.model_id:
            raise APIError(404, f"The model {model!r} does not exist; this server serves {self.engine.model_id!r} "
                                "(GET /v1/models). Leave model out to use it.", param="model", code="model_not_found")

    async def _loaded(self) -> Loaded:
        try:
            return await run_in_threadpool(self.engine.get)  # waits while the model loads
        except EngineError as exc:
            raise APIError(503, str(exc), code="model_not_loaded") from None

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.engine.model_id, "object": "model", "created": 0, "owned_by": "janusflow"}

    # -- routes ---------------------------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        async def answer(_: Request) -> Response:
            return JSONResponse({"object": "list", "data": [self._model_card()]})
        return await self._answer(request, answer)

    async def model(self, request: Request, model_id: str) -> Response:
        async def answer(_: Request) -> Response:
            self._check_model(model_id)
            return JSONResponse(self._model_card())
        return await self._answer(request, answer)

    async def unknown(self, request: Request, path: str) -> Response:
        async def answer(_: Request) -> Response:
            url = f"{PREFIX}/{path}"
            method = ROUTES.get(url, "GET" if url.startswith(f"{PREFIX}/models/") else None)
            if method is not None:
                refusal = APIError(405, f"{url} takes {method} requests, not {request.method}.",
                                   code="method_not_allowed").response()
                refusal.headers["Allow"] = method
                return refusal
            raise APIError(404, f"There is no {request.method} {url}; this server answers GET /v1/models, POST "
                                "/v1/chat/completions and POST /v1/images/generations.", code="unknown_url")
        return await self._answer(request, answer)

    async def file(self, name: str) -> Response:
        path = self.files.path(name)
        if path is None:
            return APIError(404, f"No image {name!r}: image URLs live {FILE_TTL_S // 60} minutes.",
                            code="not_found").response()
        return FileResponse(path, media_type="image/png")

    async def chat(self, request: Request) -> Response:
        return await self._answer(request, self._chat)

    async def images(self, request: Request) -> Response:
        return await self._answer(request, self._images)

    # -- chat -------------------------------------------------------------------------------------------
    async def _chat(self, request: Request) -> Response:
        req = ChatRequest.parse(await self._body(request))
        self._check_model(req.model)
        loaded = await self._loaded()
        call = await run_in_threadpool(chat_call, req, loaded.bundle.processor.special_tokens.image_tag)
        context = loaded.bundle.config.llm.max_position_embeddings
        n = await run_in_threadpool(loaded.chat.prompt_length, call.messages, system_prompt=call.system_prompt)
        if n >= context:
            raise APIError(400, f"The conversation is {n} tokens with its images; this model's context is {context} "
                                "tokens, the answer included. Shorten it or send fewer images.", param="messages",
                           code="context_length_exceeded")
        max_new = min(call.max_new_tokens, context - n)

        def work(emit: Callable[[str], None], stop: threading.Event) -> dict[str, Any]:
            stats: dict[str, Any] = {}
            sampled = call.temperature > 0  # each call samples from its own seeded generator (SeededSampler)
            for piece in loaded.chat.stream(call.messages, max_new_tokens=max_new, temperature=call.temperature,
                                            top_p=call.top_p, seed=call.seed if sampled else None, stop_event=stop,
                                            system_prompt=call.system_prompt, stats=stats):
                emit(piece)
            return stats

        run = Run(self.engine, work)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.engine.model_id}

        def usage(stats: dict[str, Any]) -> dict[str, int]:
            p, c = int(stats.get("prompt_tokens", n)), int(stats.get("new_tokens", 0))
            return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

        def finish(stats: dict[str, Any]) -> str:
            return "length" if stats.get("new_tokens", 0) >= max_new else "stop"

        if not req.stream:
            pieces, stats = [], None
            async for kind, value in run.events(request):
                if kind == "error":
                    raise self._failed(value, "chat")
                if kind == "item":
                    pieces.append(value)
                else:
                    stats = value
            if stats is None:  # the client went away
                return Response(status_code=499)
            message = {"role": "assistant", "content": "".join(pieces)}
            return JSONResponse({**head, "object": "chat.completion", "usage": usage(stats),
                                 "choices": [{"index": 0, "message": message, "finish_reason": finish(stats)}]})

        chunk = {**head, "object": "chat.completion.chunk"}
        extra = {"usage": None} if call.include_usage else {}

        def delta(d: dict[str, Any], reason: str | None = None) -> str:
            return sse({**chunk, **extra, "choices": [{"index": 0, "delta": d, "finish_reason": reason}]})

        async def events() -> AsyncIterator[str]:
            yield delta({"role": "assistant", "content": ""})
            async for kind, value in run.events(request):
                if kind == "item":
                    yield delta({"content": value})
                elif kind == "error":
                    yield sse(self._failed(value, "chat").body())
                elif value is not None:
                    yield delta({}, finish(value))
                    if call.include_usage:
                        yield sse({**chunk, "choices": [], "usage": usage(value)})
            yield sse("[DONE]")

        return EventStream(events(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @staticmethod
    def _failed(exc: BaseException, what: str) -> APIError:
        if isinstance(exc, APIError):
            return exc
        if isinstance(exc, InputError):
            return refused(exc, tuple(GENERATION_NAMES.values()) + ("negative_prompt", "shift", "guidance_interval",
                                                                    "guidance", "strength", "init_image"))
        if isinstance(exc, FloatingPointError):  # the sampler diverged with these settings
            return APIError(400, f"The {what} failed with these settings: {exc}", code="generation_diverged")
        log.error("the API's %s failed", what, exc_info=exc)
        return APIError(500, f"The {what} failed ({type(exc).__name__}); the server's log has the details.")

    # -- images -----------------------------------------------------------------------------------------
    async def _images(self, request: Request) -> Response:
        req = ImageRequest.parse(await self._body(request))
        self._check_model(req.model)
        loaded = await self._loaded()
        call: GenerationCall = await run_in_threadpool(generation_call, req, loaded.image_size)
        pipe = loaded.generator
        try:  # every value, and the prompt's length in tokens, in this API's words
            steps, cfg, n, seed = await run_in_threadpool(
                lambda: pipe.check_inputs(call.prompt, call.steps, call.cfg, call.n, call.sampler, call.seed,
                                          names=GENERATION_NAMES))
        except InputError as exc:
            raise refused(exc, tuple(GENERATION_NAMES.values())) from None

        def work(emit: Callable[[Any], None], stop: threading.Event) -> list[Any] | None:
            states = pipe.iterate(call.prompt, steps, cfg, seed, n, call.sampler, callback_on_step_end=stop_when(stop),
                                  **call.options)
            last = None
            for last in states:  # noqa: B007 (the run's last state carries its result)
                pass
            return pipe.decode(last.result) if last is not None and last.finished else None

        images = None
        async for kind, value in Run(self.engine, work, kind="generation").events(request):
            if kind == "error":
                raise self._failed(value, "generation")
            images = value
        if images is None:  # the client went away and the run stopped
            return Response(status_code=499)
        pngs = [png_bytes(im) for im in images]
        if call.response_format == "url":
            data = [{"url": str(request.url_for("janusflow_generated", name=self.files.save(p)))} for p in pngs]
        else:
            data = [{"b64_json": base64.b64encode(p).decode("ascii")} for p in pngs]
        for k, item in enumerate(data):
            item["seed"] = seed + k
        size = loaded.image_size
        return JSONResponse({"created": int(time.time()), "data": data, "output_format": "png",
                             "size": f"{size}x{size}"})
