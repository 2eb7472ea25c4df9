"""Score one trained model for an ablation table: geneval and VQA on several seeds, plus shape confusion.

    python -m studies.score_model --model runs/janusflow-shapes-v6-export --work runs/janusflow-shapes-v6 \
        --set repa_weight=0 --out studies/results/repa-weight-dense-vit.jsonl

appends one JSON line with, for every seed S, ``geneval_seedS`` and ``chance_seedS`` (the per-task scores),
``vqa_seedS`` and ``vqa_per_form_seedS``; ``yes_rate`` (one value per seed); ``shape_confusion_cfgW``
(what ``studies/shape_confusion.py`` counts for "a circle", "a square", "a triangle"); and, with ``--work``,
the step count each stage's log reached. ``--set key=value`` adds fields that name the arm (the value is
read as JSON when it parses, else kept as text). The rows of ``studies/results/repa-weight-dense-vit.jsonl``
have this form. Scoring runs at the model's recommended sampling settings, on the CPU in fp32, the way the
docs/training.md's numbers are measured.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from janusflow_core import GenerationPipeline, load_pretrained
from janusflow_core.evaluation import benchmarks
from studies.shape_confusion import confusion


def stage_steps(work: Path) -> dict[str, int]:
    """``{"stage2_steps": N, ...}``: the last step each ``stageK/log.jsonl`` under ``work`` logged."""
    steps = {}
    for log in sorted(work.glob("stage*/log.jsonl")):
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        logged = [r["step"] for r in rows if "step" in r]
        if logged:
            steps[f"{log.parent.name}_steps"] = max(logged)
    if not steps:
        raise SystemExit(f"--work {work}: no stage*/log.jsonl with logged steps (is it a recipe work folder?)")
    return steps


def parse_set(items: list[str]) -> dict:
    fields = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected key=value, e.g. --set repa_weight=0.5")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:
            fields[key] = value
    return fields


def score(model: str | None, seeds: list[int], per_task: int, n: int, confusion_images: int,
          confusion_cfg: float) -> dict:
    generate = benchmarks.make_generator(model, device="cpu", dtype="float32")
    answer = benchmarks.make_answerer(model, device="cpu", dtype="float32")
    row: dict = {}
    yes_rate = []
    for s in seeds:
        g = benchmarks.run_geneval(generate, per_task=per_task, seed=s)
        row[f"geneval_seed{s}"], row[f"chance_seed{s}"] = g["score"], g["chance_baseline"]
        v = benchmarks.run_vqa(answer, n=n, seed=s)
        row[f"vqa_seed{s}"], row[f"vqa_per_form_seed{s}"] = v["accuracy"], v["per_form"]
        yes_rate.append(v["yes_rate"])
    row["yes_rate"] = yes_rate
    if confusion_images:
        pipe = GenerationPipeline(load_pretrained(model, device="cpu", dtype="float32"))
        row[f"shape_confusion_cfg{confusion_cfg:g}"] = confusion(pipe, confusion_cfg, confusion_images)
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--work", type=Path, default=None, help="the recipe work folder: adds each stage's steps")
    ap.add_argument("--run", default=None, help="the row's name (default: the --work or --model folder name)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra fields of the row")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--per-task", type=int, default=24, help="geneval prompts per task and seed")
    ap.add_argument("--n", type=int, default=200, help="VQA questions per seed")
    ap.add_argument("--confusion-images", type=int, default=48, help="per one-object prompt; 0 skips it")
    ap.add_argument("--confusion-cfg", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="append the row to this JSON-lines file")
    args = ap.parse_args(argv)
    if args.per_task < 1 or args.n < 1 or args.confusion_images < 0:
        ap.error("--per-task and --n must be at least 1, --confusion-images at least 0")
    fields = parse_set(args.set)
    steps = stage_steps(args.work) if args.work is not None else {}
    torch.set_num_threads(args.threads)
    name = args.run or (args.work.name if args.work is not None else Path(args.model or "janusflow-shapes").name)
    row = {"run": name, **fields, **steps,
           **score(args.model, args.seeds, args.per_task, args.n, args.confusion_images, args.confusion_cfg)}
    line = json.dumps(row)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(line + "\n")
    print(line)
    return row


if __name__ == "__main__":
    main()
