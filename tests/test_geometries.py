"""Geometries other than the published one: what the official modules accept, we load and run.

Each geometry is a tiny model written in the official layout (official config keys only, no
``janusflow_core`` section; the SigLIP dims and the latent side given to the loader the way the parity
fixtures give them). Its expected sizes are worked out by hand from the convolution arithmetic
(PyTorch floors: side_out = (side + 2 * padding - kernel) // stride + 1) in the table below, then
checked against the config, the state dict and every module's output. To try another geometry, add a
row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import REFERENCE, require_shared
from safetensors.torch import save_file

from janusflow_core.bundle import JanusFlowBundle
from janusflow_core.checkpoint import build_meta_model, load_pretrained, save_pretrained
from janusflow_core.config import JanusFlowConfig
from janusflow_core.modeling import JanusFlowModel
from janusflow_core.pipelines import GenerationPipeline
from janusflow_core.sampling import integrate
from janusflow_core.testing import random_init_

LLM_WIDTH, SIGLIP_WIDTH, GEN_WIDTH, LATENT_CHANNELS, VOCAB = 32, 16, 16, 4, 64


@dataclass(frozen=True)
class Geometry:
    name: str
    image_size: int
    patch_size: int
    kernel_size: int
    stride: int
    padding: int | None  # None: absent from config.json, the official default kernel_size - stride
    upsamples: int
    latent: int
    # hand-derived expectations
    und_grid: int
    gen_grid: int
    resolved_padding: int


GEOMETRIES = [
    # The parity fixture's geometry: everything tiles exactly (32 / 8 = 4; (8 - 2) / 2 + 1 = 4; 4 * 2 = 8).
    Geometry("fixture-a", 32, 8, 2, 2, 0, 1, 8, und_grid=4, gen_grid=4, resolved_padding=0),
    # 36 // 8 = 4 (4 border pixels dropped); (8 + 2*1 - 3) // 2 + 1 = 7 // 2 + 1 = 4 (floors); 4 * 2 = 8.
    Geometry("image-border-k3s2p1", 36, 8, 3, 2, 1, 1, 8, und_grid=4, gen_grid=4, resolved_padding=1),
    # The official encoder defaults (kernel 7, stride 4, padding null -> 7 - 4 = 3):
    # 30 // 7 = 4 (2 px dropped); (8 + 6 - 7) // 4 + 1 = 7 // 4 + 1 = 2; two x2 stages: 2 * 4 = 8.
    Geometry("official-enc-defaults-up2", 30, 7, 7, 4, None, 2, 8, und_grid=4, gen_grid=2, resolved_padding=3),
    # 40 // 16 = 2 (8 px dropped); (12 + 2*2 - 5) // 2 + 1 = 11 // 2 + 1 = 6; 6 * 2 = 12.
    Geometry("k5s2p2-latent12", 40, 16, 5, 2, 2, 1, 12, und_grid=2, gen_grid=6, resolved_padding=2),
]


def official_config(g: Geometry, **enc_overrides) -> dict:
    """A config.json in the official layout for geometry ``g`` (official keys only)."""
    enc = {"input_channels": LATENT_CHANNELS, "kernel_size": g.kernel_size, "stride": g.stride,
           "block_out_channels": [GEN_WIDTH], "layers_in_middle": 1, "hidden_size": LLM_WIDTH,
           "norm_eps": 1e-6, "use_bias": True, "use_mid_block": True, "elementwize_affine": True,
           "num_extra_tensors": 5}
    if g.padding is not None:
        enc["padding"] = g.padding
    enc.update(enc_overrides)
    dec = {"in_channels": GEN_WIDTH, "out_channels": LATENT_CHANNELS, "block_out_channels": [GEN_WIDTH],
           "upsamples": g.upsamples, "layers_in_middle": 1, "hidden_size": LLM_WIDTH, "norm_eps": 1e-6,
           "use_bias": True, "use_mid_block": True, "elementwise_affine": True}
    return {
        "architectures": ["MultiModalityCausalLM"], "model_type": "multi_modality", "torch_dtype": "float32",
        "language_config": {"hidden_size": LLM_WIDTH, "intermediate_size": 2 * LLM_WIDTH,
                            "max_position_embeddings": 128, "model_type": "llama", "num_attention_heads": 4,
                            "num_hidden_layers": 2, "num_key_value_heads": 4, "rms_norm_eps": 1e-6,
                            "vocab_size": VOCAB},
        "vision_und_enc_config": {"cls": "CLIPVisionTower", "model_type": "vision_und_enc", "params": {
            "image_size": g.image_size, "model_name": f"siglip_test_patch{g.patch_size}",
            "select_feature": "same", "select_layer": -1}},
        "vision_gen_enc_config": {"cls": "ShallowUViTEncoder", "model_type": "vision_gen_enc", "params": enc},
        "vision_gen_dec_config": {"cls": "ShallowUViTDecoder", "model_type": "vision_gen_dec", "params": dec},
    }


def siglip_entry(g: Geometry) -> dict:
    return {"image_size": g.image_size, "patch_size": g.patch_size, "width": SIGLIP_WIDTH, "layers": 2,
            "heads": 2, "mlp_ratio": 4}


def load_kwargs(g: Geometry) -> dict:
    return {"siglip_entry": siglip_entry(g), "gen_latent_size": g.latent}


def write_official_folder(folder: Path, g: Geometry, seed: int = 0) -> JanusFlowModel:
    """config.json (official keys only) + model.safetensors of a random model; returns the model."""
    cfg = JanusFlowConfig.from_official_dict(official_config(g), **load_kwargs(g))
    torch.manual_seed(seed)
    model = random_init_(JanusFlowModel(cfg), seed).eval()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(official_config(g), indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return model


def load_bundle(folder: Path, g: Geometry) -> JanusFlowBundle:
    """Strict load of an official-layout folder (every key and shape checked)."""
    return load_pretrained(folder, device="cpu", dtype="fp32", with_processor=False, with_vae=False,
                           **load_kwargs(g))


def load(folder: Path, g: Geometry) -> JanusFlowModel:
    return load_bundle(folder, g).model


@pytest.fixture(scope="module", params=GEOMETRIES, ids=lambda g: g.name)
def written(request, tmp_path_factory):
    g = request.param
    folder = tmp_path_factory.mktemp(g.name)
    return g, folder, write_official_folder(folder, g)


def test_config_sizes_follow_the_floor_arithmetic(written):
    g, _, model = written
    cfg = model.config
    assert cfg.siglip.grid == g.und_grid and cfg.num_und_tokens == g.und_grid ** 2
    assert cfg.gen_enc.padding == g.resolved_padding
    assert cfg.gen_grid == g.gen_grid and cfg.num_gen_tokens == g.gen_grid ** 2
    assert cfg.gen_dec_out_side == g.latent


def test_state_dict_has_the_official_names_and_the_geometry_in_its_shapes(written):
    g, _, model = written
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # Key names: the published model's, with layer indices folded (depths and stage counts differ).
    published = (require_shared(REFERENCE / "janusflow-1.3b" / "params.tsv")).read_text().splitlines()
    fold = lambda name: re.sub(r"\.\d+\.", ".#.", name)  # noqa: E731
    assert {fold(k) for k in state} == {fold(row.split("\t")[0]) for row in published if row.endswith("\tparam")}
    tower = "vision_und_enc_model.vision_tower."
    assert state[tower + "pos_embed"] == (1, g.und_grid ** 2, SIGLIP_WIDTH)
    assert state[tower + "patch_embed.proj.weight"] == (SIGLIP_WIDTH, 3, g.patch_size, g.patch_size)
    assert state["vision_gen_enc_model.in_conv.weight"] == (GEN_WIDTH, LATENT_CHANNELS, g.kernel_size, g.kernel_size)
    stages = sorted({int(m) for k in state for m in re.findall(r"vision_gen_dec_model\.out_convs\.(\d+)\.", k)})
    assert stages == list(range(g.upsamples))
    last = f"vision_gen_dec_model.out_convs.{g.upsamples - 1}.unpatch_conv.weight"
    assert state[last] == (LATENT_CHANNELS * 4, GEN_WIDTH if g.upsamples > 1 else 2 * GEN_WIDTH, 1, 1)


def test_every_module_output_has_the_hand_derived_shape(written):
    g, folder, _ = written
    model = load(folder, g)
    torch.manual_seed(1)
    with torch.inference_mode():
        pixels = torch.randn(2, 3, g.image_size, g.image_size)
        feats = model.vision_und_enc_model(pixels)
        assert feats.shape == (2, g.und_grid ** 2, SIGLIP_WIDTH)
        t_emb = model.time_embedding(torch.tensor([0.2, 0.6]))
        z = torch.randn(2, LATENT_CHANNELS, g.latent, g.latent)
        tokens, skip = model.encode_latents(z, t_emb)
        assert tokens.shape == (2, g.gen_grid ** 2, LLM_WIDTH)
        assert skip.shape == (2, GEN_WIDTH, g.gen_grid, g.gen_grid)
        hidden = torch.randn(2, g.gen_grid ** 2, LLM_WIDTH)
        assert model.decode_tokens(hidden, skip, t_emb).shape == z.shape


def test_pixels_past_the_last_whole_patch_are_dropped_like_the_official_conv(written):
    g, folder, _ = written
    model = load(folder, g)
    used = g.und_grid * g.patch_size
    torch.manual_seed(2)
    pixels = torch.randn(1, 3, g.image_size, g.image_size)
    border, inside = pixels.clone(), pixels.clone()
    border[..., used:, :] += 5.0
    border[..., :, used:] += 5.0
    inside[..., used - 1, used - 1] += 5.0
    with torch.inference_mode():
        ref = model.vision_und_enc_model(pixels)
        assert torch.equal(model.vision_und_enc_model(border), ref)  # nothing to change when sides tile
        assert not torch.equal(model.vision_und_enc_model(inside), ref)


def test_generation_round_trip_runs_the_sampler(written):
    g, folder, _ = written
    pipe = GenerationPipeline(load_bundle(folder, g))
    rows = torch.tensor([[1, 5, 6, 7], [1, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    torch.manual_seed(3)
    z0 = torch.randn(1, LATENT_CHANNELS, g.latent, g.latent)
    cached = [s.z_next for s in integrate(pipe.guided_velocity(pipe.encode_prompt(rows, mask, True), 2.0), z0, 2)]
    full = [s.z_next for s in integrate(pipe.guided_velocity(pipe.encode_prompt(rows, mask, False), 2.0), z0, 2)]
    assert cached[-1].shape == z0.shape and torch.isfinite(cached[-1]).all()
    assert not torch.equal(cached[-1], z0)
    torch.testing.assert_close(cached[-1], full[-1], atol=1e-5, rtol=1e-5)


def test_understanding_forward_places_one_embedding_per_image_position(written):
    g, folder, _ = written
    model = load(folder, g)
    n = g.und_grid ** 2
    ids = torch.tensor([[1, 2] + [3] * n + [4, 9, 10]])  # BOS, start tag, N placeholders, end tag, text
    seq_mask = torch.zeros_like(ids, dtype=torch.bool)
    seq_mask[0, 1:2 + n] = True
    emb_mask = torch.ones(1, 1, n + 1, dtype=torch.bool)
    torch.manual_seed(4)
    pixels = torch.randn(1, 1, 3, g.image_size, g.image_size)
    with torch.inference_mode():
        embeds = model.prepare_inputs_embeds(ids, pixels, seq_mask, emb_mask)
        torch.testing.assert_close(embeds[0, 1:2 + n], model.encode_images(pixels[0])[0], atol=0, rtol=0)
        logits = model.language_model(inputs_embeds=embeds).logits
        assert logits.shape == (1, ids.shape[1], VOCAB)
        short = seq_mask.clone()
        short[0, 1] = False  # one image position fewer than the N + 1 embeddings of an image
        with pytest.raises(ValueError, match=f"prompt has {n} image positions .* \\({n + 1} per image\\)"):
            model.prepare_inputs_embeds(ids, pixels, short, emb_mask)


def test_save_then_load_gives_identical_numbers(written, tmp_path):
    g, folder, model = written
    loaded = load(folder, g)
    resaved = load_pretrained(save_pretrained(loaded, tmp_path / "ours"), device="cpu", dtype="fp32",
                              with_processor=False, with_vae=False).model  # our layout carries the sizes itself
    assert resaved.config == loaded.config == model.config
    for (name, want), got, again in zip(model.state_dict().items(), loaded.state_dict().values(),
                                        resaved.state_dict().values(), strict=True):
        assert torch.equal(got, want) and torch.equal(again, want), name
    torch.manual_seed(5)
    z = torch.randn(2, LATENT_CHANNELS, g.latent, g.latent)
    t = torch.tensor([0.1, 0.9])
    pixels = torch.randn(2, 3, g.image_size, g.image_size)
    rows, mask = torch.tensor([[1, 5, 6], [1, 0, 0]]), torch.tensor([[1, 1, 1], [1, 0, 0]])
    with torch.inference_mode():
        outs = [(m.velocity(z, t, m.prepare_prompt(rows, mask, use_cache=False)), m.encode_images(pixels))
                for m in (model, loaded, resaved)]
    # Same weights, same numbers up to float rounding: a Linear on a permuted (non-contiguous) input may
    # sum in another order depending on where its weight sits in memory (safetensors offsets).
    for v, feats in outs[1:]:
        torch.testing.assert_close(v, outs[0][0], atol=1e-6, rtol=1e-6)
        assert torch.equal(feats, outs[0][1])


# -- configs the official code cannot run: refused, naming the key and what is allowed -------------------

BASE = GEOMETRIES[0]


def _refusal(**changes) -> dict:
    cfg = official_config(BASE)
    for path, value in changes.items():
        section, key = path.split("__")
        cfg[section]["params"][key] = value
    return cfg


@pytest.mark.parametrize("cfg, latent, message", [
    # (9 - 2) // 2 + 1 = 4 tokens a side, the x2 decoder gives back 8: the velocity cannot update a 9x9 latent
    (_refusal(), 9, r"gen_latent_size 9 does not come back.*= 4.*give back 8, not 9.*allowed gen_latent_size "
                    r"values for this geometry: 2, 4, 6, 8, 10, 12"),
    # two x2 stages after a /2 conv: the side doubles, for every latent
    (_refusal(vision_gen_dec_config__upsamples=2), 8, r"give back 16, not 8.*no latent side comes back"),
    (_refusal(vision_gen_dec_config__block_out_channels=[24]), 8,
     r"vision_gen_dec_config.params.block_out_channels\[-1\] 24 must equal the encoder's output width 16"),
    (_refusal(vision_gen_enc_config__block_out_channels=[16, 24]), 8,
     r"vision_gen_enc_config.params.block_out_channels \[16, 24\].*allowed: first == last"),
    (_refusal(vision_und_enc_config__image_size=6), 8, r"siglip.image_size 6 .*must be at least the patch size 8"),
    (_refusal(vision_und_enc_config__image_size=[32, 48]), 8,
     r"vision_und_enc_config.params.image_size = \[32, 48\]: allowed is one integer"),
    (_refusal(vision_gen_enc_config__kernel_size=[2, 3]), 8,
     r"vision_gen_enc_config.params.kernel_size = \[2, 3\]: allowed is one integer"),
    (_refusal(vision_gen_enc_config__kernel_size=1, vision_gen_enc_config__padding=None), 8,
     r"padding -1 >= 0 \(padding null means kernel_size - stride\)"),
    (_refusal(vision_gen_enc_config__kernel_size=12), 8, r"gen_latent_size 8 is too small .* kernel_size 12.* >= 12"),
], ids=["odd-latent", "upsamples-too-many", "skip-width", "enc-widths", "image-below-patch", "non-square-image",
        "non-square-kernel", "negative-padding", "kernel-over-latent"])
def test_what_the_official_code_cannot_run_is_refused_clearly(cfg, latent, message):
    with pytest.raises(ValueError, match=message):
        JanusFlowConfig.from_official_dict(cfg, siglip_entry=siglip_entry(BASE), gen_latent_size=latent)


def test_pairs_of_equal_sides_build_the_same_modules():
    plain = JanusFlowConfig.from_official_dict(official_config(BASE), **load_kwargs(BASE))
    pairs = _refusal(vision_gen_enc_config__kernel_size=[2, 2], vision_gen_enc_config__stride=[2, 2],
                     vision_und_enc_config__image_size=[32, 32])
    assert JanusFlowConfig.from_official_dict(pairs, **load_kwargs(BASE)) == plain


def test_absent_keys_take_the_official_constructor_defaults():
    cfg = official_config(BASE)
    cfg["vision_gen_enc_config"]["params"] = {"hidden_size": LLM_WIDTH}
    cfg["vision_gen_dec_config"]["params"] = {"hidden_size": LLM_WIDTH}
    c = JanusFlowConfig.from_official_dict(cfg, siglip_entry=siglip_entry(BASE), gen_latent_size=48)
    e, d = c.gen_enc, c.gen_dec
    assert (e.input_channels, e.kernel_size, e.stride, e.padding, e.block_out_channels) == (3, 7, 4, 3, (768,))
    assert (d.in_channels, d.out_channels, d.upsamples, d.block_out_channels) == (768, 3, 2, (768,))
    assert (c.gen_grid, c.gen_dec_out_side) == (12, 48)  # (48 + 6 - 7) // 4 + 1 = 12; 12 * 2 * 2 = 48


def test_keys_the_official_classes_ignore_are_ignored_and_ours_travel_in_our_section():
    plain = JanusFlowConfig.from_official_dict(official_config(BASE), **load_kwargs(BASE))
    noisy = _refusal(vision_gen_enc_config__ffn_factor=8, vision_gen_dec_config__patch_size=4,
                     vision_gen_dec_config__dropout=0.1)
    assert JanusFlowConfig.from_official_dict(noisy, **load_kwargs(BASE)) == plain  # FFN 4, shuffle 2 hard-coded
    from dataclasses import replace

    ours = replace(plain, gen_enc=replace(plain.gen_enc, ffn_factor=2))
    written = ours.to_official_dict()
    assert "ffn_factor" not in written["vision_gen_enc_config"]["params"]
    assert written["janusflow_core"]["gen_enc_ffn_factor"] == 2
    assert JanusFlowConfig.from_official_dict(written) == ours


def test_use_bias_false_builds_the_official_parameters():
    cfg = _refusal(vision_gen_enc_config__use_bias=False)
    model = build_meta_model(JanusFlowConfig.from_official_dict(cfg, **load_kwargs(BASE)))
    keys = set(model.state_dict())
    enc = "vision_gen_enc_model."
    assert enc + "in_conv.bias" in keys  # the official in_conv always has one
    assert enc + "time_embed.linear_1.bias" not in keys and enc + "time_embed.linear_2.bias" not in keys
    assert enc + "mid_block.res_blocks.0.depthwise.bias" not in keys


def test_understanding_keys_left_out_take_the_official_tower_defaults():
    cfg = official_config(BASE)
    cfg["vision_und_enc_config"]["params"] = {"model_name": "siglip_so400m_patch14_384"}
    c = JanusFlowConfig.from_official_dict(cfg, gen_latent_size=BASE.latent)
    # CLIPVisionTower defaults: image_size 336, select_layer -2 (27 + (-2) + 1 = 26 blocks built);
    # the so400m tower has 14 px patches: 336 // 14 = 24, 576 tokens.
    assert (c.siglip.image_size, c.siglip.patch_size, c.siglip.width) == (336, 14, 1152)
    assert (c.siglip.depth, c.siglip.grid, c.num_und_tokens) == (26, 24, 576)
    cfg["vision_und_enc_config"]["params"]["image_size"] = 384  # 384 // 14 = 27 (6 px dropped), 729 tokens
    assert JanusFlowConfig.from_official_dict(cfg, gen_latent_size=BASE.latent).num_und_tokens == 729
