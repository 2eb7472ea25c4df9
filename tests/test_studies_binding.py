"""studies/binding.py: its rates are the evidence for the "bag of words" reading of the two-object tasks, so
each count must mean what its name says. Checked on scenes drawn by the world's own renderer."""

from __future__ import annotations

from janusflow_core.shapes.world import Obj, Scene, render
from studies import binding as b


def _image(*objects):
    return render(Scene(tuple(Obj(shape, color, cx, cy, 8) for shape, color, cx, cy in objects)))


def test_tally_tells_sets_from_bindings():
    prompt = "a red square and a blue circle"
    right = _image(("square", "red", 15, 20), ("circle", "blue", 45, 40))
    swapped = _image(("square", "blue", 15, 20), ("circle", "red", 45, 40))
    twin = _image(("square", "red", 15, 20), ("square", "blue", 45, 40))
    assert b.tally(prompt, right) == {"shapes": True, "colors": True, "bound": True}
    assert b.tally(prompt, swapped) == {"shapes": True, "colors": True, "bound": False}
    assert b.tally(prompt, twin) == {"shapes": False, "colors": True}
    assert b.tally(prompt, _image(("square", "red", 30, 30))) == {}  # not two objects: not counted
    pos = "a triangle left of a circle"
    assert b.tally(pos, _image(("triangle", "green", 15, 30), ("circle", "red", 45, 30))) == {
        "shapes": True, "bound": True}
    assert b.tally(pos, _image(("triangle", "green", 45, 30), ("circle", "red", 15, 30))) == {
        "shapes": True, "bound": False}
    assert b.tally("a triangle and a circle", _image(("circle", "green", 15, 30), ("circle", "red", 45, 30))) == {
        "shapes": False}


def test_summarise_rates_only_over_two_object_images():
    rows = [{}, {"shapes": True, "bound": True}, {"shapes": True, "bound": False}, {"shapes": False}]
    s = b.summarise(rows)
    assert s["images"] == 4 and s["two_objects"] == 3
    assert s["shapes"] == {"rate": round(2 / 3, 3), "n": 3}
    assert s["bound"] == {"rate": 0.5, "n": 2}
    assert "colors" not in s
