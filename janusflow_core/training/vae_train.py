"""Train the small diffusers ``AutoencoderKL`` the shapes model uses as its VAE (JanusFlow keeps its VAE
frozen; the published model borrows SDXL's, we train one on the shapes world).

MSE + L1 reconstruction + a tiny KL term on freshly rendered scenes; afterwards the latent
``scaling_factor`` = 1 / std of the posterior means is stored in the VAE's config, so scaled latents have
unit variance as the rectified flow assumes.
``finetune_decoder`` then trains the decoder alone on whole images (``train_vae`` sees only crops), the
latent space left as it is.
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from ..processing.image import to_pixel_values
from ..shapes import render, sample_scene


def shapes_autoencoder(block_out_channels: tuple[int, ...] = (16, 32, 32), latent_channels: int = 4,
                       image_size: int = 64, norm_num_groups: int = 8) -> AutoencoderKL:
    """4x downsampling (64 px -> 16x16x4). No attention in the mid block: the autoencoder is fully
    convolutional, so it trains on crops and runs on whole images."""
    n = len(block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=block_out_channels,
                         layers_per_block=1, latent_channels=latent_channels, norm_num_groups=norm_num_groups,
                         sample_size=image_size, mid_block_add_attention=False)


def random_images(rng: random.Random, n: int) -> torch.Tensor:
    return to_pixel_values(np.stack([np.asarray(render(sample_scene(rng))) for _ in range(n)]))


def random_crops(x: torch.Tensor, size: int, rng: random.Random) -> torch.Tensor:
    """One random size x size crop per image (B, 3, S, S); S when size >= S."""
    s = x.shape[-1]
    if size >= s:
        return x
    out = []
    for img in x:
        i, j = rng.randrange(s - size + 1), rng.randrange(s - size + 1)
        out.append(img[:, i:i + size, j:j + size])
    return torch.stack(out)


def reconstruction_errors(recon: torch.Tensor, x: torch.Tensor, fg_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted MSE and L1 of ``recon`` against ``x`` (B, 3, H, W) in [-1, 1]; pixels of objects (not white)
    weigh ``1 + fg_weight``, since the background would otherwise dominate."""
    w = 1 + fg_weight * (x < 0.9).any(dim=1, keepdim=True).float()  # (B, 1, H, W)
    err = recon - x
    return (w * err.pow(2)).mean() / w.mean(), (w * err.abs()).mean() / w.mean()


MIN_DECODER_STEPS = 40  # finetune_decoder's one-cycle schedule needs a warm-up (5 %) of at least one step


def train_vae(steps: int, batch: int = 32, lr: float = 2e-3, kl_weight: float = 1e-6, l1_weight: float = 1.0,
              fg_weight: float = 4.0, seed: int = 0, crop: int = 32, channels: tuple[int, ...] = (16, 32, 32),
              progress: bool = True, log: list | None = None) -> AutoencoderKL:
    """MSE (+ ``l1_weight`` * L1, which keeps flat colours and edges sharper) + ``kl_weight`` * KL.
    Pixels of objects (not white) weigh ``1 + fg_weight``: the background would otherwise dominate."""
    torch.manual_seed(seed)
    rng = random.Random(f"vae:{seed}")
    vae = shapes_autoencoder(channels, norm_num_groups=8 if min(channels) < 32 else 32)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    t0 = time.time()
    for step in (bar := tqdm(range(steps), desc="vae", disable=not progress, dynamic_ncols=True)):
        x = random_crops(random_images(rng, batch), crop, rng)
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample()).sample
        mse, l1 = reconstruction_errors(recon, x, fg_weight)
        kl = post.kl().mean() / x[0].numel()
        loss = mse + l1_weight * l1 + kl_weight * kl
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(mse=f"{mse.item():.5f}", kl=f"{kl.item():.2f}")
        if log is not None and (step + 1) % 20 == 0:
            log.append({"stage": "vae", "step": step + 1, "time_s": round(time.time() - t0, 2), "mse": mse.item()})
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        x = random_images(rng, 512)
        z = torch.cat([vae.encode(x[i:i + 128]).latent_dist.mean for i in range(0, 512, 128)])
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae


def finetune_decoder(vae: AutoencoderKL, steps: int, batch: int = 16, lr: float = 5e-4, l1_weight: float = 1.0,
                     fg_weight: float = 4.0, seed: int = 0, progress: bool = True,
                     log: list | None = None) -> AutoencoderKL:
    """Train the decoder alone on whole 64 px images, the encoder (so the latent space and its
    ``scaling_factor``) frozen. ``train_vae`` trains on crops, where no pixel is ever at the image border;
    a decoder trained so can draw stray lines along the border of a whole image, which the scorer counts
    as malformed objects. Same reconstruction loss as ``train_vae``, from posterior samples.
    ``steps`` must be at least ``MIN_DECODER_STEPS``."""
    if steps < MIN_DECODER_STEPS:
        raise ValueError(f"finetune_decoder: steps must be at least {MIN_DECODER_STEPS}, got {steps}")
    torch.manual_seed(seed)
    rng = random.Random(f"vae-decoder:{seed}")
    vae.requires_grad_(False)
    trained = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in trained:
        p.requires_grad_(True)
    vae.train()
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    t0 = time.time()
    for step in (bar := tqdm(range(steps), desc="vae decoder", disable=not progress, dynamic_ncols=True)):
        x = random_images(rng, batch)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
        recon = vae.decode(z).sample
        mse, l1 = reconstruction_errors(recon, x, fg_weight)
        loss = mse + l1_weight * l1
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(mse=f"{mse.item():.5f}")
        if log is not None and (step + 1) % 20 == 0:
            log.append({"stage": "vae_decoder", "step": step + 1, "time_s": round(time.time() - t0, 2),
                        "mse": mse.item()})
    return vae.eval().requires_grad_(False)
