"""Fine-tune a shapes model on a generation pool that over-weights the scenes naming two different objects.

    python bench/finetune_mix.py --model assets/janusflow-shapes --share-two 0.75 --minutes 18 --out runs/ft-mix

A diagnostic, not part of the recipe: it asks whether more two-object data alone teaches the model to pair
words with objects (measure with ``bench/binding.py --model OUT/model`` before and after). It rebuilds the
recipe's pools (its seed and sizes: 8 000 understanding scenes, 12 000 generation scenes) with the task-uniform
generation pool of the sixth model (the recipe now gives two-object tasks two thirds of it), keeps every
scene drawn for two_object, position or color_attr and enough of the others for ``--share-two``, and runs
one stage with the recipe's stage-3 batch (everything trains, the VAE frozen) from the model's weights, single process.
REPA is off: the shipped checkpoint carries no REPA head, and a fresh one would pull on the LLM while it
learns. The EMA weights are saved to ``OUT/model`` in the official layout, with the model's processor,
VAE and sampling settings.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from janusflow_core import load_pretrained  # noqa: E402
from janusflow_core.checkpoint import save_pretrained  # noqa: E402
from janusflow_core.training.data import (  # noqa: E402
    GenerationPool,
    build_generation_pool,
    build_understanding_pool,
    task_cycle,
)
from janusflow_core.training.shapes_recipe import Recipe  # noqa: E402
from janusflow_core.training.trainer import Trainer  # noqa: E402

TWO_OBJECT_TASKS = ("two_object", "position", "color_attr")


def reweighted(pool: GenerationPool, share_two: float) -> GenerationPool:
    """The two-object scenes of a task-uniform pool (drawn in ``task_cycle(None)`` order) and the first of
    the others, so that two-object scenes make up ``share_two`` of the result."""
    n, cycle = len(pool.captions), task_cycle(None)
    two = [i for i in range(n) if cycle[i % len(cycle)] in TWO_OBJECT_TASKS]
    rest = [i for i in range(n) if cycle[i % len(cycle)] not in TWO_OBJECT_TASKS]
    idx = two + rest[:round(len(two) * (1 - share_two) / share_two)]
    return GenerationPool([pool.captions[i] for i in idx], pool.latents[idx], pool.images[idx])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="assets/janusflow-shapes")
    ap.add_argument("--share-two", type=float, default=0.75,
                    help="fraction of two-object scenes, in [0.5, 1] (below 0.5 the uniform pool has too few others)")
    ap.add_argument("--minutes", type=float, default=18.0, help="time budget (the lr schedule completes in it)")
    ap.add_argument("--steps", type=int, default=4000, help="step limit")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not 0.5 <= args.share_two <= 1.0:
        ap.error(f"--share-two must be in [0.5, 1] (0.5 is the task-uniform pool itself), got {args.share_two}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    bundle = load_pretrained(args.model, device="cpu", dtype="float32")
    t0 = time.time()
    recipe = Recipe()
    und = build_understanding_pool(recipe.und_pool, recipe.seed)
    uniform = build_generation_pool(recipe.gen_pool, recipe.seed, bundle.vae.encode, task_weights=None)
    gen = reweighted(uniform, args.share_two)
    print(f"pools: {time.time() - t0:.0f} s, {len(gen.captions)} generation scenes", flush=True)
    cfg = replace(recipe.stages[-1], steps=args.steps, lr=args.lr, checkpoint_every=args.steps,
                  time_limit_s=args.minutes * 60, repa_weight=0.0, snapshot_every=0)  # the recipe's stage 3 batch
    trainer = Trainer(bundle.model, bundle.processor, cfg, out / "work", und, gen, progress=False)
    print(trainer.train(resume=False), flush=True)
    save_pretrained(trainer.ema_model().eval(), out / "model", processor=bundle.processor, vae=bundle.vae,
                    sampling=bundle.sampling)


if __name__ == "__main__":
    main()
