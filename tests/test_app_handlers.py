"""The app's handlers, called directly with a tiny random model (no server, no browser)."""

from __future__ import annotations

import math
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import torch
from helpers_images import huge_png_header, text_as_png, truncated_png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app import Engine, EngineError, create_demo
from app.chat import ChatHandlers
from app.display import grid
from app.generate import GenerateHandlers, PreviewBudget
from janusflow_core import GenerationPipeline
from janusflow_core.pipelines import SamplingDefaults
from janusflow_core.vae import LatentRGB, to_pil

EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "three_triangles.png"
# sampled: the random tiny model writes only spaces when greedy; seed 2 samples no early EOS
SAMPLED = {"temperature": 1.5, "top_p": 1.0, "seed": 2}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run ~20x faster single-threaded on a shared CPU
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    engine = Engine(tiny_model_dir, device="cpu", dtype="fp32")
    engine.get()  # loaded up front: the handlers' outputs do not depend on test order
    return engine


@pytest.fixture(scope="module")
def chat(engine: Engine) -> ChatHandlers:
    return ChatHandlers(engine)


@pytest.fixture(scope="module")
def gen(engine: Engine) -> GenerateHandlers:
    return GenerateHandlers(engine)


def session(name: str) -> SimpleNamespace:
    return SimpleNamespace(session_hash=name)


def ask(chat: ChatHandlers, message, conversation=None, sid="s", max_new_tokens=40, **settings):
    s = {**SAMPLED, **settings}
    return list(chat.submit(message, s["temperature"], s["top_p"], max_new_tokens, s["seed"], conversation,
                            session(sid)))


def answer_of(output) -> str:
    return output[0][-1]["content"][-1]


# -- engine -------------------------------------------------------------------------------------------


