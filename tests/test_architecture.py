"""The house's shape, measured from the source: imports point down the layer order and never go round in a
circle, functions stay short enough to read in one sitting, and the CLI stays a thin layer over pipelines.

docs/design.md states these rules; this file is what keeps them true after the next refactor.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "stickerconv"

# Bottom to top, as in docs/design.md. A module imports only from its own layer or a lower one.
LAYERS = [
    "__init__",
    "schema",
    "jsonl",
    "text",
    "runfiles",
    "assets",
    "profiles",
    "llm",
    "stickers",
    "agent4sc",
    "data",
    "pegs",
    "responders",
    "evaluate",
    "serve",
    "pipelines",
    "cli",
]
CLI_FUNCTION_LINES = 60
LIBRARY_FUNCTION_LINES = 100
CLI_SHARE = 0.10


def module_name(path: Path) -> str:
    parts = ("stickerconv", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def imported_modules(name: str) -> set[str]:
    """Every stickerconv module `name` imports, wherever the import sits (a function-level import is still a
    dependency). ``from pkg import sub`` counts as importing ``pkg.sub`` when ``sub`` is a module."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imported_modules(name) for name in MODULES}


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_belongs_to_a_layer():
    assert {layer(name) for name in MODULES} <= set(LAYERS), "a new top-level module needs a place in LAYERS"


def test_imports_never_run_up_the_layer_order():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{source} imports {target}"
        for source, targets in GRAPH.items()
        for target in sorted(targets)
        if rank[layer(target)] > rank[layer(source)] and layer(source) != "__init__"
    ]
    assert upward == []


def find_cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(GRAPH[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle():
    # A package importing its own submodules (the lazy faces re-export them) is not a circle unless a
    # submodule imports the package face back.
    assert find_cycle() is None


def functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize(("part", "limit"), [("cli", CLI_FUNCTION_LINES), ("library", LIBRARY_FUNCTION_LINES)])
def test_functions_are_short(part: str, limit: int):
    too_long = [
        f"{module_name(path)}.{name} (line {line}): {length} lines"
        for path in MODULES.values()
        if (layer(module_name(path)) == "cli") == (part == "cli")
        for name, line, length in functions(path)
        if length > limit
    ]
    assert too_long == []


def test_the_cli_is_a_thin_layer():
    lines = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    cli = sum(n for name, n in lines.items() if layer(name) == "cli")
    assert cli / sum(lines.values()) < CLI_SHARE, f"the CLI holds {cli} of {sum(lines.values())} source lines"


def test_the_checks_see_what_they_check():
    """The measurements above would pass vacuously on an empty graph; pin a few known edges."""
    assert "stickerconv.llm.config" in GRAPH["stickerconv.llm"]
    assert "stickerconv.cli.common" in GRAPH["stickerconv.cli.root"]
    assert any(layer(t) == "pipelines" for t in GRAPH["stickerconv.cli.demo"])
    assert len(MODULES) > 100
