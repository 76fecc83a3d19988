"""Widget plumbing shared by the lab's apps (the explorer, the compare view, the training dashboard,
the sweep browser): plotly's `FigureWidget` imported cheaply, figure widgets whose views share one
import of plotly's widget bundle in the page, and the explorer's light update road (the changed
leaves of each edit as one message, drawn once per animation frame, latest value wins).

Nothing here knows TRPO: it is how a figure gets from the kernel to the page fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types
import uuid
from typing import Any


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
                traces: dict[int, dict] = {}
                if restyle:
                    indexes = self._normalize_trace_indexes(trace_indexes)
                    for path, values in restyle.items():
                        if not isinstance(values, (list, tuple)):
                            values = [values]
                        for k, i in enumerate(indexes):
                            value = values[k % len(values)]
                            if value is not Undefined:
                                traces.setdefault(i, {})[path] = _plain(value)
                layout = {path: _plain(v) for path, v in (relayout or {}).items() if v is not Undefined}
                self._trpo_edit(traces, layout)

            def _trpo_edit(self, traces: dict[int, dict], layout: dict) -> None:
                """Send the leaves (plain JSON values by plotly.js path) that differ from what the
                page was last sent, as one message; nothing if none does. So an edit `announce`d
                before plotly validated it is not sent a second time when plotly reports it."""
                sent = self._trpo_all
                changed: dict[str, dict] = {}
                for i, props in traces.items():
                    last = sent["traces"].get(str(i), {})
                    diff = {p: v for p, v in props.items() if p not in last or last[p] != v}
                    if diff:
                        changed[str(i)] = diff
                relayout = {p: v for p, v in layout.items()
                            if p not in sent["layout"] or sent["layout"][p] != v}
                if not changed and not relayout:
                    return
                for i, props in changed.items():
                    sent["traces"].setdefault(i, {}).update(props)
                sent["layout"].update(relayout)
                self._trpo_seq += 1
                self.send({"trpo": "update", "seq": self._trpo_seq, "traces": changed, "layout": relayout})

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


def flat_paths(props: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts of plotly properties as plotly.js attribute paths, the form both plotly's
    Python `update` and `Plotly.update` take: {"marker": {"color": c}} → {"marker.color": c}.
    (Write nested dicts, not plotly's "magic underscores": `marker_color` is not a path.)"""
    out: dict[str, Any] = {}
    for key, value in props.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_paths(value, path + "."))
        else:
            out[path] = value
    return out


Edits = tuple[dict[int, dict[str, Any]], dict[str, Any]]
"""Edits of one figure: ({trace index: {attribute path: value}}, {layout path: value})."""


def announce(fig: Any, edits: Edits) -> None:
    """Send `edits` to the page now, as one message, if `fig` takes light updates
    (`shared_bundle_figure_widget(light_updates=True)`); nothing otherwise. The page can draw them
    while Python validates them (`write_edits`), which then sends nothing more for them."""
    send = getattr(fig, "_trpo_edit", None)
    if send is not None:
        traces, layout = edits
        send({i: {p: _plain(v) for p, v in props.items()} for i, props in traces.items()},
             {p: _plain(v) for p, v in layout.items()})


def write_edits(fig: Any, edits: Edits, *, validate: bool = True) -> None:
    """Write `edits` into a `go.Figure` or `FigureWidget` as one batch (a widget sends what changed
    to the page, as it always does).

    `validate` (the default): through plotly's validators, which check every value. `validate=False`:
    the values are stored as given (arrays as read-only views, as the validators store read-only
    copies), by plotly's own road for edits that come back from the page (`plotly_update`: attribute
    paths are still checked, values are not), 3–5× cheaper; for edits whose values were already
    validated elsewhere (the explorer's views: their tests build the same figures through the
    validators and compare)."""
    traces, layout = edits
    if not validate:
        import numpy as np
        from plotly.basedatatypes import Undefined

        def stored(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                value = value.view()
                value.flags.writeable = False  # the figure must not become a way to edit the caller's
            return value

        indexes = sorted(traces)
        paths = sorted({path for i in indexes for path in traces[i]})
        restyle = {path: [stored(traces[i].get(path, Undefined)) for i in indexes] for path in paths}
        fig.plotly_update(restyle_data=restyle or None, relayout_data=layout or None,
                          trace_indexes=indexes or None)
        return
    with fig.batch_update():
        for i, props in traces.items():
            fig.data[i].update(props)
        if layout:
            fig.layout.update(layout)


def plotly_widget_bundle() -> str:
    """The source of plotly's widget bundle (what a plain `FigureWidget` sends as `_esm`)."""
    from pathlib import Path

    esm = import_figure_widget()._esm  # a Path, or anywidget's FileContents (str() is the text)
    return esm.read_text() if isinstance(esm, Path) else str(esm)


_PRELOADER: list = []


def preload_plotly_widgets() -> None:
    """Send plotly's widget bundle to the page now (once per kernel), so the browser imports it
    while the kernel keeps working; call it early in a notebook. `Explorer` calls it too."""
    if not _PRELOADER:
        _PRELOADER.append(shared_bundle_figure_widget(carries_bundle=True)())
