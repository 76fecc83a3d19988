"""What every exercise check shares: results with a verdict, the per-exercise reference switch, and the
guard that fails a student's answer which calls trpo_lab's own implementation of the exercise.

Reference switch. `TRPO_LAB_SOLUTIONS` names the exercises whose cells run the reference solution from
`trpo_lab.solutions` instead of the student's code: `1` / `all` for every exercise, or a comma list
(`TRPO_LAB_SOLUTIONS=gae,line_search`; a name that is no exercise is an error); `use_reference("gae")`
does the same from a notebook cell. A swapped cell says so loudly, and its check never passes:
interactively it reports "NOT GRADED" and lets Run All go on (a stuck student runs the rest of the
notebook); under nbgrader (`NBGRADER_EXECUTION` is set by `nbgrader autograde` / `validate`) it fails,
so the exercise scores 0. Test mode (`TRPO_LAB_FAST=1`) never swaps anything in.

Guard. While a check runs the student's function, a profile hook watches for calls into the trpo_lab
functions that solve the exercise (its reference, and the library's own version); one such call fails
the check with a message naming the function.
"""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

SOLUTIONS_VAR = "TRPO_LAB_SOLUTIONS"
_ALL = ("1", "all", "true", "yes", "on")
_NONE = ("", "0", "false", "no", "off", "none")
_chosen_in_notebook: set[str] = set()


# ───────────────────────────── the reference switch ─────────────────────────────


def reference_chosen(name: str) -> bool:
    """True when the exercise `name` should run the reference solution: named (or `all`) in
    TRPO_LAB_SOLUTIONS, or passed to `use_reference`."""
    if name in _chosen_in_notebook or "all" in _chosen_in_notebook:
        return True
    value = os.environ.get(SOLUTIONS_VAR, "").strip().lower()
    if value in _NONE:
        return False
    if value in _ALL:
        return True
    chosen = {part.strip() for part in value.split(",")} - {""}
    unknown = sorted(chosen - set(EXERCISES))
    if unknown:  # a typo must not silently leave the student's code (or the reference) in place
        raise ValueError(f"{SOLUTIONS_VAR} = {os.environ[SOLUTIONS_VAR]!r}: no exercise named "
                         f"{', '.join(map(repr, unknown))}; allowed: 1 / all (every exercise), 0 / none, or "
                         f"a comma list of {list(EXERCISES)}")
    return name.lower() in chosen


def solutions_enabled() -> bool:
    """True when every exercise runs its reference (TRPO_LAB_SOLUTIONS=1 / all)."""
    return "all" in _chosen_in_notebook or os.environ.get(SOLUTIONS_VAR, "").strip().lower() in _ALL


EXERCISES = ("surrogate", "mean_kl", "conjugate_gradient", "fisher_vector_product", "step_scale",
             "line_search", "gae", "trpo_update")
"""The exercises of notebook 01, by function name (each has a reference in `trpo_lab.solutions`)."""


def use_reference(*names: str) -> None:
    """Run the reference solution for these exercises (by function name, or "all"); `use_reference()`
    with no names switches every exercise back to your own code. The swapped exercises score 0."""
    for name in names:
        if name != "all" and name not in EXERCISES:
            raise ValueError(f"use_reference: no exercise named {name!r}; allowed: 'all' or one of "
                             f"{list(EXERCISES)}")
    if not names:
        _chosen_in_notebook.clear()
    _chosen_in_notebook.update(names)


