"""Browser latency of the trust-region explorer: key press → the changed figures drawn by Plotly.

What a user waits for, measured in the page: JupyterLab (the browser tests' throw-away server,
`tests/browser/lab_server.py`, kernels in test mode `TRPO_LAB_FAST=1`) and Debian's Chromium driven by
Playwright. The script opens notebooks/02_trust_region_explorer.ipynb, runs all cells (timing
notebook opened → explorer drawn and every cell done), then for each slider focuses its handle and
presses an arrow key (one slider step), `--presses` times with a pause between presses.

A recorder in the page notes the time of every keydown / pointerup and of every change of what the
three graph divs have drawn (Plotly's `gd.data` and `gd.layout`: trace values, titles, annotations,
axis ranges; looked at in the animation frame after each Plotly draw event) and of the explorer's HTML
(status line, summary table and bars, CG caption). One press's latency is from its keydown to the last
frame in which anything changed, once the page is still again (kernel idle, nothing drawn for
`--quiet` s). Each press is checked: the
drawn figures must show the value in the explorer's status line (δ: the δ line of the line-search view;
the others: the CG view's title and caption, which name every setting), else the script stops.

A drag: the δ handle is dragged with the mouse across its track for `--drag-seconds`, and the time
from releasing the mouse to the final value being drawn (the δ line equal to the handle's position) is
measured, with the number of redraws seen on the way.

    .venv/bin/python benchmarks/browser_latency.py            # prints a table, writes JSON

Acceptance (issue 10, quiet machine, 15+ presses per slider): δ median ≤ 100 ms and p90 ≤ 200 ms;
damping, CG iterations, backtracking sliders median ≤ 250 ms; open → interactive ≤ 10 s; the final
value of a 1-second δ drag drawn ≤ 300 ms after release.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "browser"))  # the browser tests' server and page helpers
from lab_page import NOTEBOOK, LabNotebook  # noqa: E402
from lab_server import CHROMIUM_ARGS, start_lab_server, stop_lab_server  # noqa: E402

RESULTS = HERE / "results" / "browser_latency.json"
EXPLORER = f"{NOTEBOOK} .trpo-explorer"
VIEWS = ("line_search", "trust_region", "cg")
SLIDERS = {  # explorer key → (slider label regex, status-line symbol)
    "max_kl": (r"^δ", "δ"),
    "damping": (r"^damping", "λ"),
    "cg_iters": (r"^CG iterations", "cg_iters"),
    "backtrack_coef": (r"^backtrack coef", "coef"),
    "backtrack_iters": (r"^max backtracks", "max backtracks"),
}
TARGETS_MS = {"max_kl": {"median": 100.0, "p90": 200.0}, "damping": {"median": 250.0},
              "cg_iters": {"median": 250.0}, "backtrack_coef": {"median": 250.0},
              "backtrack_iters": {"median": 250.0}}
TARGET_OPEN_S, TARGET_DRAG_MS = 10.0, 300.0


def view_selector(name: str) -> str:
    tag = f"{EXPLORER} .trpo-explorer-{name}"
    return f"{tag}.js-plotly-plot, {tag} .js-plotly-plot"


# Installs window.__lat: input events (keydown, pointerup) and every change of what a view has drawn.
# Plotly announces each draw of a graph div with an event (plotly_update, _restyle, _relayout, _react,
# _afterplot, _redraw); in the animation frame after such an event the recorder takes the view's
# fingerprint (what Plotly holds for it: trace values and names, table cells, annotation texts, the
# title and axis ranges) and, if it differs from the last one, notes a change at that frame's time.
# (Fingerprinting every frame instead costs the page more than the redraws being measured.)
RECORDER_JS = """(q) => {
  const plain = (v) => (v && ArrayBuffer.isView(v)) ? Array.from(v)
      : (v && typeof v === 'object' && 'bdata' in v) ? v.bdata : v;
  const fp = (gd) => JSON.stringify([
    (gd.data || []).map((t) => [t.name, plain(t.x), plain(t.y), plain(t.z), plain(t.text),
                                t.cells && t.cells.values, t.contours && t.contours.start]),
    ((gd.layout || {}).annotations || []).map((a) => a.text),
    (((gd.layout || {}).title) || {}).text,
    Object.keys(gd.layout || {}).filter((k) => k.startsWith('xaxis') || k.startsWith('yaxis'))
      .map((k) => (gd.layout[k] || {}).range)]);
  const lat = (window.__lat = { inputs: [], changes: [], last: {}, events: {} });
  for (const type of ['keydown', 'pointerup'])
    document.addEventListener(type, (e) => lat.inputs.push({ type, key: e.key || null,
                                                            t: performance.now() }), true);
  for (const [name, sel] of Object.entries(q.views)) {
    const gd = document.querySelector(sel);
    lat.last[name] = fp(gd);
    let queued = false;
    const look = (ev) => {
      lat.events[ev] = (lat.events[ev] || 0) + 1;
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => {
        queued = false;
        const t = performance.now();  // before fingerprinting: the recorder's own work is not timed
        const f = fp(gd);
        if (f !== lat.last[name]) lat.changes.push({ view: name, t });
        lat.last[name] = f;
      });
    };
    for (const ev of ['plotly_update', 'plotly_restyle', 'plotly_relayout', 'plotly_react',
                      'plotly_afterplot', 'plotly_redraw'])
      gd.on(ev, () => look(`${name} ${ev}`));
  }
  for (const [name, sel] of Object.entries(q.texts)) {  // HTML widgets: status, summary, caption
    const el = document.querySelector(sel);
    if (!el) continue;
    // innerHTML (a bar's width is in its style), not innerText: innerText forces a layout of the
    // page, work a user's page never does
    lat.last[name] = el.innerHTML;
    new MutationObserver(() => requestAnimationFrame(() => {
      const t = performance.now();
      if (el.innerHTML !== lat.last[name]) lat.changes.push({ view: name, t });
      lat.last[name] = el.innerHTML;
    })).observe(el, { subtree: true, childList: true, characterData: true, attributes: true });
  }
}"""

DRAWN_JS = """(q) => {
  const out = {};
  for (const [name, sel] of Object.entries(q.views)) {
    const gd = document.querySelector(sel);
    if (!gd) continue;
    const delta = (gd.data || []).find((t) => t.name === 'δ' && t.type !== 'bar' && t.mode === 'lines');
    out[name] = { title: (((gd.layout || {}).title) || {}).text || '',
                  delta: delta ? Array.from(delta.y || []) : null };
  }
  const status = document.querySelector(q.status);
  out.status = status ? status.textContent : '';
  const caption = document.querySelector(q.caption);
  out.caption = caption ? caption.textContent : '';
  return out;
}"""


def status_numbers(text: str) -> dict[str, float]:
    """{'δ': 0.01, 'λ': 0.1, 'cg_iters': 10, 'coef': 0.8, 'max backtracks': 10} from the status line."""
    out = {}
    for symbol in ("δ", "λ", "cg_iters", "coef", "max backtracks"):
        match = re.search(rf"{symbol} = ([-+0-9.e]+)", text)
        if match:
            out[symbol] = float(match.group(1))
    return out


def cg_title_numbers(title: str) -> dict[str, float]:
    """The settings the CG view's title (damping, CG iterations) and its caption (δ, line search) name."""
    out = {}
    for symbol, pattern in (("λ", r"λ = ([-+0-9.e]+)"), ("cg_iters", r"cg_iters = (\d+)"),
                            ("δ", r"now ([-+0-9.e]+)"), ("coef", r"coef ([-+0-9.e]+)"),
                            ("max backtracks", r"≤ (\d+) trials")):
        match = re.search(pattern, title)
        if match:
            out[symbol] = float(match.group(1))
    return out


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=6e-3)


