"""The fast decode and velocity paths against the default ones (tiny models, CPU).

What is pinned: the fast path is the default; float32 CPU attention and the static KV caches give the
default path's tokens and velocities in float32; in bf16 the float32 attention moves logits by at most a few
bf16 steps and brings them closer to the float32 model's, not further. The CUDA-graph variant itself needs a
GPU (bench/bench_cuda.py); here the compiled velocity runs without graphs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import torch
from conftest import REPO
from PIL import Image

from janusflow_core import load_pretrained
from janusflow_core.modeling import ATTENTION, float32_attention
from janusflow_core.pipelines import ChatPipeline, GenerationPipeline, decode, generate_tokens
from janusflow_core.pipelines.understand import static_cache_length

QUESTIONS = ("what color is the circle?", "describe the picture in detail", "how many shapes are there?")


@pytest.fixture(scope="module")
def bf16_bundle(tiny_model_dir):
    return load_pretrained(tiny_model_dir, device="cpu", dtype="bf16")


def _batch(bundle, question):
    img = Image.new("RGB", (40, 40), (200, 30, 30))
    return ChatPipeline(bundle).prepare([[{"role": "user", "content": question}]], [[img]])


def _embeds(bundle, batch):
    with torch.inference_mode():
        return bundle.model.prepare_inputs_embeds(batch.input_ids, batch.pixel_values, batch.images_seq_mask,
                                                  batch.images_emb_mask)


def test_the_llm_uses_the_registered_attention(tiny_bundle):
    assert tiny_bundle.model.language_model.config._attn_implementation == ATTENTION


@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "top_p": 0.9, "seed": 3}])
def test_fp32_fast_decode_gives_the_default_tokens(tiny_bundle, question, sampling):
    batch = _batch(tiny_bundle, question)
    default = generate_tokens(tiny_bundle, batch, 24, fast_decode=False, **sampling).tolist()
    assert generate_tokens(tiny_bundle, batch, 24, fast_decode=True, **sampling).tolist() == default


@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "top_p": 0.9, "seed": 5}])
def test_static_kv_cache_gives_the_dynamic_caches_tokens(tiny_bundle, sampling):
    """The CUDA chat path's static cache, forced on the CPU: the same tokens and (near) the same scores."""
    batch = _batch(tiny_bundle, QUESTIONS[1])
    e, m = _embeds(tiny_bundle, batch), batch.attention_mask
    kw = dict(pad_token_id=0, eos_token_id=None, do_sample=False, output_scores=True, return_dict_in_generate=True)
    if sampling:
        from janusflow_core.pipelines.understand import SeededSampler

        kw_default = kw | {"logits_processor": [SeededSampler(1.0, 0.9, 5)]}
        kw_static = kw | {"logits_processor": [SeededSampler(1.0, 0.9, 5)]}
    else:
        kw_default = kw_static = kw
    default = decode(tiny_bundle.model, e, m, 24, fast_decode=False, **kw_default)
    static = decode(tiny_bundle.model, e, m, 24, fast_decode=True, static_cache=True, **kw_static)
    assert static.sequences.tolist() == default.sequences.tolist()
    if not sampling:  # sampled scores are one-hot; the greedy ones are the logits
        diff = (torch.stack(static.scores) - torch.stack(default.scores)).abs().max().item()
        assert diff < 1e-5


def test_bf16_float32_attention_stays_within_a_few_bf16_steps_and_closer_to_fp32(tiny_bundle, bf16_bundle):
    """The bound of the bf16 fast path: prefill logits move by at most 4 bf16 steps of their scale, and their
    error against the fp32 model does not grow (it is the bf16 attention's rounding that goes)."""
    batch = _batch(bf16_bundle, QUESTIONS[1])
    lm16, lm32 = bf16_bundle.model.language_model, tiny_bundle.model.language_model
    e16 = _embeds(bf16_bundle, batch)
    with torch.inference_mode():
        ref = lm32(inputs_embeds=_embeds(tiny_bundle, batch), attention_mask=batch.attention_mask).logits
        default = lm16(inputs_embeds=e16, attention_mask=batch.attention_mask).logits.float()
        with float32_attention():
            fast = lm16(inputs_embeds=e16, attention_mask=batch.attention_mask).logits.float()
    assert not torch.equal(fast, default)  # the context does change the computation
    step = ref.abs().max().item() * 2**-7  # one bf16 step at the logits' largest magnitude
    assert (fast - default).abs().max().item() <= 4 * step
    assert (fast - ref).norm() <= (default - ref).norm() * 1.01


