"""Graded assignments with nbgrader (the optional extra ``pip install crossvit-lab[teach]``).

``python -m crossvit.exercises assignments --course COURSE`` builds an nbgrader course from the notebooks:

* ``COURSE/source/<stem>/<stem>.ipynb``: the notebook with the solution of every exercise between nbgrader's
  ``### BEGIN SOLUTION`` / ``### END SOLUTION`` lines, under the notebook's own stub (its signature, docstring and
  shape comments) in place of its ``raise NotImplementedError`` (an *autograded answer* cell), each checker cell an
  *autograder test* worth the exercise's stars, each written question's answer cell a *manually graded* answer
  worth one point, and every other code cell *read-only* (students cannot edit it, and grading restores it, so a
  typo in a set-up cell cannot cost a student the work that follows);
* ``COURSE/release/<stem>/<stem>.ipynb``: what students get (nbgrader's ``generate_assignment``: each solution
  replaced by ``raise NotImplementedError()``); no solutions, no answer key.

``python -m crossvit.exercises grade SUBMISSIONS --course COURSE --csv grades.csv`` grades a folder of submitted
notebooks, ``SUBMISSIONS/<student>/<stem>.ipynb``, with nbgrader's ``autograde``, writes every student's feedback
(``COURSE/feedback/<student>/<stem>/<stem>.html``, nbgrader's ``generate_feedback``) and one CSV row per student and
item, in notebook order, with a status and a reason. Every student found (or named in ``--students``) gets a row
for every item of every notebook being graded: *graded*, *needs manual grading*, *missing* (no such notebook in the
student's folder), *unreadable* (not a notebook), *not graded* (nbgrader could not grade it) or *set-up error* (a
cell that is not an answer raised, so the items after it may have scored 0 for that reason). A notebook renamed by
a browser download (``03_cross_attention_and_hooks (1).ipynb``) is recognised. The checkers are the tests: during
grading (``CROSSVIT_GRADING=1``) an exercise left as a stub scores 0 instead of printing "not attempted yet", and
so does one that calls the library function it rebuilds or raises; a notebook that raises in one cell is still
graded in all the others. The CSV is written only when the whole run succeeds. No fixed per-cell limit can fail a
student on a busy machine: each notebook has a budget (:data:`GRADING_BUDGET_S`, ``--budget``) that any cell may use,
and an answer that never returns is interrupted when it is spent.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..checkpoint import file_sha256
from ..utils import atomic_write, check_number, progress_bar, strip_ansi
from .common import EXERCISES, GRADING_ENV
from .notebook import exercise_cells, is_exercise_cell, solution_functions, solutions_path
from .questions import QUESTION_TAG, QUESTIONS

NOTEBOOKS_DIR = Path("notebooks")
"""Where the course notebooks are, relative to the working directory (the repository root)."""
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
GRADING_BUDGET_S = 3600.0
"""How long one student's notebook may execute during :func:`grade_submissions`, all its cells together: a cell may
run as long as the budget lasts (a loaded machine makes every cell slow without anything being wrong), and never
less than :data:`CELL_TIMEOUT_S`. An answer that never returns is interrupted when its time is up; its item scores
0 with the timeout as the reason, and the cells after it still run."""
CELL_TIMEOUT_S = 600
"""The least time a cell is given during grading, even once its notebook's budget is spent; also the per-cell limit
written into ``COURSE/nbgrader_config.py`` for a teacher who runs nbgrader's own command line (a configuration
file cannot give each notebook a budget)."""
OVERWRITE_HINT = "--overwrite (through make: OVERWRITE=1)"
"""How a refusal to replace a file tells the teacher to replace it, on the command line and through make."""
CSV_COLUMNS = ("student", "notebook", "item", "kind", "score", "max_score", "status", "reason", "feedback")


def _nbgrader() -> Any:
    try:
        from nbgrader.apps import NbGraderAPI
    except ImportError as err:
        raise ImportError("graded assignments need nbgrader: pip install 'crossvit-lab[teach]' (or nbgrader)") \
            from err
    return NbGraderAPI


def _body_lines(function_source: str) -> list[str]:
    """The lines of a function's body after its docstring (comments included)."""
    function = ast.parse(function_source).body[0]
    lines = function_source.splitlines()
    first = function.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        start = first.end_lineno  # the line after the docstring (0-based)
    else:
        start = first.lineno - 1
        while start > function.lineno and lines[start - 1].strip().startswith("#"):  # comments above it too
            start -= 1
    return lines[start:function.end_lineno]


