"""Imports run one way: the model's building blocks never reach up to the pipelines, training, evaluation
or the app; evaluation never reads training; the package never reads the app, the tests, the benchmarks or
the studies; and product code never imports the testing helpers. Read from the source (``ast``), so an
import inside a function counts as much as one at the top of a file."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Parts of janusflow_core that everything else builds on (checkpoint loads them all), then what uses them.
FOUNDATION = ("config", "presets", "bundle", "limits", "errors", "hub", "modeling", "processing", "sampling",
              "shapes", "vae", "quantization", "checkpoint", "data_formats")
UPPER = ("pipelines", "training", "evaluation", "cli", "conformance", "finetune", "__main__")
TESTING = ("janusflow_core.testing", "tests", "tools")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (relative imports resolved; ``from a import b`` counts as ``a.b``,
    since ``b`` may be a submodule)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer(module: str) -> str:
    """janusflow_core.modeling.llm -> modeling; janusflow_core.vae -> vae."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{module_name(p)} imports {m}" for p in files for m in sorted(imports_of(p))
            if any(within(m, f) for f in forbidden)]


def test_the_import_reader_resolves_relative_and_nested_imports(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    pkg = tmp_path / "janusflow_core" / "evaluation"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("from ..training import data\nfrom . import y\n"
                              "def f():\n    from janusflow_core.app import z\n    import os.path\n")
    found = imports_of(pkg / "x.py")
    assert {"janusflow_core.training.data", "janusflow_core.evaluation.y", "janusflow_core.app.z",
            "os.path"} <= found


@pytest.mark.parametrize("part", FOUNDATION)
def test_the_foundation_never_imports_an_upper_layer(part):
    path = ROOT / "janusflow_core" / part
    files = sources(f"janusflow_core/{part}") if path.is_dir() else [path.with_suffix(".py")]
    assert files and all(f.exists() for f in files)
    assert violations(files, tuple(f"janusflow_core.{u}" for u in UPPER) + ("app",)) == []


def test_evaluation_never_imports_training():
    assert violations(sources("janusflow_core/evaluation"), ("janusflow_core.training",)) == []


def test_the_pipelines_never_import_training_evaluation_or_the_entry_points():
    upper = ("training", "evaluation", "cli", "conformance")
    assert violations(sources("janusflow_core/pipelines"), tuple(f"janusflow_core.{u}" for u in upper)) == []


def test_the_package_never_imports_the_app_tests_benchmarks_or_studies():
    assert violations(sources("janusflow_core"), ("app", "tests", "bench", "studies", "tools")) == []


def test_product_code_never_imports_the_testing_helpers():
    product = [p for p in sources("janusflow_core", "app") if module_name(p) != "janusflow_core.testing"]
    assert violations(product + [ROOT / "app.py"], TESTING) == []


def test_every_package_part_is_in_a_layer():
    """A new subpackage or top-level module must be placed in FOUNDATION or UPPER (or be the testing one)."""
    parts = {layer(module_name(p)) for p in sources("janusflow_core")} - {""}
    assert parts - set(FOUNDATION) - set(UPPER) - {"testing"} == set()
