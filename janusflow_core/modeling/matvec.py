"""A bf16 matrix-vector product for decoding on the CPU (AVX2), built on first use with torch's C++ extension
tools, and ``MatVecLinear``, the ``nn.Linear`` that takes it for one row of input.

Why: a decoded token reads every weight once, so decode speed is bounded by memory bandwidth. torch's bf16
linear on CPUs without bf16 arithmetic (AVX2 only) widens the weights in a compute-bound loop: on the
project's 2-core AMD EPYC, 10 GB/s of weights on one core and 20 GB/s on two, against about 33 GB/s of
streaming reads. This kernel widens bf16 to float32 with one shift or one mask per 8 values (the even and
odd halves of each 32-bit lane, against ``x`` split the same way) and keeps 8 accumulators over 4 rows:
17 GB/s on one core, 28 GB/s on two, on the same machine (``bench.bench_core --sections decode`` times it
per token as ``matvec_kernel_ms``).

How: ``use_matvec(module)`` turns the plain ``nn.Linear`` layers of a module into ``MatVecLinear`` (same
parameters, same state dict; subclasses such as 8-bit or LoRA layers are left alone) and starts building the
kernel in the background. A ``MatVecLinear`` takes the kernel only inside :func:`fast_matvec` (a context
variable: the calling thread or task only), for a single row of bf16 input on the CPU without autograd, once
the build has finished; otherwise it is ``F.linear``. Its sums are float32, rounded once to bf16, so a result
can differ from torch's in the last bf16 bit. The build needs a C++ compiler, ninja and a CPU with AVX2 and
FMA; without them, or with ``JANUSFLOW_NO_CPU_KERNEL=1``, everything runs as before and one log line says why.
The first build takes about 30 s on 2 cores; torch caches it (``TORCH_EXTENSIONS_DIR``) for later runs.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cmath>
#include <cstring>
#include <vector>

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline float widen(uint16_t v) {
  uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// w (n, k) bf16, contiguous; x (k,) bf16 or float32; bias (n,) or None -> w @ x + bias (n,), in x's dtype
// (float32 sums, rounded once to bf16 for bf16 x)
torch::Tensor bf16_matvec(torch::Tensor w, torch::Tensor x, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == torch::kBFloat16 && w.is_contiguous(), "w: contiguous 2-D bf16");
  TORCH_CHECK(x.dim() == 1 && x.size(0) == w.size(1) &&
              (x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kFloat32),
              "x: bf16 or float32, as long as w's rows");
  const int64_t n = w.size(0), k = w.size(1), k16 = k / 16 * 16;
  std::vector<float> X(k);  // x in float32
  auto xc = x.contiguous();
  if (xc.scalar_type() == torch::kBFloat16) {
    const uint16_t* xb = reinterpret_cast<const uint16_t*>(xc.data_ptr<at::BFloat16>());
    for (int64_t c = 0; c < k; ++c) X[c] = widen(xb[c]);
  } else {
    std::memcpy(X.data(), xc.data_ptr<float>(), k * sizeof(float));
  }
  std::vector<float> B;
  if (bias.has_value()) {
    TORCH_CHECK(bias->numel() == n, "bias: one value per row of w");
    auto bf = bias->to(torch::kFloat32).contiguous();
    B.assign(bf.data_ptr<float>(), bf.data_ptr<float>() + n);
  }
  std::vector<float> O(n);
  // x at the even and at the odd positions of each block of 16: a 32-bit lane of w holds one of each
  std::vector<float> xe(k16 / 2), xo(k16 / 2);
  for (int64_t c = 0; c < k16; c += 16)
    for (int i = 0; i < 8; ++i) {
      xe[c / 2 + i] = X[c + 2 * i];
      xo[c / 2 + i] = X[c + 2 * i + 1];
    }
  const uint16_t* W = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
  const __m256i high = _mm256_set1_epi32(0xFFFF0000);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    int64_t r = begin;
    for (; r + 4 <= end; r += 4) {
      __m256 a[4][2];
      for (int i = 0; i < 4; ++i) a[i][0] = a[i][1] = _mm256_setzero_ps();
      for (int64_t c = 0; c < k16; c += 16) {
        const __m256 e = _mm256_loadu_ps(xe.data() + c / 2), o = _mm256_loadu_ps(xo.data() + c / 2);
        for (int i = 0; i < 4; ++i) {
          const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(W + (r + i) * k + c));
          a[i][0] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(raw, 16)), e, a[i][0]);
          a[i][1] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(raw, high)), o, a[i][1]);
        }
      }
      for (int i = 0; i < 4; ++i) {
        float s = hsum(_mm256_add_ps(a[i][0], a[i][1]));
        for (int64_t c = k16; c < k; ++c) s += widen(W[(r + i) * k + c]) * X[c];
        O[r + i] = s;
      }
    }
    for (; r < end; ++r) {
      float s = 0.f;
      for (int64_t c = 0; c < k; ++c) s += widen(W[r * k + c]) * X[c];
      O[r] = s;
    }
  });
  if (!B.empty())
    for (int64_t r = 0; r < n; ++r) O[r] += B[r];
  auto out = torch::empty({n}, x.options());
  if (x.scalar_type() == torch::kFloat32) {
    std::memcpy(out.data_ptr<float>(), O.data(), n * sizeof(float));
    return out;
  }
  uint16_t* ob = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  for (int64_t r = 0; r < n; ++r) {  // round to nearest even, as torch's float -> bf16 conversion
    uint32_t bits;
    std::memcpy(&bits, &O[r], 4);
    ob[r] = std::isnan(O[r]) ? uint16_t(0x7FC0) : uint16_t((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
  }
  return out;
}
"""

