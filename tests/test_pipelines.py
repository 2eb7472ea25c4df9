"""Generation and chat pipelines on a tiny random model."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from janusflow_core import ChatPipeline, GenerationPipeline
from janusflow_core.limits import IMAGES, SEED, STEPS, InputError


@pytest.fixture(scope="module")
def gen(tiny_bundle):
    return GenerationPipeline(tiny_bundle)


def _final(gen, **kw):
    return list(gen.iterate("a red circle", **kw))[-1].z_next


def test_cached_prompt_prefix_gives_the_uncached_trajectory(gen):
    cached = list(gen.iterate("a red circle left of a blue square", steps=5, cfg=3.0, seed=4, num_images=2))
    full = list(gen.iterate("a red circle left of a blue square", steps=5, cfg=3.0, seed=4, num_images=2,
                            use_cache=False))
    for a, b in zip(cached, full):
        torch.testing.assert_close(a.z_next, b.z_next, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.velocity, b.velocity, atol=1e-5, rtol=0)


def test_prompt_is_encoded_once_per_generation(gen, monkeypatch):
    calls = []
    real = gen.model.prepare_prompt
    monkeypatch.setattr(gen.model, "prepare_prompt", lambda *a, **k: calls.append(1) or real(*a, **k))
    _final(gen, steps=6, seed=0)
    assert len(calls) == 1


def test_image_k_of_a_seed_does_not_depend_on_num_images(gen):
    four = _final(gen, steps=3, seed=10, num_images=4)
    one = _final(gen, steps=3, seed=12, num_images=1)
    torch.testing.assert_close(four[2], one[0], atol=1e-5, rtol=0)
    assert not torch.allclose(four[0], four[1])


def test_cfg_one_skips_unconditional_rows_with_the_same_result(gen):
    state = gen.encode_prompt(*gen.prompt_rows("a square", 1, guided=True))
    z = torch.randn(1, 4, 8, 8)
    both = gen.guided_velocity(state, 1.0)(z, 0.3)  # rows present, w = 1
    cond_only = gen.guided_velocity(gen.encode_prompt(*gen.prompt_rows("a square", 1, guided=False)), 1.0)(z, 0.3)
    torch.testing.assert_close(both, cond_only, atol=1e-5, rtol=0)
    guided = gen.guided_velocity(state, 3.0)(z, 0.3)
    assert not torch.allclose(guided, cond_only, atol=1e-4)


def test_callback_per_step_interrupt_and_images(gen):
    seen = []
    stop = threading.Event()

    def cb(s):
        seen.append((s.index, s.t))
        if s.index == 1:
            stop.set()

    result = gen("a triangle", steps=6, seed=1, num_images=2, callback=cb, interrupt=stop)
    assert result.interrupted and result.steps_done == 2 and len(seen) == 2
    assert len(result.images) == 2 and result.images[0].size == (32, 32)
    full = gen("a triangle", steps=3, seed=1, callback=lambda s: seen.append(s.index))
    assert not full.interrupted and full.steps_done == 3
    assert full.steps == 3 and full.cfg == 2.0


def test_previews_decode_x1_and_zt(gen):
    state = next(iter(gen.iterate("a circle", steps=2, seed=0)))
    x1, zt = gen.preview(state, "x1")[0], gen.preview(state, "zt")[0]
    assert x1.size == zt.size == (32, 32) and x1.tobytes() != zt.tobytes()
    with pytest.raises(ValueError, match="'x1' or 'zt'"):
        gen.preview(state, "sharp")


def test_defaults_come_from_the_model_sampling_settings(gen):
    states = list(gen.iterate("a circle", seed=0))
    assert len(states) == gen.bundle.sampling["steps"] == 4


@pytest.mark.parametrize("kwargs,message", [
    ({"steps": 0}, f"steps must be a whole number from 1 to {STEPS[1]}, got 0"),
    ({"steps": STEPS[1] + 1}, f"steps must be a whole number from 1 to {STEPS[1]}"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"cfg": -0.5}, "cfg must be a number from 0 to 10, got -0.5"),
    ({"cfg": float("nan")}, "cfg must be a number from 0 to 10, got nan"),
    ({"num_images": 0}, f"num_images must be a whole number from 1 to {IMAGES[1]}"),
    ({"num_images": IMAGES[1] + 1}, f"num_images must be a whole number from 1 to {IMAGES[1]}"),
    ({"sampler": "dpm"}, "sampler must be one of euler, heun; got 'dpm'"),
    ({"seed": -1}, f"seed must be a whole number from 0 to {SEED[1]}, got -1"),
    ({"seed": SEED[1] + 1}, f"seed must be a whole number from 0 to {SEED[1]}"),
])
def test_bad_generation_arguments_are_clear_errors(gen, kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)):
        gen("a circle", **kwargs)


def test_empty_and_overlong_prompts(gen):
    with pytest.raises(ValueError, match="prompt is empty"):
        gen("   ")
    limit = gen.config.llm.max_position_embeddings - 1 - gen.config.num_gen_tokens
    with pytest.raises(ValueError, match=f"the limit is {limit}"):
        gen("circle " * 500)
    with pytest.raises(InputError, match="the prompt is 4200 characters long; the limit is 4000"):
        gen("circle " * 600)


def test_nan_in_latent_stops_with_an_error(gen, monkeypatch):
    monkeypatch.setattr(gen.model, "velocity", lambda z, t, p: torch.full_like(z, float("inf")))
    with pytest.raises(FloatingPointError, match="non-finite"):
        gen("a circle", steps=3)


# -- chat --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chat(tiny_bundle):
    return ChatPipeline(tiny_bundle)


def test_chat_streams_pieces_and_matches_batch_greedy(chat):
    img = Image.new("RGB", (40, 20), (220, 30, 30))
    stats = {}
    pieces = list(chat.stream([{"role": "user", "content": "what color is the circle?"}], [img],
                              max_new_tokens=12, stats=stats))
    assert stats["new_tokens"] == 12 and stats["tokens_per_s"] > 0
    assert len(pieces) >= 1
    batch = chat.answer_batch(["what color is the circle?"], [[img]], max_new_tokens=12)
    assert batch[0] == "".join(pieces).strip()


def test_chat_stop_event_ends_within_one_token(chat):
    stop = threading.Event()
    stats = {}
    stop.set()  # a Stop that arrives before the first token: generation ends after at most one
    list(chat.stream([{"role": "user", "content": "describe"}], None, max_new_tokens=200, stop_event=stop,
                     stats=stats))
    assert stats["new_tokens"] <= 1
    stats2 = {}
    list(chat.stream([{"role": "user", "content": "describe"}], None, max_new_tokens=20, stats=stats2))
    assert stats2["new_tokens"] == 20


def test_multi_turn_and_several_images(chat):
    red, blue = Image.new("RGB", (30, 30), "red"), Image.new("RGB", (30, 30), "blue")
    msgs = [{"role": "user", "content": "first", "images": [red]}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "and this?", "images": [blue]}]
    batch = chat.prepare([msgs])
    assert batch.images_emb_mask.shape[:2] == (1, 2) and int(batch.images_seq_mask.sum()) == 2 * 17
    a = chat.chat(msgs, max_new_tokens=4)
    b = chat.chat(msgs[:1], max_new_tokens=4)
    assert isinstance(a, str) and isinstance(b, str)


def _ids(chat, msgs, **kw):
    from janusflow_core.pipelines import generate_tokens

    return generate_tokens(chat.bundle, chat.prepare([msgs]), 12, **kw)[0].tolist()


def test_sampling_is_seeded_per_call_even_when_calls_overlap(chat):
    msgs = [{"role": "user", "content": "describe the image"}]
    solo = {s: _ids(chat, msgs, temperature=1.5, top_p=0.95, seed=s) for s in (3, 4)}
    assert solo[3] != solo[4]
    assert solo[3] == _ids(chat, msgs, temperature=1.5, top_p=0.95, seed=3)
    torch.manual_seed(0)  # the global RNG plays no part
    out = {}
    threads = [threading.Thread(target=lambda s=s: out.__setitem__(s, _ids(chat, msgs, temperature=1.5, top_p=0.95,
                                                                            seed=s))) for s in (3, 4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert out == solo


def test_top_p_keeps_the_smallest_set_reaching_p():
    from janusflow_core.pipelines.understand import SeededSampler

    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    picks = {int(SeededSampler(1.0, 0.7, seed=s)(None, scores).argmax()) for s in range(200)}
    assert picks == {0, 1}
    assert {int(SeededSampler(1.0, 0.01, seed=s)(None, scores).argmax()) for s in range(20)} == {0}


def test_image_token_count_mismatch_raises(tiny_bundle):
    m = tiny_bundle.model
    ids = torch.zeros(1, 5, dtype=torch.long)
    seq = torch.tensor([[False, True, True, False, False]])
    emb = torch.ones(1, 1, m.config.num_und_tokens + 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="image token count mismatch"):
        m.prepare_inputs_embeds(ids, torch.zeros(1, 1, 3, 32, 32), seq, emb)


@pytest.mark.parametrize("kwargs,message", [
    ({"max_new_tokens": 0}, "max_new_tokens must be a whole number from 1 to 4096, got 0"),
    ({"temperature": -1}, "temperature must be a number from 0 to 2, got -1"),
    ({"top_p": 0}, "top_p must be a number from 0.01 to 1, got 0"),
    ({"seed": "x"}, "seed must be a whole number from 0 to 2147483647, got 'x'"),
])
def test_bad_chat_arguments(chat, kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)):
        list(chat.stream([{"role": "user", "content": "hi"}], None, **kwargs))


def test_chat_prompt_longer_than_context_says_the_limit(chat):
    with pytest.raises(ValueError, match="the limit is"):
        chat.answer("circle " * 2000)


def test_image_k_barely_depends_on_the_number_of_images(gen):
    """Image k's noise is bit-identical whatever num_images; the batched LLM and VAE passes round differently
    by batch size, so the final latents agree to ~1e-5 and the pixels to within 1/255 (see initial_noise)."""
    assert torch.equal(gen.initial_noise(7, 3)[1], gen.initial_noise(8, 1)[0])
    one = gen("a red circle", steps=4, cfg=2.0, seed=7, num_images=1)
    three = gen("a red circle", steps=4, cfg=2.0, seed=7, num_images=3)
    shifted = gen("a red circle", steps=4, cfg=2.0, seed=6, num_images=2)  # image 1 of seed 6 uses seed 7
    for other in (three.latents[0], shifted.latents[1]):
        torch.testing.assert_close(other, one.latents[0], atol=1e-4, rtol=0)
    for other in (three.images[0], shifted.images[1]):
        diff = np.abs(np.asarray(other, dtype=np.int16) - np.asarray(one.images[0], dtype=np.int16))
        assert diff.max() <= 1
    assert not torch.allclose(three.latents[1], one.latents[0], atol=1e-2)  # a different seed is another image
