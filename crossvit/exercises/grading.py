"""Graded assignments with nbgrader (the optional extra ``pip install crossvit-lab[teach]``).

``python -m crossvit.exercises assignments --course COURSE`` builds an nbgrader course from the notebooks:

* ``COURSE/source/<stem>/<stem>.ipynb``: the notebook with the solution of every exercise between nbgrader's
  ``### BEGIN SOLUTION`` / ``### END SOLUTION`` lines (an *autograded answer* cell), each checker cell an
  *autograder test* worth the exercise's stars, and each written question's answer cell a *manually graded*
  answer worth one point;
* ``COURSE/release/<stem>/<stem>.ipynb``: what students get (nbgrader's ``generate_assignment``: the solutions
  replaced by ``raise NotImplementedError()``).

``python -m crossvit.exercises grade SUBMISSIONS --course COURSE --csv grades.csv`` grades a folder of submitted
notebooks, ``SUBMISSIONS/<student>/<stem>.ipynb``, with nbgrader's ``autograde`` and writes one CSV row per student
and graded item. The checkers are the tests: during grading (``CROSSVIT_GRADING=1``) an exercise left as a stub
scores 0 instead of printing "not attempted yet", and so does one that calls the library function it rebuilds or
raises; a notebook that raises in one cell is still graded in all the others.
"""

from __future__ import annotations

import ast
import csv
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .common import EXERCISES, GRADING_ENV
from .notebook import exercise_cells, solution_functions, solutions_path
from .questions import QUESTION_TAG, QUESTIONS

NOTEBOOKS_DIR = Path("notebooks")
"""Where the course notebooks are, relative to the working directory (the repository root)."""
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CELL_TIMEOUT_S = 600


def _nbgrader() -> Any:
    try:
        from nbgrader.apps import NbGraderAPI
    except ImportError as err:
        raise ImportError("graded assignments need nbgrader: pip install 'crossvit-lab[teach]' (or nbgrader)") \
            from err
    return NbGraderAPI


def marked_solution(function_source: str) -> str:
    """A solution function with its body (after the docstring) between nbgrader's solution delimiters."""
    tree = ast.parse(function_source)
    function = tree.body[0]
    lines = function_source.splitlines()
    first = function.body[0]
    has_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) and \
        isinstance(first.value.value, str)
    body_start = (function.body[1] if has_doc and len(function.body) > 1 else first).lineno - 1
    if has_doc and len(function.body) == 1:
        body_start = first.end_lineno
    indent = " " * function.body[0].col_offset
    return "\n".join(lines[:body_start] + [indent + BEGIN] + lines[body_start:] + [indent + END])


def _question_id(question_id: str) -> str:
    """nbgrader's grade id of a question's answer cell (letters, digits, _ and - only): question_4_b."""
    return "question_" + question_id.replace(".", "_")


def _nbgrader_metadata(grade_id: str, *, solution: bool, grade: bool, locked: bool, points: int = 0) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution,
            "task": False}
    if grade:
        meta["points"] = points
    return meta


