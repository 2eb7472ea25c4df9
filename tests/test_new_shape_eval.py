"""Template shape recognition and the new-shape evaluation: about 1.0 on scenes drawn by the rules (world shapes
and shapes it was never told about, learned from data written by the example script), about 0 on noise and
on scattered fragments, and the world's fill-ratio scorer unchanged when no templates are given."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from janusflow_core.evaluation import new_shape
from janusflow_core.evaluation.scoring import detect
from janusflow_core.evaluation.templates import ShapeTemplates
from janusflow_core.shapes import render, sample_scene

ROOT = Path(__file__).resolve().parents[1]


def _make_data():
    path = ROOT / "examples" / "finetune_new_shape" / "make_data.py"
    spec = importlib.util.spec_from_file_location("make_data", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


md = _make_data()


@pytest.fixture(scope="module")
def world() -> ShapeTemplates:
    return ShapeTemplates.world()


def _learned(world: ShapeTemplates, shape: str, n: int = 30) -> ShapeTemplates:
    rng = random.Random(f"learn-{shape}")
    images = [md.draw(md.place(rng, [shape], [rng.choice(md.COLORS)])) for _ in range(n)]
    return world.merged(ShapeTemplates.learn(images, [shape] * n))


def test_templates_name_world_shapes_like_the_fill_rule(world):
    rng = random.Random(3)
    scenes = [sample_scene(rng) for _ in range(60)]
    agree = [[d.shape for d in detect(render(s), world)] == [d.shape for d in detect(render(s))] for s in scenes]
    truth = [sorted(d.shape for d in detect(render(s), world)) == sorted(o.shape for o in s.objects) for s in scenes]
    assert sum(agree) / len(agree) >= 0.95 and sum(truth) / len(truth) >= 0.95


@pytest.mark.parametrize("shape", sorted(md.NEW_SHAPES))
def test_a_shape_learned_from_data_is_recognised_and_the_others_still_are(world, shape):
    templates = _learned(world, shape)
    rng = random.Random(f"test-{shape}")
    for name in ("circle", "square", "triangle", shape):
        scenes = [md.place(rng, [name] * k, [rng.choice(md.COLORS) for _ in range(k)]) for k in (1, 2, 3) * 8]
        right = [[d.shape for d in detect(md.draw(s), templates)] == [name] * len(s) for s in scenes]
        assert sum(right) / len(right) >= 0.95, (shape, name)
    # the scorer of the evaluation: one object, well formed, the shape, the colour
    ok = [new_shape.check_single(md.draw([t]), shape, t.color, templates)[0]
          for t in (md.place(rng, [shape], [c])[0] for c in md.COLORS for _ in range(4))]
    assert all(ok)
    wrong_colour = md.place(rng, [shape], ["red"])
    assert new_shape.check_single(md.draw(wrong_colour), shape, "blue", templates) == (False, "color")
    circle = md.place(rng, ["circle"], ["red"])
    assert new_shape.check_single(md.draw(circle), shape, None, templates) == (False, "shape:circle")


def test_noise_and_fragments_never_pass(world):
    templates = _learned(world, "ring")
    noise = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)) for i in range(20)]
    assert not any(new_shape.check_single(im, "ring", None, templates)[0] for im in noise)
    rng = np.random.default_rng(0)
    fragments = []
    for _ in range(20):  # scattered short strokes of one colour
        a = np.full((64, 64, 3), 255, dtype=np.uint8)
        for _ in range(12):
            x, y = rng.integers(0, 60, 2)
            a[y:y + 2, x:x + rng.integers(3, 8)] = (220, 30, 30)
        fragments.append(Image.fromarray(a))
    assert not any(new_shape.check_single(im, "ring", None, templates)[0] for im in fragments)
    blank = Image.new("RGB", (64, 64), "white")
    assert new_shape.check_single(blank, "ring", None, templates) == (False, "count")


def test_reference_templates_come_from_the_data_folder_and_seen_prompts_are_known(tmp_path):
    info = md.main(["--shape", "cross", "--out", str(tmp_path), "--n-gen", "80", "--n-und", "4", "--replay", "0.05",
                    "--n-eval", "6"])
    templates, seen = new_shape.reference_templates(tmp_path / "new" / "gen", "cross")
    assert set(templates.names) == {"circle", "square", "triangle", "cross"}
    held = set(info["held_out_prompts"])
    assert len(held) == 2 and not held & seen  # held-out colour prompts are no caption
    assert "a cross" in seen
    report = new_shape.run_generation(lambda p, s, n: [md.draw(md.place(random.Random(s), ["cross"], ["green"]))] * n,
                                      "cross", templates, seen, images_per_prompt=2)
    assert report["per_prompt"]["a green cross"]["score"] == 1.0 and report["per_prompt"]["a cross"]["score"] == 1.0
    assert report["per_prompt"]["a red cross"]["score"] == 0.0  # drawn green
    assert report["held_out"] == pytest.approx(sum(p == "a green cross" for p in held) / 2)
    folder = tmp_path / "new" / "gen"
    assert new_shape.vae_ceiling(folder, "cross", templates, lambda ims: ims, skip=10, n=10) == 1.0
    def blank_out(ims):
        return [Image.new("RGB", (64, 64), "white")] * len(ims)

    blank = new_shape.vae_ceiling(folder, "cross", templates, blank_out, skip=10, n=10)
    assert blank == 0.0
    assert new_shape.vae_ceiling(folder, "cross", templates, lambda ims: ims, skip=10_000) is None
    und = new_shape.run_understanding(lambda q, im: "cross", tmp_path / "eval" / "und.jsonl", "cross")
    assert und["n"] == 6 and und["accuracy_new_shape"] == 1.0 and und["says_new_shape"] == 1.0
    assert und["accuracy_other"] in (0.0, None)
    with pytest.raises(ValueError, match="no image captioned 'a star'"):
        new_shape.reference_templates(tmp_path / "new" / "gen", "star")
