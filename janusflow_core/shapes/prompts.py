"""The six GenEval-style generation prompt forms of the shapes world, and the held-out split.

A prompt describes the WHOLE scene: a scene (or a set of detected objects) satisfies a prompt
when it holds exactly the objects the prompt names and nothing else; colours the prompt leaves
open are free. ``satisfies`` is that rule, written once; the scene sampler, the training
captions and the evaluator all use it.

Held-out split
--------------
Rewordings name the same scene ("a square right of a circle" is "a circle left of a square"),
so the split is decided on a prompt's canonical form and rewordings always share a split.
For each task the canonical prompts are ranked by the md5 of their text and the first
``round(10%)`` (at least one) are ``'test'``, when the task has at least nine canonical
prompts. That holds out 1 of 9 counting prompts, 2 of 18 colour prompts, 1 of 12 position
prompts and 9 of 90 colour-attribute prompts. ``single_object`` (3 prompts) and
``two_object`` (3 canonical prompts) are too small to hold any out: every prompt of theirs is
``'train'``, and their evaluation is held out only by using fresh seeds. Training must drop
captions whose ``split_of`` is ``'test'``; ``scene_split`` marks whole scenes whose
six-form captions include a held-out prompt, so that generation training can skip them too.
Evaluation scenes and seeds come from separately seeded streams (``heldout_rng``).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .world import COLORS, MIRROR, NUMBER_WORDS, RELATIONS, SHAPES, Scene, holds, sample_scene

TASKS: tuple[str, ...] = (
    "single_object",
    "two_object",
    "counting",
    "colors",
    "position",
    "color_attr",
)
PROMPT_FORMS: dict[str, str] = {
    "single_object": "a {shape}",
    "two_object": "a {shape1} and a {shape2}  (different shapes)",
    "counting": "{two|three|four} {shape}s",
    "colors": "a {color} {shape}  ('an' before a vowel: 'an orange circle')",
    "position": "a {shape1} {left of|right of|above|below} a {shape2}  (different shapes)",
    "color_attr": "a {color1} {shape1} and a {color2} {shape2}  (different shapes and colours; 'an orange')",
}
COUNTS: tuple[int, ...] = (2, 3, 4)
HELDOUT_FRACTION = 0.1
MIN_PROMPTS_TO_HOLD_OUT = 9


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt asks for: one (shape, colour-or-None) per object, and maybe a relation.

    For ``position`` the relation reads ``shapes[0] {relation} shapes[1]``.
    """

    task: str
    shapes: tuple[str, ...]
    colors: tuple[str | None, ...]
    relation: str | None = None

    @property
    def count(self) -> int:
        return len(self.shapes)


def with_article(words: str) -> str:
    """``words`` after the right indefinite article: 'a red circle', 'an orange square'."""
    return f"{'an' if words[:1].lower() in 'aeiou' else 'a'} {words}"


def split_key(text: str) -> str:
    """The text the held-out split is hashed on: every ``an`` written ``a``, as all text was before the
    articles were fixed, so that fix moved no prompt, caption or scene between train and test."""
    return _AN.sub("a", text)


_AN = re.compile(r"\ban\b")


def format_prompt(spec: PromptSpec) -> str:
    s, c = spec.shapes, spec.colors
    if spec.task == "single_object":
        return with_article(s[0])
    if spec.task == "two_object":
        return f"{with_article(s[0])} and {with_article(s[1])}"
    if spec.task == "counting":
        return f"{NUMBER_WORDS[spec.count]} {s[0]}s"
    if spec.task == "colors":
        return with_article(f"{c[0]} {s[0]}")
    if spec.task == "position":
        return f"{with_article(s[0])} {spec.relation} {with_article(s[1])}"
    if spec.task == "color_attr":
        return f"{with_article(f'{c[0]} {s[0]}')} and {with_article(f'{c[1]} {s[1]}')}"
    raise ValueError(f"unknown task {spec.task!r}; tasks: {TASKS}")


_S = "(" + "|".join(SHAPES) + ")"
_C = "(" + "|".join(COLORS) + ")"
_N = "(" + "|".join(NUMBER_WORDS[n] for n in COUNTS) + ")"
_R = "(" + "|".join(RELATIONS) + ")"
_A = "an?"  # "a" or "an": the old texts (and users) wrote "a orange", the fixed ones "an orange"
_PATTERNS = [
    ("single_object", re.compile(f"{_A} {_S}")),
    ("two_object", re.compile(f"{_A} {_S} and {_A} {_S}")),
    ("counting", re.compile(f"{_N} {_S}s")),
    ("colors", re.compile(f"{_A} {_C} {_S}")),
    ("position", re.compile(f"{_A} {_S} {_R} {_A} {_S}")),
    ("color_attr", re.compile(f"{_A} {_C} {_S} and {_A} {_C} {_S}")),
]


