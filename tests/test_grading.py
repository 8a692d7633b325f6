"""Graded assignments with nbgrader: the course builds (source and student versions), and grading a folder of four
kinds of submission gives the right points per student and exercise in the CSV: the solutions (full marks), the
notebook untouched (zero), an answer that calls the library function it should rebuild (zero for that exercise),
and an answer that raises (zero for it, every other exercise still graded)."""

from __future__ import annotations

import copy
import csv
import shutil
from pathlib import Path

import nbformat
import pytest

from crossvit import exercises
from crossvit.exercises import grading

pytest.importorskip("nbgrader")
pytestmark = pytest.mark.slow  # runs notebook 01 five times in nbgrader

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "01_patch_embedding.ipynb"


def test_marked_solution_keeps_signature_and_docstring():
    source = 'def f(x):\n    """Doc."""\n    y = x + 1\n    return y'
    assert grading.marked_solution(source) == ('def f(x):\n    """Doc."""\n    ### BEGIN SOLUTION\n    y = x + 1\n'
                                               '    return y\n    ### END SOLUTION')


def _replace_function(nb, name: str, source: str):
    for index, found in exercises.exercise_cells(nb):
        if found == name:
            nb.cells[index].source = source
    return nb


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    released = grading.build_assignments(course, [NOTEBOOK])
    return course, released[0]


def test_the_student_version_has_stubs_and_locked_checkers(course):
    _, release = course
    nb = nbformat.read(release, as_version=4)
    cells = exercises.exercise_cells(nb)
    assert [name for _, name in cells] == ["patchify", "embed_patches", "token_sequence"]
    for index, name in cells:
        assert "raise NotImplementedError()" in nb.cells[index].source and f"def {name}(" in nb.cells[index].source
        assert "BEGIN SOLUTION" not in nb.cells[index].source
        checker = nb.cells[index + 1]
        assert checker.metadata["nbgrader"]["grade"] and checker.metadata["nbgrader"]["locked"]
    source = nbformat.read(course[0] / "source" / NOTEBOOK.stem / NOTEBOOK.name, as_version=4)
    assert "### BEGIN SOLUTION" in source.cells[cells[0][0]].source


def test_grading_a_folder_of_submissions(course, tmp_path):
    course_dir, release = course
    student = nbformat.read(release, as_version=4)
    solved = exercises.with_solutions(nbformat.read(NOTEBOOK, as_version=4),
                                      exercises.solutions_path(NOTEBOOK))
    solutions = {name: solved.cells[i].source for i, name in exercises.exercise_cells(solved)}
    submissions = tmp_path / "submitted_by_students"

    def submit(who: str, nb) -> None:
        (submissions / who).mkdir(parents=True)
        nbformat.write(nb, submissions / who / NOTEBOOK.name)

    full = copy.deepcopy(student)
    for name, source in solutions.items():
        _replace_function(full, name, source)
    answered = copy.deepcopy(full)
    for cell in answered.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "question_1_b":
            cell.source = "The windows do not overlap, so each token is one patch times the same matrix."
    submit("ada", answered)
    submit("bob", student)  # untouched
    shortcut = _replace_function(
        copy.deepcopy(full), "patchify",
        "def patchify(images, patch_size):\n    import torch.nn.functional as F\n"
        "    return F.unfold(images, patch_size, stride=patch_size).transpose(1, 2)")
    submit("cy", shortcut)
    raising = _replace_function(copy.deepcopy(full), "embed_patches",
                                "def embed_patches(patches, conv):\n    raise RuntimeError('oops')")
    submit("dee", raising)

    rows = grading.grade_submissions(course_dir, submissions, tmp_path / "grades.csv")
    with open(tmp_path / "grades.csv", newline="") as f:
        assert list(csv.DictReader(f)) == [{k: str(v) for k, v in row.items()} for row in rows]
    score = {(r["student"], r["item"]): float(r["score"]) for r in rows if r["kind"] == "exercise"}
    maximum = {r["item"]: float(r["max_score"]) for r in rows if r["kind"] == "exercise"}
    items = ["1.1 patchify", "1.2 embed_patches", "1.3 token_sequence"]
    assert sorted(maximum) == sorted(items) and all(v >= 1 for v in maximum.values())
    assert [score["ada", i] for i in items] == [maximum[i] for i in items]  # full marks
    assert [score["bob", i] for i in items] == [0, 0, 0]  # untouched: zero
    assert [score["cy", i] for i in items] == [0, maximum[items[1]], maximum[items[2]]]  # F.unfold: zero for 1.1
    assert [score["dee", i] for i in items] == [maximum[items[0]], 0, maximum[items[2]]]  # raises: the rest graded
    written = {r["student"]: r for r in rows if r["kind"] == "written question"}
    assert {r["item"] for r in written.values()} == {"question 1.b"}
    assert written["ada"]["status"] == "needs manual grading" and written["ada"]["score"] == ""
    assert written["bob"]["status"] == "graded" and written["bob"]["score"] == 0  # nothing written: 0
    assert grading.describe(rows).splitlines()[0].startswith("ada: ")
    shutil.rmtree(submissions)


def test_a_relative_course_folder_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as `make assignments` passes it: course/, relative to the working directory
    released = grading.build_assignments("course", [NOTEBOOK])
    assert released[0].is_file() and released[0].is_absolute()
    assert (tmp_path / "course" / "gradebook.db").is_file()


def test_a_course_edited_by_hand_or_an_earlier_csv_is_never_overwritten(tmp_path):
    course = tmp_path / "course"
    grading.build_assignments(course, [NOTEBOOK])
    grading.build_assignments(course, [NOTEBOOK])  # rebuilding an unchanged course is fine
    source = course / "source" / NOTEBOOK.stem / NOTEBOOK.name
    edited = source.read_text(encoding="utf-8").replace("Patch embedding", "Patch embedding (our version)", 1)
    source.write_text(edited, encoding="utf-8")
    with pytest.raises(FileExistsError, match="differs from the course notebook"):
        grading.build_assignments(course, [NOTEBOOK])
    assert source.read_text(encoding="utf-8") == edited  # untouched
    grading.build_assignments(course, [NOTEBOOK], overwrite=True)
    assert source.read_text(encoding="utf-8") != edited
    grades = tmp_path / "grades.csv"
    grades.write_text("mine\n")
    (tmp_path / "submissions").mkdir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        grading.grade_submissions(course, tmp_path / "submissions", grades)
    assert grades.read_text() == "mine\n"