def grading() -> bool:
    """True inside `nbgrader autograde` or `nbgrader validate`."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def _solution(name: str) -> Callable:
    try:
        from . import solutions
    except ImportError as e:
        raise RuntimeError(
            f"the reference for {name} is switched on ({SOLUTIONS_VAR} or use_reference) but "
            f"trpo_lab/solutions.py is not part of this copy of the lab: write {name} yourself") from e
    if not hasattr(solutions, name):
        raise RuntimeError(f"trpo_lab.solutions has no solution named {name!r}")
    return getattr(solutions, name)


def exercise(fn: Callable) -> Callable:
    """Decorate an exercise cell's function: returns it unchanged (the student's work), or — loudly —
    the reference solution of the same name when `reference_chosen(fn.__name__)`."""
    if not reference_chosen(fn.__name__):
        return fn
    reference = _solution(fn.__name__)
    line = "!" * 78
    print(f"{line}\n!! {fn.__name__}: RUNNING THE REFERENCE SOLUTION, NOT YOUR CODE "
          f"({SOLUTIONS_VAR} / use_reference).\n!! This exercise is NOT GRADED and scores 0; the rest "
          f"of the notebook runs on.\n{line}")
    return reference


# ───────────────────────────── check results ─────────────────────────────


@dataclass
class CheckResult:
    """What a check found: truthy when every case passed; otherwise `problem` explains the first failure.
    `reference_used` is set when the checked function was the switched-in reference solution."""

    name: str
    cases: int = 0
    problem: str | None = None
    notes: list[str] = field(default_factory=list)
    reference_used: bool = False

    @property
    def passed(self) -> bool:
        return self.problem is None

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        if self.reference_used:
            text = f"✘ {self.name}: NOT GRADED\n  {self.problem}"
        elif self.passed:
            text = f"✔ {self.name}: all {self.cases} checks passed"
        else:
            text = f"✘ {self.name}: failed after {self.cases} passing checks\n  {self.problem}"
        return "\n".join([text, *(f"  note: {n}" for n in self.notes)])

    __repr__ = __str__

    def require(self) -> CheckResult:
        """The graded line of a check cell: raise AssertionError with the explanation unless the check
        passed. A switched-in reference raises under nbgrader (0 points) and only warns otherwise, so
        a stuck student's Run All goes on."""
        if self.passed:
            return self
        if self.reference_used and not grading():
            print("(not raised: outside nbgrader a switched-in reference lets the notebook run on)")
            return self
        raise AssertionError(str(self))


class Failed(Exception):
    """A check case failed; the message explains it."""


# ───────────────────────────── running the student's code ─────────────────────────────

_forbidden: contextvars.ContextVar[dict | None] = contextvars.ContextVar("forbidden", default=None)


def _codes(functions: Iterable[Callable]) -> dict:
    codes = {}
    for fn in functions:
        fn = getattr(fn, "__wrapped__", fn)
        code = getattr(fn, "__code__", None)
        if code is not None:
            codes[code] = f"{fn.__module__}.{fn.__qualname__}"
    return codes


def call(fn: Callable, case: str, *args, **kwargs):
    """Run the student's `fn`; an exception or a call into a forbidden trpo_lab function fails the case."""
    forbidden = _forbidden.get() or {}
    hits: list[str] = []

    def profile(frame, event, arg):  # noqa: ARG001
        if event == "call" and frame.f_code in forbidden and not hits:
            hits.append(forbidden[frame.f_code])

    previous = sys.getprofile()
    sys.setprofile(profile if forbidden else previous)
    try:
        out = fn(*args, **kwargs)
        error = None
    except Exception as e:  # the student's code: report, don't crash the check
        out, error = None, e
    finally:
        sys.setprofile(previous)
    if hits:
        raise Failed(f"{case}: your function calls trpo_lab's own implementation ({hits[0]}). The "
                     "exercise is to write it yourself, so it scores 0: use only the building blocks "
                     "the exercise names")
    if error is not None:
        raise Failed(f"{case}: your function raised {type(error).__name__}: {error}") from error
    return out


def as_vector(out, case: str, like: Tensor, what: str) -> Tensor:
    if isinstance(out, tuple) and out and isinstance(out[0], Tensor):
        out = out[0]
    out = getattr(out, "x", out)  # a CGResult-like object
    if not isinstance(out, Tensor):
        raise Failed(f"{case}: expected {what} as a torch.Tensor, got {type(out).__name__}")
    if out.shape != like.shape:
        raise Failed(f"{case}: expected {what} of shape {tuple(like.shape)}, got {tuple(out.shape)}")
    out = out.detach().to(like.dtype)
    if not torch.isfinite(out).all():
        raise Failed(f"{case}: {what} contains NaN or infinite values")
    return out


def close(a: Tensor, b: Tensor, rtol: float = 1e-7) -> bool:
    return bool((a - b).norm() <= rtol * max(1.0, float(b.norm())))


def run(name: str, student: Callable, cases: Callable[[CheckResult], None], verbose: bool,
        forbidden: Callable[[], Iterable[Callable]]) -> CheckResult:
    """Run a check's cases on `student` with the guard on the functions `forbidden()` lists."""
    result = CheckResult(name)
    reference = getattr(_solutions_module(), name, None)
    if reference is not None and getattr(student, "__wrapped__", student) is reference:
        result.reference_used = True
        result.problem = (f"this is the reference solution switched on by {SOLUTIONS_VAR} / "
                          f"use_reference, not your code: {name} scores 0")
        if verbose:
            print(result)
        return result
    token = _forbidden.set(_codes([*forbidden(), *([reference] if reference else [])]))
    try:
        cases(result)
    except Failed as e:
        result.problem = str(e)
    finally:
        _forbidden.reset(token)
    if verbose:
        print(result)
    return result


def _solutions_module():
    try:
        from . import solutions
    except ImportError:
        return None
    return solutions
