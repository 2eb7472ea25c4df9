"""Write fine-tuning data that teaches the shapes model a shape it has never seen.

    python examples/finetune_new_shape/make_data.py --shape star --out data/star

It writes the two formats ``python -m janusflow_core.finetune`` reads, as any other program would
(Pillow images + JSON lines), under ``--out``:

- ``new/gen/``      text-to-image pairs: ``metadata.jsonl`` (``{"file_name", "text"}``) + PNGs of scenes
                    holding the new shape, captioned with the world's six prompt forms;
- ``new/und.jsonl`` LLaVA conversations about those scenes (``images/`` beside it);
- ``replay/gen/``, ``replay/und.jsonl``  the world's own data (circles, squares, triangles) in the same
                    formats: mixed in, it keeps what the model already knows;
- ``eval/und.jsonl`` held-out scenes (another random stream) with ``What shape is the {color} object?``
                    for the evaluation command ``python -m janusflow_core.evaluation newshape``.

Objects follow ``shared/shapes-world.md`` (64 x 64 white canvas, half-size 5..10, boxes 3 px apart, the six
colours); the new shape is drawn inside its box with Pillow, fill only, no anti-aliasing. Two of the six
``a {color} {shape}`` prompts of the new shape (picked by a hash of the text, not by hand) never appear as a
caption, so the evaluation can test colour-shape pairs the model has not seen. Shapes this script can draw:
``star``, ``ring``, ``hexagon``, ``diamond``, ``cross`` (any of them is "new" to the shipped model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from janusflow_core.shapes import (
    NUMBER_WORDS,
    PALETTE,
    describe,
    render,
    sample_prompt,
    sample_question,
    sample_scene,
)
from janusflow_core.shapes.prompts import with_article

CANVAS, MARGIN, MIN_GAP = 64, 1, 3
WORLD_SHAPES = ("circle", "square", "triangle")
COLORS = tuple(PALETTE)
HELD_OUT_COLORS = 2  # "a {color} {new shape}" prompts kept out of the captions


def _regular(cx: int, cy: int, r: int, n: int, phase: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(phase + 2 * math.pi * k / n), cy + r * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def draw_star(d: ImageDraw.ImageDraw, cx: int, cy: int, r: int, fill) -> None:
    """Five points, apex up, inner radius 0.5 r (the box is about 1.9 r wide)."""
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else 0.5 * r
        a = -math.pi / 2 + math.pi * k / 5
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    d.polygon(pts, fill=fill)


def draw_ring(d: ImageDraw.ImageDraw, cx: int, cy: int, r: int, fill) -> None:
    """A disc with a white hole of radius 0.5 r."""
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    h = max(2, round(0.5 * r))
    d.ellipse((cx - h, cy - h, cx + h, cy + h), fill=(255, 255, 255))


def draw_hexagon(d: ImageDraw.ImageDraw, cx: int, cy: int, r: int, fill) -> None:
    d.polygon(_regular(cx, cy, r, 6, 0.0), fill=fill)


def draw_diamond(d: ImageDraw.ImageDraw, cx: int, cy: int, r: int, fill) -> None:
    d.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)


def draw_cross(d: ImageDraw.ImageDraw, cx: int, cy: int, r: int, fill) -> None:
    """A plus sign whose arms are about 0.8 r wide."""
    w = max(2, round(0.4 * r))
    d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)


NEW_SHAPES = {"star": draw_star, "ring": draw_ring, "hexagon": draw_hexagon, "diamond": draw_diamond,
              "cross": draw_cross}


@dataclass(frozen=True)
class Thing:
    shape: str
    color: str
    cx: int
    cy: int
    r: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.cx - self.r, self.cy - self.r, self.cx + self.r, self.cy + self.r)


def _apart(a: Thing, b: Thing) -> bool:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return max(bx0 - ax1, ax0 - bx1) - 1 >= MIN_GAP or max(by0 - ay1, ay0 - by1) - 1 >= MIN_GAP


def place(rng: random.Random, shapes: list[str], colors: list[str]) -> list[Thing]:
    for _ in range(1000):
        things: list[Thing] = []
        for s, c in zip(shapes, colors):
            r = rng.randint(5, 10)
            t = Thing(s, c, rng.randint(MARGIN + r, CANVAS - 1 - MARGIN - r),
                      rng.randint(MARGIN + r, CANVAS - 1 - MARGIN - r), r)
            if not all(_apart(t, o) for o in things):
                break
            things.append(t)
        else:
            return things
    raise RuntimeError(f"could not place {shapes}")


def draw(things: list[Thing]) -> Image.Image:
    image = Image.new("RGB", (CANVAS, CANVAS), (255, 255, 255))
    d = ImageDraw.Draw(image)
    for t in things:
        fill = PALETTE[t.color]
        if t.shape == "circle":
            d.ellipse(t.box, fill=fill)
        elif t.shape == "square":
            d.rectangle(t.box, fill=fill)
        elif t.shape == "triangle":
            d.polygon([(t.cx, t.cy - t.r), (t.cx - t.r, t.cy + t.r), (t.cx + t.r, t.cy + t.r)], fill=fill)
        else:
            NEW_SHAPES[t.shape](d, t.cx, t.cy, t.r, fill)
    return image


def held_out_colors(shape: str) -> tuple[str, ...]:
    """The colours whose ``a {color} {shape}`` prompt never becomes a caption (first by md5 of the text, hashed
    as ``a {color} {shape}`` whatever the article: the captions now say 'an orange ring', and no colour moved)."""
    ranked = sorted(COLORS, key=lambda c: hashlib.md5(f"a {c} {shape}".encode()).hexdigest())
    return tuple(ranked[:HELD_OUT_COLORS])


def _rel(a: Thing, b: Thing) -> str | None:
    if a.cx <= b.cx - 4:
        return "left of"
    if b.cx <= a.cx - 4:
        return "right of"
    if a.cy <= b.cy - 4:
        return "above"
    if b.cy <= a.cy - 4:
        return "below"
    return None


def new_shape_pair(rng: random.Random, shape: str) -> tuple[list[Thing], str]:
    """A scene holding the new shape and its caption in one of the six prompt forms. Single-object
    prompts get half the scenes: they are what the new word must first be tied to."""
    held = held_out_colors(shape)
    task = rng.choice(["single_object", "colors", "colors", "single_object", "two_object", "counting",
                       "position", "color_attr"])
    if task in ("single_object", "colors"):
        color = rng.choice([c for c in COLORS if c not in held]) if task == "colors" else rng.choice(COLORS)
        things = place(rng, [shape], [color])
        return things, with_article(f"{color} {shape}" if task == "colors" else shape)
    if task == "counting":
        n = rng.choice((2, 3, 4))
        return place(rng, [shape] * n, [rng.choice(COLORS) for _ in range(n)]), f"{NUMBER_WORDS[n]} {shape}s"
    other = rng.choice(WORLD_SHAPES)
    c1, c2 = rng.sample(COLORS, 2)
    order = [shape, other] if rng.random() < 0.5 else [other, shape]
    while True:
        things = place(rng, order, [c1, c2])
        rel = _rel(things[0], things[1])
        if task != "position" or rel is not None:
            break
    a, b = things
    if task == "two_object":
        return things, f"{with_article(a.shape)} and {with_article(b.shape)}"
    if task == "position":
        return things, f"{with_article(a.shape)} {rel} {with_article(b.shape)}"
    return things, f"{with_article(f'{a.color} {a.shape}')} and {with_article(f'{b.color} {b.shape}')}"


def _describe(things: list[Thing]) -> str:
    """Every object with its colour, left to right, in the world's wording (``shapes.describe``)."""
    things = sorted(things, key=lambda t: (t.cx, t.cy))
    names = [with_article(f"{t.color} {t.shape}") for t in things]
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        a, b = things
        if a.cx <= b.cx - 4:
            return f"{names[0]} left of {names[1]}"
        if a.cy <= b.cy - 4:
            return f"{names[0]} above {names[1]}"
        if b.cy <= a.cy - 4:
            return f"{names[1]} above {names[0]}"
        return f"{names[0]} and {names[1]}"
    return f"{NUMBER_WORDS[len(names)]} objects: " + ", ".join(names[:-1]) + f" and {names[-1]}"


