"""Predict-then-check questions for the explorer and dashboard notebooks.

A `Question` holds the text, the allowed answers and a function that finds the true answer from the
explorer's or the trainer's state (with the evidence). The student predicts first — in the question's
widget (`question.widget`, displayed by putting the question last in a cell) or in a variable — and
`question.check(prediction)` then runs the experiment and says whether the prediction was right. An
unanswered question is not an error: the check shows the answer and the evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import ipywidgets as widgets

UNANSWERED = "?"


@dataclass
class Verdict:
    """The outcome of one question: the true answer, the evidence, and the student's prediction."""

    question: str
    answer: str
    evidence: str
    prediction: str = UNANSWERED

    @property
    def answered(self) -> bool:
        return self.prediction != UNANSWERED

    @property
    def correct(self) -> bool:
        return self.prediction == self.answer

    def __str__(self) -> str:
        if not self.answered:
            head = f"(no prediction made) answer: {self.answer}"
        elif self.correct:
            head = f"✔ you predicted {self.prediction!r}: right"
        else:
            head = f"✘ you predicted {self.prediction!r}; the answer is {self.answer!r}"
        return f"{self.question}\n  {head}\n  evidence: {self.evidence}"

    __repr__ = __str__


@dataclass
class Question:
    """A question with fixed options; `find_answer()` returns (answer, evidence) from live state."""

    text: str
    options: Sequence[str]
    find_answer: Callable[[], tuple[str, str]]
    _widget: widgets.ToggleButtons | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.options = tuple(self.options)
        if len(set(self.options)) < 2 or UNANSWERED in self.options:
            raise ValueError(f"options = {self.options!r} is not allowed: give at least two distinct "
                             f"answers, none of them {UNANSWERED!r}")

    @property
    def widget(self) -> widgets.ToggleButtons:
        """Buttons for the prediction; starts unanswered."""
        if self._widget is None:
            self._widget = widgets.ToggleButtons(options=(UNANSWERED, *self.options), value=UNANSWERED,
                                                 description="prediction", style={"button_width": "auto"})
        return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(widgets.VBox([widgets.HTML(f"<b>Predict:</b> {self.text}"), self.widget]))

    def check(self, prediction: str | None = None) -> Verdict:
        """Run the experiment and compare with `prediction` (or the widget's choice when None)."""
        chosen = self.widget.value if prediction is None else str(prediction).strip()
        if chosen not in (UNANSWERED, *self.options):
            raise ValueError(f"prediction = {prediction!r} is not allowed: must be one of "
                             f"{self.options} (or {UNANSWERED!r} for no prediction)")
        answer, evidence = self.find_answer()
        if answer not in self.options:
            raise RuntimeError(f"the answer {answer!r} is not one of the options {self.options}")
        verdict = Verdict(self.text, answer, evidence, chosen)
        print(verdict)
        return verdict


def direction_of_change(before: float, after: float, rtol: float = 1e-9) -> str:
    """'up', 'down' or 'same' (within a relative tolerance)."""
    if abs(after - before) <= rtol * max(abs(before), abs(after), 1e-300):
        return "same"
    return "up" if after > before else "down"


def nearest_factor(ratio: float, factors: dict[str, float]) -> str:
    """The label of the factor closest to `ratio` on a log scale."""
    import math

    return min(factors, key=lambda k: abs(math.log(ratio) - math.log(factors[k])))


def first_to_reach(histories: dict[str, Sequence], target: float, none: str = "none of them"
                   ) -> tuple[str, str]:
    """Which run's mean return reaches `target` in the fewest environment steps (from training
    records with `.steps` and `.mean_return`), and the evidence."""
    reached = {}
    for label, history in histories.items():
        steps = next((r.steps for r in history if r.mean_return >= target), None)
        if steps is not None:
            reached[label] = steps
    evidence = ", ".join(f"{label}: {reached[label]:,} steps" if label in reached else f"{label}: not reached"
                         for label in histories)
    if not reached:
        return none, f"no run reached a mean return of {target:g} ({evidence})"
    return min(reached, key=reached.get), f"steps to a mean return of {target:g}: {evidence}"