class Recorder:
    def __init__(self, nb: LabNotebook) -> None:
        self.nb = nb
        self.views = {name: view_selector(name) for name in VIEWS}
        texts = {name: f"{EXPLORER} .trpo-explorer-{name}" for name in ("status", "table", "cg-caption")}
        nb.page.evaluate(RECORDER_JS, {"views": self.views, "texts": texts})

    def state(self) -> dict:
        return self.nb.page.evaluate(
            "() => ({inputs: window.__lat.inputs, changes: window.__lat.changes, now: performance.now(),"
            " events: window.__lat.events,"
            " received: (globalThis[Symbol.for('trpo_lab.plotly_widget_bundle')] || {}).received || []})")

    def clear(self) -> None:
        self.nb.page.evaluate("() => { window.__lat.inputs = []; window.__lat.changes = [];"
                              " window.__lat.events = {}; }")

    def drawn(self) -> dict:
        return self.nb.page.evaluate(DRAWN_JS, {"views": self.views,
                                                "status": f"{EXPLORER} .trpo-explorer-status",
                                                "caption": f"{EXPLORER} .trpo-explorer-cg-caption"})

    def status(self) -> str:
        """The explorer's status line (what the press loop polls: reading only this text costs the
        page far less than `drawn`, so polling does not slow down the update being timed)."""
        return self.nb.page.evaluate("(s) => (document.querySelector(s) || {}).textContent || ''",
                                     f"{EXPLORER} .trpo-explorer-status")

    def wait_quiet(self, quiet: float, timeout: float = 120.0) -> dict:
        """Wait until the kernel is idle and nothing has been drawn for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.state()
            last = max([c["t"] for c in s["changes"]] + [i["t"] for i in s["inputs"]] + [0.0])
            if s["now"] - last >= quiet * 1000 and self.nb.server_idle():
                return s
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page was still redrawing after {timeout} s")
            self.nb.page.wait_for_timeout(50)


def check_drawn(drawn: dict, key: str) -> dict[str, float]:
    """The status line's settings, after checking that the figures show the same ones."""
    status = status_numbers(drawn["status"])
    cg = cg_title_numbers(drawn.get("cg", {}).get("title", "") + " " + drawn.get("caption", ""))
    for symbol, value in cg.items():
        if symbol in status and not close(value, status[symbol]):
            raise AssertionError(f"after moving {key}: the CG view's title shows {symbol} = {value}, the "
                                 f"status line {status[symbol]}: {drawn}")
    delta = drawn.get("line_search", {}).get("delta") or []
    if not delta or not all(close(y, status["δ"]) for y in delta):
        raise AssertionError(f"after moving {key}: the line-search δ line {delta} ≠ δ = {status['δ']}")
    return status