def test_float32_attention_holds_only_for_the_calling_thread(bf16_bundle):
    batch = _batch(bf16_bundle, QUESTIONS[0])
    e, lm = _embeds(bf16_bundle, batch), bf16_bundle.model.language_model
    with torch.inference_mode():
        default = lm(inputs_embeds=e, attention_mask=batch.attention_mask).logits
        seen = {}
        with float32_attention():  # set here; the other thread must not see it
            t = threading.Thread(target=lambda: seen.setdefault(
                "x", lm(inputs_embeds=e, attention_mask=batch.attention_mask).logits))
            t.start()
            t.join()
    assert torch.equal(seen["x"], default)


def test_chat_pipeline_takes_the_fast_path_unless_told(tiny_bundle, monkeypatch):
    import janusflow_core.pipelines.understand as understand

    seen = []
    monkeypatch.setattr(understand, "float32_attention", lambda on: seen.append(on) or float32_attention(on))
    msgs = [{"role": "user", "content": QUESTIONS[2]}]
    default = ChatPipeline(tiny_bundle).chat(msgs, max_new_tokens=12)  # fp32: the fast path changes nothing
    assert ChatPipeline(tiny_bundle, fast_decode=True).chat(msgs, max_new_tokens=12) == default
    assert ChatPipeline(tiny_bundle, fast_decode=False).chat(msgs, max_new_tokens=12) == default
    assert seen == [True, True, False]


def test_static_cache_length_is_exact_on_cpu_and_bucketed_on_cuda():
    assert static_cache_length(600, 40, torch.device("cpu"), 16384) == 640
    assert static_cache_length(600, 40, torch.device("cuda"), 16384) == 768
    assert static_cache_length(600, 40, torch.device("cuda"), 700) == 700  # never past the context
    assert static_cache_length(690, 40, torch.device("cuda"), 700) == 730  # but room for prompt + answer


def _trajectory(pipe, **kw):
    return torch.stack([s.z_next for s in pipe.iterate("a red circle above a square", 4, 2.0, 7, 2, **kw)])


def test_static_prompt_cache_gives_the_dynamic_caches_velocities(tiny_bundle):
    pipe, model = GenerationPipeline(tiny_bundle), tiny_bundle.model
    default = _trajectory(pipe)
    try:
        model.static_prompt_cache = True
        static = _trajectory(pipe)
        tokens, mask = pipe.prompt_rows("a square", 1, guided=True)
        assert type(pipe.encode_prompt(tokens, mask).cache).__name__ == "StaticCache"
    finally:
        model.static_prompt_cache = None
    assert (static - default).abs().max().item() < 1e-5


@pytest.mark.slow
def test_compiled_velocity_without_graphs_gives_the_same_trajectory(tiny_bundle):
    """torch.compile of the LLM body on the static prompt cache (CUDA adds graphs to this); a minute to compile."""
    pipe, model = GenerationPipeline(tiny_bundle), tiny_bundle.model
    default = _trajectory(pipe)
    try:
        model.static_prompt_cache = model.compile_velocity = True
        compiled = _trajectory(pipe)
        assert model._compiled_llm is not None
    finally:
        model.static_prompt_cache = model.compile_velocity = None
    assert (compiled - default).abs().max().item() < 1e-5


def test_bench_cuda_without_a_gpu_says_so_and_its_smoke_mode_runs(tmp_path):
    env_py = [sys.executable, "-m", "bench.bench_cuda"]
    if not torch.cuda.is_available():
        no_gpu = subprocess.run(env_py, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert no_gpu.returncode == 2 and "no CUDA GPU" in no_gpu.stdout
    out = tmp_path / "smoke.json"
    run = subprocess.run(env_py + ["--device", "cpu", "--preset", "tiny", "--goals-only", "--repeats", "1",
                                   "--decode-tokens", "6", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    goals = json.loads(out.read_text())["goals"]
    assert "error" not in goals, goals.get("traceback")
    for key in ("chat_decode_tokens_per_s", "chat_decode_default_tokens_per_s", "cfg_step_ms", "cfg_step_ms_default",
                "image_s"):
        assert goals[key] > 0
    assert set(goals["images_per_s"]) == {"1", "4", "16"}
    assert goals["velocity_fast_vs_default"]["rel_err"] < 1e-2  # bf16: static vs dynamic cache
    assert set(goals["goals_met"]) == {"chat_decode_tokens_per_s", "cfg_step_ms", "image_s"}
