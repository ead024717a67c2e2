"""The package's shape: layers imported only downwards, no import cycle, imports inside functions
only in app/ and each with its reason, and one registry of dataset families.

import-linter checks the layers in CI (`lint-imports`, pyproject.toml); the checks here read the
source themselves, module-level and function-level imports alike, so that a cycle hidden inside
a function is found too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gantool

PACKAGE = Path(gantool.__file__).parent
LAYERS = ["core", "config", {"nn", "runtime", "plots"}, "datasets", "training", "app"]


def modules() -> dict[str, Path]:
    """gantool.a.b -> its file, for every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(module: str, node: ast.Import | ast.ImportFrom, known: dict) -> list[str]:
    """The gantool modules an import statement names (a `from x import name` names x.name
    when that is a module, else x)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: gantool itself uses none, but resolve them anyway
            here = module.split(".")
            if known[module].name != "__init__.py":
                here = here[:-1]
            base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    result = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name.startswith("gantool.") and name != module:
            result.append(name)
    return result


def import_nodes(tree: ast.AST):
    """(import statement, the function it is in or None) for every import in a module."""

    def walk(node: ast.AST, function: ast.AST | None):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, function
            inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            yield from walk(child, child if inner else function)

    yield from walk(tree, None)


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for node, _ in import_nodes(ast.parse(path.read_text())):
            edges[module].update(imported(module, node, known))
    return edges


def layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    for i, names in enumerate(LAYERS):
        if parts[1] in (names if isinstance(names, set) else {names}):
            return i
    return None


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{a} -> {b}"
        for a, targets in graph().items()
        for b in targets
        if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)
    ]
    assert upward == []


def test_siblings_of_a_layer_know_nothing_of_each_other() -> None:
    crossing = [
        f"{a} -> {b}"
        for a, targets in graph().items()
        for b in targets
        if layer(a) == layer(b) == 2 and a.split(".")[1] != b.split(".")[1]
    ]
    assert crossing == []


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    """The check above can fail: a graph with a loop through three modules is caught."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_inside_functions_say_why_and_gantools_own_are_only_in_app() -> None:
    """An import inside a function keeps start-up fast (or waits for an optional package),
    and a comment on its line or the line above says what it waits for. Below app/, only
    other packages are imported so (torchvision, torch-fidelity): gantool's own modules are
    imported at the top, where the layer checks see them."""
    problems = []
    for module, path in modules().items():
        lines = path.read_text().splitlines()
        for node, function in import_nodes(ast.parse(path.read_text())):
            if function is None:
                continue
            where = f"{module}:{node.lineno}"
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            own = any(n and n.split(".")[0] == "gantool" for n in names)
            if own and not module.startswith("gantool.app"):
                problems.append(f"{where}: gantool imported inside {function.name}, below app/")
                continue
            # The reason: on a line of its block of imports, or on the line just above it.
            first = node.lineno
            while lines[first - 2].strip().startswith(("from ", "import ")):
                first -= 1
            block = lines[first - 1 : node.end_lineno]
            said = any("#" in line for line in block) or lines[first - 2].strip().startswith("#")
            if not said:
                problems.append(f"{where}: inside {function.name} with no reason given")
    assert problems == []


@pytest.mark.parametrize("layer_name", ["core", "config"])
def test_the_lowest_layers_import_no_torch(layer_name: str) -> None:
    """core/ and config/ are what `gantool --help`, config errors and `gantool report` use."""
    for path in (PACKAGE / layer_name).glob("*.py"):
        for node, _ in import_nodes(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            assert not any(n and n.split(".")[0] == "torch" for n in names), path


def test_one_registry_of_families_matches_the_schemas() -> None:
    from gantool.config.datasets import SCHEMAS
    from gantool.datasets.family import Family
    from gantool.datasets.registry import FAMILIES

    assert FAMILIES.keys() == SCHEMAS.keys()
    for name, family in FAMILIES.items():
        assert isinstance(family, Family) and family.schema is SCHEMAS[name]