def questions(rng: random.Random, things: list[Thing], shape: str) -> list[tuple[str, str]]:
    """Questions of the world's forms about a scene with the new shape (the shape word free)."""
    qs: list[tuple[str, str]] = []
    shapes = [t.shape for t in things]
    colors = [t.color for t in things]
    for t in things:
        if colors.count(t.color) == 1:
            qs.append((f"What shape is the {t.color} object?", t.shape))
        if shapes.count(t.shape) == 1:
            qs.append((f"What color is the {t.shape}?", t.color))
    qs.append((f"How many {shape}s are there?", NUMBER_WORDS[shapes.count(shape)]))
    qs.append(("How many objects are there?", NUMBER_WORDS[len(things)]))
    c = rng.choice(COLORS)
    qs.append((f"Is there a {c} {shape}?", "yes" if any(t.shape == shape and t.color == c for t in things) else "no"))
    qs.append(("Describe the image.", _describe(things)))
    rng.shuffle(qs)
    return qs


def new_shape_scene(rng: random.Random, shape: str, n_max: int = 3) -> list[Thing]:
    n = rng.randint(1, n_max)
    shapes = [shape] + [rng.choice(WORLD_SHAPES + (shape,)) for _ in range(n - 1)]
    rng.shuffle(shapes)
    return place(rng, shapes, [rng.choice(COLORS) for _ in range(n)])


