"""Command line for the shapes-world benchmarks.

    python -m janusflow_core.evaluation geneval [--model M] [--per-task 24] [--images-per-prompt 1]
        [--steps S] [--cfg W] [--seed 0] [--split test] [--out report.json] [--save-images DIR]
    python -m janusflow_core.evaluation vqa [--model M] [--n 200] [--seed 0] [--out report.json]
    python -m janusflow_core.evaluation vae [--model M] [--per-task 20] [--seed 0]   (VAE round-trip ceiling)
    python -m janusflow_core.evaluation newshape --model M --shape NAME --reference GEN_DIR [--und-data FILE]
        [--images-per-prompt 8] [--seed 0] [--out report.json]   (a fine-tune that taught a new shape)

A readable table goes to stderr; the JSON report to ``--out``, or to stdout without it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import limits
from ..errors import OneLineParser, run_guarded
from ..limits import InputError
from . import benchmarks


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m janusflow_core.evaluation", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="benchmark", required=True, parser_class=OneLineParser)
    benchmarks_help = (("geneval", "GenEval-style generation benchmark"), ("vqa", "one-word VQA benchmark"),
                       ("vae", "geneval check of rendered scenes after a VAE round trip (the VAE's ceiling)"),
                       ("newshape", "a new shape taught by fine-tuning: generation and 'What shape' answers"))
    for name, help_text in benchmarks_help:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--model", default=None, help="checkpoint folder or hub id (default: the embedded model)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default=None)
        p.add_argument("--dtype", default=None, help="auto (default), float32, bfloat16 or float16")
        p.add_argument("--out", default=None, help="write the JSON report here instead of stdout")
        p.add_argument("--quiet", action="store_true", help="no progress lines")
        if name == "geneval":
            p.add_argument("--per-task", type=int, default=24)
            p.add_argument("--images-per-prompt", type=int, default=1)
            p.add_argument("--steps", type=int, default=None, help="default: the model's recommendation")
            p.add_argument("--cfg", type=float, default=None, help="default: the model's recommendation")
            p.add_argument("--sampler", default="euler", choices=["euler", "heun"],
                           help="ODE solver (heun costs two velocity evaluations per step)")
            p.add_argument("--split", default="test", choices=["test", "train"])
            p.add_argument("--save-images", default=None, metavar="DIR")
        elif name == "vae":
            p.add_argument("--per-task", type=int, default=20)
        elif name == "newshape":
            p.add_argument("--shape", required=True, help="the shape word taught, e.g. ring")
            p.add_argument("--reference", required=True, metavar="GEN_DIR",
                           help="a generation folder of the fine-tuning data: its 'a {shape}' / 'a {color} {shape}' "
                                "images teach the scorer the shape")
            p.add_argument("--und-data", default=None, metavar="FILE",
                           help="held-out conversations (LLaVA .json/.jsonl): the first question of each is asked")
            p.add_argument("--images-per-prompt", type=int, default=8)
            p.add_argument("--max-new-tokens", type=int, default=16)
            p.add_argument("--save-images", default=None, metavar="DIR")
        else:
            p.add_argument("--n", type=int, default=200)
            p.add_argument("--max-new-tokens", type=int, default=16)
    return parser


def _check(args: argparse.Namespace) -> None:
    """Every value checked before a model loads (benchmark runs are long: fail at once, not after loading)."""
    if args.out is not None:
        out = Path(args.out)
        if out.is_dir():
            raise InputError(f"--out {out} is a folder; give a file path for the JSON report")
        if not out.parent.is_dir():
            raise InputError(f"--out {out}: the folder {out.parent} does not exist")
    if args.benchmark == "geneval":
        limits.check_number("--per-task", args.per_task, (1, 10_000), integer=True)
        limits.check_number("--images-per-prompt", args.images_per_prompt, limits.IMAGES, integer=True)
        # the k-th prompt uses noise seed seed * 100000 + k, which must stay within limits.SEED
        limits.check_number("--seed", args.seed, (0, (limits.SEED[1] - 99_999) // 100_000), integer=True)
        if args.steps is not None:
            limits.check_number("--steps", args.steps, limits.STEPS, integer=True)
        if args.cfg is not None:
            limits.check_number("--cfg", args.cfg, limits.GUIDANCE)
        if args.save_images is not None and Path(args.save_images).exists() and not Path(args.save_images).is_dir():
            raise InputError(f"--save-images {args.save_images} exists and is not a folder")
    elif args.benchmark == "vae":
        limits.check_number("--per-task", args.per_task, (1, 10_000), integer=True)
        limits.check_number("--seed", args.seed, limits.SEED, integer=True)
    elif args.benchmark == "newshape":
        limits.check_text("--shape", args.shape, max_chars=100)
        if not Path(args.reference).is_dir():
            raise InputError(f"--reference {args.reference}: no such folder (a generation folder with metadata.jsonl)")
        if args.und_data is not None and not Path(args.und_data).is_file():
            raise InputError(f"--und-data {args.und_data}: no such file")
        limits.check_number("--images-per-prompt", args.images_per_prompt, limits.IMAGES, integer=True)
        limits.check_number("--max-new-tokens", args.max_new_tokens, limits.MAX_NEW_TOKENS, integer=True)
        limits.check_number("--seed", args.seed, limits.SEED, integer=True)
        if args.save_images is not None and Path(args.save_images).exists() and not Path(args.save_images).is_dir():
            raise InputError(f"--save-images {args.save_images} exists and is not a folder")
    else:
        limits.check_number("--n", args.n, (1, 100_000), integer=True)
        limits.check_number("--max-new-tokens", args.max_new_tokens, limits.MAX_NEW_TOKENS, integer=True)
        limits.check_number("--seed", args.seed, limits.SEED, integer=True)


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark ``args`` names; print the table (stderr) and the JSON report (``--out`` or stdout)."""
    _check(args)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    if args.benchmark == "geneval":
        generate = benchmarks.make_generator(args.model, args.device, args.dtype, args.steps, args.cfg, args.sampler)
        report = benchmarks.run_geneval(
            generate,
            per_task=args.per_task,
            images_per_prompt=args.images_per_prompt,
            seed=args.seed,
            split=args.split,
            save_images=args.save_images,
            log=log,
        )
        report["settings"].update(model=args.model, steps=args.steps, cfg=args.cfg, sampler=args.sampler)
        table = benchmarks.geneval_table(report)
    elif args.benchmark == "newshape":
        from . import new_shape

        if args.images_per_prompt < 1:
            raise SystemExit(f"--images-per-prompt must be at least 1, got {args.images_per_prompt}")
        round_trip = benchmarks.make_reconstructor(args.model)
        templates, seen = new_shape.reference_templates(args.reference, args.shape, transform=round_trip)
        generate = benchmarks.make_generator(args.model, args.device, args.dtype)
        report = {"benchmark": "newshape", "shape": args.shape,
                  "generation": new_shape.run_generation(generate, args.shape, templates, seen,
                                                         args.images_per_prompt, args.seed, args.save_images),
                  "understanding": None, "settings": {"model": args.model, "reference": args.reference,
                                                      "und_data": args.und_data, "seed": args.seed,
                                                      "images_per_prompt": args.images_per_prompt}}
        report["generation"]["vae_ceiling"] = new_shape.vae_ceiling(args.reference, args.shape, templates, round_trip)
        if args.und_data:
            answer = benchmarks.make_answerer(args.model, args.device, args.dtype, args.max_new_tokens)
            report["understanding"] = new_shape.run_understanding(answer, args.und_data, args.shape)
        table = new_shape.table(report)
    elif args.benchmark == "vae":
        report = benchmarks.run_vae_roundtrip(benchmarks.make_reconstructor(args.model), args.per_task, args.seed)
        report["settings"].update(model=args.model)
        rows = [("task", "passes"), *((t, f"{v:.3f}") for t, v in report["per_task"].items()),
                ("overall", f"{report['overall']:.3f}")]
        table = "\n".join(f"{a:<15} {b:>7}" for a, b in rows)
    else:
        answer = benchmarks.make_answerer(args.model, args.device, args.dtype, args.max_new_tokens)
        report = benchmarks.run_vqa(answer, n=args.n, seed=args.seed, log=log)
        report["settings"].update(model=args.model)
        table = benchmarks.vqa_table(report)
    print(table, file=sys.stderr)
    text = benchmarks.dump(report, args.out)
    if args.out is None:
        print(text)
    return report


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 with one ``error:`` line (bad values, missing model, unreadable files)."""
    args = _parser().parse_args(argv)

    def benchmark() -> int:
        run(args)
        return 0

    return run_guarded(benchmark)


if __name__ == "__main__":
    raise SystemExit(main())
