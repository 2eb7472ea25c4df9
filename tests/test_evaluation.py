"""The evaluators score ~1 on scenes drawn by the spec and ~0 on noise and fragments."""

import json
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from janusflow_core.evaluation import __main__ as cli
from janusflow_core.evaluation import (
    alternative_prompts,
    benchmarks,
    chance_baseline,
    check_image,
    detect,
    geneval_score,
    image_passes,
    normalize_answer,
    parse_prompt,
    vqa_accuracy,
)
from janusflow_core.shapes import (
    COLORS,
    PALETTE,
    TASKS,
    Obj,
    Scene,
    all_prompts,
    all_questions,
    render,
    sample_prompt,
    sample_scene,
    sample_scene_for,
)


def _rendered_benchmark(per_task: int, seed: int = 0) -> dict[str, list[Image.Image]]:
    rng = random.Random(seed)
    images: dict[str, list[Image.Image]] = {}
    for task in TASKS:
        for _ in range(per_task):
            prompt, scene = sample_prompt(rng, task)
            images.setdefault(prompt, []).append(render(scene))
    return images


def _noise(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def _fragments(rng: random.Random, size: int) -> Image.Image:
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    cells = [(x, y) for x in range(1, 64 - size, size + 2) for y in range(1, 64 - size, size + 2)]
    for x, y in rng.sample(cells, 40):  # separate blobs, never touching
        draw.rectangle((x, y, x + size - 1, y + size - 1), fill=PALETTE[rng.choice(COLORS)])
    return image


def test_rendered_scenes_of_every_task_pass():
    score = geneval_score(_rendered_benchmark(per_task=30))
    assert score["per_task"] == {t: 1.0 for t in TASKS} and score["overall"] == 1.0


def test_detection_recovers_shapes_colours_and_centres():
    rng = random.Random(5)
    for _ in range(100):
        scene = sample_scene(rng)
        found = sorted(detect(render(scene)), key=lambda d: (d.cx, d.cy))
        objs = sorted(scene.objects, key=lambda o: (o.cx, o.cy))
        expected = [(o.shape, o.color, o.cx, o.cy) for o in objs]
        assert [(d.shape, d.color, d.cx, d.cy) for d in found] == expected
        assert all(d.well_formed for d in found)


def test_noise_and_fragments_score_zero():
    prompts = [p for task in TASKS for p in all_prompts(task)[:4]]
    np_rng, rng = np.random.default_rng(0), random.Random(0)
    for prompt in prompts:
        assert not image_passes(_noise(np_rng), prompt)
        assert not image_passes(_fragments(rng, size=3), prompt)  # 9 px blobs: ignored, nothing detected
        assert not image_passes(_fragments(rng, size=4), prompt)  # 16 px blobs: detected, malformed
    assert detect(_fragments(random.Random(1), size=3)) == []
    assert geneval_score({p: [_noise(np_rng)] for p in prompts})["overall"] == 0.0


def test_chance_baseline_of_rendered_scenes_is_low_and_excludes_rewordings():
    images = _rendered_benchmark(per_task=60, seed=1)
    assert chance_baseline(images)["overall"] <= 0.15
    alternatives = alternative_prompts("a circle left of a square")
    assert "a square right of a circle" not in alternatives  # a rewording
    assert "a circle left of a square" not in alternatives
    assert "a circle right of a square" in alternatives and len(alternatives) == 22
    assert "a square and a circle" not in alternative_prompts("a circle and a square")
    assert alternative_prompts("three circles") == alternative_prompts("three circles")  # deterministic


def test_text_ignoring_images_score_near_their_baseline():
    rng = random.Random(2)
    images = {}
    for task in TASKS:
        for _ in range(40):
            prompt = sample_prompt(rng, task)[0]
            other = sample_prompt(rng, task)[0]  # draws a scene for some prompt of the task
            images.setdefault(prompt, []).append(render(sample_scene_for(rng, other)))
    score, base = geneval_score(images)["overall"], chance_baseline(images)["overall"]
    assert score < 0.5 and abs(score - base) < 0.15


def _pair(dx: int) -> Image.Image:
    # vertically apart, so the horizontal offset can sit at the 4 px boundary
    return render(Scene((Obj("circle", "red", 20, 15, 6), Obj("square", "blue", 20 + dx, 45, 6))))


def test_relation_scoring_uses_the_4px_rule():
    assert image_passes(_pair(4), "a circle left of a square")
    assert image_passes(_pair(4), "a square right of a circle")
    assert image_passes(_pair(4), "a circle above a square")
    assert not image_passes(_pair(3), "a circle left of a square")
    assert not image_passes(_pair(3), "a square right of a circle")
    assert check_image(_pair(3), "a circle left of a square") == (False, "relation")
    assert image_passes(_pair(-4), "a circle right of a square")


def test_wrong_content_fails_with_its_reason():
    red_circle = render(Scene((Obj("circle", "red", 30, 30, 8),)))
    assert check_image(red_circle, "a red circle") == (True, "pass")
    assert check_image(red_circle, "a blue circle") == (False, "color")
    assert check_image(red_circle, "a square") == (False, "shape")
    assert check_image(red_circle, "two circles") == (False, "count")
    squashed = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(squashed).ellipse((10, 25, 40, 35), fill=PALETTE["red"])
    assert check_image(squashed, "a circle") == (False, "malformed")


def test_other_sizes_are_resized_to_64_before_scoring():
    rng = random.Random(4)
    for task in TASKS:
        prompt, scene = sample_prompt(rng, task)
        assert image_passes(render(scene).resize((256, 256), Image.Resampling.NEAREST), prompt)


def test_parse_prompt_error_names_the_allowed_forms():
    with pytest.raises(ValueError, match="allowed forms.*single_object.*color_attr"):
        parse_prompt("a photo of a cat")
    assert parse_prompt("a green square and a red triangle").colors == ("green", "red")


def test_answer_normalisation_and_accuracy():
    assert normalize_answer("2") == "two" and normalize_answer(" 4. ") == "four"
    assert normalize_answer(" Yes. ") == "yes" and normalize_answer("RED!") == "red"
    assert normalize_answer("5") == "5" and normalize_answer("dark red") == "darkred"
    assert vqa_accuracy(["2", "Yes.", "blue"], ["two", "yes", "red"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        vqa_accuracy(["yes"], [])


def _oracle_generator(prompt: str, seed: int, num_images: int) -> list[Image.Image]:
    rng = random.Random(seed)
    return [render(sample_scene_for(rng, prompt)) for _ in range(num_images)]


def _detecting_answerer(question: str, image: Image.Image) -> str:
    objs = [Obj(d.shape, d.color, int(d.cx), int(d.cy), (d.box[2] - d.box[0]) // 2) for d in detect(image)]
    scene = Scene(tuple(objs))
    return next(a for items in all_questions(scene).values() for q, a in items if q == question)


def test_run_geneval_with_an_oracle_generator(tmp_path):
    report = benchmarks.run_geneval(_oracle_generator, per_task=4, images_per_prompt=2, save_images=tmp_path)
    assert report["score"]["overall"] == 1.0 and report["chance_baseline"]["overall"] <= 0.25
    assert report["score"]["n_images"] == {t: 8 for t in TASKS}
    assert report["prompts_held_out"]["colors"] and not report["prompts_held_out"]["single_object"]
    assert len(list(tmp_path.rglob("*.png"))) == 48
    again = benchmarks.run_geneval(_oracle_generator, per_task=4, images_per_prompt=2)
    assert [r["prompt"] for r in again["records"]] == [r["prompt"] for r in report["records"]]
    assert "overall" in benchmarks.geneval_table(report)


def test_run_vqa_oracle_scores_one_and_always_yes_does_not():
    report = benchmarks.run_vqa(_detecting_answerer, n=60)
    assert report["accuracy"] == 1.0 and set(report["per_form"]) <= {
        "color_of_shape", "shape_of_color", "count_shape", "count_objects", "exists", "relation"}
    yes = benchmarks.run_vqa(lambda q, im: "Yes", n=60)
    assert yes["yes_rate"] == 1.0 and yes["accuracy"] < 0.5
    assert "overall" in benchmarks.vqa_table(report)


def test_cli_writes_json_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmarks, "make_generator", lambda *a, **k: _oracle_generator)
    monkeypatch.setattr(benchmarks, "make_answerer", lambda *a, **k: _detecting_answerer)
    out = tmp_path / "gen.json"
    cli.main(["geneval", "--model", "fake", "--per-task", "2", "--out", str(out), "--quiet"])
    assert json.loads(out.read_text())["score"]["overall"] == 1.0
    assert "overall" in capsys.readouterr().err
    cli.main(["vqa", "--model", "fake", "--n", "10", "--quiet"])
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0


def test_vae_roundtrip_ceiling_of_identity_blur_and_blank():
    identity = benchmarks.run_vae_roundtrip(lambda images: images, per_task=5)
    assert identity["overall"] == 1.0 and set(identity["per_task"]) == set(TASKS)
    blank = benchmarks.run_vae_roundtrip(lambda images: [Image.new("RGB", (64, 64), "white") for _ in images],
                                         per_task=5)
    assert blank["overall"] == 0.0 and blank["failure_reasons"]["colors"] == {"count": 5}


def test_vae_roundtrip_cli_on_the_embedded_vae(capsys):
    cli.main(["vae", "--per-task", "3", "--quiet"])
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "shapes-vae-roundtrip" and report["overall"] >= 0.5


@pytest.mark.parametrize("argv,message", [
    (["geneval", "--steps", "0"], "--steps must be a whole number from 1 to 100, got 0"),
    (["geneval", "--seed", "99999"], "--seed must be a whole number from 0 to 21473, got 99999"),
    (["geneval", "--images-per-prompt", "9"], "--images-per-prompt must be a whole number from 1 to 8"),
    (["vqa", "--n", "0"], "--n must be a whole number from 1 to 100000, got 0"),
    (["vqa", "--out", "/no/such/folder/r.json"], "the folder /no/such/folder does not exist"),
])
def test_cli_refuses_bad_values_in_one_line_before_loading(monkeypatch, capsys, argv, message):
    def refuse(*a, **k):
        raise AssertionError("a model was loaded although the arguments were invalid")

    monkeypatch.setattr(benchmarks, "make_generator", refuse)
    monkeypatch.setattr(benchmarks, "make_answerer", refuse)
    assert cli.main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {message}" or (err.startswith("error: ") and message in err and "\n" not in err), err


def test_cli_missing_model_is_one_line(capsys, tmp_path):
    assert cli.main(["vqa", "--model", str(tmp_path / "nothing"), "--n", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model folder") and "does not exist" in err and "\n" not in err
