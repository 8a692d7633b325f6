"""The widget of a choice question: its options, a Check button and the answer line, answered in the browser
(``question.js``) from one answer line per option packed here, so that it works without a kernel (a saved
notebook page, the course site). :func:`crossvit.exercises.questions.ask` builds it."""

from __future__ import annotations

from collections.abc import Sequence

import anywidget
import traitlets

from .base import HERE


class QuestionWidget(anywidget.AnyWidget):
    """A choice question: ``options`` (their texts), ``messages`` (the answer line shown for each option: right
    or not, and why), ``choice`` (the option picked, None before any) and ``answer`` (the line shown after the
    last Check). :meth:`check` presses Check from Python; the front end does the same in the browser."""

    _esm = (HERE / "question.js").read_text(encoding="utf-8")  # text, not a path: see crossvit.widgets.base._Explorer
    _css = (HERE / "question.css").read_text(encoding="utf-8")
    question_id = traitlets.Unicode().tag(sync=True)
    options = traitlets.List(traitlets.Unicode()).tag(sync=True)
    messages = traitlets.List(traitlets.Unicode()).tag(sync=True)
    choice = traitlets.Int(None, allow_none=True).tag(sync=True)
    answer = traitlets.Unicode("").tag(sync=True)

    def __init__(self, question_id: str, options: Sequence[str], messages: Sequence[str]) -> None:
        if len(options) != len(messages) or len(options) < 2:
            raise ValueError(f"a choice question needs two or more options and one answer line per option, got "
                             f"{len(options)} options and {len(messages)} lines")
        super().__init__(question_id=question_id, options=list(options), messages=list(messages))

    @traitlets.validate("choice")
    def _check_choice(self, proposal: dict) -> int | None:
        value = proposal["value"]
        if value is not None and not 0 <= value < len(self.options):
            raise traitlets.TraitError(f"choice must be an option index in [0, {len(self.options)}), got {value}")
        return value

    def check(self) -> str:
        """Press Check: the answer line for the option picked ("Pick an option first." when none is)."""
        self.answer = "Pick an option first." if self.choice is None else self.messages[self.choice]
        return self.answer
