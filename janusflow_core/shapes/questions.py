"""Understanding questions about a shapes-world scene, and the full description.

Seven question forms (``QUESTION_FORMS``); all but ``describe`` have a one-word lower-case
answer. ``sample_question`` picks a form uniformly among those that apply to the scene and,
for yes/no forms, picks "yes" and "no" with equal chance, so a model that always says "yes"
scores 50% on them.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from .prompts import with_article
from .world import COLORS, MIRROR, NUMBER_WORDS, RELATIONS, SHAPES, Obj, Scene, above, holds, left_of

QUESTION_FORMS: tuple[str, ...] = (
    "color_of_shape",  # What color is the {shape}?
    "shape_of_color",  # What shape is the {color} object?
    "count_shape",  # How many {shape}s are there?
    "count_objects",  # How many objects are there?
    "exists",  # Is there a {color} {shape}?
    "relation",  # Is the {shape1} {relation} the {shape2}?
    "describe",  # Describe the image.
)
ONE_WORD_FORMS: tuple[str, ...] = QUESTION_FORMS[:-1]
YES_NO_FORMS: tuple[str, ...] = ("exists", "relation")
DESCRIBE_QUESTION = "Describe the image."


def _name(o: Obj) -> str:
    return with_article(f"{o.color} {o.shape}")  # "a red circle", "an orange square"


def describe(scene: Scene) -> str:
    """A caption naming every object with its colour, left to right.

    Two objects are joined by their relation ("a red circle left of a blue square", or "above"
    when they are not 4 px apart horizontally); three or four are counted and listed.
    """
    objs = sorted(scene.objects, key=lambda o: (o.cx, o.cy))
    names = [_name(o) for o in objs]
    if len(objs) == 1:
        return names[0]
    if len(objs) == 2:
        a, b = objs
        if left_of(a, b):
            return f"{names[0]} left of {names[1]}"
        if above(a, b):
            return f"{names[0]} above {names[1]}"
        if above(b, a):
            return f"{names[1]} above {names[0]}"
        return f"{names[0]} and {names[1]}"
    return f"{NUMBER_WORDS[len(objs)]} objects: " + ", ".join(names[:-1]) + f" and {names[-1]}"


def all_questions(scene: Scene) -> dict[str, list[tuple[str, str]]]:
    """Every question that applies to the scene, with its answer, grouped by form."""
    objs = scene.objects
    unique_shapes = [s for s in SHAPES if scene.count(shape=s) == 1]
    unique_colors = [c for c in COLORS if scene.count(color=c) == 1]
    out: dict[str, list[tuple[str, str]]] = {f: [] for f in QUESTION_FORMS}
    for s in unique_shapes:
        o = next(o for o in objs if o.shape == s)
        out["color_of_shape"].append((f"What color is the {s}?", o.color))
    for c in unique_colors:
        o = next(o for o in objs if o.color == c)
        out["shape_of_color"].append((f"What shape is the {c} object?", o.shape))
    for s in SHAPES:
        out["count_shape"].append((f"How many {s}s are there?", NUMBER_WORDS[scene.count(shape=s)]))
    out["count_objects"].append(("How many objects are there?", NUMBER_WORDS[len(objs)]))
    for c, s in itertools.product(COLORS, SHAPES):
        answer = "yes" if scene.count(shape=s, color=c) else "no"
        out["exists"].append((f"Is there {with_article(f'{c} {s}')}?", answer))
    for s1, s2 in itertools.permutations(unique_shapes, 2):
        a = next(o for o in objs if o.shape == s1)
        b = next(o for o in objs if o.shape == s2)
        for rel in RELATIONS:
            if holds(a, rel, b) or holds(a, MIRROR[rel], b):
                answer = "yes" if holds(a, rel, b) else "no"
                out["relation"].append((f"Is the {s1} {rel} the {s2}?", answer))
    out["describe"].append((DESCRIBE_QUESTION, describe(scene)))
    return out


def sample_question(
    rng: random.Random, scene: Scene, forms: Sequence[str] | None = None
) -> tuple[str, str]:
    """A (question, answer) pair: a form uniform among those that apply, yes/no balanced."""
    _, question, answer = sample_question_with_form(rng, scene, forms)
    return question, answer


def sample_question_with_form(
    rng: random.Random, scene: Scene, forms: Sequence[str] | None = None
) -> tuple[str, str, str]:
    """Like :func:`sample_question`, also naming the form the question was drawn from."""
    forms = QUESTION_FORMS if forms is None else tuple(forms)
    unknown = set(forms) - set(QUESTION_FORMS)
    if unknown:
        raise ValueError(f"unknown question forms {sorted(unknown)}; allowed: {QUESTION_FORMS}")
    table = all_questions(scene)
    available = [f for f in forms if table[f]]
    if not available:
        raise ValueError(f"none of the forms {forms} applies to this scene")
    form = rng.choice(available)
    items = table[form]
    answers = sorted({a for _, a in items})
    if set(answers) <= {"yes", "no"}:
        wanted = rng.choice(answers)
        items = [qa for qa in items if qa[1] == wanted]
    question, answer = rng.choice(items)
    return form, question, answer