def test_engine_loads_lazily_and_once(tiny_model_dir):
    calls = []

    def loader(model, **options):
        calls.append(model)
        time.sleep(0.2)  # both threads below arrive while the first load is running
        from janusflow_core import load_pretrained

        return load_pretrained(model, **options)

    engine = Engine(tiny_model_dir, device="cpu", dtype="fp32", loader=loader)
    create_demo(engine)
    assert calls == [] and engine.state == "idle" and "Loading" in engine.status()
    threads = [threading.Thread(target=engine.get) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.get()
    assert len(calls) == 1 and engine.state == "ready"
    assert "`model`" in engine.status() and "`cpu`" in engine.status() and "`float32`" in engine.status()


def test_the_page_shows_the_loading_state_then_the_model(tiny_model_dir):
    engine = Engine(tiny_model_dir, device="cpu", dtype="fp32")
    demo = create_demo(engine)
    on_load = next(f.fn for f in demo.fns.values() if f.name == "model_status")
    lines = list(on_load())
    assert lines[0] == "Loading `model` …" and lines[1].startswith("**Model** `model` · **device** `cpu`")
    assert list(on_load()) == [lines[1]]  # later visitors see the loaded model at once


def test_generation_waits_for_a_loading_model_and_says_so(tiny_model_dir):
    engine = Engine(tiny_model_dir, device="cpu", dtype="fp32")
    outputs = list(GenerateHandlers(engine).run("a circle", 2.0, 2, 0, 1, "euler", "x1", session("s")))
    assert outputs[0] == (gr.skip(), "Loading the model …", gr.skip())
    assert all("Step" in o[1] for o in outputs[1:-1]) and "Done" in outputs[-1][1]


def test_background_loading(tiny_model_dir, tmp_path):
    engine = Engine(tiny_model_dir, device="cpu", dtype="fp32")
    engine.start_loading().join()
    assert engine.state == "ready"
    broken = Engine(tmp_path / "nowhere", device="cpu")
    broken.start_loading().join()  # the error is kept for the page, not raised in the thread
    assert broken.state == "failed"


def test_failed_load_is_reported_not_retried(tmp_path):
    engine = Engine(tmp_path / "nowhere", device="cpu")
    with pytest.raises(EngineError, match="does not exist"):
        engine.get()
    assert engine.state == "failed" and "failed to load" in engine.status()
    with pytest.raises(gr.Error, match="could not be loaded"):
        ask(ChatHandlers(engine), "hello")
    with pytest.raises(gr.Error, match="could not be loaded"):
        list(GenerateHandlers(engine).run("a circle", 2.0, 2, 0, 1, "euler", "x1", session("s")))
    assert GenerateHandlers(engine).token_line("a circle") == "No token count: the model failed to load."


def test_sampling_defaults_come_from_the_model_folder(tmp_path):
    from janusflow_core.testing import make_tiny_model_dir

    folder = make_tiny_model_dir(tmp_path / "m", sampling={"steps": 7, "cfg": 4.5})
    demo = create_demo(Engine(folder))
    cfg = next(b for b in demo.blocks.values() if getattr(b, "label", None) == "CFG")
    steps = next(b for b in demo.blocks.values() if getattr(b, "label", None) == "Steps")
    assert cfg.value == 4.5 and steps.value == 7  # the generation pipeline's defaults, before the model loads
    engine = Engine(folder, device="cpu", dtype="fp32")
    engine.get()
    assert engine.sampling_defaults() == engine.get().generator.defaults == SamplingDefaults(7, 4.5)
    missing = Engine("someone/not-downloaded").sampling_defaults()  # not a folder: the published defaults
    assert missing == SamplingDefaults(steps=30, guidance_scale=2.0)


def test_every_run_unlocks_what_it_locked_whatever_way_it_ends(tiny_model_dir):
    """The page's wiring (app.layout.locked_run): each public run has a lock step before it and an unlock
    step both after success (``then``) and after an error or cancel (``failure``); gradio 6's page runs
    ``then`` steps only when the step before succeeded."""
    demo = create_demo(Engine(tiny_model_dir))
    fns = {f._id: f for f in demo.fns.values()}
    for api_name, locked in [("chat", {"Message", "Draw"}), ("draw", {"Message", "Draw"}),
                             ("generate", {"Prompt", "Generate"})]:
        run = next(f for f in fns.values() if f.api_name == api_name)
        lock = fns[run.trigger_after]
        assert {getattr(b, "label", None) or b.value for b in lock.outputs} == locked
        assert all(u["interactive"] is False for u in updates(lock))
        unlocks = [f for f in fns.values() if f.trigger_after == run._id and set(f.outputs) == set(lock.outputs)
                   and all(isinstance(u, dict) and u.get("interactive") is True for u in updates(f))]
        assert {(f.trigger_only_on_success, f.trigger_only_on_failure) for f in unlocks} == {(False, False),
                                                                                               (False, True)}
        status = {"chat": "chat-stats", "draw": "chat-stats", "generate": "gen-status"}[api_name]
        assert [b.elem_id for b in run.show_progress_on] == [status]
    clear = next(f for f in fns.values() if f.api_name == "clear_chat")
    cancel = next(f for f in fns.values() if f.is_cancel_function and f.targets == clear.targets)
    assert {fns[i].api_name for i in cancel.cancels} == {"chat", "draw"}  # Clear cancels an answer or a drawing
    unlock = next(f for f in fns.values() if f.trigger_after == clear._id)
    assert [getattr(b, "label", None) or b.value for b in unlock.outputs] == ["Message", "Draw"]
    assert updates(unlock) == [{"__type__": "update", "interactive": True}] * 2


def updates(step) -> list[dict]:
    """What an event step (a lock, unlock or other no-input step) sends to its outputs."""
    out = step.fn()
    return list(out) if isinstance(out, tuple) else [out]


def test_inputs_have_distinct_labels_and_both_boxes_send_on_enter(tiny_model_dir):
    demo = create_demo(Engine(tiny_model_dir))
    labelled = [b for b in demo.blocks.values() if isinstance(b, gr.components.Component) and b.label
                and not isinstance(b, (gr.Markdown, gr.State))]
    by_tab: dict[str, list[str]] = {}
    for b in labelled:
        by_tab.setdefault(b.label, []).append(type(b).__name__)
    assert {label: kinds for label, kinds in by_tab.items() if len(kinds) > 1 and label != "Seed"} == {}
    assert sorted(by_tab["Seed"]) == ["Number", "Number"]  # one per tab, the same control
    prompt = next(b for b in labelled if b.label == "Prompt")
    box = next(b for b in labelled if b.label == "Message")
    assert prompt.lines == box.lines == 1  # gradio: with one line Enter sends and Shift+Enter adds a line
    assert "Enter sends" in prompt.placeholder and "Enter sends" in box.placeholder


# -- chat -----------------------------------------------------------------------------------------------


def test_chat_streams_a_growing_answer_and_keeps_history(chat):
    outputs = ask(chat, {"text": "How many triangles?", "files": [str(EXAMPLE)]}, max_new_tokens=60)
    answers = [answer_of(o) for o in outputs]
    assert answers[0] == ""  # the question shows before the first token
    assert len(set(answers)) >= 3  # empty, at least one partial answer, the full one
    assert all(answers[-1].startswith(a) for a in answers)
    chatbot, stats, conversation = outputs[-1]
    assert chatbot[0]["content"][0] == {"path": str(EXAMPLE)} and chatbot[0]["content"][1] == "How many triangles?"
    assert [t["role"] for t in conversation] == ["user", "assistant"]
    assert conversation[0]["images"][0].size == (64, 64) and conversation[1]["content"] == answers[-1]
    assert "tokens/s" in stats and "60** tokens" in stats
    assert all(o[1] == "" for o in outputs[:-1])  # the speed line comes once the answer is done

    second = ask(chat, "And what colors are they?", conversation, max_new_tokens=5)
    _, stats2, conversation2 = second[-1]
    assert [t["role"] for t in conversation2] == ["user", "assistant"] * 2
    prompt_tokens = [int(s.split("prompt ")[1].split()[0]) for s in (stats, stats2)]
    assert prompt_tokens[1] > prompt_tokens[0] + 60  # the second prompt holds the image, question and answer


def test_chat_seed_reproduces_sampled_answers(chat):
    a = answer_of(ask(chat, "tell me something", seed=1)[-1])
    b = answer_of(ask(chat, "tell me something", seed=1)[-1])
    c = answer_of(ask(chat, "tell me something", seed=2)[-1])
    assert a == b and a != c


def test_chat_stop_ends_the_answer_early(chat):
    full = ask(chat, "describe", max_new_tokens=300)[-1][1]
    assert "**300** tokens" in full and "stopped" not in full
    run = chat.submit("describe", 1.5, 1.0, 300, 2, None, session("stopper"))  # seed 2: no early EOS
    next(run)  # the question is shown
    next(run)  # the first piece arrived
    chat.stop(session("someone-else"))  # another session's Stop changes nothing here
    chat.stop(session("stopper"))
    outputs = list(run)
    stats = outputs[-1][1]
    n = int(stats.split("**")[1])
    assert "stopped" in stats and n < 100
    assert [t["role"] for t in outputs[-1][2]] == ["user", "assistant"]  # the partial answer is kept


def test_a_second_request_from_the_same_session_is_refused_while_one_runs(chat):
    run = chat.submit("describe", 1.5, 1.0, 50, 0, None, session("busy"))
    next(run)
    with pytest.raises(gr.Error, match="already running"):
        ask(chat, "hello", sid="busy")
    assert ask(chat, "hello", sid="not-busy", max_new_tokens=3)  # other sessions go ahead
    run.close()  # a closed (e.g. cancelled) run frees its session
    assert ask(chat, "hello", sid="busy", max_new_tokens=3)


def test_clear_forgets_the_conversation(chat):
    first = ask(chat, {"text": "what is this", "files": [str(EXAMPLE)]}, max_new_tokens=3)[-1]
    assert chat.clear(session("s")) == ([], "", [])
    fresh = ask(chat, "what is this", [], max_new_tokens=3)[-1]
    assert len(fresh[2]) == 2 and "images" in first[2][0] and fresh[2][0]["images"] == []


def test_clear_in_the_middle_of_an_answer_sends_nothing_more_of_it(chat):
    """A late update from a cleared run would put the forgotten conversation back on the page."""
    run = chat.submit("describe", 1.5, 1.0, 300, 2, None, session("clearer"))  # seed 2: no early EOS
    next(run)  # the question is shown
    next(run)  # the first piece arrived
    assert chat.clear(session("clearer")) == ([], "", [])
    assert list(run) == []  # no partial answer, no final conversation: the run just ends
    assert ask(chat, "hello", sid="clearer", max_new_tokens=3)  # the session is free again


def test_text_only_and_image_only_turns(chat):
    text_only = ask(chat, "hello there", max_new_tokens=3)[-1]
    assert text_only[2][0]["images"] == [] and text_only[2][0]["content"] == "hello there"
    with pytest.warns(UserWarning, match="No image is attached"):  # gr.Warning, outside a running app
        ask(chat, "What is in this picture?", max_new_tokens=3)
    image_only = ask(chat, {"text": "", "files": [str(EXAMPLE)]}, max_new_tokens=3)[-1]
    assert image_only[2][0]["content"] == "Describe the image."


def test_long_conversations_drop_the_oldest_exchanges(chat):
    words = "red blue green circle square " * 40  # ~200 tokens per turn in a 512-token context
    turns = []
    for _ in range(4):
        turns += [{"role": "user", "content": words, "images": [], "files": []},
                  {"role": "assistant", "content": words, "images": [], "files": []}]
    turns.append({"role": "user", "content": "and now?", "images": [], "files": []})
    with pytest.warns(UserWarning, match="oldest 4 exchange"):  # gr.Warning, outside a running app
        output = ask(chat, "and now?", turns[:-1], max_new_tokens=3)[-1]
    assert len(output[2]) == len(turns) + 1  # the display keeps everything
    with pytest.raises(gr.Error, match="This message does not fit the model's context: the latest message is "
                                       r"\d+ tokens with its images; the model's context is 512 tokens"):
        ask(chat, "circle " * 500, turns[:-1], max_new_tokens=3)


@pytest.mark.parametrize("message, settings, expected", [
    ("", {}, "Type a question"),
    ({"text": "  ", "files": []}, {}, "Type a question"),
    ("x" * 4001, {}, "4001 characters long; the limit is 4000"),
    ({"text": "hi", "files": [str(EXAMPLE)] * 5}, {}, "5 images in one message; the limit is 4"),
    ("hi", {"temperature": 3}, "Temperature must be a number from 0 to 2, got 3"),
    ("hi", {"temperature": "abc"}, "Temperature must be a number from 0 to 2, got 'abc'"),
    ("hi", {"top_p": 0}, "Top-p must be a number from 0.01 to 1, got 0"),
    ("hi", {"top_p": float("nan")}, "Top-p must be a number from 0.01 to 1, got nan"),
    ("hi", {"seed": -1}, "Seed must be a whole number from 0 to"),
    ("hi", {"seed": None}, "Seed must be a whole number from 0 to"),
    ("hi", {"max_new_tokens": 0}, "Max new tokens must be a whole number from 1 to 4096, got 0"),
    ("hi", {"max_new_tokens": 2.5}, "Max new tokens must be a whole number from 1 to 4096, got 2.5"),
    (["hi"], {}, "The message must be .*text.*files"),
    ({"text": "hi", "files": "photo.png"}, {}, "The message must be .*text.*files"),
    ({"text": "hi", "files": [5]}, {}, "Each file of a message must be a file"),
    ({"text": 5, "files": []}, {}, "The message must be text, got int 5"),
])
def test_chat_refuses_bad_input_clearly(chat, message, settings, expected):
    max_new = settings.pop("max_new_tokens", 5)
    with pytest.raises(gr.Error, match=expected):
        ask(chat, message, max_new_tokens=max_new, **settings)


def test_chat_refuses_files_that_are_not_images_and_huge_images(chat, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not a picture")
    with pytest.raises(gr.Error, match="notes.png is not a readable image"):
        ask(chat, {"text": "hi", "files": [str(fake)]})
    truncated = truncated_png(tmp_path / "cut.png")
    with pytest.raises(gr.Error, match="cut.png could not be decoded as an image .*: the file is truncated or corrupt"):
        ask(chat, {"text": "hi", "files": [str(truncated)]})
    huge = huge_png_header(tmp_path / "huge.png", 10000, 6000)
    with pytest.raises(gr.Error, match="huge.png is 10000 x 6000 = 60.0 megapixels; the limit is 50 megapixels"):
        ask(chat, {"text": "hi", "files": [str(huge)]})
    bomb = huge_png_header(tmp_path / "bomb.png", 60000, 60000)
    with pytest.raises(gr.Error, match="bomb.png is .* megapixels; the limit is 50 megapixels"):
        ask(chat, {"text": "hi", "files": [str(bomb)]})


# -- generation -------------------------------------------------------------------------------------------


def run_gen(gen, prompt="a red circle", cfg=2.0, steps=5, seed=3, num_images=2, sampler="euler", preview="x1",
            sid="g"):
    return list(gen.run(prompt, cfg, steps, seed, num_images, sampler, preview, session(sid)))


class Gate:
    """Every LLM forward waits for a permit: the test decides how far the sampler (in its own thread) may run.
    The first forward of a run encodes the prompt; each Euler step then takes one."""

    def __init__(self, engine: Engine):
        self._permits = threading.Semaphore(0)
        self._cond = threading.Condition()
        self.entered = 0
        self._handle = engine.get().generator.model.language_model.model.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        with self._cond:
            self.entered += 1
            self._cond.notify_all()
        self._permits.acquire()

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._permits.release()

    def wait_entered(self, n: int) -> None:
        """Until the n-th forward has started (so every step before it has been published)."""
        with self._cond:
            assert self._cond.wait_for(lambda: self.entered >= n, timeout=60)

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *_) -> None:
        self._handle.remove()
        self.release(10_000)


@pytest.fixture
def stepwise(engine: Engine) -> GenerateHandlers:
    """Handlers that stream every newer step at once and preview each one (no display-rate limits)."""
    handlers = GenerateHandlers(engine, update_interval=0.0, preview_interval=0.0, updates_per_s=math.inf)
    handlers.previews = PreviewBudget(share=1.0)
    return handlers


def step_of(status: str) -> int:
    return int(status.split("Step **")[1].split(" / ")[0])


def test_the_status_counts_every_step_and_each_preview_shows_the_step_it_names(stepwise, engine):
    pipe = engine.get().generator
    states = list(pipe.iterate("a red circle", 5, 2.0, 3, 2, "euler"))
    with Gate(engine) as gate:
        run = stepwise.run("a red circle", 2.0, 5, 3, 2, "euler", "x1", session("steps"))
        gate.release(2)  # the prompt, then step 1
        outputs = []
        for _ in range(4):  # the sampler waits for the next permit, so the newest step is the one after the last
            outputs.append(next(run))
            gate.release(1)
        outputs += list(run)
    for k, (image, status, gallery) in enumerate(outputs[:4]):
        assert f"Step **{k + 1} / 5**" in status
        assert isinstance(image, Image.Image) and image.size == (2 * 32 + 1, 32)  # 2 tiles, model resolution
        assert image.tobytes() == grid(pipe.preview(states[k], "x1")).tobytes()
        assert gallery == []  # kept empty (not skipped: a skipped Gallery costs the server a rebuild) until the end
    _, status, gallery = outputs[-1]
    assert "2 image(s)" in status and [c for _, c in gallery] == ["seed 3", "seed 4"]
    direct = GenerationPipeline(engine.get().bundle)("a red circle", steps=5, guidance_scale=2.0, seed=3, num_images=2)
    assert [im.tobytes() for im, _ in gallery] == [im.tobytes() for im in direct.images]


def test_the_page_gets_the_newest_step_never_a_queue_of_old_ones(stepwise, engine):
    pipe = engine.get().generator
    states = list(pipe.iterate("a red circle", 20, 2.0, 3, 1, "euler"))
    with Gate(engine) as gate:
        run = stepwise.run("a red circle", 2.0, 20, 3, 1, "euler", "x1", session("newest"))
        gate.release(2)
        assert step_of(next(run)[1]) == 1
        gate.release(8)  # steps 2 to 9 run while the page is busy elsewhere
        gate.wait_entered(11)  # step 10 waits: step 9 is the newest
        image, status, _ = next(run)
        assert step_of(status) == 9 and image.tobytes() == grid(pipe.preview(states[8], "x1")).tobytes()
        gate.release(10_000)
        rest = list(run)
    assert "Done" in rest[-1][1] and [step_of(o[1]) for o in rest[:-1]] == sorted({step_of(o[1]) for o in rest[:-1]})


def test_with_the_default_display_rate_a_fast_run_sends_fewer_updates_than_steps(gen):
    outputs = run_gen(gen, steps=60, num_images=1)  # the tiny model runs 60 steps in well under 6 s on any CPU
    assert "Done" in outputs[-1][1] and len(outputs) < 61
    steps = [step_of(o[1]) for o in outputs[:-1]]
    assert steps == sorted(set(steps))  # increasing, each update the newest step then


def test_preview_modes_show_x1_zt_or_the_fast_approximation(stepwise, engine):
    runs = {}
    for mode in ("x1", "zt", "x1-fast"):
        with Gate(engine) as gate:
            run = stepwise.run("a red circle", 2.0, 3, 3, 1, "euler", mode, session("modes"))
            gate.release(2)
            first = next(run)
            gate.release(10_000)
            runs[mode] = [first, *run]
    pipe = GenerationPipeline(engine.get().bundle)
    first = next(pipe.iterate("a red circle", 3, 2.0, 3, 1, "euler"))
    assert runs["x1"][0][0].tobytes() == grid(pipe.preview(first, "x1")).tobytes()
    assert runs["zt"][0][0].tobytes() == grid(pipe.preview(first, "zt")).tobytes()
    fast = to_pil(LatentRGB.fit(engine.get().bundle.vae)(first.x1_hat))
    assert runs["x1-fast"][0][0].tobytes() == grid(fast).tobytes() and fast[0].size == (8, 8)  # latent resolution
    assert len({r[0][0].tobytes() for r in runs.values()}) == 3
    finals = {r[-1][2][0][0].tobytes() for r in runs.values()}
    assert len(finals) == 1  # the preview never changes the result


def test_the_preview_budget_is_shared_rests_after_each_decode_and_serves_the_longest_waiting_run_first():
    now = [100.0]
    budget = PreviewBudget(share=0.25, clock=lambda: now[0])
    inside, release = threading.Event(), threading.Event()

    def slow():  # a decode that takes 2 s of the fake clock
        inside.set()
        release.wait(10)
        now[0] += 2.0
        return "a"

    first = threading.Thread(target=budget.decode, args=("A", 0.0, slow))
    first.start()
    inside.wait(10)
    assert budget.decode("B", 50.0, lambda: "b") is None  # one decode at a time: B shows no preview now
    release.set()
    first.join()
    now[0] += 5.9  # 2 s of decoding at a share of 1/4: 6 s of rest
    assert budget.decode("C", 90.0, lambda: "c") is None
    now[0] += 0.2
    assert budget.decode("C", 90.0, lambda: "c") is None  # free again, but B has waited longer
    assert budget.decode("B", 50.0, lambda: "b") == "b"
    budget.forget("C")  # C ended: D is not kept waiting for it
    now[0] += 100.0
    assert budget.decode("D", 99.0, lambda: "d") == "d"


def test_latent_rgb_is_exact_for_a_linear_decoder():
    """LatentRGB (janusflow_core.vae, added for this app's fast preview) recovers a linear decoder."""
    f = torch.nn.functional
    g = torch.Generator().manual_seed(0)
    mix, colour = torch.randn(4, 3, generator=g), torch.randn(3, 4, generator=g)
    bias = 0.1 * torch.randn(3, generator=g)

    class LinearVAE:
        downsample = 4

        def encode(self, images):
            return torch.einsum("cj,bjhw->bchw", mix, f.avg_pool2d(images, 4)) * 0.3

        def decode(self, z):
            return f.interpolate(torch.einsum("oc,bchw->bohw", colour, z) + bias[:, None, None], scale_factor=4)

    vae = LinearVAE()
    fitted = LatentRGB.fit(vae)
    z = vae.encode(torch.rand(3, 3, 32, 32, generator=g) * 2 - 1)
    expected = f.avg_pool2d(vae.decode(z), 4).clamp(-1, 1)
    assert torch.allclose(fitted(z), expected, atol=1e-5)


def test_heun_is_a_different_sampler(gen):
    euler = run_gen(gen, steps=3, num_images=1, sampler="euler")[-1]
    heun = run_gen(gen, steps=3, num_images=1, sampler="heun")[-1]
    assert "Heun" in heun[1] and euler[2][0][0].tobytes() != heun[2][0][0].tobytes()


def test_stop_ends_the_run_at_the_sampler_s_next_step_end_and_reports_it(stepwise, engine):
    with Gate(engine) as gate:
        run = stepwise.run("a red circle", 2.0, 20, 3, 1, "euler", "x1", session("stop-gen"))
        gate.release(2)  # the prompt and step 1 (the sampler starts with the run's first output)
        assert step_of(next(run)[1]) == 1
        gate.release(1)
        gate.wait_entered(4)  # step 2 done, step 3 waits
        assert step_of(next(run)[1]) == 2
        stepwise.stop(session("stop-gen"))  # step 3 is under way: the run stops when it ends
        gate.release(10_000)
        rest = list(run)
    image, status, gallery = rest[-1]
    assert image == gr.skip() and "Stopped at step **3 / 20**" in status  # the last preview stays on screen
    assert gallery[0][1] == "seed 3 · stopped at step 3"


def test_a_refused_request_leaves_a_run_in_progress_untouched(stepwise, gen, engine):
    with Gate(engine) as gate:
        run = stepwise.run("a red circle", 2.0, 6, 3, 1, "euler", "x1", session("good"))
        gate.release(2)
        next(run)
        with pytest.raises(gr.Error, match="CFG must be a number"):
            run_gen(gen, cfg=11.0, sid="bad")
        gate.release(10_000)
        final = list(run)[-1]
    direct = GenerationPipeline(engine.get().bundle)("a red circle", steps=6, guidance_scale=2.0, seed=3)
    assert final[2][0][0].tobytes() == direct.images[0].tobytes()


def test_concurrent_sessions_share_forwards_and_each_gets_its_solo_images(gen, engine):
    loaded = engine.get()
    requests = [("a red circle", 2.0, 8, 1, 1, "euler"), ("three squares left of a big triangle", 3.0, 6, 2, 2, "heun"),
                ("x", 1.0, 7, 3, 1, "euler")]
    solo = [GenerationPipeline(loaded.bundle)(p, steps=s, guidance_scale=w, seed=seed, num_images=n, sampler=smp)
            for p, w, s, seed, n, smp in requests]
    forwards = loaded.generator.batcher.forwards
    out: dict = {}
    start = threading.Barrier(len(requests))

    def user(i):
        start.wait()
        out[i] = run_gen(gen, *requests[i], preview="x1-fast", sid=f"together-{i}")[-1]

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    evaluations = 8 + 2 * 6 + 7
    assert loaded.generator.batcher.forwards - forwards < evaluations  # some forwards carried several runs
    for i, expected in enumerate(solo):
        images = [im for im, _ in out[i][2]]
        assert len(images) == len(expected.images)
        for a, b in zip(images, expected.images):  # the stated bound: at most 1/255 per pixel
            assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1


def test_seeds_decide_the_images(gen):
    a = run_gen(gen, seed=10, num_images=1, steps=3)[-1][2][0][0].tobytes()
    b = run_gen(gen, seed=10, num_images=1, steps=3)[-1][2][0][0].tobytes()
    c = run_gen(gen, seed=11, num_images=1, steps=3)[-1][2][0][0].tobytes()
    assert a == b and a != c
    assert 0 <= GenerateHandlers.randomise() <= 2**31 - 1


@pytest.mark.parametrize("change, expected", [
    ({"prompt": "   "}, "prompt is empty"),
    ({"prompt": "a" * 4001}, "4001 characters long; the limit is 4000"),
    ({"prompt": 5}, "The prompt must be text, got 5"),
    ({"steps": 0}, "Steps must be a whole number from 1 to 100, got 0"),
    ({"steps": 101}, "Steps must be a whole number from 1 to 100, got 101"),
    ({"steps": float("nan")}, "Steps must be a whole number from 1 to 100, got nan"),
    ({"steps": "abc"}, "Steps must be a whole number from 1 to 100, got 'abc'"),
    ({"cfg": 10.5}, "CFG must be a number from 0 to 10, got 10.5"),
    ({"cfg": float("nan")}, "CFG must be a number from 0 to 10, got nan"),
    ({"cfg": "abc"}, "CFG must be a number from 0 to 10, got 'abc'"),
    ({"num_images": 9}, "Number of images must be a whole number from 1 to 8, got 9"),
    ({"seed": 2**31}, "Seed must be a whole number from 0 to"),
    ({"sampler": "rk4"}, "Sampler must be one of euler, heun; got 'rk4'"),
    ({"preview": "latent"}, "Preview must be one of x1, x1-fast, zt; got 'latent'"),
])
def test_generation_refuses_bad_input_clearly(gen, change, expected):
    with pytest.raises(gr.Error, match=expected):
        run_gen(gen, **change)


def test_prompt_longer_than_the_context_is_refused_with_its_token_count(gen, engine):
    loaded = engine.get()
    limit = loaded.generator.prompt_token_limit  # the tiny model: 512 positions less 1 + 16 for t and the image
    assert limit == 512 - 1 - loaded.bundle.config.num_gen_tokens
    k = limit
    while loaded.generator.count_prompt_tokens("Ω" * k) > limit:  # the longest prompt of Ω that fits
        k -= 1
    fits, too_long = "Ω" * k, "Ω" * (k + 1)
    assert "Done" in run_gen(gen, prompt=fits, steps=1, num_images=1)[-1][1]
    n = loaded.generator.count_prompt_tokens(too_long)
    assert n > limit
    with pytest.raises(gr.Error, match=f"The prompt is {n} tokens; the limit is {limit}. Shorten it."):
        run_gen(gen, prompt=too_long)
    with pytest.raises(ValueError, match=f"the prompt is {n} tokens; the limit is {limit}"):  # the core agrees
        list(loaded.generator.iterate(too_long, 1))


def test_the_prompt_box_shows_its_token_count_and_limit(tiny_model_dir, engine):
    waiting = GenerateHandlers(Engine(tiny_model_dir, device="cpu", dtype="fp32"))
    assert waiting.token_line("a red circle") == "The token limit shows here once the model is loaded."
    assert waiting.engine.state == "idle"  # typing does not load the model
    gen = GenerateHandlers(engine)
    pipe = engine.get().generator
    limit, count = pipe.prompt_token_limit, pipe.count_prompt_tokens
    assert gen.token_line("a red circle") == f"{count('a red circle')} / {limit} tokens"
    long = "Ω" * limit
    assert gen.token_line(long) == f"**{count(long)} / {limit} tokens**: too long, shorten the prompt"
    assert gen.token_line(None) == f"{count('')} / {limit} tokens"


def test_generation_busy_session_is_refused(gen):
    run = gen.run("a red circle", 2.0, 5, 3, 1, "euler", "x1", session("gbusy"))
    next(run)
    with pytest.raises(gr.Error, match="generation is already running"):
        run_gen(gen, sid="gbusy")
    run.close()
    assert "Done" in run_gen(gen, sid="gbusy", steps=2, num_images=1)[-1][1]  # the session is free again


# -- display -------------------------------------------------------------------------------------------------


def test_a_batch_is_tiled_into_one_sheet_at_model_resolution():
    tiles = [Image.new("RGB", (32, 32), c) for c in ("red", "green", "blue")]
    sheet = grid(tiles)
    assert sheet.size == (65, 65)  # 2 x 2 with a 1 px gap
    assert sheet.getpixel((0, 0)) == (255, 0, 0) and sheet.getpixel((33, 0)) == (0, 128, 0)
    assert sheet.getpixel((0, 33)) == (0, 0, 255) and sheet.getpixel((64, 64)) == (255, 255, 255)  # empty cell
    assert grid(tiles[:1]).size == (32, 32) and grid(tiles * 3).size == (98, 98)  # 9 images: 3 x 3


# -- property: whatever arrives, a result or one clear message -------------------------------------------

FIELDS = ("prompt", "CFG", "Steps", "Seed", "Number of images", "Sampler", "Preview", "message", "Temperature",
          "Top-p", "Max new tokens", "Type a question", "images in one message", "file", "not an image")
anything = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                     st.text(max_size=20), st.lists(st.integers(), max_size=2),
                     st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def first_output_or_refusal(run) -> str | None:
    """The run's first output (then cancel it, as a closed page does), or the refusal's message."""
    try:
        next(run)
    except gr.Error as exc:
        return exc.message
    finally:
        run.close()
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.one_of(st.sampled_from(["a red circle", "", "  "]), anything),
       cfg=st.one_of(st.floats(-1, 11), anything), steps=st.one_of(st.integers(0, 101), anything),
       seed=st.one_of(st.integers(-1, 2**31), anything), num_images=st.one_of(st.integers(0, 9), anything),
       sampler=st.one_of(st.sampled_from(["euler", "heun"]), anything),
       preview=st.one_of(st.sampled_from(["x1", "zt", "x1-fast"]), anything))
