"""A class run with nbgrader on notebook 01, as a teacher would: generate the student version, collect
submissions, autograde them, generate feedback, and read the gradebook.

Submissions (one student each): the reference solutions typed in (full marks); for every exercise, one
planted mistake (fewer points for exactly that exercise, the check's explanation in the feedback); and a
student who bypasses two exercises, one by calling trpo_lab's own implementation and one with the
reference switch (0 for exactly those two, with the reason in the feedback).
"""

from __future__ import annotations

import ast
import html
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trpo_lab import solutions
from trpo_lab.grading import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_trpo_from_the_paper.ipynb"
NAME = NOTEBOOK.stem
STUB = "# YOUR CODE HERE\n    raise NotImplementedError()"

# exercise: (text in the reference body, replacement planting the mistake, words of the explanation)
MISTAKES = {
    "surrogate": ("torch.exp(log_prob - problem.old_log_prob)", "torch.exp(problem.old_log_prob - log_prob)",
                  "the ratio is upside down"),
    "mean_kl": ("kl_divergence(problem.old_distribution(), problem.distribution_at(theta))",
                "kl_divergence(problem.distribution_at(theta), problem.old_distribution())",
                "you computed KL(π_θ ‖ π_old)"),
    "conjugate_gradient": ("r = r - alpha * Ap", "r = r + alpha * Ap",
                           "the residual update has the wrong sign"),
    "fisher_vector_product": ("return fv + damping * v", "return fv", "you forgot the damping"),
    "step_scale": ("torch.sqrt(2 * max_kl / sAs)", "torch.sqrt(max_kl / sAs)", "the factor 2 is missing"),
    "line_search": ("if kl <= max_kl and gain > 0:", "if gain > 0:", "whose mean KL exceeds δ"),
    "gae": ("gamma * lam * (1.0", "gamma * (1.0", "λ is missing"),
    "trpo_update": ("return line_search(problem, beta * s, max_kl, backtrack_coef, backtrack_iters)",
                    "return problem.theta_old + beta * s", "without the line search"),
}


def solution_body(name: str) -> str:
    """The body of `solutions.<name>` after its docstring, indented for the notebook's function."""
    source = textwrap.dedent(inspect.getsource(getattr(solutions, name)))
    fn = ast.parse(source).body[0]
    lines = source.split("\n")[fn.body[1].lineno - 1:]
    return "\n".join(lines).strip("\n").removeprefix("    ")


def cell_source(cell: dict) -> str:
    return "".join(cell["source"])


def test_the_solution_cells_hold_the_reference_solutions():
    # solutions.py (the per-exercise fallback) and the notebook's solution cells stay the same code
    nb = json.loads(NOTEBOOK.read_text())
    found = {}
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("solution"):
            source = cell_source(cell)
            inside = source.split("### BEGIN SOLUTION\n")[1].split("\n    ### END SOLUTION")[0]
            found[meta["grade_id"].removeprefix("exercise_")] = inside.strip("\n").removeprefix("    ")
    assert set(found) == set(EXERCISES)
    for name in EXERCISES:
        assert found[name] == solution_body(name), name
    graded = [c["metadata"]["nbgrader"] for c in nb["cells"]
              if c["metadata"].get("nbgrader", {}).get("grade")]
    assert [g["grade_id"] for g in graded] == [f"check_{n}" for n in EXERCISES]
    assert all(g["points"] > 0 and g["locked"] for g in graded)


