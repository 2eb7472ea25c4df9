"""Render the chat tab's example images (64 x 64 shapes-world scenes) and their questions.

Run from the repository root: ``python assets/examples/make_examples.py``. The output is committed;
rerunning it reproduces the same files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for janusflow_core

from janusflow_core.shapes.world import Obj, Scene, is_valid, render  # noqa: E402

EXAMPLES = [
    ("red_circle_blue_square.png", [Obj("circle", "red", 18, 30, 9), Obj("square", "blue", 46, 30, 8)],
     "Is the circle left of the square?"),
    ("three_triangles.png", [Obj("triangle", "green", 14, 16, 7), Obj("triangle", "orange", 46, 20, 8),
                             Obj("triangle", "purple", 30, 46, 9)],
     "How many triangles are there?"),
    ("yellow_circle_above_purple_square.png", [Obj("circle", "yellow", 32, 16, 9), Obj("square", "purple", 32, 46, 9)],
     "What color is the square?"),
    ("four_objects.png", [Obj("circle", "blue", 15, 15, 8), Obj("square", "orange", 47, 15, 7),
                          Obj("triangle", "red", 15, 47, 8), Obj("circle", "green", 47, 47, 6)],
     "Describe the image."),
]


def main() -> None:
    index = []
    for name, objects, question in EXAMPLES:
        scene = Scene(tuple(objects))
        if not is_valid(scene):
            raise ValueError(f"{name}: the objects overlap or leave the canvas")
        render(scene).save(HERE / name)
        index.append({"image": name, "question": question})
    (HERE / "examples.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    main()
