"""The command-line contract that benchmarks rely on."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO
from PIL import Image

from janusflow_core import checkpoint, cli
from janusflow_core.pipelines import ChatPipeline


def _run(*args, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "janusflow_core", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, **kw)


def test_generate_single_and_batch(tiny_model_dir, tmp_path):
    r = _run("generate", "--model", str(tiny_model_dir), "--prompt", "a red circle", "--steps", "2",
             "--num-images", "2", "--out", str(tmp_path / "one"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["0.png", "1.png"]
    jobs = tmp_path / "p.jsonl"
    jobs.write_text('{"prompt": "a square", "seed": 3}\n'
                    '{"prompt": "two circles", "seed": 1, "num_images": 3, "steps": 2, "cfg": 1.5}\n')
    r = _run("generate", "--model", str(tiny_model_dir), "--prompts-file", str(jobs), "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["0_0.png", "1_0.png", "1_1.png", "1_2.png"]
    assert r.stdout == ""


def test_chat_questions_file_prints_one_json_line_per_question(tiny_model_dir, tmp_path):
    img = tmp_path / "x.png"
    Image.new("RGB", (64, 64), "white").save(img)
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"image": str(img), "question": "How many objects are there?"}) + "\n"
                 + json.dumps({"question": "Describe the image."}) + "\n"
                 + json.dumps({"image": str(img), "question": "What color is the circle?"}) + "\n")
    r = _run("chat", "--model", str(tiny_model_dir), "--questions-file", str(q), "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(set(json.loads(line)) == {"answer"} for line in lines)


def test_chat_streams_to_stdout_and_bad_input_exits_cleanly(tiny_model_dir, tmp_path):
    r = _run("chat", "--model", str(tiny_model_dir), "--question", "hi", "--max-new-tokens", "3")
    assert r.returncode == 0 and r.stdout.endswith("\n") and "tokens/s" in r.stderr
    bad = tmp_path / "bad.png"
    bad.write_text("this is not an image")
    r = _run("chat", "--model", str(tiny_model_dir), "--image", str(bad), "--question", "hi")
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr
    r = _run("generate", "--model", str(tiny_model_dir), "--prompt", "a", "--cfg", "-1", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "cfg must be" in r.stderr


# -- in process: every refusal is one `error:` line with exit status 2, and bad input never loads the model --

def _main(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def no_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although the input was invalid")

    monkeypatch.setattr(checkpoint, "load_pretrained", refuse)


def test_truncated_png_for_chat_image_is_one_line(tmp_path, capsys, no_load):
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, format="PNG")
    cut = tmp_path / "cut.png"
    cut.write_bytes(buf.getvalue()[:200])
    code, out, err = _main(capsys, "chat", "--image", cut, "--question", "What color is the circle?")
    assert code == 2 and out == ""
    assert "cut.png' could not be decoded as an image" in _one_error_line(err)


def test_out_pointing_at_a_file_is_refused_before_loading(tmp_path, capsys, no_load):
    existing = tmp_path / "picture.png"
    existing.write_bytes(b"x")
    code, _, err = _main(capsys, "generate", "--prompt", "a red circle", "--out", existing)
    assert code == 2 and f"--out {existing} exists and is not a folder" in _one_error_line(err)
    code, _, err = _main(capsys, "generate", "--prompt", "a red circle", "--out", existing / "sub")
    assert code == 2 and f"{existing} is a file, not a folder" in _one_error_line(err)
    assert existing.read_bytes() == b"x"


@pytest.mark.parametrize("flags,message", [
    (["--steps", "0"], "steps must be a whole number from 1 to 100, got '0'"),
    (["--steps", "1e9"], "steps must be a whole number from 1 to 100, got '1e9'"),
    (["--cfg", "nan"], "cfg must be a number from 0 to 10, got 'nan'"),
    (["--num-images", "9"], "num_images must be a whole number from 1 to 8, got '9'"),
    (["--seed", str(2**31)], "seed must be a whole number from 0 to 2147483647, got '2147483648'"),
    (["--prompt", "   "], "the prompt is empty"),
    (["--sampler", "dpm"], "invalid choice: 'dpm'"),
])
def test_bad_generation_flags_are_refused_before_loading(tmp_path, capsys, no_load, flags, message):
    args = ["generate", "--prompt", "a red circle", "--out", tmp_path / "o", *flags]
    code, _, err = _main(capsys, *args)
    assert code == 2 and message in _one_error_line(err)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags,message", [
    (["--max-new-tokens", "0"], "max_new_tokens must be a whole number from 1 to 4096, got '0'"),
    (["--temperature", "-1"], "temperature must be a number from 0 to 2, got '-1'"),
    (["--top-p", "2"], "top_p must be a number from 0.01 to 1, got '2'"),
    (["--seed", "-3"], "seed must be a whole number from 0 to 2147483647"),
    (["--image", "a.png"] * 5, "5 --image files; the limit is 4 per question"),
    (["--device", "gpu7"], "--device 'gpu7' is not a device; allowed: auto, cpu, cuda, cuda:N, mps"),
])
def test_bad_chat_flags_are_refused_before_loading(capsys, no_load, flags, message):
    code, _, err = _main(capsys, "chat", "--question", "How many objects are there?", *flags)
    assert code == 2 and message in _one_error_line(err)


def test_jsonl_rows_are_checked_line_by_line_before_loading(tmp_path, capsys, no_load):
    jobs = tmp_path / "p.jsonl"
    jobs.write_text('{"prompt": "a square", "seed": 3}\n\n{"prompt": "a circle", "seed": 1, "steps": 500}\n')
    code, _, err = _main(capsys, "generate", "--prompts-file", jobs, "--out", tmp_path / "o")
    assert code == 2 and f"{jobs}:3: steps must be a whole number from 1 to 100, got 500" in _one_error_line(err)
    jobs.write_text('{"prompt": "a square", "seed": 3, "stpes": 4}\n')
    code, _, err = _main(capsys, "generate", "--prompts-file", jobs, "--out", tmp_path / "o")
    assert code == 2 and f"{jobs}:1: unknown key(s) 'stpes'; allowed keys: prompt, seed" in _one_error_line(err)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "What shape is it?", "image": str(tmp_path / "missing.png")}) + "\n")
    code, _, err = _main(capsys, "chat", "--questions-file", questions)
    assert code == 2 and f"{questions}:1: image file not found" in _one_error_line(err)
    questions.write_bytes(b"\xff\xfe{")
    code, _, err = _main(capsys, "chat", "--questions-file", questions)
    assert code == 2 and f"{questions} is not UTF-8 text" in _one_error_line(err)


def test_bad_sampling_json_and_truncated_vae_end_in_one_line_naming_the_file(tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    (model / "sampling.json").write_text('{"steps": "30x", "cfg": 2}')
    code, _, err = _main(capsys, "generate", "--model", model, "--prompt", "a circle", "--out", tmp_path / "o")
    line = _one_error_line(err)  # checked before the weights are read: nothing else is logged
    assert code == 2 and f"{model / 'sampling.json'}: steps must be a whole number" in line
    (model / "sampling.json").write_text('{"steps": 2, "cfg": 2}')
    weights = model / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:3000])
    code, _, err = _main(capsys, "generate", "--model", model, "--prompt", "a circle", "--out", tmp_path / "o")
    last = err.strip().splitlines()[-1]  # after the "loading ..." log line
    assert code == 2 and "Traceback" not in err and err.count("error:") == 1
    assert last.startswith("error: ") and f"VAE weights file {weights} is corrupt or truncated" in last


def test_usage_errors_are_one_line(capsys):
    code, _, err = _main(capsys, "generate", "--prompt", "x")
    assert code == 2 and "the following arguments are required: --out" in _one_error_line(err)
    code, _, err = _main(capsys, "paint")
    assert code == 2 and "invalid choice: 'paint'" in _one_error_line(err)


def test_an_empty_answer_is_not_a_success(tiny_bundle, monkeypatch, capsys):
    monkeypatch.setattr(checkpoint, "load_pretrained", lambda *a, **k: tiny_bundle)
    monkeypatch.setattr(ChatPipeline, "stream", lambda self, *a, **k: iter(()))
    code, out, err = _main(capsys, "chat", "--question", "hi")
    assert code == 1 and out == "\n" and "error: the model's answer is empty" in err
    monkeypatch.setattr(ChatPipeline, "stream", lambda self, *a, **k: iter(["a red", " circle"]))
    code, out, err = _main(capsys, "chat", "--question", "hi")
    assert code == 0 and out == "a red circle\n" and "error" not in err


# -- generation options (issue 25) ----------------------------------------------------------------------

def test_generate_with_every_option_and_the_same_keys_in_jsonl(tiny_model_dir, tmp_path):
    picture = tmp_path / "in.png"
    Image.new("RGB", (80, 60), (200, 40, 40)).save(picture)
    r = _run("generate", "--model", str(tiny_model_dir), "--prompt", "a blue circle", "--steps", "4", "--cfg", "3",
             "--init-image", str(picture), "--strength", "0.5", "--negative-prompt", "red", "--shift", "2",
             "--guidance-interval", "0.2", "0.8", "--guidance", "apg", "--out", str(tmp_path / "one"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["0.png"] and "2 of 4 steps" in r.stderr
    jobs = tmp_path / "p.jsonl"
    jobs.write_text(json.dumps({"prompt": "a square", "seed": 3, "init_image": str(picture), "strength": 0.25,
                                "negative_prompt": "green", "shift": 3, "guidance_interval": [0, 0.5],
                                "guidance": "cfg-zero-star"}) + "\n"
                    + json.dumps({"prompt": "a circle", "seed": 1, "steps": 2}) + "\n")
    r = _run("generate", "--model", str(tiny_model_dir), "--prompts-file", str(jobs), "--steps", "4",
             "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["0_0.png", "1_0.png"]


def test_cli_options_reach_the_pipeline(tiny_bundle, monkeypatch, capsys, tmp_path):
    from janusflow_core.pipelines import GenerationPipeline

    seen = []
    real = GenerationPipeline.__call__
    monkeypatch.setattr(checkpoint, "load_pretrained", lambda *a, **k: tiny_bundle)
    monkeypatch.setattr(GenerationPipeline, "__call__", lambda self, *a, **k: seen.append(k) or real(self, *a, **k))
    picture = tmp_path / "in.png"
    Image.new("RGB", (40, 40), "white").save(picture)
    code, _, err = _main(capsys, "generate", "--prompt", "a circle", "--steps", "2", "--init-image", picture,
                         "--strength", "0.5", "--negative-prompt", "red", "--shift", "3", "--guidance-interval",
                         "0.25", "0.75", "--guidance", "cfg-zero-star", "--out", tmp_path / "o")
    assert code == 0, err
    k = seen[0]
    assert k["strength"] == 0.5 and k["negative_prompt"] == "red" and k["shift"] == 3.0
    assert k["guidance_interval"] == (0.25, 0.75) and k["guidance"] == "cfg-zero-star"
    assert k["init_image"].size == (40, 40)
    seen.clear()
    code, _, err = _main(capsys, "generate", "--prompt", "a circle", "--steps", "2", "--out", tmp_path / "p")
    k = seen[0]  # the defaults: text-to-image, the official grid and plain CFG at every step
    assert code == 0 and k["init_image"] is None and k["strength"] == 1.0 and k["negative_prompt"] is None
    assert k["shift"] == 1.0 and k["guidance_interval"] == (0.0, 1.0) and k["guidance"] == "cfg"


@pytest.mark.parametrize("flags,message", [
    (["--strength", "0"], "strength must be a number above 0 and at most 1, got '0'"),
    (["--strength", "1.2"], "strength must be a number above 0 and at most 1, got '1.2'"),
    (["--strength", "0.5"], "strength 0.5 needs an init image (--init-image"),
    (["--shift", "0"], "shift must be a number from 0.1 to 10, got '0'"),
    (["--shift", "1e6"], "shift must be a number from 0.1 to 10, got '1e6'"),
    (["--guidance-interval", "0.9", "0.1"], "guidance_interval must be two numbers LO HI with 0 <= LO <= HI <= 1; "
                                            "got LO 0.9 above HI 0.1"),
    (["--guidance-interval", "0", "1.5"], "guidance_interval HI must be a number from 0 to 1, got '1.5'"),
    (["--guidance-interval", "0.5"], "argument --guidance-interval: expected 2 arguments"),
    (["--guidance", "pag"], "guidance must be one of cfg, cfg-zero-star, apg; got 'pag'"),
    (["--negative-prompt", "x" * 4001], "the negative prompt is 4001 characters long; the limit is 4000"),
    (["--init-image", "/no/such.png"], "init_image '/no/such.png': no such file"),
])
def test_bad_generation_options_are_refused_before_loading(tmp_path, capsys, no_load, flags, message):
    code, _, err = _main(capsys, "generate", "--prompt", "a red circle", "--out", tmp_path / "o", *flags)
    assert code == 2 and message in _one_error_line(err)
    assert not (tmp_path / "o").exists()


def test_unreadable_init_image_and_bad_option_lines_are_refused_before_loading(tmp_path, capsys, no_load):
    broken = tmp_path / "broken.png"
    broken.write_text("this is not an image")
    code, _, err = _main(capsys, "generate", "--prompt", "a circle", "--init-image", broken, "--out", tmp_path / "o")
    assert code == 2 and f"init_image '{broken}' is not a readable image" in _one_error_line(err)
    jobs = tmp_path / "p.jsonl"
    for row, message in [({"guidance_interval": [0.7, 0.3]}, "guidance_interval must be two numbers LO HI with 0 <= "
                                                               "LO <= HI <= 1; got LO 0.7 above HI 0.3"),
                         ({"guidance_interval": 0.5}, "guidance_interval must be two numbers LO HI"),
                         ({"init_image": str(broken)}, f"init_image '{broken}' is not a readable image"),
                         ({"strength": 0}, "strength must be a number above 0 and at most 1, got 0"),
                         ({"strength": 0.4}, "strength 0.4 needs an init image"),
                         ({"guidance": "apg2"}, "guidance must be one of cfg, cfg-zero-star, apg; got 'apg2'")]:
        jobs.write_text(json.dumps({"prompt": "a square", "seed": 3}) + "\n"
                        + json.dumps({"prompt": "a circle", "seed": 1, **row}) + "\n")
        code, _, err = _main(capsys, "generate", "--prompts-file", jobs, "--out", tmp_path / "o")
        assert code == 2 and f"{jobs}:2: {message}" in _one_error_line(err)


def test_a_negative_prompt_too_long_in_tokens_is_one_line(tiny_bundle, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(checkpoint, "load_pretrained", lambda *a, **k: tiny_bundle)
    code, _, err = _main(capsys, "generate", "--prompt", "a circle", "--negative-prompt", "circle " * 500,
                         "--out", tmp_path / "o")
    last = err.strip().splitlines()[-1]  # after the "loaded ..." log line: the tokenizer is needed to count
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert re.fullmatch(r"error: the negative prompt is \d+ tokens; the limit is \d+\. Shorten it\.", last)