def test_the_teaching_guide_states_the_points_the_notebook_gives():
    nb = json.loads(NOTEBOOK.read_text())
    total = sum(c["metadata"]["nbgrader"]["points"] for c in nb["cells"]
                if c["metadata"].get("nbgrader", {}).get("grade"))
    guide = (ROOT / "docs" / "teaching.md").read_text()
    assert f"8 graded exercises, {total} points" in guide and f"{total}/{total}" in guide


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    # nbgrader runs `alembic` (its database migrations) from PATH: the environment's scripts come first
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "TRPO_LAB_FAST": "1", "PATH": path}
    env.pop("TRPO_LAB_SOLUTIONS", None)
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args, "--debug"], cwd=course, env=env,
                          capture_output=True, text=True, timeout=3600)  # a hang guard
    assert done.returncode == 0, \
        f"nbgrader {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def _submission(student_nb: dict, bodies: dict[str, str], first_cell_extra: str = "") -> dict:
    nb = json.loads(json.dumps(student_nb))
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("solution"):
            name = meta["grade_id"].removeprefix("exercise_")
            source = cell_source(cell)
            assert STUB in source, source
            cell["source"] = source.replace(STUB, bodies[name])
    if first_cell_extra:
        first = next(c for c in nb["cells"] if c["cell_type"] == "code")
        first["source"] = cell_source(first) + "\n" + first_cell_extra
    return nb


@pytest.mark.slow
def test_a_class_graded_with_nbgrader(tmp_path: Path):
    pytest.importorskip("nbgrader")
    course = tmp_path / "course"
    (course / "source" / "ps1").mkdir(parents=True)
    shutil.copy(NOTEBOOK, course / "source" / "ps1" / NOTEBOOK.name)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.CourseDirectory.course_id = 'trpo'\n"
        "c.Execute.timeout = 900\n")

    # the student version: no solution code, no hidden checks, stubs to fill in
    _nbgrader(course, "generate_assignment", "ps1", "--force")
    released = json.loads((course / "release" / "ps1" / NOTEBOOK.name).read_text())
    text = "\n".join(cell_source(c) for c in released["cells"])
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert text.count("raise NotImplementedError()") == len(EXERCISES)
    for name in EXERCISES:
        for line in solution_body(name).splitlines():
            if len(line.strip()) > 25:
                assert line.strip() not in text, f"solution code of {name} in the student version: {line}"
    assert "seed=" not in "".join(cell_source(c) for c in released["cells"]
                                  if c["metadata"].get("nbgrader", {}).get("grade"))

    reference = {name: solution_body(name) for name in EXERCISES}
    students = {"reference": _submission(released, reference)}
    for name, (old, new, _) in MISTAKES.items():
        assert old in reference[name], (name, old)
        planted = {**reference, name: reference[name].replace(old, new)}
        students[f"mistake_{name}"] = _submission(released, planted)
    students["bypass"] = _submission(
        released, {**reference, "conjugate_gradient": "return tr.conjugate_gradient(Av, b, iters, tol).x"},
        first_cell_extra='use_reference("gae")')
    for student, nb in students.items():
        folder = course / "submitted" / student / "ps1"
        folder.mkdir(parents=True)
        (folder / NOTEBOOK.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False))

    _nbgrader(course, "autograde", "ps1", "--force")
    _nbgrader(course, "generate_feedback", "ps1", "--force")

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        def scores(student: str) -> dict[str, tuple[float, float]]:
            nb = gb.find_submission_notebook(NAME, "ps1", student)
            return {g.name.removeprefix("check_"): (g.score, g.max_score) for g in nb.grades if g.auto_score
                    is not None or g.max_score}

        def feedback(student: str) -> str:
            page = course / "feedback" / student / "ps1" / f"{NAME}.html"
            return html.unescape(page.read_text())

        full = scores("reference")
        assert set(full) == set(EXERCISES)
        assert all(score == top > 0 for score, top in full.values()), full

        for name, (_, _, words) in MISTAKES.items():
            got = scores(f"mistake_{name}")
            assert got[name][0] < got[name][1], (name, got[name])
            assert {other: s for other, s in got.items() if other != name} == \
                {other: s for other, s in full.items() if other != name}, (name, got)
            assert words in feedback(f"mistake_{name}"), (name, words)

        bypass = scores("bypass")
        assert bypass["conjugate_gradient"][0] == 0 and bypass["gae"][0] == 0
        assert all(bypass[n] == full[n] for n in EXERCISES if n not in ("conjugate_gradient", "gae"))
        page = feedback("bypass")
        assert "calls trpo_lab's own implementation (trpo_lab.cg.conjugate_gradient)" in page
        assert "NOT GRADED" in page and "gae scores 0" in page
