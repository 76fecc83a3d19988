"""`Explorer`: sliders wired to the same `trpo_step` training calls, and four Plotly `FigureWidget`s
updated in place.

Wiring only: every slider observes its `"value"` trait and calls `Explorer.update`, which asks the
`ExplorerSession` for a new `Frame` (it re-runs `trpo_step` with a `StepCache` and recomputes only
what the change needs) and writes the views' update dicts into the figures inside `batch_update`.
δ and the line-search sliders leave the CG view alone (the caption above it names the δ and line
search its direction serves); damping, CG iterations and the snapshot redraw all four. The numbers
of the step are an HTML table beside the summary's bars (`Explorer.table`). `Explorer.sliders` and
`Explorer.figures` expose the wiring for tests.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import time
import types
import uuid
from typing import Any

from .landscape import GRID
from .session import RANGES, ExplorerSession, Frame, Settings
from .snapshots import Snapshot
from .views import (apply_update, cg_caption, frame_figures, frame_updates, summary_rows,
                    summary_table_html, verdict)

LABELS = {"max_kl": "δ (max KL)", "damping": "damping λ", "cg_iters": "CG iterations",
          "backtrack_coef": "backtrack coef", "backtrack_iters": "max backtracks",
          "snapshot": "snapshot"}
FIXED_DIRECTION = ("line_search", "trust_region", "summary")  # views δ & line-search sliders change


class _DeferredRFC3987(types.ModuleType):
    """Stands in for `rfc3987_syntax` until it is used. Importing plotly's `FigureWidget` imports
    nbformat → jsonschema, whose format checkers import `rfc3987_syntax`, which builds a Lark Earley
    parser for IRIs at import time (~1 s on this machine, most of FigureWidget's import time). The
    stand-in loads the real module on first use, so IRI validation behaves exactly as before."""

    def _real(self) -> types.ModuleType:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return importlib.import_module(self.__name__)

    def is_valid_syntax(self, term: str, value: str) -> bool:  # what jsonschema imports by name
        return self._real().is_valid_syntax(term, value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # the import system probes __path__ etc.: not a use
            raise AttributeError(name)
        return getattr(self._real(), name)


def import_figure_widget():
    """plotly's `FigureWidget`, imported without paying for `rfc3987_syntax` up front."""
    if ("rfc3987_syntax" not in sys.modules and "jsonschema" not in sys.modules
            and importlib.util.find_spec("rfc3987_syntax") is not None):
        sys.modules["rfc3987_syntax"] = _DeferredRFC3987("rfc3987_syntax")
    from plotly.graph_objects import FigureWidget

    return FigureWidget


# Every plotly FigureWidget ships plotly's whole widget bundle (~5 MB of JavaScript, plotly.js
# included) as its anywidget `_esm`, and the browser imports it once per figure: measured in
# JupyterLab here, four empty FigureWidgets took ~7 s to render and one ~2.5 s. The explorer's
# figures carry this small module instead. One hidden widget per kernel (`preload_plotly_widgets`)
# carries the bundle's source in `_bundle`; the page imports it once, as soon as that widget's
# model exists (no display needed), and every figure then uses it.
#
# Updates take a shorter road than plotly's own (see `ExplorerFigureWidget`): one custom message per
# figure and change, holding only the changed leaves (`{"traces": {index: {path: value}}, "layout":
# {path: value}}`). The page merges the messages that arrive before the next animation frame (the
# latest value of each leaf wins) and draws them with one `Plotly.update` per figure and frame, and
# at most one draw per figure is in progress: a drag never queues a backlog of redraws. A view that
# is (re)rendered asks the kernel for every leaf changed since the figure was built (`trpo_resync`).
SHARED_BUNDLE_ESM = """
const KEY = Symbol.for("trpo_lab.plotly_widget_bundle");
function plotlyWidget(model) {
  const slot = (globalThis[KEY] ??= (() => {
    const slot = { loading: false };
    slot.promise = new Promise((resolve, reject) => Object.assign(slot, { resolve, reject }));
    return slot;
  })());
  const source = model.get("_bundle");
  if (!source) {
    model.on("change:_bundle", () => plotlyWidget(model));  // the bundle may arrive later
  } else if (!slot.loading) {
    slot.loading = true;
    const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
    import(url).then((module) => slot.resolve(module.default), slot.reject);
  }
  return slot.promise;
}
const STATES = new Map();  // per figure (its `_trpo_id`): merged leaves, pending leaves, graph divs
const empty = () => ({ traces: {}, layout: {} });
function merge(into, part) {
  for (const [i, props] of Object.entries(part.traces || {})) Object.assign((into.traces[i] ??= {}), props);
  Object.assign(into.layout, part.layout || {});
  return into;
}
function stateOf(model) {  // initialize and render may get different wrappers of one model
  const id = model.get("_trpo_id");
  let st = STATES.get(id);
  if (!st) {
    st = { seq: -1, all: empty(), pending: null, views: new Set(), frame: 0, drawing: null };
    STATES.set(id, st);
    model.on("msg:custom", (msg) => receive(st, msg));
    model.send({ type: "trpo_resync" });  // what changed before this page listened
  }
  return st;
}
function receive(st, msg) {
  if (!msg || !msg.trpo) return;
  const log = (globalThis[KEY].received ??= []);  // arrival times, read by benchmarks/browser_latency.py
  log.push(performance.now());
  if (log.length > 256) log.splice(0, 128);
  if (msg.trpo === "state") {  // every leaf changed up to msg.seq: draw all of it
    if (msg.seq < st.seq) return;
    st.all = merge(empty(), msg);
    st.pending = merge(empty(), msg);
  } else {
    if (msg.seq <= st.seq) return;  // already part of a state drawn
    merge(st.all, msg);
    st.pending = merge(st.pending ?? empty(), msg);
  }
  st.seq = msg.seq;
  schedule(st);
}
function schedule(st) {
  if (!st.frame && !st.drawing && st.pending) st.frame = requestAnimationFrame(() => draw(st));
}
function plotlyUpdate(gd, part) {
  const Plotly = globalThis[KEY].Plotly;
  const idx = Object.keys(part.traces).map(Number);
  const data = {};
  idx.forEach((i, k) => {
    for (const [path, value] of Object.entries(part.traces[i]))
      (data[path] ??= new Array(idx.length).fill(undefined))[k] = value;  // undefined: left alone
  });
  // plotly's widget view must not echo this edit to the kernel: it looks for this flag in the event's
  // copy of `data` (an enumerable property, or the copy would lose it; an echo arriving after a newer
  // value would set the kernel's figure back to the older one and send it again)
  data._doNotReportToPy = true;
  return Plotly.update(gd, data, { ...part.layout }, idx);
}
function draw(st) {
  st.frame = 0;
  const part = st.pending;
  st.pending = null;
  const views = [...st.views].filter((gd) => gd._fullLayout);
  st.drawing = Promise.all(views.map(async (gd) => plotlyUpdate(gd, part)))  // a throw rejects
    .catch((e) => console.error("trpo_lab: figure update failed", e))
    .finally(() => { st.drawing = null; schedule(st); });
}
async function plotted(el) {  // the graph div once plotly's view has drawn it
  for (;;) {
    const gd = el.classList.contains("js-plotly-plot") ? el : el.querySelector(".js-plotly-plot");
    if (gd && gd._fullLayout) return gd;
    await new Promise((resolve) => requestAnimationFrame(resolve));
  }
}
export default () => {
  let inner, ready;
  return {
    initialize(ctx) {
      if (ctx.model.get("_trpo_id")) stateOf(ctx.model);  // figures with light updates only
      ready = plotlyWidget(ctx.model).then((factory) => {
        inner = factory();
        return inner.initialize(ctx);
      });
      return ready;
    },
    async render(ctx) {
      await ready;
      const cleanup = await inner.render(ctx);
      if (!ctx.model.get("_trpo_id")) return cleanup;
      const st = stateOf(ctx.model);
      const gd = await plotted(ctx.el);
      globalThis[KEY].Plotly ??= globalThis.Plotly;  // set by the bundle's plotly.js
      st.views.add(gd);
      if (Object.keys(st.all.traces).length || Object.keys(st.all.layout).length) {
        st.pending = merge(merge(empty(), st.all), st.pending ?? empty());
        schedule(st);
      }
      return () => {
        st.views.delete(gd);
        if (typeof cleanup === "function") cleanup();
      };
    },
  };
};
"""
_FIGURE_CLASSES: dict[tuple[bool, bool], type] = {}


def _plain(value: Any) -> Any:
    """`value` as JSON for a widget message: arrays as lists, NaN and ±inf as null (a gap), plotly's
    `Undefined` ("leave as is") left out of dicts."""
    import numpy as np
    from plotly.basedatatypes import Undefined

    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not Undefined}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def shared_bundle_figure_widget(carries_bundle: bool = False, light_updates: bool = False) -> type:
    """A `FigureWidget` subclass whose views share one import of plotly's widget bundle; with
    `carries_bundle`, its initial state also holds the bundle's source (one such figure per page);
    with `light_updates`, its edits reach the page as described at `SHARED_BUNDLE_ESM` (the explorer's
    figures; other figures keep plotly's own road, which draws every intermediate state)."""
    key = (carries_bundle, light_updates)
    if key not in _FIGURE_CLASSES:
        import traitlets

        FigureWidget = import_figure_widget()
        source = plotly_widget_bundle() if carries_bundle else ""
        from plotly.basedatatypes import Undefined

        class SharedBundleFigureWidget(FigureWidget):
            _esm = SHARED_BUNDLE_ESM
            _bundle = traitlets.Unicode(source).tag(sync=True)

        class ExplorerFigureWidget(SharedBundleFigureWidget):
            """A `FigureWidget` whose edits reach the page as one small message each.

            plotly's own road for one `batch_update` is four trait messages (two edit ids, the
            update, a reset to None), then the page computes the whole figure's trace and layout
            deltas against its model and sends them back for the kernel to validate. Here every
            restyle / relayout / update becomes one custom message of the changed leaves, drawn as
            described at `SHARED_BUNDLE_ESM`; the Python figure holds the same values as before."""

            _trpo_id = traitlets.Unicode().tag(sync=True)  # the page keeps its state per figure

            @traitlets.default("_trpo_id")
            def _new_id(self) -> str:  # part of the state the widget opens with
                return uuid.uuid4().hex

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self._trpo_seq = 0
                self._trpo_all: dict[str, dict] = {"traces": {}, "layout": {}}
                super().__init__(*args, **kwargs)
                self.on_msg(self._trpo_on_msg)

            def _trpo_send(self, restyle: dict | None, relayout: dict | None, trace_indexes) -> None:
                traces: dict[str, dict] = {}
                if restyle:
                    indexes = self._normalize_trace_indexes(trace_indexes)
                    for path, values in restyle.items():
                        if not isinstance(values, (list, tuple)):
                            values = [values]
                        for k, i in enumerate(indexes):
                            value = values[k % len(values)]
                            if value is not Undefined:
                                traces.setdefault(str(i), {})[path] = _plain(value)
                layout = {path: _plain(v) for path, v in (relayout or {}).items() if v is not Undefined}
                if not traces and not layout:
                    return
                for i, props in traces.items():
                    self._trpo_all["traces"].setdefault(i, {}).update(props)
                self._trpo_all["layout"].update(layout)
                self._trpo_seq += 1
                self.send({"trpo": "update", "seq": self._trpo_seq, "traces": traces, "layout": layout})

            def _trpo_on_msg(self, _widget: Any, content: dict, _buffers: Any) -> None:
                if isinstance(content, dict) and content.get("type") == "trpo_resync":
                    self.send({"trpo": "state", "seq": self._trpo_seq, **self._trpo_all})

            def _send_update_msg(self, restyle_data, relayout_data, trace_indexes=None,
                                 source_view_id=None) -> None:
                self._trpo_send(restyle_data, relayout_data, trace_indexes)

            def _send_restyle_msg(self, restyle_data, trace_indexes=None, source_view_id=None) -> None:
                self._trpo_send(restyle_data, None, trace_indexes)

            def _send_relayout_msg(self, layout_data, source_view_id=None) -> None:
                self._trpo_send(None, layout_data, None)

        _FIGURE_CLASSES[key] = ExplorerFigureWidget if light_updates else SharedBundleFigureWidget
    return _FIGURE_CLASSES[key]


