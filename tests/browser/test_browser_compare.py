"""The update-rules compare view in a real browser: notebook 04 runs, and its sliders re-run the rules.

Opens notebooks/04_update_rules_compared.ipynb in JupyterLab (Chromium), runs all cells, waits for the
live comparison (three sliders, a table, three Plotly figures), then moves δ and PPO's clip ε with the
keyboard. After a δ move the page must draw the new δ (the metrics figure's title) and new end points
for the trust-region rules while PPO's, which δ does not touch, stay where they were; after an ε move
only PPO's end point moves. Figures are read from Plotly's graph divs by each trace's stable id (`meta`).
"""

from __future__ import annotations

import math
import re

import pytest
from lab_page import NOTEBOOK, LabNotebook

pytestmark = pytest.mark.browser

COMPARE = f"{NOTEBOOK} .trpo-compare"
FIGURES = ("slice", "histogram", "metrics")

# Each trace of one graph div, keyed by its stable id: the x and y Plotly drew.
TRACES_BY_ID_JS = """(sel) => {
  const gd = document.querySelector(sel);
  if (!gd || !gd._fullData) return null;
  const out = {};
  for (const t of gd._fullData) out[t.meta] = [Array.from(t.x || []), Array.from(t.y || [])];
  return out;
}"""


def figure(name: str) -> str:
    tag = f"{COMPARE} .trpo-compare-{name}"
    return f"{tag}.js-plotly-plot, {tag} .js-plotly-plot"


def traces(nb: LabNotebook, name: str) -> dict[str, list]:
    return nb.page.evaluate(TRACES_BY_ID_JS, figure(name)) or {}


def drawn_delta(nb: LabNotebook) -> float:
    """δ as the metrics figure's title prints it ("On one batch, δ = 0.05")."""
    title = nb.page.evaluate(
        "(sel) => { const gd = document.querySelector(sel);"
        " return gd && gd._fullLayout ? gd._fullLayout.title.text : ''; }", figure("metrics"))
    match = re.search(r"δ = ([-+0-9.e]+)", title or "")
    return float(match.group(1)) if match else math.nan


def compare_rendered(nb: LabNotebook) -> bool:
    return (all(nb.slider(label, COMPARE).count() == 1 for label in (r"^δ", r"^damping", r"^clip"))
            and all(nb.rendered_plots(figure(name)) == 1 for name in FIGURES)
            and nb.page.locator(f"{COMPARE} .trpo-compare-table table").count() == 1)


def test_compare_view_sliders_rerun_the_rules(notebook: LabNotebook) -> None:
    nb = notebook
    nb.open("04_update_rules_compared.ipynb")
    nb.run_all()
    nb.wait_until(lambda: compare_rendered(nb), "the compare view's sliders, table and figures", 120)
    nb.wait_all_executed(300)  # a later cell moves δ from Python, and the last ones train
    nb.wait_stable(30, COMPARE)
    nb.screenshot_output("0_initial", nb.page.locator(COMPARE))
    slice_before = traces(nb, "slice")
    assert {"slice:trpo", "slice:npg", "slice:pg", "slice:ppo-clip", "slice:model"} <= set(slice_before)
    delta_before = drawn_delta(nb)
    assert delta_before == pytest.approx(0.05, rel=1e-2), "cell 14 set δ = 0.05 from Python"
    table_before = nb.page.locator(f"{COMPARE} .trpo-compare-table").inner_text()

    # δ: three key presses towards the smaller radius.
    nb.press_on_slider(nb.slider(r"^δ", COMPARE), "ArrowLeft", 3)
    nb.wait_until(lambda: drawn_delta(nb) < delta_before * 0.99, "the metrics figure to draw the new δ", 60)
    nb.wait_stable(30, COMPARE)
    delta_after = drawn_delta(nb)
    assert delta_after < delta_before
    slice_delta = traces(nb, "slice")
    nb.screenshot_output("1_delta_keys", nb.page.locator(COMPARE))
    for rule in ("trpo", "npg", "pg"):
        assert slice_delta[f"slice:{rule}"] != slice_before[f"slice:{rule}"], f"{rule}'s end point stayed"
    assert slice_delta["slice:model"] != slice_before["slice:model"], "the model boundary did not shrink"
    assert slice_delta["slice:ppo-clip"] == slice_before["slice:ppo-clip"], "δ is not a PPO setting"
    assert nb.page.locator(f"{COMPARE} .trpo-compare-table").inner_text() != table_before

    # clip ε: only PPO re-runs.
    clip = nb.slider(r"^clip", COMPARE)
    key = "ArrowLeft" if nb.slider_fraction(clip) > 0.5 else "ArrowRight"
    nb.press_on_slider(clip, key, 3)
    nb.wait_until(lambda: traces(nb, "slice")["slice:ppo-clip"] != slice_delta["slice:ppo-clip"],
                  "PPO's end point to move with ε", 120)
    nb.wait_stable(60, COMPARE)
    slice_clip = traces(nb, "slice")
    nb.screenshot_output("2_clip_keys", nb.page.locator(COMPARE))
    for rule in ("trpo", "npg", "pg"):
        assert slice_clip[f"slice:{rule}"] == slice_delta[f"slice:{rule}"], f"ε moved {rule}'s end point"
    assert drawn_delta(nb) == delta_after, "moving ε must leave δ where it was"
    nb.raise_on_error()
