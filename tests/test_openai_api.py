"""The OpenAI-compatible API under /v1, driven by the official ``openai`` client against the served app
(the embedded shapes model): models, chat (streamed and not), images, refusals in OpenAI's shape, the API
key, the shared model-run limit, and fuzzed request bodies that never get a 500."""

from __future__ import annotations

import base64
import inspect
import io
import itertools
import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import openai
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import app.openai_api as openai_api
from app.openai_models import APIError, ChatRequest, ImageRequest, generation_options, refused
from janusflow_core import GenerationPipeline
from janusflow_core.limits import InputError
from tools.serve import serve

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "assets" / "examples" / "red_circle_blue_square.png"
MODEL = "janusflow-shapes"
KEY = "sk-test-key"


def data_url(path: Path = EXAMPLE) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def png_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def served():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with serve(None, concurrency=2) as (url, engine):
        yield url.rstrip("/") + "/v1", engine
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0], api_key="unused", max_retries=0, timeout=120)


def ask(client, content, **kwargs):
    kwargs = {"model": MODEL, "max_tokens": 40, "temperature": 0, **kwargs}
    return client.chat.completions.create(messages=[{"role": "user", "content": content}], **kwargs)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-4o")
    assert err.value.body["code"] == "model_not_found" and MODEL in err.value.body["message"]


def test_streamed_pieces_concatenate_to_the_answer_for_a_seed(client):
    content = [{"type": "text", "text": "Describe the image."}, {"type": "image_url", "image_url": {"url": data_url()}}]
    whole = ask(client, content, temperature=1.5, top_p=1.0, seed=0, max_tokens=80)
    stream = ask(client, content, temperature=1.5, top_p=1.0, seed=0, max_tokens=80, stream=True,
                 stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3 and "".join(pieces) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert whole.usage.completion_tokens >= len(pieces) and whole.usage.total_tokens == (
        whole.usage.prompt_tokens + whole.usage.completion_tokens)
    other_seed = ask(client, content, temperature=1.5, top_p=1.0, seed=1, max_tokens=80)
    assert other_seed.choices[0].message.content != whole.choices[0].message.content


def test_a_raw_stream_is_server_sent_events_ending_with_done(served):
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url()}}]}],
            "stream": True, "temperature": 1.5, "seed": 3, "max_tokens": 30}
    with httpx.stream("POST", served[0] + "/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert len(events) >= 4  # the role, pieces, the finish reason, [DONE]


def test_image_parts_go_where_the_chat_tab_puts_them_in_either_order(client, served):
    question = "How many shapes are there?"
    image = {"type": "image_url", "image_url": {"url": data_url(), "detail": "auto"}}
    text = {"type": "text", "text": question}
    text_first, image_first = ask(client, [text, image]), ask(client, [image, text])
    assert text_first.choices[0].message.content == image_first.choices[0].message.content
    assert text_first.usage == image_first.usage
    # the chat tab's conversation turn for the same message: the same answer
    chat = served[1].get().chat
    tab = chat.chat([{"role": "user", "content": question, "images": [Image.open(EXAMPLE).convert("RGB")]}],
                    max_new_tokens=40, temperature=0)
    assert text_first.choices[0].message.content == tab
    without = ask(client, question)
    assert text_first.usage.prompt_tokens > without.usage.prompt_tokens  # the image's tokens are in the prompt


def test_a_conversation_with_a_system_message_and_history(client):
    reply = client.chat.completions.create(model=MODEL, max_tokens=20, temperature=0, messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url()}}]},
        {"role": "assistant", "content": "A red circle and a blue square."},
        {"role": "user", "content": "What colour is the circle?"}])
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.prompt_tokens > 70


def decoded(item) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item.b64_json))).convert("RGB")


def test_images_as_b64_json_match_the_pipeline_and_as_urls_the_same_pixels(client, served):
    got = client.images.generate(prompt="a red circle", n=2, extra_body={"steps": 3, "seed": 5, "cfg": 2.0})
    assert len(got.data) == 2 and got.size == "64x64" and [d.model_extra["seed"] for d in got.data] == [5, 6]
    images = [decoded(d) for d in got.data]
    solo = served[1].get().generator("a red circle", steps=3, guidance_scale=2.0, seed=5, num_images=2)
    assert [im.tobytes() for im in images] == [im.convert("RGB").tobytes() for im in solo.images]

    by_url = client.images.generate(prompt="a red circle", model=MODEL, response_format="url", size="64x64",
                                    extra_body={"steps": 3, "seed": 5, "cfg": 2.0})
    assert by_url.data[0].b64_json is None
    fetched = httpx.get(by_url.data[0].url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(fetched.content)).convert("RGB").tobytes() == images[0].tobytes()
    assert httpx.get(by_url.data[0].url.replace(".png", "0.png")).status_code == 404


