"""Requests of the OpenAI-compatible API: their pydantic models, OpenAI-shaped errors, and what a request
means for the pipelines (a conversation with its images, a generation's settings).

Everything a client sends is checked here, before any model work, against the core's limits
(``janusflow_core.limits``); a refusal is an :class:`APIError` whose body has OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``. The routes live in ``openai_api.py``.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.responses import JSONResponse

from janusflow_core import limits
from janusflow_core.limits import InputError
from janusflow_core.processing.image import load_image
from janusflow_core.sampling import SOLVERS

MAX_BODY_BYTES = 100 * 1024 * 1024  # a request's JSON body; images travel inside it as base64
MAX_IMAGE_BYTES = 25 * 1024 * 1024  # one decoded image, as the page's uploads (inputs.MAX_UPLOAD)
GUIDANCE_RULES = ("cfg", "cfg-zero-star", "apg")  # the generation options' names (docs/api.md)
DEFAULT_QUESTION = "Describe the image."  # a user message with images and no text, as in the chat tab
# the pipeline's parameters as this API names them (its refusals then use the client's words)
GENERATION_NAMES = {"prompt": "prompt", "steps": "steps", "guidance_scale": "cfg", "num_images": "n",
                    "seed": "seed", "sampler": "sampler"}


class APIError(Exception):
    """A refusal (4xx) or a failure (5xx), answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def refused(exc: InputError, fields: list[str] | tuple[str, ...] = ()) -> APIError:
    """A core refusal as a 400; ``param`` is the field its message starts with, if any."""
    text = str(exc)
    param = next((f for f in sorted(fields, key=len, reverse=True) if re.match(rf"{re.escape(f)}\b", text)), None)
    return APIError(400, text, param=param)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, else a 400 saying what is wrong with it."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, an integer of thousands of digits, deep nesting
        raise APIError(400, "The request body is not valid JSON: send a JSON object with Content-Type "
                            "application/json.") from None
    if not isinstance(data, dict):
        raise APIError(400, f"The request body must be a JSON object, got {type(data).__name__}.")
    return data


class APIRequest(BaseModel):
    """Strict JSON types (no numbers as strings, no booleans as numbers), and no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Any:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            param = _path(err["loc"])
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(cls.model_fields)
                raise APIError(400, f"Unrecognized request argument supplied: {param}. This endpoint takes: "
                                    f"{allowed}.", param=param) from None
            if err["type"] == "missing":
                raise APIError(400, f"Missing required parameter: '{param}'.", param=param) from None
            raise APIError(400, f"{param}: {err['msg']}, got {_shown(err.get('input'))}.", param=param) from None


class StreamOptions(APIRequest):
    include_usage: bool = False


class ChatRequest(APIRequest):
    model: str | None = None
    messages: list[Any]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    n: int | None = None
    user: str | None = None


class ImageRequest(APIRequest):
    model: str | None = None
    prompt: str
    n: int | None = None
    response_format: Literal["b64_json", "url"] | None = None
    size: str | None = None
    output_format: Literal["png"] | None = None
    user: str | None = None
    # beyond OpenAI's fields: the sampler's settings, as the page and the CLI name them
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    negative_prompt: str | None = None
    shift: float | None = None
    guidance_interval: list[float] | None = None
    guidance: str | None = None
    strength: float | None = None
    init_image: str | None = None


# -- images inside requests ------------------------------------------------------------------------
DATA_URL = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*?);base64,(?P<data>.*)", re.DOTALL)


def decode_image_url(url: str, param: str) -> Image.Image:
    """A ``data:image/...;base64,...`` URL as an RGB image; a 400 naming ``param`` for anything else (other
    URLs are not fetched: the server reaches nothing on a client's behalf)."""
    if not url.startswith("data:"):
        scheme = url.split(":", 1)[0] if ":" in url[:12] else ""
        kind = f"{scheme} URLs" if scheme else "anything but a data URL"
        raise APIError(400, f"{param}: only data URLs are accepted (data:image/png;base64,...); this server does "
                            f"not fetch {kind}. Send the image inline, base64-encoded.", param=param,
                       code="invalid_image_url")
    m = DATA_URL.fullmatch(url)
    if m is None:
        raise APIError(400, f"{param}: the data URL must be base64-encoded: data:image/<type>;base64,<data>.",
                       param=param, code="invalid_image_url")
    if m["mime"] and not m["mime"].lower().startswith("image/"):
        raise APIError(400, f"{param}: the data URL holds {m['mime']!r}, not an image.", param=param,
                       code="invalid_image_url")
    data = re.sub(r"\s+", "", m["data"])
    if len(data) // 4 * 3 > MAX_IMAGE_BYTES:
        raise APIError(400, f"{param}: the image is about {len(data) // 4 * 3 / 2**20:.0f} MB; the limit is "
                            f"{MAX_IMAGE_BYTES // 2**20} MB.", param=param, code="invalid_image")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param}: the data URL's base64 data is not valid base64.", param=param,
                       code="invalid_image") from None
    try:
        return load_image(raw, name=param)
    except InputError as exc:
        raise APIError(400, str(exc), param=param, code="invalid_image") from None