def test_generation_gives_a_result_or_one_clear_message(gen, prompt, cfg, steps, seed, num_images, sampler,
                                                        preview):
    message = first_output_or_refusal(gen.run(prompt, cfg, steps, seed, num_images, sampler, preview,
                                              session("prop-gen")))
    assert message is None or (any(f in message for f in FIELDS) and "Traceback" not in message)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.one_of(st.text(max_size=30), anything,
                         st.fixed_dictionaries({"text": st.one_of(st.text(max_size=30), anything),
                                                "files": st.one_of(st.lists(st.sampled_from(
                                                    [str(EXAMPLE), "/nowhere.png", 5, {"path": None}]), max_size=5),
                                                    anything)})),
       temperature=st.one_of(st.floats(-1, 3), anything), top_p=st.one_of(st.floats(-1, 2), anything),
       max_new_tokens=st.one_of(st.integers(0, 5000), anything), seed=st.one_of(st.integers(-1, 2**31), anything))
def test_chat_gives_a_result_or_one_clear_message(chat, message, temperature, top_p, max_new_tokens, seed):
    out = first_output_or_refusal(chat.submit(message, temperature, top_p, max_new_tokens, seed, None,
                                              session("prop-chat")))
    assert out is None or (any(f in out for f in FIELDS) and "Traceback" not in out)


