"""Every command-line path ends bad input with one ``error:`` line and a non-zero status, before it changes a file
of the user's: what an audit of the commands found (each test failed before its change). The commands are called
through their ``main`` functions, as their console scripts call them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from crossvit.exercises import grading
from crossvit.exercises.__main__ import main as exercises_main

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "01_patch_embedding.ipynb"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    return err


def test_grade_checks_nbgrader_and_its_csv_before_grading(tmp_path, capsys, monkeypatch):
    course, submissions = tmp_path / "course", tmp_path / "subs"
    (submissions / "alice").mkdir(parents=True)
    mine = tmp_path / "grades.csv"
    mine.write_text("earlier grades")

    def no_nbgrader():
        raise ImportError("graded assignments need nbgrader: pip install 'crossvit-lab[teach]' (or nbgrader)")

    monkeypatch.setattr(grading, "_nbgrader", no_nbgrader)
    args = ["grade", str(submissions), "--course", str(course), "--csv", str(mine), "--overwrite"]
    assert exercises_main(args) == 1  # was an ImportError traceback, after the CSV had been renamed .previous
    assert "need nbgrader" in _one_error_line(capsys)
    assert mine.read_text() == "earlier grades"
    assert exercises_main(["assignments", "--course", str(course)]) == 1  # was a traceback
    assert "need nbgrader" in _one_error_line(capsys)
    monkeypatch.undo()
    pytest.importorskip("nbgrader")
    folder = tmp_path / "a folder"
    folder.mkdir()
    (folder / "kept.txt").write_text("mine")
    for csv, message in ((folder, "is not a regular file"),  # was renamed folder.previous, a CSV in its place
                         (submissions / "alice" / "g.csv", "lies inside the course or a student's folder"),
                         (tmp_path / "no such folder" / "g.csv", "does not exist")):  # was: graded, then lost
        assert exercises_main(["grade", str(submissions), "--course", str(course), "--csv", str(csv),
                               "--overwrite"]) == 1
        assert message in _one_error_line(capsys)
    assert (folder / "kept.txt").read_text() == "mine"
    assert exercises_main(["grade", str(submissions), "--course", str(course), "--students", str(folder)]) == 1
    assert _one_error_line(capsys).startswith(f"error: --students {folder}")  # was IsADirectoryError
    assert exercises_main(["grade", str(submissions), "--course", str(course), "--budget", "nan"]) == 1
    assert "--budget must be a positive number" in _one_error_line(capsys)


def test_assignments_names_what_it_cannot_build_from(tmp_path, capsys, monkeypatch):
    pytest.importorskip("nbgrader")
    a_file = tmp_path / "a file"
    a_file.write_text("mine")
    assert exercises_main(["assignments", "--course", str(a_file)]) == 1
    assert "is a file, not a folder" in _one_error_line(capsys)  # was "[Errno 17] File exists"
    course = tmp_path / "course"
    for notebooks, message in (([tmp_path / "missing.ipynb"], "no such notebook"),  # was FileNotFoundError
                               ([a_file], "is not a readable notebook")):  # a PNG was a UnicodeDecodeError
        assert exercises_main(["assignments", "--course", str(course), "--notebooks", *map(str, notebooks)]) == 1
        assert message in _one_error_line(capsys)
    monkeypatch.chdir(tmp_path)  # no notebooks/ here: it built an empty course and said "0 assignment(s)"
    assert exercises_main(["assignments", "--course", str(course)]) == 1
    assert "no course notebooks in" in _one_error_line(capsys)
    assert not course.exists()
    notes = course / "release" / NOTEBOOK.stem / "notes.txt"  # nbgrader rebuilds that folder: it would be deleted
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt is not a file this command wrote"):
        grading.build_assignments(course, [NOTEBOOK])
    assert notes.read_text() == "mine"


def test_solve_reads_every_notebook_before_writing(tmp_path, capsys):
    broken = tmp_path / "in" / NOTEBOOK.name
    broken.parent.mkdir()
    broken.write_text("not json")
    (tmp_path / "in" / "solutions").mkdir()
    (tmp_path / "in" / "solutions" / f"{NOTEBOOK.stem}.py").write_text((ROOT / "notebooks" / "solutions" /
                                                                        f"{NOTEBOOK.stem}.py").read_text())
    out = tmp_path / "out"
    assert exercises_main(["solve", str(broken), "--out", str(out)]) == 1  # was NotJSONError, after making out/
    assert "cannot be solved" in _one_error_line(capsys)
    assert not out.exists()
    twin = tmp_path / "twin" / NOTEBOOK.name
    twin.parent.mkdir()
    twin.write_bytes(NOTEBOOK.read_bytes())
    (tmp_path / "twin" / "solutions").mkdir()
    (tmp_path / "twin" / "solutions" / f"{NOTEBOOK.stem}.py").write_text(
        (ROOT / "notebooks" / "solutions" / f"{NOTEBOOK.stem}.py").read_text())
    assert exercises_main(["solve", str(NOTEBOOK), str(twin), "--out", str(out)]) == 1  # the second replaced the first
    assert "would both be written" in _one_error_line(capsys)
    assert not out.exists()


def test_solve_names_an_out_under_a_file_and_a_target_that_is_a_folder(tmp_path, capsys):
    """Both were tracebacks (NotADirectoryError; IsADirectoryError after writing the first notebook)."""
    (tmp_path / "a_file").write_text("not a folder")
    assert exercises_main(["solve", str(NOTEBOOK), "--out", str(tmp_path / "a_file" / "sub")]) == 1
    assert "a_file is a file, not a folder" in _one_error_line(capsys)
    out = tmp_path / "out"
    (out / "03_cross_attention_and_hooks.ipynb").mkdir(parents=True)
    notebooks = [str(NOTEBOOK), str(ROOT / "notebooks" / "03_cross_attention_and_hooks.ipynb")]
    assert exercises_main(["solve", *notebooks, "--out", str(out), "--overwrite"]) == 1
    assert "is a folder" in _one_error_line(capsys)
    assert not (out / NOTEBOOK.name).exists()  # every check before the first write


def test_train_refuses_a_state_file_that_is_not_one_before_training(tmp_path, capsys, monkeypatch):
    from crossvit import train as train_module

    monkeypatch.setattr(train_module, "make_training_set", lambda *a: pytest.fail("data made before the check"))
    base = ["--preset", "shapes_tiny", "--steps", "2", "--batch-size", "2", "--train-images", "4",
            "--eval-images", "2", "--device", "cpu", "--quiet"]
    out = tmp_path / "ck dir"
    assert train_module.main([*base, "--out", str(out), "--name", "m", "--state-file", str(out / "m.json")]) == 2
    assert "is the checkpoint's own file" in _one_error_line(capsys)  # it trained, then found m.json taken
    monkeypatch.undo()
    for name, content in (("tensor.pt", torch.zeros(3)), ("list.pt", [1, 2])):
        torch.save(content, tmp_path / name)
        assert train_module.main([*base, "--state-file", str(tmp_path / name)]) == 2  # was AttributeError
        assert "not a training state this trainer wrote" in _one_error_line(capsys)
    (tmp_path / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    assert train_module.main([*base, "--state-file", str(tmp_path / "cat.png")]) == 2  # was 6 lines of torch's
    assert "not a training state" in _one_error_line(capsys)


def test_course_kit_and_the_figure_build_name_bad_arguments(tmp_path, capsys, monkeypatch):
    course_kit = _load("course_kit_cli", ROOT / "docs" / "course_kit.py")
    a_file = tmp_path / "cat.png"
    a_file.write_bytes(b"mine")
    assert course_kit.main(["folder", "--edition", "student", "--out", str(a_file)]) == 1  # NotADirectoryError
    assert "is a file, not a folder" in _one_error_line(capsys)
    out = tmp_path / "slides out"
    assert course_kit.main(["slides", "--executed", str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert "--executed" in _one_error_line(capsys)  # the message had no "error:"
    assert not out.exists()  # .course_kit.json was written there first
    build = course_kit.load_runner()
    with pytest.raises(SystemExit) as exit_info:
        build.main(["--budget", "nan", "--only", "no such notebook"])  # NaN passed: every kernel would fail
    assert exit_info.value.code == 2
    assert "--budget must be positive, got nan" in capsys.readouterr().err
    monkeypatch.setenv("CROSSVIT_EXECUTION_BUDGET", "abc")  # was a ValueError traceback at import
    assert build.main(["--only", "no such notebook"]) == 1
    assert "$CROSSVIT_EXECUTION_BUDGET must be a positive number of seconds, got 'abc'" in _one_error_line(capsys)
    monkeypatch.delenv("CROSSVIT_EXECUTION_BUDGET")
    assert build.budget_from_environment() == build.DEFAULT_BUDGET_S
