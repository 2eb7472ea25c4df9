"""Running a model on the two shapes-world benchmarks.

``run_geneval`` and ``run_vqa`` take plain callables (prompt -> images, question + image ->
text), so they run without any model in tests; ``make_generator`` / ``make_answerer`` wrap the
real pipelines. Prompts, seeds and scenes come from ``heldout_rng`` streams, so a run is
deterministic for a given ``seed`` and never shares a random stream with training.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ..shapes.prompts import TASKS, heldout_prompts, heldout_rng, sample_prompt
from ..shapes.questions import ONE_WORD_FORMS, sample_question_with_form
from ..shapes.world import render, sample_scene
from .scoring import chance_baseline, check_image, geneval_score, normalize_answer

Generator = Callable[[str, int, int], list[Image.Image]]  # (prompt, seed, num_images) -> images
Answerer = Callable[[str, Image.Image], str]  # (question, image) -> answer text


def geneval_prompts(per_task: int, seed: int = 0, split: str = "test") -> tuple[list[tuple[str, str]], dict]:
    """``per_task`` (task, prompt) pairs per task, and per task whether its prompts are held out.

    With ``split='test'``, a task with no held-out prompts (``single_object``, ``two_object``)
    draws from all its prompts: those prompts were seen in training, only the seeds are new.
    """
    pairs, held_out = [], {}
    for task in TASKS:
        rng = heldout_rng(seed, f"geneval-{task}")
        task_split = split if split != "test" or heldout_prompts(task) else None
        held_out[task] = task_split == "test"
        pairs += [(task, sample_prompt(rng, task, split=task_split)[0]) for _ in range(per_task)]
    return pairs, held_out


def image_seed(seed: int, k: int) -> int:
    """The noise seed of the k-th benchmark prompt (k over all tasks, in ``geneval_prompts`` order)."""
    return seed * 100_000 + k


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def run_geneval(
    generate: Generator,
    per_task: int = 24,
    images_per_prompt: int = 1,
    seed: int = 0,
    split: str = "test",
    save_images: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Generate for every benchmark prompt, score, and return a JSON-ready report."""
    pairs, held_out = geneval_prompts(per_task, seed, split)
    images_by_prompt: dict[str, list[Image.Image]] = {}
    reasons: dict[str, Counter] = {t: Counter() for t in TASKS}
    records = []
    for k, (task, prompt) in enumerate(pairs):
        noise_seed = image_seed(seed, k)
        images = generate(prompt, noise_seed, images_per_prompt)
        if len(images) != images_per_prompt:
            raise RuntimeError(f"generator returned {len(images)} images, asked for {images_per_prompt}")
        for j, image in enumerate(images):
            passed, reason = check_image(image, prompt)
            reasons[task][reason] += 1
            records.append(
                {"task": task, "prompt": prompt, "seed": noise_seed, "index": j, "passed": passed, "reason": reason}
            )
            if save_images is not None:
                folder = Path(save_images) / task
                folder.mkdir(parents=True, exist_ok=True)
                image.save(folder / f"{k:04d}_{j}_{_slug(prompt)}_{reason}.png")
        images_by_prompt.setdefault(prompt, []).extend(images)
        if log is not None:
            n_pass = sum(r["passed"] for r in records[-len(images) :])
            log(f"[{k + 1}/{len(pairs)}] {prompt!r}: {n_pass}/{len(images)} pass")
    return {
        "benchmark": "shapes-geneval",
        "score": geneval_score(images_by_prompt),
        "chance_baseline": chance_baseline(images_by_prompt),
        "failure_reasons": {t: dict(c) for t, c in reasons.items()},
        "prompts_held_out": held_out,
        "settings": {
            "per_task": per_task,
            "images_per_prompt": images_per_prompt,
            "seed": seed,
            "split": split,
        },
        "records": records,
    }


