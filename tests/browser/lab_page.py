"""Driving a notebook in JupyterLab through Playwright: open, wait for the kernel, run all, read widgets.

Every wait is on a condition in the page (kernel status, cell prompts, rendered widgets, plotted data),
never a fixed sleep. Figures are read from Plotly's own graph divs (`gd.data`, `gd.layout`), so an
assertion about "the figure changed" is about the plotted numbers, not about pixels.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab_server import LabServer
from playwright.sync_api import Locator, Page

NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
STDERR = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"

# One fingerprint per Plotly graph div matching `sel.plot`: its traces' numbers and names, its annotation
# texts and shapes; plus the text of every element matching `sel.text` (HTML/Label widgets: summaries).
FINGERPRINT_JS = """(sel) => {
  const plain = (v) => (v && ArrayBuffer.isView(v)) ? Array.from(v)
      : (v && typeof v === 'object' && 'bdata' in v) ? v.bdata : v;
  const plots = Array.from(document.querySelectorAll(sel.plot)).map((gd) => JSON.stringify({
    data: (gd.data || []).map((t) => ({type: t.type, name: t.name, x: plain(t.x), y: plain(t.y),
        z: plain(t.z), text: plain(t.text), visible: t.visible, cells: t.cells && t.cells.values})),
    annotations: ((gd.layout || {}).annotations || []).map((a) => [a.text, a.x, a.y]),
    shapes: ((gd.layout || {}).shapes || []).map((s) => [s.x0, s.x1, s.y0, s.y1]),
    title: (((gd.layout || {}).title) || {}).text,
  }));
  const texts = sel.text ? Array.from(document.querySelectorAll(sel.text)).map((e) => e.innerText) : [];
  return {plots, texts};
}"""

# The values Plotly drew (its `_fullData`, where typed/base64 arrays are already decoded) for one
# named trace of one figure.
TRACE_VALUES_JS = """(q) => {
  const gd = document.querySelector(q.figure);
  const trace = gd && (gd._fullData || []).find((t) => t.name === q.trace);
  return trace ? Array.from(trace[q.axis] || []) : null;
}"""


class NotebookError(AssertionError):
    """A cell raised, or the notebook did not reach the expected state in time."""


@dataclass
class Timeline:
    """Wall-clock marks (seconds since `start`) of what happened in the page."""

    start: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> float:
        self.marks[name] = round(time.monotonic() - self.start, 3)
        return self.marks[name]


class LabNotebook:
    """One notebook open in a JupyterLab page."""

    def __init__(self, page: Page, server: LabServer, shots: Path) -> None:
        self.page = page
        self.server = server
        self.shots = shots
        self.path = ""
        self.timeline = Timeline()

    # -- opening and running -------------------------------------------------------------------------
    def open(self, path: str, timeout: float = 60.0) -> None:
        """Navigate to the notebook (relative to the server root) and wait until its kernel is idle.

        The timeline starts here: "opened" is the moment the browser is sent to the notebook's URL.
        """
        self.path = path
        self.timeline = Timeline()
        self.page.goto(self.server.lab_url(path), wait_until="domcontentloaded", timeout=timeout * 1000)
        self.page.locator(f"{NOTEBOOK} .jp-Cell").first.wait_for(timeout=timeout * 1000)
        self.timeline.mark("notebook_shown")
        self.wait_kernel_idle(timeout)
        self.timeline.mark("kernel_idle")

    def kernel_status(self) -> str | None:
        return self.page.locator(f"{NOTEBOOK} .jp-Notebook-ExecutionIndicator").first.get_attribute(
            "data-status"
        )

    def kernel_name(self) -> str:
        return self.page.locator(f"{NOTEBOOK} .jp-Toolbar-kernelName").first.inner_text().strip()

    def wait_kernel_idle(self, timeout: float) -> None:
        """Wait until a real kernel is attached and idle; accept a kernel-picker dialog if shown.

        The toolbar's indicator says "idle" before any kernel exists ("No Kernel"), so the page must
        also name a kernel, and the server must report this notebook's kernel idle.
        """

        def idle() -> bool:
            dialog = self.page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
            if dialog.count():
                dialog.first.click()
            return (
                self.kernel_status() == "idle"
                and self.kernel_name() not in ("", "No Kernel")
                and self.server_idle()
            )

        self.wait_until(idle, "the kernel to report Idle", timeout)

    def server_idle(self) -> bool:
        """The server has a session for this notebook whose kernel is idle."""
        sessions = self.server.api("GET", "/api/sessions") or []
        return any(
            s["path"].endswith(self.path) and s["kernel"]["execution_state"] == "idle" for s in sessions
        )

    def run_menu(self, item: str) -> None:
        """Click Run → `item` in JupyterLab's menu bar, as a user would."""
        self.page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()

    def run_all(self) -> None:
        """Run → Run All Cells."""
        self.run_menu("Run All Cells")
        self.timeline.mark("run_all")

    def select_cell(self, containing: str) -> Locator:
        """Make the code cell whose source contains `containing` the active cell (command mode)."""
        cell = self.page.locator(f"{NOTEBOOK} .jp-CodeCell").filter(
            has=self.page.locator(".jp-InputArea-editor", has_text=containing)
        )
        if cell.count() != 1:
            raise NotebookError(f"expected one code cell containing {containing!r}, found {cell.count()}")
        cell.locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Escape")
        return cell

    def raise_on_error(self) -> None:
        """Fail with the traceback if a cell raised (JupyterLab shows errors as stderr text)."""
        for text in self.page.locator(f"{NOTEBOOK} {STDERR}").all_inner_texts():
            if "Traceback (most recent call last)" in text:
                raise NotebookError("a cell raised:\n" + text[-3000:])

    def prompts(self) -> list[str]:
        """Each code cell's prompt: `[3]:` ran, `[*]:` queued or running, `[ ]:` not run. Read as DOM text:
        JupyterLab skips rendering cells far off screen (content-visibility), whose rendered text is
        empty, so a long notebook's first prompts would read as "not run"."""
        return self.page.locator(f"{NOTEBOOK} .jp-CodeCell .jp-InputPrompt").all_text_contents()

    def wait_until(self, condition, what: str, timeout: float, poll: float = 0.1) -> None:
        """Poll `condition()` (checking for cell errors too) until it is true or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            self.raise_on_error()
            if condition():
                return
            if time.monotonic() > deadline:
                self.screenshot("timeout")
                raise NotebookError(f"timed out after {timeout} s waiting for {what}")
            self.page.wait_for_timeout(poll * 1000)

    def wait_all_executed(self, timeout: float, every_cell: bool = True) -> None:
        """Wait until no cell is queued or running and the kernel is idle again; with `every_cell`,
        every code cell must then have an execution count (else Run All stopped early: fail)."""

        def done() -> bool:
            prompts = self.prompts()
            if any("*" in p for p in prompts) or self.kernel_status() != "idle" or not self.server_idle():
                return False
            not_run = [i for i, p in enumerate(prompts) if not re.search(r"\[\d+\]", p)]
            if every_cell and not_run:  # idle, nothing queued, cells without a count
                self.raise_on_error()
                raise NotebookError(f"the kernel is idle but code cells {not_run} did not run")
            return True

        self.wait_until(done, "the queued cells to finish", timeout)
        self.timeline.mark("all_executed")

    # -- widgets ---------------------------------------------------------------------------------------
    def slider(self, label: str, within: str = NOTEBOOK) -> Locator:
        """The ipywidgets slider under `within` whose description matches the regular expression `label`."""
        return self.page.locator(f"{within} .widget-slider").filter(
            has=self.page.locator(".widget-label", has_text=re.compile(label, re.I))
        )

    def slider_readout(self, slider: Locator) -> str:
        return slider.locator(".widget-readout").first.inner_text().strip()

    def slider_value(self, slider: Locator) -> float:
        """The number the slider's readout shows (e.g. "1.00e-2" → 0.01)."""
        return float(self.slider_readout(slider))

    def slider_fraction(self, slider: Locator) -> float:
        """Where the slider's handle sits along its track (0 = left end, 1 = right end)."""
        hb = slider.locator(".noUi-handle").first.bounding_box()
        tb = slider.locator(".noUi-base").first.bounding_box()
        assert hb and tb, "slider is not laid out"
        return (hb["x"] + hb["width"] / 2 - tb["x"]) / tb["width"]

    def drag_slider(self, slider: Locator, fraction: float, steps: int = 8) -> None:
        """Drag the slider's handle with the mouse to `fraction` of the track (0 = left, 1 = right)."""
        handle = slider.locator(".noUi-handle").first
        track = slider.locator(".noUi-base").first
        handle.scroll_into_view_if_needed()
        hb, tb = handle.bounding_box(), track.bounding_box()
        assert hb and tb, "slider is not laid out"
        y = hb["y"] + hb["height"] / 2
        self.page.mouse.move(hb["x"] + hb["width"] / 2, y)
        self.page.mouse.down()
        self.page.mouse.move(tb["x"] + fraction * tb["width"], y, steps=steps)
        self.page.mouse.up()

    def press_on_slider(self, slider: Locator, key: str, times: int = 1) -> None:
        """Focus the slider's handle and press `key` (e.g. ArrowRight) `times` times."""
        handle = slider.locator(".noUi-handle").first
        handle.scroll_into_view_if_needed()
        handle.focus()
        for _ in range(times):
            handle.press(key)

    # -- figures ---------------------------------------------------------------------------------------
    def rendered_plots(self, plots: str = f"{NOTEBOOK} .js-plotly-plot") -> int:
        """Plotly graph divs matching `plots` that have been drawn (Plotly sets `_fullLayout`)."""
        return self.page.evaluate(
            "(sel) => Array.from(document.querySelectorAll(sel)).filter((gd) => gd._fullLayout).length",
            plots,
        )

    def fingerprint(self, within: str = NOTEBOOK) -> dict:
        """What the figures under `within` plot and what its text widgets say (see FINGERPRINT_JS)."""
        return self.page.evaluate(
            FINGERPRINT_JS,
            {
                "plot": f"{within} .js-plotly-plot",
                "text": f"{within} .widget-html-content, {within} .widget-label-basic",
            },
        )

    def figure_fingerprint(self, figure: str) -> list[str]:
        """What the graph div(s) matching selector `figure` plot (see FINGERPRINT_JS)."""
        return self.page.evaluate(FINGERPRINT_JS, {"plot": figure, "text": ""})["plots"]

    def trace_values(self, figure: str, trace: str, axis: str = "y") -> list | None:
        """The values Plotly drew for trace `trace` of the graph div matching selector `figure`."""
        return self.page.evaluate(TRACE_VALUES_JS, {"figure": figure, "trace": trace, "axis": axis})

    def wait_stable(
        self, timeout: float, within: str = NOTEBOOK, settle: int = 3, poll: float = 0.15
    ) -> dict:
        """Wait until the fingerprint is the same on `settle` consecutive polls; return it."""
        last, same = None, 0
        deadline = time.monotonic() + timeout
        while same < settle:
            self.raise_on_error()
            current = self.fingerprint(within)
            same = same + 1 if current == last else 1
            last = current
            if time.monotonic() > deadline:
                raise NotebookError(f"figures still changing after {timeout} s")
            self.page.wait_for_timeout(poll * 1000)
        return last

    # -- evidence --------------------------------------------------------------------------------------
    def screenshot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=False)
        return path

    def screenshot_output(self, name: str, locator: Locator) -> Path:
        """Screenshot one element (e.g. the explorer's output area) so the figures are all in view."""
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        locator.screenshot(path=str(path))
        return path
