"""The CPU bf16 matrix-vector kernel of the fast decode path (janusflow_core/modeling/matvec.py).

What is pinned: the kernel's products agree with a float64 reference within bf16 rounding plus float32
summation error, for any shape (rows not a multiple of 4, columns not a multiple of 16), with and without a
bias, for bf16 and float32 input; ``MatVecLinear`` takes it only for one bf16 row on the CPU inside
``fast_matvec`` (the calling thread only), without autograd, and is ``F.linear`` bit for bit otherwise;
``use_matvec`` changes plain ``nn.Linear`` layers only and leaves the parameters and state dict as they
were; a bf16 chat decode through the fast path uses it and stays within a few bf16 steps of the default.
"""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from janusflow_core import load_pretrained
from janusflow_core.modeling import MatVecLinear, fast_matvec, matvec, use_matvec
from janusflow_core.pipelines import ChatPipeline, decode


@pytest.fixture(scope="module")
def kernel():
    """The built kernel; on a CPU or a machine that cannot build it, the reason is checked instead."""
    k = matvec.kernel()
    if matvec._unsupported() is None:  # AVX2 and no opt-out: this machine (and CI) must build it
        assert k is not None, matvec.why_not
    return k


def test_the_kernel_is_built_where_the_cpu_allows_or_the_reason_is_given(kernel):
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512"):
        assert kernel is not None and hasattr(kernel, "bf16_matvec")
    else:
        assert kernel is None and capability in matvec.why_not


def test_the_opt_out_variable_is_a_reason_not_to_build(monkeypatch):
    monkeypatch.setenv("JANUSFLOW_NO_CPU_KERNEL", "1")
    assert "JANUSFLOW_NO_CPU_KERNEL" in matvec._unsupported()
    monkeypatch.setenv("JANUSFLOW_NO_CPU_KERNEL", "0")
    capability = torch.backends.cpu.get_cpu_capability()
    assert matvec._unsupported() in (None, f"the CPU's vector capability is {capability}, and the kernel needs "
                                           "AVX2 and FMA")


def _bound(w: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None, ref: torch.Tensor,
           bf16_out: bool) -> torch.Tensor:
    """Per row: float32 summation error over the terms' magnitudes (the bias one of them), plus half a bf16
    step of the result for bf16 output."""
    k = w.shape[1]
    mag = w.double().abs() @ x.double().abs() + (0 if b is None else b.double().abs())
    bound = (k + 2) * 2**-24 * mag + 1e-30
    return bound + (ref.abs() * 2**-8 if bf16_out else 0)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), k=st.integers(1, 300), bias=st.booleans(), x_bf16=st.booleans(),
       scale=st.sampled_from([1e-3, 1.0, 50.0]), seed=st.integers(0, 2**31 - 1))
def test_the_kernel_agrees_with_a_float64_reference_for_any_shape(kernel, n, k, bias, x_bf16, scale, seed):
    if kernel is None:
        return  # nothing built here: the fallback is F.linear itself (checked below)
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(n, k, generator=g) * scale).bfloat16()
    x = torch.randn(k, generator=g) * scale
    x = x.bfloat16() if x_bf16 else x
    b = torch.randn(n, generator=g).bfloat16() if bias else None
    out = kernel.bf16_matvec(w, x, b)
    assert out.dtype == x.dtype and out.shape == (n,)
    ref = w.double() @ x.double() + (b.double() if bias else 0)
    assert ((out.double() - ref).abs() <= _bound(w, x, b, ref, x_bf16)).all()


def test_the_kernel_refuses_what_it_cannot_read(kernel):
    if kernel is None:
        return
    w = torch.randn(4, 8).bfloat16()
    for bad_w, bad_x in [(w.float(), torch.randn(8)), (w.t(), torch.randn(4)), (w, torch.randn(7)),
                         (w, torch.randn(8).half())]:
        with pytest.raises(RuntimeError):
            kernel.bf16_matvec(bad_w, bad_x, None)


