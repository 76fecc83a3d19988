"""`Explorer`: sliders wired to the same `trpo_step` training calls, three Plotly `FigureWidget`s
updated in place and the summary as HTML.

Wiring only: every slider observes its `"value"` trait and calls `Explorer.update`, which asks the
`ExplorerSession` for a new `Frame` (it re-runs `trpo_step` with a `StepCache` and recomputes only
what the change needs) and sends the views' update dicts to the figures (see `Explorer.update` for
the order in which the page gets them).
δ and the line-search sliders leave the CG view alone (the caption above it names the δ and line
search its direction serves); damping, CG iterations and the snapshot redraw all three figures. The
summary is one HTML widget (`Explorer.table`): the table of the step's numbers beside bars of the
improvements and the final KL̄ against δ (a fourth Plotly figure redrawn on every move cost the page
more than it showed). Each figure's legend is HTML below it (`Explorer.legends`, `legend_html`):
Plotly lays its legend out again on every redraw.
`Explorer.sliders` and `Explorer.figures` expose the wiring for tests.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ..settings import slider_widget
from ..widgets import (  # noqa: F401  (re-exported: notebooks import them from here)
    SHARED_BUNDLE_ESM,
    announce,
    import_figure_widget,
    plotly_widget_bundle,
    preload_plotly_widgets,
    shared_bundle_figure_widget,
    write_edits,
)
from .landscape import GRID
from .session import RANGES, ExplorerSession, Frame, Settings
from .snapshots import Snapshot
from .views import (
    cg_caption,
    edits_change_legend,
    figure_edits,
    frame_figures,
    frame_updates,
    legend_html,
    summary_html,
    summary_rows,
    verdict,
)

FIXED_DIRECTION = ("line_search", "trust_region")  # figures δ & line-search sliders change


LOG_SLIDERS = ("max_kl", "damping")  # FloatLogSliders, shown with the explorer's own readouts


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
    """Replay one TRPO update with live sliders: one per step setting the TRPO rule reads that has
    a slider in `trpo_lab.settings` (δ, damping, CG iterations, backtrack coefficient, max
    backtracks: ranges, steps and labels from there) and a snapshot picker. Display it in a
    notebook cell; `set(...)` moves several sliders with one update.

    `torch_threads` sets torch's intra-op threads (as `Trainer` does; None leaves them alone): one
    thread is what the latency benchmark measures, and two threads thrash on a busy 2-core machine.
    `share_plotly_bundle` makes the three figures share one import of plotly's 5 MB widget bundle
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
        # each slider's label, range, step and scale come from its setting (trpo_lab.settings)
        self.sliders: dict[str, Any] = {key: slider_widget(key, getattr(settings, key), **common)
                                        for key in RANGES}
        self.sliders["snapshot"] = W.Dropdown(options=self.session.names, value=name,
                                              description="snapshot", style=style, layout=layout)
        # Values set from Python (the training run's δ = 0.02, say) need not lie on a slider's grid;
        # the browser snaps the handle to its grid and sends the snapped value back. A value on the
        # same slider position as the one set from Python means that value (see `settings`).
        self._exact: dict[str, float] = {k: getattr(settings, k) for k in RANGES}
        for key, widget in self.sliders.items():
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
            fig.update_layout(showlegend=False)  # legends as HTML below the figures (`legends`)
            self.figures[key] = FigureWidget(fig)
            self.figures[key].add_class(f"trpo-explorer-{key}")
        self.legends = {key: W.HTML(legend_html(fig)).add_class("trpo-explorer-legend")
                        .add_class(f"trpo-explorer-legend-{key}") for key, fig in self.figures.items()}
        self.status = W.HTML(self._status_html()).add_class("trpo-explorer-status")
        self.table = W.HTML(summary_html(self.frame.report)).add_class("trpo-explorer-table")
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
            W.HBox([W.VBox([self.figures["line_search"], self.legends["line_search"]], layout=half),
                    W.VBox([self.figures["trust_region"], self.legends["trust_region"]], layout=half)]),
            self.cg_caption, self.figures["cg"], self.legends["cg"],
            self.table,
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
        return self.update(staged=False)

    def update(self, staged: bool = True) -> Frame:
        """Re-run `trpo_step` for the sliders' values and update the figures that change.

        What the page waits for goes first: the text, then each figure's edits as one message
        (`announce`). `staged` (a slider moved in the page): the figures whose data needs new forward
        passes over the batch (the curve along the step, the slice grid) follow once the kernel has
        computed them, while the page draws the others. Last, the Python figures take the same edits
        (`write_edits(validate=False)`, which sends nothing new: the view functions' values are
        checked by plotly's validators in the tests, and validating them again here took 10–16 ms of
        kernel time per move beside the page's redraw); a legend is built again only when an edit
        changes what it shows (`edits_change_legend`, `legend_html`). `set` (from Python, e.g. a
        notebook cell running several moves in a row) sends every figure in one go: one redraw per
        figure and move.
        """
        start = time.perf_counter()
        before, work = self.frame, dict(self.session.work)
        try:
            frame = self.session.compute(self.sliders["snapshot"].value, self.settings, landscape=not staged)
        except Exception as e:  # shown in the page, then raised (ipywidgets logs it)
            self.status.value = f"<b style='color:#d62728'>error:</b> {e}"
            raise
        same_direction = (frame.snapshot == before.snapshot and
                          frame.settings.direction_key == before.settings.direction_key)
        views = FIXED_DIRECTION if same_direction else tuple(self.figures)
        later = tuple(v for v in views if v in frame.pending)
        edits = {key: figure_edits(self.figures[key], update)
                 for key, update in frame_updates(frame, tuple(v for v in views if v not in later)).items()}
        self.frame = frame
        self.status.value = self._status_html()
        self.table.value = summary_html(frame.report)
        self.cg_caption.value = cg_caption(frame.report)
        self._show_readouts()
        for key, edit in edits.items():
            announce(self.figures[key], edit)
        if later:
            self.frame = frame = self.session.complete(frame)
            for key, update in frame_updates(frame, later).items():
                edits[key] = figure_edits(self.figures[key], update)
                announce(self.figures[key], edits[key])
        for key, edit in edits.items():
            swatch_changed = edits_change_legend(self.figures[key], edit)
            write_edits(self.figures[key], edit, validate=False)
            if swatch_changed:
                self.legends[key].value = legend_html(self.figures[key])
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
