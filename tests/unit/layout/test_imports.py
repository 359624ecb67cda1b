"""The package layout holds: no import cycle anywhere, and the serving runtime stays free of the pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PACKAGE_FOLDERS = ("fpga_runtime", "tasks", "flows", "benchmarks")
NAMESPACE = "fpgaflow"
NOT_IN_THE_RUNTIME = (
    "fpgaflow.tasks",
    "fpgaflow.flows",
    "fpgaflow.benchmarks",
    "tensorflow",
    "keras",
    "tf2onnx",
    "prefect",
    "mlflow",
    "great_expectations",
    "pandas",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([NAMESPACE, *parts])


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for folder in PACKAGE_FOLDERS
        for path in (REPO / folder).rglob("*.py")
        if "proto" not in path.parts
    }


def _imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement anywhere in the file (functions included) names."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        module: {name for name in _imported_names(path, module) if name in modules and name != module}
        for module, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle():
    graph = _import_graph()
    assert len(graph) > 100
    assert _cycles(graph) == []


def test_a_cycle_is_found_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_serving_runtime_imports_nothing_of_the_pipeline():
    offending = {
        module: sorted(name for name in _imported_names(path, module) if name.startswith(NOT_IN_THE_RUNTIME))
        for module, path in _modules().items()
        if module.startswith(f"{NAMESPACE}.fpga_runtime")
    }
    assert {module: names for module, names in offending.items() if names} == {}