# -- components and unexpected failures ---------------------------------------------------------------------


def test_checked_components_name_themselves_in_every_refusal():
    from app.components import checked
    from janusflow_core.limits import check_number

    level = checked(gr.Slider(0, 5, label="Level"))  # gradio's own bound check, prefixed with the label
    assert refusal_of(level.preprocess, 9).startswith("Level: Value 9 is greater than maximum value 5")
    count = checked(gr.Number(label="Count", precision=0))  # gradio's own conversion failing on a wrong type
    assert refusal_of(count.preprocess, "abc").startswith("Count: this value cannot be used")
    steps = checked(gr.Slider(1, 100, label="Steps"), lambda v: check_number("Steps", v, (1, 100), integer=True))
    assert refusal_of(steps.preprocess, "abc") == "Steps must be a whole number from 1 to 100, got 'abc'"
    assert steps.preprocess(7) == 7 and level.preprocess(2.5) == 2.5


def test_an_unexpected_error_mid_stream_is_one_line_for_the_user_and_a_traceback_for_the_operator(
        gen, chat, engine, monkeypatch, caplog):
    loaded = engine.get()
    real = loaded.generator.iterate

    def breaks_after_one_step(*args, **kwargs):
        states = real(*args, **kwargs)
        yield next(states)
        raise KeyError("latent cache")

    monkeypatch.setattr(loaded.generator, "iterate", breaks_after_one_step)
    run = gen.run("a red circle", 2.0, 5, 3, 1, "euler", "x1", session("bug"))
    assert "Step **1 / 5**" in next(run)[1]  # the first preview streamed
    with caplog.at_level("ERROR"):
        assert refusal_of(next, run) == "Generation failed (KeyError): 'latent cache'"
    assert caplog.records[-1].exc_info[0] is KeyError and caplog.records[-1].name == "app.generate"
    monkeypatch.setattr(loaded.generator, "iterate", real)
    assert "Done" in run_gen(gen, sid="bug", steps=1, num_images=1)[-1][1]  # the session is free again

    def breaks_while_answering(*args, **kwargs):
        yield "a"
        raise LookupError("vocabulary")

    monkeypatch.setattr(loaded.chat, "stream", breaks_while_answering)
    with caplog.at_level("ERROR"):
        assert refusal_of(ask, chat, "hello", sid="bug") == "The answer failed (LookupError): vocabulary"
    assert caplog.records[-1].exc_info[0] is LookupError and caplog.records[-1].name == "app.chat"