# -- chat ---------------------------------------------------------------------------------------------
@dataclass
class ChatCall:
    """A chat request as ``ChatPipeline.stream`` takes it."""

    messages: list[dict[str, Any]]  # {"role", "content", "images": [PIL]}; the images go where the chat tab puts them
    system_prompt: str | None
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    include_usage: bool = False


def _text_of(content: Any, where: str, *, images_allowed: bool) -> tuple[str, list[Image.Image]]:
    """A message's content (a string or a list of parts) -> (its text parts joined, its images in order)."""
    if isinstance(content, str):
        return content, []
    kinds = "'text' or 'image_url'" if images_allowed else "'text'"
    if not isinstance(content, list) or not content:
        raise APIError(400, f"{where}.content must be a string or a non-empty list of content parts "
                            f"({{\"type\": {kinds}, ...}}); got {_shown(content)}.", param=f"{where}.content")
    texts, images = [], []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if set(part) != {"type", "text"} or not isinstance(part["text"], str):
                raise APIError(400, f"{at} must be {{\"type\": \"text\", \"text\": str}}; got {_shown(part)}.",
                               param=at)
            texts.append(part["text"])
        elif kind == "image_url" and images_allowed:
            spec = part.get("image_url")
            if (set(part) != {"type", "image_url"} or not isinstance(spec, dict) or not isinstance(spec.get("url"), str)
                    or not set(spec) <= {"url", "detail"} or spec.get("detail", "auto") not in ("auto", "low", "high")):
                shape = '{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}'
                raise APIError(400, f"{at} must be {shape} (detail: auto, low or high); got {_shown(part)}.",
                               param=at)
            images.append(decode_image_url(spec["url"], f"{at}.image_url.url"))
        else:
            what = "only user messages may hold images" if kind == "image_url" else f"got {_shown(part)}"
            raise APIError(400, f"{at} must be a content part of type {kinds}; {what}.", param=at)
    return "\n".join(texts), images


def chat_call(req: ChatRequest, image_tag: str) -> ChatCall:
    """Check a chat request's messages and settings; their images decoded (a 400 for anything not allowed)."""
    if req.n is not None and req.n != 1:
        raise APIError(400, f"n must be 1 (one answer per request); got {req.n}.", param="n")
    if req.max_tokens is not None and req.max_completion_tokens is not None:
        raise APIError(400, "Give max_tokens or max_completion_tokens, not both.", param="max_tokens")
    max_tokens = req.max_tokens if req.max_tokens is not None else req.max_completion_tokens
    try:
        temperature = limits.check_number("temperature", 1.0 if req.temperature is None else req.temperature,
                                          limits.TEMPERATURE)
        top_p = limits.check_number("top_p", 1.0 if req.top_p is None else req.top_p, limits.TOP_P)
        max_new = limits.check_number("max_tokens", limits.MAX_NEW_TOKENS[1] if max_tokens is None else max_tokens,
                                      limits.MAX_NEW_TOKENS, integer=True)
        seed = None if req.seed is None else limits.check_number("seed", req.seed, limits.SEED, integer=True)
    except InputError as exc:
        raise refused(exc, ("temperature", "top_p", "max_tokens", "seed")) from None
    if not req.messages:
        raise APIError(400, "messages must be a non-empty list of messages.", param="messages")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        where = f"messages[{i}]"
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("system", "developer", "user", "assistant"):
            raise APIError(400, f"{where}.role must be system, developer, user or assistant (tools are not "
                                f"supported); got {_shown(role if isinstance(m, dict) else m)}.", param=f"{where}.role")
        extra = sorted(set(m) - {"role", "content", "name"})
        if extra:
            raise APIError(400, f"Unrecognized argument in {where}: {extra[0]}. A message takes role, content and "
                                "name.", param=f"{where}.{extra[0]}")
        if "name" in m and not isinstance(m["name"], str):
            raise APIError(400, f"{where}.name must be a string; got {_shown(m['name'])}.", param=f"{where}.name")
        text, images = _text_of(m.get("content"), where, images_allowed=role == "user")
        if image_tag in text:
            raise APIError(400, f"{where}.content contains {image_tag}: send images as image_url parts; the server "
                                "places them.", param=f"{where}.content")
        if len(text) > limits.MAX_MESSAGE_CHARS:
            raise APIError(400, f"{where}.content is {len(text)} characters long; the limit is "
                                f"{limits.MAX_MESSAGE_CHARS}.", param=f"{where}.content")
        if len(images) > limits.MAX_IMAGES_PER_MESSAGE:
            raise APIError(400, f"{where} has {len(images)} images; the limit is {limits.MAX_IMAGES_PER_MESSAGE} "
                                "per message.", param=f"{where}.content")
        if role in ("system", "developer"):
            system.append(text)
            continue
        if role == "user" and not text.strip():
            if not images:
                raise APIError(400, f"{where} has no text and no image.", param=f"{where}.content")
            text = DEFAULT_QUESTION
        turns.append({"role": role, "content": text.strip() if role == "user" else text, "images": images})
    if not turns or turns[-1]["role"] != "user":
        raise APIError(400, "The last message must be a user message: the model answers it.", param="messages")
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    if req.stream_options is not None and not req.stream:
        raise APIError(400, "stream_options is only allowed with stream: true.", param="stream_options")
    return ChatCall(turns, "\n".join(system) if system else None, max_new, temperature, top_p, seed, include_usage)


