"""Parity with the official implementation on the shared fixture set(s)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import REPO, SHARED, require_shared
from safetensors.torch import load_file


def _fixture_sets():
    root = SHARED / "fixtures"
    return sorted(p for p in root.glob("official-tiny-*") if (p / "expected.safetensors").exists()) if root.exists() \
        else [root / "official-tiny-a"]


@pytest.mark.parametrize("fixture", _fixture_sets(), ids=lambda p: p.name)
def test_conformance_command_reproduces_official_outputs(fixture, tmp_path):
    require_shared(fixture)
    out = tmp_path / "out.safetensors"
    subprocess.run([sys.executable, "-m", "janusflow_core.conformance", str(fixture), str(out)], check=True, cwd=REPO,
                   env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    expected = load_file(str(fixture / "expected.safetensors"))
    got = load_file(str(out))
    inputs = load_file(str(fixture / "inputs.safetensors"))
    for name, e in expected.items():
        assert name in got, f"{name} was not written"
        g = got[name]
        assert g.shape == e.shape, f"{name}: shape {tuple(g.shape)} != {tuple(e.shape)}"
        if name == "und_greedy_tokens":
            assert torch.equal(g, e), name
        elif name == "und_logits":
            mask = inputs["und_attention_mask"].bool()
            torch.testing.assert_close(g[mask], e[mask], atol=1e-4, rtol=1e-4, msg=name)
        else:
            torch.testing.assert_close(g.to(e.dtype), e, atol=1e-4, rtol=1e-4, msg=name)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from janusflow_core.conformance import main

    assert main([str(tmp_path / "missing"), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: fixture folder {tmp_path / 'missing'} does not exist or is not a folder"
    (tmp_path / "fx").mkdir()
    (tmp_path / "fx" / "fixture_meta.json").write_text("{}")
    assert main([str(tmp_path / "fx"), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "inputs.safetensors" in err and "\n" not in err
