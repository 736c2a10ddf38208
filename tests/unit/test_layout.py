"""The architecture as rules the code must keep (docs/ARCHITECTURE.md).

Layers: ``models`` (pure online learning) <- ``streams`` (the runtime and its
tools) -> ``agents`` (Faust tasks, which call into the runtime they are handed).
Sizes are bounded so a reader can hold a module, or a function, in mind.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "streams", "agents")
CODE_DIRS = (*PACKAGES, "benchmarks")
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 90  # docstring excluded

# What each top-level package may import from the others and from the stack.
ALLOWED = {
    "models": set(),
    "agents": set(),
    "streams": {"models", "agents"},
}
MODELS_FORBIDDEN = ("faust", "aiokafka", "confluent_kafka", "redis", "prometheus_client", "mode")


def _modules(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth (lazy imports count too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    n = fn.end_lineno - fn.lineno + 1
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        n -= first.end_lineno - first.lineno + 1
    return n


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_no_module_is_longer_than_the_bound():
    long = {_rel(p): n for p in _modules(*CODE_DIRS) if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_longer_than_the_bound():
    long = {}
    for path in _modules(*CODE_DIRS):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > MAX_FUNCTION_LINES:
                long[f"{_rel(path)}:{node.lineno} {node.name}"] = _body_lines(node)
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (docstring excluded): {long}"


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_the_layers_below(package):
    wrong = {}
    for path in _modules(package):
        others = {m.split(".")[0] for m in _imports(path)} & set(PACKAGES) - {package}
        if others - ALLOWED[package]:
            wrong[_rel(path)] = sorted(others - ALLOWED[package])
    assert not wrong, f"{package} must not import {wrong}"


def test_only_the_worker_module_knows_the_agents():
    users = {_rel(p) for p in _modules("streams") if any(m.split(".")[0] == "agents" for m in _imports(p))}
    assert users <= {"streams/worker.py"}, users


def test_models_are_usable_without_the_streaming_stack():
    wrong = {_rel(p): sorted(m for m in _imports(p) if m.split(".")[0] in MODELS_FORBIDDEN)
             for p in _modules("models")}
    assert not {k: v for k, v in wrong.items() if v}


def test_the_runtime_imports_no_tool():
    runtime = [p for p in _modules("streams") if "tools" not in p.parts and p.name != "cli.py"]
    wrong = {_rel(p): sorted(m for m in _imports(p) if m.startswith("streams.tools")) for p in runtime}
    assert not {k: v for k, v in wrong.items() if v}


def test_every_noqa_says_why():
    # "# noqa: CODE  reason" or "# noqa: CODE - reason": a suppression nobody can explain is a bug.
    bare = []
    for path in _modules(*CODE_DIRS, "tests"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            m = re.search(r"#\s*noqa\b(:\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)?(.*)$", line)
            if m and len(m.group(2).strip(" -:")) < 8:
                bare.append(f"{_rel(path)}:{i}")
    assert not bare, f"noqa without a reason: {bare}"
