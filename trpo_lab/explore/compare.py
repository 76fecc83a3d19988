"""Every update rule on one frozen batch: "why TRPO and not the plain gradient, the natural gradient
without a line search, or PPO?", answered with the same `update_step` training calls.

    comparison = compare_rules(snapshot.problem(), StepSettings(max_kl=0.01))
    compare_figures(comparison)      # end points in the trust-region slice, KL / gain / time, KL histogram
    RuleComparison(snapshot)         # the same, live: δ, damping and PPO's clip ε as sliders

`compare_rules` and the figure builders are pure (a problem and settings in, records and figures out);
`RuleComparison` only wires sliders to them. Traces carry stable ids (`meta` = "<view>:<rule>"), their
legend names are labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..settings import UPDATE_RULES, ConfigError, StepSettings, slider_widget, step_fields
from ..trust_region import StepCache, StepReport, per_state_kl, timed_update_step
from .landscape import Plane, model_ellipse, slice_plane
from .session import Memo

LABELS = {"trpo": "TRPO", "npg": "natural gradient", "pg": "plain gradient", "ppo-clip": "PPO-clip"}
COLORS = {"trpo": "#2ca02c", "npg": "#1f77b4", "pg": "#ff7f0e", "ppo-clip": "#9467bd"}


@dataclass(frozen=True)
class RuleResult:
    """What one rule did on the batch."""

    rule: str
    report: StepReport
    seconds: float  # wall-clock of the rule's whole `update_step`, from a fresh cache
    state_kls: np.ndarray  # per-state KL(π_old ‖ π_new) of the step taken, [B] (zeros when rejected)
    coords: tuple[float, float]  # Δθ in the slice plane's (a, b) coordinates (least squares)
    off_plane: float  # ‖Δθ − its projection‖ / ‖Δθ‖: 0 for trpo, npg and pg; PPO leaves the plane

    @property
    def mean_kl(self) -> float:
        return float(self.state_kls.mean())

    @property
    def max_state_kl(self) -> float:
        return float(self.state_kls.max())

    @property
    def gain(self) -> float:
        return self.report.surrogate_gain

    def row(self) -> dict[str, Any]:
        """The scalars, for tables."""
        return {"rule": self.rule, "accepted": self.report.accepted, "mean KL": self.mean_kl,
                "max per-state KL": self.max_state_kl, "surrogate gain": self.gain,
                "ms": 1e3 * self.seconds, "reason": self.report.reason}


@dataclass(frozen=True)
class Comparison:
    settings: StepSettings
    results: dict[str, RuleResult]
    plane: Plane  # span{s, g} through θ_old, in the trust region's metric (`landscape.slice_plane`)

    def table(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.results.values()]


def _plane_coordinates(plane: Plane, step: torch.Tensor) -> tuple[tuple[float, float], float]:
    basis = torch.stack([plane.u, plane.v], 1).to(step.dtype)
    coef = torch.linalg.lstsq(basis, step[:, None]).solution[:, 0]
    rest = float((step - basis @ coef).norm())
    size = float(step.norm())
    return (float(coef[0]), float(coef[1])), (rest / size if size > 0 else 0.0)


def rule_key(settings: StepSettings) -> tuple:
    """What a rule's step depends on: the rule and the settings it reads (`Setting.rules`)."""
    return (settings.update,) + tuple((k, getattr(settings, k)) for k, spec in step_fields().items()
                                      if k != "update" and settings.update in spec.rules)


def compare_rules(problem, settings: StepSettings | None = None,
                  rules: tuple[str, ...] | list[str] = UPDATE_RULES, memo: dict | None = None,
                  seed: int = 0) -> Comparison:
    """Run each rule's `update_step` on `problem` with the same settings (`settings.update` is
    replaced by each rule), each from a fresh `StepCache`, so its time is its whole cost (gradient,
    Fisher operator, CG, line search or epochs). PPO's minibatches are drawn from
    `torch.Generator().manual_seed(seed)`: the same numbers every call. Pass a dict as `memo` to
    reuse each rule's result while the settings it reads are unchanged (moving δ does not re-run
    PPO); the memo must belong to this problem. A plain dict grows with every setting visited;
    `Memo` keeps the entries used last (the compare view's own memo is one)."""
    settings = StepSettings() if settings is None else settings.step_settings()
    rules = tuple(rules)
    if not rules or any(r not in UPDATE_RULES for r in rules):
        raise ConfigError(f"rules = {rules!r} is not allowed: give one or more of {UPDATE_RULES}")
    memo = {} if memo is None else memo
    trpo = settings.replace(update="trpo")
    plane_key = ("plane",) + rule_key(trpo)
    if plane_key not in memo:
        cache = memo.setdefault("plane cache", StepCache())
        cache.bind(problem)
        memo[plane_key] = slice_plane(cache.direction(trpo).s, cache.grad,
                                      cache.fisher(settings.fisher), settings.damping)
    plane = memo[plane_key]
    results: dict[str, RuleResult] = {}
    for rule in rules:
        rule_settings = settings.replace(update=rule)
        key = rule_key(rule_settings)
        if key not in memo:
            report, seconds = timed_update_step(problem, rule_settings, StepCache(),
                                                torch.Generator().manual_seed(seed))
            with torch.no_grad():
                kls = per_state_kl(problem, report.theta_new).double().numpy()
            memo[key] = (report, seconds, kls)
        report, seconds, kls = memo[key]
        # the end point in the slice depends on the step and the plane only: computed once, so a rule
        # that did not re-run is drawn at bitwise the same place (a least-squares solve repeated on a
        # new buffer may differ in the last bits)
        coords_key = ("coords",) + plane_key + key
        if coords_key not in memo:
            memo[coords_key] = _plane_coordinates(plane, report.theta_new - report.theta_old)
        coords, off = memo[coords_key]
        results[rule] = RuleResult(rule, report, seconds, kls, coords, off)
    return Comparison(settings, results, plane)