def _forms_text() -> str:
    return "; ".join(f"{t}: '{f}'" for t, f in PROMPT_FORMS.items())


def parse_prompt(prompt: str) -> PromptSpec:
    """Parse one of the six prompt forms (case, outer spaces and a final full stop forgiven)."""
    text = " ".join(prompt.strip().lower().rstrip(".").split())
    for task, pattern in _PATTERNS:
        m = pattern.fullmatch(text)
        if m is None:
            continue
        g = m.groups()
        if task == "single_object":
            spec = PromptSpec(task, (g[0],), (None,))
        elif task == "two_object":
            spec = PromptSpec(task, (g[0], g[1]), (None, None))
        elif task == "counting":
            n = NUMBER_WORDS.index(g[0])
            spec = PromptSpec(task, (g[1],) * n, (None,) * n)
        elif task == "colors":
            spec = PromptSpec(task, (g[1],), (g[0],))
        elif task == "position":
            spec = PromptSpec(task, (g[0], g[2]), (None, None), g[1])
        else:
            spec = PromptSpec(task, (g[1], g[3]), (g[0], g[2]))
        if task in ("two_object", "position", "color_attr") and spec.shapes[0] == spec.shapes[1]:
            raise ValueError(f"{prompt!r}: the {task} form needs two different shapes")
        if task == "color_attr" and spec.colors[0] == spec.colors[1]:
            raise ValueError(f"{prompt!r}: the color_attr form needs two different colours")
        return spec
    raise ValueError(f"{prompt!r} is not a shapes-world prompt; allowed forms: {_forms_text()}")


