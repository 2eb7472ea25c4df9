"""The shapes recipe's command line: its flags come from the Recipe fields, and every flag still selects the
recipe (or the error) it selected before that change. The expected results were captured from the old
``parse_args`` (a chain of ``replace`` calls) for each command line in the fixture."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from janusflow_core.training.shapes_recipe import Recipe, parse_args

BEFORE = json.loads((Path(__file__).parent / "fixtures" / "recipe_cli_before_refactor.json").read_text())


def flat(x: Any, prefix: str = "") -> dict[str, Any]:
    """{"stages": [{"steps": 60}]} -> {"stages.0.steps": 60}."""
    if isinstance(x, dict):
        return {k: v for key, value in x.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    if isinstance(x, list) and x and isinstance(x[0], dict):
        return {k: v for i, value in enumerate(x) for k, v in flat(value, f"{prefix}{i}.").items()}
    return {prefix[:-1]: x}


# TrainConfig fields added after the snapshot, with the value that keeps the recipe as it was
ADDED_SINCE = {"repa_head_warmup": 0}


def as_json(recipe: Recipe) -> dict[str, Any]:
    d = json.loads(json.dumps(dataclasses.asdict(recipe)))
    for stage in d.get("stages", []):
        for key, unchanged in ADDED_SINCE.items():
            assert stage.pop(key) == unchanged, key  # the recipe never sets them
    return d


def test_no_flags_select_the_default_recipe_as_before():
    args, recipe = parse_args([])
    assert recipe == Recipe()
    assert as_json(recipe) == BEFORE["default_recipe"]
    assert vars(args) == BEFORE["default_args"]


@pytest.mark.parametrize("case", [c for c in BEFORE["cases"] if "error" not in c], ids=lambda c: " ".join(c["argv"]))
def test_every_flag_selects_the_recipe_it_selected_before(case):
    args, recipe = parse_args(case["argv"])
    assert vars(args) == {**BEFORE["default_args"], **case["args"]}
    default = flat(BEFORE["default_recipe"])
    got = flat(as_json(recipe))
    assert {k: v for k, v in got.items() if default.get(k, object()) != v} == case["recipe_changed"]
    assert len(recipe.stages) == case.get("recipe_stages", len(BEFORE["default_recipe"]["stages"]))


@pytest.mark.parametrize("case", [c for c in BEFORE["cases"] if "error" in c], ids=lambda c: " ".join(c["argv"]))
def test_every_bad_command_line_fails_with_the_message_it_gave_before(case, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(case["argv"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("error: " + case["error"])


def test_each_flagged_recipe_field_has_a_flag_of_its_type():
    """A field marked with ``flag`` is settable from the command line without further code."""
    marked = [f for f in dataclasses.fields(Recipe) if "help" in f.metadata]
    assert {f.name for f in marked} >= {"seed", "llm_hidden", "llm_layers", "cfg_weight", "gen_task_weights"}
    for f in marked:
        name = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        value = {int: "7", float: "0.25"}.get(type(f.default), "1,1,1,1,1,1")
        if f.name == "llm_hidden":
            value = "224"
        _, recipe = parse_args([name, value])
        expected = tuple(int(v) for v in value.split(",")) if isinstance(f.default, tuple) else type(f.default)(value)
        assert getattr(recipe, f.name) == expected, name