_ON = contextvars.ContextVar("janusflow_fast_matvec", default=False)
_lock = threading.Lock()
_built = threading.Event()
_kernel: Any = None
_builder: threading.Thread | None = None
why_not: str | None = None  # why the kernel is not in use, once known


def _unsupported() -> str | None:
    if os.environ.get("JANUSFLOW_NO_CPU_KERNEL", "") not in ("", "0"):
        return "JANUSFLOW_NO_CPU_KERNEL is set"
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        return f"the CPU's vector capability is {capability}, and the kernel needs AVX2 and FMA"
    return None


def _build() -> None:
    global _kernel, why_not
    try:
        reason = _unsupported()
        if reason is None:
            from torch.utils.cpp_extension import load_inline

            _kernel = load_inline("janusflow_bf16_matvec", cpp_sources=[_SOURCE], functions=["bf16_matvec"],
                                  extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],
                                  extra_ldflags=["-fopenmp"], verbose=False)
        else:
            why_not = reason
    except Exception as exc:  # no compiler, no ninja, ...: decode runs as before
        last = (str(exc).strip().splitlines() or [""])[-1]
        why_not = f"the kernel could not be built ({type(exc).__name__}: {last})"
    if why_not:
        log.warning("CPU bf16 decode uses torch's linear: %s", why_not)
    _built.set()


def kernel(wait: bool = True) -> Any:
    """The built extension (its ``bf16_matvec(w, x)``), or None when it cannot be built (``why_not`` says
    why) or, with ``wait=False``, is still being built (the build starts at the first call)."""
    global _builder
    if _built.is_set():
        return _kernel
    with _lock:
        if _builder is None:
            _builder = threading.Thread(target=_build, name="janusflow-matvec-build", daemon=True)
            _builder.start()
    if wait:
        _built.wait()
    return _kernel if _built.is_set() else None


@contextmanager
def fast_matvec(enabled: bool = True) -> Iterator[None]:
    """Within the block (this thread/task only), ``MatVecLinear`` layers take the kernel for one row."""
    token = _ON.set(bool(enabled))
    try:
        yield
    finally:
        _ON.reset(token)


class MatVecLinear(nn.Linear):
    """``nn.Linear`` that takes the bf16 matrix-vector kernel for one row inside :func:`fast_matvec`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (_ON.get() and x.numel() == self.in_features and x.dtype == torch.bfloat16 and x.device.type == "cpu"
                and self.weight.dtype == torch.bfloat16 and self.weight.is_contiguous()
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))):
            k = kernel(wait=False)
            if k is not None:
                return k.bf16_matvec(self.weight, x.reshape(-1), self.bias).view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight, self.bias)


def use_matvec(module: nn.Module) -> int:
    """Turn ``module``'s plain ``nn.Linear`` layers into ``MatVecLinear`` (in place; the parameters are
    untouched) and start building the kernel; returns how many layers changed. A module already turned is
    not walked again (``decode`` calls this for every answer)."""
    if getattr(module, "_janusflow_matvec", False):
        return 0
    changed = 0
    for sub in module.modules():
        if type(sub) is nn.Linear:
            sub.__class__ = MatVecLinear
            changed += 1
    module._janusflow_matvec = True
    kernel(wait=False)
    return changed
