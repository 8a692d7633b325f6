"""Questions that make learners think: at least two per notebook, tagged ``question``; a choice question's widget
says whether the choice is right and why; the answer key with the rubric is the teacher's, not the notebooks'."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from crossvit.exercises import questions
from crossvit.exercises.questions import QUESTIONS, ask, feedback

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ANSWER_KEY = ROOT / "docs" / "teacher" / "answer_key.md"


def question_cells(nb) -> list[tuple[int, str]]:
    out = []
    for index, cell in enumerate(nb.cells):
        if questions.QUESTION_TAG in cell.metadata.get("tags", []):
            match = re.match(r"\*\*Question (\d\.[a-z])\*\* \(([^)]+)\)\. \S", cell.source)
            assert cell.cell_type == "markdown" and match, f"cell {index}: **Question <id>** (kind). <question>"
            out.append((index, match.group(1)))
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_asks_at_least_two_questions(path):
    nb = nbformat.read(path, as_version=4)
    found = question_cells(nb)
    assert len(found) >= 2
    assert [qid for _, qid in found] == [q.id for q in QUESTIONS if q.notebook == path.stem]
    for index, qid in found:
        q = questions.question(qid)
        answer_cell = nb.cells[index + 1]
        if q.kind == "choice":
            assert answer_cell.cell_type == "code" and answer_cell.source == f'exercises.ask("{qid}")'
        else:
            assert answer_cell.cell_type == "markdown" and answer_cell.source.startswith("*Your answer:*")
        assert "model answer" not in nb.cells[index].source.lower()  # the key is the teacher's, not here


def test_fourteen_questions_or_more_and_an_answer_key_for_each():
    assert len(QUESTIONS) >= 14 and len({q.id for q in QUESTIONS}) == len(QUESTIONS)
    key = ANSWER_KEY.read_text(encoding="utf-8")
    for q in QUESTIONS:
        entry = key.split(f"**Question {q.id}** ({q.kind})", 1)
        assert len(entry) == 2, f"{ANSWER_KEY.name} has no entry for question {q.id}"
        text = entry[1].split("**Question ", 1)[0]
        if q.kind == "choice":
            assert 2 <= len(q.options) and 0 <= q.correct < len(q.options) and len(q.why) > 40
            right = q.options[q.correct].split(",")[0].split(":")[0]
            assert right[:20] in text, f"question {q.id}: the key must name the right option"
        else:
            assert "*Model answer:*" in text and "*Rubric:*" in text


def test_feedback_says_right_and_why_or_try_again():
    q = next(q for q in QUESTIONS if q.kind == "choice")
    right = feedback(q.id, q.correct)
    assert right.startswith("\u2713 Right.") and q.why in right
    wrong = feedback(q.id, (q.correct + 1) % len(q.options))
    assert wrong.startswith("\u2717 Not this one") and q.why not in wrong
    with pytest.raises(ValueError, match="options 0"):
        feedback(q.id, len(q.options))
    written = next(q for q in QUESTIONS if q.kind == "written")
    with pytest.raises(ValueError, match="in writing"):
        feedback(written.id, 0)


def test_the_widget_checks_a_choice():
    q = next(q for q in QUESTIONS if q.kind == "choice")
    widget = ask(q.id)
    assert widget.check() == "Pick an option first."
    widget.choice = q.correct
    assert widget.check().startswith("\u2713 Right.")
    widget.choice = (q.correct + 1) % len(q.options)
    assert widget.check().startswith("\u2717")
