"""8-bit LLM weights through bitsandbytes (CUDA only). Vision parts and the VAE stay unquantized."""

from __future__ import annotations

import logging

from torch import nn

from .modeling import JanusFlowModel


class _DropInt8CastNotice(logging.Filter):
    """bitsandbytes logs "MatMul8bitLt: inputs will be cast from torch.bfloat16 to float16" on every 8-bit
    matmul, i.e. hundreds of lines per generated token (seen on an H200, bench/results/cuda-h200.json).
    The cast is how LLM.int8 works (fp16 activations), so the notice is dropped; other messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


INT8_CAST_FILTER = _DropInt8CastNotice()


def quiet_int8_cast_notice() -> None:
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if INT8_CAST_FILTER not in logger.filters:
        logger.addFilter(INT8_CAST_FILTER)


def quantize_llm_8bit(model: JanusFlowModel, threshold: float = 6.0) -> int:
    """Replace the LLM's decoder-layer Linears by ``bnb.nn.Linear8bitLt`` (LLM.int8 with outlier
    threshold); embeddings and lm_head stay in 16 bit. Returns the number of layers replaced."""
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise RuntimeError("8-bit loading needs bitsandbytes: pip install bitsandbytes (CUDA only)") from exc
    quiet_int8_cast_notice()
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
