"""Graded assignments with nbgrader: the course builds (source and student versions), and grading a folder of
submissions reports what happened to every student and item: full marks, an untouched notebook, a shortcut and an
answer that raises (each with its reason), a typo in a set-up cell (undone: the work is still graded), a notebook
renamed by a browser download, a deleted set-up cell (a set-up error, said), an unreadable file, a missing
notebook and a student of the class list who handed in nothing. The CSV has a reason per item, in notebook order,
every graded student gets a feedback file, and a CSV appears only when a run succeeds."""

from __future__ import annotations

import copy
import csv
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from crossvit import exercises
from crossvit.exercises import grading

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "01_patch_embedding.ipynb"
ITEMS = ["1.1 patchify", "1.2 embed_patches", "1.3 token_sequence"]

# -- fast: the pieces ----------------------------------------------------------------------------------------------


def test_the_answer_cell_keeps_the_notebooks_stub_and_puts_the_solution_in_its_place():
    stub = ('def f(x: int) -> int:\n    """(B, N) -> (B, N): the notebook\'s own shapes."""\n'
            '    # Hint: a comment of the notebook\n    raise NotImplementedError("Exercise: write f")\n\n\nanswer = 1')
    solution = 'def f(x):\n    """The solution\'s docstring."""\n    y = x + 1  # why\n    return y'
    assert grading.marked_answer(stub, "f", solution) == (
        'def f(x: int) -> int:\n    """(B, N) -> (B, N): the notebook\'s own shapes."""\n'
        '    # Hint: a comment of the notebook\n    ### BEGIN SOLUTION\n    y = x + 1  # why\n    return y\n'
        '    ### END SOLUTION\n\n\nanswer = 1')
    with pytest.raises(ValueError, match="must end with"):
        grading.marked_answer("def f(x):\n    return x", "f", solution)


@pytest.mark.parametrize("name", ["03_cross_attention_and_hooks (1).ipynb", "03_cross_attention_and_hooks(2).ipynb",
                                  "03_cross_attention_and_hooks-Copy1.ipynb", "03_cross_attention_and_hooks copy.ipynb",
                                  "03_cross_attention_and_hooks.ipynb"])
def test_a_notebook_renamed_by_a_download_is_recognised(name):
    assert grading.submitted_stem(Path(name)) == "03_cross_attention_and_hooks"


def test_the_source_notebook_locks_every_cell_that_is_not_an_answer():
    nb = grading.source_notebook(NOTEBOOK)
    kinds = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader")
        if cell.cell_type == "code":
            assert meta is not None, cell.source[:60]
            kinds.setdefault((meta["solution"], meta["grade"], meta["locked"]), []).append(meta["grade_id"])
    assert sorted(kinds[(True, False, False)]) == sorted(f"exercise_{n}" for n in ("patchify", "embed_patches",
                                                                                   "token_sequence"))
    assert len(kinds[(False, True, True)]) == 3  # the checkers: autograder tests
    assert len(kinds[(False, False, True)]) >= 8  # every set-up cell: read-only
    # the exercise cell keeps the notebook's own stub around the solution
    committed = nbformat.read(NOTEBOOK, as_version=4)
    for index, _ in exercises.exercise_cells(committed):
        stub_doc = committed.cells[index].source.split('"""')[1]
        assert stub_doc in nb.cells[index].source and grading.BEGIN in nb.cells[index].source


def _source_course(tmp_path: Path) -> Path:
    """A course folder with notebook 01's source version and no gradebook: enough for the checks made before any
    grading."""
    course = tmp_path / "course"
    (course / "source" / NOTEBOOK.stem).mkdir(parents=True)
    nbformat.write(grading.source_notebook(NOTEBOOK), course / "source" / NOTEBOOK.stem / NOTEBOOK.name)
    return course


