"""The folder tree is the architecture, enforced: the numerical core (src/core) imports no
outer layer, no config or table library and does no file I/O; the objectives import the
core only; no module of src imports itself back through another (no import cycles)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

SRC = ROOT / "src"
OUTER = ("src.config", "src.sweep", "src.report", "src.train", "src.aggregate")
NOT_IN_CORE = ("hydra", "omegaconf", "pydantic", "pandas", "os", "pathlib", "shutil", "pickle", "json", "yaml")
FILE_CALLS = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "mkdir", "unlink", "load", "save",
              "savez", "read_parquet", "to_parquet", "rmtree", "replace"}  # fmt: skip


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def core_violations(path: Path) -> list[str]:
    """What a core module must not do: import an outer layer, a config or table library or
    the objectives (the core defines ``Objective``), or call a file function."""
    imports = _imports(path)
    bad = [m for m in imports if m.startswith((*OUTER, "src.objectives")) or m.split(".")[0] in NOT_IN_CORE]
    calls = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            calls.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return sorted(bad) + sorted(f"{c}()" for c in calls & FILE_CALLS)


@pytest.mark.parametrize("path", sorted((SRC / "core").rglob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_no_outer_layer_and_touches_no_file(path):
    assert not core_violations(path), f"{path.relative_to(ROOT)}: {core_violations(path)}"


def test_the_check_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pandas\nfrom src.sweep import files\n\n\ndef f():\n    return open('x')\n")
    assert core_violations(bad) == ["pandas", "src.sweep", "src.sweep.files", "open()"]


@pytest.mark.parametrize("path", sorted((SRC / "objectives").glob("*.py")), ids=lambda p: p.name)
def test_objectives_import_the_core_only(path):
    bad = sorted(m for m in _imports(path) if m.startswith(OUTER))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_no_import_cycles():
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph = {m: {d for d in _imports(p) if d in modules and d != m} for m, p in modules.items()}
    cycles = []

    def visit(m, stack):
        for d in graph[m]:
            if d in stack:
                cycles.append(stack[stack.index(d) :] + [d])
            elif len(stack) < 30 and d not in done:
                visit(d, [*stack, d])
        done.add(m)

    done: set[str] = set()
    for m in graph:
        visit(m, [m])
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles[:5])