def press_series(nb: LabNotebook, rec: Recorder, key: str, presses: int, quiet: float,
                 pause: float) -> list[dict]:
    label, symbol = SLIDERS[key]
    slider = nb.slider(label, EXPLORER)
    if slider.count() != 1:
        raise RuntimeError(f"expected one {key} slider, found {slider.count()}")
    arrow = "ArrowLeft" if nb.slider_fraction(slider) > 0.5 else "ArrowRight"
    handle = slider.locator(".noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    samples = []
    before = status_numbers(rec.drawn()["status"])[symbol]
    for _ in range(presses):
        rec.clear()
        handle.press(arrow)
        nb.wait_until(lambda before=before: status_numbers(rec.status())[symbol] != before,
                      f"the status line to show the new {key}", 60, poll=0.05)
        s = rec.wait_quiet(quiet)
        keydowns = [i["t"] for i in s["inputs"] if i["type"] == "keydown"]
        changes = s["changes"]
        status = check_drawn(rec.drawn(), key)
        if not changes or status[symbol] == before:
            raise AssertionError(f"{arrow} on {key} at {before} drew nothing new (changes: {changes})")
        t0 = keydowns[0]
        first = {}
        for c in changes:
            first.setdefault(c["view"], c["t"] - t0)
        received = [t - t0 for t in s["received"] if t >= t0]  # figure messages from the kernel
        samples.append({"value": status[symbol], "ms": max(c["t"] for c in changes) - t0,
                        "first_message_ms": min(received) if received else None,
                        "last_message_ms": max(received) if received else None,
                        "first_ms": min(c["t"] for c in changes) - t0,
                        "views": {v: round(t, 1) for v, t in first.items()},
                        "redraws": len(changes), "plotly_events": s["events"]})
        before = status[symbol]
        nb.page.wait_for_timeout(pause * 1000)
    return samples


def drag_delta(nb: LabNotebook, rec: Recorder, seconds: float, quiet: float) -> dict:
    """Drag δ's handle across the track in `seconds`; time release → final value drawn."""
    slider = nb.slider(SLIDERS["max_kl"][0], EXPLORER)
    handle, track = slider.locator(".noUi-handle").first, slider.locator(".noUi-base").first
    handle.scroll_into_view_if_needed()
    rec.wait_quiet(quiet)
    hb, tb = handle.bounding_box(), track.bounding_box()
    start_x, y = hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2
    end_x = tb["x"] + (0.97 if nb.slider_fraction(slider) < 0.5 else 0.03) * tb["width"]
    steps = max(int(seconds * 30), 2)
    rec.clear()
    nb.page.mouse.move(start_x, y)
    nb.page.mouse.down()
    for k in range(1, steps + 1):
        nb.page.mouse.move(start_x + (end_x - start_x) * k / steps, y)
        nb.page.wait_for_timeout(seconds * 1000 / steps)
    nb.page.mouse.up()
    # where the handle was released: δ's slider spans 10^-4…10^-1 in steps of 10^0.05
    final = 10 ** (-4 + round(3 * nb.slider_fraction(slider) / 0.05) * 0.05)
    # the slider sends its last value once the kernel has answered the one before: wait for the
    # status line to show it, then for the page to be still
    nb.wait_until(lambda: close(status_numbers(rec.status())["δ"], final),
                  f"the status line to show the released δ = {final:.3g}", 120, poll=0.05)
    s = rec.wait_quiet(quiet)
    released = [i["t"] for i in s["inputs"] if i["type"] == "pointerup"][-1]
    status = check_drawn(rec.drawn(), "max_kl (drag)")
    changes = s["changes"]
    after = [c["t"] for c in changes if c["t"] >= released]
    return {"seconds": seconds, "final_delta": status["δ"], "released_at": final,
            "release_to_final_drawn_ms": (max(after) - released) if after else 0.0,
            "redraws_during_drag": sum(1 for c in changes if c["t"] < released),
            "redraws_after_release": len(after)}


def stats(values: list[float]) -> dict[str, float]:
    a = np.array(values)
    return {"n": len(a), "median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "min_ms": float(a.min()), "max_ms": float(a.max())}


def open_notebook(nb: LabNotebook, path: str) -> dict[str, float]:
    nb.open(path, timeout=120)
    nb.run_all()

    def rendered() -> bool:
        return (nb.slider(r"^δ", EXPLORER).count() == 1
                and all(nb.rendered_plots(view_selector(v)) == 1 for v in VIEWS))

    nb.wait_until(rendered, "the explorer's sliders and three figures", 120, poll=0.05)
    nb.timeline.mark("explorer_rendered")
    nb.wait_all_executed(180)
    marks = dict(nb.timeline.marks)
    marks["interactive"] = max(marks["explorer_rendered"], marks["all_executed"])
    return marks


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=15, help="arrow-key presses per slider")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between presses, once still")
    parser.add_argument("--quiet", type=float, default=0.6,
                        help="a press is over when nothing was drawn for this long (s)")
    parser.add_argument("--drag-seconds", type=float, default=1.0)
    parser.add_argument("--drags", type=int, default=3)
    parser.add_argument("--sliders", nargs="*", default=list(SLIDERS), choices=list(SLIDERS))
    parser.add_argument("--chromium", default=os.environ.get("TRPO_LAB_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--full", action="store_true",
                        help="run the notebook in full mode (default: test mode, TRPO_LAB_FAST=1)")
    parser.add_argument("--trace", type=Path, default=None,
                        help="also write a Chromium performance trace of the presses to this file")
    parser.add_argument("--notebooks", type=Path, default=REPO / "notebooks",
                        help="the notebooks folder to serve (e.g. another checkout's, with PYTHONPATH "
                             "pointing at its package, to compare versions side by side)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="trpo_lab_browser_latency_"))
    env = {} if args.full else {"TRPO_LAB_FAST": "1"}
    if not args.full:
        os.environ["TRPO_LAB_FAST"] = "1"
    server = start_lab_server(args.notebooks, work / "server.log", env)
    report: dict = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1600, "height": 2200})
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            nb = LabNotebook(page, server, work / "shots")
            marks = open_notebook(nb, "02_trust_region_explorer.ipynb")
            print(f"open → interactive: {marks['interactive']:.1f} s  ({marks})", flush=True)
            rec = Recorder(nb)
            rec.wait_quiet(args.quiet)
            if args.trace:
                browser.start_tracing(page=page, path=str(args.trace), screenshots=False,
                                      categories=["devtools.timeline", "v8.execute", "blink.user_timing"])
            presses = {}
            for key in args.sliders:
                presses[key] = press_series(nb, rec, key, args.presses, args.quiet, args.pause)
                st = stats([s["ms"] for s in presses[key]])
                print(f"{key:<16} median {st['median_ms']:6.0f} ms  p90 {st['p90_ms']:6.0f} ms  "
                      f"max {st['max_ms']:6.0f} ms", flush=True)
            if args.trace:
                browser.stop_tracing()
            drags = [drag_delta(nb, rec, args.drag_seconds, args.quiet) for _ in range(args.drags)]
            for d in drags:
                print(f"drag δ {d['seconds']:g} s → δ = {d['final_delta']:.3g}: final value drawn "
                      f"{d['release_to_final_drawn_ms']:.0f} ms after release "
                      f"({d['redraws_during_drag']} redraws during, {d['redraws_after_release']} after)",
                      flush=True)
            if errors:
                raise RuntimeError(f"errors in the page: {errors}")
            browser.close()
    finally:
        stop_lab_server(server)
    load_after = os.getloadavg()

    table = {key: stats([s["ms"] for s in samples]) for key, samples in presses.items()}
    drag_ms = [d["release_to_final_drawn_ms"] for d in drags]
    meets = {key: all(table[key][f"{k}_ms"] <= v for k, v in TARGETS_MS[key].items()) for key in table}
    meets["open_to_interactive"] = marks["interactive"] <= TARGET_OPEN_S
    if drag_ms:
        meets["drag_release_to_final"] = max(drag_ms) <= TARGET_DRAG_MS
    from _common import cpu_model  # benchmarks/ is on sys.path when a script here runs

    report = {
        "benchmark": "browser_latency",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python benchmarks/browser_latency.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "python": sys.version.split()[0], "load_average_before": load_before,
                    "load_average_after": load_after},
        "notebook": "02_trust_region_explorer.ipynb", "mode": "full" if args.full else "test",
        "open_seconds": marks, "latency": table, "presses": presses, "drags": drags,
        "targets_ms": TARGETS_MS, "target_open_s": TARGET_OPEN_S, "target_drag_ms": TARGET_DRAG_MS,
        "meets_targets": meets,
    }
    print(f"\nbrowser latency · notebook 02 ({report['mode']} mode) in JupyterLab + Chromium, key press → "
          "changed figures drawn")
    print(f"{'slider':<16}{'n':>4}{'median ms':>11}{'p90 ms':>9}{'max ms':>9}  target")
    for key, s in table.items():
        target = ", ".join(f"{k} ≤ {v:.0f}" for k, v in TARGETS_MS[key].items())
        print(f"{key:<16}{s['n']:>4}{s['median_ms']:>11.0f}{s['p90_ms']:>9.0f}{s['max_ms']:>9.0f}"
              f"  {target}")
    print(f"open → interactive {marks['interactive']:.1f} s (≤ {TARGET_OPEN_S:g} s); drag release → final "
          f"drawn {', '.join(f'{m:.0f}' for m in drag_ms)} ms (≤ {TARGET_DRAG_MS:g} ms)")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}; meets targets: {meets}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()
