"""Training data on the shapes world: understanding, generation and text-only samples, mixed by ratio.

- understanding: image + question -> one-word answer (or the description), loss on the answer only;
- generation: prompt -> VAE latent of a scene that holds exactly what the prompt names (held-out
  prompts never used);
- text-only: the scene written out in words + a question -> answer (no image).

Samples are drawn from pre-rendered pools (rendering and VAE encoding happen once), tokenised with the
processor's template, and left-padded per batch up to ``max_seq_len`` (a longer sample is an error).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..processing.chat import render_chat
from ..processing.image import to_pixel_values
from ..processing.processor import JanusFlowProcessor
from ..shapes import TASKS, describe, render, sample_prompt, sample_question, sample_scene, scene_captions
from ..shapes.world import Scene


@dataclass
class UnderstandingPool:
    scenes: list[Scene]
    images: np.ndarray  # (n, S, S, 3) uint8


@dataclass
class GenerationPool:
    captions: list[list[str]]  # per scene: the prompt it was drawn for, then every true train caption
    latents: torch.Tensor  # (n, C, h, w) scaled VAE latents
    images: np.ndarray  # (n, S, S, 3) uint8, the REPA targets


def build_understanding_pool(n: int, seed: int) -> UnderstandingPool:
    rng = random.Random(f"und-pool:{seed}")
    scenes = [sample_scene(rng) for _ in range(n)]
    images = np.stack([np.asarray(render(s)) for s in scenes])
    return UnderstandingPool(scenes, images)


def task_cycle(weights: tuple[int, ...] | None) -> tuple[str, ...]:
    """The cycle of tasks that ``build_generation_pool`` walks: each task of ``TASKS`` repeated by its
    weight, interleaved (weights (1, 2, 1, 1, 2, 2) give single_object, two_object, counting, colors,
    position, color_attr, two_object, position, color_attr). ``None`` is uniform: ``TASKS`` itself.
    ValueError naming the field unless there is one integer of 0 or more per task, not all 0."""
    if weights is None:
        return TASKS
    if (len(weights) != len(TASKS) or any(not isinstance(w, int) or w < 0 for w in weights)
            or not any(weights)):
        raise ValueError(f"gen_task_weights: one integer of 0 or more per task ({', '.join(TASKS)}), "
                         f"not all 0; got {weights!r}")
    return tuple(t for r in range(max(weights)) for t, w in zip(TASKS, weights, strict=True) if w > r)


def build_generation_pool(n: int, seed: int, encode: Callable[[torch.Tensor], torch.Tensor],
                          batch: int = 256, task_weights: tuple[int, ...] | None = None) -> GenerationPool:
    """``n`` scenes drawn for train-split prompts of the tasks in turn (``task_weights``: scenes per task,
    see ``task_cycle``; uniform by default); ``encode`` maps images (B, 3, S, S) in [-1, 1] to scaled
    latents."""
    cycle = task_cycle(task_weights)
    rng = random.Random(f"gen-pool:{seed}")
    captions, scenes = [], []
    for i in range(n):
        prompt, scene = sample_prompt(rng, cycle[i % len(cycle)], split="train")
        captions.append([prompt] + [c for c in scene_captions(scene, split="train") if c != prompt])
        scenes.append(scene)
    images = np.stack([np.asarray(render(s)) for s in scenes])
    latents = []
    with torch.no_grad():
        for i in range(0, n, batch):
            latents.append(encode(to_pixel_values(images[i:i + batch])).float().cpu())
    return GenerationPool(captions, torch.cat(latents), images)


# -- conversations in the processor's template, as token ids with their loss labels ------------------

def answer_ids(processor: JanusFlowProcessor, answer: str) -> list[int]:
    """`` answer`` + EOS: the assistant turn after ``Assistant:`` (every id a label)."""
    return list(processor.tokenizer.encode(" " + answer, add_special_tokens=False)) + [processor.special_tokens.eos]


def first_turn_ids(processor: JanusFlowProcessor, question: str, image: bool) -> tuple[list[int], list[bool]]:
    """BOS + system text + ``User: [image] question`` + ``Assistant:``, image positions expanded; and the
    mask of the positions that receive image embeddings."""
    st = processor.special_tokens
    content = f"{st.image_tag}\n{question}" if image else question
    ids = list(processor.tokenizer.encode(render_chat([{"role": "user", "content": content}], processor.system_prompt)))
    if not ids or ids[0] != st.bos:
        ids = [st.bos] + ids
    ids, seq_mask = processor.expand_image_tokens(ids)
    return ids.tolist(), seq_mask.tolist()


def next_turn_ids(processor: JanusFlowProcessor, question: str) -> list[int]:
    """A later turn, after the previous answer's EOS: ``User: question`` + ``Assistant:``."""
    text = render_chat([{"role": "user", "content": question}], "")
    return list(processor.tokenizer.encode(text, add_special_tokens=False))


