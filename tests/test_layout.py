"""The package's layout, as the README's table states it: every module imports only from its own layer or the
layers below, there is no import circle, and no module outgrows what one reader keeps in mind."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "crossvit"

LAYERS: list[set[str]] = [
    {"utils", "config", "layers", "data", "scenes", "twoscale", "tasks", "photos"},
    {"model", "preprocessing", "convert", "recording", "classes", "flops"},
    {"weights", "checkpoint", "presets"},
    {"rollout", "relevancy", "lrp", "explain", "metrics"},
    {"train", "ablation"},
    {"plotting", "widgets", "cli", "__main__", "__init__"},
    {"exercises"},
]
"""Bottom to top; a module (or a subpackage, by its top-level name) belongs to one layer."""

MAX_LINES = 600


def top_name(path: Path) -> str:
    """``crossvit/plotting/base.py`` -> ``plotting``; ``crossvit/model.py`` -> ``model``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported_modules(path: Path) -> set[str]:
    """Top-level crossvit modules that ``path`` imports (relative imports, and ``crossvit.X``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    depth_of_package = len(path.relative_to(PACKAGE).parts) - 1  # 0 for crossvit/x.py, 1 for crossvit/pkg/x.py
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb to the package root, then the module named
                if node.level - 1 < depth_of_package:
                    continue  # inside the same subpackage
                if node.module:
                    out.add(node.module.split(".")[0])
                else:  # from . import data, metrics
                    out.update(alias.name for alias in node.names)
            elif node.module and node.module.split(".")[0] == "crossvit" and "." in node.module:
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("crossvit."))
    return out


def layer_of(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"crossvit/{name} is in no layer: add it to the README's table and to LAYERS here")


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = top_name(path)
        edges.setdefault(name, set()).update(m for m in imported_modules(path) if m != name)
    return edges


def test_every_module_imports_only_from_its_layer_or_below():
    upward = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
              for a, targets in graph().items() for b in targets if layer_of(b) > layer_of(a)]
    assert not upward, upward


def module_name(path: Path) -> str:
    """``crossvit/widgets/base.py`` -> ``widgets.base``; ``crossvit/widgets/__init__.py`` -> ``widgets``;
    ``crossvit/__init__.py`` -> ``__init__``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def module_graph() -> dict[str, set[str]]:
    """Module -> the crossvit modules it imports, down to the modules inside subpackages (``widgets.base`` ->
    ``widgets.html``), imports inside functions included: a circle between two files of one subpackage is a
    circle too."""
    names = {module_name(path) for path in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = path.relative_to(PACKAGE).parent.parts  # ("widgets",) for crossvit/widgets/x.py
        targets = edges.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - (node.level - 1)]
                stem = [*base, *(node.module.split(".") if node.module else [])]
                candidates = [".".join([*stem, alias.name]) for alias in node.names] + [".".join(stem)]
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crossvit."):
                stem = node.module.split(".")[1:]
                candidates = [".".join([*stem, alias.name]) for alias in node.names] + [".".join(stem)]
            elif isinstance(node, ast.Import):
                candidates = [a.name.split(".", 1)[1] for a in node.names if a.name.startswith("crossvit.")]
            else:
                continue
            found = next((c for c in candidates if c in names), None)  # a submodule, else the module itself
            if found is not None and found != name:
                targets.add(found)
    return edges


def test_no_import_circles():
    edges = module_graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join([*trail, node, nxt])
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_no_module_is_longer_than_600_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_the_layer_rule_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself: a bottom-layer module importing the top would be caught."""
    fake = PACKAGE / "utils.py"
    assert "explain" not in imported_modules(fake)
    source = tmp_path / "crossvit" / "utils.py"
    source.parent.mkdir()
    source.write_text("from .explain import explain\nfrom . import data\nimport crossvit.cli\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "crossvit")
    assert imported_modules(source) == {"explain", "data", "cli"}
