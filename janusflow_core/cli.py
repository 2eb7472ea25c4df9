"""Command line: ``python -m janusflow_core generate|chat``.

    generate --model M --prompt "..." [--steps 30] [--cfg 2] [--seed 0] [--num-images 1] --out DIR
             writes DIR/0.png ...
             [--init-image PATH --strength S] [--negative-prompt TEXT] [--shift S]
             [--guidance-interval LO HI] [--guidance cfg|cfg-zero-star|apg]
    generate --model M --prompts-file IN.jsonl --out DIR
             each line {"prompt": str, "seed": int} (+ optional "steps", "cfg", "num_images", "sampler",
             "init_image", "strength", "negative_prompt", "shift", "guidance_interval" ([lo, hi]),
             "guidance"; unset ones come from the flags; image paths are read as given, relative to the
             current folder);
             image k of line i is written to DIR/{i}_{k}.png
    chat --model M [--image F ...] --question "..."      streams the answer to stdout
    chat --model M --questions-file IN.jsonl              each line {"image": path, "question": str}
             (image optional); stdout gets one line {"answer": str} per input line, in order, and nothing else

Unset steps/CFG come from the model folder's recommended sampling settings. --model defaults to the
embedded shapes model in assets/. Logs go to stderr.

Every value (flags, each line of the JSONL files, the images, --out) is checked against
janusflow_core.limits before the model loads. Exit status: 0 done; 2 refused or unreadable input (one
``error: ...`` line on stderr saying what was wrong and what is allowed); 1 a --question whose answer is
empty (stdout gets an empty line, stderr says so: an empty answer is not a success), or a bug. With
--questions-file empty answers stay in the output as {"answer": ""} (a wrong answer to score) and stderr
counts them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import limits
from .errors import EXIT_INPUT, OneLineParser, run_guarded
from .limits import InputError
from .sampling.guidance import GUIDANCE

log = logging.getLogger("janusflow_core")

BATCH_SIZE = (1, 256)  # --batch-size of --questions-file
PROMPT_KEYS = ("prompt", "seed", "steps", "cfg", "num_images", "sampler", "init_image", "strength", "negative_prompt",
               "shift", "guidance_interval", "guidance")
OPTION_KEYS = ("init_image", "strength", "negative_prompt", "shift", "guidance_interval", "guidance")
QUESTION_KEYS = ("question", "image")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder or hub id (default: the embedded shapes model)")
    p.add_argument("--vae", default=None, help="VAE folder or hub id (default: <model>/vae, else stabilityai/sdxl-vae)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--load-8bit", action="store_true", help="8-bit LLM weights (CUDA + bitsandbytes)")


def _limit(bounds: tuple[float, float]) -> str:
    return f"{bounds[0]:g}..{bounds[1]:g}"


def _parser() -> argparse.ArgumentParser:
    # Numbers are taken as text and checked by janusflow_core.limits (same words as the pipelines and the app).
    ap = OneLineParser(prog="python -m janusflow_core", description="JanusFlow: generate images or chat.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    g = sub.add_parser("generate", help="text -> image(s)")
    _add_model_args(g)
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt")
    src.add_argument("--prompts-file", type=Path)
    g.add_argument("--steps", default=None, help=f"{_limit(limits.STEPS)} (default: the model's sampling.json)")
    g.add_argument("--cfg", default=None, help=f"{_limit(limits.GUIDANCE)} (default: the model's sampling.json)")
    g.add_argument("--seed", default="0", help=f"0..{limits.SEED[1]}; image k uses seed + k")
    g.add_argument("--num-images", default="1", help=_limit(limits.IMAGES))
    g.add_argument("--sampler", default="euler", choices=["euler", "heun"])
    g.add_argument("--init-image", dest="init_image", default=None, metavar="PATH",
                   help="image-to-image: start from this picture (resized and centre-cropped to the model's "
                   "resolution)")
    g.add_argument("--strength", default="1", help="with --init-image: how much to change it, above 0 and at most "
                   "1 (1 = ignore the picture, as text-to-image)")
    g.add_argument("--negative-prompt", dest="negative_prompt", default=None, metavar="TEXT",
                   help="what the unconditional CFG rows encode instead of the empty prompt")
    g.add_argument("--shift", default="1", help=f"SD3 time shift of the step grid, {_limit(limits.SHIFT)}; 1 = the "
                   "official uniform grid, above 1 more steps near the noise")
    g.add_argument("--guidance-interval", dest="guidance_interval", nargs=2, default=["0", "1"],
                   metavar=("LO", "HI"), help="guidance only for steps starting at t in [LO, HI] (t = 0 noise, "
                   "1 image); the other steps run the conditional rows alone (default: 0 1)")
    g.add_argument("--guidance", default="cfg", help=f"guidance rule: {' | '.join(GUIDANCE)} (default: cfg)")
    g.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    c = sub.add_parser("chat", help="image(s) + question -> streamed answer")
    _add_model_args(c)
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--question")
    src.add_argument("--questions-file", type=Path)
    c.add_argument("--image", action="append", default=[],
                   help=f"an image file (repeat for several, at most {limits.MAX_IMAGES_PER_MESSAGE})")
    c.add_argument("--max-new-tokens", default=None, help=f"{_limit(limits.MAX_NEW_TOKENS)}; default 512 for "
                   "--question, 64 for --questions-file (one-word benchmark answers)")
    c.add_argument("--temperature", default="0", help=f"{_limit(limits.TEMPERATURE)}; 0 = greedy")
    c.add_argument("--top-p", default="0.95", help=_limit(limits.TOP_P))
    c.add_argument("--seed", default=None, help=f"0..{limits.SEED[1]} (sampling with --temperature > 0)")
    c.add_argument("--batch-size", default="16", help=f"questions answered together (--questions-file), "
                   f"{_limit(BATCH_SIZE)}")
    return ap


# -- checks that run before the model loads -----------------------------------------------------------

def _read_jsonl(path: Path, required: tuple[str, ...], allowed: tuple[str, ...]) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; any bad line is an InputError naming file:line."""
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a JSONL file (one JSON object per line)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte {exc.start}); give a JSONL file") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InputError(f"{path}:{n}: not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{n}: each line must be a JSON object with {', '.join(required)}; "
                             f"got {type(row).__name__}")
        missing = [k for k in required if k not in row]
        unknown = sorted(k for k in row if k not in allowed)
        if missing or unknown:
            what = f"missing {', '.join(missing)}" if missing else f"unknown key(s) {', '.join(map(repr, unknown))}"
            raise InputError(f"{path}:{n}: {what}; allowed keys: {', '.join(allowed)} (required: "
                             f"{', '.join(required)})")
        rows.append((n, row))
    if not rows:
        raise InputError(f"{path} has no lines; give one JSON object per line")
    return rows