def test_the_items_are_listed_in_the_notebooks_order(tmp_path):
    course = _source_course(tmp_path)
    items = grading.notebook_items(course / "source" / NOTEBOOK.stem / NOTEBOOK.name)
    assert [item.name for item in items] == [*ITEMS, "question 1.b"]  # 1.1 before 1.2 before 1.3, then 1.b
    nb3 = ROOT / "notebooks" / "03_cross_attention_and_hooks.ipynb"
    (course / "source" / nb3.stem).mkdir()
    nbformat.write(grading.source_notebook(nb3), course / "source" / nb3.stem / nb3.name)
    names = [item.name for item in grading.notebook_items(course / "source" / nb3.stem / nb3.name)]
    assert names.index("3.1 record_with_hooks") < names.index("3.2 fusion_direction")


def test_a_failed_run_leaves_no_csv_that_looks_current(tmp_path, monkeypatch):
    course = _source_course(tmp_path)
    submissions = tmp_path / "submitted"
    (submissions / "ada").mkdir(parents=True)
    nbformat.write(nbformat.read(NOTEBOOK, as_version=4), submissions / "ada" / NOTEBOOK.name)
    grades = tmp_path / "grades.csv"
    grades.write_text("student,score\nada,17\n")

    class Broken:  # nbgrader that fails half-way through the run
        def __init__(self, config):  # noqa: ANN001
            pass

        def autograde(self, *args, **kwargs):  # noqa: ANN002, ANN003
            raise RuntimeError("the grader crashed")

    monkeypatch.setattr(grading, "_nbgrader", lambda: Broken)
    with pytest.raises(FileExistsError, match="OVERWRITE=1"):  # without overwrite: refused before any grading
        grading.grade_submissions(course, submissions, grades)
    assert grades.read_text() == "student,score\nada,17\n"
    with pytest.raises(RuntimeError, match="crashed"):
        grading.grade_submissions(course, submissions, grades, overwrite=True)
    assert not grades.exists(), "a failed run must not leave the old CSV looking current"
    assert (tmp_path / "grades.csv.previous").read_text() == "student,score\nada,17\n"  # kept, under its new name
    grades.write_text("student,score\nada,18\n")  # a second replaced CSV: the first backup stays as it is
    with pytest.raises(RuntimeError, match="crashed"):
        grading.grade_submissions(course, submissions, grades, overwrite=True)
    assert (tmp_path / "grades.csv.previous").read_text() == "student,score\nada,17\n"
    assert (tmp_path / "grades.csv.previous.2").read_text() == "student,score\nada,18\n"


@pytest.mark.slow  # a grading subprocess: seconds on 2 cores, so `make test` runs it, not test-fast
def test_a_student_id_that_is_a_path_is_refused_before_anything_is_touched(tmp_path):
    """The ids of a class list name folders under the course (a regrade removes course/feedback/<id>/<notebook>/):
    "../.." must never reach outside it."""
    pytest.importorskip("nbgrader")
    (tmp_path / "course" / "source" / NOTEBOOK.stem).mkdir(parents=True)
    (tmp_path / "submissions").mkdir()
    keep = tmp_path / NOTEBOOK.stem / "precious.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    for odd in ("../..", "a/b", "", ".."):
        with pytest.raises(ValueError, match="is not a plain name"):
            grading.grade_submissions(tmp_path / "course", tmp_path / "submissions", students=[odd])
    assert keep.read_text() == "mine"


