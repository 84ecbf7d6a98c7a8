"""The layout rules of docs/ARCHITECTURE.md ("Layers"), checked on the source itself.

Arrows only point down: the core (``callpark.*`` outside ``cli``, ``lab``, ``node``, ``dr`` and
``chaos``) imports none of those; ``node`` and ``dr`` do not import each other; ``lab`` and
``chaos`` sit on top of the services; ``cli`` is the top. Only ``callpark.store`` talks to etcd,
spells a key or reads the gRPC client. No class is over 400 lines and no function over 60 without
a reason written in :data:`LONG_ON_PURPOSE`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# (source folder, the package it is imported as). node/, dr/ and chaos/ live at the top level
# (design card) and are reached through symlinks in callpark/; see ARCHITECTURE.md "Packaging".
SOURCES = (
    ("callpark", "callpark"),
    ("node", "callpark.node"),
    ("dr", "callpark.dr"),
    ("chaos", "callpark.chaos"),
)
LINKED = {"node", "dr", "chaos"}

# Which layers a layer may import. "core" is every callpark module not in another layer.
MAY_IMPORT: dict[str, set[str]] = {
    "model": {"model"},
    "store": {"store", "model", "core"},
    "core": {"core", "model", "store"},
    "node": {"node", "core", "model", "store"},
    "dr": {"dr", "core", "model", "store"},
    "lab": {"lab", "node", "dr", "core", "model", "store"},
    "chaos": {"chaos", "lab", "node", "dr", "core", "model", "store"},
    "cli": {"cli", "chaos", "lab", "node", "dr", "core", "model", "store"},
}
# The few core modules the pure model may use: errors and pure audio helpers, no I/O.
MODEL_MAY_USE = {"callpark.errors", "callpark.audio"}
ETCD_CLIENT_MODULES = ("pyetcd", "grpc")
KEY_PREFIX = "/callpark/"

# Functions over 60 lines and classes over 400 lines that stay long on purpose, with the reason.
LONG_ON_PURPOSE: dict[str, str] = {}
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 400


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module


def layer_of(module: str) -> str | None:
    """The layer a ``callpark`` module belongs to; None for modules outside the project."""
    parts = module.split(".")
    if parts[0] != "callpark":
        return None
    if len(parts) == 1:
        return "core"
    top = parts[1]
    if top in {"cli", "lab", "node", "dr", "chaos", "model", "store"}:
        return top
    return "core"


def project_modules() -> Iterator[Module]:
    for folder, package in SOURCES:
        base = REPO / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base)
            if folder == "callpark" and rel.parts[0] in LINKED:
                continue  # the same files, reached through the link
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            yield Module(name, path, ast.parse(path.read_text(), str(path)))


def imports_of(module: Module) -> Iterator[tuple[int, str]]:
    """Every absolute module a file imports, function-local imports included."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _known(name: str, modules: set[str]) -> str:
    """``a.b.c`` when it is a module, else its longest known parent (``from pkg import thing``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


MODULES = list(project_modules())
NAMES = {m.name for m in MODULES}


def test_the_source_tree_is_found() -> None:
    assert {"callpark.store.etcd", "callpark.node.supervisor", "callpark.dr.controller"} <= NAMES


def test_imports_point_only_down_the_layers() -> None:
    wrong = []
    for module in MODULES:
        source_layer = layer_of(module.name)
        assert source_layer is not None
        for line, imported in imports_of(module):
            target = _known(imported, NAMES)
            if not target:
                continue
            target_layer = layer_of(target)
            assert target_layer is not None
            allowed = MAY_IMPORT[source_layer]
            if source_layer == "model" and target in MODEL_MAY_USE:
                continue
            if target_layer not in allowed:
                wrong.append(
                    f"{module.path.relative_to(REPO)}:{line}: {source_layer} imports {target} ({target_layer})"
                )
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(set(wrong)))


def test_only_the_store_imports_the_etcd_client() -> None:
    wrong = [
        f"{m.path.relative_to(REPO)}:{line}: {imported}"
        for m in MODULES
        if layer_of(m.name) != "store"
        for line, imported in imports_of(m)
        if imported.split(".")[0] in ETCD_CLIENT_MODULES
    ]
    assert not wrong, "etcd client imported outside callpark/store:\n" + "\n".join(wrong)


def _docstring_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                yield first.value


def test_only_the_store_spells_a_key() -> None:
    wrong = []
    for m in MODULES:
        if layer_of(m.name) == "store":
            continue
        docstrings = {id(d) for d in _docstring_nodes(m.tree)}
        for node in ast.walk(m.tree):
            if id(node) in docstrings:
                continue
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and KEY_PREFIX in node.value:
                wrong.append(f"{m.path.relative_to(REPO)}:{node.lineno}: {node.value[:60]!r}")
    assert not wrong, "etcd keys spelt outside callpark/store/schema.py:\n" + "\n".join(wrong)


def _long_definitions() -> Iterator[tuple[str, int, int]]:
    for m in MODULES:
        for node in ast.walk(m.tree):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                if lines > limit:
                    yield f"{m.name}:{node.name}", lines, limit


def test_no_long_class_or_function_without_a_reason() -> None:
    wrong = [f"{name}: {lines} lines (limit {limit})" for name, lines, limit in _long_definitions()]
    wrong = [w for w in wrong if w.split(":")[0] + ":" + w.split(":")[1] not in LONG_ON_PURPOSE]
    assert not wrong, "too long, split it or give the reason in LONG_ON_PURPOSE:\n" + "\n".join(wrong)


def test_every_reason_names_something_that_is_still_long() -> None:
    still_long = {name for name, _, _ in _long_definitions()}
    stale = sorted(set(LONG_ON_PURPOSE) - still_long)
    assert not stale, f"LONG_ON_PURPOSE names definitions that are no longer long: {stale}"


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("callpark.store.etcd", "store"),
        ("callpark.model.orbits", "model"),
        ("callpark.errors", "core"),
        ("callpark.node.supervisor", "node"),
        ("callpark", "core"),
        ("pyetcd", None),
    ],
)
def test_layer_of(module: str, layer: str | None) -> None:
    assert layer_of(module) == layer


def test_the_checker_sees_a_violation() -> None:
    """The import rule is not vacuous: a planted core -> node import is reported."""
    planted = Module(
        "callpark.errors", REPO / "callpark/errors.py", ast.parse("from callpark.node import supervisor\n")
    )
    found = [imp for _, imp in imports_of(planted) if layer_of(_known(imp, NAMES)) == "node"]
    assert found and "node" not in MAY_IMPORT["core"]


def test_the_pjsua2_worker_loads_no_etcd_client() -> None:
    """Workers hold calls, not etcd state: each one loading gRPC would cost every worker its memory."""
    probe = "import sys, callpark.node.worker.main; print(sorted(m for m in ('grpc', 'pyetcd') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