def test_n_images_each_with_its_own_seed(client):
    got = client.images.generate(prompt="a green triangle", n=3, extra_body={"steps": 2, "seed": 40})
    seeds = [d.model_extra["seed"] for d in got.data]
    assert seeds == [40, 41, 42] and len({decoded(d).tobytes() for d in got.data}) == 3
    one = client.images.generate(prompt="a green triangle", extra_body={"steps": 2, "seed": 41})
    assert len(one.data) == 1 and one.data[0].model_extra["seed"] == 41


def test_only_the_models_own_size_is_accepted(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(prompt="a red circle", size="1024x1024")
    assert err.value.status_code == 400 and err.value.body["param"] == "size"
    assert "size must be 64x64" in err.value.body["message"]


# -- every class of bad input: a 4xx in OpenAI's shape -----------------------------------------------------
USER = [{"role": "user", "content": "hi"}]
BAD_PNG = "data:image/png;base64," + base64.b64encode(b"not a png at all").decode()


def one_image(url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]


CHAT_REFUSALS = [  # (body, status, param, words in the message)
    ({"messages": USER, "temperature": 9}, 400, "temperature", "temperature must be a number from 0 to 2"),
    ({"messages": USER, "temperature": "hot"}, 400, "temperature", "Input should be a valid number"),
    ({"messages": USER, "top_p": 0}, 400, "top_p", "top_p must be a number from 0.01 to 1"),
    ({"messages": USER, "max_tokens": 0}, 400, "max_tokens", "max_tokens must be a whole number from 1 to 4096"),
    ({"messages": USER, "max_tokens": 2.5}, 400, "max_tokens", "valid integer"),
    ({"messages": USER, "max_tokens": 5, "max_completion_tokens": 5}, 400, "max_tokens", "not both"),
    ({"messages": USER, "seed": -1}, 400, "seed", "seed must be a whole number from 0"),
    ({"messages": USER, "seed": True}, 400, "seed", "valid integer"),
    ({"messages": USER, "stream": "yes"}, 400, "stream", "valid boolean"),
    ({"messages": USER, "n": 2}, 400, "n", "n must be 1"),
    ({"messages": USER, "stop": ["\n"]}, 400, "stop", "Unrecognized request argument supplied: stop"),
    ({"messages": USER, "stream_options": {"include_usage": True}}, 400, "stream_options", "only allowed with stream"),
    ({"messages": USER, "model": "gpt-4o"}, 404, "model", "does not exist"),
    ({}, 400, "messages", "Missing required parameter: 'messages'"),
    ({"messages": []}, 400, "messages", "non-empty list"),
    ({"messages": "hi"}, 400, "messages", "valid list"),
    ({"messages": ["hi"]}, 400, "messages[0].role", "role must be system, developer, user or assistant"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role", "tools are not supported"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, 400, "messages[0].tool_calls", "Unrecognized"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content", "a string or a non-empty list"),
    ({"messages": [{"role": "user", "content": []}]}, 400, "messages[0].content", "a string or a non-empty list"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, 400, "messages[0].content[0]",
     "type 'text' or 'image_url'"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, 400, "messages[0].content[0]",
     '{"type": "text", "text": str}'),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, 400,
     "messages[0].content[0]", '"image_url": {"url"'),
    ({"messages": one_image("https://x.org/a.png")},
     400, "messages[0].content[0].image_url.url", "does not fetch https URLs"),
    ({"messages": one_image("data:image/png,abc")},
     400, "messages[0].content[0].image_url.url", "must be base64-encoded"),
    ({"messages": one_image("data:text/plain;base64,aGk=")},
     400, "messages[0].content[0].image_url.url", "not an image"),
    ({"messages": one_image("data:image/png;base64,@@")},
     400, "messages[0].content[0].image_url.url", "not valid base64"),
    ({"messages": one_image(BAD_PNG)},
     400, "messages[0].content[0].image_url.url", "is not a readable image"),
    ({"messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": BAD_PNG}}]}, *USER]},
     400, "messages[0].content[0]", "only user messages may hold images"),
    ({"messages": [{"role": "user", "content": "<image_placeholder> hi"}]}, 400, "messages[0].content",
     "send images as image_url parts"),
    ({"messages": [{"role": "user", "content": "   "}]}, 400, "messages[0].content", "no text and no image"),
    ({"messages": [*USER, {"role": "assistant", "content": "hello"}]}, 400, "messages", "last message must be a user"),
    ({"messages": [{"role": "user", "content": "a" * 4001}]}, 400, "messages[0].content", "the limit is 4000"),
    ({"messages": [{"role": "user", "content": "a" * 3000}]}, 400, "messages", "this model's context is 256 tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url()}}] * 5}]},
     400, "messages[0].content", "the limit is 4 per message"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url()}}] * 4}]},
     400, "messages", "send fewer images"),
]
IMAGE_REFUSALS = [
    ({"prompt": 5}, 400, "prompt", "valid string"),
    ({"prompt": "   "}, 400, "prompt", "prompt is empty"),
    ({"prompt": "a" * 4001}, 400, "prompt", "the limit is 4000"),
    ({"prompt": "Ω" * 400}, 400, "prompt", "tokens; the limit is 191"),
    ({}, 400, "prompt", "Missing required parameter: 'prompt'"),
    ({"prompt": "x", "n": 9}, 400, "n", "n must be a whole number from 1 to 8"),
    ({"prompt": "x", "n": 0}, 400, "n", "n must be a whole number from 1 to 8"),
    ({"prompt": "x", "n": "2"}, 400, "n", "valid integer"),
    ({"prompt": "x", "steps": 101}, 400, "steps", "steps must be a whole number from 1 to 100"),
    ({"prompt": "x", "cfg": 11}, 400, "cfg", "cfg must be a number from 0 to 10"),
    ({"prompt": "x", "cfg": "hi"}, 400, "cfg", "valid number"),
    ({"prompt": "x", "seed": 2**31}, 400, "seed", "seed must be a whole number from 0 to 2147483647"),
    ({"prompt": "x", "sampler": "rk4"}, 400, "sampler", "sampler must be one of euler, heun"),
    ({"prompt": "x", "size": "64"}, 400, "size", "size must be 64x64"),
    ({"prompt": "x", "response_format": "png"}, 400, "response_format", "'b64_json' or 'url'"),
    ({"prompt": "x", "output_format": "webp"}, 400, "output_format", "'png'"),
    ({"prompt": "x", "quality": "hd"}, 400, "quality", "Unrecognized request argument supplied: quality"),
    ({"prompt": "x", "model": "dall-e-3"}, 404, "model", "does not exist"),
    ({"prompt": "x", "negative_prompt": ""}, 400, "negative_prompt", "negative_prompt is empty"),
    ({"prompt": "x", "negative_prompt": 3}, 400, "negative_prompt", "valid string"),
    ({"prompt": "x", "shift": 0}, 400, "shift", "shift must be a positive number"),
    ({"prompt": "x", "shift": -2}, 400, "shift", "shift must be a number from 0"),
    ({"prompt": "x", "guidance_interval": [0.8, 0.2]}, 400, "guidance_interval", "0 <= lo <= hi <= 1"),
    ({"prompt": "x", "guidance_interval": [0.1]}, 400, "guidance_interval", "[lo, hi]"),
    ({"prompt": "x", "guidance_interval": "0.1,0.9"}, 400, "guidance_interval", "valid list"),
    ({"prompt": "x", "guidance": "pag"}, 400, "guidance", "guidance must be one of cfg, cfg-zero-star, apg"),
    ({"prompt": "x", "strength": 0}, 400, "strength", "more than 0 and at most 1"),
    ({"prompt": "x", "strength": 1.5}, 400, "strength", "strength must be a number from 0 to 1"),
    ({"prompt": "x", "init_image": "https://x.org/a.png"}, 400, "init_image", "does not fetch https URLs"),
    ({"prompt": "x", "init_image": BAD_PNG}, 400, "init_image", "is not a readable image"),
]


