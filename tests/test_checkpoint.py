"""Strict loading, saving in the official layout, precisions and devices."""

from __future__ import annotations

import json
import logging
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from janusflow_core import load_pretrained, save_pretrained
from janusflow_core.checkpoint import (
    CheckpointError,
    cpu_has_native_bf16,
    format_params,
    pick_device,
    pick_dtype,
    read_sampling,
)
from janusflow_core.vae import VAELoadError, safe_vae_dtype


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_save_then_load_is_bit_exact(tiny_bundle, tmp_path):
    out = save_pretrained(tiny_bundle.model, tmp_path / "again", processor=tiny_bundle.processor,
                          vae=tiny_bundle.vae, sampling={"steps": 7, "cfg": 3.5})
    again = load_pretrained(out, device="cpu", dtype="fp32")
    a, b = tiny_bundle.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again.sampling == {"steps": 7, "cfg": 3.5}
    assert again.processor.special_tokens == tiny_bundle.processor.special_tokens


def test_missing_unexpected_and_wrong_shape_keys_are_named(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    sd = load_file(str(d / "model.safetensors"))
    sd.pop("vision_gen_dec_aligner.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["beg_of_und_embed"] = torch.zeros(1, 3)
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_pretrained(d, device="cpu")
    msg = str(err.value)
    assert "missing key(s): vision_gen_dec_aligner.bias" in msg
    assert "unexpected key(s): extra.weight" in msg
    assert "beg_of_und_embed: checkpoint [1, 3], model [1, 64]" in msg


def test_truncated_and_corrupt_checkpoints(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_pretrained(d, device="cpu")
    f.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_pretrained(d, device="cpu")
    f.unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_pretrained(d, device="cpu")


def test_sharded_checkpoint_loads(tiny_bundle, tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    sd = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    keys = sorted(sd)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, ks in halves.items():
        save_file({k: sd[k] for k in ks}, str(d / name))
    index = {"metadata": {}, "weight_map": {k: n for n, ks in halves.items() for k in ks}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    b = load_pretrained(d, device="cpu", dtype="fp32")
    assert torch.equal(b.model.beg_of_und_embed, tiny_bundle.model.beg_of_und_embed)


def test_missing_folder_and_offline_hub_id_say_how_to_get_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nothing-here")
    with pytest.raises(FileNotFoundError, match="hf download deepseek-ai/JanusFlow-1.3B --local-dir"):
        load_pretrained("deepseek-ai/JanusFlow-1.3B")


def test_bf16_load_keeps_rope_frequencies_exact(tiny_model_dir):
    b = load_pretrained(tiny_model_dir, device="cpu", dtype="bf16")
    assert b.model.dtype == torch.bfloat16
    assert b.model.language_model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    rope = b.model.language_model.model.rotary_emb
    assert rope.inv_freq.dtype == torch.float32
    head = b.config.llm.hidden_size // b.config.llm.num_attention_heads
    expected = 1.0 / (10000 ** (torch.arange(0, head, 2, dtype=torch.float32) / head))
    torch.testing.assert_close(rope.inv_freq, expected)
    from janusflow_core import GenerationPipeline

    r = GenerationPipeline(b)("a circle", steps=2, seed=0)
    assert len(r.images) == 1


def test_dtype_and_device_choice():
    cpu = torch.device("cpu")
    assert pick_dtype("auto", cpu, 10_000) == torch.float32
    big = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert pick_dtype("auto", cpu, 2_000_000_000) == big
    assert pick_dtype("fp16", cpu, 1) == torch.float16
    with pytest.raises(ValueError, match="allowed: auto"):
        pick_dtype("int4", cpu, 1)
    assert safe_vae_dtype(torch.float16, "cpu") == torch.bfloat16  # the SDXL VAE overflows in fp16
    assert safe_vae_dtype(torch.float32, "cpu") == torch.float32
    if not torch.cuda.is_available():
        assert pick_device("auto").type in ("cpu", "mps")
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            pick_device("cuda")


def test_8bit_needs_cuda(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("this check is for machines without CUDA")
    with pytest.raises(RuntimeError, match="8-bit loading needs a CUDA GPU"):
        load_pretrained(tiny_model_dir, device="cpu", load_8bit=True)


def test_processor_token_count_must_match_the_encoder(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    cfg = json.loads((d / "processor_config.json").read_text())
    cfg["num_image_tokens"] = 99
    (d / "processor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="num_image_tokens=99"):
        load_pretrained(d, device="cpu")


def test_truncated_vae_weights_name_the_file(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    weights = d / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(VAELoadError, match=rf"VAE weights file {re.escape(str(weights))} is corrupt or truncated"):
        load_pretrained(d, device="cpu")
    (d / "vae" / "config.json").unlink()
    with pytest.raises(VAELoadError, match="has no config.json"):
        load_pretrained(d, device="cpu")


def test_missing_tokenizer_json_is_named_not_blamed_on_sentencepiece(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    (d / "tokenizer.json").unlink()
    expected = rf"no tokenizer in {re.escape(str(d))}: expected tokenizer.json"
    with pytest.raises(FileNotFoundError, match=expected) as err:
        load_pretrained(d, device="cpu")
    assert "sentencepiece" not in str(err.value)
    (d / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=rf"the tokenizer in {re.escape(str(d))} could not be read"):
        load_pretrained(d, device="cpu")


@pytest.mark.parametrize("text,message", [
    ('{"steps": "thirty", "cfg": 2}', "steps must be a whole number from 1 to 100, got 'thirty'"),
    ('{"steps": 30, "cfg": -1}', "cfg must be a number from 0 to 10, got -1"),
    ('{"steps": 30, "cgf": 2}', "unknown key(s) 'cgf'; allowed keys: steps, cfg"),
    ('{"steps": 30,', "is not valid JSON"),
    ('[30, 2]', "must hold a JSON object"),
])
def test_bad_sampling_json_names_the_file_and_key(tiny_model_dir, tmp_path, text, message):
    d = _copy(tiny_model_dir, tmp_path / "m")
    (d / "sampling.json").write_text(text)
    with pytest.raises(CheckpointError, match=re.escape(f"{d / 'sampling.json'}") + ".*" + re.escape(message)):
        read_sampling(d)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_pretrained(d, device="cpu")


def test_sampling_json_values_are_read_as_numbers(tmp_path):
    (tmp_path / "sampling.json").write_text('{"steps": "12", "cfg": 4}')
    assert read_sampling(tmp_path) == {"steps": 12, "cfg": 4.0}
    assert read_sampling(None) == {"steps": 30, "cfg": 2.0}


@pytest.mark.parametrize("n,text", [(0, "0"), (950, "950"), (1_000, "1 K"), (96_512, "96.5 K"),
                                    (9_612_345, "9.61 M"), (123_456_789, "123 M"), (1_300_000_000, "1.3 B"),
                                    (2_046_000_000, "2.05 B")])
def test_parameter_counts_use_a_readable_unit(n, text):
    assert format_params(n) == text


def test_load_log_gives_small_models_in_millions(tiny_model_dir, caplog):
    with caplog.at_level(logging.INFO, logger="janusflow_core.checkpoint"):
        load_pretrained(tiny_model_dir, device="cpu", dtype="fp32", with_vae=False)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("loading "))
    assert re.search(r"\((\d+(\.\d+)?) [KM] params\)", line), line
