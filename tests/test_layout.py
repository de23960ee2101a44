"""The layout ARCHITECTURE.md describes holds: imports flow one way, from the core up to the shells.

Every import in the product (lazy ones inside functions too) is read with ``ast`` and checked against
the layer order; a new upward import or cycle fails here with the file and line that made it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers.process import ROOT

# Lowest first. A module may import its own layer and those below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("lambda_onnx",),
    ("export",),
    ("local.defaults", "local.wire", "local.choice", "local.ports", "local"),
    ("local.lambda_env", "local.serve", "local.fleet"),
    ("local.clients",),
    ("local.measure",),
    ("local.report",),
    ("local.commands", "local.__main__", "gui"),
]
PACKAGES = ("lambda_onnx", "export", "local", "gui")


def layer_of(module: str) -> int:
    """The layer of a dotted module name: its longest matching prefix wins."""
    best, length = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of the project's own packages in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            # "from local import photos" imports the module local.photos; "from x import y" a name in x.
            found += [(node.lineno, name if layer_of(name) != layer_of(node.module) else node.module) for name in names]
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


SOURCES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path):
    me = module_name(path)
    mine = layer_of(me)
    assert mine >= 0, f"{me} is in no layer: add it to LAYERS and ARCHITECTURE.md"
    upward = [f"line {line}: {name} (layer {layer_of(name)} > {mine})" for line, name in imports(path) if layer_of(name) > mine]
    assert not upward, f"{me} imports upwards: " + "; ".join(upward)


def test_only_the_measuring_code_imports_export():
    for path in SOURCES:
        me = module_name(path)
        if me.startswith(("export", "local.measure")):
            continue
        offending = [line for line, name in imports(path) if name.split(".")[0] == "export"]
        assert not offending, f"{me} imports export/ (lines {offending}): only local.measure may, lazily"


def test_the_core_imports_nothing_of_the_rest():
    for path in (ROOT / "lambda_onnx").rglob("*.py"):
        others = [name for _, name in imports(path) if name.split(".")[0] != "lambda_onnx"]
        assert not others, f"{path.name} imports {others}: the Lambda image copies lambda_onnx/ alone"
