"""The LLaMA-layout LLM, built with transformers (the one adapter around it)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ..config import LLMConfig
from .attention import ATTENTION


def build_llm(cfg: LLMConfig, attn_implementation: str = ATTENTION) -> LlamaForCausalLM:
    hf = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False, hidden_act="silu",
    )
    hf._attn_implementation = attn_implementation
    return LlamaForCausalLM(hf)


def reset_rope_buffers(llm: LlamaForCausalLM, device: torch.device | str | None = None) -> None:
    """(Re)create the RoPE frequencies in float32.

    They are non-persistent buffers: not in the checkpoint, left empty by meta-device construction,
    and rounded by a blanket ``.to(bfloat16)`` (the official demo's quirk, SPEC 6.2). We always keep
    them exact.
    """
    for module in llm.modules():
        if hasattr(module, "inv_freq") and hasattr(module, "rope_type"):
            fn = module.compute_default_rope_parameters if module.rope_type == "default" else None
            if fn is None:
                raise NotImplementedError(f"rope type {module.rope_type!r} is not supported")
            inv_freq, module.attention_scaling = fn(module.config)
            dev = device if device is not None else llm.get_input_embeddings().weight.device
            module.inv_freq = inv_freq.to(dev)
            module.original_inv_freq = inv_freq.clone().to(dev)