def check_refusal(response: httpx.Response, status: int, param: str | None, words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param and words in error["message"], error


@pytest.mark.parametrize("body, status, param, words", CHAT_REFUSALS)
def test_bad_chat_requests_are_refused_in_openai_shape(served, body, status, param, words):
    check_refusal(httpx.post(served[0] + "/chat/completions", json=body, timeout=60), status, param, words)


@pytest.mark.parametrize("body, status, param, words", IMAGE_REFUSALS)
def test_bad_image_requests_are_refused_in_openai_shape(served, body, status, param, words):
    check_refusal(httpx.post(served[0] + "/images/generations", json=body, timeout=60), status, param, words)


def test_bad_bodies_methods_and_urls_are_refused_in_openai_shape(served, monkeypatch):
    base = served[0]
    for content in (b"{", b"\xff\xfe", b"[1, 2]", b"[" * 100_000, b"1" * 5000):
        check_refusal(httpx.post(base + "/chat/completions", content=content), 400, None, "JSON")
    for value in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        check_refusal(httpx.post(base + "/images/generations", content=b'{"prompt": "x", "cfg": %s}' % value),
                      400, "cfg", "cfg must be a number from 0 to 10")
    check_refusal(httpx.get(base + "/chat/completions"), 405, None, "takes POST requests, not GET")
    assert httpx.delete(base + "/models/janusflow-shapes").headers["allow"] == "GET"
    check_refusal(httpx.post(base + "/embeddings", json={}), 404, None, "There is no POST /v1/embeddings")
    monkeypatch.setattr(openai_api, "MAX_BODY_BYTES", 1000)
    check_refusal(httpx.post(base + "/images/generations", json={"prompt": "a" * 2000}), 413, None, "over")


def test_the_client_library_raises_its_own_errors_for_refusals(client):
    with pytest.raises(openai.BadRequestError, match="temperature must be a number from 0 to 2"):
        ask(client, "hi", temperature=3)
    with pytest.raises(openai.BadRequestError, match="only data URLs are accepted"):
        ask(client, [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}])
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        ask(client, "hi", model="gpt-4o")
    with pytest.raises(openai.BadRequestError, match="size must be 64x64"):
        client.images.generate(prompt="x", size="512x512")