def test_the_command_line_names_the_make_variable_that_replaces_a_csv(tmp_path):
    course = _source_course(tmp_path)
    (tmp_path / "submitted" / "ada").mkdir(parents=True)
    (tmp_path / "grades.csv").write_text("mine\n")
    result = subprocess.run([sys.executable, "-m", "crossvit.exercises", "grade", str(tmp_path / "submitted"),
                             "--course", str(course), "--csv", str(tmp_path / "grades.csv")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1 and "OVERWRITE=1" in result.stderr and "--overwrite" in result.stderr
    assert (tmp_path / "grades.csv").read_text() == "mine\n"


# -- slow: nbgrader runs notebook 01 -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    pytest.importorskip("nbgrader")
    course = tmp_path_factory.mktemp("course")
    released = grading.build_assignments(course, [NOTEBOOK])
    return course, released[0]


def _replace_function(nb, name: str, source: str):
    for index, found in exercises.exercise_cells(nb):
        if found == name:
            nb.cells[index].source = source
    return nb


@pytest.mark.slow
def test_the_student_version_keeps_the_notebooks_stubs_and_holds_no_solution(course):
    course_dir, release = course
    nb = nbformat.read(release, as_version=4)
    committed = nbformat.read(NOTEBOOK, as_version=4)
    cells = exercises.exercise_cells(nb)
    assert [name for _, name in cells] == ["patchify", "embed_patches", "token_sequence"]
    for index, name in cells:
        source = nb.cells[index].source
        assert "raise NotImplementedError()" in source and f"def {name}(" in source and "BEGIN SOLUTION" not in source
        original = committed.cells[index].source
        assert original.split("raise NotImplementedError")[0].strip() in source  # signature, docstring, comments
        checker = nb.cells[index + 1]
        assert checker.metadata["nbgrader"]["grade"] and checker.metadata["nbgrader"]["locked"]
    text = "\n".join(cell.source for cell in nb.cells)
    assert "solutions/" not in text and "%load" not in text  # the release has no solutions folder to point at
    setup = [c for c in nb.cells if c.cell_type == "code" and not c.metadata["nbgrader"]["solution"]
             and not c.metadata["nbgrader"]["grade"]]
    assert setup and all(c.metadata.get("editable") is False for c in setup)  # read-only in JupyterLab
    source = nbformat.read(course_dir / "source" / NOTEBOOK.stem / NOTEBOOK.name, as_version=4)
    assert "### BEGIN SOLUTION" in source.cells[cells[0][0]].source


@pytest.mark.slow
def test_grading_reports_every_student_and_item(course, tmp_path):
    course_dir, release = course
    student = nbformat.read(release, as_version=4)
    solved = exercises.with_solutions(nbformat.read(NOTEBOOK, as_version=4), exercises.solutions_path(NOTEBOOK))
    solutions = {name: solved.cells[i].source for i, name in exercises.exercise_cells(solved)}
    submissions = tmp_path / "submitted_by_students"

    def submit(who: str, nb, name: str = NOTEBOOK.name) -> None:
        (submissions / who).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, submissions / who / name)

    full = copy.deepcopy(student)
    for name, source in solutions.items():
        _replace_function(full, name, source)
    answered = copy.deepcopy(full)
    for cell in answered.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "question_1_b":
            cell.source = "The windows do not overlap, so each token is one patch times the same matrix."
    submit("ada", answered)
    submit("bob", student)  # untouched
    slips = _replace_function(copy.deepcopy(full), "patchify",
                              "def patchify(images, patch_size):\n    import torch.nn.functional as F\n"
                              "    return F.unfold(images, patch_size, stride=patch_size).transpose(1, 2)")
    submit("cy", _replace_function(slips, "embed_patches", "def embed_patches(patches, conv):\n"
                                                           "    raise RuntimeError('oops')"))
    typo = copy.deepcopy(full)
    setup = next(c for c in typo.cells if "crossvit.load_pretrained(" in c.source)
    setup.source = setup.source.replace("load_pretrained(", "load_pretrianed(")  # a typo in a read-only cell
    submit("eve", typo)
    submit("fay", full, "01_patch_embedding (1).ipynb")  # renamed by a browser download
    deleted = copy.deepcopy(full)
    deleted.cells = [c for c in deleted.cells if "import crossvit" not in c.source]  # the imports cell is gone
    submit("kim", deleted)
    (submissions / "gus").mkdir()
    (submissions / "gus" / NOTEBOOK.name).write_text("{ this is not a notebook")
    submit("hal", full, "my_notes.ipynb")  # the assignment itself is missing

    grades = tmp_path / "grades.csv"
    rows = grading.grade_submissions(course_dir, submissions, grades, students=["ivy"])
    with open(grades, newline="") as f:
        assert list(csv.DictReader(f)) == [{k: str(v) for k, v in row.items()} for row in rows]
    assert list(rows[0]) == list(grading.CSV_COLUMNS)
    by = {(r["student"], r["item"]): r for r in rows}
    maximum = {i: float(by["ada", i]["max_score"]) for i in ITEMS}
    assert all(v >= 1 for v in maximum.values())
    students = ["ada", "bob", "cy", "eve", "fay", "gus", "hal", "ivy", "kim"]
    assert sorted({r["student"] for r in rows}) == students  # every student found or expected has rows
    for who in students:  # ... for every item, in the notebook's order
        assert [r["item"] for r in rows if r["student"] == who and r["kind"] != "file"] == [*ITEMS, "question 1.b"]

    def scores(who: str) -> list[float]:
        return [float(by[who, i]["score"]) for i in ITEMS]

    assert scores("ada") == [maximum[i] for i in ITEMS] and all("\u2713" in by["ada", i]["reason"] for i in ITEMS)
    assert by["ada", "question 1.b"]["status"] == "needs manual grading"
    assert scores("bob") == [0, 0, 0] and all("not attempted" in by["bob", i]["reason"] for i in ITEMS)
    assert by["bob", "question 1.b"]["status"] == "graded" and by["bob", "question 1.b"]["score"] == 0
    assert scores("cy") == [0, 0, maximum[ITEMS[2]]]  # the shortcut and the error cost only their own items
    assert "F.unfold" in by["cy", ITEMS[0]]["reason"] and "oops" in by["cy", ITEMS[1]]["reason"]
    assert scores("eve") == [maximum[i] for i in ITEMS]  # the typo was undone: her work counts
    assert {by["eve", i]["status"] for i in ITEMS} == {"graded"}
    assert scores("fay") == [maximum[i] for i in ITEMS] and "01_patch_embedding (1).ipynb" in by["fay", ITEMS[0]][
        "reason"]
    assert {by["kim", i]["status"] for i in ITEMS} == {"set-up error"}
    assert "NameError" in by["kim", ITEMS[0]]["reason"] and "not an answer" in by["kim", ITEMS[0]]["reason"]
    assert {by["gus", i]["status"] for i in ITEMS} == {"unreadable"} and scores("gus") == [0, 0, 0]
    assert {by["hal", i]["status"] for i in ITEMS} == {"missing"}
    stray = [r for r in rows if r["student"] == "hal" and r["kind"] == "file"]
    assert len(stray) == 1 and "my_notes.ipynb is not a notebook of this course" in stray[0]["reason"]
    assert {by["ivy", i]["status"] for i in ITEMS} == {"missing"} and "no folder ivy/" in by["ivy", ITEMS[0]]["reason"]
    for who in ("ada", "bob", "cy", "eve", "fay", "kim"):  # a feedback file for every graded student
        feedback = course_dir / by[who, ITEMS[0]]["feedback"]
        assert feedback.is_file() and feedback.suffix == ".html", who
    assert "patchify" in (course_dir / by["cy", ITEMS[0]]["feedback"]).read_text(encoding="utf-8")
    summary = grading.describe(rows)
    assert summary.splitlines()[0].startswith("ada: ") and "missing: 01_patch_embedding" in summary


@pytest.mark.slow
def test_a_relative_course_folder_works(tmp_path, monkeypatch):
    pytest.importorskip("nbgrader")
    monkeypatch.chdir(tmp_path)  # as `make assignments` passes it: course/, relative to the working directory
    released = grading.build_assignments("course", [NOTEBOOK])
    assert released[0].is_file() and released[0].is_absolute()
    assert (tmp_path / "course" / "gradebook.db").is_file()


@pytest.mark.slow
def test_a_course_edited_by_hand_is_never_overwritten(tmp_path):
    pytest.importorskip("nbgrader")
    course = tmp_path / "course"
    grading.build_assignments(course, [NOTEBOOK])
    grading.build_assignments(course, [NOTEBOOK])  # rebuilding an unchanged course is fine
    source = course / "source" / NOTEBOOK.stem / NOTEBOOK.name
    edited = source.read_text(encoding="utf-8").replace("Patch embedding", "Patch embedding (our version)", 1)
    source.write_text(edited, encoding="utf-8")
    with pytest.raises(FileExistsError, match="differs from the file this command would write now.*OVERWRITE=1"):
        grading.build_assignments(course, [NOTEBOOK])
    assert source.read_text(encoding="utf-8") == edited  # untouched
    grading.build_assignments(course, [NOTEBOOK], overwrite=True)
    assert source.read_text(encoding="utf-8") != edited


@pytest.mark.slow
def test_a_rebuild_refuses_release_edits_and_knows_its_own_files_wherever_the_course_is(tmp_path):
    """Before: an edited release notebook was replaced without a word; a data file nbgrader copied from source/
    into release/ blocked every rebuild as "not a file this command wrote"; a course moved elsewhere was refused
    (its config held the old gradebook path, and nbgrader's own tools used the old gradebook); and a quote in the
    course path made nbgrader_config.py invalid Python."""
    import shutil

    from traitlets.config.loader import PyFileConfigLoader

    pytest.importorskip("nbgrader")
    course = tmp_path / "teacher's course"
    grading.build_assignments(course, [NOTEBOOK])
    (course / "source" / NOTEBOOK.stem / "data.txt").write_text("the teacher's data\n", encoding="utf-8")
    grading.build_assignments(course, [NOTEBOOK])  # nbgrader copies data.txt into release/
    grading.build_assignments(course, [NOTEBOOK])  # and the rebuild knows that copy as its own
    assert (course / "release" / NOTEBOOK.stem / "data.txt").is_file()
    moved = tmp_path / "moved"
    shutil.copytree(course, moved)
    grading.build_assignments(moved, [NOTEBOOK])
    config = PyFileConfigLoader("nbgrader_config.py", path=str(moved)).load_config()  # as nbgrader reads it
    assert config.CourseDirectory.db_url == f"sqlite:///{moved / 'gradebook.db'}"
    release = moved / "release" / NOTEBOOK.stem / NOTEBOOK.name
    edited = release.read_text(encoding="utf-8").replace("Patch embedding", "Patch embedding (our notes)", 1)
    release.write_text(edited, encoding="utf-8")
    with pytest.raises(FileExistsError, match="was edited since this command wrote it"):
        grading.build_assignments(moved, [NOTEBOOK])
    assert release.read_text(encoding="utf-8") == edited


@pytest.mark.slow
def test_grading_odd_layouts_says_what_it_found_and_keeps_no_stale_feedback(course, tmp_path, capsys):
    """Before: nbgrader's own layout <student>/<stem>/<stem>.ipynb was "missing"; a notebook beside the student
    folders produced no row; the course notebook handed in instead of the released one read "needs manual
    grading" on every item; a class list saved with a byte-order mark made a phantom student; every submission
    was stamped 2026-01-01; and a regrade of a notebook that had become unreadable left its old feedback."""
    from crossvit.exercises.__main__ import main

    course_dir, release = course
    submissions = tmp_path / "handed in"
    (submissions / "alice" / NOTEBOOK.stem).mkdir(parents=True)
    nested = submissions / "alice" / NOTEBOOK.stem / NOTEBOOK.name  # as nbgrader's collect gathers it
    nbformat.write(nbformat.read(release, as_version=4), nested)
    (submissions / "kate").mkdir()
    nbformat.write(nbformat.read(NOTEBOOK, as_version=4), submissions / "kate" / NOTEBOOK.name)  # not released
    nbformat.write(nbformat.read(release, as_version=4), submissions / NOTEBOOK.name)  # in no student's folder
    no_check = nbformat.read(release, as_version=4)  # the read-only check of 1.1 deleted
    no_check.cells = [c for c in no_check.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "check_patchify"]
    (submissions / "lee").mkdir()
    nbformat.write(no_check, submissions / "lee" / NOTEBOOK.name)
    roster = tmp_path / "class.txt"
    roster.write_bytes("\ufeffalice\r\nkate\r\n".encode("utf-8"))  # as Notepad and Excel save it
    grades = tmp_path / "grades.csv"
    argv = ["grade", str(submissions), "--course", str(course_dir), "--csv", str(grades), "--students", str(roster)]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(grades, newline="", encoding="utf-8")))
    assert {r["student"] for r in rows} == {"", "alice", "kate", "lee"}
    lee = {r["item"]: r for r in rows if r["student"] == "lee"}
    assert lee["1.1 patchify"]["status"] == "not graded" and "no such cell" in lee["1.1 patchify"]["reason"]
    assert {r["status"] for r in rows if r["student"] == "alice"} == {"graded"}
    assert {r["status"] for r in rows if r["student"] == "kate"} == {"not graded"}
    assert all("instead of the one from release/" in r["reason"] for r in rows if r["student"] == "kate")
    assert [r["reason"] for r in rows if r["student"] == ""][0].startswith(f"{NOTEBOOK.name} lies in handed in/")
    stamp = (course_dir / "submitted" / "alice" / NOTEBOOK.stem / "timestamp.txt").read_text(encoding="utf-8")
    assert stamp.startswith(time.strftime("%Y-%m-%d", time.gmtime(nested.stat().st_mtime)))
    feedback = course_dir / "feedback" / "alice" / NOTEBOOK.stem / f"{NOTEBOOK.stem}.html"
    assert feedback.is_file()
    nested.write_text("{ no longer a notebook", encoding="utf-8")
    assert main([*argv, "--overwrite"]) == 0
    assert not feedback.exists()  # its row says unreadable: no feedback that disagrees with it is left
    capsys.readouterr()


