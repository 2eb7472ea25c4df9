"""Training configuration: one frozen dataclass per stage run, checked against the model before any
compute (a wrong setting fails with a message that names the field)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config import JanusFlowConfig

# ``steps`` at this value means "no step limit": the time budget (``time_limit_s``) alone ends the run, and the
# schedule then follows time only (its warm-up too: give ``warmup_steps`` as this count times a fraction)
UNBOUNDED_STEPS = 10**9


@dataclass(frozen=True)
class TrainConfig:
    stage: int = 2
    steps: int = 1000
    # samples per batch and process: understanding (image + question), generation, text-only
    batch_und: int = 16
    batch_gen: int = 32
    batch_text: int = 4
    # question/answer turns per understanding sample: one image serves several questions of a multi-turn
    # conversation (the first turn is exactly the single-turn format used at inference)
    und_turns: int = 1
    max_seq_len: int = 256
    lr: float = 5e-4
    min_lr_ratio: float = 0.1  # cosine decay from lr to lr * min_lr_ratio after warm-up
    warmup_steps: int = 100
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    ar_weight: float = 1.0
    flow_weight: float = 1.0
    repa_weight: float = 0.5
    repa_layer: int = 2  # LLM layer whose output hidden states REPA aligns (1 = after the first block)
    repa_head_warmup: int = 0  # first steps in which REPA trains its (new) head alone, the model untouched by it
    cfg_drop: float = 0.1  # fraction of prompts dropped for classifier-free guidance
    t_mean: float = 0.0  # logit-normal t: sigmoid(N(t_mean, t_std^2))
    t_std: float = 1.0
    checkpoint_every: int = 200
    # > 0: every this many steps hand the EMA model to the trainer's ``on_snapshot`` callback (the recipe
    # exports it, so score can be plotted against training time)
    snapshot_every: int = 0
    log_every: int = 10
    seed: int = 0
    mixed_precision: str = "no"  # "no" | "bf16" (accelerate's autocast) is for GPUs: at the shapes model's size
    # even an AMX CPU runs bf16 autocast 1.25x slower than fp32 (bench/train_step_time.py)
    # > 0: stop (and checkpoint) after this many seconds of this run; the lr schedule then advances by
    # elapsed time or steps, whichever is further, so the cosine decay completes within the budget
    time_limit_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def validate(self, model_config: JanusFlowConfig | None = None, has_und_data: bool = True,
                 has_gen_data: bool = True, latent_shape: tuple[int, ...] | None = None,
                 num_und_tokens: int | None = None) -> None:
        """Raise ValueError naming the offending field; called before any model compute."""
        p = []
        if self.stage not in (1, 2, 3):
            p.append(f"stage must be 1, 2 or 3, got {self.stage}")
        if self.steps < 1:
            p.append(f"steps must be >= 1, got {self.steps}")
        for name in ("batch_und", "batch_gen", "batch_text"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.und_turns < 1:
            p.append(f"und_turns must be >= 1, got {self.und_turns}")
        if self.batch_und + self.batch_gen + self.batch_text == 0:
            p.append("batch_und + batch_gen + batch_text must be > 0")
        if not self.lr > 0:  # also refuses NaN
            p.append(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            p.append(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps < 0:
            p.append(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.ema_decay < 1:
            p.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.cfg_drop < 1:
            p.append(f"cfg_drop must be in [0, 1), got {self.cfg_drop}")
        if self.t_std <= 0:
            p.append(f"t_std must be > 0, got {self.t_std}")
        if self.repa_weight < 0:
            p.append(f"repa_weight must be >= 0 (0 turns REPA off), got {self.repa_weight}")
        if self.repa_head_warmup < 0:
            p.append(f"repa_head_warmup must be >= 0, got {self.repa_head_warmup}")
        if self.grad_clip < 0:
            p.append(f"grad_clip must be >= 0, got {self.grad_clip}")
        if self.snapshot_every < 0:
            p.append(f"snapshot_every must be >= 0, got {self.snapshot_every}")
        if self.checkpoint_every < 1:
            p.append(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            p.append(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        if self.batch_und > 0 and not has_und_data:
            p.append(f"batch_und={self.batch_und} but no understanding data was given")
        if self.batch_gen > 0 and not has_gen_data:
            p.append(f"batch_gen={self.batch_gen} but no generation data was given")
        if model_config is not None:
            layers = model_config.llm.num_hidden_layers
            if self.repa_weight > 0 and not 1 <= self.repa_layer <= layers:
                p.append(f"repa_layer must be in 1..{layers} (llm.num_hidden_layers), got {self.repa_layer}")
            if self.batch_gen > 0 and 2 + model_config.num_gen_tokens > self.max_seq_len:
                p.append(f"max_seq_len {self.max_seq_len} cannot hold BOS + t + {model_config.num_gen_tokens} "
                         "image tokens")
            if self.max_seq_len > model_config.llm.max_position_embeddings:
                p.append(f"max_seq_len {self.max_seq_len} exceeds llm.max_position_embeddings "
                         f"{model_config.llm.max_position_embeddings}")
            if latent_shape is not None:
                want = (model_config.latent_channels, model_config.gen_latent_size, model_config.gen_latent_size)
                if tuple(latent_shape) != want:
                    p.append(f"data latents have shape {tuple(latent_shape)} but the model's gen_latent_size/"
                             f"latent channels want {want}")
            if num_und_tokens is not None and num_und_tokens != model_config.num_und_tokens:
                p.append(f"processor num_image_tokens {num_und_tokens} != the understanding encoder's "
                         f"{model_config.num_und_tokens} tokens (siglip.image_size / patch_size)")
        if p:
            raise ValueError("invalid training config: " + "; ".join(p))
