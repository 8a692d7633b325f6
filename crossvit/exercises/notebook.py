"""Notebook tooling: find the exercise cells of a notebook and fill in their solutions."""

from __future__ import annotations

import ast
import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------------------------------------------
# Notebook tooling: exercise cells and solutions

EXERCISE_TAG = "exercise"


def is_exercise_cell(cell: Mapping[str, Any]) -> bool:
    """True for a code cell tagged ``exercise`` in its metadata."""
    return cell.get("cell_type") == "code" and EXERCISE_TAG in cell.get("metadata", {}).get("tags", [])


def exercise_name(cell: Mapping[str, Any]) -> str:
    """The name of the one function an exercise cell defines (its checker is ``check_<name>``)."""
    source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    defs = [node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    if len(defs) != 1:
        raise ValueError(f"an exercise cell must define exactly one function, found {defs or 'none'}:\n{source}")
    return defs[0]


def exercise_cells(nb: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(cell index, exercise name) of every exercise cell of a notebook, in order."""
    return [(i, exercise_name(cell)) for i, cell in enumerate(nb["cells"]) if is_exercise_cell(cell)]


def solutions_path(notebook: str | Path) -> Path:
    """Where a notebook's solutions live: ``solutions/<notebook stem>.py`` beside it."""
    notebook = Path(notebook)
    return notebook.parent / "solutions" / f"{notebook.stem}.py"


def _function_lines(source: str) -> dict[str, tuple[int, int]]:
    """Line range (0-based start, end exclusive) of each top-level function of ``source``, decorators included."""
    ranges = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            ranges[node.name] = (start, node.end_lineno)
    return ranges


def solution_functions(path: str | Path) -> dict[str, str]:
    """The source of each top-level function of a solutions file, by name."""
    source = Path(path).read_text(encoding="utf-8")
    lines = source.splitlines()
    return {name: "\n".join(lines[start:end]) for name, (start, end) in _function_lines(source).items()}


def with_solutions(nb: Any, solutions: str | Path) -> Any:
    """A copy of notebook ``nb`` whose exercise cells call the solutions instead of the stubs.

    In each exercise cell the stub function is replaced by the solution function of the same name from the file
    ``solutions``; the rest of the cell (the line that computes the answer) stays. Only the function goes in, as
    ``%load -s <name> <solutions>`` would paste it: a solution must run with the names the notebook has imported
    (a solution that needs another module imports it inside the function).
    """
    functions = solution_functions(solutions)
    out = copy.deepcopy(nb)
    for index, name in exercise_cells(out):
        if name not in functions:
            raise ValueError(f"{solutions} has no solution for exercise {name!r} (cell {index})")
        cell = out["cells"][index]
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        lines = source.splitlines()
        start, end = _function_lines(source)[name]
        cell["source"] = "\n".join(lines[:start] + [functions[name]] + lines[end:])
    return out
