"""Core benchmark at the FULL JanusFlow-1.3B architecture with random weights (no download needed).

Measures, in one run so that the ratios are comparable on a noisy machine:
  * the machine's bf16 GEMM throughput (LLM-shaped matmuls) and memory bandwidth;
  * one CFG Euler step (B images, 2B rows) with the prompt KV cache and without it (the official loop);
  * the step's model-FLOPs utilisation against the measured GEMM throughput;
  * understanding prefill (1 image + a question) and decode tokens/s against a bandwidth bound, through
    the chat pipeline's ``decode`` with its default fast path and with ``fast_decode=False`` (transformers'
    default decode), in the same run, so that their ratio holds whatever the machine's load;
  * peak resident memory.

    python -m bench.bench_core [--dtype bf16] [--images 1] [--repeats 3] [--out bench/results/core.json]
    python -m bench.bench_core --sections decode --decode-context 64   # decode only (minutes, not an hour)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
from transformers.generation.streamers import BaseStreamer

from janusflow_core.modeling import JanusFlowModel, matvec
from janusflow_core.pipelines import decode
from janusflow_core.presets import PRESETS, get_preset
from janusflow_core.sampling import cfg
from janusflow_core.testing import random_full_model


def timed(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_throughput(dtype: torch.dtype, m: int, k: int, n: int, repeats: int = 5) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    sec = timed(lambda: a @ b, repeats, warmup=2)
    return 2 * m * k * n / sec


def memory_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes/s of a streaming read (float32 sum over a buffer far larger than the caches)."""
    x = torch.ones(int(gib * 2**30 / 4), dtype=torch.float32)
    sec = timed(lambda: x.sum(), repeats, warmup=1)
    return x.numel() * 4 / sec


class TokenClock(BaseStreamer):
    """Records when generate hands out each token (its first put() is the prompt)."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass

    def tokens_per_s(self) -> float:
        """Decode rate: one over the median time between two new tokens (the prefill and the first token
        excluded; the median, so that one stall of a shared machine does not move it)."""
        new = self.times[1:]
        return 1.0 / statistics.median(b - a for a, b in zip(new, new[1:]))


def decode_rate(model: JanusFlowModel, embeds: torch.Tensor, n: int, fast: bool) -> tuple[float, list[int]]:
    """Greedy tokens/s of the chat pipeline's ``decode`` over ``n`` new tokens, and the tokens."""
    clock = TokenClock()
    out = decode(model, embeds, torch.ones(embeds.shape[:2], dtype=torch.long), n, fast_decode=fast,
                 min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None, streamer=clock)
    return clock.tokens_per_s(), out[0].tolist()


def build_random(dtype: torch.dtype, preset: str = "janusflow-1.3b") -> JanusFlowModel:
    return random_full_model(get_preset(preset), "cpu", dtype)


