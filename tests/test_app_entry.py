"""``python app.py``: bad flags end in one ``error:`` line (exit 2) before any server starts."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest

import app as app_package  # the package app/; app.py itself is loaded by path below

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("app_entry", ROOT / "app.py")
entry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(entry)


@pytest.fixture
def no_serving(monkeypatch):
    """Fail the test if a refusal case reaches the point where the app would be built."""
    def refuse_to_build(*_a, **_k):
        raise AssertionError("the server was started for a bad flag")

    monkeypatch.setattr(app_package, "create_demo", refuse_to_build)


def busy_port() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def run(argv: list[str]) -> int:
    """Exit status of ``python app.py ARGV`` (argparse's usage errors exit through SystemExit)."""
    try:
        return entry.main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize("argv, expected", [
    (["--port", "99999"], "--port must be from 0 to 65535, got 99999"),
    (["--concurrency", "0"], "--concurrency must be from 1 to 64"),
    (["--gen-concurrency", "65"], "--gen-concurrency must be from 1 to 64, got 65"),
    (["--model", "/no/such/folder"], "--model '/no/such/folder' is neither an existing folder nor a hub id"),
    (["--vae", "./missing-vae"], "--vae './missing-vae' is neither an existing folder nor a hub id"),
    (["--model", "app.py"], "is a file; pass the folder"),
    (["--device", "gpu9"], "--device 'gpu9' is not a device; allowed: auto, cpu, cuda, cuda:N, mps"),
    (["--dtype", "int4"], "invalid choice: 'int4'"),
    (["--port", "seven"], "invalid int value: 'seven'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_flags_are_one_line_before_serving(argv, expected, capsys, no_serving, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


def test_a_port_in_use_is_refused_with_its_number(capsys, no_serving):
    s = busy_port()
    port = s.getsockname()[1]
    try:
        assert run(["--port", str(port)]) == 2
    finally:
        s.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--port {port} on 127.0.0.1 cannot be used" in err[0]


def test_a_host_that_is_not_this_machine_is_named(capsys, no_serving):
    # 192.0.2.1 is TEST-NET-1 (documentation only): never an address of this machine; nothing is sent
    assert run(["--host", "192.0.2.1", "--port", "7861"]) == 2
    assert "--host '192.0.2.1' is not an address of this machine" in capsys.readouterr().err


def test_the_api_key_comes_from_the_flag_or_the_environment(monkeypatch, capsys):
    monkeypatch.delenv(entry.KEY_ENV, raising=False)
    assert entry.parse_args([]).api_key is None
    assert entry.parse_args(["--api-key", "sk-1"]).api_key == "sk-1"
    monkeypatch.setenv(entry.KEY_ENV, "sk-env")
    assert entry.parse_args([]).api_key == "sk-env"
    assert entry.parse_args(["--api-key", "sk-1"]).api_key == "sk-1"  # the flag wins
    monkeypatch.setenv(entry.KEY_ENV, "")
    assert entry.parse_args([]).api_key is None  # an empty variable is no key
    assert run(["--api-key", " "]) == 2
    assert "error: --api-key must not be empty" in capsys.readouterr().err
