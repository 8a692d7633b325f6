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


def test_feedback_says_right_and_why_or_names_the_misconception():
    for q in (q for q in QUESTIONS if q.kind == "choice"):
        right = feedback(q.id, q.correct)
        assert right.startswith("\u2713 Right.") and q.why in right
        for choice in range(len(q.options)):
            if choice != q.correct:
                wrong = feedback(q.id, choice)
                assert wrong.startswith("\u2717 Not this one") and q.reasons[choice] in wrong and q.why not in wrong
    q = next(q for q in QUESTIONS if q.kind == "choice")
    with pytest.raises(ValueError, match="options 0"):
        feedback(q.id, len(q.options))
    written = next(q for q in QUESTIONS if q.kind == "written")
    with pytest.raises(ValueError, match="in writing"):
        feedback(written.id, 0)


def test_every_option_has_its_own_reason_and_the_right_one_moves():
    """Issue 30 item 1: a reason per option (for a wrong one, the misconception behind it), and the right option's
    position varies over the course instead of always being the first."""
    choice = [q for q in QUESTIONS if q.kind == "choice"]
    for q in choice:
        assert len(q.reasons) == len(q.options) >= 3 and len(set(q.reasons)) == len(q.reasons), q.id
        assert q.reasons[q.correct] == q.why
        assert all(len(reason) > 40 for reason in q.reasons), q.id
        assert len(set(q.options)) == len(q.options), q.id
    positions = [q.correct for q in choice]
    assert len(set(positions)) >= 3 and max(positions.count(p) for p in set(positions)) <= len(choice) // 2, positions
    assert all(not q.reasons for q in QUESTIONS if q.kind == "written")


def test_the_right_option_does_not_stand_out_by_its_length():
    """A right option written out with its explanation, beside short wrong ones, gives itself away: it may be at
    most a fifth longer than the longest wrong option of its question (the why says the rest)."""
    for q in QUESTIONS:
        if q.kind == "choice":
            longest_wrong = max(len(option) for k, option in enumerate(q.options) if k != q.correct)
            assert len(q.options[q.correct]) <= 1.2 * longest_wrong, (q.id, q.options[q.correct])


# A prediction is worth asking only before it is answered: for each "predict" question, what in a cell (of its own
# notebook or an earlier one) gives the answer away. Each must come after the question.
GIVEAWAYS = {
    "1.a": ("num_patches(", "(8 × 8)", "8 × 8 = 64", "grid {rows}x{cols}"),
    "2.a": ("plot_architecture(", "**averages**", "mean of the two heads"),
    "3.a": ("attention_sites(model)", "1 + N_other)", "(B, heads, 1,"),
    "4.a": ("spread evenly", "nearly the same blend"),
    "5.a": ("as often as the object covers",),
    "6.a": ("1 / `warmup_steps`", "(step + 1) / warmup_steps"),
    "7.a": ("⌊240 / 0.875⌋", "274 px"),
}


def test_a_prediction_is_asked_before_the_cell_that_answers_it():
    cells = []  # (notebook, index, source) over the whole course, in order
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        cells += [(path.stem, i, " ".join(cell.source.split())) for i, cell in enumerate(nb.cells)]  # unwrapped
    predict = {qid for path in NOTEBOOKS for _, qid in question_cells(nbformat.read(path, as_version=4))
               if "(predict" in next(c for c in nbformat.read(path, as_version=4).cells
                                     if c.source.startswith(f"**Question {qid}**")).source}
    assert predict == set(GIVEAWAYS)
    for qid, giveaways in GIVEAWAYS.items():
        asked = next(k for k, (_, _, source) in enumerate(cells) if source.startswith(f"**Question {qid}**"))
        for stem, index, source in cells[:asked]:
            for giveaway in giveaways:
                assert giveaway not in source, f"question {qid} is answered before it is asked: {stem} cell {index}"
        assert any(g in source for _, _, source in cells[asked:] for g in giveaways), qid  # and answered later


def test_the_widget_checks_a_choice():
    q = next(q for q in QUESTIONS if q.kind == "choice")
    widget = ask(q.id)
    assert widget.check() == "Pick an option first."
    widget.choice = q.correct
    assert widget.check().startswith("\u2713 Right.")
    widget.choice = (q.correct + 1) % len(q.options)
    assert widget.check().startswith("\u2717")
