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
    options (in a fixed order, the right one anywhere among them), which one is right, why, and for every option
    the reason a learner who picks it is shown: for a wrong option, the misconception that leads to it."""

    id: str
    notebook: str
    kind: str  # "choice" or "written"
    options: tuple[str, ...] = ()
    correct: int = -1  # index into options (choice questions)
    why: str = ""  # shown after a choice: what makes the right option right
    reasons: tuple[str, ...] = ()  # one per option, shown when it is picked; reasons[correct] repeats why


def _choice(question_id: str, notebook: str, options: tuple[tuple[str, str], ...], correct: int) -> Question:
    """A choice question from its (option, reason) pairs, in the order shown; ``correct`` is the right one's index."""
    texts, reasons = zip(*options)
    return Question(question_id, notebook, "choice", tuple(texts), correct, reasons[correct], tuple(reasons))


QUESTIONS: tuple[Question, ...] = (
    _choice("1.a", "01_patch_embedding", (
        ("64 and 36",
         "36 = 6 × 6 would be 16 px patches cut from the 96 px image itself. The large branch first resizes the "
         "image to 80 px, and 80 / 16 = 5 patches fit along each side."),
        ("81 and 25",
         "81 = 9 × 9 would need nine 12 px patches along each side, 108 px; the 96 px image holds 96 / 12 = 8."),
        ("64 and 25",
         "The small branch cuts the 96 px image into 96 / 12 = 8 × 8 = 64 patches; the large branch first resizes "
         "it to 80 px and cuts 80 / 16 = 5 × 5 = 25 patches. Each branch adds one CLS token on top, which is not a "
         "patch token."),
        ("65 and 26",
         "Those count each branch's CLS token too. The CLS token is added in front of the patch tokens (later in "
         "this notebook); it is not cut from the image, so 64 and 25 patch tokens remain."),
    ), 2),
    Question("1.b", "01_patch_embedding", "written"),
    _choice("2.a", "02_dual_branch_encoding", (
        ("s + l, their sum",
         "That is the seed flavour (lucidrains' vit-pytorch), which adds the two heads. This is the paper flavour "
         "(IBM's code, packaged by timm), and it averages them."),
        ("(s + l) / 2, their mean",
         "The paper flavour (timm's CrossViT) averages the two heads' logits; lucidrains' seed flavour sums them. "
         "Both are linear, so each head moves every class's logit in proportion to its own."),
        ("the larger of s and l, class by class",
         "A maximum would let one head overrule the other class by class, and is not linear. CrossViT combines "
         "the heads linearly: a sum or a mean, so both heads always count."),
        ("softmax(s) + softmax(l)",
         "The model returns logits, not probabilities: the softmax comes after the combination (in the loss, or "
         "when you want probabilities), and a sum of two softmaxes would be neither logits nor probabilities."),
    ), 1),
    Question("2.b", "02_dual_branch_encoding", "written"),
    _choice("3.a", "03_cross_attention_and_hooks", (
        ("(B, heads, 65, 65)",
         "That is a small-branch self-attention map, where each of the 65 tokens is a query. In a fusion layer "
         "only the CLS token asks: one query."),
        ("(B, heads, 1, 64)",
         "One query is right, but the keys are not the small patches alone: the large CLS, projected to the small "
         "width, is put in front of them as key 0, so it can keep part of its weight on itself."),
        ("(B, heads, 26, 65)",
         "That would let every large token read the small branch. The patch tokens never cross between the "
         "branches; only the CLS token does."),
        ("(B, heads, 1, 65)",
         "In a fusion layer only a CLS token asks. The large CLS is projected to the small branch's width and "
         "reads [itself, the small patches]: one query and 1 + 64 keys, so the map is (B, heads, 1, 1 + 64)."),
    ), 3),
    Question("3.b", "03_cross_attention_and_hooks", "written"),
    _choice("4.a", "04_attention_rollout", (
        ("uniform over all tokens",
         "With A = U (every row 1/N), U @ U = U, so (0.5 U + 0.5 I)^L = 0.5^L I + (1 - 0.5^L) U: the identity "
         "part fades and the CLS row tends to 1/N everywhere. A product of broad layers spreads the map."),
        ("all its weight on the CLS token itself",
         "The residual's identity keeps the CLS on itself, but only half of it survives each layer: in the "
         "product it shrinks as 0.5^L, and the uniform part takes over."),
        ("all its weight on one patch",
         "Uniform attention favours no token, and a product of matrices that favour none cannot single one out: "
         "every patch gets the same share."),
        ("it depends on the input image",
         "Uniform attention ignores the input: every layer's matrix is the same whatever the image, and so is "
         "their product."),
    ), 0),
    Question("4.b", "04_attention_rollout", "written"),
    _choice("5.a", "05_attributions_compared", (
        ("about 50 %: a map either points at the object or it does not",
         "Two outcomes need not be equally likely. A random map's maximal pixels land anywhere, so they land on "
         "the object about as often as the object covers the image."),
        ("0 %: a random map never points at the object",
         "A random map's maximal pixels are scattered over the whole image, the object included, so now and then "
         "they land on it by chance."),
        ("about the share of the image the object covers (here about 10 %)",
         "A random map's maximal pixels fall anywhere, so they land on the object about as often as the object "
         "covers the image. That is the bar every method must clear."),
        ("about 25 %, one class in four",
         "The pointing game asks where a map's maximum lies, not which class the model predicts: the number of "
         "classes plays no part in it."),
    ), 2),
    Question("5.b", "05_attributions_compared", "written"),
    _choice("5.c", "05_attributions_compared", (
        ("the insertion curves follow the softmax probability, which saturates at 1",
         "Not here: this notebook follows the logit (score=\"logit\"), which has no ceiling. The curves level off "
         "at the logit of the whole image, around 7, not at 1."),
        ("every method ranks the pixels in the same order",
         "The figure shows different orders: integrated gradients' insertion curve rises first, saliency's and "
         "large_rollout's much later, and the random order last."),
        ("the blurred start image already shows the model the object",
         "The blur removes the fine texture that carries the class: every insertion curve starts far below the "
         "whole image's logit, so the evidence must be put back."),
        ("a linear axis is mostly fractions after the logit is back",
         "The logit comes back after the first few percent of the pixels for every good method; the area, taken "
         "over the fraction of pixels on a linear axis, is mostly the long flat stretch after that, where all the "
         "curves agree. The early rise that tells the methods apart weighs little in it, and the figure's "
         "logarithmic axis shows it instead."),
    ), 3),
    _choice("6.a", "06_training_your_own", (
        ("0: the warm-up starts from nothing",
         "Step 0 already takes an optimiser step, and a multiplier of 0 would waste it: the trainer counts "
         "step + 1, so step 0 gets 1 / warmup_steps."),
        ("1 / 30",
         "Step 0 already takes an optimiser step, so the warm-up multiplier is (step + 1) / warmup_steps: 1/30 at "
         "step 0, 1 at step 29, then the cosine decay."),
        ("1: the warm-up starts at the peak",
         "Then there would be no warm-up at all: the multiplier rises linearly to 1 over the first warmup_steps "
         "steps, so it starts small."),
        ("30 / 300, the warm-up's share of the run",
         "The warm-up's length sets the slope of the rise, not its start: after step s the multiplier is "
         "(s + 1) / warmup_steps, whatever the length of the run."),
    ), 1),
    Question("6.b", "06_training_your_own", "written"),
    _choice("7.a", "07_imagenet_crossvit", (
        ("floor(240 / 0.875), from timm's crop_pct",
         "timm's eval transform resizes the shorter side to floor(input size / crop_pct) = floor(240 / 0.875) = "
         "274 and crops the central 240 x 240, the way the model saw its validation images."),
        ("240 + 34 px of margin for augmentation",
         "Evaluation uses no augmentation. The margin comes from the crop percentage, so it grows with the input "
         "size: 274 = floor(240 / 0.875)."),
        ("the size of the large branch's input",
         "The large branch sees 224 px, a resize of the 240 px crop made inside the model; the preprocessing "
         "knows only the model's input size, 240 px, and its crop_pct."),
        ("the photo's own height",
         "Every photo's shorter side is resized to the same 274 px, whatever its size, so the central crop always "
         "keeps the same share of it."),
    ), 0),
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
    return f"\u2717 Not this one: \u201c{q.options[choice]}\u201d. {q.reasons[choice]} Try another option."


def answer_lines(q: Question) -> list[str]:
    """The answer line of each option of choice question ``q``, as its widget shows them (:func:`feedback`: for a
    wrong option, the question's reason for it)."""
    return [feedback(q.id, i) for i in range(len(q.options))]


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
