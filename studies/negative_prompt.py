"""Does a negative prompt do anything on the shapes model? "a circle" with negative "red", counted.

    python -m studies.negative_prompt --seeds 32 --out studies/results/negative-prompt-shapes.jsonl

For each of the three colour-free one-object prompts ("a circle", "a square", "a triangle") and seeds
0..N-1, the model draws one image without a negative prompt and one with each negative prompt given
(``{shape}`` is replaced by the prompt's shape). Each image is scored by the shapes detector: the share
with a red object (``red``), the objects of each colour (``colours``), the share of images with an object
of each colour (``with_colour``), and the share that passes the prompt's shapes-geneval check (one
well-formed object of the asked shape). One JSON line per (cfg, negative prompt).
"""

from __future__ import annotations

import argparse
import time

import torch

from janusflow_core import GenerationPipeline, load_pretrained
from janusflow_core.evaluation.scoring import detect, image_passes
from studies.rows import emit

PROMPTS = ("a circle", "a square", "a triangle")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--seeds", type=int, default=32, help="images per prompt and setting")
    ap.add_argument("--negative", nargs="+", default=["red", "a red {shape}"])
    ap.add_argument("--cfg", type=float, nargs="+", default=[3.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="append one JSON line per setting here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = GenerationPipeline(load_pretrained(args.model, device="cpu", dtype="float32"))
    for w in args.cfg:
        for negative in [None, *args.negative]:
            start, red, passed, colours, with_colour = time.time(), 0, 0, {}, {}
            for prompt in PROMPTS:
                text = None if negative is None else negative.format(shape=prompt.split()[-1])
                images = [pipe(prompt, guidance_scale=w, seed=s, negative_prompt=text).images[0]
                          for s in range(args.seeds)]
                for image in images:
                    found = detect(image)
                    red += any(d.color == "red" for d in found)
                    passed += image_passes(image, prompt)
                    for d in found:
                        colours[d.color] = colours.get(d.color, 0) + 1
                    for c in {d.color for d in found}:
                        with_colour[c] = with_colour.get(c, 0) + 1
            n = len(PROMPTS) * args.seeds
            row = {"model": args.model, "cfg": w, "negative_prompt": negative, "images": n,
                   "red": round(red / n, 4), "red_count": red, "passes": round(passed / n, 4),
                   "colours": dict(sorted(colours.items())),
                   "with_colour": {c: round(k / n, 4) for c, k in sorted(with_colour.items())},
                   "seconds": round(time.time() - start, 1)}
            emit(row, args.out)


if __name__ == "__main__":
    main()