# -- image generation ---------------------------------------------------------------------------------
@dataclass
class GenerationCall:
    """An image request as ``GenerationPipeline.check_inputs`` / ``iterate`` take it."""

    prompt: str
    steps: int | None
    cfg: float | None
    seed: int
    n: int
    sampler: str
    response_format: str
    options: dict[str, Any]  # the generation options the client gave, as the pipeline's keyword arguments


def generation_options(req: ImageRequest) -> dict[str, Any]:
    """The generation options a request gives (init_image, strength, negative_prompt, shift, guidance_interval,
    guidance), checked and converted to the pipeline's keyword arguments; the ones it leaves out are absent."""
    out: dict[str, Any] = {}
    try:
        if req.negative_prompt is not None:
            out["negative_prompt"] = limits.check_text("negative_prompt", req.negative_prompt)
        if req.shift is not None:
            shift = limits.check_number("shift", req.shift, (0.0, float("inf")))
            if not 0 < shift < float("inf"):
                raise InputError(f"shift must be a positive number, got {_shown(req.shift)}")
            out["shift"] = shift
        if req.guidance_interval is not None:
            gi = req.guidance_interval
            if len(gi) != 2 or not all(0.0 <= x <= 1.0 for x in gi) or gi[0] > gi[1]:
                raise InputError(f"guidance_interval must be [lo, hi] with 0 <= lo <= hi <= 1, got {_shown(gi)}")
            out["guidance_interval"] = (float(gi[0]), float(gi[1]))
        if req.guidance is not None:
            out["guidance"] = limits.check_choice("guidance", req.guidance, GUIDANCE_RULES)
        if req.strength is not None:
            strength = limits.check_number("strength", req.strength, (0.0, 1.0))
            if strength <= 0:
                raise InputError(f"strength must be more than 0 and at most 1, got {_shown(req.strength)}")
            out["strength"] = strength
    except InputError as exc:
        raise refused(exc, ("negative_prompt", "shift", "guidance_interval", "guidance", "strength")) from None
    if req.init_image is not None:
        out["init_image"] = decode_image_url(req.init_image, "init_image")
    return out


def generation_call(req: ImageRequest, image_size: int) -> GenerationCall:
    """Check an image request's own fields (the pipeline checks prompt, steps, cfg, n, seed and sampler in
    this API's words); a 400 for anything not allowed."""
    own = f"{image_size}x{image_size}"
    if req.size is not None and req.size != own:
        raise APIError(400, f"size must be {own}, this model's only image size; got {_shown(req.size)}. Leave it "
                            "out for the model's size.", param="size")
    try:
        sampler = limits.check_choice("sampler", "euler" if req.sampler is None else req.sampler, SOLVERS)
        seed = random.randint(*limits.SEED) if req.seed is None else req.seed
    except InputError as exc:
        raise refused(exc, ("sampler",)) from None
    return GenerationCall(prompt=req.prompt, steps=req.steps, cfg=req.cfg, seed=seed,
                          n=1 if req.n is None else req.n, sampler=sampler,
                          response_format=req.response_format or "b64_json", options=generation_options(req))