def refusal_of(fn, *args, **kwargs) -> str:
    """The message of the gr.Error that ``fn(*args, **kwargs)`` raises (fails if it raises none)."""
    with pytest.raises(gr.Error) as refused:
        fn(*args, **kwargs)
    return refused.value.message


@pytest.mark.parametrize("kind", ["chat", "generate"])
def test_page_runs_hold_one_of_the_engines_model_runs(tiny_model_dir, kind):
    engine = Engine(tiny_model_dir, device="cpu", dtype="fp32", concurrency=1, gen_concurrency=1)
    engine.get()
    handlers = ChatHandlers(engine) if kind == "chat" else GenerateHandlers(engine)
    slot = "chat" if kind == "chat" else "generation"
    outputs: list = []
    call = ((lambda: handlers.submit({"text": "hi", "files": []}, 0.0, 0.9, 2, 0, [], session("busy")))
            if kind == "chat" else (lambda: handlers.run("a red circle", 2.0, 2, 1, 1, "euler", "x1-fast",
                                                          session("busy"))))
    with engine.model_slot(kind=slot):  # the only run of its kind is taken (by an API request, say)
        worker = threading.Thread(target=lambda: outputs.extend(call()))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and outputs == []  # waiting for it
        handlers.stop(session("busy"))  # Stop while waiting: the run leaves the line without a model run
        worker.join(10)
    assert not worker.is_alive() and outputs == []
    outputs.clear()
    outputs.extend(call())  # with the run free again, the page's runs go ahead
    assert outputs


