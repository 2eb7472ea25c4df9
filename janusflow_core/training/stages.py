"""The three training stages of JanusFlow (paper §3.4) as parameter selections.

1. adaptation: only the new modules train (aligners, generation encoder/decoder, REPA MLP,
   ``beg_of_und_embed``); the LLM and the understanding encoder are frozen.
2. unified pre-training: everything except the understanding encoder.
3. supervised fine-tuning: everything, the understanding encoder included.
The VAE is never part of the model and always frozen. The understanding encoder's attention-pooling
head is only used by its own pre-training and never trains here.
"""

from __future__ import annotations

from torch import nn

NEW_MODULES = ("vision_und_enc_aligner", "beg_of_und_embed", "vision_gen_enc_model", "vision_gen_enc_aligner",
               "vision_gen_dec_aligner_norm", "vision_gen_dec_aligner", "vision_gen_dec_model")
STAGES = (1, 2, 3)


def is_trainable(name: str, stage: int) -> bool:
    """Whether parameter ``name`` of a JanusFlowModel trains in ``stage``."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage}")
    if ".attn_pool." in name:
        return False
    top = name.split(".")[0]
    if stage == 1:
        return top in NEW_MODULES
    if stage == 2:
        return top != "vision_und_enc_model"
    return True


def set_stage(model: nn.Module, stage: int, repa_head: nn.Module | None = None) -> list[str]:
    """Set ``requires_grad`` for ``stage``; the REPA head trains in every stage. Returns trained names."""
    trained = []
    for name, p in model.named_parameters():
        p.requires_grad_(is_trainable(name, stage))
        if p.requires_grad:
            trained.append(name)
    if repa_head is not None:
        for p in repa_head.parameters():
            p.requires_grad_(True)
    return trained