def marked_answer(stub_source: str, name: str, solution_source: str) -> str:
    """An exercise cell for nbgrader: the notebook's stub ``name`` (signature, docstring, comments) with its
    ``raise NotImplementedError`` replaced by the solution's body between the solution delimiters; the rest of the
    cell stays. ``generate_assignment`` then swaps the delimited body for nbgrader's stub."""
    tree = ast.parse(stub_source)
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    last = function.body[-1]
    if not (isinstance(last, ast.Raise) and "NotImplementedError" in ast.unparse(last)):
        raise ValueError(f"the stub of {name} must end with `raise NotImplementedError(...)`:\n{stub_source}")
    lines = stub_source.splitlines()
    indent = " " * last.col_offset
    body = _body_lines(solution_source)
    solution_indent = min((len(b) - len(b.lstrip()) for b in body if b.strip()), default=len(indent))
    body = [indent + b[solution_indent:] if b.strip() else "" for b in body]
    return "\n".join(lines[:last.lineno - 1] + [indent + BEGIN] + body + [indent + END] + lines[last.end_lineno:])


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
    graded: set[int] = set()
    for index, name in exercise_cells(nb):
        cell = nb.cells[index]
        cell.source = marked_answer(cell.source, name, functions[name])
        cell.metadata["nbgrader"] = _nbgrader_metadata(f"exercise_{name}", solution=True, grade=False, locked=False)
        nb.cells[index + 1].metadata["nbgrader"] = _nbgrader_metadata(
            f"check_{name}", solution=False, grade=True, locked=True, points=stars[name])
        graded |= {index, index + 1}
    written = {q.id for q in QUESTIONS if q.kind == "written"}
    for index, cell in enumerate(nb.cells):
        if QUESTION_TAG in cell.metadata.get("tags", []):
            qid = cell.source.split("**Question ", 1)[1].split("**", 1)[0].strip()
            if qid in written:
                nb.cells[index + 1].metadata["nbgrader"] = _nbgrader_metadata(
                    _question_id(qid), solution=True, grade=True, locked=False, points=1)
                graded.add(index + 1)
    setup = 0
    for index, cell in enumerate(nb.cells):  # every other code cell: read-only, restored when grading
        if cell.cell_type == "code" and index not in graded and not is_exercise_cell(cell):
            setup += 1
            cell.metadata["nbgrader"] = _nbgrader_metadata(f"setup_{setup}", solution=False, grade=False,
                                                           locked=True)
    return nb


def _config(course: Path) -> Any:
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    config.Execute.timeout = CELL_TIMEOUT_S  # grade_submissions gives each notebook a budget on top (timeout_func)
    config.Execute.interrupt_on_timeout = True
    return config


def notebook_budget(seconds: float) -> Any:
    """nbclient's ``timeout_func`` for one notebook: each cell may take what is left of ``seconds`` from now, and at
    least :data:`CELL_TIMEOUT_S` (``seconds=math.inf``: no limit at all, None to nbclient)."""
    deadline = time.monotonic() + seconds
    return lambda cell: None if seconds == math.inf else max(CELL_TIMEOUT_S, int(deadline - time.monotonic()))


CONFIG_TEXT = (
    "import os\n\n"
    "c = get_config()  # noqa: F821\n"
    "# the gradebook beside this file, wherever the course folder is (traitlets runs this file with __file__ set)\n"
    "c.CourseDirectory.db_url = 'sqlite:///' + os.path.join(os.path.dirname(os.path.abspath(__file__)), "
    "'gradebook.db')\n"
    f"c.Execute.timeout = {CELL_TIMEOUT_S}\n")
"""The ``nbgrader_config.py`` :func:`build_assignments` writes, for nbgrader's own command line and formgrader."""
# what earlier versions wrote: the gradebook's absolute path (so a moved course's file is still recognised as ours)
_OLD_CONFIG = re.compile(r"c = get_config\(\)  # noqa: F821\nc\.CourseDirectory\.db_url = 'sqlite:///.*gradebook\.db'\n"
                         r"c\.Execute\.timeout = \d+\n")
