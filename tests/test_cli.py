"""The command-line contract that benchmarks rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO
from PIL import Image


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
