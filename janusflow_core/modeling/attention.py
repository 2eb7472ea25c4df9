"""The LLM's attention: torch's scaled-dot-product attention, registered with transformers under one name.

By default it is exactly transformers' ``sdpa``. Inside :func:`float32_attention` (a context variable, so it
holds for the calling thread or task only), reduced-precision queries, keys and values on the CPU are cast to
float32 for the attention product and the result is cast back. Why: on CPUs without native bf16 matmuls
(AVX2 only), torch's bf16 attention kernel takes about 11 ms per layer for one decoded token whatever the
context length, against 0.1-1.5 ms in float32 (measured on the project's 2-core AMD EPYC), so 24 layers of
bf16 attention cost more than reading all the weights. The cast is exact (keys and values are bf16
numbers); what changes is only where the softmax-weighted sum is rounded, so results can differ from the
default in the last bf16 bit (chat tokens: see ``tests/test_fast_paths.py``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "janusflow_sdpa"  # the LLM's attn_implementation (build_llm's default)
_FLOAT32 = contextvars.ContextVar("janusflow_float32_attention", default=False)
_REDUCED = (torch.bfloat16, torch.float16)


def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention; float32 for reduced-precision CPU tensors inside :func:`float32_attention`."""
    if _FLOAT32.get() and query.device.type == "cpu" and query.dtype in _REDUCED:
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            attention_mask = attention_mask.float()
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              **kwargs)
        return out.to(query.dtype), weights
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the same masks as sdpa


@contextmanager
def float32_attention(enabled: bool = True) -> Iterator[None]:
    """Within the block (this thread/task only), reduced-precision CPU attention runs in float32."""
    token = _FLOAT32.set(bool(enabled))
    try:
        yield
    finally:
        _FLOAT32.reset(token)
