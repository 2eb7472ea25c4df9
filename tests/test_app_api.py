"""The launched app through gradio_client: streaming, refusals, Stop, and two sessions at once."""

from __future__ import annotations

import inspect
import io
import json
import logging
import os
import re
import threading
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import httpx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from janusflow_core import GenerationPipeline
from tools.serve import serve

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "assets" / "examples" / "red_circle_blue_square.png"
ENDPOINTS = ["/chat", "/draw", "/stop_chat", "/clear_chat", "/generate", "/stop_generate", "/random_seed"]
OPTIONS = ["init_image", "strength", "negative_prompt", "shift", "guidance_interval_lo", "guidance_interval_hi",
           "guidance"]


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with serve(tiny_model_dir, concurrency=2) as (url, engine):
        yield url, engine
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def client(served):
    return Client(served[0], verbose=False)


def new_client(served) -> Client:
    return Client(served[0], verbose=False)


def answer(chatbot) -> str:
    return chatbot[-1]["content"][-1]["text"]


def wait_for(job, n: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while len(job.outputs()) < n:
        if job.done() or time.monotonic() > end:
            raise AssertionError(f"expected {n} outputs, got {len(job.outputs())}: {job.status()}")
        time.sleep(0.01)


def test_every_action_is_a_documented_endpoint(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert set(ENDPOINTS) <= set(api["named_endpoints"])
    params = {name: [p["parameter_name"] for p in api["named_endpoints"][name]["parameters"]]
              for name in ("/chat", "/draw", "/generate")}
    sampling = ["cfg", "steps", "seed", "sampler", "preview"]
    assert params["/chat"] == ["message", "temperature", "top_p", "max_new_tokens", "seed",
                               *(f"draw_{p}" for p in sampling + OPTIONS)]  # the new inputs after the old ones
    assert params["/draw"] == ["message", *sampling, *OPTIONS]
    assert params["/generate"] == ["prompt", "cfg", "steps", "seed", "num_images", "sampler", "preview", *OPTIONS]
    docs = (REPO / "docs" / "api.md").read_text()
    assert all(f"`{e}`" in docs for e in ENDPOINTS) and all(f"`{p}`" in docs for p in OPTIONS)


def test_chat_answer_streams_in_several_pieces(client):
    message = {"text": "Is the circle left of the square?", "files": [handle_file(str(EXAMPLE))]}
    job = client.submit(message, 1.5, 1.0, 80, 0, api_name="/chat")
    job.result()
    answers = [answer(chatbot) for chatbot, _ in job.outputs()]
    assert len(set(answers)) >= 3 and all(answers[-1].startswith(a) for a in answers)
    chatbot, stats = job.outputs()[-1]
    assert chatbot[0]["content"][0]["type"] == "file" and chatbot[0]["content"][1]["text"].startswith("Is the")
    assert "tokens/s" in stats


def test_generation_streams_the_newest_step_with_previews_then_the_images(client, served):
    with paced(served[1], 0.1):  # 12 steps now take over 1.2 s: several updates at the display rate
        job = client.submit("a red circle", 2.0, 12, 5, 2, "euler", "x1", api_name="/generate")
        job.result()
    outputs = job.outputs()
    steps = [int(status.split("Step **")[1].split(" / 12**")[0]) for _, status, _ in outputs[:-1]]
    assert len(steps) >= 3 and steps == sorted(set(steps))  # the newest step each time, never an old one
    previews = [Image.open(p).convert("RGB") for p, _, _ in outputs[:-1] if p != {"__type__": "update"}]
    assert len(previews) >= 3 and all(p.size == (65, 32) for p in previews)  # two 32 px tiles side by side
    assert len({p.tobytes() for p in previews}) == len(previews)
    preview, status, gallery = outputs[-1]
    assert preview == {"__type__": "update"}  # the last preview stays on screen
    assert "2 image(s)" in status and [g["caption"] for g in gallery] == ["seed 5", "seed 6"]
    assert all(Image.open(g["image"]).size == (32, 32) for g in gallery)  # downloads are the model's pixels


@pytest.mark.parametrize("args, expected", [
    (("a red circle", 2.0, 500, 1, 1, "euler", "x1"), "Steps must be a whole number from 1 to 100, got 500"),
    (("a red circle", 10.5, 5, 1, 1, "euler", "x1"), "CFG must be a number from 0 to 10, got 10.5"),
    (("a red circle", 2.0, 5, 1, 9, "euler", "x1"), "Number of images must be a whole number from 1 to 8, got 9"),
    (("a red circle", 2.0, 5, -3, 1, "euler", "x1"), "Seed must be a whole number from 0 to .*, got -3"),
    (("a red circle", 2.0, 5, 1, 1, "rk4", "x1"), "Sampler must be one of euler, heun; got 'rk4'"),
    (("  ", 2.0, 5, 1, 1, "euler", "x1"), "The prompt is empty"),
    (("a" * 4200, 2.0, 5, 1, 1, "euler", "x1"), "4200 characters long; the limit is 4000"),
    (("Ω" * 400, 2.0, 5, 1, 1, "euler", "x1"), r"The prompt is \d+ tokens; the limit is \d+"),
])
def test_generation_refuses_out_of_range_values(client, args, expected):
    with pytest.raises(AppError, match=expected):
        client.predict(*args, api_name="/generate")


def test_chat_refuses_bad_input(client, tmp_path):
    with pytest.raises(AppError, match="Temperature must be a number from 0 to 2, got 9"):
        client.predict({"text": "hi", "files": []}, 9, 0.9, 5, 0, api_name="/chat")
    with pytest.raises(AppError, match="Type a question"):
        client.predict({"text": "", "files": []}, 0, 0.9, 5, 0, api_name="/chat")
    fake = tmp_path / "photo.png"
    fake.write_bytes(b"not a png at all")
    with pytest.raises(AppError, match="photo.png is not a readable image"):
        client.predict({"text": "hi", "files": [handle_file(str(fake))]}, 0, 0.9, 5, 0, api_name="/chat")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(AppError, match="Message: Invalid file type"):
        client.predict({"text": "hi", "files": [handle_file(str(text))]}, 0, 0.9, 5, 0, api_name="/chat")


GOOD_GENERATION = ["a red circle", 2.0, 2, 1, 1, "euler", "x1"]
GOOD_OPTIONS = [None, 1.0, "", 1.0, 0.0, 1.0, "cfg"]  # the page's defaults with no init image
GOOD_CHAT = [{"text": "hi", "files": []}, 0, 0.9, 3, 0]
SHAPE = re.escape('Message must be {"text": str, "files": [file, ...]} (files may be empty)')
# (endpoint, input index, wrong value, the message's start): every input of both endpoints, wrong types
WRONG_TYPES = [
    ("/generate", 0, 5, "The prompt must be text, got int 5"),
    ("/generate", 0, ["a red circle"], "The prompt must be text, got list"),
    ("/generate", 1, "abc", "CFG must be a number from 0 to 10, got 'abc'"),
    ("/generate", 1, None, "CFG must be a number from 0 to 10, got None"),
    ("/generate", 1, True, "CFG must be a number from 0 to 10, got True"),
    ("/generate", 2, "many", "Steps must be a whole number from 1 to 100, got 'many'"),
    ("/generate", 2, 2.5, "Steps must be a whole number from 1 to 100, got 2.5"),
    ("/generate", 2, [3], "Steps must be a whole number from 1 to 100, got \\[3\\]"),
    ("/generate", 3, "x", "Seed must be a whole number from 0 to .*, got 'x'"),
    ("/generate", 3, {"seed": 1}, "Seed must be a whole number from 0 to .*, got {'seed': 1}"),
    ("/generate", 4, "two", "Number of images must be a whole number from 1 to 8, got 'two'"),
    ("/generate", 5, 3, "Sampler must be one of euler, heun; got 3"),
    ("/generate", 5, None, "Sampler must be one of euler, heun; got None"),
    ("/generate", 6, ["x1"], "Preview must be one of x1, x1-fast, zt; got \\['x1'\\]"),
    ("/chat", 0, "hello", SHAPE + "; got 'hello'"),
    ("/chat", 0, ["hello"], SHAPE + "; got \\['hello'\\]"),
    ("/chat", 0, {"text": "hi", "files": "photo.png"}, SHAPE),
    ("/chat", 0, {"text": ["hi"], "files": []}, SHAPE),
    ("/chat", 1, "abc", "Temperature must be a number from 0 to 2, got 'abc'"),
    ("/chat", 2, None, "Top-p must be a number from 0.01 to 1, got None"),
    ("/chat", 3, "lots", "Max new tokens must be a whole number from 1 to 4096, got 'lots'"),
    ("/chat", 4, 1.5, "Seed must be a whole number from 0 to .*, got 1.5"),
]


@contextmanager
def server_log():
    """Everything the server writes to stdout, stderr and the logging system meanwhile."""
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    logging.getLogger().addHandler(handler)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            yield lambda: out.getvalue() + err.getvalue()
    finally:
        logging.getLogger().removeHandler(handler)


def test_wrong_types_get_the_same_clear_messages_as_wrong_values(client):
    with server_log() as log:
        for endpoint, index, value, expected in WRONG_TYPES:
            args = list(GOOD_GENERATION if endpoint == "/generate" else GOOD_CHAT)
            args[index] = value
            with pytest.raises(AppError) as refused:
                client.predict(*args, api_name=endpoint)
            assert re.match(expected, str(refused.value)), (endpoint, index, value, str(refused.value))
        assert client.predict(*GOOD_GENERATION, api_name="/generate")[1].startswith("Done")  # then a good call
        assert "tokens/s" in client.predict(*GOOD_CHAT, api_name="/chat")[1]
    printed = log()
    assert "Traceback" not in printed and "verbose error reporting" not in printed, printed[-2000:]


def raw_call(url: str, endpoint: str, body: str) -> str:
    """POST a JSON body as it is (NaN, Infinity, too few values: what gradio_client will not send) and return
    the event stream's text."""
    posted = httpx.post(f"{url}gradio_api/call{endpoint}", content=body, headers={"content-type": "application/json"})
    posted.raise_for_status()
    return httpx.get(f"{url}gradio_api/call{endpoint}/{posted.json()['event_id']}", timeout=60).text


def test_raw_calls_with_nan_infinity_or_too_few_inputs_get_clear_messages(served):
    url = served[0]
    cases = [
        ("/generate", '["a red circle", 2.0, NaN, 1, 1, "euler", "x1"]',
         "Steps must be a whole number from 1 to 100, got nan"),
        ("/generate", '["a red circle", Infinity, 5, 1, 1, "euler", "x1"]',
         "CFG must be a number from 0 to 10, got inf"),
        ("/generate", '["a red circle", 2.0]',
         "/generate takes 7 to 14 inputs (Prompt, CFG, Steps, Seed, Number of images, Sampler, Live preview shows, "
         "Init image, Strength, Negative prompt, Shift, Guidance interval LO, Guidance interval HI, Guidance); got 2."),
        ("/chat", '[{"text": "hi", "files": []}, -Infinity, 0.9, 5, 0]',
         "Temperature must be a number from 0 to 2, got -inf"),
        ("/chat", '[]', "/chat takes 5 to 17 inputs (Message, Temperature, Top-p, Max new tokens, Seed, CFG, "),
        ("/chat", '["hello"]', "/chat takes 5 to 17 inputs"),
        ("/draw", '[]', "/draw takes 13 inputs (Message, CFG, Steps, Seed, Sampler, Live preview shows, Init image, "),
    ]
    with server_log() as log:
        for endpoint, data, expected in cases:
            events = raw_call(url, endpoint, f'{{"data": {data}}}')
            assert "event: error" in events and expected in events, (endpoint, data, events)
        for data in (GOOD_GENERATION, GOOD_GENERATION + GOOD_OPTIONS):  # written before the options, or with them
            done = raw_call(url, "/generate", json.dumps({"data": data}))
            assert "event: complete" in done and "Done" in done
        done = raw_call(url, "/chat", json.dumps({"data": GOOD_CHAT}))
        assert "event: complete" in done and "tokens/s" in done
    printed = log()
    assert "Traceback" not in printed and "verbose error reporting" not in printed, printed[-2000:]


@contextmanager
def paced(engine, seconds: float):
    """Make every LLM forward pass (one token, or one Euler step) take at least ``seconds``.

    Unpaced, the tiny model writes ~700 tokens/s and runs 50 Euler steps in under a second, so a run could
    end before a Stop request's round trip arrives and a test of Stop would race the clock."""
    hook = engine.get().chat.model.language_model.model.register_forward_hook(lambda *_: time.sleep(seconds))
    try:
        yield
    finally:
        hook.remove()


def test_stop_endpoints_stop_only_their_own_session(served):
    a, b = new_client(served), new_client(served)
    with paced(served[1], 0.05):  # 50 steps now take over 2.5 s
        job = a.submit("a red circle", 2.0, 50, 1, 1, "euler", "x1", api_name="/generate")
        wait_for(job, 2)
        b.predict(api_name="/stop_generate")  # another session: no effect
        wait_for(job, 4)
        a.predict(api_name="/stop_generate")
        job.result()
    status = job.outputs()[-1][1]
    assert "Stopped at step" in status and len(job.outputs()) < 50

    # seed 2: this tiny random model samples 400 tokens without an EOS, so only Stop can end it early
    with paced(served[1], 0.01):  # 400 tokens now take over 4 s
        chat = a.submit({"text": "describe", "files": []}, 1.5, 1.0, 400, 2, api_name="/chat")
        wait_for(chat, 3)
        a.predict(api_name="/stop_chat")
        chat.result()
    stats = chat.outputs()[-1][1]
    assert "stopped" in stats and int(stats.split("**")[1]) < 300


def test_two_sessions_at_once_keep_their_own_history_previews_and_seeds(served):
    url, engine = served
    loaded = engine.get()
    expected_a = loaded.chat.chat([{"role": "user", "content": "What is this?", "images": [Image.open(EXAMPLE)]}],
                                  max_new_tokens=40, temperature=1.5, top_p=1.0, seed=1)
    expected_b = loaded.chat.chat([{"role": "user", "content": "hello there"}], max_new_tokens=40,
                                  temperature=1.5, top_p=1.0, seed=2)
    solo_a = GenerationPipeline(loaded.bundle)(prompt="a green triangle", steps=12, guidance_scale=3.0, seed=100)
    a, b = new_client(served), new_client(served)
    together = threading.Barrier(2)
    results: dict[str, object] = {}
    spans: dict[str, tuple[float, float]] = {}

    def user(name, client, message, prompt, cfg, seed, sampler, preview, follow_up):
        together.wait()  # both sampled answers run at the same time
        first = client.predict(message, 1.5, 1.0, 40, 1 if name == "a" else 2, api_name="/chat")
        together.wait()  # both generations run at the same time
        start = time.perf_counter()
        job = client.submit(prompt, cfg, 12, seed, 1, sampler, preview, api_name="/generate")
        job.result()
        spans[name] = (start, time.perf_counter())
        second = client.predict(follow_up, 0, 0.9, 5, 0, api_name="/chat") if follow_up else None
        results[name] = (first, second, job.outputs())

    threads = [
        threading.Thread(target=user, args=("a", a, {"text": "What is this?", "files": [handle_file(str(EXAMPLE))]},
                                            "a green triangle", 3.0, 100, "euler", "x1",
                                            {"text": "Tell me more", "files": []})),
        threading.Thread(target=user, args=("b", b, {"text": "hello there", "files": []},
                                            "three squares", 1.5, 200, "heun", "zt", None)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert spans["a"][0] < spans["b"][1] and spans["b"][0] < spans["a"][1]  # the two generations overlapped

    (a_first, _), (a_history, _), a_gen = results["a"]
    (b_first, _), _, b_gen = results["b"]
    # each seed gave its own answer (gr.Chatbot shows text through inspect.cleandoc)
    assert answer(a_first) == inspect.cleandoc(expected_a) and answer(b_first) == inspect.cleandoc(expected_b)
    texts = [m["content"][-1]["text"] for m in a_history]
    assert len(a_history) == 4 and texts[0] == "What is this?" and texts[2] == "Tell me more"
    assert len(b_first) == 2 and b_first[0]["content"][-1]["text"] == "hello there"

    a_steps = [int(o[1].split("Step **")[1].split(" / 12**")[0]) for o in a_gen[:-1]]
    assert a_steps == sorted(set(a_steps))  # A's own steps, newest each time
    assert "seed 100" in a_gen[-1][1] and "Euler" in a_gen[-1][1]
    assert "seed 200" in b_gen[-1][1] and "Heun" in b_gen[-1][1]
    got = Image.open(a_gen[-1][2][0]["image"]).convert("RGB")
    assert got.tobytes() == solo_a.images[0].tobytes()  # B's run at the same time changed nothing in A's


def test_generate_takes_the_new_options_and_old_callers_still_work(client, served):
    loaded = served[1].get()
    options = {"init_image": handle_file(str(EXAMPLE)), "strength": 0.5, "negative_prompt": "a blue square",
               "shift": 2.0, "guidance_interval_lo": 0.2, "guidance_interval_hi": 0.9, "guidance": "cfg-zero-star"}
    _, status, gallery = client.predict("a red circle", 3.0, 6, 4, 1, "euler", "x1-fast", **options,
                                        api_name="/generate")
    direct = GenerationPipeline(loaded.bundle)(
        "a red circle", steps=6, guidance_scale=3.0, seed=4, init_image=Image.open(EXAMPLE), strength=0.5,
        negative_prompt="a blue square", shift=2.0, guidance_interval=(0.2, 0.9), guidance="cfg-zero-star")
    assert Image.open(gallery[0]["image"]).convert("RGB").tobytes() == direct.images[0].tobytes()
    assert "from the init image at strength 0.5" in status
    _, status, gallery = client.predict("a red circle", 3.0, 6, 4, 1, "euler", "x1-fast", api_name="/generate")
    plain = GenerationPipeline(loaded.bundle)("a red circle", steps=6, guidance_scale=3.0, seed=4)
    assert Image.open(gallery[0]["image"]).convert("RGB").tobytes() == plain.images[0].tobytes()  # 7 inputs: as before


def test_bad_options_are_refused_then_a_good_call_runs(client, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    cases = [({"strength": 0}, "Strength must be a number above 0 and at most 1, got 0"),
             ({"strength": 1.2}, "Strength must be a number above 0 and at most 1, got 1.2"),
             ({"guidance_interval_lo": 0.7, "guidance_interval_hi": 0.3}, "got LO 0.7 above HI 0.3"),
             ({"init_image": handle_file(str(notes))}, "Init image: notes.png is not a readable image|"
                                                       "notes.png is not a readable image"),
             ({"negative_prompt": "x" * 4001}, "negative prompt is 4001 characters long; the limit is 4000"),
             ({"negative_prompt": "Ω" * 400}, r"The negative prompt is \d+ tokens; the limit is \d+"),
             ({"guidance": "pag"}, "Guidance must be one of cfg, cfg-zero-star, apg; got 'pag'"),
             ({"shift": "big"}, "Shift must be a number from 0.1 to 10, got 'big'")]
    with server_log() as log:
        for change, expected in cases:
            with pytest.raises(AppError, match=expected):
                client.predict(*GOOD_GENERATION, api_name="/generate", **change)
            with pytest.raises(AppError, match=expected):  # a drawing takes the same settings
                client.predict({"text": "a circle", "files": []}, api_name="/draw",
                               **{k: v for k, v in change.items()})
        assert "Done" in client.predict(*GOOD_GENERATION, api_name="/generate")[1]
    assert "Traceback" not in log(), log()[-2000:]


def test_drawing_through_the_api_then_a_question_about_it(served):
    client = new_client(served)
    loaded = served[1].get()
    chatbot, stats = client.predict({"text": "/draw a red circle", "files": []}, 0.0, 0.9, 5, 0,
                                    draw_steps=3, draw_seed=5, api_name="/chat")
    expected = GenerationPipeline(loaded.bundle)("a red circle", steps=3, seed=5).images[0]
    assert chatbot[0]["content"][-1]["text"] == "/draw a red circle" and "Drawn in" in stats
    assert chatbot[1]["content"][0]["type"] == "file"
    file = chatbot[1]["content"][0]["file"]  # gradio_client downloads it: a local path
    assert Image.open(file if isinstance(file, str) else file["path"]).convert("RGB").tobytes() == expected.tobytes()
    chatbot, stats = client.predict({"text": "How many circles?", "files": []}, 0.0, 0.9, 5, 0, api_name="/chat")
    assert len(chatbot) == 4 and "tokens/s" in stats
    prompt_tokens = int(stats.split("prompt ")[1].split()[0])
    with_image = loaded.chat.prompt_length([{"role": "user", "content": "How many circles?", "images": [expected]}])
    assert prompt_tokens == with_image  # the drawn image went with the question, the drawing's text did not
    job = client.submit({"text": "a blue square", "files": []}, steps=3, seed=6, api_name="/draw")
    chatbot, stats = job.result()
    assert len(chatbot) == 6 and chatbot[-1]["content"][0]["type"] == "file" and "Drawn in" in stats
    assert client.predict(api_name="/clear_chat") == ([], "")


# -- property: through the API, whatever is sent, a result or one clear message ----------------------------

FIELDS = ("prompt", "CFG", "Steps", "Seed", "Number of images", "Sampler", "Preview", "Message", "message",
          "Temperature", "Top-p", "Max new tokens", "Type a question", "images in one message", "not an image")
json_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**40), st.floats(allow_nan=False,
                        allow_infinity=False), st.text(max_size=12), st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def result_or_clear_message(client, args, endpoint) -> None:
    with server_log() as log:
        try:
            client.predict(*args, api_name=endpoint)
        except AppError as exc:
            assert any(f in str(exc) for f in FIELDS) and "verbose error" not in str(exc), str(exc)
    assert "Traceback" not in log(), log()[-2000:]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.one_of(st.just("a red circle"), json_values), cfg=st.one_of(st.floats(0, 10), json_values),
       steps=st.one_of(st.integers(1, 3), json_values), seed=st.one_of(st.integers(0, 9), json_values),
       num_images=st.one_of(st.integers(1, 2), json_values), sampler=st.one_of(st.just("euler"), json_values),
       preview=st.one_of(st.just("x1-fast"), json_values))
def test_generate_endpoint_gives_a_result_or_one_clear_message(client, prompt, cfg, steps, seed, num_images,
                                                               sampler, preview):
    result_or_clear_message(client, [prompt, cfg, steps, seed, num_images, sampler, preview], "/generate")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.one_of(json_values, st.fixed_dictionaries({"text": st.one_of(st.text(max_size=20), json_values),
                                                             "files": st.one_of(st.just([]), json_values)})),
       temperature=st.one_of(st.floats(0, 2), json_values), top_p=st.one_of(st.floats(0.01, 1), json_values),
       max_new_tokens=st.one_of(st.integers(1, 3), json_values), seed=st.one_of(st.integers(0, 9), json_values))
def test_chat_endpoint_gives_a_result_or_one_clear_message(client, message, temperature, top_p, max_new_tokens,
                                                           seed):
    result_or_clear_message(client, [message, temperature, top_p, max_new_tokens, seed], "/chat")
