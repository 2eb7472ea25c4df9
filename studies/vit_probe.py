"""How well the understanding ViT's patch features know each object's shape and colour: linear probes.

    python -m studies.vit_probe --model assets/janusflow-shapes
    python -m studies.vit_probe --model assets/janusflow-shapes --vit runs/janusflow-shapes-v11/siglip.pt

For 3 000 scenes of a held-out stream (about 7 400 objects), an object's feature is the mean of the final
patch features over the patches its bounding box touches. A linear classifier is fitted on three quarters
of the objects and scored on the rest, once for shape (3 classes) and once for colour (6). A ViT whose
features do not tell a triangle from a square at this level starves both paths that read them: the LLM
answering questions and REPA steering generation. ``--vit`` swaps in a pre-trained ``siglip.pt``
(the recipe's work folder) for the tower of ``--model``, so a ViT can be probed before the stages train it.
``--pretrain-steps N`` instead pre-trains a fresh ViT of ``--model``'s size with the recipe's settings
(``encoder_pretrain.pretrain_siglip`` at the recipe's batch, its default lr, seed 0) and the given loss
weights, then probes it:

    python -m studies.vit_probe --pretrain-steps 2000 --object-weight 0   # SigLIP + dense loss only
    python -m studies.vit_probe --pretrain-steps 2000 --object-weight 1   # + the per-patch object loss
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from janusflow_core import load_pretrained
from janusflow_core.processing.image import to_pixel_values
from janusflow_core.shapes import render, sample_scene
from janusflow_core.shapes.world import CANVAS, COLORS, SHAPES, Obj
from janusflow_core.training.encoder_pretrain import pretrain_siglip
from janusflow_core.training.shapes_recipe import Recipe
from studies.rows import emit


def box_patches(o: Obj, grid: int) -> list[int]:
    """Row-major indices of the patches of a grid x grid tiling that the object's bounding box touches."""
    cell = CANVAS // grid
    x0, x1 = (o.cx - o.r) // cell, min(grid - 1, (o.cx + o.r) // cell)
    y0, y1 = (o.cy - o.r) // cell, min(grid - 1, (o.cy + o.r) // cell)
    return [y * grid + x for y in range(y0, y1 + 1) for x in range(x0, x1 + 1)]


def linear_probe(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int = 400, seed: int = 0) -> float:
    """Test accuracy of a standardised linear classifier fitted (full-batch Adam) on the first 75 %."""
    torch.manual_seed(seed)
    n_train = int(0.75 * len(y))
    mu, sd = x[:n_train].mean(0), x[:n_train].std(0) + 1e-5
    x = (x - mu) / sd
    head = nn.Linear(x.shape[1], classes)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(head(x[:n_train]), y[:n_train]).backward()
        opt.step()
    with torch.no_grad():
        return (head(x[n_train:]).argmax(1) == y[n_train:]).float().mean().item()


@torch.no_grad()
def probe(tower: nn.Module, scenes: int = 3000, seed: int = 0) -> dict:
    rng = random.Random(f"vit-probe:{seed}")
    drawn = [sample_scene(rng) for _ in range(scenes)]
    pixels = to_pixel_values(np.stack([np.asarray(render(s)) for s in drawn]))
    tower.eval()
    feats = torch.cat([tower(pixels[i:i + 250].to(next(tower.parameters()).dtype)).float()
                       for i in range(0, scenes, 250)])
    grid = int(round(feats.shape[1] ** 0.5))
    xs, shapes, colors = [], [], []
    for k, scene in enumerate(drawn):
        for o in scene.objects:
            xs.append(feats[k, box_patches(o, grid)].mean(0))
            shapes.append(SHAPES.index(o.shape))
            colors.append(COLORS.index(o.color))
    x = torch.stack(xs)
    with torch.enable_grad():
        return {"objects": len(xs),
                "shape_acc": round(linear_probe(x, torch.tensor(shapes), len(SHAPES)), 4),
                "color_acc": round(linear_probe(x, torch.tensor(colors), len(COLORS)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="assets/janusflow-shapes", help="model folder (its config and ViT)")
    ap.add_argument("--vit", default=None, help="a pre-trained ViT state dict (siglip.pt) to probe instead")
    ap.add_argument("--pretrain-steps", type=int, default=None,
                    help="pre-train a fresh ViT of --model's size for this many steps, then probe it")
    ap.add_argument("--dense-weight", type=float, default=1.0, help="with --pretrain-steps: dense loss weight")
    ap.add_argument("--object-weight", type=float, default=1.0, help="with --pretrain-steps: object loss weight")
    ap.add_argument("--scenes", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="append the result as one JSON line to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_pretrained(args.model, device="cpu", dtype="float32")
    tower = bundle.model.vision_und_enc_model.vision_tower
    if args.vit and args.pretrain_steps:
        ap.error("--vit and --pretrain-steps exclude each other: probe a saved ViT or pre-train a new one")
    if args.vit:
        tower.load_state_dict(torch.load(args.vit, map_location="cpu"))
    extra = {}
    if args.pretrain_steps:
        t0 = time.time()
        tower = pretrain_siglip(bundle.config.siglip, bundle.processor.tokenizer, args.pretrain_steps,
                                batch=Recipe.siglip_batch, seed=0, dense_weight=args.dense_weight,
                                object_weight=args.object_weight)
        extra = {"pretrain_steps": args.pretrain_steps, "dense_weight": args.dense_weight,
                 "object_weight": args.object_weight, "pretrain_s": round(time.time() - t0)}
    row = {"model": args.model, "vit": args.vit, **extra, "scenes": args.scenes, "seed": args.seed,
           **probe(tower, args.scenes, args.seed)}
    emit(row, args.out)


if __name__ == "__main__":
    main()
