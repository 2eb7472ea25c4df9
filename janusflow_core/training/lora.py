"""LoRA for JanusFlow through peft: which modules get adapters, which train fully, and the merge.

- Adapters (rank r, alpha 2r, no dropout) go on every linear map of the LLM's blocks (q, k, v, o and the
  gate / up / down projections): the LLM holds most of the parameters (1.3 B of the published 2 B) and is
  where new words have to be tied to images, in both directions.
- The input embedding and the output head get adapters too (``vocab=True``, the default): a word the base never
  saw (the shapes model's byte-level tokenizer spells "ring" as pieces it rarely used) needs its own rows, in
  the prompt and as an answer. peft's embedding LoRA adds an r-dimensional code per token, not a full copy.
- The modules JanusFlow adds around the LLM train fully (peft's ``modules_to_save``): the understanding
  aligner, the generation encoder, its aligner, the decoder aligner (and its norm) and the generation decoder.
  They are small (about 72 M of the 2 B) and map between the LLM and image spaces, which a new kind of image
  changes the most.
- The understanding encoder (SigLIP) stays frozen: its features are REPA's target and the understanding path's
  input; so does ``beg_of_und_embed`` (one vector). The VAE is never part of the model.

``merge`` folds the adapters into the weights and returns the plain ``JanusFlowModel`` with the official key
names, so the exported folder loads with ``load_pretrained`` like any other.
"""

from __future__ import annotations

from peft import LoraConfig, PeftModel, get_peft_model

from ..modeling import JanusFlowModel

LLM_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VOCAB_MODULES = ("language_model.model.embed_tokens", "language_model.lm_head")
FULLY_TRAINED = ("vision_und_enc_aligner", "vision_gen_enc_model", "vision_gen_enc_aligner",
                 "vision_gen_dec_aligner_norm", "vision_gen_dec_aligner", "vision_gen_dec_model")


def lora_config(rank: int, alpha: float | None = None, vocab: bool = True) -> LoraConfig:
    """The adapter layout above (a regex on full module names, so nothing outside the LLM is matched)."""
    if rank < 1:
        raise ValueError(f"lora rank must be at least 1, got {rank}")
    blocks = r"language_model\.model\.layers\.\d+\.(self_attn|mlp)\.(" + "|".join(LLM_LINEARS) + ")"
    vocab_re = "|" + "|".join(m.replace(".", r"\.") for m in VOCAB_MODULES) if vocab else ""
    return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=0.0,
                      target_modules=f"^({blocks}{vocab_re})$", modules_to_save=list(FULLY_TRAINED))


def add_lora(model: JanusFlowModel, rank: int, alpha: float | None = None, vocab: bool = True) -> PeftModel:
    """Wrap ``model`` (adapters are injected in place: ``result.base_model.model is model``); only the
    adapters and the ``FULLY_TRAINED`` copies require grad afterwards."""
    return get_peft_model(model, lora_config(rank, alpha, vocab))


def merge(peft_model: PeftModel) -> JanusFlowModel:
    """The adapters folded into the base weights and the trained module copies put in place of the originals."""
    return peft_model.merge_and_unload()
