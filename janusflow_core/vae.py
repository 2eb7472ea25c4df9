"""The VAE adapter: diffusers ``AutoencoderKL`` with its latent scaling, and a dtype guard.

JanusFlow works on *scaled* latents: ``latent = scaling_factor * (posterior - shift)``; decoding divides
by the scaling factor first (SPEC 5.5; SDXL-VAE: 0.13025, no shift).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image
from safetensors import SafetensorError, safe_open

log = logging.getLogger(__name__)


class VAELoadError(ValueError):
    """The VAE folder is incomplete or a file in it is unreadable; the message names the file."""


def check_vae_folder(folder: Path) -> None:
    """Refuse a VAE folder without ``config.json`` or with a truncated / corrupt weights file, naming the
    file (reads only the config and the safetensors headers, which record each file's full size)."""
    config = folder / "config.json"
    if not config.is_file():
        raise VAELoadError(f"the VAE folder {folder} has no config.json (a diffusers AutoencoderKL folder is "
                           "expected: config.json + diffusion_pytorch_model.safetensors)")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VAELoadError(f"{config} is not valid JSON ({exc})") from exc
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise VAELoadError(f"the VAE folder {folder} has no .safetensors weights file")
    for f in weights:
        try:
            with safe_open(f, framework="pt") as sf:
                sf.keys()
        except (SafetensorError, OSError) as exc:
            raise VAELoadError(f"VAE weights file {f} is corrupt or truncated ({exc}); download it again") from exc


class VAE:
    def __init__(self, autoencoder: AutoencoderKL):
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        cfg = autoencoder.config
        self.scaling_factor = float(cfg.scaling_factor)
        self.shift_factor = float(getattr(cfg, "shift_factor", None) or 0.0)
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)
        self.latent_channels = int(cfg.latent_channels)

    @property
    def device(self) -> torch.device:
        return next(self.autoencoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.autoencoder.parameters()).dtype

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> VAE:
        from .hub import resolve_folder

        folder = resolve_folder(path_or_id, what="VAE", allow_patterns=["config.json", "*.safetensors"])
        check_vae_folder(folder)
        try:
            autoencoder = AutoencoderKL.from_pretrained(folder, torch_dtype=safe_vae_dtype(dtype, device))
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VAELoadError(f"the VAE in {folder} could not be loaded: {first}") from exc
        return cls(autoencoder.to(device=device))

    @torch.no_grad()
    def encode(self, images: torch.Tensor, sample: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> scaled latents (B, C, H/f, W/f) in float32."""
        dist = self.autoencoder.encode(images.to(self.device, self.dtype)).latent_dist
        z = dist.sample(generator) if sample else dist.mean
        return ((z.float() - self.shift_factor) * self.scaling_factor)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images (B, 3, H, W) in [-1, 1], float32."""
        z = latents.to(self.device, self.dtype) / self.scaling_factor + self.shift_factor
        return self.autoencoder.decode(z).sample.float().clamp(-1, 1)


def safe_vae_dtype(dtype: torch.dtype, device: torch.device | str) -> torch.dtype:
    """The SDXL VAE overflows in float16 (its decoder's activations exceed 65504; the official code
    keeps it in bf16 for that reason). fp16 requests run it in bf16 where the device has bf16, else fp32."""
    if dtype != torch.float16:
        return dtype
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_bf16_supported():
        choice = torch.bfloat16
    elif dev.type == "cpu":
        choice = torch.bfloat16
    else:
        choice = torch.float32
    log.info("VAE runs in %s instead of float16 (the SDXL VAE overflows in float16)", choice)
    return choice


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> PIL RGB images, rounding to the nearest uint8."""
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arr = arr.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


class LatentRGB:
    """An approximate decoder for previews: one linear map from a scaled latent pixel to its RGB colour.

    Fitted once by least squares on the VAE's own round trips (images of random colour blocks, encoded
    and decoded, the decodes averaged over each latent pixel's f x f patch), it costs a (3, C) matrix
    product per latent pixel instead of a decoder pass. Output is at latent resolution (f times smaller).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight = weight  # (3, C)
        self.bias = bias  # (3,)

    @classmethod
    @torch.no_grad()
    def fit(cls, vae: VAE, num_images: int = 8, latent_side: int = 8, seed: int = 0) -> LatentRGB:
        g = torch.Generator().manual_seed(seed)
        side = latent_side * vae.downsample
        blocks = torch.rand(num_images, 3, latent_side // 2, latent_side // 2, generator=g) * 2 - 1
        images = torch.nn.functional.interpolate(blocks, size=(side, side), mode="nearest")  # (n, 3, S, S)
        z = vae.encode(images).float().cpu()  # (n, C, s, s)
        target = torch.nn.functional.avg_pool2d(vae.decode(z).cpu(), vae.downsample)  # (n, 3, s, s)
        x = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), torch.ones(z[:, :1].numel(), 1)], 1)
        y = target.permute(0, 2, 3, 1).reshape(-1, 3)
        solution = torch.linalg.lstsq(x.double(), y.double()).solution.float()  # (C + 1, 3)
        return cls(solution[:-1].T.contiguous(), solution[-1].contiguous())

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, h, w) -> approximate images (B, 3, h, w) in [-1, 1], float32."""
        w, b = self.weight.to(latents.device), self.bias.to(latents.device)
        return (torch.einsum("oc,bchw->bohw", w, latents.float()) + b[:, None, None]).clamp(-1, 1)
