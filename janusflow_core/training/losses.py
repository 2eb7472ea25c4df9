"""JanusFlow's training losses (paper §3.3-3.4), each a plain function returning a dict of named terms.

Time convention (the one of JanusFlow, SPEC 5.3): t = 0 is pure noise z0, t = 1 is the image latent x;
z_t = t * x + (1 - t) * z0 and the network predicts the velocity dz/dt = x - z0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sample_logit_normal(n: int, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """t = sigmoid(u), u ~ N(mean, std^2): (n,) times in (0, 1), denser in the middle (paper §4.1)."""
    u = torch.randn(n, generator=generator, device=device) * std + mean
    return torch.sigmoid(u)


def interpolate(x: torch.Tensor, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_t = t * x + (1 - t) * z0 with t (B,) broadcast over the other dims of x (B, ...)."""
    t = t.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return t * x + (1 - t) * z0


def flow_loss(v_pred: torch.Tensor, x: torch.Tensor, z0: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rectified-flow loss (eq. 7): mean squared error between the predicted velocity and x - z0."""
    return {"flow": F.mse_loss(v_pred.float(), (x - z0).float())}


def ar_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> dict[str, torch.Tensor]:
    """Autoregressive cross-entropy (eq. 6) averaged over the response tokens only.

    ``logits`` (..., V) predict ``targets`` (...) position by position (already shifted by the caller);
    positions whose target is ``ignore_index`` (prompt, image and padding positions) do not count.
    """
    logits = logits.reshape(-1, logits.shape[-1]).float()
    targets = targets.reshape(-1)
    if not bool((targets != ignore_index).any()):
        return {"ar": logits.sum() * 0.0}
    return {"ar": F.cross_entropy(logits, targets, ignore_index=ignore_index)}


def match_grid(features: torch.Tensor, grid: int) -> torch.Tensor:
    """Understanding-encoder features (B, N, W) on a sqrt(N) grid -> (B, grid*grid, W).

    Identity when the grids agree (H_gen = H_im, the usual case); otherwise the encoder features are
    bilinearly interpolated to the generation grid (a choice of ours; the paper's grids agree).
    """
    b, n, w = features.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"encoder features hold {n} tokens, not a square grid")
    if side == grid:
        return features
    f = features.transpose(1, 2).reshape(b, w, side, side)
    f = F.interpolate(f.float(), size=(grid, grid), mode="bilinear", align_corners=False).to(features.dtype)
    return f.flatten(2).transpose(1, 2)


def repa_loss(projected: torch.Tensor, target_features: torch.Tensor) -> dict[str, torch.Tensor]:
    """REPA (eq. 8): negative mean cosine similarity between the MLP-projected LLM hidden states
    (B, G, W) and the stop-gradient understanding-encoder features of the target image (B, G, W)."""
    cos = F.cosine_similarity(projected.float(), target_features.detach().float(), dim=-1)  # (B, G)
    return {"repa": -cos.mean()}


def drop_prompts(attention_mask: torch.Tensor, p: float, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier-free-guidance dropout on left-padded prompt rows (B, P).

    Each row is dropped with probability ``p``; a dropped row becomes the unconditional form of SPEC 5.1:
    its first real token (BOS) stays visible, every other prompt position is masked. Returns the new
    mask and the (B,) boolean vector of dropped rows.
    """
    dropped = torch.rand(attention_mask.shape[0], generator=generator) < p
    first = (attention_mask.cumsum(1) == 1) & (attention_mask == 1)  # (B, P) the BOS position
    keep_bos = first.to(attention_mask.dtype)
    new = torch.where(dropped.to(attention_mask.device)[:, None], keep_bos, attention_mask)
    return new, dropped