def conversation_ids(qas: list[tuple[str, str]], image: bool, first_turn: Callable, next_turn: Callable,
                     answer: Callable) -> tuple[list[int], list[bool], list[int]]:
    """A conversation of one or more (question, answer) turns: ids, image-position mask and labels (the
    answer tokens and their EOS; -100 elsewhere). The three piece functions are ``first_turn_ids``,
    ``next_turn_ids`` and ``answer_ids`` bound to a processor (possibly cached)."""
    ids, seq_mask = first_turn(qas[0][0], image)
    ids, seq_mask, labels = list(ids), list(seq_mask), [-100] * len(ids)
    for k, (q, a) in enumerate(qas):
        if k:
            turn = next_turn(q)
            ids += turn
            seq_mask += [False] * len(turn)
            labels += [-100] * len(turn)
        ans = answer(a)
        ids += ans
        seq_mask += [False] * len(ans)
        labels += ans
    return ids, seq_mask, labels


class MixedBatcher:
    """Draws mixed batches: ``counts`` = (understanding, generation, text) samples per batch."""

    def __init__(self, processor: JanusFlowProcessor, und: UnderstandingPool | None, gen: GenerationPool | None,
                 counts: tuple[int, int, int], max_seq_len: int, seed: int, cfg_drop: float = 0.1,
                 t_mean: float = 0.0, t_std: float = 1.0, und_turns: int = 1):
        self.processor = processor
        self.und, self.gen = und, gen
        self.counts = counts
        self.max_seq_len = max_seq_len
        self.cfg_drop = cfg_drop
        self.und_turns = und_turns
        self.t_mean, self.t_std = t_mean, t_std
        self.rng = random.Random(seed)
        self.gen_rng = torch.Generator().manual_seed(seed)
        st = processor.special_tokens
        self.pad, self.eos, self.bos = st.pad, st.eos, st.bos
        self._cache: dict[tuple, list[int]] = {}
        if counts[0] and und is None:
            raise ValueError("data: understanding samples requested but no understanding pool given")
        if (counts[1] or counts[2]) and gen is None and counts[1]:
            raise ValueError("data: generation samples requested but no generation pool given")

    # -- state for exact resume
    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "gen_rng": self.gen_rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(state["rng"])
        self.gen_rng.set_state(state["gen_rng"])

    # -- tokenisation (the pieces cached: the world repeats its questions and answers)
    def _cached(self, key: tuple, make: Callable):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _chat(self, qas: list[tuple[str, str]], image: bool) -> tuple[list[int], list[bool], list[int]]:
        """A conversation of one or more (question, answer) turns in the processor's template; labels
        hold the answer tokens (and their EOS) only."""
        p = self.processor
        return conversation_ids(
            qas, image,
            lambda q, img: self._cached(("first", q, img), lambda: first_turn_ids(p, q, img)),
            lambda q: self._cached(("next", q), lambda: next_turn_ids(p, q)),
            lambda a: self._cached(("answer", a), lambda: answer_ids(p, a)))

    def _questions(self, scene: Scene) -> list[tuple[str, str]]:
        """``und_turns`` different questions about the scene (fewer if it has fewer)."""
        qas: list[tuple[str, str]] = []
        for _ in range(3 * self.und_turns):
            qa = sample_question(self.rng, scene)
            if qa not in qas:
                qas.append(qa)
                if len(qas) == self.und_turns:
                    break
        return qas

    def _gen_prompt(self, caption: str) -> list[int]:
        key = ("gen", caption)
        if key not in self._cache:
            self._cache[key] = self.processor.encode_generation_prompt(caption).tolist()
        return self._cache[key]

    def _check_len(self, n: int, what: str) -> None:
        if n > self.max_seq_len:
            raise ValueError(f"max_seq_len: a {what} sample is {n} tokens long, "
                             f"more than max_seq_len={self.max_seq_len}")

    # -- batches
    def lm_batch(self, n_und: int, n_text: int, num_gen_tokens: int) -> dict | None:
        rows, pix, has_img = [], [], []
        for _ in range(n_und):
            i = self.rng.randrange(len(self.und.scenes))
            rows.append(self._chat(self._questions(self.und.scenes[i]), True))
            pix.append(self.und.images[i])
            has_img.append(True)
        for _ in range(n_text):
            scene = sample_scene(self.rng)
            q, a = sample_question(self.rng, scene)
            rows.append(self._chat([(f"{describe(scene)}. {q}", a)], False))
            has_img.append(False)
        if not rows:
            return None
        t = max(len(r[0]) for r in rows)
        self._check_len(t, "understanding/text")
        b, n_tok = len(rows), self.processor.num_image_tokens
        input_ids = torch.full((b, t), self.pad, dtype=torch.long)
        attention_mask = torch.zeros(b, t, dtype=torch.long)
        labels = torch.full((b, t), -100, dtype=torch.long)
        seq_mask = torch.zeros(b, t, dtype=torch.bool)
        emb_mask = torch.zeros(b, 1, n_tok + 1, dtype=torch.bool)
        for k, (ids, sm, lab) in enumerate(rows):
            s = t - len(ids)
            input_ids[k, s:] = torch.tensor(ids)
            attention_mask[k, s:] = 1
            labels[k, s:] = torch.tensor(lab)
            seq_mask[k, s:] = torch.tensor(sm)
            emb_mask[k, 0] = has_img[k]
        size = self.und.images.shape[1] if self.und is not None else self.processor.image_processor.image_size
        pixel_values = torch.zeros(b, 1, 3, size, size)
        if pix:
            pixel_values[:len(pix), 0] = to_pixel_values(np.stack(pix))
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "images_seq_mask": seq_mask, "images_emb_mask": emb_mask, "pixel_values": pixel_values}

    def gen_batch(self, n: int, num_gen_tokens: int) -> dict | None:
        if n == 0:
            return None
        idx = [self.rng.randrange(len(self.gen.captions)) for _ in range(n)]
        prompts = []
        for i in idx:
            caps = self.gen.captions[i]
            prompts.append(self._gen_prompt(caps[0] if self.rng.random() < 0.5 else self.rng.choice(caps)))
        p = max(len(x) for x in prompts)
        self._check_len(p + 1 + num_gen_tokens, "generation")
        ids = torch.full((n, p), self.pad, dtype=torch.long)
        mask = torch.zeros(n, p, dtype=torch.long)
        for k, x in enumerate(prompts):
            ids[k, p - len(x):] = torch.tensor(x)
            mask[k, p - len(x):] = 1
        from .losses import drop_prompts, sample_logit_normal

        dropped_mask, _ = drop_prompts(mask, self.cfg_drop, self.gen_rng)
        latents = self.gen.latents[idx]
        noise = torch.randn(latents.shape, generator=self.gen_rng)
        t = sample_logit_normal(n, self.t_mean, self.t_std, generator=self.gen_rng)
        return {"prompt_ids": ids, "prompt_mask": dropped_mask, "position_mask": mask, "latents": latents,
                "noise": noise, "t": t, "pixel_values": to_pixel_values(self.gen.images[idx]),
                "pool_index": torch.tensor(idx)}

    def next_batch(self, num_gen_tokens: int) -> dict:
        n_und, n_gen, n_text = self.counts
        return {"lm": self.lm_batch(n_und, n_text, num_gen_tokens), "gen": self.gen_batch(n_gen, num_gen_tokens)}