def test_chats_and_generations_hold_runs_of_their_own_kind(tiny_model_dir):
    engine = Engine(tiny_model_dir, device="cpu", dtype="fp32", concurrency=1, gen_concurrency=1)
    engine.get()
    with engine.model_slot(kind="chat"):  # every chat run taken: a generation still goes ahead (and back)
        assert list(GenerateHandlers(engine).run("a red circle", 2.0, 2, 1, 1, "euler", "x1-fast", session("g")))
        with engine.model_slot(kind="generation"):
            pass


# -- the Generate tab's options ------------------------------------------------------------------------------

OPTIONS = {"init_image": str(EXAMPLE), "strength": 0.5, "negative_prompt": "a blue square", "shift": 2.0,
           "guidance_interval_lo": 0.2, "guidance_interval_hi": 0.9, "guidance": "apg"}


def test_the_generate_tab_s_options_reach_the_pipeline(gen, engine):
    outputs = list(gen.run("a red circle", 3.0, 6, 4, 1, "euler", "x1", session("options"), **OPTIONS))
    status, gallery = outputs[-1][1], outputs[-1][2]
    direct = GenerationPipeline(engine.get().bundle)(
        "a red circle", steps=6, guidance_scale=3.0, seed=4, init_image=Image.open(EXAMPLE), strength=0.5,
        negative_prompt="a blue square", shift=2.0, guidance_interval=(0.2, 0.9), guidance="apg")
    assert gallery[0][0].tobytes() == direct.images[0].tobytes()
    assert f"{direct.steps_planned} steps" in status and "from the init image at strength 0.5" in status
    assert direct.steps_planned < 6  # image to image ran only the tail of the grid
    plain = run_gen(gen, cfg=3.0, steps=6, seed=4, num_images=1)[-1][2][0][0]
    assert plain.tobytes() != direct.images[0].tobytes()  # the options changed the image
    for name, value in [("negative_prompt", "a blue square"), ("shift", 2.0), ("guidance", "cfg-zero-star"),
                        ("guidance_interval_lo", 0.5)]:  # each one alone reaches the pipeline
        one = list(gen.run("a red circle", 3.0, 6, 4, 1, "euler", "x1", session("options"), **{name: value}))
        alone = GenerationPipeline(engine.get().bundle)(
            "a red circle", steps=6, guidance_scale=3.0, seed=4,
            **({"guidance_interval": (0.5, 1.0)} if name == "guidance_interval_lo" else {name: value}))
        assert one[-1][2][0][0].tobytes() == alone.images[0].tobytes() != plain.tobytes(), name


