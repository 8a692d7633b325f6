"""``python -m crossvit.exercises list | solve NOTEBOOK... [--out DIR]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import EXERCISES
from .notebook import exercise_cells, solutions_path, with_solutions


def main(argv: list[str] | None = None) -> int:
    """``python -m crossvit.exercises list`` | ``solve NOTEBOOK... [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m crossvit.exercises",
                                     description="The course's exercises: list them, or write solved copies of "
                                                 "notebooks (stubs replaced by notebooks/solutions/<stem>.py).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print every exercise with its difficulty")
    solve = commands.add_parser("solve", help="write <out>/<notebook name> with the solutions filled in")
    solve.add_argument("notebooks", nargs="+", type=Path)
    solve.add_argument("--out", type=Path, default=Path("solved"), help="output directory (default: ./solved)")
    args = parser.parse_args(argv)
    if args.command == "list":
        for ex in EXERCISES:
            print(f"{ex.number:>4}  {'*' * ex.stars:<3}  {ex.name:<28} {ex.task}")
        return 0
    import nbformat

    for notebook in args.notebooks:
        solutions = solutions_path(notebook)
        if not notebook.is_file() or not solutions.is_file():
            print(f"error: {notebook if not notebook.is_file() else solutions} not found", file=sys.stderr)
            return 1
        solved = with_solutions(nbformat.read(notebook, as_version=4), solutions)
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / notebook.name
        if target.resolve() == notebook.resolve():
            print(f"error: {target} would overwrite the notebook itself; choose another --out", file=sys.stderr)
            return 1
        nbformat.write(solved, target)
        print(f"{target}: {len(exercise_cells(solved))} exercise(s) solved")
    return 0


if __name__ == "__main__":
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
