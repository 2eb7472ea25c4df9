"""studies/sampling_sweep.py and studies/image_to_image.py: settings reach the pipeline; the edit scorer."""

from __future__ import annotations

import torch

from janusflow_core import GenerationPipeline
from janusflow_core.evaluation.scoring import Detection
from studies.image_to_image import edited_prompt, keeps_layout
from studies.sampling_sweep import nfe, parse_setting, pipeline_kwargs


def test_a_setting_becomes_the_pipelines_options(tiny_bundle):
    s = parse_setting("cfg=3,steps=4,from=0.5,shift=2,guidance=apg,sampler=heun")
    assert pipeline_kwargs(s) == {"sampler": "heun", "shift": 2.0, "guidance": "apg", "guidance_interval": (0.5, 1.0)}
    assert nfe(s, 4) == 8 and nfe(parse_setting("guidance=cfg-zero-star"), 30) == 29 and nfe({}, 10) == 10
    pipe = GenerationPipeline(tiny_bundle)
    late = pipe("a circle", 4, 3.0, 1, **pipeline_kwargs(parse_setting("from=0.5"))).latents
    direct = pipe("a circle", 4, 3.0, 1, guidance_interval=(0.5, 1.0)).latents
    assert torch.equal(late, direct) and not torch.equal(late, pipe("a circle", 4, 3.0, 1).latents)


def _at(x, y):
    return Detection("circle", "red", x, y, (0, 0, 1, 1), 10, 0.8, True)


def test_an_edit_changes_one_thing_and_the_layout_check_allows_4_px():
    assert edited_prompt("a red circle", "recolour", 0) == "a green circle"
    assert edited_prompt("a red circle", "reshape", 1) == "a red triangle"
    assert edited_prompt("a red circle and a blue square", "recolour-one", 0) == "a green circle and a blue square"
    before = [_at(10, 10), _at(40, 30)]
    assert keeps_layout(before, [_at(44, 27), _at(13, 10)])  # order free, 4 px allowed
    assert not keeps_layout(before, [_at(10, 10), _at(45, 30)])  # 5 px off
    assert not keeps_layout(before, [_at(10, 10)])  # an object lost