def run_vqa(answer: Answerer, n: int = 200, seed: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """Ask ``n`` one-word questions about held-out scenes and return a JSON-ready report."""
    rng = heldout_rng(seed, "vqa")
    records = []
    for i in range(n):
        scene = sample_scene(rng)
        form, question, truth = sample_question_with_form(rng, scene, forms=ONE_WORD_FORMS)
        pred = answer(question, render(scene))
        correct = normalize_answer(pred) == normalize_answer(truth)
        records.append(
            {"form": form, "question": question, "answer": truth, "prediction": pred, "correct": correct}
        )
        if log is not None and (i + 1) % 50 == 0:
            log(f"[{i + 1}/{n}] accuracy so far {sum(r['correct'] for r in records) / len(records):.3f}")
    per_form = {}
    for form in ONE_WORD_FORMS:
        rs = [r for r in records if r["form"] == form]
        if rs:
            per_form[form] = {"accuracy": sum(r["correct"] for r in rs) / len(rs), "n": len(rs)}
    yes_no = [normalize_answer(r["prediction"]) == "yes" for r in records if r["answer"] in ("yes", "no")]
    return {
        "benchmark": "shapes-vqa",
        "accuracy": sum(r["correct"] for r in records) / n if n else 0.0,
        "per_form": per_form,
        "yes_rate": sum(yes_no) / len(yes_no) if yes_no else None,
        "settings": {"n": n, "seed": seed},
        "records": records,
    }



def run_vae_roundtrip(
    reconstruct: Callable[[list[Image.Image]], list[Image.Image]], per_task: int = 20, seed: int = 0
) -> dict:
    """The ceiling a VAE puts on shapes-geneval: scenes drawn for prompts of the six tasks, passed
    through ``reconstruct`` (encode + decode) and scored against their prompts. A model that generates
    perfect latents cannot score above this."""
    rng = heldout_rng(seed, "vae-roundtrip")
    items = [sample_prompt(rng, task) for task in TASKS for _ in range(per_task)]
    images = reconstruct([render(scene) for _, scene in items])
    passes: dict[str, list[bool]] = {t: [] for t in TASKS}
    reasons: dict[str, Counter] = {t: Counter() for t in TASKS}
    for k, (image, (prompt, _)) in enumerate(zip(images, items)):
        task = TASKS[k // per_task]
        passed, reason = check_image(image, prompt)
        passes[task].append(passed)
        reasons[task][reason] += 1
    per_task_score = {t: sum(v) / len(v) for t, v in passes.items()}
    return {
        "benchmark": "shapes-vae-roundtrip",
        "overall": sum(per_task_score.values()) / len(TASKS),
        "per_task": per_task_score,
        "failure_reasons": {t: dict(c) for t, c in reasons.items()},
        "settings": {"per_task": per_task, "seed": seed},
    }


def make_reconstructor(model: str | None, batch: int = 64) -> Callable[[list[Image.Image]], list[Image.Image]]:
    """The VAE of a checkpoint folder (its ``vae/``) as encode-then-decode on PIL images."""
    import numpy as np

    from janusflow_core.bundle import DEFAULT_MODEL
    from janusflow_core.processing.image import to_pixel_values
    from janusflow_core.vae import VAE, to_pil

    folder = Path(model) if model else DEFAULT_MODEL
    vae = VAE.from_pretrained(folder / "vae" if (folder / "vae" / "config.json").exists() else folder)

    def reconstruct(images: list[Image.Image]) -> list[Image.Image]:
        out = []
        for i in range(0, len(images), batch):
            x = to_pixel_values(np.stack([np.asarray(im.convert("RGB")) for im in images[i : i + batch]]))
            out += to_pil(vae.decode(vae.encode(x)))
        return out

    return reconstruct


# --- tables ---------------------------------------------------------------------------------


def geneval_table(report: dict) -> str:
    score, base = report["score"], report["chance_baseline"]
    lines = [f"{'task':<14} {'score':>6} {'chance':>7} {'n':>4}  held-out prompts  failures"]
    for task in score["per_task"]:
        fails = {r: c for r, c in report["failure_reasons"][task].items() if r != "pass"}
        lines.append(
            f"{task:<14} {score['per_task'][task]:>6.3f} {base['per_task'][task]:>7.3f} "
            f"{score['n_images'][task]:>4}  "
            f"{'yes' if report['prompts_held_out'][task] else 'no (seen)':<16}  "
            + (", ".join(f"{r} {c}" for r, c in sorted(fails.items())) or "-")
        )
    lines.append(f"{'overall':<14} {score['overall']:>6.3f} {base['overall']:>7.3f}")
    return "\n".join(lines)


def vqa_table(report: dict) -> str:
    lines = [f"{'question form':<16} {'accuracy':>8} {'n':>4}"]
    for form, row in report["per_form"].items():
        lines.append(f"{form:<16} {row['accuracy']:>8.3f} {row['n']:>4}")
    lines.append(f"{'overall':<16} {report['accuracy']:>8.3f} {report['settings']['n']:>4}")
    if report["yes_rate"] is not None:
        lines.append(f"(answered 'yes' to {report['yes_rate']:.0%} of yes/no questions; truth is ~50%)")
    return "\n".join(lines)


def dump(report: dict, out: str | Path | None) -> str:
    text = json.dumps(report, indent=2)
    if out is not None:
        Path(out).write_text(text + "\n")
    return text


# --- adapters to the real pipelines ---------------------------------------------------------


def _bundle(model: str | None, device: str | None, dtype: str | None):
    from janusflow_core import load_pretrained

    return load_pretrained(model, device=device or "auto", dtype=dtype or "auto")


def make_generator(
    model: str | None,
    device: str | None = None,
    dtype: str | None = None,
    steps: int | None = None,
    cfg: float | None = None,
    sampler: str = "euler",
) -> Generator:
    """``GenerationPipeline`` as a Generator; None steps/cfg use the model's recommendation."""
    from janusflow_core import GenerationPipeline

    pipe = GenerationPipeline(_bundle(model, device, dtype))

    def generate(prompt: str, seed: int, num_images: int) -> list[Image.Image]:
        return list(pipe(prompt, steps=steps, guidance_scale=cfg, seed=seed, num_images=num_images,
                         sampler=sampler).images)

    return generate


def make_answerer(
    model: str | None, device: str | None = None, dtype: str | None = None, max_new_tokens: int = 16
) -> Answerer:
    """``ChatPipeline.answer`` (greedy) as an Answerer."""
    from janusflow_core import ChatPipeline

    chat = ChatPipeline(_bundle(model, device, dtype))

    def answer(question: str, image: Image.Image) -> str:
        return chat.answer(question, images=[image], max_new_tokens=max_new_tokens)

    return answer
