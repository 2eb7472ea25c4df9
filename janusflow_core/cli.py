"""Command line: ``python -m janusflow_core generate|chat``.

    generate --model M --prompt "..." [--steps 30] [--cfg 2] [--seed 0] [--num-images 1] --out DIR
             writes DIR/0.png ...
    generate --model M --prompts-file IN.jsonl --out DIR
             each line {"prompt": str, "seed": int} (+ optional "steps", "cfg", "num_images");
             image k of line i is written to DIR/{i}_{k}.png
    chat --model M [--image F ...] --question "..."      streams the answer to stdout
    chat --model M --questions-file IN.jsonl              each line {"image": path, "question": str}
             (image optional); stdout gets one line {"answer": str} per input line, in order, and nothing else

Unset steps/CFG come from the model folder's recommended sampling settings. --model defaults to the
embedded shapes model in assets/. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("janusflow_core")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder or hub id (default: the embedded shapes model)")
    p.add_argument("--vae", default=None, help="VAE folder or hub id (default: <model>/vae, else stabilityai/sdxl-vae)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--load-8bit", action="store_true", help="8-bit LLM weights (CUDA + bitsandbytes)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m janusflow_core", description="JanusFlow: generate images or chat.")
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="text -> image(s)")
    _add_model_args(g)
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt")
    src.add_argument("--prompts-file", type=Path)
    g.add_argument("--steps", type=int, default=None)
    g.add_argument("--cfg", type=float, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--num-images", type=int, default=1)
    g.add_argument("--sampler", default="euler", choices=["euler", "heun"])
    g.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("chat", help="image(s) + question -> streamed answer")
    _add_model_args(c)
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--question")
    src.add_argument("--questions-file", type=Path)
    c.add_argument("--image", action="append", default=[], help="an image file (repeat for several)")
    c.add_argument("--max-new-tokens", type=int, default=None,
                   help="default 512 for --question, 64 for --questions-file (one-word benchmark answers)")
    c.add_argument("--temperature", type=float, default=0.0)
    c.add_argument("--top-p", type=float, default=0.95)
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--batch-size", type=int, default=16, help="questions answered together (--questions-file)")
    return ap


def _read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not valid JSON ({exc})") from exc
        missing = [k for k in required if k not in row]
        if not isinstance(row, dict) or missing:
            raise ValueError(f"{path}:{n}: each line must be an object with {', '.join(required)}; missing {missing}")
        rows.append(row)
    return rows


def _load(args: argparse.Namespace) -> Any:
    from .checkpoint import load_pretrained

    t = time.perf_counter()
    bundle = load_pretrained(args.model, device=args.device, dtype=args.dtype, vae=args.vae, load_8bit=args.load_8bit)
    log.info("loaded %s on %s (%s) in %.1f s", bundle.name, bundle.device, str(bundle.dtype).removeprefix("torch."),
             time.perf_counter() - t)
    return bundle


def cmd_generate(args: argparse.Namespace) -> int:
    from .pipelines import GenerationPipeline, check_generation_inputs

    if args.prompts_file is not None:
        jobs = _read_jsonl(args.prompts_file, ("prompt", "seed"))
        names = [[f"{i}_{k}.png" for k in range(int(j.get("num_images", 1)))] for i, j in enumerate(jobs)]
    else:
        jobs = [{"prompt": args.prompt, "seed": args.seed, "num_images": args.num_images}]
        names = [[f"{k}.png" for k in range(args.num_images)]]
    for job, files in zip(jobs, names):  # before the model loads, naming fields as the flags and JSONL keys do
        check_generation_inputs(job["prompt"], job.get("steps", args.steps), job.get("cfg", args.cfg), len(files),
                                job.get("sampler", args.sampler), job["seed"], names={"guidance_scale": "cfg"})
    bundle = _load(args)
    pipe = GenerationPipeline(bundle)
    args.out.mkdir(parents=True, exist_ok=True)
    for job, files in zip(jobs, names):
        result = pipe(job["prompt"], steps=job.get("steps", args.steps), guidance_scale=job.get("cfg", args.cfg),
                      seed=int(job["seed"]), num_images=len(files), sampler=job.get("sampler", args.sampler))
        for img, name in zip(result.images, files):
            img.save(args.out / name)
        log.info("%r: %d image(s), %d steps, cfg %.2f, %.2f s", job["prompt"], len(files), result.steps,
                 result.guidance_scale, result.seconds)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .pipelines import ChatPipeline
    from .processing import load_image

    if args.questions_file is not None:
        jobs = _read_jsonl(args.questions_file, ("question",))
        images = [[load_image(j["image"])] if j.get("image") else None for j in jobs]
        bundle = _load(args)
        chat = ChatPipeline(bundle)
        max_new = args.max_new_tokens or 64
        for start in range(0, len(jobs), args.batch_size):
            part = slice(start, start + args.batch_size)
            answers = chat.answer_batch([j["question"] for j in jobs[part]], images[part], max_new_tokens=max_new)
            for a in answers:
                sys.stdout.write(json.dumps({"answer": a}) + "\n")
            sys.stdout.flush()
        return 0
    images = [load_image(p) for p in args.image]
    bundle = _load(args)
    chat = ChatPipeline(bundle)
    stats: dict[str, Any] = {}
    for piece in chat.stream([{"role": "user", "content": args.question}], images or None,
                             max_new_tokens=args.max_new_tokens or 512, temperature=args.temperature, top_p=args.top_p,
                             seed=args.seed, stats=stats):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    log.info("%d tokens in %.2f s (%.1f tokens/s)", stats.get("new_tokens", 0), stats.get("seconds", 0.0),
             stats.get("tokens_per_s", 0.0))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    try:
        return cmd_generate(args) if args.command == "generate" else cmd_chat(args)
    except (ValueError, FileNotFoundError, RuntimeError, NotADirectoryError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
