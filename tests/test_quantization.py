"""8-bit loading: what can be checked without a GPU (the GPU run is bench/bench_cuda.py)."""

import logging

from janusflow_core.quantization import quiet_int8_cast_notice


def test_int8_cast_notice_is_dropped_and_other_bitsandbytes_messages_pass(caplog):
    quiet_int8_cast_notice()
    quiet_int8_cast_notice()  # idempotent: one filter, not two
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("MatMul8bitLt: inputs will be cast from %s to float16 during quantization", "torch.bfloat16")
        logger.warning("some other bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["some other bitsandbytes warning"]
