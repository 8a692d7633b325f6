"""Questions that ask learners to predict, explain or argue, next to the code exercises.

In a notebook a question is a markdown cell tagged ``question`` that starts with ``**Question <id>**`` and states
it. A *choice* question is followed by a code cell ``exercises.ask("<id>")``: a small widget with the options that
says, once the learner picks one, whether it is right and why. A *written* question is followed by a markdown cell
for the learner's answer. The model answers and the marking rubric of every question are the teacher's material
(``docs/teacher/answer_key.md``), not part of the student notebooks.
"""

from __future__ import annotations

from dataclasses import dataclass

QUESTION_TAG = "question"


@dataclass(frozen=True)
class Question:
    """One question: its id (``"4.b"``: notebook 4, second question), its kind, and for a choice question the
    options, which one is right, and why."""

    id: str
    notebook: str
    kind: str  # "choice" or "written"
    options: tuple[str, ...] = ()
    correct: int = -1  # index into options (choice questions)
    why: str = ""  # shown after a choice: what makes the right option right


QUESTIONS: tuple[Question, ...] = (
    Question("1.a", "01_patch_embedding", "choice", (
        "64 small-branch tokens and 25 large-branch tokens",
        "64 and 36",
        "81 and 25",
        "64 and 30 (the large grid does not fit the image)",
    ), 0, "The small branch cuts the 96 px image into 96 / 12 = 8 x 8 = 64 patches; the large branch first resizes it "
          "to 80 px and cuts 80 / 16 = 5 x 5 = 25 patches. Each branch adds one CLS token on top."),
    Question("1.b", "01_patch_embedding", "written"),
    Question("2.a", "02_dual_branch_encoding", "choice", (
        "(s + l) / 2, the mean of the two heads' logits",
        "s + l, their sum",
        "the larger of s and l, class by class",
        "softmax(s) + softmax(l)",
    ), 0, "The paper flavour (timm's CrossViT) averages the two heads' logits; lucidrains' seed flavour sums them. "
          "Both are linear, so each head's logit moves the prediction in proportion."),
    Question("2.b", "02_dual_branch_encoding", "written"),
    Question("3.a", "03_cross_attention_and_hooks", "choice", (
        "query: the large CLS only; keys: [the large CLS projected to the small width, the small patch tokens]",
        "queries: every large token; keys: every small token",
        "query: the large CLS; keys: the large patch tokens",
        "queries: the small patches; keys: the large CLS",
    ), 0, "In a fusion layer only a CLS token asks. The large CLS is projected to the small branch's width and reads "
          "[itself, the small patches]: one query and 1 + N_small keys, so the map is (B, heads, 1, 1 + N_small)."),
    Question("3.b", "03_cross_attention_and_hooks", "written"),
    Question("4.a", "04_attention_rollout", "choice", (
        "uniform over all tokens",
        "all its weight on the CLS token itself",
        "all its weight on one patch",
        "it depends on the input image",
    ), 0, "With A = U (every row 1/N), U @ U = U, so (0.5 U + 0.5 I)^L = 0.5^L I + (1 - 0.5^L) U: the identity "
          "part fades and the CLS row tends to 1/N everywhere. A product of broad layers spreads the map."),
    Question("4.b", "04_attention_rollout", "written"),
    Question("5.a", "05_attributions_compared", "choice", (
        "about the share of the image the object covers (here about 9 %)",
        "about 50 %",
        "0 %",
        "about 25 %, one class in four",
    ), 0, "A random map's maximal pixels fall anywhere, so they land on the object about as often as the object "
          "covers the image. That is the bar every method must clear."),
    Question("5.b", "05_attributions_compared", "written"),
    Question("5.c", "05_attributions_compared", "choice", (
        "the model is so confident that a few object patches already give probability near 1",
        "the insertion baseline already contains the object",
        "every method ranks the pixels in the same order",
        "insertion measures the logit, which has no upper bound",
    ), 0, "Insertion follows the softmax probability of the class. The texture evidence is spread over every patch of "
          "the object, and a few inserted patches already make the model near-certain, so the curves reach 1 early "
          "for any ranking that puts some object pixels first: the metric saturates and stops telling methods "
          "apart (a curve of the logit, or ROAD, separates them better)."),
    Question("6.a", "06_training_your_own", "choice", (
        "1 / 15",
        "0",
        "1",
        "15",
    ), 0, "Step 0 already takes an optimiser step, so the warm-up multiplier is (step + 1) / warmup_steps: 1/15 at step "
          "0, 1 at step 14, then the cosine decay."),
    Question("6.b", "06_training_your_own", "written"),
    Question("7.a", "07_imagenet_crossvit", "choice", (
        "floor(240 / 0.875): the crop keeps 87.5 % of the shorter side, timm's crop_pct",
        "240 + 34 px of margin for augmentation",
        "the size of the large branch's input",
        "the photo's own height",
    ), 0, "timm's eval transform resizes the shorter side to floor(input size / crop_pct) = floor(240 / 0.875) = 274 "
          "and crops the central 240 x 240, the way the model saw its validation images."),
    Question("7.b", "07_imagenet_crossvit", "written"),
)
"""Every question of the course, in notebook order."""


def question(question_id: str) -> Question:
    for q in QUESTIONS:
        if q.id == question_id:
            return q
    raise ValueError(f"no question {question_id!r}; the questions are {', '.join(q.id for q in QUESTIONS)}")


def feedback(question_id: str, choice: int) -> str:
    """The sentence a learner gets after choosing option ``choice`` (0-based) of a choice question."""
    q = question(question_id)
    if q.kind != "choice":
        raise ValueError(f"question {question_id} is answered in writing; it has no options")
    if not 0 <= choice < len(q.options):
        raise ValueError(f"question {question_id} has options 0..{len(q.options) - 1}, got {choice}")
    if choice == q.correct:
        return f"\u2713 Right. {q.why}"
    return (f"\u2717 Not this one: \u201c{q.options[choice]}\u201d. Look again at the cells above and try another "
            "option.")


def answer_lines(q: Question) -> list[str]:
    """The answer line of each option of choice question ``q``, as its widget shows them: :func:`feedback`, and for
    a wrong option the question's reason for it (``q.reasons``, one per option) where the record has reasons and
    the feedback does not already give that one."""
    reasons = tuple(getattr(q, "reasons", ()) or ())
    lines = []
    for i, option in enumerate(q.options):
        line = feedback(q.id, i)
        if i != q.correct and i < len(reasons) and reasons[i] and reasons[i] not in line:
            line = f"\u2717 Not this one: \u201c{option}\u201d. {reasons[i]}"
        lines.append(line)
    return lines


def ask(question_id: str):  # noqa: ANN201 - a crossvit.widgets.question.QuestionWidget
    """The widget of a choice question: its options as radio buttons and a Check button; the answer line says
    whether the choice is right and why (:func:`answer_lines`). Its front end holds every option's answer line,
    so it answers in the browser, with or without a kernel (a saved notebook page, the course site)."""
    from ..widgets.question import QuestionWidget

    q = question(question_id)
    if q.kind != "choice":
        raise ValueError(f"question {question_id} is answered in writing, in the markdown cell below it")
    widget = QuestionWidget(q.id, q.options, answer_lines(q))
    widget.question = q
    return widget
