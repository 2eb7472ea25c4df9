"""Recipe study: train variants of the shapes recipe side by side and score them (a GPU, when one is lent).

Every variant starts from the same tokenizer, VAE and pre-trained ViT (copied from ``--base``, a recipe
work folder), so the runs differ only in the stage settings named below. Each variant runs in its own
process; the scores of its EMA snapshots and of its final export go to ``--scores`` as JSON lines.

    python bench/recipe_study.py train --variant repa --base runs/janusflow-shapes-v3 --work /tmp/study
    python bench/recipe_study.py score --work /tmp/study --scores out/study.jsonl --until 1700000000

Variants (stage 1 / 2 / 3 steps; the time limits only guard the wall clock of a lent machine):
  repa       the shipped recipe at the shipped model's step counts (60 / 3207 / 956)
  norepa     the same with REPA's weight 0: the paper's Table 6 ablation at our budget
  repa1      REPA's weight 1.0 instead of 0.5
  longstage3 the shipped step total with the ViT unfrozen for half of it (stage 3 helped VQA most)
  big        four times the batch and as many steps as the time limits allow: where more compute leads
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from janusflow_core.training import shapes_recipe  # noqa: E402
from janusflow_core.training.shapes_recipe import Recipe  # noqa: E402

SHIPPED_STEPS = (60, 3207, 956)  # what the shipped model's time-limited stages reached on 2 CPU cores


def _steps(recipe: Recipe, steps: tuple[int, ...], limits: tuple[float, ...], snapshot_every: int,
           warmup_scale: float = 1.0) -> Recipe:
    stages = tuple(replace(s, steps=n, time_limit_s=lim, snapshot_every=snapshot_every if s.stage > 1 else 0,
                           checkpoint_every=max(200, n // 4), warmup_steps=round(s.warmup_steps * warmup_scale))
                   for s, n, lim in zip(recipe.stages, steps, limits))
    return replace(recipe, stages=stages)


def variant(name: str, seconds: tuple[float, float], snapshot_every: int, scale: float = 1.0) -> Recipe:
    """The recipe of one variant; ``seconds`` are the time limits of stages 2 and 3, ``scale`` multiplies
    every step count (a quick smoke run)."""
    base = Recipe()
    limits = (0.0, *seconds)

    def n(steps: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(max(2, round(s * scale)) for s in steps)

    if name == "repa":
        return _steps(base, n(SHIPPED_STEPS), limits, snapshot_every)
    if name == "norepa":
        return _steps(base.with_stage_fields(repa_weight=0.0), n(SHIPPED_STEPS), limits, snapshot_every)
    if name == "repa1":
        return _steps(base.with_stage_fields(repa_weight=1.0), n(SHIPPED_STEPS), limits, snapshot_every)
    if name == "big":
        big = replace(base, stages=tuple(replace(s, batch_und=4 * s.batch_und, batch_gen=4 * s.batch_gen,
                                                 batch_text=4 * s.batch_text) for s in base.stages))
        return _steps(big, n((60, 40000, 12000)), limits, snapshot_every)
    if name == "longstage3":
        total = SHIPPED_STEPS[1] + SHIPPED_STEPS[2]
        return _steps(base, n((60, total // 2, total - total // 2)), limits, snapshot_every)
    raise SystemExit(f"unknown variant {name!r}; choose repa, norepa, repa1, longstage3 or big")


def train(args) -> None:
    work = Path(args.work) / args.variant
    work.mkdir(parents=True, exist_ok=True)
    for part in ("tokenizer", "vae", "siglip.pt"):
        src, dst = Path(args.base) / part, work / part
        if not dst.exists():
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    recipe = variant(args.variant, (args.stage2_s, args.stage3_s), args.snapshot_every, args.scale)
    recipe = replace(recipe, und_pool=max(64, round(recipe.und_pool * args.pool_scale)),
                     gen_pool=max(64, round(recipe.gen_pool * args.pool_scale)))
    t = time.time()
    summary = shapes_recipe.run(recipe, work / "export", work, progress=False)
    steps = summary.get("steps", {})
    (work / "study.json").write_text(json.dumps({"variant": args.variant, "seconds": round(time.time() - t, 1),
                                                 "steps": steps, "times_s": summary["times_s"]}) + "\n")
    print(f"{args.variant}: done in {time.time() - t:.0f} s, steps {steps}", flush=True)


def score(args) -> None:
    """Score snapshots as they appear (small evaluation) and finished exports (full evaluation) until
    every variant is done or the deadline passes; one JSON line per result."""
    from janusflow_core.training.report import score_model, snapshot_folders

    out = Path(args.scores)
    out.parent.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()

    def evaluate(folder: Path, per_task: int, n: int, extra: dict) -> None:
        rec = {**extra, **score_model(folder, per_task, n, seed=0, device=args.device)}
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps({k: rec[k] for k in ("variant", "what", "geneval", "vqa")}), flush=True)

    while time.time() < args.until:
        progressed = False
        runs = sorted(p for p in Path(args.work).glob("*") if (p / "siglip.pt").exists()
                      and (not args.only or p.name == args.only))
        for run_dir in runs:
            for folder in snapshot_folders(run_dir):
                key = f"{run_dir.name}/{folder.name}"
                if key in done or time.time() > args.until:
                    continue
                meta = json.loads((folder / "snapshot.json").read_text())
                evaluate(folder, args.snap_per_task, args.snap_n, {"variant": run_dir.name, "what": folder.name,
                                                                    **meta})
                done.add(key)
                progressed = True
            final = run_dir / "study.json"
            key = f"{run_dir.name}/export"
            if final.exists() and key not in done and time.time() < args.until:
                evaluate(run_dir / "export", args.per_task, args.n,
                         {"what": "export", **json.loads(final.read_text())})
                done.add(key)
                progressed = True
        if runs and all(f"{r.name}/export" in done for r in runs) and len(runs) >= args.expect:
            return
        if not progressed:
            time.sleep(2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--variant", required=True)
    t.add_argument("--base", required=True, help="work folder holding tokenizer/, vae/ and siglip.pt")
    t.add_argument("--work", required=True)
    t.add_argument("--stage2-s", type=float, default=0.0)
    t.add_argument("--stage3-s", type=float, default=0.0)
    t.add_argument("--snapshot-every", type=int, default=800)
    t.add_argument("--scale", type=float, default=1.0, help="multiply every step count (smoke runs)")
    t.add_argument("--pool-scale", type=float, default=1.0, help="multiply the data pools' sizes (smoke runs)")
    s = sub.add_parser("score")
    s.add_argument("--work", required=True)
    s.add_argument("--scores", required=True)
    s.add_argument("--device", default="cpu")
    s.add_argument("--until", type=float, required=True, help="unix time after which nothing new is started")
    s.add_argument("--expect", type=int, default=1, help="number of variants to wait for")
    s.add_argument("--only", default=None, help="score this variant only (one scorer per variant)")
    s.add_argument("--per-task", type=int, default=24)
    s.add_argument("--n", type=int, default=200)
    s.add_argument("--snap-per-task", type=int, default=12)
    s.add_argument("--snap-n", type=int, default=100)
    args = ap.parse_args(argv)
    train(args) if args.command == "train" else score(args)


if __name__ == "__main__":
    main()