def plotly_widget_bundle() -> str:
    """The source of plotly's widget bundle (what a plain `FigureWidget` sends as `_esm`)."""
    from pathlib import Path

    esm = import_figure_widget()._esm  # a Path, or anywidget's FileContents (str() is the text)
    return esm.read_text() if isinstance(esm, Path) else str(esm)


_PRELOADER: list = []
LOG_SLIDERS = ("max_kl", "damping")  # FloatLogSliders, shown with the explorer's own readouts


def preload_plotly_widgets() -> None:
    """Send plotly's widget bundle to the page now (once per kernel), so the browser imports it
    while the kernel keeps working; call it early in a notebook. `Explorer` calls it too."""
    if not _PRELOADER:
        _PRELOADER.append(shared_bundle_figure_widget(carries_bundle=True)())


def _clamp(name: str, value: float) -> float | int:
    lo, hi = RANGES[name]
    return type(lo)(min(max(value, lo), hi))  # a log slider may report 10**-4 as 9.999…e-05


def _same_position(slider, a: float, b: float) -> bool:
    """Whether two values sit on the same position of `slider` (within half a step)."""
    step = slider.step or 0.0
    if hasattr(slider, "base"):  # FloatLogSlider: steps are in log_base(value)
        if a <= 0 or b <= 0:
            return a == b
        return abs(math.log(a, slider.base) - math.log(b, slider.base)) <= step / 2 + 1e-12
    return abs(a - b) <= step / 2 + 1e-12


