"""The sweep notebook in a real browser: the heatmap renders, and clicking a cell draws that setting's
learning curves.

Opens notebooks/05_hyperparameter_sweeps.ipynb in JupyterLab (Chromium), runs all cells (a 2 × 2 sweep
× 2 seeds in test mode), waits for the heatmap (the FigureWidget whose trace has meta.id "heatmap") and
the curves widget (traces "band:…" / "mean:…"), then clicks with the mouse the middle of a heatmap cell
other than the setting shown. The curves widget must then draw exactly that cell's setting. Screenshots
before and after the click go to tests/browser/artifacts/.
"""

from __future__ import annotations

import pytest
from lab_page import NOTEBOOK, LabNotebook

pytestmark = pytest.mark.browser

SWEEP_NOTEBOOK = "05_hyperparameter_sweeps.ipynb"
# FigureWidgets draw into their own div; a static figure's div is JupyterLab's `jp-RenderedPlotly`
PLOTS = f"{NOTEBOOK} .js-plotly-plot:not(.jp-RenderedPlotly)"

# the heatmap's cells as page coordinates, and the setting the curves widget draws
STATE_JS = """(sel) => {
  const plots = Array.from(document.querySelectorAll(sel)).filter((gd) => gd._fullLayout);
  const ids = (gd) => (gd._fullData || []).map((t) => (t.meta && t.meta.id) || "");
  const heat = plots.find((gd) => ids(gd).includes("heatmap"));
  const curves = plots.filter((gd) => ids(gd).some((id) => id.startsWith("mean:")));
  const shown = curves.length ? ids(curves[0]).filter((id) => id.startsWith("mean:")) : [];
  if (!heat) return { heatmap: false, shown, curves: curves.length };
  const L = heat._fullLayout, box = heat.getBoundingClientRect(), t = heat._fullData[0];
  const cells = [];
  for (const x of t.x) for (const y of t.y)
    cells.push({ x: String(x), y: String(y),
                 px: box.left + L._size.l + L.xaxis.d2p(x), py: box.top + L._size.t + L.yaxis.d2p(y) });
  return { heatmap: true, cells, shown, curves: curves.length,
           xname: t.meta.x, yname: t.meta.y };
}"""


SCROLL_JS = """(sel) => Array.from(document.querySelectorAll(sel)).find((gd) =>
  (gd._fullData || []).some((t) => t.meta && t.meta.id === "heatmap")).scrollIntoView({block: "center"})"""


def state(nb: LabNotebook) -> dict:
    return nb.page.evaluate(STATE_JS, PLOTS)


def test_clicking_a_heatmap_cell_draws_that_settings_curves(notebook: LabNotebook) -> None:
    nb = notebook
    nb.open(SWEEP_NOTEBOOK)
    nb.run_all()
    nb.wait_all_executed(240)
    nb.wait_until(lambda: state(nb)["heatmap"] and state(nb)["curves"] == 1,
                  "the heatmap and the curves widget to be drawn", 60)
    nb.page.evaluate(SCROLL_JS, PLOTS)
    nb.page.wait_for_timeout(500)
    before = state(nb)
    nb.screenshot("0_heatmap")
    assert len(before["cells"]) == 4 and len(before["shown"]) == 1, before
    target = next(c for c in before["cells"]
                  if before["shown"][0] != f"mean:{before['xname']}={c['x']}, {before['yname']}={c['y']}")
    want = f"mean:{before['xname']}={target['x']}, {before['yname']}={target['y']}"
    nb.page.mouse.move(target["px"], target["py"])
    nb.page.mouse.click(target["px"], target["py"])
    nb.wait_until(lambda: state(nb)["shown"] == [want], f"the curves of {want} after the click", 30)
    nb.screenshot("1_clicked")
    assert state(nb)["curves"] == 1  # the same widget redrawn, not a new one