class _Spy:
    """Stands in for the built kernel and counts its calls (it computes with the real one when there is one)."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def bf16_matvec(self, w, x, b):
        self.calls += 1
        if self.real is not None:
            return self.real.bf16_matvec(w, x, b)
        return F.linear(x[None], w, b)[0]


@pytest.fixture
def spy(kernel, monkeypatch):
    s = _Spy(kernel)
    monkeypatch.setattr(matvec, "kernel", lambda wait=True: s)
    return s


def _layer(bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(40, 24, bias=bias).bfloat16().requires_grad_(False)
    assert use_matvec(layer) == 1 and type(layer) is MatVecLinear
    return layer


def test_matvec_linear_is_f_linear_bit_for_bit_outside_the_context_and_for_more_than_one_row(spy):
    layer = _layer()
    one, three = torch.randn(1, 1, 40).bfloat16(), torch.randn(3, 40).bfloat16()
    assert torch.equal(layer(one), F.linear(one, layer.weight, layer.bias))
    with fast_matvec():
        assert torch.equal(layer(three), F.linear(three, layer.weight, layer.bias))
        with pytest.raises(RuntimeError):  # mixed dtypes stay F.linear's to refuse
            layer(one.float())
    assert spy.calls == 0


def test_matvec_linear_takes_the_kernel_for_one_bf16_row_inside_the_context(spy, kernel):
    for bias in (True, False):
        layer = _layer(bias)
        x = torch.randn(1, 1, 40).bfloat16()
        with fast_matvec():
            out = layer(x)
        assert out.shape == (1, 1, 24) and out.dtype == torch.bfloat16
        if kernel is not None:
            assert torch.equal(out, kernel.bf16_matvec(layer.weight, x.reshape(-1), layer.bias).view(1, 1, 24))
    assert spy.calls == 2


def test_matvec_linear_leaves_autograd_to_f_linear(spy):
    layer = _layer().requires_grad_(True)
    x = torch.randn(1, 40).bfloat16()
    with fast_matvec():
        layer(x).float().sum().backward()
    assert spy.calls == 0 and layer.weight.grad is not None
    with fast_matvec(), torch.inference_mode():
        layer(x)
    assert spy.calls == 1


def test_fast_matvec_holds_only_for_the_calling_thread(spy):
    layer = _layer()
    x = torch.randn(1, 40).bfloat16()
    with fast_matvec():
        t = threading.Thread(target=layer, args=(x,))
        t.start()
        t.join()
        assert spy.calls == 0
        layer(x)
    assert spy.calls == 1


def test_use_matvec_changes_plain_linears_only_and_keeps_the_parameters():
    class Other(nn.Linear):  # as bitsandbytes' and peft's layers subclass nn.Linear
        pass

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), Other(8, 8), nn.Sequential(nn.Linear(8, 4, bias=False)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_matvec(model) == 2
    assert [type(m) for m in (model[0], model[1], model[2][0])] == [MatVecLinear, Other, MatVecLinear]
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert use_matvec(model) == 0  # once is enough


def test_a_bf16_chat_decode_takes_the_kernel_and_stays_within_a_few_bf16_steps(tiny_model_dir, spy):
    bundle = load_pretrained(tiny_model_dir, device="cpu", dtype="bf16")
    from PIL import Image

    batch = ChatPipeline(bundle, fast_decode=False).prepare(
        [[{"role": "user", "content": "describe the picture in detail"}]], [[Image.new("RGB", (40, 40), "red")]])
    with torch.inference_mode():
        e = bundle.model.prepare_inputs_embeds(batch.input_ids, batch.pixel_values, batch.images_seq_mask,
                                               batch.images_emb_mask)
    kw = dict(pad_token_id=0, eos_token_id=None, do_sample=False, output_scores=True, return_dict_in_generate=True)
    default = decode(bundle.model, e, batch.attention_mask, 12, fast_decode=False, **kw)
    assert spy.calls == 0
    fast = decode(bundle.model, e, batch.attention_mask, 12, fast_decode=True, **kw)
    lm = bundle.model.language_model
    per_token = sum(type(m) is MatVecLinear for m in lm.modules())  # every linear, lm_head included
    assert per_token == sum(isinstance(m, nn.Linear) for m in lm.modules()) > 0
    # the 11 tokens after the first, one row each, and lm_head on the prompt's last position
    assert spy.calls == 11 * per_token + 1
    s_fast, s_default = torch.stack(fast.scores).float(), torch.stack(default.scores).float()
    first = min([k for k in range(12) if fast.sequences[0, k] != default.sequences[0, k]] or [12])
    step = s_default.abs().max().item() * 2**-7
    assert (s_fast[:first] - s_default[:first]).abs().max().item() <= 8 * step  # same tokens up to a near-tie


def test_an_fp32_model_keeps_its_plain_linears(tiny_bundle):
    ChatPipeline(tiny_bundle, fast_decode=True).chat([{"role": "user", "content": "hello"}], max_new_tokens=3)
    assert not any(type(m) is MatVecLinear for m in tiny_bundle.model.modules())
