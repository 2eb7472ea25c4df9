"""Generation and chat pipelines on a tiny random model."""

from __future__ import annotations

import dataclasses
import io
import re
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from janusflow_core import ChatPipeline, GenerationPipeline
from janusflow_core.limits import IMAGES, SEED, STEPS, InputError
from janusflow_core.pipelines import SamplingDefaults, check_generation_inputs
from janusflow_core.sampling import StepControl, stop_when


@pytest.fixture(scope="module")
def gen(tiny_bundle):
    return GenerationPipeline(tiny_bundle)


def _final(gen, **kw):
    return list(gen.iterate("a red circle", **kw))[-1].z_next


def test_cached_prompt_prefix_gives_the_uncached_trajectory(gen):
    cached = list(gen.iterate("a red circle left of a blue square", steps=5, guidance_scale=3.0, seed=4, num_images=2))
    full = list(gen.iterate("a red circle left of a blue square", steps=5, guidance_scale=3.0, seed=4, num_images=2,
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


def test_callback_runs_once_per_step_and_can_stop_the_run(gen):
    seen = []
    stop = threading.Event()

    def cb(s):
        seen.append((s.index, s.t))
        if s.index == 1:
            stop.set()
        return stop_when(stop)(s)

    result = gen("a triangle", steps=6, seed=1, num_images=2, callback_on_step_end=cb)
    assert result.interrupted and result.steps_done == 2 and seen == [(0, 0.0), (1, 1 / 6)]
    assert len(result.images) == 2 and result.images[0].size == (32, 32)
    states = list(gen.iterate("a triangle", steps=6, seed=1, num_images=2))
    assert result.latents.equal(states[1].x1_hat)  # stopped: the last step's predicted clean latent
    full = gen("a triangle", steps=3, seed=1, callback_on_step_end=lambda s: seen.append(s.index))  # None: go on
    assert not full.interrupted and full.steps_done == 3 and seen[2:] == [0, 1, 2]
    assert full.steps == 3 and full.guidance_scale == 2.0
    assert full.latents.equal(list(gen.iterate("a triangle", steps=3, seed=1))[-1].z_next)  # finished: z_next


def test_stop_from_the_hook_while_iterating_ends_after_k_steps_with_x1_as_the_result(gen):
    k = 3
    states = list(gen.iterate("a red circle", steps=8, seed=2, callback_on_step_end=lambda s: StepControl(
        stop=s.index + 1 == k)))
    assert len(states) == k and not states[-1].finished
    assert states[-1].result.equal(states[-1].x1_hat) and not states[-1].result.equal(states[-1].z_next)


def _hand_made_euler(gen, prompt, steps, weights, seed=0, num_images=1):
    """The official Euler loop written out: z += v / n with the guided velocity of weights[k] at step k."""
    state = gen.encode_prompt(*gen.prompt_rows(prompt, num_images, guided=True))
    z = gen.initial_noise(seed, num_images)
    for k in range(steps):
        v_both = gen.model.velocity(torch.cat([z, z]), torch.full((2 * num_images,), k / steps), state).float()
        v_cond, v_uncond = v_both[:num_images], v_both[num_images:]
        z = z + (1.0 / steps) * (weights[k] * v_cond - (weights[k] - 1.0) * v_uncond)
    return z


def test_a_plain_run_is_the_hand_made_euler_loop_bit_for_bit(gen):
    result = gen("a red circle", steps=30, guidance_scale=2.0, seed=3, num_images=2)
    assert torch.equal(result.latents, _hand_made_euler(gen, "a red circle", 30, [2.0] * 30, seed=3, num_images=2))


def test_the_hook_changes_guidance_from_the_next_step_on(gen):
    def raise_after_two(state):
        return StepControl(guidance_scale=5.0) if state.index == 1 else None

    states = list(gen.iterate("a blue square", steps=6, guidance_scale=2.0, seed=5,
                              callback_on_step_end=raise_after_two))
    assert [s.guidance_scale for s in states] == [2.0, 2.0, 5.0, 5.0, 5.0, 5.0]
    expected = _hand_made_euler(gen, "a blue square", 6, [2.0, 2.0, 5.0, 5.0, 5.0, 5.0], seed=5)
    torch.testing.assert_close(states[-1].z_next, expected, atol=1e-6, rtol=0)
    unchanged = list(gen.iterate("a blue square", steps=6, guidance_scale=2.0, seed=5))[-1].z_next
    assert not torch.allclose(unchanged, expected, atol=1e-4)


def test_guidance_can_rise_from_one_only_in_a_run_with_unconditional_rows(gen):
    def to_three(state):
        return StepControl(guidance_scale=3.0)

    states = list(gen.iterate("a circle", steps=3, guidance_scale=1.0, seed=0, guided=True,
                              callback_on_step_end=to_three))
    assert [s.guidance_scale for s in states] == [1.0, 3.0, 3.0]
    torch.testing.assert_close(states[-1].z_next, _hand_made_euler(gen, "a circle", 3, [1.0, 3.0, 3.0]),
                               atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="guidance_scale 3 needs the unconditional rows.*guided=True"):
        list(gen.iterate("a circle", steps=3, guidance_scale=1.0, callback_on_step_end=to_three))
    with pytest.raises(InputError, match="guidance_scale must be a number from 0 to 10, got 12"):
        list(gen.iterate("a circle", steps=3, callback_on_step_end=lambda s: StepControl(guidance_scale=12)))


def test_previews_decode_x1_and_zt(gen):
    state = next(iter(gen.iterate("a circle", steps=2, seed=0)))
    x1, zt = gen.preview(state, "x1")[0], gen.preview(state, "zt")[0]
    assert x1.size == zt.size == (32, 32) and x1.tobytes() != zt.tobytes()
    with pytest.raises(ValueError, match="'x1' or 'zt'"):
        gen.preview(state, "sharp")


def test_defaults_come_from_the_model_sampling_settings(gen, tiny_bundle):
    states = list(gen.iterate("a circle", seed=0))
    assert len(states) == gen.bundle.sampling["steps"] == 4 and states[0].guidance_scale == 2.0
    tuned = GenerationPipeline(dataclasses.replace(tiny_bundle, sampling={"steps": 3, "cfg": 4.5}))
    assert tuned.defaults == SamplingDefaults(steps=3, guidance_scale=4.5)
    result = tuned("a circle", seed=0)
    assert result.steps == 3 and result.guidance_scale == 4.5
    assert result.latents.equal(gen("a circle", steps=3, guidance_scale=4.5, seed=0).latents)
    published = GenerationPipeline(dataclasses.replace(tiny_bundle, sampling={}))  # no sampling.json values
    assert published.defaults == SamplingDefaults(steps=30, guidance_scale=2.0)


@pytest.mark.parametrize("kwargs,message", [
    ({"steps": 0}, f"steps must be a whole number from 1 to {STEPS[1]}, got 0"),
    ({"steps": STEPS[1] + 1}, f"steps must be a whole number from 1 to {STEPS[1]}"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"guidance_scale": -0.5}, "guidance_scale must be a number from 0 to 10, got -0.5"),
    ({"guidance_scale": float("nan")}, "guidance_scale must be a number from 0 to 10, got nan"),
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
    with pytest.raises(InputError, match="the prompt is empty"):
        gen("   ")
    limit = gen.prompt_token_limit
    assert limit == gen.config.llm.max_position_embeddings - 1 - gen.config.num_gen_tokens
    fits = "circle " * 10
    assert gen.count_prompt_tokens(fits) == len(gen.prompt_rows(fits, 1, guided=False)[0][0]) < limit
    n = gen.count_prompt_tokens("circle " * 500)
    with pytest.raises(InputError, match=f"the prompt is {n} tokens; the limit is {limit}. Shorten it."):
        gen.iterate("circle " * 500)  # refused when the run is asked for, before any model work
    with pytest.raises(InputError, match="the prompt is 4200 characters long; the limit is 4000"):
        gen("circle " * 600)


def test_check_generation_inputs_names_fields_in_the_callers_words():
    with pytest.raises(InputError, match="^guidance_scale must be a number from 0 to 10, got -1$"):
        check_generation_inputs("a circle", None, -1, 1, "euler", 0)
    with pytest.raises(InputError, match="^cfg must be a number from 0 to 10, got -1$"):
        check_generation_inputs("a circle", None, -1, 1, "euler", 0, names={"guidance_scale": "cfg"})
    assert check_generation_inputs("a circle", "7", "2.5", 2.0, "heun", 4) == (7, 2.5, 2, 4)


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
    one = gen("a red circle", steps=4, guidance_scale=2.0, seed=7, num_images=1)
    three = gen("a red circle", steps=4, guidance_scale=2.0, seed=7, num_images=3)
    shifted = gen("a red circle", steps=4, guidance_scale=2.0, seed=6, num_images=2)  # image 1 of seed 6 uses seed 7
    for other in (three.latents[0], shifted.latents[1]):
        torch.testing.assert_close(other, one.latents[0], atol=1e-4, rtol=0)
    for other in (three.images[0], shifted.images[1]):
        diff = np.abs(np.asarray(other, dtype=np.int16) - np.asarray(one.images[0], dtype=np.int16))
        assert diff.max() <= 1
    assert not torch.allclose(three.latents[1], one.latents[0], atol=1e-2)  # a different seed is another image


def _exchange(text):
    return [{"role": "user", "content": text}, {"role": "assistant", "content": text}]


def test_fit_context_drops_the_oldest_exchanges_first_and_keeps_the_latest_message(chat):
    words = "red blue green circle square " * 40  # ~200 tokens a message in the tiny model's 512
    red = Image.new("RGB", (30, 30), "red")
    first = [{"role": "user", "content": "look", "images": [red]}, {"role": "assistant", "content": "a red square"}]
    messages = first + _exchange(words) + _exchange(words) + [{"role": "user", "content": "and now?"}]
    kept, dropped = chat.fit_context(messages, max_new_tokens=64)
    assert kept == messages[-1 - 2 * (3 - dropped):] and kept[-1]["content"] == "and now?"
    assert dropped == 3 - (len(kept) - 1) // 2 >= 2 and kept[0]["role"] == "user"
    assert chat.prompt_length(kept) <= 512 - 64 < chat.prompt_length(messages[-len(kept) - 2:])  # no more dropped
    short = first + [{"role": "user", "content": "and now?"}]
    assert chat.fit_context(short, max_new_tokens=64) == (short, 0)  # fits: nothing dropped, the image stays


def test_fit_context_keeps_a_long_latest_message_and_refuses_one_beyond_the_context(chat):
    k = 1
    while chat.prompt_length([{"role": "user", "content": "circle " * k}]) <= 512 - 100:
        k += 1
    long = "circle " * k  # fits the 512-token context, leaving less than the answer's room
    messages = _exchange("hello") + [{"role": "user", "content": long}]
    kept, dropped = chat.fit_context(messages, max_new_tokens=100)
    assert kept == messages[-1:] and dropped == 1 and 512 - 100 < chat.prompt_length(kept) < 512
    too_long = [{"role": "user", "content": "circle " * 600}]
    n = chat.prompt_length(too_long)
    with pytest.raises(InputError, match=f"the latest message is {n} tokens with its images; the model's "
                                         "context is 512 tokens, the answer included"):
        chat.fit_context(too_long, max_new_tokens=10)


# -- options beyond the official demo (issue 25) ---------------------------------------------------------

def _picture(size=48):
    image = Image.new("RGB", (size + 20, size), (240, 240, 240))
    image.paste((200, 30, 30), (30, 10, 50, 30))
    return image


def test_strength_one_is_text_to_image_bit_for_bit(gen):
    plain = gen("a red circle", steps=5, guidance_scale=2.0, seed=3, num_images=2)
    again = gen("a red circle", steps=5, guidance_scale=2.0, seed=3, num_images=2, init_image=_picture(),
                strength=1.0)
    assert torch.equal(plain.latents, again.latents) and again.steps_planned == 5


def test_image_to_image_starts_on_the_grid_from_the_encoded_image(gen):
    x = gen.init_latent(_picture())  # resized and centre-cropped to the generation resolution
    assert x.shape == (1, gen.config.latent_channels, gen.config.gen_latent_size, gen.config.gen_latent_size)
    states = list(gen.iterate("a red circle", steps=4, seed=5, num_images=2, init_image=_picture(), strength=0.5))
    assert [s.t for s in states] == [0.5, 0.75] and states[-1].finished and states[0].num_steps == 2
    torch.testing.assert_close(states[0].z_t, 0.5 * x + 0.5 * gen.initial_noise(5, 2), atol=0, rtol=0)
    shifted = list(gen.iterate("a red circle", steps=4, seed=5, init_image=_picture(), strength=0.5, shift=3.0))
    assert [s.t for s in shifted] == [0.5]  # the shifted grid's points are 0, 0.1, 0.25, 0.5: 0.5 is the last
    tiny = list(gen.iterate("a red circle", steps=4, seed=5, init_image=_picture(), strength=0.01))
    assert len(tiny) == 1 and tiny[0].t == 0.75  # at least one step


def test_a_small_strength_keeps_the_init_latent_and_a_large_one_does_not(gen):
    x = gen.init_latent(_picture())
    small = gen("a blue square", steps=20, seed=1, init_image=_picture(), strength=0.1).latents
    large = gen("a blue square", steps=20, seed=1, init_image=_picture(), strength=0.9).latents
    assert (small - x).abs().mean() < 0.25 * (large - x).abs().mean()


def _count_rows(gen, monkeypatch):
    rows = []
    real = gen.model.velocity
    monkeypatch.setattr(gen.model, "velocity", lambda z, t, p: rows.append((z.shape[0], float(t[0]))) or real(z, t, p))
    return rows


def test_guidance_interval_full_is_cfg_and_empty_is_conditional_only(gen, monkeypatch):
    cfg_run = gen("a red circle", steps=6, guidance_scale=3.0, seed=2, num_images=2)
    full = gen("a red circle", steps=6, guidance_scale=3.0, seed=2, num_images=2, guidance_interval=(0.0, 1.0))
    assert torch.equal(cfg_run.latents, full.latents)
    conditional = gen("a red circle", steps=6, guidance_scale=1.0, seed=2, num_images=2)
    rows = _count_rows(gen, monkeypatch)
    none = gen("a red circle", steps=6, guidance_scale=3.0, seed=2, num_images=2, guidance_interval=(1.0, 1.0))
    assert torch.equal(conditional.latents, none.latents) and {r for r, _ in rows} == {2}  # half the rows
    rows.clear()
    part = list(gen.iterate("a red circle", steps=4, guidance_scale=3.0, seed=2, num_images=2,
                            guidance_interval=(0.5, 1.0)))
    assert rows == [(2, 0.0), (2, 0.25), (4, 0.5), (4, 0.75)]  # CFG only for the steps starting in [0.5, 1]
    assert [s.guidance_scale for s in part] == [3.0] * 4  # the run's weight; the interval decides where it acts


def test_the_hook_still_changes_guidance_inside_an_interval(gen):
    states = list(gen.iterate("a blue square", steps=4, guidance_scale=2.0, seed=5, guidance_interval=(0.0, 0.25),
                              callback_on_step_end=lambda s: StepControl(guidance_scale=5.0)))
    assert [s.guidance_scale for s in states] == [2.0, 5.0, 5.0, 5.0]
    paired = gen.guided_velocity(gen.encode_prompt(*gen.prompt_rows("a blue square", 1, guided=True)), 5.0)
    cond = gen.guided_velocity(gen.encode_prompt(*gen.prompt_rows("a blue square", 1, guided=False)), 1.0)
    torch.testing.assert_close(states[1].velocity, paired(states[1].z_t, 0.25), atol=1e-5, rtol=0)  # t in [0, 0.25]
    for s in states[2:]:  # outside: the conditional velocity, whatever the weight
        torch.testing.assert_close(s.velocity, cond(s.z_t, s.t), atol=1e-5, rtol=0)


def test_negative_prompt_changes_the_unconditional_rows_only(gen):
    plain_tokens, plain_mask = gen.prompt_rows("a red circle left of a blue square", 2, guided=True)
    tokens, mask = gen.prompt_rows("a red circle left of a blue square", 2, guided=True, negative_prompt="red")
    negative = gen.bundle.processor.encode_generation_prompt("red")
    assert torch.equal(tokens[:2], plain_tokens[:2]) and torch.equal(mask[:2], plain_mask[:2])
    assert torch.equal(tokens[2, -len(negative):], negative) and int(mask[2].sum()) == len(negative)
    assert int(plain_mask[2].sum()) == 1  # without it: BOS only, the official empty prompt
    z = torch.randn(2, 4, 8, 8)
    t_rows = torch.full((4,), 0.3)
    v_plain = gen.model.velocity(torch.cat([z, z]), t_rows, gen.encode_prompt(plain_tokens, plain_mask))
    v_neg = gen.model.velocity(torch.cat([z, z]), t_rows, gen.encode_prompt(tokens, mask))
    torch.testing.assert_close(v_neg[:2], v_plain[:2], atol=1e-5, rtol=0)  # conditional rows unchanged
    assert not torch.allclose(v_neg[2:], v_plain[2:], atol=1e-3)
    a = gen("a circle", steps=3, seed=0, guidance_scale=3.0, negative_prompt="red").latents
    assert not torch.allclose(a, gen("a circle", steps=3, seed=0, guidance_scale=3.0).latents, atol=1e-4)
    assert torch.equal(gen("a circle", steps=3, seed=0, negative_prompt="  ").latents,
                       gen("a circle", steps=3, seed=0).latents)  # blank: no negative prompt
    # a negative prompt longer than the prompt pads the conditional rows; the unguided steps drop that padding
    long_neg = "blurry green triangle " * 5
    t2, m2 = gen.prompt_rows("a circle", 1, guided=True, negative_prompt=long_neg)
    c_tokens, c_mask = gen.conditional_rows(t2, m2, 1)
    assert torch.equal(c_tokens, gen.prompt_rows("a circle", 1, guided=False)[0]) and bool(c_mask.all())


def test_cfg_zero_star_zeroes_the_first_step_then_uses_the_optimised_scale(gen):
    from janusflow_core.sampling import cfg_zero_star

    states = list(gen.iterate("a red circle", steps=4, guidance_scale=3.0, seed=1, guidance="cfg-zero-star"))
    assert torch.equal(states[0].velocity, torch.zeros_like(states[0].z_t))
    assert torch.equal(states[0].z_next, states[0].z_t)  # the first step leaves the noise as it is
    state = gen.encode_prompt(*gen.prompt_rows("a red circle", 1, guided=True))
    z = states[1].z_t
    v = gen.model.velocity(torch.cat([z, z]), torch.full((2,), 0.25), state).float()
    torch.testing.assert_close(states[1].velocity, cfg_zero_star(v[:1], v[1:], 3.0), atol=1e-6, rtol=0)
    one = list(gen.iterate("a red circle", steps=1, guidance_scale=3.0, seed=1, guidance="cfg-zero-star"))
    assert not torch.equal(one[0].z_next, one[0].z_t)  # a one-step grid is never zeroed
    img = list(gen.iterate("a red circle", steps=4, seed=1, guidance="cfg-zero-star", init_image=_picture(),
                           strength=0.5))
    assert not torch.equal(img[0].z_next, img[0].z_t)  # image-to-image starts past the zeroed step


def test_apg_guides_the_predicted_clean_latent_with_momentum(gen):
    from janusflow_core.sampling import apg

    states = list(gen.iterate("a red circle", steps=3, guidance_scale=3.0, seed=1, guidance="apg"))
    cfg_states = list(gen.iterate("a red circle", steps=3, guidance_scale=3.0, seed=1))
    torch.testing.assert_close(states[0].z_t, cfg_states[0].z_t)
    assert not torch.allclose(states[-1].z_next, cfg_states[-1].z_next, atol=1e-4)
    state = gen.encode_prompt(*gen.prompt_rows("a red circle", 1, guided=True))
    previous = None
    for s in states:  # the same rule by hand: x̂ = z + (1 - t) v for both rows, APG, back to a velocity
        v = gen.model.velocity(torch.cat([s.z_t, s.z_t]), torch.full((2,), s.t), state).float()
        x, previous = apg(s.z_t + (1 - s.t) * v[:1], s.z_t + (1 - s.t) * v[1:], 3.0, previous)
        torch.testing.assert_close(s.velocity, (x - s.z_t) / (1 - s.t), atol=1e-5, rtol=0)


@pytest.mark.parametrize("guidance", ["cfg", "cfg-zero-star", "apg"])
def test_every_option_runs_with_heun_and_the_hook(gen, guidance):
    seen = []
    result = gen("a red circle", steps=4, guidance_scale=3.0, seed=1, num_images=2, sampler="heun",
                 guidance=guidance, shift=3.0, guidance_interval=(0.0, 0.6), negative_prompt="blue",
                 init_image=_picture(), strength=0.8,
                 callback_on_step_end=lambda s: seen.append(s.t) or StepControl(stop=len(seen) == 2))
    assert result.interrupted and result.steps_done == 2 and torch.isfinite(result.latents).all()
    assert len(result.images) == 2 and result.options.guidance == guidance
    finished = gen("a red circle", steps=4, seed=1, sampler="heun", guidance=guidance, shift=3.0)
    assert not finished.interrupted and torch.isfinite(finished.latents).all()


def _garbage(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image at all")
    return path


@pytest.mark.parametrize("kwargs,message", [
    ({"strength": 0}, "strength must be a number above 0 and at most 1, got 0"),
    ({"strength": 1.5}, "strength must be a number above 0 and at most 1, got 1.5"),
    ({"strength": -0.2}, "strength must be a number above 0 and at most 1, got -0.2"),
    ({"shift": 0}, "shift must be a number from 0.1 to 10, got 0"),
    ({"shift": 50}, "shift must be a number from 0.1 to 10, got 50"),
    ({"guidance_interval": (0.8, 0.2)}, "guidance_interval must be two numbers LO HI with 0 <= LO <= HI <= 1; got "
                                        "LO 0.8 above HI 0.2"),
    ({"guidance_interval": (-0.1, 1)}, "guidance_interval LO must be a number from 0 to 1, got -0.1"),
    ({"guidance_interval": (0, 2)}, "guidance_interval HI must be a number from 0 to 1, got 2"),
    ({"guidance_interval": 0.5}, "guidance_interval must be two numbers LO HI with 0 <= LO <= HI <= 1, got 0.5"),
    ({"guidance": "pag"}, "guidance must be one of cfg, cfg-zero-star, apg; got 'pag'"),
    ({"negative_prompt": 5}, "the negative prompt must be text, got 5"),
    ({"negative_prompt": "red " * 1001}, "the negative prompt is 4004 characters long; the limit is 4000"),
    ({"init_image": "/no/such/picture.png"}, "init_image '/no/such/picture.png': no such file"),
    ({"init_image": 3}, "init_image must be an image or a path to one, got int"),
])
def test_bad_options_are_clear_errors(gen, kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)):
        gen("a circle", steps=2, **kwargs)
    with pytest.raises(InputError, match=re.escape(message)):
        gen.iterate("a circle", steps=2, **kwargs)  # refused when the run is asked for


def test_unreadable_init_image_and_overlong_negative_prompt(gen, tmp_path):
    path = _garbage(tmp_path)
    with pytest.raises(InputError, match=re.escape(f"init_image '{path}' is not a readable image")):
        gen("a circle", init_image=path)
    png = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(png, format="PNG")
    with pytest.raises(InputError, match="init_image could not be decoded as an image"):
        gen("a circle", init_image=png.getvalue()[:200])  # truncated
    limit = gen.prompt_token_limit
    n = gen.count_prompt_tokens("circle " * 500)
    with pytest.raises(InputError, match=f"the negative prompt is {n} tokens; the limit is {limit}. Shorten it."):
        gen.iterate("a circle", negative_prompt="circle " * 500)


@pytest.mark.slow
def test_a_small_strength_keeps_a_world_scene_on_the_shipped_model():
    """On the embedded shapes model a rendered scene survives strength 0.1 almost as the VAE's own round trip
    does, and strength 1 draws a new picture."""
    import random

    from janusflow_core import load_pretrained
    from janusflow_core.shapes.world import render, sample_scene

    pipe = GenerationPipeline(load_pretrained(None, device="cpu", dtype="fp32"))
    scene = render(sample_scene(random.Random(3)))
    pixels = np.asarray(scene, dtype=np.float64)

    def distance(image):
        return np.abs(np.asarray(image, dtype=np.float64) - pixels).mean()

    round_trip = distance(pipe.decode(pipe.init_latent(scene))[0])
    kept = distance(pipe("a red circle", seed=0, init_image=scene, strength=0.1).images[0])
    new = distance(pipe("a red circle", seed=0, init_image=scene, strength=1.0).images[0])
    assert round_trip < 2 and kept < round_trip + 2 and new > 5 * kept
