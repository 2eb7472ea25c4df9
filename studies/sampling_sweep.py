"""shapes-geneval of one model under several sampling settings (the paper's appendix C tables, at toy scale).

    python -m studies.sampling_sweep --model assets/janusflow-shapes --per-task 24 --seed 7 \
        --setting cfg=1 --setting cfg=3 --setting cfg=3,from=0.3 --setting steps=10,shift=3 \
        --setting guidance=apg,cfg=5 --out studies/results/sweep.jsonl

A setting is comma-separated ``key=value`` pairs: ``cfg`` (guidance weight, default the model's), ``steps``
(default the model's), ``sampler`` (euler or heun), ``shift`` (the SD3 time shift of the grid), ``guidance``
(cfg, cfg-zero-star or apg) and ``from`` / ``to``: the pipeline's guidance interval [from, to] (guidance only
for steps starting at such t, the conditional rows alone elsewhere: Kynkäänniemi et al. 2024; t = 0 is
noise). Every setting sees the same prompts and seeds. Pick settings on a seed other than the benchmark's 0,
then confirm on seed 0, or the choice is tuned to the test images. ``nfe`` in each row counts velocity
evaluations per image (Heun: two per step; CFG-Zero*'s zeroed step: none).
"""

from __future__ import annotations

import argparse
import time

import torch

from janusflow_core import GenerationPipeline, load_pretrained
from janusflow_core.evaluation.benchmarks import run_geneval
from studies.rows import emit

KEYS = {"cfg": float, "steps": int, "sampler": str, "from": float, "to": float, "shift": float, "guidance": str}


def parse_setting(text: str) -> dict:
    setting = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in KEYS:
            raise SystemExit(f"bad setting {text!r}: use comma-separated key=value with keys {', '.join(KEYS)}")
        setting[key] = KEYS[key](value)
    return setting


def nfe(setting: dict, steps: int) -> int:
    """Velocity evaluations per image (an evaluation is one LLM pass over the image's rows)."""
    per_step = 2 if setting.get("sampler", "euler") == "heun" else 1
    return per_step * (steps - (setting.get("guidance") == "cfg-zero-star" and steps > 1))


def pipeline_kwargs(setting: dict) -> dict:
    """The pipeline's keyword arguments for a setting (steps and cfg aside)."""
    return {"sampler": setting.get("sampler", "euler"), "shift": setting.get("shift", 1.0),
            "guidance": setting.get("guidance", "cfg"),
            "guidance_interval": (setting.get("from", 0.0), setting.get("to", 1.0))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--per-task", type=int, default=24)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--setting", action="append", required=True, help="e.g. cfg=3,steps=30,from=0.5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="append one JSON line per setting here")
    args = ap.parse_args()
    settings = [parse_setting(s) for s in args.setting]
    torch.set_num_threads(args.threads)
    pipe = GenerationPipeline(load_pretrained(args.model, device="cpu", dtype="float32"))
    for s in settings:
        steps, w = s.get("steps", pipe.defaults.steps), s.get("cfg", pipe.defaults.guidance_scale)

        def generate(prompt: str, seed: int, n: int, s=s, steps=steps, w=w) -> list:
            return list(pipe(prompt, steps=steps, guidance_scale=w, seed=seed, num_images=n,
                             **pipeline_kwargs(s)).images)

        start = time.time()
        report = run_geneval(generate, per_task=args.per_task, seed=args.seed)
        row = {"model": args.model, "setting": s, "nfe": nfe(s, steps), "per_task": args.per_task, "seed": args.seed,
               "overall": round(report["score"]["overall"], 4),
               "chance": round(report["chance_baseline"]["overall"], 4),
               "per_task_scores": {k: round(v, 4) for k, v in report["score"]["per_task"].items()},
               "seconds": round(time.time() - start, 1)}
        emit(row, args.out)


if __name__ == "__main__":
    main()
