"""``python -m crossvit.exercises list | solve NOTEBOOK... [--out DIR] [--overwrite] | assignments [--course DIR] |
grade SUBMISSIONS [--course DIR] [--csv FILE] [--students FILE] [--notebooks STEM...] [--budget SECONDS]
[--overwrite]``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from ..utils import first_line
from .common import EXERCISES
from .notebook import exercise_cells, solutions_path, with_solutions


def main(argv: list[str] | None = None) -> int:
    """The exercises' command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m crossvit.exercises",
                                     description="The course's exercises: list them, write solved copies of "
                                                 "notebooks (stubs replaced by solutions/<stem>.py beside each "
                                                 "notebook), build graded nbgrader assignments, grade a folder of "
                                                 "submissions.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print every exercise with its difficulty")
    solve = commands.add_parser("solve", help="write <out>/<notebook name> with the solutions filled in")
    solve.add_argument("notebooks", nargs="+", type=Path)
    solve.add_argument("--out", type=Path, default=Path("solved"), help="output directory (default: ./solved)")
    solve.add_argument("--overwrite", action="store_true", help="replace solved copies that are already in --out")
    build = commands.add_parser("assignments", help="build an nbgrader course: source/ and release/ of every "
                                                    "notebook (needs the teach extra: nbgrader)")
    build.add_argument("--course", type=Path, default=Path("course"), help="course directory (default: ./course)")
    build.add_argument("--notebooks", type=Path, nargs="*", default=None,
                       help="notebooks to include (default: notebooks/[0-9][0-9]_*.ipynb)")
    build.add_argument("--overwrite", action="store_true",
                       help="replace source notebooks of an earlier course that were edited by hand, and let "
                            "nbgrader delete other files in the release/ folders it rebuilds")
    grade = commands.add_parser("grade", help="autograde SUBMISSIONS/<student>/<notebook>.ipynb; one CSV row per "
                                              "student and exercise or question")
    grade.add_argument("submissions", type=Path)
    grade.add_argument("--course", type=Path, default=Path("course"),
                       help="the course built by `assignments` (default: ./course)")
    grade.add_argument("--csv", type=Path, default=Path("grades.csv"), help="output CSV (default: ./grades.csv)")
    grade.add_argument("--overwrite", action="store_true", help="replace an existing --csv file")
    grade.add_argument("--students", type=Path, default=None,
                       help="a class list, one student id a line: students without a folder get 'missing' rows")
    grade.add_argument("--notebooks", nargs="*", default=None,
                       help="the assignments to grade, by notebook stem (default: every one someone handed in)")
    grade.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                       help="how long one student's notebook may execute, all cells together (default: "
                       "crossvit.exercises.grading.GRADING_BUDGET_S, an hour); each cell gets at least 10 minutes")
    args = parser.parse_args(argv)
    if args.command == "assignments":
        from .grading import build_assignments

        try:
            released = build_assignments(args.course, args.notebooks, overwrite=args.overwrite)
        except (OSError, ValueError, ImportError, RuntimeError) as err:  # FileExistsError is an OSError
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{len(released)} assignment(s): sources in {args.course / 'source'}, student versions in "
              f"{args.course / 'release'}")
        return 0
    if args.command == "grade":
        from .grading import describe, grade_submissions

        if args.budget is not None and not args.budget > 0:  # NaN too
            print(f"error: --budget must be a positive number of seconds, got {args.budget}", file=sys.stderr)
            return 1
        try:
            roster = [] if args.students is None else [
                line.strip() for line in args.students.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            print(f"error: --students {args.students}: {getattr(err, 'strerror', None) or err}", file=sys.stderr)
            return 1
        try:
            budget = {} if args.budget is None else {"budget_s": args.budget}
            with warnings.catch_warnings():  # nbgrader's database layer warns about its own sessions, by the dozen
                warnings.filterwarnings("ignore", message=".*not in session.*")
                rows = grade_submissions(args.course, args.submissions, args.csv, overwrite=args.overwrite,
                                         students=roster, notebooks=args.notebooks, progress=True, **budget)
        except (OSError, ValueError, ImportError) as err:  # FileExistsError, FileNotFoundError are OSErrors
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(describe(rows))
        print(f"{len(rows)} row(s) in {args.csv}; feedback for the students in {args.course / 'feedback'}/"
              "<student>/<notebook>/")
        return 0
    if args.command == "list":
        for ex in EXERCISES:
            print(f"{ex.number:>4}  {'*' * ex.stars:<3}  {ex.name:<28} {ex.task}")
        return 0
    import nbformat

    blocking = next((p for p in (args.out, *args.out.parents) if p.exists()), None)  # the nearest that exists
    if blocking is not None and not blocking.is_dir():
        print(f"error: --out {args.out}: {blocking} is a file, not a folder", file=sys.stderr)
        return 1
    solved_copies = {}
    for notebook in args.notebooks:  # every check before the first write: an error leaves --out as it was
        solutions, target = solutions_path(notebook), args.out / notebook.name
        problem = None
        if not notebook.is_file() or not solutions.is_file():
            problem = f"{notebook if not notebook.is_file() else solutions} not found"
        elif target.resolve() == notebook.resolve():
            problem = f"{target} would overwrite the notebook itself; choose another --out"
        elif target.is_dir():
            problem = f"{target} is a folder; a solved copy of {notebook.name} cannot be written there"
        elif target in solved_copies:
            problem = f"two notebooks named {notebook.name} would both be written to {target}; solve one at a time"
        elif os.path.lexists(target) and not args.overwrite:
            problem = f"{target} exists; pass --overwrite to replace it, or choose another --out"
        else:
            try:
                solved_copies[target] = with_solutions(nbformat.read(notebook, as_version=4), solutions)
            except Exception as err:  # noqa: BLE001 - a file that is not a notebook, or solutions that do not fit
                problem = f"{notebook}: cannot be solved ({type(err).__name__}: {first_line(err, '')[:200]})"
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        for target, solved in solved_copies.items():
            nbformat.write(solved, target)
            print(f"{target}: {len(exercise_cells(solved))} exercise(s) solved")
    except OSError as err:  # a full disk, a folder without write permission
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
