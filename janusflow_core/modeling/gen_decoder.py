"""Generation decoder (ShallowUViTDecoder, SPEC 5.2 step 9): input norm, skip concat, ConvNeXt blocks,
then RMSNorm + 1x1 conv + pixel shuffle back to the latent grid. Its output is the velocity."""

from __future__ import annotations

import torch
from torch import nn

from ..config import GenDecoderConfig
from .convnext import MidBlock
from .norms import RMSNorm


class Unpatchify(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, patch: int, eps: float, bias: bool):
        super().__init__()
        self.norm = RMSNorm(in_channels, eps, channels_first=True)
        self.unpatch_conv = nn.Conv2d(in_channels, out_channels * patch * patch, kernel_size=1, bias=bias)
        self.shuffle = nn.PixelShuffle(patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.unpatch_conv(self.norm(x)))  # (R, out, patch*H, patch*W)


class GenerationDecoder(nn.Module):
    def __init__(self, cfg: GenDecoderConfig, skip_channels: int):
        super().__init__()
        width = cfg.in_channels + skip_channels
        self.input_norm = RMSNorm(cfg.in_channels, cfg.norm_eps, channels_first=True)
        self.mid_block = (MidBlock(width, cfg.hidden_size, cfg.layers_in_middle, cfg.norm_eps,
                                   cfg.ffn_factor, cfg.use_bias)
                          if cfg.use_mid_block else None)
        stages, c_in = [], width
        for i in range(cfg.upsamples):
            c_out = cfg.out_channels if i == cfg.upsamples - 1 else cfg.block_out_channels[-1]
            stages.append(Unpatchify(c_in, c_out, cfg.patch_size, cfg.norm_eps, cfg.use_bias))
            c_in = c_out
        self.out_convs = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """x (R, C_in, g, g) from the LLM, skip (R, C_enc, g, g) -> velocity (R, C_lat, h, w)."""
        x = torch.cat([self.input_norm(x), skip], dim=1)  # decoder input FIRST
        if self.mid_block is not None:
            x = self.mid_block(x, t_emb)
        for stage in self.out_convs:
            x = stage(x)
        return x