def _check_out_dir(out: Path) -> None:
    """--out must be a folder or creatable as one, and writable; checked before the model loads."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder; give a folder (it is created if missing)")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"--out {out} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"--out {out} cannot be written: no write permission in {parent}")


def check_device(device: str) -> None:
    """Refuse a device string torch cannot parse, or a device this machine lacks, before anything loads."""
    from .checkpoint import pick_device

    try:
        pick_device(device)
    except RuntimeError as exc:
        if "Expected one of" in str(exc) or "Invalid device" in str(exc) or "device string" in str(exc):
            raise InputError(f"--device {device!r} is not a device; allowed: auto, cpu, cuda, cuda:N, mps") from None
        raise


CLI_NAMES = {"guidance_scale": "cfg"}  # the weight's name on the command line and in JSONL rows


def _options(source: dict[str, Any], args: argparse.Namespace) -> Any:
    """The checked GenerationOptions of a job: ``source``'s keys over the flags; the init image is read now."""
    from .pipelines import check_generation_options

    given = {k: source.get(k, getattr(args, k)) for k in OPTION_KEYS}
    options = check_generation_options(**given, names=CLI_NAMES)
    if options.init_image is None and options.strength != 1.0:
        raise InputError(f"strength {options.strength:g} needs an init image (--init-image, or \"init_image\" in "
                         "the line); without one leave it at 1")
    return options


