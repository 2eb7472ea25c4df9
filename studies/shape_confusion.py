"""What a model draws for the one-object prompts "a circle", "a square", "a triangle".

    python -m studies.shape_confusion --model assets/janusflow-shapes --cfg 1 --cfg 3

For each prompt and CFG weight, 48 images (seeds 1000-1047) are sorted by what the scorer detects: one
well-formed object of each shape, "nothing", "N objects" (all well formed), or "malformed" (the blank grey
canvases that guidance left on early models fall here). Tells a shape-identity problem (a crisp square for "a
circle") from a silhouette problem (a blob on the wrong side of the fill-ratio thresholds).
"""

from __future__ import annotations

import argparse
import collections
import json

import torch

from janusflow_core import GenerationPipeline, load_pretrained
from janusflow_core.evaluation.scoring import detect
from janusflow_core.limits import IMAGES
from janusflow_core.shapes.world import SHAPES


def outcome(image) -> str:
    found = detect(image)
    if not found:
        return "nothing"
    if not all(d.well_formed for d in found):
        return "malformed"
    return found[0].shape if len(found) == 1 else f"{len(found)} objects"


def confusion(pipe: GenerationPipeline, cfg: float, images: int) -> dict[str, dict[str, int]]:
    """``{"a circle": {outcome: count}, ...}`` over ``images`` samples per prompt (seeds 1000 on, in batches of
    ``limits.IMAGES[1]``; image k of a batch uses seed start + k, so the batching does not pick the images)."""
    batch = IMAGES[1]
    table = {}
    for shape in SHAPES:
        counts: collections.Counter = collections.Counter()
        for start in range(1000, 1000 + images, batch):
            n = min(batch, 1000 + images - start)
            counts.update(outcome(im) for im in pipe(f"a {shape}", guidance_scale=cfg, seed=start, num_images=n).images)
        table[f"a {shape}"] = dict(counts.most_common())
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--cfg", type=float, action="append", required=True)
    ap.add_argument("--images", type=int, default=48, help="per prompt, in batches of 16")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = GenerationPipeline(load_pretrained(args.model, device="cpu", dtype="float32"))
    for w in args.cfg:
        for prompt, outcomes in confusion(pipe, w, args.images).items():
            print(json.dumps({"cfg": w, "prompt": prompt, "outcomes": outcomes}), flush=True)


if __name__ == "__main__":
    main()
