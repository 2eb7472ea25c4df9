"""8-bit LLM weights through bitsandbytes (CUDA only). Vision parts and the VAE stay unquantized."""

from __future__ import annotations

from torch import nn

from .modeling import JanusFlowModel


def quantize_llm_8bit(model: JanusFlowModel, threshold: float = 6.0) -> int:
    """Replace the LLM's decoder-layer Linears by ``bnb.nn.Linear8bitLt`` (LLM.int8 with outlier
    threshold); embeddings and lm_head stay in 16 bit. Returns the number of layers replaced."""
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise RuntimeError("8-bit loading needs bitsandbytes: pip install bitsandbytes (CUDA only)") from exc
    device = model.device
    count = 0
    for layer in model.language_model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if not isinstance(child, nn.Linear):
                    continue
                q = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                        has_fp16_weights=False, threshold=threshold)
                q.weight = bnb.nn.Int8Params(child.weight.data.cpu(), requires_grad=False, has_fp16_weights=False)
                if child.bias is not None:
                    q.bias = nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, q.to(device))  # moving to CUDA quantizes the weight
                count += 1
    return count