def conversation(qas: list[tuple[str, str]], image: bool) -> list[dict]:
    turns = []
    for k, (q, a) in enumerate(qas):
        turns.append({"from": "human", "value": f"<image>\n{q}" if image and k == 0 else q})
        turns.append({"from": "gpt", "value": a})
    return turns


def write_gen(folder: Path, pairs) -> int:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    n = 0
    with (folder / "metadata.jsonl").open("w") as f:
        for i, (image, caption) in enumerate(pairs):
            name = f"images/{i:05d}.png"
            image.save(folder / name)
            f.write(json.dumps({"file_name": name, "text": caption}) + "\n")
            n += 1
    return n


def write_und(path: Path, records) -> int:
    (path.parent / "images").mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for i, (image, turns) in enumerate(records):
            rec = {"id": f"{path.stem}-{i}", "conversations": turns}
            if image is not None:
                name = f"images/{path.stem}-{i:05d}.png"
                image.save(path.parent / name)
                rec = {"id": rec["id"], "image": name, "conversations": turns}
            f.write(json.dumps(rec) + "\n")
            n += 1
    return n


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="star", choices=sorted(NEW_SHAPES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-gen", type=int, default=2000, help="text-to-image pairs of the new shape")
    ap.add_argument("--n-und", type=int, default=2000, help="conversations about new-shape scenes")
    ap.add_argument("--replay", type=float, default=1.0,
                    help="world records written per new-shape record (generation and understanding alike)")
    ap.add_argument("--turns", type=int, default=3, help="question/answer turns per conversation")
    ap.add_argument("--n-eval", type=int, default=200, help="held-out questions for the evaluation")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if min(args.n_gen, args.n_und, args.turns) < 1 or args.replay < 0 or args.n_eval < 0:
        ap.error("--n-gen, --n-und and --turns must be at least 1; --replay and --n-eval at least 0")
    out, shape = Path(args.out), args.shape
    rng = random.Random(f"new-shape:{shape}:{args.seed}")

    def gen_new():
        for _ in range(args.n_gen):
            things, caption = new_shape_pair(rng, shape)
            yield draw(things), caption

    def und_new():
        for _ in range(args.n_und):
            things = new_shape_scene(rng, shape)
            yield draw(things), conversation(questions(rng, things, shape)[:args.turns], True)

    world = random.Random(f"replay:{args.seed}")
    tasks = ("single_object", "two_object", "two_object", "counting", "colors", "position", "position",
             "color_attr", "color_attr")  # the recipe's task weights (1, 2, 1, 1, 2, 2)

    def gen_replay():
        for i in range(round(args.n_gen * args.replay)):
            prompt, scene = sample_prompt(world, tasks[i % len(tasks)], split="train")
            yield render(scene), prompt

    def und_replay():
        for i in range(round(args.n_und * args.replay)):
            scene = sample_scene(world)
            if i % 5 == 4:  # a fifth text-only, as the recipe's text samples: the scene in words + a question
                q, a = sample_question(world, scene)
                yield None, conversation([(f"{describe(scene)}. {q}", a)], False)
                continue
            qas: list[tuple[str, str]] = []
            for _ in range(3 * args.turns):
                qa = sample_question(world, scene)
                if qa not in qas:
                    qas.append(qa)
                if len(qas) == args.turns:
                    break
            yield render(scene), conversation(qas, True)

    held = random.Random(f"new-shape-eval:{shape}:{args.seed}")

    def und_eval():
        n = 0
        while n < args.n_eval:
            things = new_shape_scene(held, shape)
            colors = [t.color for t in things]
            for t in things:
                if colors.count(t.color) == 1 and n < args.n_eval:
                    yield draw(things), conversation([(f"What shape is the {t.color} object?", t.shape)], True)
                    n += 1

    counts = {
        "new/gen": write_gen(out / "new" / "gen", gen_new()),
        "new/und.jsonl": write_und(out / "new" / "und.jsonl", und_new()),
        "replay/gen": write_gen(out / "replay" / "gen", gen_replay()),
        "replay/und.jsonl": write_und(out / "replay" / "und.jsonl", und_replay()),
        "eval/und.jsonl": write_und(out / "eval" / "und.jsonl", und_eval()),
    }
    info = {"shape": shape, "held_out_prompts": [with_article(f"{c} {shape}") for c in held_out_colors(shape)],
            "records": counts, "seed": args.seed}
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()
