"""The model built from the published config has exactly the published parameter layout."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REFERENCE, require_shared

from janusflow_core.checkpoint import build_meta_model
from janusflow_core.config import JanusFlowConfig
from janusflow_core.presets import janusflow_1_3b, tiny


def _published_params() -> dict[str, tuple[int, ...]]:
    rows = (require_shared(REFERENCE / "janusflow-1.3b" / "params.tsv")).read_text().splitlines()
    out = {}
    for row in rows:
        name, shape, kind = row.split("\t")
        if kind == "param":
            out[name] = tuple(int(s) for s in shape.split("x"))
    return out


def test_full_size_state_dict_equals_published_layout():
    expected = _published_params()
    cfg = JanusFlowConfig.from_file(REFERENCE / "janusflow-1.3b" / "config.json")
    model = build_meta_model(cfg)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(got) == set(expected), (sorted(set(got) - set(expected))[:5], sorted(set(expected) - set(got))[:5])
    assert got == expected
    assert len(got) == 587
    assert sum(v.numel() for v in model.state_dict().values()) == 2_046_367_504


def test_official_config_adapter_matches_preset_and_tolerates_typos():
    data = json.loads((require_shared(REFERENCE / "janusflow-1.3b" / "config.json")).read_text())
    assert "elementwize_affine" in data["vision_gen_enc_config"]["params"]  # the published typo is there
    cfg = JanusFlowConfig.from_official_dict(data)
    assert cfg == janusflow_1_3b()
    assert (cfg.num_und_tokens, cfg.num_gen_tokens, cfg.gen_grid) == (576, 576, 24)


def test_config_round_trips_through_official_layout():
    cfg = tiny()
    assert JanusFlowConfig.from_official_dict(cfg.to_official_dict()) == cfg


def test_unknown_siglip_name_is_a_clear_error():
    data = tiny().to_official_dict()
    del data["janusflow_core"]["siglip"]
    with pytest.raises(ValueError, match="unknown SigLIP model_name 'siglip_tiny'"):
        JanusFlowConfig.from_official_dict(data)


def test_sizes_that_do_not_fit_name_the_field():
    from dataclasses import replace

    cfg = tiny()
    # 9 floors to a 4x4 grid, which the x2 decoder turns into 8x8: the velocity could not update a 9x9 latent
    with pytest.raises(ValueError, match=r"gen_latent_size 9 does not come back .* = 4, .* give back 8, not 9"
                                         r".*allowed gen_latent_size values for this geometry: 2, 4, 6, 8"):
        replace(cfg, gen_latent_size=9)
    with pytest.raises(ValueError, match="gen_enc.hidden_size 32 must equal llm.hidden_size 64"):
        replace(cfg, gen_enc=replace(cfg.gen_enc, hidden_size=32))
    with pytest.raises(ValueError, match=r"gen_latent_size 8 does not come back .* give back 4, not 8.*no latent "
                                         r"side comes back from this geometry"):
        replace(cfg, gen_enc=replace(cfg.gen_enc, kernel_size=4, stride=4))


def test_widths_come_from_config():
    cfg = tiny(hidden=96, latent=16)
    with torch.device("meta"):
        from janusflow_core.modeling import JanusFlowModel

        m = JanusFlowModel(cfg)
    assert m.beg_of_und_embed.shape == (1, 96)
    assert m.vision_und_enc_aligner.weight.shape == (96, cfg.siglip.width)
    assert m.vision_gen_dec_aligner.weight.shape == (cfg.gen_dec.in_channels, 96)
    assert cfg.num_gen_tokens == 64
