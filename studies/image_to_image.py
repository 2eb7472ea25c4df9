"""Image-to-image on the shapes world: does a strength keep the layout while the picture follows a new prompt?

    python -m studies.image_to_image --scenes 12 --seeds 0 1 --out studies/results/image-to-image-shapes.jsonl

Each scene is rendered by the world's rules for a prompt of one task and given back with a prompt that
changes one thing: ``recolour`` (a one-object scene, its colour changed), ``reshape`` (its shape changed) or
``recolour-one`` (a two-object scene, the first object's colour changed). For every strength, each output is
scored twice: ``layout`` (the detector finds as many objects as the input has, and each input object has an
output object whose centre is within 4 px of its own) and ``follows`` (the output passes the shapes-geneval
check for the new prompt); ``both`` is the edit a user asked for. One JSON line per (edit, strength).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from janusflow_core import GenerationPipeline, load_pretrained
from janusflow_core.evaluation.scoring import detect, image_passes
from janusflow_core.shapes.prompts import format_prompt, heldout_rng, parse_prompt, sample_prompt
from janusflow_core.shapes.world import COLORS, SHAPES, render
from studies.rows import emit

EDITS = {"recolour": "colors", "reshape": "colors", "recolour-one": "color_attr"}
STRENGTHS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TOLERANCE_PX = 4.0


def edited_prompt(prompt: str, edit: str, k: int) -> str:
    """``prompt`` with one thing changed (the k-th other colour or shape, so the edits vary)."""
    spec = parse_prompt(prompt)
    if edit == "reshape":
        others = [s for s in SHAPES if s != spec.shapes[0]]
        return format_prompt(dataclasses.replace(spec, shapes=(others[k % len(others)],) + spec.shapes[1:]))
    others = [c for c in COLORS if c not in spec.colors]
    return format_prompt(dataclasses.replace(spec, colors=(others[k % len(others)],) + spec.colors[1:]))


def keeps_layout(before: list, after: list, tolerance: float = TOLERANCE_PX) -> bool:
    """Same number of objects, each input object matched by an output object within ``tolerance`` px."""
    if len(before) != len(after):
        return False
    return all(min(max(abs(a.cx - b.cx), abs(a.cy - b.cy)) for b in after) <= tolerance for a in before)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--scenes", type=int, default=12, help="scenes per edit")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="noise seeds per scene")
    ap.add_argument("--edits", nargs="+", default=list(EDITS), choices=list(EDITS))
    ap.add_argument("--strengths", type=float, nargs="+", default=list(STRENGTHS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="append one JSON line per (edit, strength) here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = GenerationPipeline(load_pretrained(args.model, device="cpu", dtype="float32"))
    for edit in args.edits:
        rng = heldout_rng(0, f"image-to-image-{edit}")
        cases = []
        for k in range(args.scenes):
            prompt, scene = sample_prompt(rng, EDITS[edit])
            image = render(scene)
            cases.append((image, detect(image), edited_prompt(prompt, edit, k)))
        for strength in args.strengths:
            start, layout, follows, both, n = time.time(), 0, 0, 0, 0
            for image, objects, new_prompt in cases:
                for seed in args.seeds:
                    out = pipe(new_prompt, seed=seed, init_image=image, strength=strength).images[0]
                    kept, passed = keeps_layout(objects, detect(out)), image_passes(out, new_prompt)
                    layout, follows, both, n = layout + kept, follows + passed, both + (kept and passed), n + 1
            row = {"model": args.model, "edit": edit, "strength": strength, "images": n, "seeds": args.seeds,
                   "layout": round(layout / n, 4), "follows": round(follows / n, 4), "both": round(both / n, 4),
                   "steps": pipe.defaults.steps, "cfg": pipe.defaults.guidance_scale,
                   "seconds": round(time.time() - start, 1)}
            emit(row, args.out)


if __name__ == "__main__":
    main()
