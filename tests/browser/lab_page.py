"""Driving a notebook in JupyterLab through Playwright: open, wait for the kernel, run all, read widgets.

Every wait is on a condition in the page (kernel status, cell prompts, rendered widgets, plotted data),
never a fixed sleep. Figures are read from Plotly's own graph divs (`gd.data`, `gd.layout`), so an
assertion about "the figure changed" is about the plotted numbers, not about pixels.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab_server import LabServer
from playwright.sync_api import Locator, Page

NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
SLIDER = f"{NOTEBOOK} .widget-slider"
PLOT = f"{NOTEBOOK} .js-plotly-plot"

# One fingerprint per Plotly figure in the open notebook: its traces' numbers and names, its annotation
# texts and shapes; plus the text of every HTML/Label widget (summaries). Typed arrays become lists.
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
  const texts = Array.from(document.querySelectorAll(sel.text)).map((e) => e.innerText);
  return {plots, texts};
}"""

TRACE_LENGTHS_JS = """(sel) => Array.from(document.querySelectorAll(sel)).map(
  (gd) => (gd.data || []).map((t) => (t.y ? t.y.length : 0)))"""


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

    def run_all(self) -> None:
        """Run → Run All Cells through the menu, as a user would."""
        self.page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        self.timeline.mark("run_all")

    def raise_on_error(self) -> None:
        """Fail with the traceback text if any cell output is an error."""
        errors = self.page.locator(f"{NOTEBOOK} [data-mime-type='application/vnd.jupyter.error']")
        if errors.count():
            raise NotebookError("a cell raised:\n" + errors.first.inner_text()[-3000:])

    def pending_cells(self) -> int:
        """Code cells queued or running (prompt `[*]`) or never run (empty prompt)."""
        prompts = self.page.locator(f"{NOTEBOOK} .jp-CodeCell .jp-InputPrompt").all_inner_texts()
        return sum(1 for p in prompts if not re.search(r"\[\d+\]", p))

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

    def wait_all_executed(self, timeout: float) -> None:
        """Wait until every code cell has an execution count and the kernel is idle again."""
        self.wait_until(
            lambda: self.pending_cells() == 0 and self.kernel_status() == "idle",
            "every cell to finish", timeout,
        )  # fmt: skip
        self.timeline.mark("all_executed")

    # -- widgets ---------------------------------------------------------------------------------------
    def slider(self, label: str) -> Locator:
        """The ipywidgets slider whose description matches the regular expression `label`."""
        return self.page.locator(SLIDER).filter(
            has=self.page.locator(".widget-label", has_text=re.compile(label, re.I))
        )

    def slider_readout(self, slider: Locator) -> str:
        return slider.locator(".widget-readout").first.inner_text().strip()

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
    def plots(self) -> Locator:
        return self.page.locator(PLOT)

    def rendered_plots(self) -> int:
        """Plotly figures that have been drawn (Plotly sets `_fullLayout` once it has plotted)."""
        return self.page.evaluate(
            "(sel) => Array.from(document.querySelectorAll(sel)).filter((gd) => gd._fullLayout).length",
            PLOT,
        )

    def fingerprint(self) -> dict:
        """What the open notebook's figures plot and what its text widgets say (see FINGERPRINT_JS)."""
        return self.page.evaluate(
            FINGERPRINT_JS,
            {"plot": PLOT, "text": f"{NOTEBOOK} .widget-html-content, {NOTEBOOK} .widget-label-basic"},
        )

    def trace_lengths(self) -> list[list[int]]:
        """For each figure, the number of y values in each of its traces."""
        return self.page.evaluate(TRACE_LENGTHS_JS, PLOT)

    def wait_stable(self, timeout: float, settle: int = 3, poll: float = 0.15) -> dict:
        """Wait until the fingerprint is the same on `settle` consecutive polls; return it."""
        last, same = None, 0
        deadline = time.monotonic() + timeout
        while same < settle:
            self.raise_on_error()
            current = self.fingerprint()
            same = same + 1 if current == last else 1
            last = current
            if time.monotonic() > deadline:
                raise NotebookError(f"figures still changing after {timeout} s")
            self.page.wait_for_timeout(poll * 1000)
        return last

    def wait_changed(self, before: dict, what: str, timeout: float) -> dict:
        """Wait until the fingerprint differs from `before`, then until it settles; return it."""
        self.wait_until(lambda: self.fingerprint() != before, what, timeout, poll=0.05)
        return self.wait_stable(timeout)

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


def changed_plots(before: dict, after: dict) -> list[int]:
    """Indices of the figures whose fingerprint differs between two readings."""
    return [i for i, (a, b) in enumerate(zip(before["plots"], after["plots"], strict=False)) if a != b]


def dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False))