# -- the generation options: parsed, checked and passed to the pipeline as keyword arguments ------------
def test_a_core_refusal_names_the_field_it_starts_with():
    fields = ("prompt", "n", "negative_prompt", "guidance", "guidance_interval", "seed")
    assert refused(InputError("negative_prompt is 300 tokens; the limit is 191"), fields).param == "negative_prompt"
    assert refused(InputError("guidance_interval LO must be ..."), fields).param == "guidance_interval"
    assert refused(InputError("n must be a whole number from 1 to 8, got 9"), fields).param == "n"
    assert refused(InputError("the model diverged"), fields).param is None


def test_generation_options_become_the_pipelines_keyword_arguments():
    init = Image.new("RGB", (40, 30), (200, 10, 10))
    options = generation_options(ImageRequest.parse({
        "prompt": "x", "negative_prompt": "blurry", "shift": 3, "guidance_interval": [0.2, 0.8],
        "guidance": "apg", "strength": 0.6, "init_image": png_url(init)}))
    got_init = options.pop("init_image")
    assert options == {"negative_prompt": "blurry", "shift": 3.0, "guidance_interval": (0.2, 0.8),
                       "guidance": "apg", "strength": 0.6}
    assert isinstance(got_init, Image.Image) and got_init.size == (40, 30)
    assert got_init.getpixel((0, 0)) == (200, 10, 10)
    assert generation_options(ImageRequest.parse({"prompt": "x"})) == {}  # what is left out stays the pipeline's
    with pytest.raises(APIError, match="guidance must be one of cfg, cfg-zero-star, apg"):
        generation_options(ImageRequest.parse({"prompt": "x", "guidance": "CFG"}))


def test_the_generation_options_reach_the_pipeline(served, monkeypatch):
    pipe = served[1].get().generator
    original, seen = pipe.iterate, []

    def recording(*args, **kwargs):
        options = {k: kwargs.pop(k) for k in ("negative_prompt", "shift", "guidance_interval", "guidance")
                   if k in kwargs}
        seen.append(options)
        return original(*args, **kwargs)

    monkeypatch.setattr(pipe, "iterate", recording)
    r = httpx.post(served[0] + "/images/generations", timeout=60, json={
        "prompt": "a red circle", "steps": 2, "negative_prompt": "blue", "shift": 2.0, "guidance_interval": [0, 0.5],
        "guidance": "cfg-zero-star"})
    assert r.status_code == 200, r.text
    assert seen == [{"negative_prompt": "blue", "shift": 2.0, "guidance_interval": (0.0, 0.5),
                     "guidance": "cfg-zero-star"}]


