"""The preset registry and the processor a preset's model reads."""

from __future__ import annotations

import pytest
from helpers_tokenizer import make_tokenizer
from PIL import Image

from janusflow_core.config import JanusFlowConfig
from janusflow_core.presets import PRESETS, get_preset
from janusflow_core.processing import JanusFlowProcessor, SpecialTokens


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_a_valid_config_that_survives_the_official_layout(name):
    cfg = get_preset(name)
    assert cfg == JanusFlowConfig.from_official_dict(cfg.to_official_dict())
    assert cfg.gen_dec_out_side == cfg.gen_latent_size  # the velocity has the latent's shape


def test_free_sizes_are_keywords_of_the_preset():
    assert get_preset("shapes", vocab_size=123).llm.vocab_size == 123
    assert get_preset("tiny-train", vocab_size=77).llm.vocab_size == 77
    assert get_preset("shapes", hidden=192, layers=6).llm.num_attention_heads == 6
    with pytest.raises(ValueError, match="llm_hidden must be a multiple of 32"):
        get_preset("shapes", hidden=100)


def test_an_unknown_preset_names_every_known_one():
    with pytest.raises(ValueError) as err:
        get_preset("janusflow-7b")
    assert "'janusflow-7b'" in str(err.value)
    assert all(name in str(err.value) for name in PRESETS)


def test_the_shapes_recipe_trains_the_shapes_preset():
    from janusflow_core.training.shapes_recipe import Recipe

    recipe = Recipe()
    assert recipe.model_config() == get_preset("shapes", vocab_size=recipe.vocab_size)


@pytest.mark.parametrize("name", ["tiny", "shapes"])
def test_the_processor_for_a_model_matches_its_understanding_encoder(name, tmp_path):
    cfg = get_preset(name)
    tok = make_tokenizer(tmp_path)
    proc = JanusFlowProcessor.for_model(cfg, tok, system_prompt="")
    assert proc.image_processor.image_size == cfg.siglip.image_size
    assert proc.num_image_tokens == cfg.num_und_tokens
    assert proc.special_tokens == SpecialTokens.from_tokenizer(tok) and proc.system_prompt == ""
    batch = proc(conversations=[[{"role": "user", "content": "<image_placeholder>\nwhat is this"}]],
                 images=[[Image.new("RGB", (20, 10))]])
    assert tuple(batch.pixel_values.shape[-2:]) == (cfg.siglip.image_size,) * 2
    assert int((batch.input_ids == proc.special_tokens.image).sum()) == cfg.num_und_tokens


def test_the_processor_for_a_model_takes_explicit_tokens_and_image_settings():
    special = SpecialTokens(bos=1, eos=2, pad=0, image=3, image_start=4, image_end=5, gen_tag=6)
    proc = JanusFlowProcessor.for_model(get_preset("tiny"), None, special_tokens=special,
                                        image_settings={"do_normalize": False})
    assert proc.special_tokens == special and proc.image_processor.config.do_normalize is False
    with pytest.raises(ValueError, match="tokenizer or explicit special_tokens"):
        JanusFlowProcessor.for_model(get_preset("tiny"), None)