@pytest.mark.parametrize("change, expected", [
    ({"strength": 0}, "Strength must be a number above 0 and at most 1, got 0"),
    ({"strength": 1.5}, "Strength must be a number above 0 and at most 1, got 1.5"),
    ({"guidance_interval_lo": 0.8, "guidance_interval_hi": 0.2},
     "Guidance interval must be two numbers LO HI with 0 <= LO <= HI <= 1; got LO 0.8 above HI 0.2"),
    ({"guidance_interval_hi": 1.5}, "Guidance interval HI must be a number from 0 to 1, got 1.5"),
    ({"negative_prompt": "x" * 4001}, "The negative prompt is 4001 characters long; the limit is 4000"),
    ({"negative_prompt": "Ω" * 400}, r"The negative prompt is \d+ tokens; the limit is \d+. Shorten it."),
    ({"shift": 0}, "Shift must be a number from 0.1 to 10, got 0"),
    ({"guidance": "pag"}, "Guidance must be one of cfg, cfg-zero-star, apg; got 'pag'"),
    ({"init_image": "notes"}, "notes.png is not a readable image"),
    ({"init_image": "cut"}, "cut.png could not be decoded as an image"),
])
def test_generation_refuses_bad_options_clearly_and_then_runs(gen, tmp_path, change, expected):
    files = {"notes": str(text_as_png(tmp_path / "notes.png")), "cut": str(truncated_png(tmp_path / "cut.png"))}
    change = {k: files.get(v, v) if k == "init_image" else v for k, v in change.items()}
    with pytest.raises(gr.Error, match=expected) as refused:
        list(gen.run("a red circle", 2.0, 3, 1, 1, "euler", "x1", session("bad-options"), **change))
    assert str(tmp_path) not in refused.value.message  # an upload is named by its file name only
    assert "Done" in list(gen.run("a red circle", 2.0, 2, 1, 1, "euler", "x1", session("bad-options"),
                                  **OPTIONS))[-1][1]


# -- drawing in the chat ---------------------------------------------------------------------------------------


def draw_via_prefix(chat, text, conversation=None, sid="draw", **settings):
    return list(chat.submit(text, 0.0, 0.9, 5, 0, conversation, session(sid), **settings))


def image_of(message) -> Image.Image:
    return Image.open(message["content"][0]["path"]).convert("RGB")


def test_draw_prefix_and_button_add_a_user_message_and_an_assistant_image(chat, engine):
    direct = GenerationPipeline(engine.get().bundle)("a red circle", steps=3, seed=5).images[0]
    by_prefix = draw_via_prefix(chat, "/draw a red circle", draw_steps=3, draw_seed=5)
    by_button = list(chat.draw({"text": "a red circle", "files": []}, steps=3, seed=5, request=session("button")))
    for outputs in (by_prefix, by_button):
        chatbot, stats, conversation = outputs[-1]
        assert [t["role"] for t in conversation] == ["user", "assistant"]
        assert conversation[0]["content"] == "/draw a red circle" and conversation[0]["images"] == []
        assert conversation[1]["images"][0].tobytes() == direct.tobytes()  # the Generate tab's pipeline, one image
        assert image_of(chatbot[1]).tobytes() == direct.tobytes() and "seed 5" in chatbot[1]["content"][-1]
        assert "Drawn in" in stats and "3 steps" in stats
        assert outputs[0][0][-1]["content"] == ["Drawing …"] and outputs[0][2] == []  # shown at once, kept at the end
    assert draw_prefix_is_only_a_prefix(chat)


def draw_prefix_is_only_a_prefix(chat) -> bool:
    from app.chat import draw_prompt

    assert [draw_prompt(t) for t in ("/draw a b", " /DRAW  a b ", "/draw", "/draw\nx", "/drawing", "a /draw")] == [
        "a b", "a b", "", "x", None, None]
    conversation = draw_via_prefix(chat, "/drawings are nice", sid="not-a-draw")[-1][2]
    return conversation[1].get("drawn") is None  # a question, answered in text


def test_the_settings_of_the_generate_tab_shape_the_drawing(chat, engine):
    settings = {"cfg": 3.0, "steps": 6, "seed": 4, "sampler": "heun", **OPTIONS}
    drawn = list(chat.draw("a red circle", **settings, request=session("settings")))[-1][2][1]["images"][0]
    direct = GenerationPipeline(engine.get().bundle)(
        "a red circle", steps=6, guidance_scale=3.0, seed=4, sampler="heun", init_image=Image.open(EXAMPLE),
        strength=0.5, negative_prompt="a blue square", shift=2.0, guidance_interval=(0.2, 0.9), guidance="apg")
    assert drawn.tobytes() == direct.images[0].tobytes()


def test_previews_stream_into_the_conversation(stepwise, engine):
    chat = ChatHandlers(engine, drawing=stepwise)
    pipe = engine.get().generator
    states = list(pipe.iterate("a red circle", 5, 2.0, 3, 1, "euler"))
    with Gate(engine) as gate:
        run = chat.draw("a red circle", 2.0, 5, 3, request=session("draw-previews"))
        assert next(run)[0][-1]["content"] == ["Drawing …"]
        gate.release(2)  # the prompt, then step 1
        outputs = []
        for _ in range(4):
            outputs.append(next(run))
            gate.release(1)
        outputs += list(run)
    for k, (chatbot, stats, conversation) in enumerate(outputs[:4]):
        assert chatbot[-1]["role"] == "assistant" and chatbot[-1]["content"][-1].startswith(f"Step {k + 1} / 5")
        assert image_of(chatbot[-1]).tobytes() == grid(pipe.preview(states[k], "x1")).tobytes()  # that step's
        assert stats == "" and conversation == []  # the conversation changes once, at the end
    assert len(outputs[-1][2]) == 2 and outputs[-1][2][1]["drawn"]


def test_the_next_question_gets_the_drawn_image(chat, engine, monkeypatch):
    drawn = draw_via_prefix(chat, "/draw a red circle", draw_steps=3, draw_seed=5)[-1][2]
    image = drawn[1]["images"][0]
    loaded, seen = engine.get(), []
    real = loaded.chat.stream

    def spy(messages, *args, **kwargs):
        seen.append(messages)
        return real(messages, *args, **kwargs)

    monkeypatch.setattr(loaded.chat, "stream", spy)
    _, stats, conversation = ask(chat, "How many circles are there?", drawn, max_new_tokens=3)[-1]
    assert [m["role"] for m in seen[-1]] == ["user"]  # the drawing exchange is not text the model reads
    assert seen[-1][0]["content"] == "How many circles are there?" and seen[-1][0]["images"] == [image]
    assert len(conversation) == 4 and conversation[1]["drawn"]  # the page keeps the drawing in place
    ask(chat, "And its colour?", conversation, max_new_tokens=3)
    assert [len(m["images"]) for m in seen[-1]] == [1, 0, 0]  # still there, with the question it came with
    # an image of one's own goes after the drawn one
    ask(chat, {"text": "Which is bigger?", "files": [str(EXAMPLE)]}, drawn, max_new_tokens=3)
    assert seen[-1][0]["images"][0] is image and seen[-1][0]["images"][1].size == Image.open(EXAMPLE).size


