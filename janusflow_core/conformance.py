"""Parity with the official implementation, on a fixture folder.

    python -m janusflow_core.conformance FIXTURE_DIR OUT.safetensors

Reads only the fixture's config.json, fixture_meta.json, model.safetensors, inputs.safetensors (and
its images), runs them through the same loader, processor and pipelines that serve the real
checkpoint, and writes every tensor of the fixture's ``expected.safetensors`` table under the same
name and shape. Works for any fixture set in that format (other sizes, other settings).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .checkpoint import load_pretrained
from .errors import OneLineParser, run_guarded
from .pipelines import GenerationPipeline, generate_tokens
from .processing import ImageProcessor, ImageProcessorConfig, JanusFlowProcessor, SpecialTokens

# Normalisation settings the fixtures use for the image-processor tensors.
IMGPROC_SETTINGS = {
    "mean05_std05": {"image_mean": (0.5, 0.5, 0.5), "image_std": (0.5, 0.5, 0.5), "do_normalize": True},
    "clip_mean_std": {"image_mean": (0.48145466, 0.4578275, 0.40821073),
                      "image_std": (0.26862954, 0.26130258, 0.27577711), "do_normalize": True},
    "no_normalize": {"image_mean": (0.5, 0.5, 0.5), "image_std": (0.5, 0.5, 0.5), "do_normalize": False},
}


def _special_tokens(ids: dict[str, int]) -> SpecialTokens:
    return SpecialTokens(bos=ids["bos"], eos=ids["eos"], pad=ids["pad"], image=ids["image"],
                         image_start=ids["image_start"], image_end=ids["image_end"], gen_tag=ids["gen_tag"])


def run(fixture: Path) -> dict[str, torch.Tensor]:
    meta = json.loads((fixture / "fixture_meta.json").read_text())
    inputs = load_file(str(fixture / "inputs.safetensors"))
    siglip_entry = next(iter(meta["siglip_table_entry"].values())) if meta.get("siglip_table_entry") else None
    bundle = load_pretrained(fixture, device="cpu", dtype="fp32", siglip_entry=siglip_entry,
                             gen_latent_size=meta["latent_hw"], with_processor=False, with_vae=False)
    model, cfg = bundle.model, bundle.config
    special = _special_tokens(meta["token_ids"])
    processor = JanusFlowProcessor.for_model(cfg, None, special_tokens=special,
                                             image_settings=IMGPROC_SETTINGS["mean05_std05"])
    bundle.processor = processor
    out: dict[str, torch.Tensor] = {}

    # (d) image processor, every normalisation setting, every test image of the set
    for name, arr in inputs.items():
        m = re.fullmatch(r"imgproc_image_(.+)_uint8_hwc", name)
        if not m:
            continue
        for setting, values in IMGPROC_SETTINGS.items():
            proc = ImageProcessor(ImageProcessorConfig(image_size=cfg.siglip.image_size, **values))
            out[f"imgproc_{m.group(1)}_{setting}"] = proc([arr.numpy()])

    # (a) understanding: expand + left-pad the raw prompts, fill image positions, logits, greedy tokens
    prompts = sorted((k for k in inputs if re.fullmatch(r"und_prompt\d+_ids_before_expansion", k)),
                     key=lambda k: int(re.findall(r"\d+", k)[0]))
    pixel_values = inputs["und_pixel_values"]
    items = []
    for i, key in enumerate(prompts):
        ids, seq_mask = processor.expand_image_tokens(inputs[key])
        n_img = int((inputs[key] == special.image).sum())
        items.append({"input_ids": ids, "images_seq_mask": seq_mask, "pixel_values": pixel_values[i, :n_img]})
    batch = processor.batchify(items)
    mask = batch.attention_mask
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    with torch.inference_mode():
        real = batch.images_emb_mask.any(-1)
        feats = model.vision_und_enc_model(batch.pixel_values[real])
        out["und_siglip_features"] = feats
        out["und_aligned_image_embeds"] = model.vision_und_enc_aligner(feats)
        embeds = model.prepare_inputs_embeds(batch.input_ids, batch.pixel_values, batch.images_seq_mask,
                                             batch.images_emb_mask)
        out["und_inputs_embeds"] = embeds
        out["und_logits"] = model.language_model(inputs_embeds=embeds, attention_mask=mask,
                                                 position_ids=position_ids).logits
    n_greedy = int(meta.get("und_greedy_new_tokens", 4))
    gen = generate_tokens(bundle, batch, max_new_tokens=n_greedy, output_scores=True)
    tokens = gen.sequences[:, -len(gen.scores):]
    out["und_greedy_tokens"] = tokens
    top2 = torch.stack([s.float().topk(2, dim=-1).values for s in gen.scores], dim=1)  # (B, n, 2)
    out["und_greedy_top1_minus_top2"] = top2[..., 0] - top2[..., 1]

    # (b) one CFG velocity step, with every intermediate the fixture records
    b = int(meta.get("parallel_size", inputs["gen_z"].shape[0]))
    prompt_ids = inputs["gen_prompt_ids"][:-1]  # the appended tag is dropped (SPEC 5.1)
    rows, row_mask = processor.cfg_rows(prompt_ids, b)
    w = float(inputs["gen_cfg_weight"])
    t = float(inputs["gen_t"])
    with torch.inference_mode():
        t_rows = torch.full((2 * b,), t)
        out["gen_t_rows"] = t_rows * cfg.time_scale
        t_emb = model.time_embedding(t_rows)
        out["gen_t_emb"] = t_emb
        z2 = torch.cat([inputs["gen_z"], inputs["gen_z"]])
        tokens_img, skip = model.encode_latents(z2, t_emb)
        out["gen_enc_out"] = skip
        seq = torch.cat([model.embed_tokens(rows), t_emb[:, None], tokens_img], dim=1)
        out["gen_llm_inputs_embeds"] = seq
        full_mask = torch.cat([row_mask, row_mask.new_ones(2 * b, 1 + cfg.num_gen_tokens)], dim=1)
        pos = torch.arange(seq.shape[1]).expand(2 * b, -1)
        hidden = model.language_model.model(inputs_embeds=seq, attention_mask=full_mask,
                                            position_ids=pos).last_hidden_state[:, -cfg.num_gen_tokens:]
        out["gen_llm_last_hidden"] = hidden
        dec_in = model.vision_gen_dec_aligner(model.vision_gen_dec_aligner_norm(hidden))
        g = cfg.gen_grid
        out["gen_dec_in"] = dec_in.transpose(1, 2).reshape(2 * b, -1, g, g)
        # the velocity itself goes through the pipeline's cached path
        pipe = GenerationPipeline(bundle)
        state = pipe.encode_prompt(rows, row_mask, use_cache=True)
        v = model.velocity(z2, t_rows, state)
        out["gen_v_cond"], out["gen_v_uncond"] = v[:b], v[b:]
        velocity = pipe.guided_velocity(state, w)
        out["gen_v_cfg"] = velocity(inputs["gen_z"], t)

    # (c) the official Euler loop from traj_z0, through the pipeline's sampler
    from .sampling import integrate

    n_steps = int(meta.get("num_inference_steps", 3))
    for st in integrate(velocity, inputs["traj_z0"], n_steps, "euler"):
        out[f"traj_t_scaled_step{st.index}"] = torch.tensor([st.t * cfg.time_scale])
        out[f"traj_v_cfg_step{st.index}"] = st.velocity
        out[f"traj_z_after_step{st.index + 1}"] = st.z_next
    return {k: v.detach().contiguous().cpu() for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 with one ``error:`` line (missing or malformed fixture files, unwritable OUT)."""
    ap = OneLineParser(prog="python -m janusflow_core.conformance", description=__doc__.split("\n\n")[0])
    ap.add_argument("fixture_dir", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)

    def convert() -> int:
        if not args.fixture_dir.is_dir():
            raise FileNotFoundError(f"fixture folder {args.fixture_dir} does not exist or is not a folder")
        if args.out.is_dir():
            raise IsADirectoryError(f"OUT {args.out} is a folder; give a .safetensors file path")
        torch.manual_seed(0)
        try:
            out = run(args.fixture_dir)
        except KeyError as exc:  # a tensor or setting the fixture format requires is absent
            raise ValueError(f"{args.fixture_dir} is not a complete fixture: {exc} is missing from its "
                             "fixture_meta.json or inputs.safetensors") from exc
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_file(out, str(args.out))
        print(f"wrote {len(out)} tensors to {args.out}", file=sys.stderr)
        return 0

    return run_guarded(convert)


if __name__ == "__main__":
    raise SystemExit(main())
