"""Evaluation of a fine-tune that taught the shapes model a new shape (``docs/finetune.md``).

    python -m janusflow_core.evaluation newshape --model OUT --shape ring --reference DATA/new/gen \\
        --und-data DATA/eval/und.jsonl [--images-per-prompt 8] [--seed 0] [--out report.json]

Nothing here knows what the shape looks like: its templates are learned from ``--reference``, a generation
folder of the fine-tuning data (``metadata.jsonl`` + images, written by any program): the images captioned
``a {shape}`` or ``a {color} {shape}`` (one object each). Those and the world's own shapes are passed through the
model's VAE first (``templates.py`` says why), then every generated object is named by its nearest template.

- generation: ``a {shape}`` and ``a {color} {shape}`` for the six colours, ``--images-per-prompt`` fresh seeds
  each (a stream no training run uses). An image passes when it holds exactly one object, well formed by the
  world's rules, recognised as the shape, in the named colour. Prompts that are no caption of the reference
  data are reported apart as held out. The ceiling: reference images not used for the templates, passed
  through the VAE and scored the same way (a model whose latents were perfect would score this).
- understanding: the first question of every record of ``--und-data`` (held-out scenes, e.g.
  ``What shape is the {color} object?``), answered greedily, scored by exact match as the world's VQA;
  reported over all records and over those whose answer is the new shape and those whose answer is another.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ..shapes.prompts import heldout_rng, with_article
from ..shapes.world import COLORS
from .scoring import detect, normalize_answer
from .templates import ShapeTemplates, Transform


def shape_prompts(shape: str) -> list[tuple[str, str | None]]:
    """(prompt, colour it names or None): ``a {shape}`` then ``a {color} {shape}`` per world colour, each with
    its right article ('an orange ring', 'an oval')."""
    return [(with_article(shape), None)] + [(with_article(f"{c} {shape}"), c) for c in COLORS]


def caption_key(text: str) -> str:
    """A caption as the scorer compares it: lower case, no final full stop, 'an' read as 'a' (data written by
    another program may say 'a orange ring')."""
    return re.sub(r"\ban\b", "a", text.strip().lower().rstrip(".").strip())


def reference_templates(folder: str | Path, shape: str, transform: Transform | None = None,
                        limit: int = 200) -> tuple[ShapeTemplates, set[str]]:
    """The world's templates plus ``shape``'s, learned from the first ``limit`` single-object images of a
    generation folder; and the set of its captions (to tell seen prompts from held-out ones)."""
    from ..data_formats import open_rgb, read_gen_folder

    records, problems = read_gen_folder(folder)
    if not records:
        raise ValueError(f"--reference {folder}: no usable records ({'; '.join(problems[:3]) or 'empty'})")
    wanted = {caption_key(p) for p, _ in shape_prompts(shape)}
    chosen = [r for r in records if caption_key(r.text) in wanted][:limit]
    if not chosen:
        raise ValueError(f"--reference {folder}: no image captioned 'a {shape}' or 'a {{color}} {shape}' to learn "
                         "the shape from")
    learned = ShapeTemplates.learn([open_rgb(r.image) for r in chosen], [shape] * len(chosen), transform=transform)
    return ShapeTemplates.world(transform).merged(learned), {caption_key(r.text) for r in records}


def vae_ceiling(folder: str | Path, shape: str, templates: ShapeTemplates, transform: Transform,
                skip: int = 200, n: int = 100) -> float | None:
    """The pass rate of reference images ``skip`` .. ``skip + n`` (not used for the templates) after
    ``transform`` (the VAE round trip), against their own captions; None when the folder has no such images."""
    from ..data_formats import open_rgb, read_gen_folder

    colors = {caption_key(p): c for p, c in shape_prompts(shape)}
    records = [r for r in read_gen_folder(folder)[0] if caption_key(r.text) in colors][skip:skip + n]
    if not records:
        return None
    images = transform([open_rgb(r.image) for r in records])
    return sum(check_single(im, shape, colors[caption_key(r.text)], templates)[0]
               for im, r in zip(images, records)) / len(records)


def check_single(image: Image.Image, shape: str, color: str | None, templates: ShapeTemplates) -> tuple[bool, str]:
    """(passed, reason): one well-formed object of ``shape`` (and ``color`` when named)."""
    found = detect(image, templates)
    if len(found) != 1:
        return False, "count"
    d = found[0]
    if not d.well_formed:
        return False, "malformed"
    if d.shape != shape:
        return False, f"shape:{d.shape}"
    if color is not None and d.color != color:
        return False, "color"
    return True, "pass"


def run_generation(generate: Callable[[str, int, int], list[Image.Image]], shape: str, templates: ShapeTemplates,
                   seen: set[str], images_per_prompt: int = 8, seed: int = 0,
                   save_images: str | Path | None = None) -> dict:
    rng = heldout_rng(seed, f"newshape-{shape}")
    rows, records = {}, []
    for prompt, color in shape_prompts(shape):
        noise_seed = rng.randrange(2**31)
        images = generate(prompt, noise_seed, images_per_prompt)
        results = [check_single(im, shape, color, templates) for im in images]
        for j, (im, (ok, reason)) in enumerate(zip(images, results)):
            records.append({"prompt": prompt, "seed": noise_seed, "index": j, "passed": ok, "reason": reason})
            if save_images is not None:
                Path(save_images).mkdir(parents=True, exist_ok=True)
                im.save(Path(save_images) / f"{prompt.replace(' ', '_')}_{j}_{reason.replace(':', '-')}.png")
        rows[prompt] = {"score": sum(ok for ok, _ in results) / len(results),
                        "held_out": caption_key(prompt) not in seen, "n": len(results)}
    held = [r["score"] for r in rows.values() if r["held_out"]]
    return {"per_prompt": rows, "overall": sum(r["score"] for r in rows.values()) / len(rows),
            "held_out": sum(held) / len(held) if held else None, "records": records}


def run_understanding(answer: Callable[[str, Image.Image], str], und_file: str | Path, shape: str) -> dict:
    from ..data_formats import open_rgb, read_und_file

    records, problems = read_und_file(und_file)
    records = [r for r in records if r.image is not None]
    if not records:
        raise ValueError(f"--und-data {und_file}: no record with an image ({'; '.join(problems[:3]) or 'empty'})")
    out = []
    for r in records:
        question, truth = r.turns[0]
        pred = answer(question, open_rgb(r.image))
        out.append({"question": question, "answer": truth, "prediction": pred,
                    "correct": normalize_answer(pred) == normalize_answer(truth)})

    def acc(rs: list[dict]) -> float | None:
        return sum(r["correct"] for r in rs) / len(rs) if rs else None

    new = [r for r in out if normalize_answer(r["answer"]) == normalize_answer(shape)]
    other = [r for r in out if normalize_answer(r["answer"]) != normalize_answer(shape)]
    return {"accuracy": acc(out), "accuracy_new_shape": acc(new), "accuracy_other": acc(other),
            "n": len(out), "n_new_shape": len(new),
            "says_new_shape": sum(normalize_answer(r["prediction"]) == normalize_answer(shape) for r in out) / len(out),
            "records": out}


def table(report: dict) -> str:
    gen, und = report["generation"], report["understanding"]
    lines = [f"{'prompt':<22} {'score':>6}  held out"]
    for prompt, row in gen["per_prompt"].items():
        lines.append(f"{prompt:<22} {row['score']:>6.3f}  {'yes' if row['held_out'] else 'no'}")
    lines.append(f"{'generation overall':<22} {gen['overall']:>6.3f}")
    if gen["held_out"] is not None:
        lines.append(f"{'held-out prompts':<22} {gen['held_out']:>6.3f}")
    if gen.get("vae_ceiling") is not None:
        lines.append(f"{'VAE ceiling':<22} {gen['vae_ceiling']:>6.3f}  (reference images after a VAE round trip)")
    if und is not None:
        lines.append(f"understanding: {und['accuracy']:.3f} over {und['n']} questions; answer = "
                     f"{report['shape']}: {und['accuracy_new_shape']:.3f} (n {und['n_new_shape']}), other answers: "
                     f"{und['accuracy_other'] if und['accuracy_other'] is not None else float('nan'):.3f}")
    return "\n".join(lines)
