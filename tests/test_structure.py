"""The package's shape: imports flow one way, no cycles, the core never needs a notebook."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nbmlops"

#: Who may import whom: a module imports only modules of its own layer or a lower one.
LAYERS = {
    "errors": 0,
    "config": 0,
    "jsoncodec": 0,
    "datasets": 0,
    "artifact": 1,
    "packaging": 2,
    "registry": 2,
    "serving": 3,
    "monitoring": 3,
    "predlog": 2,
    "jobs": 3,
    "batch": 3,
    "exports": 3,
    "streaming": 3,
    "plans": 4,
    "cli": 4,
    "magics": 4,
    "arguments": 4,
    "widgets": 4,
    "demo": 4,
    "__init__": 4,
}
#: The faces that may show things in a notebook.
NOTEBOOK_FACES = {"nbmlops.magics", "nbmlops.widgets", "nbmlops"}
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, top_level_only: bool) -> set[str]:
    """The modules ``path`` imports (``from nbmlops.x import y`` counts ``nbmlops.x.y`` when
    that is a module)."""
    known = modules()
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(
                f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known
            )
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def test_every_module_has_a_layer():
    assert all(layer(m) is not None for m in modules())


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_flow_one_way(module):
    path = modules()[module]
    upward = [
        m
        for m in imports(path, top_level_only=False)
        if m.startswith("nbmlops.") and m in modules() and layer(m) > layer(module)
    ]
    assert not upward, f"{module} (layer {layer(module)}) imports higher layers: {upward}"


def test_no_import_cycles():
    known = modules()
    graph = {
        m: {i for i in imports(p, top_level_only=True) if i in known and i != m}
        for m, p in known.items()
    }
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = path[path.index(node) :] + [node]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        for target in sorted(graph[node]):
            visit(target, path + [node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])


@pytest.mark.parametrize("module", sorted(set(modules()) - NOTEBOOK_FACES))
def test_the_core_never_imports_ipython_or_ipywidgets(module):
    found = imports(modules()[module], top_level_only=False)
    notebook = sorted(m for m in found if m.split(".")[0] in ("IPython", "ipywidgets"))
    assert not notebook, f"{module} imports {notebook}: only the magics and widgets may"


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_is_over_500_lines(module):
    lines = modules()[module].read_text().count("\n")
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it by idea"


def test_every_folder_says_what_it_is_in_one_line():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "\n" not in doc.strip(), init
