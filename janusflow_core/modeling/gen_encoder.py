"""Generation encoder (ShallowUViTEncoder, SPEC 5.2 steps 2-4): time embedding, patchify conv and
ConvNeXt blocks on VAE latents."""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from ..config import GenEncoderConfig
from .convnext import MidBlock


class GenerationEncoder(nn.Module):
    def __init__(self, cfg: GenEncoderConfig):
        super().__init__()
        width = cfg.block_out_channels[0]
        # Sinusoid of `width` channels, cosines first, frequencies exp(-ln(1e4) * i / (width/2)).
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(width, cfg.hidden_size, sample_proj_bias=cfg.use_bias)
        # The official in_conv always has a bias (use_bias sets only the time MLP's and the blocks').
        # Its output side floors: (h + 2 * padding - kernel_size) // stride + 1.
        self.in_conv = nn.Conv2d(cfg.input_channels, width, kernel_size=cfg.kernel_size, stride=cfg.stride,
                                 padding=cfg.padding, bias=True)
        self.mid_block = (MidBlock(cfg.block_out_channels[-1], cfg.hidden_size, cfg.layers_in_middle,
                                   cfg.norm_eps, cfg.ffn_factor, cfg.use_bias)
                          if cfg.use_mid_block else None)

    def embed_time(self, t_scaled: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(R,) times already scaled by the config's time_scale -> (R, hidden)."""
        return self.time_embed(self.time_proj(t_scaled).to(dtype))

    def forward(self, z: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """(R, C_lat, h, w) latents -> (R, C, g, g) features (also the decoder's skip tensor),
        g = (h + 2 * padding - kernel_size) // stride + 1."""
        x = self.in_conv(z)
        if self.mid_block is not None:
            x = self.mid_block(x, t_emb)
        return x
