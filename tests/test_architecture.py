"""The house's shape: the package's imports (module-level and inside functions) form no circle,
and nothing in the package imports the command line (cli.py)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "triangulate_ai"


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its code."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {c for c in candidates if c in modules and c != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_imports_form_no_circle():
    graph = import_graph()
    assert len(graph) > 40 and graph["triangulate_ai.loop"]  # the walk sees the package
    assert cycles(graph) == []


def test_a_circle_is_found_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_in_the_package_imports_the_command_line():
    importers = sorted(name for name, targets in import_graph().items() if "triangulate_ai.cli" in targets)
    assert importers == []


LAYERS = {  # docs/architecture.md: a module imports only from its own layer or the ones before it
    1: ["errors", "stop", "placement", "checkpoints", "provenance", "section", "balance", "loss", "raster"],
    2: ["config", "io"],
    3: ["schedule", "regularizer", "monitor"],
    4: ["triangles", "metrics", "export", "memory", "colours", "runfolder"],
    5: ["init", "densify", "objective"],
    6: ["loop", "scenes"],
    7: ["run", "result"],
    8: ["model", "models"],
    9: ["api", "instant", "progress"],
    10: ["cli", "experiments", "model.cli", "model.report", "model.ship"],
    11: ["commands"],
}


def layer_of(module: str) -> int:
    """The layer of a package module: its longest listed prefix's."""
    name = module.removeprefix("triangulate_ai").lstrip(".")
    found = [(len(prefix), layer) for layer, prefixes in LAYERS.items() for prefix in prefixes
             if name == prefix or name.startswith(prefix + ".")]
    return max(found)[1] if found else 0  # the package's __init__ (names loaded lazily) stands apart


def test_no_module_imports_from_a_later_layer():
    upward = sorted(f"{source} -> {target}" for source, targets in import_graph().items() for target in targets
                    if layer_of(target) > layer_of(source) and layer_of(source) > 0)
    assert upward == []
    assert all(layer_of(name) > 0 for name in import_graph() if name != "triangulate_ai")  # every module placed
