"""Predict-then-check questions: verdicts, the widget, validation, and the helpers that find answers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from trpo_lab.worksheet import UNANSWERED, Question, direction_of_change, first_to_reach, nearest_factor


def test_a_prediction_is_checked_against_the_experiment(capsys):
    ran = []
    q = Question("up or down?", ("up", "down"), lambda: (ran.append(1) or "down", "it went down"))
    wrong = q.check("up")
    assert ran and wrong.answer == "down" and not wrong.correct and wrong.answered
    assert "✘ you predicted 'up'; the answer is 'down'" in capsys.readouterr().out
    q.widget.value = "down"                       # the widget is read when no prediction is passed
    right = q.check()
    assert right.correct and "✔" in str(right) and "evidence: it went down" in str(right)
    q.widget.value = UNANSWERED
    shown = q.check()
    assert not shown.answered and "no prediction made" in str(shown)


def test_bad_predictions_and_options_are_refused():
    q = Question("?", ("yes", "no"), lambda: ("yes", ""))
    with pytest.raises(ValueError, match="prediction = 'maybe' is not allowed: must be one of"):
        q.check("maybe")
    with pytest.raises(ValueError, match="at least two distinct"):
        Question("?", ("yes", "yes"), lambda: ("yes", ""))
    with pytest.raises(RuntimeError, match="not one of the options"):
        Question("?", ("a", "b"), lambda: ("c", "")).check()


def test_helpers():
    assert direction_of_change(1.0, 2.0) == "up" and direction_of_change(2.0, 1.0) == "down"
    assert direction_of_change(1.0, 1.0 + 1e-12) == "same"
    factors = {"×½": 0.5, "×1/√2": 2**-0.5, "×1": 1.0}
    assert nearest_factor(0.7072, factors) == "×1/√2" and nearest_factor(0.49, factors) == "×½"
    rec = lambda steps, ret: SimpleNamespace(steps=steps, mean_return=ret)  # noqa: E731
    runs = {"a": [rec(100, 10.0), rec(200, 480.0)], "b": [rec(100, math.nan), rec(150, 500.0)],
            "c": [rec(100, 20.0)]}
    answer, evidence = first_to_reach(runs, 475)
    assert answer == "b" and "a: 200 steps" in evidence and "c: not reached" in evidence
    assert first_to_reach(runs, 1000)[0] == "none of them"
