"""Fine-tune JanusFlow on your own data: one command, LoRA or full, one CPU to many GPUs.

    python -m janusflow_core.finetune --model BASE --out OUT [--gen-data DIR]... [--und-data FILE]...
        [--method lora|full] [--steps N | --minutes M] [--batch-size B] [--lr LR] [--seed S]
        [--mixed-precision no|bf16|fp16] [--gradient-checkpointing] [--resume] [--validate-only]

Several processes: ``accelerate launch [--config_file examples/accelerate/fsdp.yaml] -m janusflow_core.finetune ...``.

1. flags are checked (a bad value: one line, exit 2), before anything is loaded;
2. the data (``training/finetune_data.py`` documents both formats) is read and checked in full: every image
   opened, every record measured against the context; problems are listed with file and line (exit 1) unless
   ``--skip-bad`` leaves those records out;
3. the base loads (weights in float32; ``--mixed-precision`` runs the forward in bf16/fp16 autocast), peft adds
   the adapters (``training/lora.py``) or ``--method full`` trains everything but the understanding encoder;
4. the training library's loop runs (``training.trainer.Trainer``: AR loss on answer tokens, rectified flow
   with logit-normal t, REPA, 10 % prompt drop, optional EMA, accelerate, checkpoints) on a ``DataMix`` batch
   source: ``--gen-ratio`` of every batch is text-to-image pairs, the rest conversations;
5. OUT becomes a model folder in the official layout (weights with the adapters merged, config, tokenizer,
   processor files, the VAE and the base's ``sampling.json``), plus ``adapter/`` (peft format, LoRA only),
   ``log.jsonl`` (losses per step), ``finetune.json`` (settings and summary) and ``checkpoint/`` (for --resume).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

MIXED = ("no", "bf16", "fp16")
DEFAULT_STEPS = 1000
# tuned on the shapes model (docs/finetune.md): generation is the slower of the two kinds to learn, so it gets
# three quarters of every batch; 2e-3 learned the new shape no faster than 1e-3 and forgot more of the old
DEFAULT_GEN_RATIO = 0.75
DEFAULT_EMA = 0.99
DEFAULTS = {"lora": {"lr": 1e-3, "rank": 16}, "full": {"lr": 2e-4}}
DEFAULT_REPA_WARMUP = 100
MODULES_LR_SCALE = 1.0  # the same rate: at a tenth the new shape was not learned (docs/finetune.md)


class UsageError(Exception):
    """A bad flag or path: reported on one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m janusflow_core.finetune", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="base model: folder or hub id in the official layout "
                    "(default: the embedded shapes model)")
    ap.add_argument("--out", required=True, help="the fine-tuned model folder to write")
    ap.add_argument("--gen-data", action="append", default=[], metavar="DIR",
                    help="text-to-image pairs: an image folder with metadata.jsonl (repeatable)")
    ap.add_argument("--und-data", action="append", default=[], metavar="FILE",
                    help="conversations: a LLaVA-format .json or .jsonl file (repeatable)")
    ap.add_argument("--gen-ratio", type=float, default=None,
                    help="share of text-to-image samples in every batch when both kinds are given "
                         f"(default {DEFAULT_GEN_RATIO})")
    ap.add_argument("--method", choices=("lora", "full"), default="lora")
    ap.add_argument("--lora-rank", type=int, default=None, help=f"default {DEFAULTS['lora']['rank']}")
    ap.add_argument("--no-lora-vocab", action="store_true",
                    help="no adapters on the token embedding and output head (new words then rely on the blocks)")
    ap.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {DEFAULT_STEPS} unless "
                    "--minutes is given; with both, whichever ends first)")
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget: stops cleanly and saves")
    ap.add_argument("--batch-size", type=int, default=16, help="samples per step and process")
    ap.add_argument("--lr", type=float, default=None,
                    help=f"peak learning rate (default {DEFAULTS['lora']['lr']} for lora, {DEFAULTS['full']['lr']} "
                         "for full); warm-up over the first 3 %% of the run, cosine decay to a tenth")
    ap.add_argument("--modules-lr", type=float, default=None,
                    help="with --method lora: peak learning rate of the modules trained in full (the aligners and the "
                         "generation encoder and decoder; default: --lr x MODULES_LR_SCALE)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mixed-precision", choices=MIXED, default="no")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="recompute the LLM's activations "
                    "in the backward pass (transformers' activation_checkpointing_enable): less memory, more time")
    ap.add_argument("--repa-weight", type=float, default=0.5, help="REPA loss weight (0 turns it off)")
    ap.add_argument("--repa-warmup", type=int, default=DEFAULT_REPA_WARMUP, metavar="STEPS",
                    help="first steps in which REPA fits its new head alone, without moving the model "
                         f"(default {DEFAULT_REPA_WARMUP}; the base checkpoint carries no REPA head)")
    ap.add_argument("--repa-layer", type=int, default=None,
                    help="LLM layer whose output REPA aligns (default: half the depth, at least 1)")
    ap.add_argument("--ema", type=float, default=DEFAULT_EMA, metavar="DECAY",
                    help=f"export the EMA of the weights with this decay (default {DEFAULT_EMA}; 0 turns it off and "
                         "saves a float32 copy of the model)")
    ap.add_argument("--max-seq-len", type=int, default=None, help="context for a sample (default: the model's)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes per kind and process")
    ap.add_argument("--checkpoint-every", type=int, default=200, help="steps between rolling checkpoints")
    ap.add_argument("--skip-bad", action="store_true", help="leave out records that fail the checks")
    ap.add_argument("--resume", action="store_true", help="continue the run whose checkpoint is in OUT")
    ap.add_argument("--validate-only", action="store_true", help="check the data, report, and exit")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def check_flags(args: argparse.Namespace) -> None:
    """Everything that can be refused before loading anything; UsageError names the flag and what is allowed."""
    if not args.gen_data and not args.und_data:
        raise UsageError("give at least one of --gen-data DIR (text-to-image pairs) and --und-data FILE "
                         "(conversations)")
    for d in args.gen_data:
        if not Path(d).is_dir():
            raise UsageError(f"--gen-data {d}: no such folder (an image folder with metadata.jsonl)")
    for f in args.und_data:
        if Path(f).suffix not in (".json", ".jsonl"):
            raise UsageError(f"--und-data {f}: must be a .json (list of records) or .jsonl file")
        if not Path(f).is_file():
            raise UsageError(f"--und-data {f}: no such file")
    if args.gen_ratio is not None:
        if not (args.gen_data and args.und_data):
            raise UsageError("--gen-ratio mixes the two kinds of data: it needs both --gen-data and --und-data")
        if not 0 < args.gen_ratio < 1:
            raise UsageError(f"--gen-ratio must be between 0 and 1 (exclusive), got {args.gen_ratio}")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.minutes is not None and not (args.minutes > 0 and math.isfinite(args.minutes)):
        raise UsageError(f"--minutes must be a positive number, got {args.minutes}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.lr is not None and not (args.lr > 0 and math.isfinite(args.lr)):
        raise UsageError(f"--lr must be a positive number, got {args.lr}")
    if args.modules_lr is not None and not (args.modules_lr >= 0 and math.isfinite(args.modules_lr)
                                            and args.method == "lora"):
        raise UsageError(f"--modules-lr must be 0 or more and goes with --method lora, got {args.modules_lr} "
                         f"with --method {args.method}")
    if args.lora_rank is not None and (args.method != "lora" or args.lora_rank < 1):
        raise UsageError(f"--lora-rank must be at least 1 and goes with --method lora, got {args.lora_rank} "
                         f"with --method {args.method}")
    if args.no_lora_vocab and args.method != "lora":
        raise UsageError("--no-lora-vocab goes with --method lora")
    if not (args.repa_weight >= 0 and math.isfinite(args.repa_weight)):
        raise UsageError(f"--repa-weight must be 0 or more, got {args.repa_weight}")
    if args.repa_warmup < 0:
        raise UsageError(f"--repa-warmup must be 0 or more steps, got {args.repa_warmup}")
    if args.repa_layer is not None and args.repa_layer < 1:
        raise UsageError(f"--repa-layer must be at least 1, got {args.repa_layer}")
    if not 0 <= args.ema < 1:
        raise UsageError(f"--ema must be in [0, 1) (0 = no EMA), got {args.ema}")
    if args.max_seq_len is not None and args.max_seq_len < 2:
        raise UsageError(f"--max-seq-len must be at least 2, got {args.max_seq_len}")
    if args.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {args.workers}")
    if args.checkpoint_every < 1:
        raise UsageError(f"--checkpoint-every must be at least 1, got {args.checkpoint_every}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if args.mixed_precision == "fp16":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--mixed-precision fp16 needs a CUDA GPU; on this machine use bf16 or no")
    if args.validate_only:
        return
    out = Path(args.out)
    has_checkpoint = (out / "checkpoint" / "training_state.pt").is_file()
    if args.resume and not has_checkpoint:
        raise UsageError(f"--resume: {out} holds no checkpoint to continue (no checkpoint/training_state.pt)")
    if not args.resume and out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty; choose a new folder, or pass --resume to continue its run")


# -- data ------------------------------------------------------------------------------------------------

def read_data(args, processor, config, max_seq_len: int, log) -> tuple[list, list, int]:
    """Read and check every record (all of it, before any model is loaded). Returns the good generation and
    understanding records and the number left out; raises DataProblems unless --skip-bad."""
    from .training.finetune_data import DataProblems, Tokens, check_records, read_gen_folder, read_und_file

    gen, und, problems = [], [], []
    for d in args.gen_data:
        recs, probs = read_gen_folder(d)
        gen += recs
        problems += probs
    for f in args.und_data:
        recs, probs = read_und_file(f)
        und += recs
        problems += probs
    t0 = time.time()
    gen, und, more = check_records(gen, und, Tokens(processor), max_seq_len, config.num_gen_tokens)
    problems += more
    log(f"data: {len(gen)} text-to-image pairs, {len(und)} conversations "
        f"({sum(r.image is None for r in und)} text-only) checked in {time.time() - t0:.1f} s; "
        f"{len(problems)} problem(s)")
    if problems and not args.skip_bad:
        raise DataProblems(problems)
    if args.gen_data and not gen or args.und_data and not und:
        kind = "--gen-data" if args.gen_data and not gen else "--und-data"
        raise DataProblems([f"{kind}: no usable record"
                            + (f" ({len(problems)} left out as bad)" if problems else " (the files are empty)")])
    if problems:
        log(f"--skip-bad: left out {len(problems)} record(s); the first: {problems[0]}")
    return gen, und, len(problems)


def split_batch(batch: int, ratio: float | None, has_gen: bool, has_und: bool) -> tuple[int, int]:
    """(generation, understanding) samples per batch: ``ratio`` of the batch (rounded, at least one of each)."""
    if not has_und:
        return batch, 0
    if not has_gen:
        return 0, batch
    if batch < 2:
        raise UsageError("--batch-size must be at least 2 when both kinds of data are given (one of each)")
    n_gen = min(batch - 1, max(1, round(batch * (DEFAULT_GEN_RATIO if ratio is None else ratio))))
    return n_gen, batch - n_gen


# -- the run ---------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict:
    import torch

    from .checkpoint import load_pretrained, load_processor, read_sampling, save_pretrained
    from .config import JanusFlowConfig
    from .hub import resolve_folder
    from .training.config import UNBOUNDED_STEPS, TrainConfig
    from .training.finetune_data import DataMix, GenerationDataset, Tokens, UnderstandingDataset
    from .training.trainer import Trainer, make_accelerator

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    base = args.model
    if base is None:
        from .checkpoint import DEFAULT_MODEL

        base = DEFAULT_MODEL
    folder = resolve_folder(base, what="model", allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model",
                                                                 "vae/*"])
    config = JanusFlowConfig.from_file(folder)
    processor = load_processor(folder, config)
    max_seq_len = args.max_seq_len or config.llm.max_position_embeddings
    if max_seq_len > config.llm.max_position_embeddings:
        raise UsageError(f"--max-seq-len {max_seq_len} exceeds the model's context "
                         f"({config.llm.max_position_embeddings} positions)")
    layers = config.llm.num_hidden_layers
    repa_layer = args.repa_layer or max(1, layers // 2)
    if repa_layer > layers:
        raise UsageError(f"--repa-layer must be in 1..{layers} (the base's LLM depth), got {repa_layer}")

    n_gen, n_und = split_batch(args.batch_size, args.gen_ratio, bool(args.gen_data), bool(args.und_data))
    steps = args.steps if args.steps is not None else (UNBOUNDED_STEPS if args.minutes else DEFAULT_STEPS)
    lr = args.lr if args.lr is not None else DEFAULTS[args.method]["lr"]
    cfg = TrainConfig(stage=2, steps=steps, batch_und=n_und, batch_gen=n_gen, batch_text=0, max_seq_len=max_seq_len,
                      lr=lr, warmup_steps=max(1, round(0.03 * steps)), ema_decay=args.ema, repa_weight=args.repa_weight,
                      repa_head_warmup=args.repa_warmup,
                      repa_layer=repa_layer, checkpoint_every=args.checkpoint_every, log_every=1, seed=args.seed,
                      mixed_precision=args.mixed_precision, time_limit_s=60.0 * args.minutes if args.minutes else 0.0)
    cfg.validate(config, has_und_data=n_und > 0, has_gen_data=n_gen > 0, num_und_tokens=processor.num_image_tokens)

    acc = make_accelerator(cfg)
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if acc.is_main_process else (lambda line: None)
    gen_records, und_records, skipped = read_data(args, processor, config, max_seq_len, log)
    if args.validate_only:
        log("data OK" if not skipped else f"data usable with --skip-bad ({skipped} record(s) left out)")
        return {"validated": True, "gen": len(gen_records), "und": len(und_records), "skipped": skipped}

    # CPU processes of a multi-process run get devices such as cpu:1, which safetensors does not take
    device = torch.device("cpu") if acc.device.type == "cpu" else acc.device
    bundle = load_pretrained(folder, device=device, dtype="fp32")
    model, vae = bundle.model.train(), bundle.vae
    if args.gradient_checkpointing:
        model.language_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    peft_model = None
    if args.method == "lora":
        from .training.lora import add_lora

        peft_model = add_lora(model, args.lora_rank or DEFAULTS["lora"]["rank"], vocab=not args.no_lora_vocab)
    else:
        model.requires_grad_(True)
        model.vision_und_enc_model.requires_grad_(False)  # REPA's target and the understanding input stay fixed
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log(f"{args.method}: training {trained / 1e6:.2f} M of {total / 1e6:.2f} M parameters; batch {n_gen} generation "
        f"+ {n_und} understanding samples per process x {acc.num_processes} process(es)")

    tokens = Tokens(processor)
    size = config.gen_latent_size * vae.downsample
    gen_ds = GenerationDataset(gen_records, tokens, size) if gen_records else None
    und_ds = UnderstandingDataset(und_records, tokens) if und_records else None
    # REPA targets are cached per image while the encoder is frozen, when they fit in 1 GiB
    feat_bytes = 4 * config.num_und_tokens * config.siglip.width * (len(gen_records) if gen_records else 0)
    source = DataMix(gen_ds, und_ds, n_gen, n_und, processor, vae, seed=args.seed, rank=acc.process_index,
                     world=acc.num_processes, workers=args.workers, cfg_drop=cfg.cfg_drop, t_mean=cfg.t_mean,
                     t_std=cfg.t_std, cache_repa=feat_bytes <= 2**30)
    lr_scale, modules_lr = None, None
    if peft_model is not None:  # the modules trained in full learn at their own rate
        modules_lr = args.modules_lr if args.modules_lr is not None else lr * MODULES_LR_SCALE
        lr_scale = lambda name: modules_lr / lr if ".modules_to_save." in name else 1.0  # noqa: E731
    trainer = Trainer(model, processor, cfg, out, accelerator=acc, progress=not args.quiet, desc="finetune",
                      batches=source, set_trainable=False, resume_clock=True, lr_scale=lr_scale)
    result = trainer.train(resume=args.resume)

    summary = {"steps": result["step"], "seconds_this_run": round(result["seconds"], 1),
               "seconds_total": round(trainer.seconds_before + result["seconds"], 1), "resumed": result["resumed"],
               "last_losses": {k: round(v, 4) for k, v in result["last"].items()},
               "samples_seen": {"gen": result["step"] * n_gen * acc.num_processes,
                                "und": result["step"] * n_und * acc.num_processes},
               "trained_parameters": trained, "records": {"gen": len(gen_records), "und": len(und_records),
                                                          "skipped": skipped}}
    if acc.is_main_process:
        if trainer.ema is not None:
            from .training.ema import copy_ema_into

            copy_ema_into(trainer.ema, model)  # the training weights are in checkpoint/ for --resume
        if peft_model is not None:
            peft_model.save_pretrained(out / "adapter", save_embedding_layers=False)  # the LoRA of the vocabulary
            # is saved either way; True would add full copies of the embedding and the head
            from .training.lora import merge

            export = merge(peft_model)
        else:
            export = model
        base_dtype = json.loads((folder / "config.json").read_text()).get("torch_dtype", "float32")
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(base_dtype)
        save_pretrained(export.eval(), out, processor=processor, vae=vae, sampling=read_sampling(folder), dtype=dtype)
        if (folder / "sampling.json").is_file():
            shutil.copyfile(folder / "sampling.json", out / "sampling.json")
        settings = {k: v for k, v in vars(args).items()}
        settings.update(base=str(folder), lr=lr, modules_lr=modules_lr,
                        lora_rank=(args.lora_rank or DEFAULTS["lora"]["rank"]) if args.method == "lora" else None,
                        repa_layer=repa_layer, batch_gen=n_gen, batch_und=n_und, processes=acc.num_processes)
        (out / "finetune.json").write_text(json.dumps({"settings": settings, "summary": summary}, indent=2) + "\n")
        log(f"done: {summary['steps']} steps in {summary['seconds_this_run']} s "
            f"({summary['samples_seen']['gen']} generation + {summary['samples_seen']['und']} understanding samples); "
            f"last losses {summary['last_losses']}; model in {out}" + (f", adapter in {out / 'adapter'}"
                                                                       if peft_model is not None else ""))
    acc.wait_for_everyone()
    return summary


def main(argv: list[str] | None = None) -> dict:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        check_flags(args)
        return run(args)
    except UsageError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    except ValueError as e:
        from .training.finetune_data import DataProblems

        if isinstance(e, DataProblems):
            ap.exit(1, f"{ap.prog}: {e}\n")
        raise


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
