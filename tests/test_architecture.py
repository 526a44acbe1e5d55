"""The import graph agrees with docs/ARCHITECTURE.md: arrows point down, no cycles, nobody reaches
into another module's private names, and no model imports an experiment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
PRIMITIVES = {"codes", "hebb", "search", "stats", "io", "errors", "params", "extras"}
TOOLKIT = {"runs", "data"}
PARTS = {"ca3", "replay", "streaming", "lm", "store"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SOURCE / "engram").rglob("*.py")):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, top_level_only: bool) -> list[tuple[str, list[str]]]:
    """(imported engram module, names taken from it) for each import in ``name``'s source; a module
    imported under an alias counts the attributes read from it (``ev._helper``) as names taken."""
    tree = ast.parse(MODULES[name].read_text())
    aliases: dict[str, str] = {}
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("engram"):
                    found.append((alias.name, []))
                    if alias.asname:
                        aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("engram"):
                for alias in node.names:  # `from engram.x import y` may name a submodule y
                    sub = f"{base}.{alias.name}"
                    found.append((sub, []) if sub in MODULES else (base, [alias.name]))
                    if sub in MODULES:
                        aliases[alias.asname or alias.name] = sub
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            found.append((aliases[node.value.id], [node.attr]))
    return [(module, names) for module, names in found if module in MODULES]


def _group(module: str) -> tuple[int, str]:
    """(layer, group): 0 primitives, 1 toolkit, 2 a part's models, 3 its experiments, 4 entry points."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "cli":
        return 4, "entry"
    if parts[1] in PRIMITIVES:
        return 0, parts[1]
    if parts[1] in TOOLKIT:
        return 1, parts[1]
    if parts[1] in PARTS:
        return (3 if "experiments" in parts else 2), parts[1]
    raise AssertionError(f"{module}: not in any layer of docs/ARCHITECTURE.md")


def test_every_module_belongs_to_a_layer():
    for module in MODULES:
        _group(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_arrows_point_down(module):
    layer, group = _group(module)
    for imported, _ in _imports(module, top_level_only=False):
        their_layer, their_group = _group(imported)
        if their_group == group:
            continue
        if layer == 0:  # primitives import only other primitives
            assert their_layer == 0, f"{module} (a primitive) imports {imported}"
        else:
            assert their_layer < layer or (layer == their_layer == 2), f"{module} imports {imported} above it"
        assert their_layer != 3, f"{module} reaches into another part's experiment {imported}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_takes_another_modules_private_names(module):
    top = module.split(".")[:2]
    for imported, names in _imports(module, top_level_only=False):
        private = [name for name in names if name.startswith("_") and not name.startswith("__")]
        across = imported.split(".")[:2] != top or ("experiments" in module and imported != module)
        assert not (across and private), f"{module} imports private {private} from {imported}"


def test_no_import_cycles_at_module_level():
    graph = {module: {m for m, _ in _imports(module, top_level_only=True)} - {module} for module in MODULES}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(graph[module]):
            # a package's __init__ importing its own submodules is how packages re-export
            if nxt.startswith(module + "."):
                continue
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt] if nxt in path else [*path, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