# ───────────────────────────── figures (pure) ─────────────────────────────


def slice_figure(comparison: Comparison) -> go.Figure:
    """Each rule's end point θ_new − θ_old in the slice span{s, g}, with the model boundary
    ½cᵀ(F + λI)c = δ. PPO's step leaves the plane: its marker is the projection (hover says how far)."""
    fig = go.Figure()
    ex, ey = model_ellipse(comparison.plane, comparison.settings.max_kl)
    fig.add_scatter(x=ex, y=ey, mode="lines", meta="slice:model", name="model KL = δ",
                    line=dict(color="#7f7f7f", dash="dash"))
    for rule, r in comparison.results.items():
        a, b = r.coords
        hover = (f"{LABELS[rule]}: mean KL {r.mean_kl:.3g}, max per-state KL {r.max_state_kl:.3g}, "
                 f"gain {r.gain:.3g}" + (f"<br>{100 * r.off_plane:.0f} % of the step is off this plane"
                                         if r.off_plane > 1e-3 else ""))
        fig.add_scatter(x=[0.0, a], y=[0.0, b], mode="lines+markers", meta=f"slice:{rule}",
                        name=LABELS[rule], hovertext=hover, hoverinfo="text",
                        line=dict(color=COLORS[rule]), marker=dict(size=[4, 11]))
    fig.update_layout(title="End points in the trust-region slice (a along s, b ⟂ in F+λI)",
                      xaxis_title="a (along the natural direction s)", yaxis_title="b",
                      yaxis_scaleanchor="x", height=380, margin=dict(l=50, r=10, t=50, b=40))
    return fig


METRICS = (("mean KL", "mean_kl"), ("max per-state KL", "max_state_kl"), ("surrogate gain", "gain"),
           ("time (ms)", "ms"))


def metrics_figure(comparison: Comparison) -> go.Figure:
    """One bar per rule in four panels: real mean KL, max per-state KL (with δ), real surrogate
    gain, and wall-clock time."""
    fig = make_subplots(rows=1, cols=4, subplot_titles=[m[0] for m in METRICS])
    rules = list(comparison.results)
    for col, (title, key) in enumerate(METRICS, start=1):
        values = [1e3 * r.seconds if key == "ms" else getattr(r, key)
                  for r in comparison.results.values()]
        fig.add_bar(x=[LABELS[r] for r in rules], y=values, meta=f"metrics:{key}", name=title,
                    marker_color=[COLORS[r] for r in rules], showlegend=False, row=1, col=col)
        if key in ("mean_kl", "max_state_kl"):
            fig.add_hline(y=comparison.settings.max_kl, line_dash="dash", line_color="#7f7f7f",
                          row=1, col=col)
    fig.update_layout(height=300, margin=dict(l=40, r=10, t=50, b=40),
                      title=f"On one batch, δ = {comparison.settings.max_kl:.3g}")
    return fig


def kl_histogram_figure(comparison: Comparison, bins: int = 40) -> go.Figure:
    """Per-state KL of each rule's step (log-spaced bins), with δ: the mean can sit at δ while some
    states move far more."""
    positive = np.concatenate([r.state_kls[r.state_kls > 0] for r in comparison.results.values()]
                              + [np.array([comparison.settings.max_kl])])
    edges = np.logspace(math.log10(positive.min()), math.log10(positive.max()) + 1e-9, bins + 1)
    fig = go.Figure()
    for rule, r in comparison.results.items():
        # every state counts: KLs at 0 (or rounded just below it) fall in the first bin
        counts, _ = np.histogram(np.clip(r.state_kls, edges[0], edges[-1]), edges)
        fig.add_scatter(x=np.sqrt(edges[:-1] * edges[1:]), y=counts, mode="lines", line_shape="hvh",
                        meta=f"histogram:{rule}", name=LABELS[rule], line=dict(color=COLORS[rule]))
    fig.add_vline(x=comparison.settings.max_kl, line_dash="dash", line_color="#7f7f7f")
    fig.update_layout(title="Per-state KL of each step (δ dashed)", xaxis_type="log",
                      xaxis_title="KL(π_old ‖ π_new) at a state", yaxis_title="states", height=300,
                      margin=dict(l=50, r=10, t=50, b=40))
    return fig


