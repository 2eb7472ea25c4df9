"""Seconds per training step of the shapes recipe, by precision, in one run (so the ratios compare).

Each setting trains a fresh shapes model (random init, the shipped model's tokenizer and VAE) for
``--warmup`` steps, then times ``--steps`` more, with one process's share of a recipe stage's global batch
(the recipe runs two processes). It answers "does bf16 autocast pay on this CPU?" and "how fast is this
machine against the one the docs' figures came from?" without a full training run.

    python -m bench.train_step_time --precision no --precision bf16 [--stage 2] [--threads 1] \
        [--llm-hidden 192] [--llm-layers 6] [--out bench/results/train-step-time.jsonl]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from janusflow_core.modeling import JanusFlowModel
from janusflow_core.processing import JanusFlowProcessor
from janusflow_core.training.data import build_generation_pool, build_understanding_pool
from janusflow_core.training.shapes_recipe import Recipe
from janusflow_core.training.trainer import Trainer
from janusflow_core.vae import VAE

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "janusflow-shapes"


def cpu_info() -> dict:
    """The CPU's model name and the matmul-relevant flags it has (Linux; empty elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {"cpu": platform.machine(), "cpu_flags": []}
    field = lambda key: next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(key)), "")  # noqa: E731
    flags = {"avx2", "avx512f", "avx512_bf16", "amx_bf16"} & set(field("flags").split())
    return {"cpu": field("model name") or platform.machine(), "cpu_flags": sorted(flags)}


def step_time(precision: str, stage: int, processes: int, warmup: int, steps: int, model_dir: Path,
              llm_hidden: int | None = None, llm_layers: int | None = None) -> dict:
    from transformers import AutoTokenizer

    recipe = replace(Recipe(), llm_hidden=llm_hidden or Recipe.llm_hidden, llm_layers=llm_layers or Recipe.llm_layers)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cfg = recipe.model_config(len(tokenizer))
    processor = JanusFlowProcessor.for_model(cfg, tokenizer, system_prompt="")
    vae = VAE.from_pretrained(model_dir / "vae")
    und, gen = build_understanding_pool(200, 0), build_generation_pool(300, 0, vae.encode)
    stage_cfg = next(s for s in recipe.stages if s.stage == stage)
    share = lambda b: -(-b // processes)  # noqa: E731  one process's part of the global batch, as the recipe splits it
    stage_cfg = replace(stage_cfg, mixed_precision=precision, steps=warmup + steps, time_limit_s=0,
                        batch_und=share(stage_cfg.batch_und), batch_gen=share(stage_cfg.batch_gen),
                        batch_text=share(stage_cfg.batch_text), checkpoint_every=10**9, snapshot_every=0)
    torch.manual_seed(0)
    model = JanusFlowModel(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, processor, stage_cfg, tmp, und, gen, progress=False)
        trainer.train(resume=False, stop_at=warmup)
        t0 = time.perf_counter()
        result = trainer.train(resume=False, stop_at=warmup + steps)
        seconds = time.perf_counter() - t0
    return {"precision": precision, "stage": stage, "llm": [recipe.llm_hidden, recipe.llm_layers],
            "threads": torch.get_num_threads(),
            "batch": [stage_cfg.batch_und, stage_cfg.batch_gen, stage_cfg.batch_text],
            "s_per_step": round(seconds / steps, 4), "loss_end": round(result["last"]["loss"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precision", action="append", choices=["no", "bf16"], default=None,
                    help="autocast setting to time (repeat the flag to compare; default: no and bf16)")
    ap.add_argument("--stage", type=int, choices=[2, 3], default=2)
    ap.add_argument("--processes", type=int, default=2, help="the recipe's process count the batch is split over")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--llm-hidden", type=int, default=None, help=f"LLM width (default {Recipe.llm_hidden})")
    ap.add_argument("--llm-layers", type=int, default=None, help=f"LLM depth (default {Recipe.llm_layers})")
    ap.add_argument("--model", type=Path, default=SHIPPED, help="folder with the tokenizer and vae/ to use")
    ap.add_argument("--out", type=Path, default=None, help="append one JSON line per setting")
    args = ap.parse_args()
    if not (args.model / "vae" / "config.json").exists():
        raise SystemExit(f"--model {args.model}: no vae/config.json there (a shapes model folder is needed)")
    precisions = args.precision or ["no", "bf16"]
    if len(precisions) > 1:  # accelerate fixes the precision once per process: one child process per setting
        common = ["--stage", str(args.stage), "--processes", str(args.processes), "--threads", str(args.threads),
                  "--warmup", str(args.warmup), "--steps", str(args.steps), "--model", str(args.model)]
        common += ["--llm-hidden", str(args.llm_hidden)] if args.llm_hidden else []
        common += ["--llm-layers", str(args.llm_layers)] if args.llm_layers else []
        common += ["--out", str(args.out)] if args.out else []
        for precision in precisions:
            itself = ["-m", __spec__.name] if __spec__ else [__file__]  # as it was started
            subprocess.run([sys.executable, *itself, *common, "--precision", precision], check=True)
        return
    torch.set_num_threads(args.threads)
    row = {**step_time(precisions[0], args.stage, args.processes, args.warmup, args.steps, args.model,
                       args.llm_hidden, args.llm_layers),
           **cpu_info(), "torch": torch.__version__}
    print(json.dumps(row), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