@pytest.mark.slow
def test_a_notebook_that_runs_past_its_budget_is_stopped_and_says_so(course, tmp_path, monkeypatch):
    """A cell may run as long as its notebook's budget lasts, and at least CELL_TIMEOUT_S: a slow answer that
    returns within the budget counts, an answer that never returns is stopped when the budget is spent, grading goes
    on, the item scores 0 and the reason says the time ran out. (Here a budget of 90 s and at least 20 s a cell,
    where grading gives an hour and 10 minutes.)"""
    monkeypatch.setattr(grading, "CELL_TIMEOUT_S", 20)
    course_dir, release = course
    solved = exercises.with_solutions(nbformat.read(NOTEBOOK, as_version=4), exercises.solutions_path(NOTEBOOK))
    solutions = {name: solved.cells[i].source for i, name in exercises.exercise_cells(solved)}
    stuck = copy.deepcopy(nbformat.read(release, as_version=4))
    for name, source in solutions.items():
        _replace_function(stuck, name, source)
    first, last = ITEMS[0].split()[-1], ITEMS[-1].split()[-1]
    slow = solutions[first].replace(f"def {first}(", f"_SLEPT = []\n\n\ndef {first}(", 1)
    slow = slow.replace('"""\n', '"""\n    if not _SLEPT:  # once: slower than 20 s, within 90 s\n'
                        '        _SLEPT.append(__import__("time").sleep(40))\n', 1)
    stuck = _replace_function(stuck, first, slow)
    stuck = _replace_function(stuck, last, f"def {last}(*args, **kwargs):\n    import time\n    time.sleep(3600)")
    (tmp_path / "in" / "zed").mkdir(parents=True)
    nbformat.write(stuck, tmp_path / "in" / "zed" / NOTEBOOK.name)
    with pytest.raises(ValueError, match="positive"):
        grading.grade_submissions(course_dir, tmp_path / "in", budget_s=0)
    started = time.monotonic()
    rows = grading.grade_submissions(course_dir, tmp_path / "in", budget_s=90)
    assert time.monotonic() - started < 600  # the sleeping answer did not hold the run
    by = {r["item"]: r for r in rows}
    assert float(by[ITEMS[0]]["score"]) == float(by[ITEMS[0]]["max_score"]) > 0, by[ITEMS[0]]  # slow, but it counts
    assert float(by[ITEMS[-1]]["score"]) == 0 and "Timeout" in by[ITEMS[-1]]["reason"], by[ITEMS[-1]]


@pytest.mark.parametrize("budget, error", [(0, ValueError), (-5.0, ValueError), (float("nan"), ValueError),
                                           ("60", TypeError), (True, TypeError)])
def test_a_bad_budget_is_refused_before_anything_is_read(tmp_path, budget, error):
    with pytest.raises(error, match="budget_s"):
        grading.grade_submissions(tmp_path / "no course", tmp_path / "no submissions", budget_s=budget)


def test_a_cell_may_use_what_is_left_of_the_budget_and_never_less_than_the_floor():
    assert grading.notebook_budget(5000)(None) in (4999, 5000)  # what is left, whole seconds
    assert grading.notebook_budget(5)(None) == grading.CELL_TIMEOUT_S  # the floor
    assert grading.notebook_budget(float("inf"))(None) is None  # no limit: nbclient's None
