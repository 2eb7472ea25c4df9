"""The training loop: accelerate (DDP on any launcher), AdamW with warm-up + cosine schedule, gradient
clipping, EMA, checkpoints in the official layout with a resume sidecar, a tqdm bar and a jsonl loss log.

A checkpoint folder holds ``config.json`` + ``model.safetensors`` (raw weights; loadable with
``load_pretrained`` unless adapters were injected into the model, as peft's LoRA does) and
``training_state.pt`` (optimizer, scheduler, EMA, REPA head, step, seconds trained) plus one
``rng_state_{rank}.pt`` per process (batch source and torch RNG), so an interrupted run resumes exactly
and loses at most the last ``checkpoint_every`` steps.

Batches come from a *batch source*: any object with ``next_batch(num_gen_tokens) -> {"lm": ..., "gen": ...}``
(the dict format of ``data.MixedBatcher``, either part None), ``state_dict()`` and ``load_state_dict()``.
By default it is a ``MixedBatcher`` over the shapes-world pools; ``finetune_data.DataMix`` reads user data.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..checkpoint import save_pretrained
from ..modeling import JanusFlowModel
from ..processing.processor import JanusFlowProcessor
from .config import UNBOUNDED_STEPS, TrainConfig
from .data import GenerationPool, MixedBatcher, UnderstandingPool
from .ema import copy_ema_into, ema_init, update_ema
from .forward import LossWeights, RepaHead, TrainModule
from .stages import set_stage

STATE_FILE = "training_state.pt"


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """Without CUDA, several processes (torchrun / ``accelerate launch --multi_gpu``) train on the CPU
    with gloo; with CUDA the same call gives the usual multi-GPU / multi-node DDP."""
    return Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available(),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def _to(batch, device):
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch.to(device) if isinstance(batch, torch.Tensor) else batch


def _samples(batch: dict) -> int:
    return sum(int(part["attention_mask" if key == "lm" else "prompt_mask"].shape[0])
               for key, part in batch.items() if part is not None)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def _tokens(batch: dict) -> int:
    n = 0
    if batch.get("lm") is not None:
        n += int(batch["lm"]["attention_mask"].sum())
    if batch.get("gen") is not None:
        n += int(batch["gen"]["prompt_mask"].sum())
    return n


class Trainer:
    """One stage run. ``out_dir/checkpoint`` is the rolling checkpoint, ``out_dir/log.jsonl`` the loss log.

    ``batches``: a batch source to use instead of a ``MixedBatcher`` over ``und_pool`` / ``gen_pool`` (its
    ``has_und`` / ``has_gen`` / ``latent_shape`` attributes, when present, are checked like the pools).
    ``set_trainable=False`` trains exactly the parameters the caller left with ``requires_grad`` (e.g. peft's
    adapters) instead of selecting them by ``cfg.stage``. ``resume_clock=True`` counts the seconds of the runs
    before a resume in the time budget (and the time-driven schedule), so a resumed run ends where the
    uninterrupted one would have. ``cfg.ema_decay == 0`` keeps no EMA (the trained weights are the result).
    ``lr_scale(name)`` multiplies the learning rate of the parameter called ``name`` in the model (e.g. a lower
    rate for modules a fine-tune trains fully than for its adapters); the schedule scales every group alike.
    """

    def __init__(self, model: JanusFlowModel, processor: JanusFlowProcessor, cfg: TrainConfig, out_dir: str | Path,
                 und_pool: UnderstandingPool | None = None, gen_pool: GenerationPool | None = None,
                 repa_head: RepaHead | None = None, accelerator: Accelerator | None = None,
                 progress: bool = True, desc: str | None = None,
                 on_snapshot: Callable[[int, float, JanusFlowModel], None] | None = None,
                 batches=None, set_trainable: bool = True, resume_clock: bool = False,
                 lr_scale: Callable[[str], float] | None = None):
        if batches is not None:
            cfg.validate(model.config, has_und_data=getattr(batches, "has_und", True),
                         has_gen_data=getattr(batches, "has_gen", True),
                         latent_shape=getattr(batches, "latent_shape", None), num_und_tokens=processor.num_image_tokens)
        else:
            cfg.validate(model.config, has_und_data=und_pool is not None, has_gen_data=gen_pool is not None,
                         latent_shape=tuple(gen_pool.latents.shape[1:]) if gen_pool is not None else None,
                         num_und_tokens=processor.num_image_tokens)
        self.cfg = cfg
        self.model = model
        self.lr_scale = lr_scale
        self.processor = processor
        self.out_dir = Path(out_dir)
        self.acc = accelerator or make_accelerator(cfg)
        if repa_head is None and cfg.repa_weight > 0:
            torch.manual_seed(cfg.seed)
            repa_head = RepaHead(model.config.llm.hidden_size, model.config.siglip.width)
        self.repa_head = repa_head
        self.batcher = batches if batches is not None else MixedBatcher(
            processor, und_pool, gen_pool, (cfg.batch_und, cfg.batch_gen, cfg.batch_text), cfg.max_seq_len,
            seed=cfg.seed * 1000 + self.acc.process_index, cfg_drop=cfg.cfg_drop, t_mean=cfg.t_mean,
            t_std=cfg.t_std, und_turns=cfg.und_turns)
        self.set_trainable = set_trainable
        self.resume_clock = resume_clock
        self.seconds_before = 0.0  # training seconds of the runs this one resumes (counted with resume_clock)
        self.progress = progress
        self.desc = desc or f"stage {cfg.stage}"
        self.step = 0
        self.ema: dict[str, torch.Tensor] | None = None
        self.on_snapshot = on_snapshot  # (step, seconds of this run, EMA model), main process only

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    # -- checkpointing
    def save_checkpoint(self, opt, sched) -> None:
        acc, ckpt = self.acc, self.checkpoint_dir
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            save_pretrained(self.model, tmp)
            torch.save({"step": self.step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "ema": self.ema, "repa_head": self.repa_head.state_dict() if self.repa_head else None,
                        "config": self.cfg.as_dict(), "seconds": self.seconds_before + time.time() - self._t_loop},
                       tmp / STATE_FILE)
        acc.wait_for_everyone()
        torch.save({"batcher": self.batcher.state_dict(), "torch": torch.get_rng_state()},
                   tmp / f"rng_state_{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(ckpt, ignore_errors=True)
            tmp.rename(ckpt)
        acc.wait_for_everyone()

    def _resume(self, opt, sched) -> bool:
        ckpt = self.checkpoint_dir
        if not (ckpt / STATE_FILE).exists():
            return False
        state = torch.load(ckpt / STATE_FILE, weights_only=False)
        weights = load_file(str(ckpt / "model.safetensors"))
        self.model.load_state_dict(weights, strict=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        self.ema = state["ema"]
        if self.repa_head is not None and state["repa_head"] is not None:
            self.repa_head.load_state_dict(state["repa_head"])
        self.step = state["step"]
        self.seconds_before = float(state.get("seconds", 0.0))
        rng = torch.load(ckpt / f"rng_state_{self.acc.process_index}.pt", weights_only=False)
        self.batcher.load_state_dict(rng["batcher"])
        torch.set_rng_state(rng["torch"])
        return True

    # -- the loop
    def train(self, resume: bool = True, stop_at: int | None = None) -> dict:
        """Run (or resume) the stage up to ``cfg.steps``; ``stop_at`` stops early without a final
        checkpoint, as an interruption would (used by the resume test)."""
        cfg, acc, model = self.cfg, self.acc, self.model
        if self.set_trainable:
            trained = set_stage(model, cfg.stage, self.repa_head)
        else:
            trained = [n for n, p in model.named_parameters() if p.requires_grad]
            if self.repa_head is not None:
                self.repa_head.requires_grad_(True)
        module = TrainModule(model, self.repa_head, cfg.repa_layer,
                             LossWeights(cfg.ar_weight, cfg.flow_weight, cfg.repa_weight))
        core = module  # the TrainModule itself, under whatever wrapper accelerate puts around it
        groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}  # (lr scale, decayed) -> parameters
        scale_of = {id(p): self.lr_scale(n) for n, p in model.named_parameters()} if self.lr_scale else {}
        for p in module.parameters():
            if p.requires_grad:
                groups.setdefault((scale_of.get(id(p), 1.0), p.dim() >= 2), []).append(p)
        opt = torch.optim.AdamW([{"params": ps, "lr": cfg.lr * scale, "weight_decay": cfg.weight_decay if decayed
                                  else 0.0} for (scale, decayed), ps in groups.items()],
                                lr=cfg.lr, betas=cfg.betas)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
        resumed = resume and self._resume(opt, sched)
        module, opt = acc.prepare(module, opt)  # DDP: every replica now holds rank 0's weights
        if self.ema is None and cfg.ema_decay > 0:
            self.ema = ema_init(model)
        params = [p for p in module.parameters() if p.requires_grad]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.out_dir / "log.jsonl"
        g = model.config.num_gen_tokens
        bar = tqdm(total=cfg.steps if cfg.steps < UNBOUNDED_STEPS else None, initial=self.step, desc=self.desc,
                   disable=not (self.progress and acc.is_main_process), dynamic_ncols=True)
        first_step, t_loop = self.step, time.time()
        self._t_loop = t_loop
        # with resume_clock the budget (and the log's time_s) counts the seconds trained before the resume
        t_start = t_loop - (self.seconds_before if self.resume_clock else 0.0)
        last = {}
        while self.step < cfg.steps:
            t0 = time.time()
            batch = _to(self.batcher.next_batch(g), acc.device)
            core.repa_head_only = self.step < cfg.repa_head_warmup
            with acc.autocast():
                terms = module(batch)
            acc.backward(terms["loss"])
            grad_norm = acc.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip > 0 else None
            opt.step()
            sched.step()
            if cfg.time_limit_s > 0:  # a time budget: the schedule follows whichever runs out first
                elapsed = int(cfg.steps * (time.time() - t_start) / cfg.time_limit_s)
                factor = lr_lambda(cfg)(max(self.step + 1, elapsed))
                for group in opt.param_groups:
                    group["lr"] = group["initial_lr"] * factor
            opt.zero_grad(set_to_none=True)
            if self.ema is not None:
                update_ema(self.ema, model, cfg.ema_decay)
            self.step += 1
            dt = time.time() - t0
            last = {k: float(v.detach()) for k, v in terms.items()}
            tok_s = _tokens(batch) * acc.num_processes / dt
            samples_s = _samples(batch) * acc.num_processes / dt
            # time left: the step budget at this run's mean step time, or the time budget, whichever ends first
            per_step = (time.time() - t_loop) / (self.step - first_step)
            left = [(cfg.steps - self.step) * per_step] if cfg.steps < UNBOUNDED_STEPS else []
            if cfg.time_limit_s > 0:
                left.append(max(0.0, cfg.time_limit_s - (time.time() - t_start)))
            bar.set_postfix({**{k: f"{v:.3f}" for k, v in last.items()}, "tok/s": f"{tok_s:.0f}",
                             "samples/s": f"{samples_s:.1f}", **({"eta": _clock(min(left))} if left else {})})
            bar.update(1)
            if acc.is_main_process and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                # "lr" is the one used: with a time budget it is set above, not by the scheduler
                rec = {"stage": cfg.stage, "step": self.step, "time_s": round(time.time() - t_start, 2),
                       "lr": max(g["lr"] for g in opt.param_groups), **last, "tok_per_s": round(tok_s, 1),
                       "samples_per_s": round(samples_s, 2),
                       "grad_norm": float(grad_norm) if grad_norm is not None else None}
                with log_path.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
            out_of_time = cfg.time_limit_s > 0 and time.time() - t_start > cfg.time_limit_s
            if cfg.time_limit_s > 0 and acc.num_processes > 1:
                # every process must stop at the same step (else one waits in the checkpoint barrier while
                # the others wait in the next step's all-reduce): stop when any process is out of time
                flag = torch.tensor([float(out_of_time)], device=acc.device)
                out_of_time = bool(acc.reduce(flag, reduction="sum").item() > 0)
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps or out_of_time:
                self.save_checkpoint(opt, sched)
            snap = cfg.snapshot_every and (self.step % cfg.snapshot_every == 0 or self.step == cfg.steps or out_of_time)
            if snap and self.on_snapshot is not None and acc.is_main_process:
                self.on_snapshot(self.step, time.time() - t_start, self.ema_model().eval())
            if out_of_time or (stop_at is not None and self.step >= stop_at):
                break
        bar.close()
        return {"step": self.step, "resumed": resumed, "trained_params": len(trained), "last": last,
                "seconds": time.time() - t_loop}

    def ema_model(self) -> JanusFlowModel:
        """The model with its EMA weights (a copy; the training weights are left as they are); without EMA
        (``ema_decay == 0``) a copy of the trained weights."""
        import copy

        m = copy.deepcopy(self.model)
        if self.ema is not None:
            copy_ema_into(self.ema, m)
        return m