# -- runs: the shared limit, and a client that goes away ------------------------------------------------
def test_api_runs_wait_for_the_same_model_runs_as_the_page(served):
    engine = served[1]
    result: list[int] = []
    with engine.model_slot(), engine.model_slot():  # --concurrency 2: both runs are taken
        t = threading.Thread(target=lambda: result.append(httpx.post(
            served[0] + "/chat/completions", json={"messages": USER, "max_tokens": 3}, timeout=60).status_code))
        t.start()
        t.join(1.0)
        assert t.is_alive() and not result  # waiting for a run
    t.join(60)
    assert result == [200]


def test_a_client_that_disconnects_mid_stream_stops_its_run(served, monkeypatch):
    chat = served[1].get().chat
    stopped, ended = threading.Event(), threading.Event()

    def endless(messages, *, stop_event, stats, **_):
        try:
            while not stop_event.wait(0.02):
                yield "word "
            stopped.set()
        finally:
            ended.set()

    monkeypatch.setattr(chat, "stream", endless)
    body = {"messages": USER, "stream": True, "max_tokens": 100}
    with httpx.stream("POST", served[0] + "/chat/completions", json=body, timeout=30) as r:
        events = [line for line in itertools.islice(r.iter_lines(), 8) if line]
        assert len(events) == 4 and all('"content": "word "' in e for e in events[1:])
        assert not stopped.is_set()  # the run goes on while the client reads
    assert stopped.wait(10) and ended.wait(10)
    with served[1].model_slot(), served[1].model_slot():  # and the run gave its model run back
        pass


def test_a_client_that_disconnects_from_a_plain_request_stops_its_run(served, monkeypatch):
    chat = served[1].get().chat
    stopped = threading.Event()

    def endless(messages, *, stop_event, stats, **_):
        while not stop_event.wait(0.02):
            yield "word "
        stopped.set()

    monkeypatch.setattr(chat, "stream", endless)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(served[0] + "/chat/completions", json={"messages": USER}, timeout=0.5)
    assert stopped.wait(10)


def test_a_client_that_disconnects_from_an_image_request_stops_its_run(served, monkeypatch):
    pipe = served[1].get().generator
    stopped = threading.Event()

    def endless(*args, callback_on_step_end, **kwargs):
        state = SimpleNamespace(finished=False)
        while callback_on_step_end(state) is None:  # the API's hook: stop once the client is gone
            time.sleep(0.02)
            yield state
        stopped.set()

    monkeypatch.setattr(pipe, "iterate", endless)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(served[0] + "/images/generations", json={"prompt": "a red circle"}, timeout=0.5)
    assert stopped.wait(10)


def test_failures_during_a_run_are_answered_in_openai_shape(served, monkeypatch, caplog):
    pipe, chat = served[1].get().generator, served[1].get().chat

    def diverging(*args, **kwargs):
        raise FloatingPointError("the latent is not finite after step 3; lower the guidance weight")
        yield

    monkeypatch.setattr(pipe, "iterate", diverging)
    r = httpx.post(served[0] + "/images/generations", json={"prompt": "a red circle"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "generation_diverged"
    assert "lower the guidance weight" in r.json()["error"]["message"]

    def broken(*args, **kwargs):  # a bug of the server's own: a 500, and the traceback in its log
        yield "a"
        raise RuntimeError("boom")

    monkeypatch.setattr(chat, "stream", broken)
    r = httpx.post(served[0] + "/chat/completions", json={"messages": USER}, timeout=30)
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert "RuntimeError" in r.json()["error"]["message"] and "boom" in caplog.text
    with httpx.stream("POST", served[0] + "/chat/completions", json={"messages": USER, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line and line != "data: [DONE]"]
    assert events[1]["choices"][0]["delta"] == {"content": "a"} and events[-1]["error"]["type"] == "server_error"


def test_the_docs_describe_every_field(served):
    docs = (REPO / "docs" / "api.md").read_text()
    section = docs[docs.index("## OpenAI-compatible API"):]
    for model in (ChatRequest, ImageRequest):
        assert all(f"`{name}`" in section for name in model.model_fields), model
    assert all(f"{method} {path}" in section for path, method in openai_api.ROUTES.items())


# -- the API key -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed():
    with serve(None, concurrency=1, api_key=KEY) as (url, _):
        yield url.rstrip("/") + "/v1"


def test_with_a_key_every_v1_request_needs_it(keyed):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
        for method, path in (("GET", "/models"), ("POST", "/chat/completions"), ("POST", "/images/generations"),
                             ("GET", "/nowhere"), ("HEAD", "/models"), ("OPTIONS", "/chat/completions")):
            r = httpx.request(method, keyed + path, headers=headers, json={})
            assert r.status_code == 401, (headers, method, path, r.text)
            assert method == "HEAD" or r.json()["error"]["code"] == "invalid_api_key"
            assert r.headers["www-authenticate"] == "Bearer"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed, api_key="wrong", max_retries=0).models.list()
    good = openai.OpenAI(base_url=keyed, api_key=KEY, max_retries=0, timeout=60)
    assert [m.id for m in good.models.list()] == [MODEL]
    assert good.chat.completions.create(model=MODEL, messages=USER, max_tokens=3).object == "chat.completion"
    url = good.images.generate(prompt="a red circle", response_format="url", extra_body={"steps": 2}).data[0].url
    assert httpx.get(url).status_code == 200  # image URLs are unguessable links outside /v1, like OpenAI's
    assert httpx.get(keyed.removesuffix("/v1")).status_code == 200  # the key guards the API, not the page


# -- property: whatever body is sent, an answer or a 4xx in OpenAI's shape, never a 500 --------------------
json_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**40),
                        st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=12), st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