def source_notebook(notebook: Path) -> Any:
    """The nbgrader source version of one course notebook (see the module docstring)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    functions = solution_functions(solutions_path(notebook))
    stars = {ex.name: ex.stars for ex in EXERCISES}
    for index, name in exercise_cells(nb):
        cell = nb.cells[index]
        stub = cell.source.splitlines()
        tree = ast.parse(cell.source)
        function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
        rest = stub[function.end_lineno:]
        cell.source = "\n".join(stub[:function.lineno - 1] + marked_solution(functions[name]).splitlines() + rest)
        cell.metadata["nbgrader"] = _nbgrader_metadata(f"exercise_{name}", solution=True, grade=False, locked=False)
        nb.cells[index + 1].metadata["nbgrader"] = _nbgrader_metadata(
            f"check_{name}", solution=False, grade=True, locked=True, points=stars[name])
    written = {q.id for q in QUESTIONS if q.kind == "written"}
    for index, cell in enumerate(nb.cells):
        if QUESTION_TAG in cell.metadata.get("tags", []):
            qid = cell.source.split("**Question ", 1)[1].split("**", 1)[0].strip()
            if qid in written:
                nb.cells[index + 1].metadata["nbgrader"] = _nbgrader_metadata(
                    _question_id(qid), solution=True, grade=True, locked=False, points=1)
    return nb


def _config(course: Path) -> Any:
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    config.Execute.timeout = CELL_TIMEOUT_S
    config.Execute.interrupt_on_timeout = True
    return config


def build_assignments(course: str | os.PathLike, notebooks: list[Path] | None = None, *,
                      overwrite: bool = False) -> list[Path]:
    """Write the nbgrader course in ``course`` (source and release versions of every course notebook, and an
    ``nbgrader_config.py``); returns the release notebooks. A file of an earlier course that differs from what
    would be written now (a teacher's edit of a source notebook, say) is refused with a FileExistsError unless
    ``overwrite=True``; rebuilding an unchanged course is fine."""
    import nbformat

    course = Path(course).resolve()  # nbgrader works from the course root: every path it gets is absolute
    notebooks = notebooks or sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    api_class = _nbgrader()
    config_text = ("c = get_config()  # noqa: F821\n"
                   f"c.CourseDirectory.db_url = 'sqlite:///{course / 'gradebook.db'}'\n"
                   f"c.Execute.timeout = {CELL_TIMEOUT_S}\n")
    sources = {course / "source" / nb.stem / nb.name: nbformat.writes(source_notebook(nb)) for nb in notebooks}
    planned = {course / "nbgrader_config.py": config_text, **sources}
    changed = [path for path, text in planned.items()
               if path.exists() and path.read_text(encoding="utf-8") != text]
    if changed and not overwrite:
        raise FileExistsError(f"{changed[0]} differs from the course notebook it would be rebuilt from (edited by "
                              "hand?); move it away, or rebuild with --overwrite (overwrite=True) to replace it")
    course.mkdir(parents=True, exist_ok=True)
    released = []
    for path, text in planned.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    api = api_class(config=_config(course))
    for notebook in notebooks:
        with _environment(PATH=_tools_path()):
            result = api.generate_assignment(notebook.stem, force=True, create=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader generate_assignment {notebook.stem} failed:\n{result['log']}\n"
                               f"{result['error']}")
        released.append(course / "release" / notebook.stem / notebook.name)
    return released


@contextmanager
def _environment(**values: str):
    """``os.environ`` with ``values`` set while the block runs (the kernels nbgrader starts inherit it)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _tools_path() -> str:
    """PATH with this interpreter's scripts first: nbgrader runs its database migrations with the `alembic`
    command, which lives beside this Python (a virtual environment's bin/), not always on the PATH."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def grade_submissions(course: str | os.PathLike, submissions: str | os.PathLike,
                      csv_path: str | os.PathLike | None = None, *, overwrite: bool = False) -> list[dict[str, Any]]:
    """Autograde ``submissions/<student>/<stem>.ipynb`` against the course built by :func:`build_assignments`;
    returns (and writes to ``csv_path``) one row per student and graded item: student, notebook, item, kind,
    score, max_score, status. An existing ``csv_path`` is refused (FileExistsError, before any grading) unless
    ``overwrite=True``."""
    from nbgrader.api import Gradebook

    if csv_path is not None and Path(csv_path).exists() and not overwrite:
        raise FileExistsError(f"{csv_path} exists; choose another --csv, or pass --overwrite to replace it")

    course, submissions = Path(course).resolve(), Path(submissions).resolve()
    if not (course / "source").is_dir():
        raise FileNotFoundError(f"{course} has no source/ folder: build the course first (assignments --course)")
    api = _nbgrader()(config=_config(course))
    assignments = {p.name for p in (course / "source").iterdir() if p.is_dir()}
    graded: list[tuple[str, str]] = []
    for student_dir in sorted(p for p in submissions.iterdir() if p.is_dir()):
        student = student_dir.name
        for notebook in sorted(student_dir.glob("*.ipynb")):
            if notebook.stem not in assignments:
                raise ValueError(f"{notebook}: not a notebook of this course ({', '.join(sorted(assignments))})")
            target = course / "submitted" / student / notebook.stem / notebook.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(notebook, target)
            (target.parent / "timestamp.txt").write_text("2026-01-01 00:00:00.000000 UTC\n", encoding="utf-8")
            # GRADING_ENV: a stub scores 0 instead of printing "not attempted yet"
            with _environment(PATH=_tools_path(), **{GRADING_ENV: "1"}):
                result = api.autograde(notebook.stem, student, force=True, create=True)
            if not result["success"]:
                raise RuntimeError(f"nbgrader autograde {notebook.stem} {student} failed:\n{result['log']}\n"
                                   f"{result['error']}")
            graded.append((student, notebook.stem))
    items = {f"check_{ex.name}": (f"{ex.number} {ex.name}", "exercise") for ex in EXERCISES}
    items |= {_question_id(q.id): (f"question {q.id}", "written question") for q in QUESTIONS}
    rows = []
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student, stem in graded:
            submission = gradebook.find_submission_notebook(stem, stem, student)
            for grade in sorted(submission.grades, key=lambda g: g.cell.name):
                item, kind = items.get(grade.name, (grade.name, "other"))
                manual = grade.auto_score is None
                rows.append({"student": student, "notebook": stem, "item": item, "kind": kind,
                             "score": "" if manual and grade.manual_score is None else grade.score,
                             "max_score": grade.max_score,
                             "status": "needs manual grading" if manual and grade.manual_score is None
                             else "graded"})
    if csv_path is not None:
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["student", "notebook", "item", "kind", "score", "max_score",
                                                   "status"])
            writer.writeheader()
            writer.writerows(rows)
    return rows


def describe(rows: list[dict[str, Any]]) -> str:
    """One line per student: points of the autograded items out of their maximum."""
    totals: dict[str, list[float]] = {}
    for row in rows:
        if row["kind"] == "exercise":
            total = totals.setdefault(row["student"], [0.0, 0.0])
            total[0] += float(row["score"] or 0)
            total[1] += float(row["max_score"])
    return "\n".join(f"{student}: {score:g} / {maximum:g} exercise points" for student, (score, maximum)
                     in sorted(totals.items()))


__all__ = ["build_assignments", "describe", "grade_submissions", "marked_solution", "source_notebook"]
