"""SigLIP-style ViT (timm parameter names), the understanding encoder (SPEC 4.5).

Patch conv -> + learned positions -> pre-norm blocks (fused qkv) -> final LayerNorm. No class token.
The attention-pooling head (``attn_pool``) is part of the published checkpoint; JanusFlow's
understanding path never runs it, our encoder pre-training uses it as the pooled image embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SigLIPConfig


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, head_dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_width: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, mlp_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, W), row-major patches


class AttentionPool(nn.Module):
    """Multi-head attention pooling with one learned query (timm's MAP head)."""

    def __init__(self, width: int, heads: int, mlp_width: int):
        super().__init__()
        self.heads = heads
        self.latent = nn.Parameter(torch.zeros(1, 1, width))
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, mlp_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.heads
        q = self.q(self.latent.expand(b, -1, -1)).view(b, 1, h, c // h).transpose(1, 2)
        kv = self.kv(x).view(b, n, 2, h, c // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1]).transpose(1, 2).reshape(b, 1, c)
        out = self.proj(out)
        out = out + self.mlp(self.norm(out))
        return out[:, 0]  # (B, W)


class VisionTransformer(nn.Module):
    def __init__(self, cfg: SigLIPConfig):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_width) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.attn_pool = AttentionPool(cfg.width, cfg.heads, cfg.mlp_width)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) -> (n, N, W) features after the final LayerNorm."""
        x = self.patch_embed(pixel_values) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def pooled(self, features: torch.Tensor) -> torch.Tensor:
        """(n, N, W) -> (n, W): the attention-pooled embedding (used for encoder pre-training)."""
        return self.attn_pool(features)


class UnderstandingEncoder(nn.Module):
    """Holds the tower under the official key prefix ``vision_und_enc_model.vision_tower``."""

    def __init__(self, cfg: SigLIPConfig):
        super().__init__()
        self.vision_tower = VisionTransformer(cfg)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_tower(pixel_values)