def canonical(spec: PromptSpec) -> PromptSpec:
    """One representative per asked-for scene: rewordings map to the same spec."""
    if spec.task in ("two_object", "color_attr"):
        pairs = sorted(zip(spec.shapes, spec.colors), key=lambda p: p[0])
        return PromptSpec(spec.task, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
    if spec.task == "position" and spec.relation in ("right of", "below"):
        return PromptSpec(spec.task, spec.shapes[::-1], spec.colors, MIRROR[spec.relation])
    return spec


def is_rewording(a: str | PromptSpec, b: str | PromptSpec) -> bool:
    """Whether two prompts ask for the same scenes."""
    a = parse_prompt(a) if isinstance(a, str) else a
    b = parse_prompt(b) if isinstance(b, str) else b
    return canonical(a) == canonical(b)


@functools.cache
def all_prompts(task: str) -> tuple[str, ...]:
    """Every prompt text of a task, rewordings included, in a fixed order."""
    if task == "single_object":
        specs = [PromptSpec(task, (s,), (None,)) for s in SHAPES]
    elif task == "two_object":
        specs = [PromptSpec(task, p, (None, None)) for p in itertools.permutations(SHAPES, 2)]
    elif task == "counting":
        specs = [PromptSpec(task, (s,) * n, (None,) * n) for n in COUNTS for s in SHAPES]
    elif task == "colors":
        specs = [PromptSpec(task, (s,), (c,)) for c in COLORS for s in SHAPES]
    elif task == "position":
        specs = [
            PromptSpec(task, p, (None, None), r) for p in itertools.permutations(SHAPES, 2) for r in RELATIONS
        ]
    elif task == "color_attr":
        specs = [
            PromptSpec(task, s, c)
            for s in itertools.permutations(SHAPES, 2)
            for c in itertools.permutations(COLORS, 2)
        ]
    else:
        raise ValueError(f"unknown task {task!r}; tasks: {TASKS}")
    return tuple(format_prompt(s) for s in specs)


@functools.cache
def _all_specs() -> tuple[tuple[str, PromptSpec], ...]:
    return tuple((p, parse_prompt(p)) for task in TASKS for p in all_prompts(task))


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


@functools.cache
def heldout_prompts(task: str) -> frozenset[str]:
    """The canonical prompt texts of a task that are held out of training."""
    keys = sorted({format_prompt(canonical(parse_prompt(p))) for p in all_prompts(task)})
    if len(keys) < MIN_PROMPTS_TO_HOLD_OUT:
        return frozenset()
    k = max(1, round(HELDOUT_FRACTION * len(keys)))
    return frozenset(sorted(keys, key=lambda key: _md5(split_key(key)))[:k])


def split_of(key: str) -> str:
    """``'train'`` or ``'test'`` for a prompt (decided on its canonical form) or any other key.

    A key that is not one of the six prompt forms is hashed: about 10% are ``'test'``.
    """
    try:
        spec = parse_prompt(key)
    except ValueError:
        return "test" if int(_md5(split_key(key))[:8], 16) % 10 == 0 else "train"
    return "test" if format_prompt(canonical(spec)) in heldout_prompts(spec.task) else "train"


def heldout_rng(seed: int, stream: str = "") -> random.Random:
    """A random stream for evaluation, disjoint by construction from ``random.Random(int)``."""
    return random.Random(f"shapes-heldout:{stream}:{seed}")


# --- the "exactly" rule ---------------------------------------------------------------------


def satisfies(objects: Sequence, spec: PromptSpec) -> bool:
    """Whether these objects (with .shape, .color, .cx, .cy) are exactly what ``spec`` names."""
    if len(objects) != spec.count:
        return False
    if sorted(o.shape for o in objects) != sorted(spec.shapes):
        return False
    for shape, color in zip(spec.shapes, spec.colors):
        if color is not None and not any(o.shape == shape and o.color == color for o in objects):
            return False  # shapes are distinct whenever colours are named, so this is exact
    if spec.relation is not None:
        a = next(o for o in objects if o.shape == spec.shapes[0])
        b = next(o for o in objects if o.shape == spec.shapes[1])
        return holds(a, spec.relation, b)
    return True


def _sample_spec(rng: random.Random, task: str) -> PromptSpec:
    if task == "single_object":
        return PromptSpec(task, (rng.choice(SHAPES),), (None,))
    if task == "two_object":
        return PromptSpec(task, tuple(rng.sample(SHAPES, 2)), (None, None))
    if task == "counting":
        n = rng.choice(COUNTS)
        return PromptSpec(task, (rng.choice(SHAPES),) * n, (None,) * n)
    if task == "colors":
        return PromptSpec(task, (rng.choice(SHAPES),), (rng.choice(COLORS),))
    if task == "position":
        return PromptSpec(task, tuple(rng.sample(SHAPES, 2)), (None, None), rng.choice(RELATIONS))
    if task == "color_attr":
        return PromptSpec(task, tuple(rng.sample(SHAPES, 2)), tuple(rng.sample(COLORS, 2)))
    raise ValueError(f"unknown task {task!r}; tasks: {TASKS}")


def sample_scene_for(rng: random.Random, prompt: str | PromptSpec, max_tries: int = 1000) -> Scene:
    """A random scene that satisfies the prompt (open colours random)."""
    spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    for _ in range(max_tries):
        scene = sample_scene(rng, shapes=spec.shapes, colors=spec.colors)
        if satisfies(scene.objects, spec):
            return scene
    raise RuntimeError(f"no scene found for {format_prompt(spec)!r}")


def sample_prompt(rng: random.Random, task: str, split: str | None = None) -> tuple[str, Scene]:
    """A random prompt of the task's form and a scene holding exactly what it names.

    With ``split`` the prompt is drawn from that split only; a task without held-out prompts
    raises ValueError for ``split='test'`` (see ``heldout_prompts``).
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', not {split!r}")
    if split == "test" and not heldout_prompts(task):
        raise ValueError(f"task {task!r} has no held-out prompts")
    while True:
        spec = _sample_spec(rng, task)
        prompt = format_prompt(spec)
        if split is None or split_of(prompt) == split:
            return prompt, sample_scene_for(rng, spec)


def scene_captions(scene: Scene, split: str | None = None) -> list[str]:
    """Every true caption of the six forms for this scene (rewordings included).

    With ``split='train'`` held-out captions are dropped.
    """
    captions = [p for p, spec in _all_specs() if satisfies(scene.objects, spec)]
    if split is not None:
        captions = [c for c in captions if split_of(c) == split]
    return captions


def scene_split(scene: Scene) -> str:
    """``'test'`` when any six-form caption of the scene is a held-out prompt, else ``'train'``."""
    return "test" if any(split_of(c) == "test" for c in scene_captions(scene)) else "train"
