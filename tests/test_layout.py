"""The package's shape: no import cycle, imports at module level, small modules and functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ma2mi_jax"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Names Windows reserves for devices: a file called so cannot be checked out there.
WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"{port}{i}" for port in ("com", "lpt") for i in range(10))}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by their __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _project_imports(tree: ast.AST, modules: dict[str, Path]) -> list[tuple[ast.AST, str]]:
    """(node, imported module) for every import of the project; `from pkg import sub` names pkg.sub."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ma2mi_jax":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((node, sub if sub in modules else node.module))
        elif isinstance(node, ast.Import):
            found += [(node, a.name) for a in node.names if a.name.split(".")[0] == "ma2mi_jax"]
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        graph[name] = {target for _, target in _project_imports(tree, modules) if target in modules}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = _import_graph()
    assert len(graph) > 50 and graph["ma2mi_jax.train.finetune.job"]  # the graph is really built
    assert _find_cycle(graph) is None


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_imports_the_project_at_module_level_only(name):
    path = _modules()[name]
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    local = [
        f"{path.name}:{node.lineno} imports {target}"
        for node, target in _project_imports(tree, _modules())
        if id(node) not in top
    ]
    assert not local


@pytest.mark.parametrize("name", sorted(_modules()))
def test_modules_and_functions_stay_small(name):
    path = _modules()[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long
    assert path.stem.lower() not in WINDOWS_RESERVED