def step_flops(model: JanusFlowModel, rows: int, prompt: int, cached: bool) -> float:
    """Matmul FLOPs of one velocity evaluation (LLM linears + attention + U-ViT), 2 per multiply-add."""
    c = model.config
    d, layers, ffn = c.llm.hidden_size, c.llm.num_hidden_layers, c.llm.intermediate_size
    g = c.num_gen_tokens
    new = 1 + g if cached else prompt + 1 + g
    ctx = prompt + 1 + g
    per_token_linear = layers * (4 * d * d + 3 * d * ffn)
    attn = layers * 2 * 2 * new * ctx * d  # q.k and p.v, causal ignored (upper bound)
    llm = rows * (2 * new * per_token_linear + attn)
    uvit = sum(2 * p.numel() for n, p in model.named_parameters()
               if n.startswith(("vision_gen_enc_model.mid_block", "vision_gen_dec_model.mid_block"))
               and p.ndim == 2) * rows * g
    aligners = rows * g * 2 * (2 * d * c.gen_dec.in_channels)
    return llm + uvit + aligners


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--preset", default="janusflow-1.3b", choices=sorted(PRESETS), help="tiny: a quick smoke run")
    ap.add_argument("--images", type=int, default=1, help="images per generation step (CFG rows = 2x)")
    ap.add_argument("--prompt-tokens", type=int, default=29, help="generation prompt length (SPEC 7 used 29)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--decode-rounds", type=int, default=3, help="interleaved default/fast decode rounds (medians)")
    ap.add_argument("--decode-context", type=int, default=0,
                    help="decode after the first N positions of the understanding prompt (0: all of it)")
    ap.add_argument("--sections", default="all", choices=["all", "decode"],
                    help="decode: bandwidth and decode only (the steps take an hour in bf16 without AMX)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/core.json"))
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    res: dict = {"preset": args.preset, "threads": torch.get_num_threads(),
                 "cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "dtype": args.dtype}

    t = time.perf_counter()
    model = build_random(dtype, args.preset)
    res["build_s"] = time.perf_counter() - t
    res["sections"] = args.sections
    res["bandwidth_Bps"] = memory_bandwidth()
    if args.sections == "all":
        steps(model, args, res)
    else:
        res["load_before"] = os.getloadavg()
    decode_section(model, args, res)
    res["peak_rss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    res["load_after"] = os.getloadavg()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    lines = ["| measure | value |", "|---|---|",
             f"| memory bandwidth (streaming read) | {res['bandwidth_Bps'] / 1e9:.1f} GB/s; during decode "
             f"{min(res['decode_bandwidths_Bps']) / 1e9:.1f}-{max(res['decode_bandwidths_Bps']) / 1e9:.1f} |"]
    if args.sections == "all":
        lines += [f"| {args.dtype} GEMM throughput (LLM-shaped) | {res['gemm_flops'] / 1e12:.2f} TFLOP/s |",
                  f"| CFG Euler step, {args.images} image(s), prompt cache | {res['step_cached_s']:.2f} s "
                  f"(MFU {res['mfu_cached']:.0%}) |",
                  f"| same step, full recompute (official loop) | {res['step_uncached_s']:.2f} s "
                  f"(MFU {res['mfu_uncached']:.0%}) |",
                  f"| prompt prefix, computed once | {res['prompt_prefill_s']:.3f} s |",
                  f"| understanding prefill, {res['und_prompt_tokens']} tokens | {res['und_prefill_s']:.2f} s |"]
    bound = res["decode_bound_tokens_per_s"]
    lines += [f"| decode, default (fast_decode=False), {res['decode_context']} positions | "
              f"{res['decode_default_tokens_per_s']:.2f} tok/s ({res['decode_default_fraction_of_bound']:.0%} "
              f"of the {bound:.2f} bound) |",
              f"| decode, fast path (the chat default) | {res['decode_tokens_per_s']:.2f} tok/s "
              f"({res['decode_fraction_of_bound']:.0%}; {res['decode_speedup']:.2f}x; same tokens: "
              f"{res['decode_same_tokens']}; matvec kernel: {res.get('decode_matvec_kernel', 'bf16 only')}) |",
              "| per token: " + ", ".join(f"{k.removesuffix('_ms')} {v:.0f} ms"
                                         for k, v in res["decode_breakdown_per_token"].items()) + " |",
              f"| peak RSS | {res['peak_rss_GiB']:.1f} GiB |",
              f"| load average before / after | {res.get('load_before', ['-'])[0]:.2f} / "
              f"{res['load_after'][0]:.2f} |"]
    print("\n".join(lines))
    return 0


def steps(model: JanusFlowModel, args: argparse.Namespace, res: dict) -> None:
    """The generation-step and understanding-prefill measures (an hour in bf16 on a CPU without AMX)."""
    c = model.config
    d = c.llm.hidden_size
    b, p = args.images, args.prompt_tokens
    rows = 2 * b
    res["load_before"] = os.getloadavg()
    res["gemm_flops"] = gemm_throughput(model.dtype, rows * (1 + c.num_gen_tokens), d, c.llm.intermediate_size)
    tokens = torch.randint(0, min(1000, c.llm.vocab_size), (rows, p))
    mask = torch.ones(rows, p, dtype=torch.long)
    mask[b:, 1:] = 0
    z = torch.randn(b, c.latent_channels, c.gen_latent_size, c.gen_latent_size)

    def one_step(cached: bool):
        state = model.prepare_prompt(tokens, mask, use_cache=cached) if not cached else prompt_state
        v = model.velocity(torch.cat([z, z]), torch.full((rows,), 0.5), state).float()
        return z + (1 / 30) * cfg(v[:b], v[b:], 2.0)

    with torch.inference_mode():
        prompt_state = model.prepare_prompt(tokens, mask, use_cache=True)
        res["step_cached_s"] = timed(lambda: one_step(True), args.repeats)
        res["step_uncached_s"] = timed(lambda: one_step(False), args.repeats)
        res["prompt_prefill_s"] = timed(lambda: model.prepare_prompt(tokens, mask, use_cache=True), args.repeats)
    res["step_cached_flops"] = step_flops(model, rows, p, cached=True)
    res["step_uncached_flops"] = step_flops(model, rows, p, cached=False)
    res["mfu_cached"] = res["step_cached_flops"] / res["step_cached_s"] / res["gemm_flops"]
    res["mfu_uncached"] = res["step_uncached_flops"] / res["step_uncached_s"] / res["gemm_flops"]

    ids, pixels, seq_mask, emb_mask = und_inputs(model)
    with torch.inference_mode():
        def prefill():
            e = model.prepare_inputs_embeds(ids, pixels, seq_mask, emb_mask)
            return model.language_model(inputs_embeds=e, attention_mask=torch.ones_like(ids), use_cache=True,
                                        logits_to_keep=1)

        res["und_prefill_s"] = timed(prefill, args.repeats)
    res["und_prompt_tokens"] = ids.shape[1]


def und_inputs(model: JanusFlowModel) -> tuple[torch.Tensor, ...]:
    """Understanding inputs: 1 image (N + 2 positions) + 30 text tokens."""
    c = model.config
    ids = torch.randint(0, min(1000, c.llm.vocab_size), (1, 30 + c.num_und_tokens + 2))
    seq_mask = torch.zeros_like(ids, dtype=torch.bool)
    seq_mask[0, 5:5 + c.num_und_tokens + 1] = True
    emb_mask = torch.ones(1, 1, c.num_und_tokens + 1, dtype=torch.bool)
    pixels = torch.randn(1, 1, 3, c.siglip.image_size, c.siglip.image_size)
    return ids, pixels, seq_mask, emb_mask


def decode_breakdown(model: JanusFlowModel, context: int, repeats: int = 5) -> dict[str, float]:
    """Milliseconds per decoded token of each kind of work, from one layer's kernels times the layer count:
    the weight matrix-vector products (and lm_head), the attention over ``context`` positions in the model's
    dtype and in float32 (the fast path's, casts included), and the dynamic cache's concatenation."""
    import torch.nn.functional as F

    lm = model.language_model
    layer, cfg = lm.model.layers[0], lm.config
    n_layers, d, heads = cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads
    dtype = model.dtype
    x = torch.randn(1, 1, d, dtype=dtype)
    linears = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    q = torch.randn(1, heads, 1, d // heads, dtype=dtype)
    k, v = (torch.randn(1, heads, context, d // heads, dtype=dtype) for _ in range(2))
    new = torch.randn(1, heads, 1, d // heads, dtype=dtype)
    with torch.inference_mode():
        def matvecs():
            for m in linears:
                F.linear(x if m.in_features == d else x.new_empty(1, 1, m.in_features), m.weight)

        per_layer = {
            "matvec": timed(matvecs, repeats),
            "attention_model_dtype": timed(lambda: F.scaled_dot_product_attention(q, k, v), repeats),
            "attention_float32": timed(lambda: F.scaled_dot_product_attention(q.float(), k.float(), v.float())
                                       .to(dtype), repeats),
            "cache_concat": timed(lambda: (torch.cat([k, new], 2), torch.cat([v, new], 2)), repeats),
        }
        head = timed(lambda: F.linear(x, lm.lm_head.weight), repeats)
        k = matvec.kernel() if dtype == torch.bfloat16 else None
        if k is not None:  # the fast path's matrix-vector products (modeling/matvec.py)
            row = x.reshape(-1)

            def kernel_matvecs():
                for m in linears:
                    k.bf16_matvec(m.weight, row if m.in_features == d else row.new_empty(m.in_features), None)

            per_layer["matvec_kernel"] = timed(kernel_matvecs, repeats)
            head_kernel = timed(lambda: k.bf16_matvec(lm.lm_head.weight, row, None), repeats)
    out = {f"{name}_ms": 1e3 * sec * n_layers for name, sec in per_layer.items()}
    out["matvec_ms"] += 1e3 * head
    if "matvec_kernel_ms" in out:
        out["matvec_kernel_ms"] += 1e3 * head_kernel
    return out


def decode_section(model: JanusFlowModel, args: argparse.Namespace, res: dict) -> None:
    """Greedy decode after the understanding prompt (or its first ``--decode-context`` positions), default
    and fast path, against the bandwidth bound: each token reads every decoder-layer weight, the final norm
    and lm_head (not the embedding table). ``--decode-rounds`` rounds, each a bandwidth measure, a default
    run and a fast run, interleaved so that a shared machine's changing load (its bandwidth moved between 23
    and 39 GB/s within an hour here) hits both paths and the bound alike; a run's rate is one over the median
    time between two tokens, and every figure is the median over the rounds."""
    ids, pixels, seq_mask, emb_mask = und_inputs(model)
    with torch.inference_mode():
        embeds = model.prepare_inputs_embeds(ids, pixels, seq_mask, emb_mask)
    if args.decode_context:
        embeds = embeds[:, :args.decode_context]
    res["decode_context"] = embeds.shape[1]
    if model.dtype == torch.bfloat16:  # the fast path's kernel, built before anything is timed
        res["decode_matvec_kernel"] = "on" if matvec.kernel() is not None else matvec.why_not
    res["decode_breakdown_per_token"] = decode_breakdown(model, embeds.shape[1])
    n = args.decode_tokens + 1
    bandwidths, default_rates, fast_rates = [], [], []
    for _ in range(args.decode_rounds):
        bandwidths.append(memory_bandwidth())
        rate, default_tokens = decode_rate(model, embeds, n, fast=False)
        default_rates.append(rate)
        rate, fast_tokens = decode_rate(model, embeds, n, fast=True)
        fast_rates.append(rate)
    bandwidths.append(memory_bandwidth())
    res["decode_bandwidths_Bps"] = bandwidths
    res["decode_default_rates"], res["decode_fast_rates"] = default_rates, fast_rates
    res["decode_default_tokens_per_s"] = statistics.median(default_rates)
    res["decode_tokens_per_s"] = statistics.median(fast_rates)
    res["decode_same_tokens"] = fast_tokens == default_tokens
    res["decode_speedup"] = res["decode_tokens_per_s"] / res["decode_default_tokens_per_s"]
    lm = model.language_model
    weight_bytes = sum(p.numel() * p.element_size() for n, p in lm.named_parameters() if "embed_tokens" not in n)
    res["decode_weight_bytes"] = weight_bytes
    res["decode_bound_tokens_per_s"] = statistics.median(bandwidths) / weight_bytes
    res["decode_fraction_of_bound"] = res["decode_tokens_per_s"] / res["decode_bound_tokens_per_s"]
    res["decode_default_fraction_of_bound"] = res["decode_default_tokens_per_s"] / res["decode_bound_tokens_per_s"]

if __name__ == "__main__":
    raise SystemExit(main())