RELEASE_MANIFEST = ".crossvit_release.json"
"""The file (in the course folder) where :func:`build_assignments` records what it wrote to ``release/``: the
sha256 of each file, so that a rebuild can tell its own files from a teacher's edits and additions."""


def _read_manifest(course: Path) -> dict[str, str]:
    """:data:`RELEASE_MANIFEST` of ``course`` (empty when there is none, or it cannot be read: it vouches for
    nothing then)."""
    try:
        return json.loads((course / RELEASE_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _release_problems(course: Path, notebooks: list[Path]) -> list[str]:
    """What a rebuild of the release folders would destroy: a file there that this command did not write as it is
    now (edited since, or added by someone). A course without a manifest (built by an earlier version) vouches for
    its release notebooks only."""
    manifest = _read_manifest(course)
    problems = []
    for nb in notebooks:
        folder = course / "release" / nb.stem
        for path in sorted(folder.rglob("*")) if folder.is_dir() else ():
            if path.is_dir():
                continue
            known = manifest.get(path.relative_to(course).as_posix())
            if known is not None and known != file_sha256(path):
                problems.append(f"{path} was edited since this command wrote it, and rebuilding "
                                f"release/{nb.stem}/ would replace it")
            elif known is None and (manifest or path.name != nb.name):
                problems.append(f"{path} is not a file this command wrote, and rebuilding release/{nb.stem}/ "
                                "would delete it")
    return problems


def build_assignments(course: str | os.PathLike, notebooks: list[Path] | None = None, *,
                      overwrite: bool = False) -> list[Path]:
    """Write the nbgrader course in ``course`` (source and release versions of every course notebook, and an
    ``nbgrader_config.py``); returns the release notebooks. A file of an earlier course that differs from what
    would be written now (a teacher's edit of a source or a release notebook, say), or a file of someone else's in a
    release folder (nbgrader rebuilds those folders from scratch), is refused with a FileExistsError unless
    ``overwrite=True``; rebuilding an unchanged course is fine, also after the course folder was moved, and files
    nbgrader copied from ``source/<stem>/`` into ``release/<stem>/`` are its own (recorded in
    :data:`RELEASE_MANIFEST`). ``notebooks`` defaults to ``notebooks/NN_*.ipynb`` under the current folder (a
    ValueError when there are none)."""
    import nbformat

    api_class = _nbgrader()  # before anything is read or written
    course = Path(course).resolve()  # nbgrader works from the course root: every path it gets is absolute
    if course.exists() and not course.is_dir():
        raise FileExistsError(f"--course {course} is a file, not a folder")
    notebooks = [Path(nb) for nb in notebooks] if notebooks else sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise ValueError(f"no course notebooks in {NOTEBOOKS_DIR.resolve()} (NN_name.ipynb): run this from the "
                         "folder that holds notebooks/, or name them with --notebooks")
    for nb in notebooks:
        if not nb.is_file():
            raise FileNotFoundError(f"{nb}: no such notebook")
        try:
            nbformat.read(nb, as_version=4)
        except Exception as err:  # noqa: BLE001 - any reason it is not a notebook
            raise ValueError(f"{nb} is not a readable notebook ({type(err).__name__})") from None
        if not solutions_path(nb).is_file():
            raise FileNotFoundError(f"{nb} has no solutions file {solutions_path(nb)} (the source version of an "
                                    "assignment holds the solutions)")
    sources = {course / "source" / nb.stem / nb.name: nbformat.writes(source_notebook(nb)) for nb in notebooks}
    planned = {course / "nbgrader_config.py": CONFIG_TEXT, **sources}
    changed = [path for path, text in planned.items() if path.exists()
               and path.read_text(encoding="utf-8") not in (text, *_old_config(path, text))]
    if changed and not overwrite:
        raise FileExistsError(f"{changed[0]} differs from the file this command would write now (edited by hand?); "
                              f"move it away, or rebuild with {OVERWRITE_HINT} to replace it")
    # nbgrader regenerates release/<stem>/ from scratch (force=True): anything else in it would be deleted
    problems = _release_problems(course, notebooks)
    if problems and not overwrite:
        raise FileExistsError(f"{problems[0]}; move it away, or rebuild with {OVERWRITE_HINT} to let it go")
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
            log = course / "nbgrader_error.log"
            log.write_text(f"{result['log']}\n{result['error']}\n", encoding="utf-8")
            raise RuntimeError(f"nbgrader could not generate the assignment {notebook.stem}; its log is in {log}")
        released.append(course / "release" / notebook.stem / notebook.name)
    _record_release(course, notebooks)
    return released


def _old_config(path: Path, text: str) -> tuple[str, ...]:
    """The config text of an earlier version, if ``path`` holds one (it is then this command's own file)."""
    if path.name != "nbgrader_config.py" or not path.is_file():
        return ()
    old = path.read_text(encoding="utf-8")
    return (old,) if _OLD_CONFIG.fullmatch(old) else ()


def _record_release(course: Path, notebooks: list[Path]) -> None:
    """Add the release folders just built to :data:`RELEASE_MANIFEST` (written atomically)."""
    manifest = _read_manifest(course)
    for nb in notebooks:
        folder = course / "release" / nb.stem
        manifest = {k: v for k, v in manifest.items() if not k.startswith(f"release/{nb.stem}/")}
        manifest.update({f.relative_to(course).as_posix(): file_sha256(f) for f in sorted(folder.rglob("*"))
                         if f.is_file()})
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    atomic_write(course / RELEASE_MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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


@dataclass(frozen=True)
class Item:
    """One graded item of a notebook: its nbgrader grade id, how the CSV names it, its kind and its points."""

    grade_id: str
    name: str  # "1.1 patchify", "question 1.b"
    kind: str  # "exercise" or "written question"
    max_score: float


def notebook_items(source: Path) -> list[Item]:
    """The graded items of a source notebook (from :func:`source_notebook`), in the notebook's order."""
    import nbformat

    names = {f"check_{ex.name}": (f"{ex.number} {ex.name}", "exercise") for ex in EXERCISES}
    names |= {_question_id(q.id): (f"question {q.id}", "written question") for q in QUESTIONS}
    items = []
    for cell in nbformat.read(source, as_version=4).cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            name, kind = names.get(meta["grade_id"], (meta["grade_id"], "other"))
            items.append(Item(meta["grade_id"], name, kind, float(meta.get("points", 0))))
    return items


_DOWNLOAD_SUFFIX = re.compile(r"(?:\s*\(\d+\)|-Copy\d+| copy(?: \d+)?)+$")


def submitted_stem(path: Path) -> str:
    """The assignment a submitted file names: its stem without the suffixes browsers and Jupyter add to a second
    copy (``nb (1).ipynb``, ``nb(2).ipynb``, ``nb-Copy1.ipynb``, ``nb copy.ipynb``)."""
    return _DOWNLOAD_SUFFIX.sub("", path.stem)


def _find_submission(student_dir: Path, stem: str) -> tuple[Path | None, str]:
    """The file of ``student_dir`` that holds assignment ``stem`` (the exact name first, else the newest renamed
    copy), and a note on the other copies, if any. nbgrader's own layout, ``<student>/<stem>/<stem>.ipynb`` (what
    its collect command gathers), is read too."""
    found = [p for p in sorted(student_dir.glob("*.ipynb")) if submitted_stem(p) == stem]
    found = found or [p for p in sorted((student_dir / stem).glob("*.ipynb")) if submitted_stem(p) == stem]
    if not found:
        return None, ""
    exact = [p for p in found if p.stem == stem]
    chosen = exact[0] if exact else max(found, key=lambda p: p.stat().st_mtime)
    others = [p.name for p in found if p != chosen]
    note = (f"graded {chosen.name}" + (f"; also found {', '.join(others)} (not graded)" if others else "")
            if chosen.stem != stem or others else "")
    return chosen, note


def _outputs_text(cell: Any) -> tuple[str, str | None]:
    """What a cell printed, and its error (``Name: message``) if it raised."""
    printed, error = [], None
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            printed.append(out.get("text", ""))
        elif out.get("output_type") == "error":
            error = f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"
    return "".join(printed), error


def _reasons(autograded: Path) -> tuple[dict[str, str], str | None, set[str]]:
    """Per grade id, the reason its score is what it is (the checker's message), read from the autograded
    notebook; the first error of a read-only (set-up) cell, if one raised; and every grade id the notebook has."""
    import nbformat

    nb = nbformat.read(autograded, as_version=4)
    reasons: dict[str, str] = {}
    setup_error = None
    present = {cell.metadata["nbgrader"]["grade_id"] for cell in nb.cells
               if "grade_id" in cell.metadata.get("nbgrader", {})}
    for index, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id")
        if cell.cell_type != "code" or grade_id is None:
            continue
        printed, error = _outputs_text(cell)
        if meta.get("grade") and not meta.get("solution"):  # a checker cell
            lines = [line for line in printed.strip().splitlines() if line.strip()]
            reasons[grade_id] = strip_ansi(error) if error else (lines[-1] if lines else "no output")
        elif meta.get("locked") and error and setup_error is None:
            setup_error = f"cell {index} (not an answer) raised {strip_ansi(error)}"
    return reasons, setup_error, present


def _row(student: str, stem: str, item: Item, score: Any, status: str, reason: str, feedback: str = ""
         ) -> dict[str, Any]:
    return {"student": student, "notebook": stem, "item": item.name, "kind": item.kind, "score": score,
            "max_score": item.max_score, "status": status, "reason": reason, "feedback": feedback}


def grade_submissions(course: str | os.PathLike, submissions: str | os.PathLike,
                      csv_path: str | os.PathLike | None = None, *, overwrite: bool = False,
                      students: Iterable[str] = (), notebooks: Sequence[str] | None = None,
                      budget_s: float = GRADING_BUDGET_S, progress: bool = False) -> list[dict[str, Any]]:
    """Autograde ``submissions/<student>/<stem>.ipynb`` against the course built by :func:`build_assignments`,
    write each student's feedback, and return (and write to ``csv_path``) one row per student and item of every
    notebook graded (columns :data:`CSV_COLUMNS`; see the module docstring for the statuses).

    ``students``: ids expected besides the folders found (a class list), so that a student who handed in nothing
    gets *missing* rows; ``notebooks``: the assignments to grade (default: every one that someone handed in);
    ``budget_s``: the time one student's notebook may execute (:data:`GRADING_BUDGET_S`); ``progress``: a bar over
    the (student, notebook) pairs, naming the one being graded.
    An existing ``csv_path`` is refused (FileExistsError, before any grading) unless ``overwrite=True``; it is
    then renamed ``<name>.previous`` first (``<name>.previous.2``, ... when that exists: no backup is replaced), so
    that a run that fails half-way leaves no file that looks current, and the new CSV appears only when the run
    succeeds."""
    import nbformat

    budget_s = check_number("budget_s", budget_s, 0.0, math.inf)  # math.inf: no limit
    if budget_s == 0:
        raise ValueError("budget_s must be positive, got 0")
    api_class = _nbgrader()  # before anything is read, graded or moved
    csv_path = Path(csv_path) if csv_path is not None else None
    course, submissions = Path(course).resolve(), Path(submissions).resolve()
    if csv_path is not None:
        if csv_path.exists() and not csv_path.is_file():
            raise FileExistsError(f"--csv {csv_path} is not a regular file (a folder?); name a CSV file")
        if csv_path.exists() and not overwrite:
            raise FileExistsError(f"{csv_path} exists; choose another --csv, or replace it with {OVERWRITE_HINT}")
        where = csv_path.resolve()  # the course and the students' folders are inputs (a file beside them is not)
        if where.is_relative_to(course) or (where.is_relative_to(submissions) and where.parent != submissions):
            raise ValueError(f"--csv {csv_path} lies inside the course or a student's folder; write it elsewhere")
        if not csv_path.parent.is_dir():
            raise FileNotFoundError(f"--csv {csv_path}: the folder {csv_path.parent} does not exist")
    if not (course / "source").is_dir():
        raise FileNotFoundError(f"{course} has no source/ folder: build the course first (assignments --course)")
    if not submissions.is_dir():
        raise FileNotFoundError(f"{submissions} is not a folder of submissions (SUBMISSIONS/<student>/<notebook>)")
    students = list(students)
    odd = [s for s in students if not isinstance(s, str) or s in ("", ".", "..") or "/" in s or "\\" in s]
    if odd:  # each id names folders under the course (submitted/, feedback/): never a path out of it
        raise ValueError(f"student id {odd[0]!r} is not a plain name (no slashes, not . or ..)")
    assignments = sorted(p.name for p in (course / "source").iterdir() if p.is_dir())
    folders = {p.name: p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith(".")}
    handed_in = {submitted_stem(nb) for folder in folders.values() for pattern in ("*.ipynb", "*/*.ipynb")
                 for nb in folder.glob(pattern)}
    wanted = list(notebooks) if notebooks else [a for a in assignments if a in handed_in]
    unknown = [n for n in wanted if n not in assignments]
    if unknown:
        raise ValueError(f"{unknown[0]} is not an assignment of {course} ({', '.join(assignments)})")
    if not wanted:
        raise ValueError(f"no notebook of this course under {submissions} ({', '.join(assignments)} expected in "
                         "SUBMISSIONS/<student>/)")
    if csv_path is not None and csv_path.exists():  # asked to replace it: never leave it looking current
        backups = (csv_path.with_name(csv_path.name + ".previous" + (f".{n}" if n > 1 else ""))
                   for n in range(1, 10**6))
        csv_path.rename(next(b for b in backups if not os.path.lexists(b)))  # an earlier backup is never replaced
    config = _config(course)
    api = api_class(config=config)
    rows: list[dict[str, Any]] = [  # a notebook outside any student folder: said, not graded
        {"student": "", "notebook": loose.stem, "item": "", "kind": "file", "score": "", "max_score": "",
         "status": "not graded", "feedback": "", "reason": f"{loose.name} lies in {submissions.name}/ itself, not in "
         "a student's folder (SUBMISSIONS/<student>/<notebook>)"}
        for loose in sorted(submissions.glob("*.ipynb"))]
    everyone = sorted(set(folders) | set(students))
    bar = progress_bar([(s, n) for s in everyone for n in wanted], desc="grading", unit="notebook", progress=progress)
    for student, stem in bar:
        bar.set_postfix_str(f"{student}/{stem}")
        folder = folders.get(student)
        # an earlier run's feedback goes: it is written again when this one grades the notebook, and a notebook
        # now missing or unreadable must not keep feedback that disagrees with its row
        shutil.rmtree(course / "feedback" / student / stem, ignore_errors=True)
        for stray in sorted(folder.glob("*.ipynb")) if folder is not None and stem == wanted[0] else ():
            if submitted_stem(stray) not in assignments:
                rows.append({"student": student, "notebook": stray.stem, "item": "", "kind": "file", "score": "",
                             "max_score": "", "status": "not graded", "feedback": "",
                             "reason": f"{stray.name} is not a notebook of this course ({', '.join(assignments)})"})
        items = notebook_items(course / "source" / stem / f"{stem}.ipynb")
        found, note = _find_submission(folder, stem) if folder is not None else (None, "")
        if found is None:
            reason = (f"no {stem}.ipynb in {submissions.name}/{student}/" if folder is not None
                      else f"no folder {student}/ in {submissions.name}/")
            rows += [_row(student, stem, item, 0, "missing", reason) for item in items]
            continue
        try:
            nbformat.read(found, as_version=4)
        except Exception as err:  # noqa: BLE001 - any reason a file is not a notebook goes into the CSV
            rows += [_row(student, stem, item, 0, "unreadable",
                          f"{found.name} is not a readable notebook ({type(err).__name__}: {err})"[:300])
                     for item in items]
            continue
        target = course / "submitted" / student / stem / f"{stem}.ipynb"  # nbgrader grades from there
        target.parent.mkdir(parents=True, exist_ok=True)
        if found.resolve() != target.resolve():  # SUBMISSIONS may be course/submitted itself
            shutil.copyfile(found, target)
        handed_in_at = datetime.fromtimestamp(found.stat().st_mtime, timezone.utc)  # the file's own time
        (target.parent / "timestamp.txt").write_text(handed_in_at.strftime("%Y-%m-%d %H:%M:%S.%f UTC\n"),
                                                     encoding="utf-8")
        # GRADING_ENV: a stub scores 0 instead of printing "not attempted yet"
        config.Execute.timeout_func = notebook_budget(budget_s)  # the api's config, read as autograde starts
        with _environment(PATH=_tools_path(), **{GRADING_ENV: "1"}):
            result = api.autograde(stem, student, force=True, create=True)
            feedback_result = api.generate_feedback(stem, student, force=True) if result["success"] else None
        if not result["success"]:
            log = (str(result.get("error") or "") + " " + str(result.get("log") or "")).strip()
            rows += [_row(student, stem, item, 0, "not graded", f"nbgrader could not grade {found.name}: "
                          f"{log[-300:]}") for item in items]
            continue
        feedback = course / "feedback" / student / stem / f"{stem}.html"
        feedback_text = str(feedback.relative_to(course)) if feedback_result and feedback_result["success"] \
            and feedback.is_file() else ""
        reasons, setup_error, present = _reasons(course / "autograded" / student / stem / f"{stem}.ipynb")
        rows += _graded_rows(course, student, stem, items, reasons, setup_error, note, feedback_text, present)
    if csv_path is not None:
        partial = csv_path.with_name(csv_path.name + ".partial")
        with open(partial, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
        partial.replace(csv_path)
    return rows


def _graded_rows(course: Path, student: str, stem: str, items: list[Item], reasons: dict[str, str],
                 setup_error: str | None, note: str, feedback: str, present: set[str]) -> list[dict[str, Any]]:
    """The rows of one notebook nbgrader graded, from the gradebook's scores and the autograded notebook's
    outputs (``present``: the grade ids its cells carry; nbgrader keeps a grade for a cell the student deleted)."""
    from nbgrader.api import Gradebook

    released = bool(present & {item.grade_id for item in items})
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        grades = {g.name: g for g in gradebook.find_submission_notebook(stem, stem, student).grades}
        rows = []
        for item in items:
            grade = grades.get(item.grade_id)
            manual = grade is None or grade.auto_score is None
            if not released:
                score, status = 0, "not graded"
                reason = ("the notebook has none of the released notebook's graded cells: was the course notebook "
                          "handed in instead of the one from release/?")
            elif grade is None or item.grade_id not in present:
                score, status, reason = 0, "not graded", "the submitted notebook has no such cell (deleted?)"
            elif manual and grade.manual_score is None:
                score, status, reason = "", "needs manual grading", "a written answer: mark it with the rubric"
            elif item.kind == "written question":
                score, status = grade.score, "graded"
                reason = "left as handed out" if grade.auto_score is not None else "marked by hand"
            else:
                score, status = grade.score, "graded"
                reason = reasons.get(item.grade_id, "")
            if setup_error and status == "graded" and item.kind == "exercise":
                status = "set-up error"
                reason = f"{setup_error}; {reason}"
            reason = "; ".join(part for part in (note, reason) if part)
            rows.append(_row(student, stem, item, score, status, reason, feedback))
    return rows


def describe(rows: list[dict[str, Any]]) -> str:
    """One line per student: points of the autograded items out of their maximum, and every notebook that was not
    graded normally (missing, unreadable, set-up error, ...)."""
    totals: dict[str, list[float]] = {}
    problems: dict[str, dict[str, set[str]]] = {}
    for row in rows:
        student = row["student"]
        total = totals.setdefault(student, [0.0, 0.0])
        if row["kind"] == "exercise":
            total[0] += float(row["score"] or 0)
            total[1] += float(row["max_score"])
        if row["status"] not in ("graded", "needs manual grading"):
            problems.setdefault(student, {}).setdefault(row["status"], set()).add(row["notebook"])
    lines = []
    for student, (score, maximum) in sorted(totals.items()):
        line = f"{student}: {score:g} / {maximum:g} exercise points"
        for status, stems in sorted(problems.get(student, {}).items()):
            line += f"; {status}: {', '.join(sorted(stems))}"
        lines.append(line)
    return "\n".join(lines)


__all__ = ["CSV_COLUMNS", "build_assignments", "describe", "grade_submissions", "marked_answer", "notebook_items", "source_notebook",
           "submitted_stem"]