part = st.one_of(st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(st.text(max_size=30), json_values)}),
                 st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.one_of(
                     st.fixed_dictionaries({"url": st.sampled_from([data_url(), BAD_PNG, "http://x/y.png", "data:,"])}),
                     json_values)}), json_values)
message = st.one_of(st.fixed_dictionaries({
    "role": st.one_of(st.sampled_from(["user", "system", "assistant", "tool"]), json_values),
    "content": st.one_of(st.text(max_size=40), st.lists(part, max_size=3), json_values)}), json_values)
# valid generation options are sent once the pipeline takes them (names.md); invalid ones always
OPTIONS = ("init_image", "strength", "negative_prompt", "shift", "guidance_interval", "guidance")
OPTIONS_SUPPORTED = all(k in inspect.signature(GenerationPipeline.iterate).parameters for k in OPTIONS)


def option(valid: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(valid, json_values) if OPTIONS_SUPPORTED else json_values


def answered_or_refused(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], error


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.fixed_dictionaries({"messages": st.one_of(st.lists(message, max_size=3), json_values)}, optional={
    "temperature": st.one_of(st.floats(0, 2), json_values), "top_p": st.one_of(st.floats(0.01, 1), json_values),
    "max_tokens": st.one_of(st.integers(1, 5), json_values), "seed": st.one_of(st.integers(0, 9), json_values),
    "stream": st.one_of(st.booleans(), json_values), "model": st.one_of(st.just(MODEL), json_values),
    "n": json_values, "logprobs": json_values}))
def test_any_chat_body_gets_an_answer_or_a_clear_refusal(served, body):
    answered_or_refused(httpx.post(served[0] + "/chat/completions", json=body, timeout=60))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.fixed_dictionaries({"prompt": st.one_of(st.just("a red circle"), json_values)}, optional={
    "n": st.one_of(st.integers(1, 2), json_values), "steps": st.one_of(st.integers(1, 2), json_values),
    "cfg": st.one_of(st.floats(0, 10), json_values), "seed": st.one_of(st.integers(0, 9), json_values),
    "size": st.one_of(st.just("64x64"), json_values), "response_format": st.one_of(st.just("url"), json_values),
    "sampler": st.one_of(st.just("heun"), json_values),
    "shift": option(st.floats(0.5, 3)), "guidance": option(st.sampled_from(["cfg", "cfg-zero-star", "apg"])),
    "strength": option(st.floats(0.1, 1)), "guidance_interval": option(st.just([0.0, 0.5])),
    "init_image": st.one_of(st.just(BAD_PNG), option(st.just(data_url()))),
    "negative_prompt": option(st.just("blue"))}))
def test_any_image_body_gets_an_answer_or_a_clear_refusal(served, body):
    answered_or_refused(httpx.post(served[0] + "/images/generations", json=body, timeout=60))


def test_requests_wait_for_the_model_to_load_and_a_failed_load_is_a_503(tmp_path):
    with serve(None, concurrency=1, preload=False) as (url, engine):
        reply = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key="x", max_retries=0).chat.completions.create(
            model=MODEL, messages=USER, max_tokens=2)
        assert reply.choices[0].message.role == "assistant" and engine.state == "ready"
    with serve(tmp_path, concurrency=1, preload=False) as (url, engine):  # an empty folder: no model
        r = httpx.post(url.rstrip("/") + "/v1/images/generations", json={"prompt": "x"}, timeout=60)
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_loaded"
        assert "could not be loaded" in r.json()["error"]["message"] and engine.state == "failed"