def test_stop_mid_draw_keeps_the_last_step_s_image_and_frees_the_session(stepwise, engine):
    chat = ChatHandlers(engine, drawing=stepwise)
    with Gate(engine) as gate:
        run = chat.draw("a red circle", 2.0, 20, 3, request=session("draw-stop"))
        next(run)
        gate.release(2)
        shown = next(run)[0][-1]
        assert shown["content"][-1].startswith("Step 1 / 20")
        chat.stop(session("someone-else"))  # another session's Stop changes nothing here
        gate.release(1)
        gate.wait_entered(4)
        chat.stop(session("draw-stop"))  # step 3 is under way: the drawing stops when it ends
        gate.release(10_000)
        rest = list(run)
    chatbot, stats, conversation = rest[-1]
    assert "Stopped at step 3 / 20" in chatbot[-1]["content"][-1] and "stopped at step 3 / 20" in stats
    assert conversation[1]["drawn"] and conversation[1]["images"][0].size == (32, 32)  # kept for the next question
    assert ask(chat, "hello", conversation, sid="draw-stop", max_new_tokens=3)  # the session is free again


def test_clear_mid_draw_sends_nothing_more(stepwise, engine):
    chat = ChatHandlers(engine, drawing=stepwise)
    with Gate(engine) as gate:
        run = chat.draw("a red circle", 2.0, 20, 3, request=session("draw-clear"))
        next(run)
        gate.release(2)
        next(run)
        cleared = threading.Thread(target=chat.clear, args=(session("draw-clear"),))
        cleared.start()
        gate.release(10_000)
        rest = list(run)
        cleared.join(10)
    assert rest == []


@pytest.mark.parametrize("text, settings, expected", [
    ("/draw", {}, "Type what to draw"),
    ("/draw    ", {}, "Type what to draw"),
    ("/draw " + "x" * 4000, {}, "characters long; the limit is 4000"),
    ("/draw " + "Ω" * 400, {}, r"The drawing prompt is \d+ tokens; the limit is \d+"),
    ({"text": "/draw a circle", "files": [str(EXAMPLE)]}, {}, "A drawing is made from the text alone"),
    ("/draw a circle", {"draw_strength": 0}, "Strength must be a number above 0 and at most 1, got 0"),
    ("/draw a circle", {"draw_guidance_interval_lo": 0.9, "draw_guidance_interval_hi": 0.1}, "got LO 0.9 above HI"),
    ("/draw a circle", {"draw_steps": 0}, "Steps must be a whole number from 1 to 100, got 0"),
])
def test_a_bad_drawing_is_refused_and_the_chat_still_works(chat, text, settings, expected):
    with pytest.raises(gr.Error, match=expected):
        draw_via_prefix(chat, text, sid="bad-draw", **settings)
    with pytest.raises(gr.Error, match="Type what to draw"):  # the button says the same for an empty box
        list(chat.draw({"text": "", "files": []}, request=session("bad-draw")))
    assert "tokens/s" in ask(chat, "hello", sid="bad-draw", max_new_tokens=3)[-1][1]


def test_a_drawing_that_fails_midway_is_one_line_and_the_chat_goes_on(chat, engine, monkeypatch, caplog):
    loaded = engine.get()
    real = loaded.generator.iterate

    def breaks_after_one_step(*args, **kwargs):
        states = real(*args, **kwargs)
        yield next(states)
        raise KeyError("latent cache")

    monkeypatch.setattr(loaded.generator, "iterate", breaks_after_one_step)
    with caplog.at_level("ERROR"):
        assert refusal_of(draw_via_prefix, chat, "/draw a circle", sid="draw-bug") == (
            "The drawing failed (KeyError): 'latent cache'")
    assert caplog.records[-1].exc_info[0] is KeyError
    monkeypatch.setattr(loaded.generator, "iterate", real)
    assert draw_via_prefix(chat, "/draw a circle", sid="draw-bug", draw_steps=2)[-1][2][1]["drawn"]


OPTION_FIELDS = ("Strength", "negative prompt", "Shift", "Guidance", "Init image", "not a readable image")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(init_image=st.one_of(st.sampled_from([None, str(EXAMPLE), "/nowhere/photo.png", ""]), anything),
       strength=st.one_of(st.floats(-0.5, 1.5), anything), negative_prompt=st.one_of(st.text(max_size=20), anything),
       shift=st.one_of(st.floats(0, 11), anything), lo=st.one_of(st.floats(-0.5, 1.5), anything),
       hi=st.one_of(st.floats(-0.5, 1.5), anything),
       guidance=st.one_of(st.sampled_from(["cfg", "cfg-zero-star", "apg"]), anything),
       draw=st.booleans())
def test_the_options_give_a_result_or_one_clear_message(gen, chat, init_image, strength, negative_prompt, shift, lo,
                                                         hi, guidance, draw):
    options = {"init_image": init_image, "strength": strength, "negative_prompt": negative_prompt, "shift": shift,
               "guidance_interval_lo": lo, "guidance_interval_hi": hi, "guidance": guidance}
    run = (chat.draw("/draw a circle", 2.0, 2, 1, "euler", "x1-fast", **options, request=session("prop-draw"))
           if draw else gen.run("a circle", 2.0, 2, 1, 1, "euler", "x1-fast", session("prop-options"), **options))
    message = first_output_or_refusal(run)
    assert message is None or (any(f in message for f in OPTION_FIELDS) and "Traceback" not in message), message


def test_the_model_reads_drawn_images_with_the_next_user_message_only():
    from app.chat import model_messages

    a, b, c = (Image.new("RGB", (4, 4), colour) for colour in ("red", "green", "blue"))
    turns = [{"role": "user", "content": "/draw a", "draw": "a"}, {"role": "assistant", "content": "x",
                                                                    "images": [a], "drawn": True},
             {"role": "user", "content": "/draw b", "draw": "b"}, {"role": "assistant", "content": "y",
                                                                    "images": [b], "drawn": True},
             {"role": "user", "content": "compare", "images": [c]}, {"role": "assistant", "content": "ok"},
             {"role": "user", "content": "more"}]
    messages = model_messages(turns)
    assert [(m["role"], m["content"], m["images"]) for m in messages] == [
        ("user", "compare", [a, b, c]), ("assistant", "ok", []), ("user", "more", [])]
