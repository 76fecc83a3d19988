"""The training dashboard in a real browser: the learning curve grows, in place, while TRPO trains.

Opens notebooks/03_training_dashboard.ipynb in JupyterLab (Chromium) and waits for an idle kernel. It
runs the notebook in two steps with the Run menu: every cell above the training cell (the one that feeds
`dashboard.callback(...)`), then, once the live dashboard is drawn, that cell and all below. (With a
single Run All the fast-mode training can finish before the browser has drawn the new widget, and there
would be nothing left to watch grow.)

A recorder in the page samples the live dashboard (the first Plotly FigureWidget whose traces are tagged
`meta.column = "mean_return"`) after every redraw and every 50 ms: how many points each run's return
curve has, which graph div shows it, whether the kernel is busy. Every run's curve must have been drawn
part-way, at two lengths at least, while the kernel was still busy, in the same graph div (updated in
place, not redrawn as a new output). Screenshots: the empty dashboard, the dashboard while training,
and after the notebook has finished.
"""

from __future__ import annotations

import json

import pytest
from lab_page import NOTEBOOK, LabNotebook

pytestmark = pytest.mark.browser

DASHBOARD_NOTEBOOK = "03_training_dashboard.ipynb"
TRAINING_CELL = "dashboard.callback("  # the cell that trains while the dashboard is on screen
# FigureWidgets draw into their own div; a static figure's div is JupyterLab's `jp-RenderedPlotly`.
WIDGET_PLOTS = f"{NOTEBOOK} .js-plotly-plot:not(.jp-RenderedPlotly)"

# Installs window.__curve: samples of the live return curve (one entry per change of what is seen).
RECORDER_JS = """(q) => {
  const samples = (window.__curve = []);
  let next = 1;
  const sample = () => {
    const gd = Array.from(document.querySelectorAll(q.plots)).find((g) =>
      (g._fullData || []).some((t) => t.meta && t.meta.column === "mean_return"));
    const indicator = document.querySelector(q.indicator);
    const status = indicator ? indicator.getAttribute("data-status") : null;
    if (!gd) return;
    if (!gd.__trpoId) {  // first sight: also sample after every redraw Plotly makes of this div
      gd.__trpoId = next++;
      gd.on("plotly_afterplot", sample);
    }
    const counts = gd._fullData.filter((t) => t.meta && t.meta.column === "mean_return")
      .map((t) => (t.x ? t.x.length : 0));
    const key = [gd.__trpoId, counts.join(","), status].join("|");
    if (!samples.length || samples[samples.length - 1].key !== key)
      samples.push({ t: performance.now(), div: gd.__trpoId, counts, status, key });
  };
  window.__curveTimer = setInterval(sample, 50);
}"""


def curve_samples(nb: LabNotebook) -> list[dict]:
    return nb.page.evaluate("() => window.__curve || []")


def curve_points(nb: LabNotebook) -> int:
    samples = curve_samples(nb)
    return sum(samples[-1]["counts"]) if samples else 0


def test_dashboard_learning_curve_grows_while_training(notebook: LabNotebook) -> None:
    nb = notebook
    nb.open(DASHBOARD_NOTEBOOK)
    nb.page.evaluate(
        RECORDER_JS, {"plots": WIDGET_PLOTS, "indicator": f"{NOTEBOOK} .jp-Notebook-ExecutionIndicator"}
    )
    nb.select_cell(TRAINING_CELL)
    nb.run_menu("Run All Above Selected Cell")
    nb.wait_all_executed(60, every_cell=False)
    nb.wait_until(lambda: curve_samples(nb), "the live dashboard to be drawn", 60)
    nb.timeline.mark("dashboard_drawn")
    nb.screenshot("0_before_training")
    assert curve_points(nb) == 0, "the dashboard should start empty"
    nb.run_menu("Run Selected Cell and All Below")
    nb.timeline.mark("training_started")
    nb.wait_until(lambda: curve_points(nb) >= 2, "the live return curve to have two points", 90)
    nb.timeline.mark("curve_growing")
    nb.screenshot("1_training")
    nb.wait_all_executed(150)
    nb.page.locator(WIDGET_PLOTS).first.scroll_into_view_if_needed()
    nb.screenshot("2_trained")
    samples = curve_samples(nb)
    nb.page.evaluate("() => clearInterval(window.__curveTimer)")
    (nb.shots / "curve_samples.json").write_text(json.dumps(samples, indent=1))
    print(f"\ndashboard timeline: {nb.timeline.marks}; {len(samples)} curve samples")

    final = samples[-1]["counts"]
    assert len(final) >= 2 and min(final) >= 3, f"every run should end with ≥ 3 points: {final}"
    assert {s["div"] for s in samples} == {samples[0]["div"]}, "the dashboard was replaced, not updated"
    totals = [sum(s["counts"]) for s in samples]
    assert totals == sorted(totals), f"the curve shrank at some point: {totals}"
    busy = [s["counts"] for s in samples if s["status"] == "busy"]
    for run, last in enumerate(final):  # each run's curve drawn part-way, at two lengths at least
        partial = sorted({c[run] for c in busy} - {0, last})
        assert len(partial) >= 2, (
            f"run {run}: while the kernel was busy the page drew its curve with {partial} of {last} "
            "points: it did not grow in place while training"
        )