class Explorer:
    """Replay one TRPO update with live sliders: δ (1e-4…1e-1, log), damping (1e-4…1, log), CG
    iterations (1…50), backtrack coefficient (0.3…0.95), max backtracks (1…30) and a snapshot
    picker. Display it in a notebook cell; `set(...)` moves several sliders with one update.

    `torch_threads` sets torch's intra-op threads (as `Trainer` does; None leaves them alone): one
    thread is what the latency benchmark measures, and two threads thrash on a busy 2-core machine.
    `share_plotly_bundle` makes the four figures share one import of plotly's 5 MB widget bundle
    in the page (see `SHARED_BUNDLE_ESM`); set it False for plain `FigureWidget`s, e.g. in a
    frontend that renders each output in its own frame.
    """

    def __init__(self, snapshots: Snapshot | list[Snapshot] | dict[str, Snapshot], *,
                 settings: Settings | None = None, snapshot: str | None = None,
                 grid_size: int | tuple[int, int] = GRID,
                 curve_points: int = 25, exact_max_params: int = 1500, torch_threads: int | None = 1,
                 share_plotly_bundle: bool = True):
        import ipywidgets as W
        import torch

        if torch_threads is not None:  # like `Trainer`: one thread is fastest for these small nets
            torch.set_num_threads(torch_threads)

        self.session = ExplorerSession(snapshots, grid_size, curve_points, exact_max_params)
        name = snapshot if snapshot is not None else self.session.names[0]
        self.session.state(name)  # validates the name
        if settings is None:
            settings = Settings.from_config(self.session.snapshots[name].meta.get("config", {}))
        if not isinstance(settings, Settings):
            raise ValueError(f"settings = {settings!r} is not allowed: give a Settings(...) or None")
        self._cg_tol = settings.cg_tol
        style = {"description_width": "120px"}
        layout = W.Layout(width="420px")
        common = dict(continuous_update=True, style=style, layout=layout)
        self.sliders: dict[str, Any] = {
            "max_kl": W.FloatLogSlider(value=settings.max_kl, base=10, min=-4, max=-1, step=0.05,
                                       readout_format=".2e", **common),
            "damping": W.FloatLogSlider(value=settings.damping, base=10, min=-4, max=0, step=0.05,
                                        readout_format=".2e", **common),
            "cg_iters": W.IntSlider(value=settings.cg_iters, min=1, max=50, **common),
            "backtrack_coef": W.FloatSlider(value=settings.backtrack_coef, min=0.3, max=0.95,
                                            step=0.01, **common),
            "backtrack_iters": W.IntSlider(value=settings.backtrack_iters, min=1, max=30, **common),
            "snapshot": W.Dropdown(options=self.session.names, value=name, style=style,
                                   layout=layout),
        }
        # Values set from Python (the training run's δ = 0.02, say) need not lie on a slider's grid;
        # the browser snaps the handle to its grid and sends the snapped value back. A value on the
        # same slider position as the one set from Python means that value (see `settings`).
        self._exact: dict[str, float] = {k: getattr(settings, k) for k in RANGES}
        for key, widget in self.sliders.items():
            widget.description = LABELS[key]
            widget.add_class(f"trpo-explorer-{key}")
        # A log slider's own readout shows the grid point the browser snapped the handle to (a
        # training run's δ = 0.03 would read 3.16e-2); these readouts show the value the update uses.
        self.readouts: dict[str, Any] = {}
        for key in LOG_SLIDERS:
            self.sliders[key].readout = False
            self.readouts[key] = W.Label().add_class("trpo-explorer-readout").add_class(
                f"trpo-explorer-readout-{key}")
        self.frame: Frame = self.session.compute(name, self.settings)
        self.figures: dict[str, Any] = {}
        if share_plotly_bundle:
            preload_plotly_widgets()
            FigureWidget = shared_bundle_figure_widget(light_updates=True)
        else:
            FigureWidget = import_figure_widget()
        for key, fig in frame_figures(self.frame).items():
            self.figures[key] = FigureWidget(fig)
            self.figures[key].add_class(f"trpo-explorer-{key}")
        self.status = W.HTML(self._status_html()).add_class("trpo-explorer-status")
        self.table = W.HTML(summary_table_html(self.frame.report)).add_class("trpo-explorer-table")
        self.cg_caption = W.HTML(cg_caption(self.frame.report)).add_class("trpo-explorer-cg-caption")
        self._show_readouts()
        self.updates: list[dict[str, Any]] = []  # one record per update: what changed, how long
        self._holding = False
        for widget in self.sliders.values():
            widget.observe(self._on_change, names="value")
        s = self.sliders
        r = self.readouts
        controls = W.HBox([W.VBox([W.HBox([s["max_kl"], r["max_kl"]]), W.HBox([s["damping"], r["damping"]]),
                                   s["cg_iters"]]),
                           W.VBox([s["backtrack_coef"], s["backtrack_iters"], s["snapshot"]])])
        half = W.Layout(width="50%")
        self.widget = W.VBox([
            controls, self.status,
            W.HBox([W.Box([self.figures["line_search"]], layout=half),
                    W.Box([self.figures["trust_region"]], layout=half)]),
            self.cg_caption, self.figures["cg"],
            W.HBox([W.Box([self.table], layout=W.Layout(width="40%")),
                    W.Box([self.figures["summary"]], layout=W.Layout(width="60%"))]),
        ]).add_class("trpo-explorer")

    # ── state ──
    @property
    def settings(self) -> Settings:
        """The `trpo_step` arguments the sliders show now (a slider left on the position of a value
        set from Python gives that exact value, not the grid point the browser snapped it to)."""
        values = {}
        for k in RANGES:
            value, exact = self.sliders[k].value, self._exact.get(k)
            same = exact is not None and _same_position(self.sliders[k], value, exact)
            values[k] = exact if same else _clamp(k, value)
        return Settings(**values, cg_tol=self._cg_tol)

    @property
    def report(self):
        """The `StepReport` on screen."""
        return self.frame.report

    def summary(self) -> dict[str, str]:
        """The summary view's rows as a dict (what the page shows)."""
        return dict(summary_rows(self.frame.report))

    # ── wiring ──
    def _on_change(self, change: dict) -> None:
        if self._holding:
            return
        if (self.sliders["snapshot"].value == self.frame.snapshot
                and self.settings == self.frame.settings):
            return  # e.g. the browser snapped a handle to its grid: nothing to recompute
        self.update()

    def set(self, **values: Any) -> Frame:
        """Move several sliders (names as in `sliders`) and update once. Values are validated
        first: a bad one raises `ValueError` and leaves every slider where it was."""
        unknown = set(values) - set(self.sliders)
        if unknown:
            raise ValueError(f"unknown slider(s) {sorted(unknown)}; sliders are: {list(self.sliders)}")
        merged = {k: values.get(k, self.sliders[k].value) for k in RANGES}
        Settings(**merged, cg_tol=self._cg_tol)  # raises on values outside the sliders' ranges
        if "snapshot" in values:
            self.session.state(values["snapshot"])
        self._holding = True
        try:
            for key, value in values.items():
                self.sliders[key].value = value
                if key in RANGES:
                    self._exact[key] = value
        finally:
            self._holding = False
        return self.update()

    def update(self) -> Frame:
        """Re-run `trpo_step` for the sliders' values and update the figures that change."""
        start = time.perf_counter()
        before, work = self.frame, dict(self.session.work)
        try:
            frame = self.session.compute(self.sliders["snapshot"].value, self.settings)
        except Exception as e:  # shown in the page, then raised (ipywidgets logs it)
            self.status.value = f"<b style='color:#d62728'>error:</b> {e}"
            raise
        same_direction = (frame.snapshot == before.snapshot and
                          frame.settings.direction_key == before.settings.direction_key)
        views = FIXED_DIRECTION if same_direction else tuple(self.figures)
        for key, update in frame_updates(frame, views).items():
            apply_update(self.figures[key], update)
        self.frame = frame
        self.status.value = self._status_html()
        self.table.value = summary_table_html(frame.report)
        self.cg_caption.value = cg_caption(frame.report)
        self._show_readouts()
        done = {k: v - work.get(k, 0) for k, v in self.session.work.items() if v != work.get(k, 0)}
        self.updates.append({"settings": frame.settings.as_dict(), "snapshot": frame.snapshot,
                             "views": views, "work": done, "seconds": time.perf_counter() - start})
        return frame

    def _show_readouts(self) -> None:
        for key, label in self.readouts.items():
            label.value = f"{getattr(self.frame.settings, key):.2e}"

    def _status_html(self) -> str:
        r, st = self.frame.report, self.frame.settings
        color = "#2ca02c" if r.accepted else "#d62728"
        return (f"<div style='font-family:monospace'>δ = {st.max_kl:.3g} · λ = {st.damping:.3g} · "
                f"cg_iters = {st.cg_iters} · coef = {st.backtrack_coef:.3g} · max backtracks = "
                f"{st.backtrack_iters} → <b style='color:{color}'>{verdict(r)}</b> · "
                f"KL̄ = {r.kl:.4g} · β = {r.beta:.4g} · predicted {r.predicted_improvement:.4g} vs "
                f"actual {r.surrogate_gain:.4g}</div>")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
