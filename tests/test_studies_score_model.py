"""studies/score_model.py: the ablation rows of studies/results are built by it, so its fields must mean what
they say."""

from __future__ import annotations

import json

import pytest

from studies import score_model as sm


def test_stage_steps_and_fields_are_read_from_a_work_folder(tmp_path):
    for stage, steps in ((1, [10, 60]), (2, [10, 20, 5171]), (3, [3457])):
        d = tmp_path / f"stage{stage}"
        d.mkdir()
        rows = [{"stage": stage, "step": s, "flow": 0.1} for s in steps] + [{"stage": stage, "event": "done"}]
        (d / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert sm.stage_steps(tmp_path) == {"stage1_steps": 60, "stage2_steps": 5171, "stage3_steps": 3457}
    assert sm.parse_set(["repa_weight=0", "note=dense vit", "flags=[1, 2]"]) == {
        "repa_weight": 0, "note": "dense vit", "flags": [1, 2]}
    with pytest.raises(SystemExit, match="expected key=value"):
        sm.parse_set(["repa_weight"])
    with pytest.raises(SystemExit, match="no stage"):
        sm.stage_steps(tmp_path / "stage1")


def test_score_model_row_on_the_shipped_model(tmp_path):
    out = tmp_path / "rows.jsonl"
    row = sm.main(["--per-task", "1", "--n", "8", "--seeds", "0", "--confusion-images", "2",
                   "--set", "repa_weight=0.5", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text().splitlines()[-1]) == row
    assert row["run"] == "janusflow-shapes" and row["repa_weight"] == 0.5
    gen = row["geneval_seed0"]
    assert set(gen["n_images"].values()) == {1} and len(gen["n_images"]) == 6
    assert gen["overall"] == pytest.approx(sum(gen["per_task"].values()) / 6)
    assert set(row["chance_seed0"]["n_images"].values()) == {1}
    forms = row["vqa_per_form_seed0"]
    assert sum(f["n"] for f in forms.values()) == 8
    assert row["vqa_seed0"] == pytest.approx(sum(f["accuracy"] * f["n"] for f in forms.values()) / 8)
    assert len(row["yes_rate"]) == 1
    conf = row["shape_confusion_cfg3"]
    assert list(conf) == ["a circle", "a square", "a triangle"]
    assert all(sum(c.values()) == 2 for c in conf.values())
    with pytest.raises(SystemExit):
        sm.main(["--n", "0"])