def compare_figures(comparison: Comparison) -> dict[str, go.Figure]:
    return {"slice": slice_figure(comparison), "metrics": metrics_figure(comparison),
            "histogram": kl_histogram_figure(comparison)}


# ───────────────────────────── the widget (wiring only) ─────────────────────────────

SLIDERS = ("max_kl", "damping", "ppo_clip")


class RuleComparison:
    """Sliders for δ, damping and PPO's clip ε over `compare_figures` of one snapshot. Each move
    re-runs the rules whose settings changed (δ does not re-run PPO) and rewrites the figures in
    place. `set(...)` moves sliders from Python; `comparison` is what the page shows."""

    def __init__(self, snapshot, settings: StepSettings | None = None, rules=UPDATE_RULES):
        import ipywidgets as W

        from ..widgets import preload_plotly_widgets, shared_bundle_figure_widget

        self.problem = snapshot.problem()
        self.memo = Memo()
        self.rules = tuple(rules)
        config = snapshot.meta.get("config", {})
        if settings is None:
            settings = StepSettings(**{k: v for k, v in config.items() if k in StepSettings().as_dict()})
        self.base = settings.step_settings()
        self.comparison = compare_rules(self.problem, self.base, self.rules, self.memo)
        style = {"description_width": "110px"}
        self.sliders = {key: slider_widget(key, getattr(self.base, key), style=style) for key in SLIDERS}
        for key, slider in self.sliders.items():
            slider.add_class(f"trpo-compare-{key}")
            slider.observe(self._on_change, names="value")
        self._holding = False
        # the explorer's figure widgets: one shared import of plotly's bundle in the page, and edits
        # sent as the changed leaves, drawn once per frame (latest wins; see trpo_lab/widgets.py)
        preload_plotly_widgets()
        FigureWidget = shared_bundle_figure_widget(light_updates=True)
        self.figures = {k: FigureWidget(f) for k, f in compare_figures(self.comparison).items()}
        for key, fig in self.figures.items():
            fig.add_class(f"trpo-compare-{key}")
        self.table = W.HTML(self._table_html()).add_class("trpo-compare-table")
        self.widget = W.VBox([W.HBox(list(self.sliders.values())), self.table,
                              W.HBox([self.figures["slice"], self.figures["histogram"]]),
                              self.figures["metrics"]]).add_class("trpo-compare")

    @property
    def settings(self) -> StepSettings:
        return self.base.replace(**{k: s.value for k, s in self.sliders.items()})

    def set(self, **values: float) -> Comparison:
        unknown = set(values) - set(self.sliders)
        if unknown:
            raise ValueError(f"unknown slider(s) {sorted(unknown)}; sliders are: {list(self.sliders)}")
        self.base.replace(**values)  # validates before anything moves
        self._holding = True
        try:
            for key, value in values.items():
                self.sliders[key].value = value
        finally:
            self._holding = False
        return self.update()

    def _on_change(self, change: dict) -> None:
        if not self._holding:
            self.update()

    def update(self) -> Comparison:
        self.comparison = compare_rules(self.problem, self.settings, self.rules, self.memo)
        for key, fig in compare_figures(self.comparison).items():
            widget = self.figures[key]
            traces = {trace.meta: trace for trace in widget.data}
            with widget.batch_update():  # only what depends on the numbers: cheap to send and draw
                for new in fig.data:  # traces are matched by their stable id, never by position
                    trace = traces[new.meta]
                    for prop in ("x", "y", "hovertext"):
                        if new[prop] is not None:
                            trace[prop] = new[prop]
                widget.layout.shapes = fig.layout.shapes
                widget.layout.title = fig.layout.title
        self.table.value = self._table_html()
        return self.comparison

    def _table_html(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("rule", "accepted", "mean KL", "max per-state KL",
                                                 "surrogate gain", "ms"))
        rows = "".join(
            f"<tr><td>{LABELS[r['rule']]}</td><td>{'yes' if r['accepted'] else 'no'}</td>"
            f"<td>{r['mean KL']:.3g}</td><td>{r['max per-state KL']:.3g}</td>"
            f"<td>{r['surrogate gain']:.3g}</td><td>{r['ms']:.1f}</td></tr>"
            for r in self.comparison.table())
        return f"<table style='font-family:monospace'><tr>{head}</tr>{rows}</table>"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