def _generation_jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every job checked against the limits: [{prompt, steps, cfg, num_images, sampler, seed, options, names,
    where}]."""
    from .pipelines import check_generation_inputs

    if args.prompts_file is None:
        steps, cfg, n, seed = check_generation_inputs(args.prompt, args.steps, args.cfg, args.num_images,
                                                      args.sampler, args.seed, names=CLI_NAMES)
        return [{"prompt": args.prompt, "steps": steps, "cfg": cfg, "num_images": n, "sampler": args.sampler,
                 "seed": seed, "options": _options({}, args), "names": [f"{k}.png" for k in range(n)], "where": ""}]
    # flags give the defaults of the file's rows; they are checked once, here (the init image too)
    check_generation_inputs("-", args.steps, args.cfg, args.num_images, args.sampler, 0, names=CLI_NAMES)
    from .pipelines import check_generation_options

    flag_options = check_generation_options(**{k: getattr(args, k) for k in OPTION_KEYS}, names=CLI_NAMES)
    args.init_image = flag_options.init_image  # read once, shared by every line that does not name its own
    jobs = []
    for i, (line, row) in enumerate(_read_jsonl(args.prompts_file, ("prompt", "seed"), PROMPT_KEYS)):
        where = f"{args.prompts_file}:{line}: "
        try:
            sampler = row.get("sampler", args.sampler)
            steps, cfg, n, seed = check_generation_inputs(
                row["prompt"], row.get("steps", args.steps), row.get("cfg", args.cfg),
                row.get("num_images", args.num_images), sampler, row["seed"], names=CLI_NAMES)
            options = _options(row, args)
        except InputError as exc:
            raise InputError(f"{where}{exc}") from None
        jobs.append({"prompt": row["prompt"], "steps": steps, "cfg": cfg, "num_images": n, "sampler": sampler,
                     "seed": seed, "options": options, "names": [f"{i}_{k}.png" for k in range(n)], "where": where})
    return jobs


def _check_chat_args(args: argparse.Namespace) -> None:
    from .pipelines import check_chat_inputs

    default = 64 if args.questions_file is not None else 512
    args.max_new_tokens, args.temperature, args.top_p, args.seed = check_chat_inputs(
        default if args.max_new_tokens is None else args.max_new_tokens, args.temperature, args.top_p, args.seed)
    args.batch_size = limits.check_number("--batch-size", args.batch_size, BATCH_SIZE, integer=True)
    if args.questions_file is not None and args.image:
        raise InputError("--image goes with --question; with --questions-file give each line's \"image\"")
    if len(args.image) > limits.MAX_IMAGES_PER_MESSAGE:
        raise InputError(f"{len(args.image)} --image files; the limit is {limits.MAX_IMAGES_PER_MESSAGE} per question")
    if args.question is not None:
        limits.check_text("the question", args.question)


def _questions(args: argparse.Namespace) -> list[tuple[str, list[Any] | None]]:
    """(question, [image] or None) per line of --questions-file, every image opened and checked now."""
    from .processing import load_image

    out = []
    for line, row in _read_jsonl(args.questions_file, ("question",), QUESTION_KEYS):
        where = f"{args.questions_file}:{line}: "
        try:
            question = limits.check_text("the question", row["question"])
            image = row.get("image")
            if image is not None and not isinstance(image, str):
                raise InputError(f"\"image\" must be a file path (text) or null, got {type(image).__name__}")
            out.append((question, [load_image(image)] if image else None))
        except (InputError, OSError) as exc:
            message = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InputError(f"{where}{message}") from None
    return out


# -- the commands -----------------------------------------------------------------------------------

def _load(args: argparse.Namespace) -> Any:
    from .checkpoint import load_pretrained

    t = time.perf_counter()
    bundle = load_pretrained(args.model, device=args.device, dtype=args.dtype, vae=args.vae, load_8bit=args.load_8bit)
    log.info("loaded %s on %s (%s) in %.1f s", bundle.name, bundle.device, str(bundle.dtype).removeprefix("torch."),
             time.perf_counter() - t)
    return bundle


def cmd_generate(args: argparse.Namespace) -> int:
    from .pipelines import GenerationPipeline

    jobs = _generation_jobs(args)
    _check_out_dir(args.out)
    check_device(args.device)
    bundle = _load(args)
    pipe = GenerationPipeline(bundle)
    args.out.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        try:
            o = job["options"]
            result = pipe(job["prompt"], steps=job["steps"], guidance_scale=job["cfg"], seed=job["seed"],
                          num_images=job["num_images"], sampler=job["sampler"], init_image=o.init_image,
                          strength=o.strength, negative_prompt=o.negative_prompt, shift=o.shift,
                          guidance_interval=o.guidance_interval, guidance=o.guidance)
        except InputError as exc:  # what needs the tokenizer (prompts' lengths in tokens)
            raise InputError(f"{job['where']}{exc}") from None
        for img, name in zip(result.images, job["names"]):
            img.save(args.out / name)
        log.info("%r: %d image(s), %d of %d steps, cfg %.2f (%s), %.2f s", job["prompt"], len(job["names"]),
                 result.steps_planned, result.steps, result.guidance_scale, o.guidance, result.seconds)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .pipelines import ChatPipeline
    from .processing import load_image

    _check_chat_args(args)
    if args.questions_file is not None:
        jobs = _questions(args)
        check_device(args.device)
        chat = ChatPipeline(_load(args))
        empty = 0
        for start in range(0, len(jobs), args.batch_size):
            part = jobs[start:start + args.batch_size]
            answers = chat.answer_batch([q for q, _ in part], [i for _, i in part], max_new_tokens=args.max_new_tokens)
            for a in answers:
                empty += not a
                sys.stdout.write(json.dumps({"answer": a}) + "\n")
            sys.stdout.flush()
        if empty:
            log.warning("warning: %d of %d answers are empty (the model ended them at once)", empty, len(jobs))
        return 0
    images = [load_image(p) for p in args.image]
    check_device(args.device)
    chat = ChatPipeline(_load(args))
    stats: dict[str, Any] = {}
    answered = False
    for piece in chat.stream([{"role": "user", "content": args.question}], images or None,
                             max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                             seed=args.seed, stats=stats):
        answered = answered or bool(piece.strip())
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    log.info("%d tokens in %.2f s (%.1f tokens/s)", stats.get("new_tokens", 0), stats.get("seconds", 0.0),
             stats.get("tokens_per_s", 0.0))
    if not answered:
        print(f"error: the model's answer is empty ({stats.get('new_tokens', 0)} token(s), no text)", file=sys.stderr)
        return 1
    return 0


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (so in-process callers that swap it see the logs)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _log_to_stderr() -> None:
    """This package's INFO logs to stderr (other libraries keep their own settings)."""
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        log.addHandler(_StderrHandler())
    log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done; 2 refused input or a load error (one ``error:`` line on stderr, nothing loaded
    when the arguments or input files are wrong); 1 an empty chat answer, or a bug (one line too)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed as one line)
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    _log_to_stderr()
    return run_guarded(lambda: cmd_generate(args) if args.command == "generate" else cmd_chat(args))
