"""The fine-tuning command on tiny random models: data checks (each case), flag errors, LoRA against full,
the export, resume, bf16 autocast with gradient checkpointing on the CPU. The two-process run is in
test_finetune_ddp.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from janusflow_core import finetune
from janusflow_core.testing import make_tiny_model_dir
from janusflow_core.training import trainer as trainer_module

WORDS = "red blue green circle square triangle".split()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("base"), seed=0)


def _image(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    a = np.full((h, w, 3), 255, dtype=np.uint8)
    x, y = rng.integers(0, w // 2), rng.integers(0, h // 2)
    a[y:y + h // 3, x:x + w // 3] = rng.integers(0, 255, 3)
    return Image.fromarray(a)


def write_data(root: Path, n: int = 12, seed: int = 0) -> tuple[Path, Path]:
    """A generation folder (images of several sizes, one RGBA) and a LLaVA .jsonl (multi-turn and text-only)."""
    rng = np.random.default_rng(seed)
    gen = root / "gen"
    (gen / "img").mkdir(parents=True)
    und = root / "und"
    (und / "pics").mkdir(parents=True)
    lines, records = [], []
    for i in range(n):
        im = _image(rng, int(rng.integers(20, 70)), int(rng.integers(20, 70)))
        if i == 0:
            im = im.convert("RGBA")
        im.save(gen / "img" / f"{i}.png")
        lines.append({"file_name": f"img/{i}.png", "text": f"a {WORDS[i % 6]} {WORDS[3 + i % 3]}"})
        _image(rng, 32, 32).save(und / "pics" / f"{i}.png")
        conv = [{"from": "human", "value": "<image>\nwhat color is the square?"},
                {"from": "gpt", "value": WORDS[i % 3]}]
        if i % 3 == 1:
            conv += [{"from": "human", "value": "how many objects are there?"}, {"from": "gpt", "value": "two"}]
        records.append({"image": f"pics/{i}.png", "conversations": conv} if i % 4 else
                       {"conversations": [{"from": "human", "value": "is there a red circle?"},
                                          {"from": "gpt", "value": "yes"}]})
    (gen / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (und / "data.jsonl").write_text("".join(json.dumps(x) + "\n" for x in records))
    return gen, und / "data.jsonl"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    return write_data(tmp_path_factory.mktemp("data"))


def run(base: Path, out: Path, gen: Path | None, und: Path | None, *extra: str) -> dict:
    argv = ["--model", str(base), "--out", str(out), "--quiet", "--workers", "0", "--batch-size", "4"]
    argv += ["--gen-data", str(gen)] if gen else []
    argv += ["--und-data", str(und)] if und else []
    return finetune.main(argv + list(extra))


def fails(capsys, argv: list[str], code: int) -> str:
    with pytest.raises(SystemExit) as e:
        finetune.main(argv)
    assert e.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# -- data checks -------------------------------------------------------------------------------------

def test_each_kind_of_bad_record_is_named_with_file_and_line(base, tmp_path, capsys):
    gen, und = write_data(tmp_path / "d", n=6)
    meta = gen / "metadata.jsonl"
    rows = meta.read_text().splitlines()
    (gen / "img" / "1.png").unlink()  # line 2: missing image
    (gen / "img" / "2.png").write_bytes(b"not a png")  # line 3: unreadable
    rows[3] = json.dumps({"file_name": "img/3.png", "text": "  "})  # line 4: empty caption
    rows[4] = '{"file_name": "img/4.png", "text": '  # line 5: bad JSON
    rows[5] = json.dumps({"file_name": "img/5.png", "text": " ".join(["red circle"] * 300)})  # line 6: too long
    meta.write_text("\n".join(rows) + "\n")
    und_rows = und.read_text().splitlines()
    und_rows[1] = json.dumps({"image": "pics/1.png", "conversations": [{"from": "gpt", "value": "hi"},
                                                                       {"from": "human", "value": "x"}]})
    und_rows[2] = json.dumps({"conversations": [{"from": "human", "value": "<image>\nq"},
                                                {"from": "gpt", "value": "a"}]})
    und_rows[3] = json.dumps({"image": "pics/nope.png", "conversations": [{"from": "human", "value": "q"},
                                                                         {"from": "gpt", "value": "a"}]})
    und.write_text("\n".join(und_rows) + "\n")
    argv = ["--model", str(base), "--out", str(tmp_path / "o"), "--gen-data", str(gen), "--und-data", str(und),
            "--validate-only", "--max-seq-len", "250"]
    err = fails(capsys, argv, 1)
    assert "8 problem(s) in the training data" in err
    assert f"{meta}:2: image {gen / 'img' / '1.png'} does not exist" in err
    assert f"{meta}:3: image {gen / 'img' / '2.png'} cannot be read" in err
    assert f"{meta}:4: empty caption" in err
    assert f"{meta}:5: not valid JSON" in err
    assert f"{meta}:6: the caption makes" in err and "more than the context of 250" in err
    assert f"{und}:2: turn 0 is from 'gpt'" in err
    assert f"{und}:3: <image> in the text but the record has no image" in err
    assert f"{und}:4: image {und.parent / 'pics' / 'nope.png'} does not exist" in err
    # --skip-bad leaves them out and says how many
    summary = finetune.main(argv + ["--skip-bad"])
    assert summary == {"validated": True, "gen": 1, "und": 3, "skipped": 8}
    assert "--skip-bad: left out 8 record(s)" in capsys.readouterr().err


def test_an_empty_dataset_and_a_bad_json_list_are_refused(base, tmp_path, capsys):
    gen = tmp_path / "empty"
    gen.mkdir()
    (gen / "metadata.jsonl").write_text("\n")
    err = fails(capsys, ["--model", str(base), "--out", str(tmp_path / "o"), "--gen-data", str(gen)], 1)
    assert "--gen-data: no usable record (the files are empty)" in err
    bad = tmp_path / "list.json"
    bad.write_text('[\n  {"conversations": []},\n  {"conversations": [}\n]')
    err = fails(capsys, ["--model", str(base), "--out", str(tmp_path / "o"), "--und-data", str(bad)], 1)
    assert f"{bad}:3: not valid JSON" in err
    assert not (tmp_path / "o").exists()  # nothing written: the model was never loaded


def test_conversation_labels_are_the_answers_in_the_base_template(base, data):
    from janusflow_core.processing.processor import JanusFlowProcessor
    from janusflow_core.training.finetune_data import Tokens, read_und_file

    proc = JanusFlowProcessor.from_pretrained(base)
    records, problems = read_und_file(data[1])
    assert not problems and len(records) == 12
    multi = records[1]
    assert multi.turns == (("what color is the square?", "blue"), ("how many objects are there?", "two"))
    ids, seq_mask, labels = Tokens(proc).und(multi)
    assert sum(seq_mask) == proc.num_image_tokens + 1  # start tag + image positions
    answers = [t for t in labels if t != -100]
    eos = proc.special_tokens.eos
    assert proc.tokenizer.decode(answers).replace(proc.tokenizer.decode([eos]), "|").split("|")[:2] == [" blue", " two"]
    text_only = records[0]
    assert text_only.image is None and not any(Tokens(proc).und(text_only)[1])


# -- flags -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, said", [
    ([], "give at least one of --gen-data DIR"),
    (["--gen-data", "/nonexistent"], "--gen-data /nonexistent: no such folder"),
    (["--und-data", "x.txt"], "must be a .json (list of records) or .jsonl file"),
    (["--und-data", "DATA", "--gen-ratio", "0.5"], "--gen-ratio mixes the two kinds of data"),
    (["--gen-data", "GEN", "--und-data", "DATA", "--gen-ratio", "1.5"], "--gen-ratio must be between 0 and 1"),
    (["--gen-data", "GEN", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["--gen-data", "GEN", "--minutes", "-1"], "--minutes must be a positive number"),
    (["--gen-data", "GEN", "--lr", "nan"], "--lr must be a positive number, got nan"),
    (["--gen-data", "GEN", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--gen-data", "GEN", "--method", "full", "--lora-rank", "8"], "goes with --method lora"),
    (["--gen-data", "GEN", "--ema", "1"], "--ema must be in [0, 1)"),
    (["--gen-data", "GEN", "--method", "full", "--modules-lr", "1e-4"], "--modules-lr must be 0 or more and goes with"),
    (["--gen-data", "GEN", "--modules-lr", "-1"], "--modules-lr must be 0 or more"),
    (["--gen-data", "GEN", "--repa-warmup", "-1"], "--repa-warmup must be 0 or more steps"),
    (["--gen-data", "GEN", "--mixed-precision", "fp16"], "fp16 needs a CUDA GPU"),
    (["--gen-data", "GEN", "--resume"], "holds no checkpoint to continue"),
])
def test_bad_flags_fail_in_one_line_before_loading(tmp_path, data, capsys, flags, said):
    if said.startswith("fp16") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    flags = [str(data[0]) if f == "GEN" else str(data[1]) if f == "DATA" else f for f in flags]
    # the model does not exist: a flag error must come first
    err = fails(capsys, ["--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o")] + flags, 2)
    assert said in err and len(err.strip().splitlines()) == 1


def test_an_out_folder_that_is_not_empty_needs_resume(base, data, tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x").write_text("")
    err = fails(capsys, ["--model", str(base), "--out", str(tmp_path / "o"), "--gen-data", str(data[0])], 2)
    assert "is not empty; choose a new folder, or pass --resume" in err


# -- training ----------------------------------------------------------------------------------------

def _changed(base: Path, out: Path) -> set[str]:
    a, b = load_file(str(base / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()  # the export is in the official layout
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_lora_trains_adapters_and_new_modules_full_trains_all_but_the_encoder(base, data, tmp_path):
    lora = run(base, tmp_path / "lora", *data, "--steps", "2", "--lr", "1e-2")
    full = run(base, tmp_path / "full", *data, "--steps", "2", "--lr", "1e-2", "--method", "full")
    assert lora["steps"] == full["steps"] == 2
    weights = load_file(str(base / "model.safetensors"))
    assert full["trained_parameters"] == sum(v.numel() for k, v in weights.items()
                                             if not k.startswith("vision_und_enc_model."))
    assert lora["trained_parameters"] < full["trained_parameters"]
    for out in ("lora", "full"):
        changed = _changed(base, tmp_path / out)
        assert not any(k.startswith("vision_und_enc_model.") for k in changed)  # SigLIP frozen in both
        assert any(k.startswith("vision_gen_dec_model.") for k in changed)  # new modules train in both
        assert "language_model.model.layers.0.self_attn.q_proj.weight" in changed  # merged LoRA / full update
    lora_changed = _changed(base, tmp_path / "lora")
    assert "language_model.model.layers.0.input_layernorm.weight" not in lora_changed  # no adapter on norms
    assert "language_model.model.layers.0.input_layernorm.weight" in _changed(base, tmp_path / "full")
    adapter = json.loads((tmp_path / "lora" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and "vision_gen_dec_model" in adapter["modules_to_save"]
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "full" / "adapter").exists()
    log = [json.loads(x) for x in (tmp_path / "lora" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(math.isfinite(r["ar"]) and math.isfinite(r["flow"]) for r in log)
    assert {"repa", "samples_per_s"} <= log[0].keys()


def test_modules_lr_is_the_rate_of_the_fully_trained_modules_only(base, data, tmp_path):
    run(base, tmp_path / "m0", *data, "--steps", "2", "--lr", "1e-2", "--modules-lr", "0")
    changed = _changed(base, tmp_path / "m0")
    from janusflow_core.training.lora import FULLY_TRAINED

    assert not any(k.startswith(FULLY_TRAINED) for k in changed)  # rate 0: the modules keep the base's weights
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in changed  # the adapters still learn
    settings = json.loads((tmp_path / "m0" / "finetune.json").read_text())["settings"]
    assert settings["lr"] == 1e-2 and settings["modules_lr"] == 0.0


def test_caption_keys_read_either_article():
    from janusflow_core.evaluation.new_shape import caption_key, shape_prompts

    assert caption_key("An orange ring.") == caption_key("a orange ring") == "a orange ring"
    assert [p for p, _ in shape_prompts("oval")][:1] == ["an oval"]
    assert "an orange ring" in [p for p, _ in shape_prompts("ring")]


def test_the_export_loads_generates_answers_and_keeps_the_base_template(base, data, tmp_path):
    from janusflow_core import ChatPipeline, GenerationPipeline, load_pretrained

    run(base, tmp_path / "o", *data, "--steps", "1")
    bundle = load_pretrained(tmp_path / "o", device="cpu")
    images = GenerationPipeline(bundle)("a red square", steps=2, seed=0).images
    assert len(images) == 1 and images[0].size == (32, 32)
    assert isinstance(ChatPipeline(bundle).answer("what color?", images=[images[0]], max_new_tokens=3), str)
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer.json", "sampling.json"):
        assert (tmp_path / "o" / name).read_text() == (base / name).read_text(), name
    assert (tmp_path / "o" / "vae" / "config.json").is_file()


def test_resume_continues_the_same_run(base, data, tmp_path, monkeypatch):
    args = ("--steps", "4", "--checkpoint-every", "2", "--method", "full", "--lr", "1e-2")
    run(base, tmp_path / "straight", *data, *args)
    original = trainer_module.Trainer.train
    monkeypatch.setattr(trainer_module.Trainer, "train", lambda self, resume=True: original(self, resume, stop_at=2))
    assert run(base, tmp_path / "split", *data, *args)["steps"] == 2  # an interruption after step 2
    monkeypatch.setattr(trainer_module.Trainer, "train", original)
    summary = run(base, tmp_path / "split", *data, *args, "--resume")
    assert summary["resumed"] and summary["steps"] == 4
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("straight", "split"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    steps = [json.loads(x)["step"] for x in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_generation_only_lora_with_bf16_autocast_and_gradient_checkpointing(base, data, tmp_path, monkeypatch):
    seen = {}
    original = trainer_module.Trainer.train

    def spy(self, resume=True, stop_at=None):
        mlp = self.model.language_model.model.layers[0].mlp
        hook = mlp.register_forward_hook(lambda m, i, o: seen.update(dtype=o.dtype))  # returns None: output kept
        try:
            return original(self, resume, stop_at)
        finally:
            hook.remove()
            seen["checkpointing"] = self.model.language_model.model.gradient_checkpointing
            seen["precision"] = self.acc.mixed_precision

    monkeypatch.setattr(trainer_module.Trainer, "train", spy)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # one process, one precision: earlier tests set "no" in this process
    try:
        summary = run(base, tmp_path / "o", data[0], None, "--steps", "2", "--mixed-precision", "bf16",
                      "--gradient-checkpointing")
    finally:
        AcceleratorState._reset_state(True)
    assert seen == {"dtype": torch.bfloat16, "checkpointing": True, "precision": "bf16"}
    assert summary["samples_seen"] == {"gen": 8, "und": 0}
    assert all(math.isfinite(v) for v in summary["last_losses"].values())
    assert "ar" not in summary["last_losses"]
