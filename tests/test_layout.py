"""The layout ARCHITECTURE.md describes holds: imports flow one way, from the core up to the shells.

Every import in the product (lazy ones inside functions too) is read with ``ast`` and checked against
the layer order; a new upward import fails here with the file and line that made it, and so does a
cycle between any two modules, within a layer too. Every package under ``local/`` is named in
``LAYERS``: a new one fails until it is placed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
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
# Names that stand for themselves only, not for the modules under them: ``local`` is the package's own
# ``__init__``, and every ``local.<package>`` must be named in LAYERS.
ONLY_ITSELF = ("local",)


def layer_of(module: str) -> int:
    """The layer of a dotted module name: its longest matching prefix wins."""
    best, length = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            below = module.startswith(prefix + ".") and prefix not in ONLY_ITSELF
            if (module == prefix or below) and len(prefix) > length:
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
MODULES = {module_name(p): p for p in SOURCES}


def dependencies(path: Path) -> set[str]:
    """The project's modules ``path`` imports: ``from a import b`` is the module ``a.b`` where one exists."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names}
    return {name for name in found if name in MODULES} - {module_name(path)}


def cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> Iterator[list[str]]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                yield from visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                yield sorted(group)

    for node in sorted(graph):
        if node not in index:
            yield from visit(node)


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


def test_no_module_imports_itself_back():
    """No cycles at all, lazy imports included: two modules that need each other are one job split
    wrongly, or share something that belongs in a third module below both."""
    graph = {name: dependencies(path) for name, path in MODULES.items()}
    found = [" <-> ".join(group) for group in cycles(graph)]
    assert not found, "import cycles: " + "; ".join(found)


def test_the_cycle_check_sees_a_cycle():
    assert list(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})) == [["a", "b", "c"]]
    assert not list(cycles({"a": {"b"}, "b": set()}))


def test_every_local_package_is_placed():
    for package in sorted({p.parent for p in (ROOT / "local").glob("*/*.py")}):
        name = f"local.{package.name}"
        assert layer_of(name) >= 0, f"{name} is in no layer: add it to LAYERS and ARCHITECTURE.md"
    assert layer_of("local.newpackage") == -1  # a package not named in LAYERS is in none


def test_no_module_imports_another_modules_private_name():
    offending = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                offending += [f"{module_name(path)} line {node.lineno}: {node.module}.{name}" for name in private]
    assert not offending, "private names imported across modules (make them public where they are shared): " + "; ".join(offending)


def _module_exists(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or base.is_dir()  # a module, a package or a namespace package


TEST_SOURCES = sorted((ROOT / "tests").rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES + TEST_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_import_of_our_own_names_a_module_that_exists(path):
    """A module moved without its importers updated fails here (mypy is told to ignore missing imports,
    for third-party packages without types, so it would not notice)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            missing += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in PACKAGES + ("tests",)
                        and not _module_exists(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] in PACKAGES + ("tests",):
            if not _module_exists(node.module):
                missing.append((node.lineno, node.module))
    assert not missing, f"{path.relative_to(ROOT)} imports modules that do not exist: {missing}"
