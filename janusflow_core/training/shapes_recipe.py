"""Train the tiny shapes JanusFlow from scratch with one command:

    python -m janusflow_core.training.shapes_recipe --out assets/janusflow-shapes

1. a byte-level BPE tokenizer on the world's texts (official special tokens);
2. a small ``AutoencoderKL`` (64 px -> 16x16x4 latents) with its scaling factor, and
3. the understanding ViT, pre-trained with SigLIP's sigmoid image-text loss plus a dense patch-label
   loss (2 and 3 run side by side when there are two or more processes);
4. JanusFlow's three stages (paper §3.4) on mixed understanding / generation / text-only batches;
5. the EMA weights exported in the official layout with processor, VAE and ``sampling.json``.
Intermediate results live in ``--work`` (with EMA snapshots for score-vs-time plots, see
``training.report``); rerunning the command resumes where it stopped. The measured run is in
docs/training.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import save_pretrained
from ..config import JanusFlowConfig
from ..modeling import JanusFlowModel
from ..presets import shapes as model_config
from ..processing.chat import render_chat, render_generation_prompt
from ..processing.processor import JanusFlowProcessor
from ..processing.tokenizer import train_bpe_tokenizer
from ..shapes import TASKS, all_prompts, all_questions, describe, sample_scene
from ..vae import VAE
from .config import TrainConfig
from .data import build_generation_pool, build_understanding_pool, task_cycle
from .encoder_pretrain import pretrain_siglip
from .trainer import Trainer, make_accelerator
from .vae_train import MIN_DECODER_STEPS, finetune_decoder, train_vae


def flag(default: Any, help: str, name: str | None = None, metavar: str | None = None,
         items: tuple[str, ...] = ()) -> Any:
    """A recipe field that the command line can set: ``--field-name`` (or ``name``), typed by its default (a
    tuple of ints comes comma-separated, ``items`` naming its entries); ``{default}`` in ``help`` shows it."""
    return field(default=default, metadata={"flag": name, "help": help, "metavar": metavar, "items": items})


@dataclass(frozen=True)
class Recipe:
    seed: int = flag(0, "seed of everything the run samples: tokenizer corpus, VAE, ViT, data pools, model init "
                        "and batches (default {default}). Tokenizer, VAE and ViT already in --work are reused, so "
                        "copying them there reruns only the stages under the new seed")
    vocab_size: int = 400
    llm_hidden: int = flag(128, "LLM width (multiple of 32; default {default})")
    llm_layers: int = flag(4, "LLM depth (default {default}; REPA stays on the output of layer 2)")
    vae_steps: int = 500
    vae_batch: int = 32
    vae_channels: tuple[int, ...] = (32, 64, 64)
    # then the decoder alone on whole images (vae_train.finetune_decoder; 0 skips it): trained on crops only,
    # the seventh model's decoder drew stray lines along the image border, malforming a third of its objects
    vae_decoder_steps: int = 600
    vae_decoder_batch: int = 16
    # rank 1 pre-trains the ViT while rank 0 trains the VAE (and then waits for it)
    siglip_steps: int = flag(2000, "ViT pre-training steps (default {default}: about the VAE's time, side by side on "
                                   "a second process)")
    siglip_batch: int = 64
    # weight of the dense patch-label loss beside SigLIP's (encoder_pretrain.py): it teaches the ViT shapes
    siglip_dense_weight: float = 1.0
    # weight of the per-patch object loss (encoder_pretrain.py): every patch names the object covering it
    siglip_object_weight: float = flag(1.0, "weight of the ViT's per-patch object loss in pre-training (default "
                                            "{default}; 0 turns it off)")
    # weight of the per-patch relation loss (encoder_pretrain.py): every object patch says whether its object
    # lies left / right of and above / below all the others, which REPA carries into generation
    siglip_relation_weight: float = flag(1.0, "weight of the ViT's per-patch relation loss in pre-training (default "
                                              "{default}; 0 turns it off)")
    und_pool: int = 8000
    gen_pool: int = 12000
    # scenes of the generation pool per task, in TASKS order (data.build_generation_pool): the three tasks
    # that name two different objects (two_object, position, color_attr) get twice the others' share
    gen_task_weights: tuple[int, ...] = flag(
        (1, 2, 1, 1, 2, 2), "generation-pool scenes per task, integers in the order " + ", ".join(TASKS)
        + " (default {default}; 1,1,1,1,1,1 is uniform)", metavar="W,W,W,W,W,W", items=TASKS)
    cfg_weight: float = flag(3.0, "recommended CFG weight written to sampling.json", name="--cfg")
    # the shapes model is trained without a system text (the official one would be a third of every
    # understanding sample); processor_config.json records it, so chat uses the same
    system_prompt: str = ""
    # batches are global (split over the processes). Stages 2 and 3 use small batches for many steps: at
    # equal wall time on a GPU, 4x the batch for 0.8x the steps scored no better (docs/training.md),
    # and on a CPU a step costs in proportion to its batch
    stages: tuple[TrainConfig, ...] = field(default_factory=lambda: (
        TrainConfig(stage=1, steps=60, lr=1e-3, warmup_steps=20, batch_und=8, batch_gen=32, batch_text=2,
                    und_turns=6, checkpoint_every=50),
        TrainConfig(stage=2, steps=12000, lr=2e-3, warmup_steps=200, batch_und=4, batch_gen=20, batch_text=2,
                    und_turns=6, checkpoint_every=400, snapshot_every=2000, time_limit_s=3000),
        TrainConfig(stage=3, steps=6000, lr=5e-4, warmup_steps=100, batch_und=6, batch_gen=20, batch_text=2,
                    und_turns=6, checkpoint_every=400, snapshot_every=1500, time_limit_s=2400),
    ))

    @property
    def sampling(self) -> dict:
        """The recommended sampling settings written to ``sampling.json`` of every export."""
        return {"steps": 30, "cfg": self.cfg_weight}

    def scaled(self, factor: float) -> Recipe:
        """Every stage's steps and time budget multiplied by ``factor`` (short runs, ablations)."""
        return replace(self, stages=tuple(replace(s, steps=max(1, round(s.steps * factor)),
                                                  time_limit_s=s.time_limit_s * factor) for s in self.stages))

    def with_stage_fields(self, **kw) -> Recipe:
        return replace(self, stages=tuple(replace(s, **kw) for s in self.stages))

    def with_lr_scale(self, factor: float) -> Recipe:
        """Every stage's peak learning rate multiplied by ``factor``; ValueError unless it is > 0."""
        if not factor > 0:
            raise ValueError(f"--lr-scale must be > 0, got {factor}")
        return replace(self, stages=tuple(replace(s, lr=s.lr * factor) for s in self.stages))

    def with_stage_minutes(self, stage: int, minutes: float) -> Recipe:
        """Stage ``stage``'s time budget set to ``minutes`` (its learning-rate schedule follows it);
        ValueError when the recipe has no such stage or the budget is not positive."""
        if stage not in [s.stage for s in self.stages]:
            raise ValueError(f"stage_minutes: the recipe has no stage {stage} (it has "
                             f"{', '.join(str(s.stage) for s in self.stages) or 'none'})")
        if not minutes > 0:
            raise ValueError(f"stage_minutes: the budget of stage {stage} must be > 0 minutes, got {minutes}")
        return replace(self, stages=tuple(replace(s, time_limit_s=60.0 * minutes) if s.stage == stage else s
                                          for s in self.stages))

    def model_config(self, vocab_size: int | None = None) -> JanusFlowConfig:
        """The model this recipe trains (``vocab_size``: the trained tokenizer's, else the recipe's)."""
        return model_config(self.vocab_size if vocab_size is None else vocab_size, self.llm_hidden, self.llm_layers)

    def validate(self) -> None:
        """Raise ValueError naming the field when the model or a stage does not fit; costs no compute,
        so ``run`` calls it before the tokenizer, the VAE and the ViT are trained."""
        cfg = self.model_config()
        for name in ("vae_steps", "siglip_steps", "vae_batch", "siglip_batch", "vae_decoder_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.vae_decoder_steps != 0 and self.vae_decoder_steps < MIN_DECODER_STEPS:
            raise ValueError(f"vae_decoder_steps must be 0 (off) or at least {MIN_DECODER_STEPS}, "
                             f"got {self.vae_decoder_steps}")
        for name in ("siglip_dense_weight", "siglip_object_weight", "siglip_relation_weight"):
            if not getattr(self, name) >= 0:  # also refuses NaN
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        task_cycle(self.gen_task_weights)
        for stage in self.stages:
            stage.validate(cfg)


def corpus(seed: int, n_scenes: int = 3000) -> list[str]:
    """The texts the tokenizer learns from: every prompt, descriptions, questions and answers and the
    chat template's role names."""
    rng = random.Random(f"tokenizer:{seed}")
    texts = [render_generation_prompt(p) for t in TASKS for p in all_prompts(t)]
    for _ in range(n_scenes):
        scene = sample_scene(rng)
        texts.append(describe(scene))
        for items in filter(None, all_questions(scene).values()):
            q, a = rng.choice(items)
            texts.append(render_chat([{"role": "user", "content": q}, {"role": "assistant", "content": a}], "",
                                     add_generation_prompt=False))
    return texts


def run(recipe: Recipe, out: Path, work: Path, progress: bool = True) -> dict:
    from transformers import AutoTokenizer

    recipe.validate()  # before any compute and before the work folder exists
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t_all = time.time()
    log: list[dict] = []
    # Under `accelerate launch` the main process trains tokenizer, VAE and ViT; the others wait, then
    # every process loads them and the stages run data-parallel (DDP).
    acc = make_accelerator(recipe.stages[0] if recipe.stages else TrainConfig())
    main_proc = acc.is_main_process

    # 1. tokenizer + processor
    t0 = time.time()
    tok_dir = work / "tokenizer"
    if main_proc and not (tok_dir / "tokenizer.json").exists():
        train_bpe_tokenizer(corpus(recipe.seed), recipe.vocab_size, tok_dir)
    acc.wait_for_everyone()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    cfg = recipe.model_config(len(tokenizer))
    processor = JanusFlowProcessor.for_model(cfg, tokenizer, system_prompt=recipe.system_prompt)
    times["tokenizer"] = time.time() - t0

    # 2 + 3. VAE and understanding encoder (SigLIP-style pre-training); with two or more processes the
    # second one pre-trains the ViT while the main one trains the VAE
    t0 = time.time()
    vae_dir, vit_path = work / "vae", work / "siglip.pt"
    vit_rank = 1 if acc.num_processes > 1 else 0
    if main_proc and not (vae_dir / "config.json").exists():
        vae_model = train_vae(recipe.vae_steps, batch=recipe.vae_batch, seed=recipe.seed, channels=recipe.vae_channels,
                              progress=progress, log=log)
        if recipe.vae_decoder_steps:
            vae_model = finetune_decoder(vae_model, recipe.vae_decoder_steps, batch=recipe.vae_decoder_batch,
                                         seed=recipe.seed, progress=progress, log=log)
        vae_model.save_pretrained(vae_dir)
    if acc.process_index == vit_rank and not vit_path.exists():
        vit = pretrain_siglip(cfg.siglip, tokenizer, recipe.siglip_steps, batch=recipe.siglip_batch, seed=recipe.seed,
                              progress=progress and main_proc, log=log, dense_weight=recipe.siglip_dense_weight,
                              object_weight=recipe.siglip_object_weight,
                              relation_weight=recipe.siglip_relation_weight)
        torch.save(vit.state_dict(), vit_path)
    if log:
        with (work / "pretrain_log.jsonl").open("a") as f:
            f.write("".join(json.dumps(rec) + "\n" for rec in log))
    acc.wait_for_everyone()
    vae = VAE.from_pretrained(vae_dir, device=acc.device)  # encodes the generation pool on the accelerator
    times["vae+siglip"] = time.time() - t0

    if not recipe.stages:
        return {"times_s": times}

    # 4. data pools
    t0 = time.time()
    und_pool = build_understanding_pool(recipe.und_pool, recipe.seed)
    gen_pool = build_generation_pool(recipe.gen_pool, recipe.seed, vae.encode, task_weights=recipe.gen_task_weights)
    times["data"] = time.time() - t0

    # 5. the three stages; the batch sizes above are global, split over the processes
    n = acc.num_processes
    stages = [replace(s, batch_und=-(-s.batch_und // n), batch_gen=-(-s.batch_gen // n),
                      batch_text=-(-s.batch_text // n)) for s in recipe.stages]
    torch.manual_seed(recipe.seed)
    model = JanusFlowModel(cfg)
    model.vision_und_enc_model.vision_tower.load_state_dict(torch.load(vit_path))
    repa_head = None
    trainer = None
    stage_seconds = 0.0  # training seconds of the stage runs so far (this invocation)
    steps: dict[str, int] = {}
    for i, stage_cfg in enumerate(stages):
        t0 = time.time()
        name = f"stage{stage_cfg.stage}" if i == [s.stage for s in stages].index(stage_cfg.stage) else \
            f"stage{stage_cfg.stage}-{i + 1}"
        def snapshot(step: int, seconds: float, ema_model: JanusFlowModel, name: str = name,
                     before: float = stage_seconds) -> None:
            folder = work / "snapshots" / f"{name}-step{step:05d}"
            save_pretrained(ema_model, folder, processor=processor, vae=vae,
                            sampling=recipe.sampling)
            (folder / "snapshot.json").write_text(json.dumps(
                {"run": name, "step": step, "run_seconds": round(seconds, 1),
                 "stage_seconds": round(before + seconds, 1)}) + "\n")

        trainer = Trainer(model, processor, stage_cfg, work / name, und_pool, gen_pool,
                          repa_head=repa_head, accelerator=acc, progress=progress, on_snapshot=snapshot)
        result = trainer.train(resume=True)
        repa_head = trainer.repa_head
        times[name] = time.time() - t0
        steps[name] = result["step"]
        stage_seconds += result["seconds"]
        print(f"{name}: {result}", flush=True)

    # 6. export the EMA weights
    if main_proc:
        ema = trainer.ema_model().eval()
        save_pretrained(ema, out, processor=processor, vae=vae, sampling=recipe.sampling)
    acc.wait_for_everyone()
    times["total"] = time.time() - t_all
    summary = {"times_s": {k: round(v, 1) for k, v in times.items()}, "steps": steps,
               "recipe": dataclasses.asdict(recipe)}
    if main_proc:
        (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _cli_fields() -> dict[str, dataclasses.Field]:
    """The recipe fields the command line sets, by the flag that sets them."""
    return {f.metadata["flag"] or "--" + f.name.replace("_", "-"): f
            for f in dataclasses.fields(Recipe) if "help" in f.metadata}


def _from_flag(flag: str, f: dataclasses.Field, value: Any) -> Any:
    """A flag's value as the field's type: tuples of ints come comma-separated."""
    if not isinstance(f.default, tuple):
        return value
    try:
        return tuple(int(w) for w in value.split(","))
    except ValueError:
        names = f" ({', '.join(f.metadata['items'])})" if f.metadata["items"] else ""
        raise ValueError(f"{flag} takes {len(f.default)} comma-separated integers{names}, got {value!r}") from None


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Recipe]:
    """The command line and the recipe it selects (no compute: bad flags fail here, naming the flag).

    A flag per recipe field marked with :func:`flag`, plus the flags that act on every stage (``--scale``,
    ``--stages``, REPA, learning rate, time budgets) and the run's own (``--out``, ``--work`` ...)."""
    default = Recipe()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="assets/janusflow-shapes")
    ap.add_argument("--work", default=None, help="intermediate results (default: runs/<name of --out>)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps")
    ap.add_argument("--stages", type=int, default=None, help="run only the first N stage runs")
    ap.add_argument("--no-repa", action="store_true", help="ablation: REPA weight 0")
    ap.add_argument("--repa-weight", type=float, default=None,
                    help=f"REPA loss weight in every stage (default: the recipe's {default.stages[0].repa_weight})")
    ap.add_argument("--stage-minutes", action="append", default=[], metavar="STAGE=MIN",
                    help="time budget of one stage in minutes, e.g. --stage-minutes 2=70 --stage-minutes 3=20 "
                         "(default: " + ", ".join(f"{s.stage}={s.time_limit_s / 60:g}" for s in default.stages
                                                  if s.time_limit_s) + "; stage 1 runs a fixed number of steps)")
    ap.add_argument("--lr-scale", type=float, default=None,
                    help="multiply every stage's peak learning rate (the recipe's rates were set for an LLM of "
                         f"width {default.llm_hidden}; a wider one under AdamW usually wants a lower rate)")
    fields = _cli_fields()
    for name, f in fields.items():
        shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        ap.add_argument(name, type=str if isinstance(f.default, tuple) else type(f.default), default=None,
                        metavar=f.metadata["metavar"], help=f.metadata["help"].format(default=shown))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per process (1 avoids OpenMP oversubscription on a shared 2-core CPU; "
                         "use two processes instead: accelerate launch --multi_gpu --num_processes 2 ...)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.no_repa and args.repa_weight not in (None, 0.0):
        ap.error(f"--no-repa sets the REPA weight to 0; it contradicts --repa-weight {args.repa_weight}")
    recipe = default
    if args.stages is not None:
        recipe = replace(recipe, stages=recipe.stages[:args.stages])
    recipe = recipe.scaled(args.scale)
    if args.no_repa or args.repa_weight is not None:
        recipe = recipe.with_stage_fields(repa_weight=0.0 if args.no_repa else args.repa_weight)
    if args.seed is not None:
        recipe = recipe.with_stage_fields(seed=args.seed)  # the stages draw their batches from it too
    try:
        given = {(name, f): getattr(args, name[2:].replace("-", "_")) for name, f in fields.items()}
        recipe = replace(recipe, **{f.name: _from_flag(name, f, value)
                                    for (name, f), value in given.items() if value is not None})
        if args.lr_scale is not None:
            recipe = recipe.with_lr_scale(args.lr_scale)
        for item in args.stage_minutes:
            stage, _, minutes = item.partition("=")  # without "=", minutes is "" and float() fails below
            try:
                stage_n, minutes_f = int(stage), float(minutes)
            except ValueError:
                raise ValueError(f"--stage-minutes takes STAGE=MINUTES (e.g. 2=70), got {item!r}") from None
            recipe = recipe.with_stage_minutes(stage_n, minutes_f)
        recipe.validate()
    except ValueError as e:
        ap.error(str(e))
    return args, recipe


def main(argv: list[str] | None = None) -> dict:
    args, recipe = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = Path(args.work) if args.work else Path("runs") / out.name
    summary = run(recipe, out, work, progress=not args.quiet)
    print(json.dumps(summary["times_s"]), flush=True)
    return summary


if __name__ == "__main__":
    main()
