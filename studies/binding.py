"""Does the model bind words to objects, or draw the prompt as a bag of words?

    python -m studies.binding --model assets/janusflow-shapes --per-task 48

For the three geneval tasks that name two different objects (two_object, position, color_attr) it draws
the benchmark's prompts (same prompts and seeds as ``geneval --seed S``) and, among the images that hold
exactly two well-formed objects, counts:

- ``shapes``: the two shapes are the two named ones (a duplicated shape fails);
- ``colors`` (color_attr): the two colours are the two named ones, in either pairing;
- ``bound``: of the images with both sets right, those where each named shape carries its own colour
  (color_attr) or the named relation holds (position).

A model that picks each object's shape from the prompt's words independently of the other object gets
``shapes`` near 0.5; one that pairs colours with shapes at random gets ``bound`` near 0.5. Those two
chance levels are printed beside the measured rates.
"""

from __future__ import annotations

import argparse
import json

import torch

from janusflow_core.evaluation import benchmarks
from janusflow_core.evaluation.scoring import detect
from janusflow_core.shapes.prompts import parse_prompt
from janusflow_core.shapes.world import holds

TASKS = ("two_object", "position", "color_attr")


def tally(prompt: str, image) -> dict[str, bool]:
    """What one image gets right about a two-object prompt (empty dict when it is not two well-formed objects)."""
    spec = parse_prompt(prompt)
    found = detect(image)
    if len(found) != 2 or not all(d.well_formed for d in found):
        return {}
    row = {"shapes": sorted(d.shape for d in found) == sorted(spec.shapes)}
    if spec.task == "color_attr":
        row["colors"] = sorted(d.color for d in found) == sorted(spec.colors)
        if row["shapes"] and row["colors"]:
            row["bound"] = all(any(d.shape == s and d.color == c for d in found)
                               for s, c in zip(spec.shapes, spec.colors))
    if spec.task == "position" and row["shapes"]:
        a, b = (next(d for d in found if d.shape == s) for s in spec.shapes)
        row["bound"] = holds(a, spec.relation, b)
    return row


def summarise(rows: list[dict[str, bool]]) -> dict:
    two = [r for r in rows if r]
    out = {"images": len(rows), "two_objects": len(two)}
    for key in ("shapes", "colors", "bound"):
        vals = [r[key] for r in two if key in r]
        if vals:
            out[key] = {"rate": round(sum(vals) / len(vals), 3), "n": len(vals)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--per-task", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0, help="the geneval seed whose prompts and image seeds to use")
    ap.add_argument("--cfg", type=float, default=None, help="default: the model's recommendation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="append the JSON line to this file too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    generate = benchmarks.make_generator(args.model, device="cpu", dtype="float32", cfg=args.cfg)
    pairs, _ = benchmarks.geneval_prompts(args.per_task, args.seed)
    rows: dict[str, list] = {t: [] for t in TASKS}
    for k, (task, prompt) in enumerate(pairs):  # k counts over all tasks, as run_geneval does
        if task in rows:
            rows[task].append(tally(prompt, generate(prompt, benchmarks.image_seed(args.seed, k), 1)[0]))
    result = {"model": args.model or "embedded", "cfg": args.cfg, "seed": args.seed, "per_task": args.per_task,
              "chance_if_independent": {"shapes": 0.5, "bound": 0.5},
              **{t: summarise(r) for t, r in rows.items()}}
    line = json.dumps(result)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
