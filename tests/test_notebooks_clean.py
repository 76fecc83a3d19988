"""Every notebook in notebooks/ is committed clean — no outputs, no execution counts, no widget state
(what `nbstripout --verify` checks) — reads the test-mode variable, and defines no trpo_lab algorithm
code outside the exercise cells."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import trpo_lab
from trpo_lab import advantages, trust_region, value

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
ALGORITHM_NAMES = {name for module in (trpo_lab, trust_region, advantages, value)
                   for name in dir(module) if not name.startswith("_")}


def _notebook(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_teaching_notebooks_are_there():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_trpo_from_the_paper.ipynb", "03_training_dashboard.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_outputs_counts_or_widget_state(path: Path):
    nb = _notebook(path)
    assert "widgets" not in nb["metadata"], "widget state (plotly.js included) is stored in the metadata"
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"cell {i} has stored outputs"
            assert cell["execution_count"] is None, f"cell {i} has an execution count"
        assert not {"execution", "ExecuteTime", "collapsed", "scrolled"} & set(cell.get("metadata", {})), \
            f"cell {i} keeps execution metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_nbstripout_verify(path: Path):
    done = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"nbstripout would change {path.name}: {done.stdout}{done.stderr}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_reads_the_test_mode_variable(path: Path):
    source = "\n".join("".join(c["source"]) for c in _notebook(path)["cells"] if c["cell_type"] == "code")
    assert "TRPO_LAB_FAST" in source, "every notebook must shrink its work when TRPO_LAB_FAST=1"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_defines_no_trpo_lab_function_outside_exercises(path: Path):
    for cell in _notebook(path)["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "\n".join(line for line in "".join(cell["source"]).splitlines()
                           if not line.lstrip().startswith(("%", "!")))  # IPython magics
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in ALGORITHM_NAMES:
                decorators = {getattr(d, "id", getattr(d, "attr", None)) for d in
                              getattr(node, "decorator_list", [])}
                assert "exercise" in decorators, \
                    f"{path.name} defines {node.name}, which trpo_lab already provides: import it"


@pytest.mark.parametrize("dirt", ["outputs", "execution_count", "widgets"])
def test_the_checks_catch_a_dirty_notebook(tmp_path: Path, dirt: str):
    dirty = _notebook(NOTEBOOKS[0])
    code = next(c for c in dirty["cells"] if c["cell_type"] == "code")
    if dirt == "outputs":
        code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
    elif dirt == "execution_count":
        code["execution_count"] = 1
    else:
        dirty["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {
            "state": {}, "version_major": 2, "version_minor": 0}}
    path = tmp_path / "dirty.ipynb"
    path.write_text(json.dumps(dirty), encoding="utf-8")
    with pytest.raises(AssertionError):
        test_no_outputs_counts_or_widget_state(path)
    with pytest.raises(AssertionError):
        test_nbstripout_verify(path)
