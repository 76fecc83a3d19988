"""The explorer's four views as pure functions: a step report (and what was computed around it) in,
a Plotly figure (views 1–3) or an HTML snippet (view 4) out.

1. `line_search_figure` — real surrogate gain and KL̄ along x·βs, the linear and quadratic models,
   the δ line and every line-search trial (hover: why it was rejected);
2. `trust_region_figure` — a 2-D slice through θ_old: surrogate contours, the real KL̄ = δ contour,
   the model ellipse ½cᵀ(F+λI)c = δ, the gradient, natural and accepted steps;
3. `cg_figure` — CG residuals; for small policies the error against the exact (F+λI)⁻¹g and F's
   eigenvalues with the damping level;
4. `summary_bars_html` — predicted vs actual improvement, final KL̄ vs δ, as HTML bars;
   `summary_table_html` — β, sᵀFs, the improvements, final KL̄, CG iterations, backtracks, verdict
   and why, as an HTML table. (HTML because every slider move redraws them: see `summary_bars_html`.)

Each figure is a fixed skeleton of traces (`_*_base`), each with a stable id in `meta`
("<view>:<trace>", e.g. "line_search:delta") and a display name for the legend, plus
`*_update(...)`, a plain dict of the values that depend on the report, keyed by those ids.
`view_figure = apply_update(base, update)`; the explorer applies the same update dicts to its
`FigureWidget`s inside `batch_update`, which is much cheaper than building new figures.
`trace(fig, key)` finds a trace by id or by display name (notebooks and tests read them by name).
"""

from __future__ import annotations

import math
import re
from html import escape, unescape
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..trust_region import StepReport, UpdateProblem, fisher_operator
from ..widgets import Edits, flat_paths, write_edits
from .landscape import (
    GRID,
    Grid,
    Plane,
    StepCurve,
    curve_coefficients,
    gradient_step,
    model_ellipse,
    slice_grid,
    slice_plane,
    step_curve,
    view_scale,
)
from .session import ExactComparison, Frame

Update = dict[str, Any]  # {"traces": {trace id: properties}, "layout": {...}, "notes": {name: text}}
# (properties as nested dicts, never plotly's magic underscores: `figure_edits` flattens them into
# the attribute paths that plotly's Python figures and plotly.js both take)
ACCEPTED, REJECTED, MODEL, REAL = "#2ca02c", "#d62728", "#7f7f7f", "#1f77b4"
X_MAX = 1.3  # the line-search view shows step fractions 0 … 1.3
KL_AXIS = 2.5  # … and KL̄ from 0 to 2.5 δ (a KL that shoots past that leaves through the top)
NONE: list = []


def trace(fig: go.Figure, key: str):
    """The trace whose stable id (`meta`, e.g. "line_search:delta") or display name (e.g. "δ") is
    `key` (KeyError lists both)."""
    for t in fig.data:
        if t.meta == key:
            return t
    for t in fig.data:
        if t.name == key:
            return t
    raise KeyError(f"no trace {key!r}; traces are: {[(t.meta, t.name) for t in fig.data]}")


def figure_edits(fig: go.Figure, update: Update) -> Edits:
    """`update` as edits of `fig` by plotly.js attribute path: traces by index (found by their
    stable id), nested dicts flattened ("title.text"), notes as the texts of the annotations of
    that name ("annotations.2.text", as plotly writes it)."""
    index = {t.meta: i for i, t in enumerate(fig.data)}  # traces are updated by their stable id
    traces = {index[key]: flat_paths(props) for key, props in update.get("traces", {}).items()}
    layout = flat_paths(update.get("layout", {}))
    if update.get("notes"):
        names = {note.name: k for k, note in enumerate(fig.layout.annotations)}
        for name, text in update["notes"].items():
            layout[f"annotations.{names[name]}.text"] = text
    return traces, layout


def apply_update(fig: go.Figure, update: Update) -> go.Figure:
    """Write an update dict into `fig` (a `go.Figure` or a `FigureWidget`) as one batch."""
    write_edits(fig, figure_edits(fig, update))
    return fig


def fmt(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4g}"


def verdict(report: StepReport) -> str:
    if report.accepted:
        s = "s" if report.backtracks != 1 else ""
        return f"accepted at fraction {report.step_fraction:.3g} after {report.backtracks} backtrack{s}"
    return "rejected: " + report.reason


def _has_step(report: StepReport) -> bool:
    return report.full_step is not None and math.isfinite(report.beta)


def _style(fig: go.Figure, height: int) -> go.Figure:
    # Tick labels may overflow the figure: by default plotly.js measures every label of every axis
    # (getBoundingClientRect, which forces a layout of the whole page) on each redraw to hide the ones
    # that would; that was a quarter of a redraw's JavaScript time in a CPU profile of the explorer.
    fig.update_xaxes(ticklabeloverflow="allow")
    fig.update_yaxes(ticklabeloverflow="allow")
    fig.update_layout(height=height, margin=dict(l=60, r=20, t=60, b=40), template="plotly_white",
                      title=dict(x=0.01, font_size=14), uirevision="explorer",
                      legend=dict(orientation="h", yanchor="top", y=-0.14, x=0, font_size=11))
    return fig


# ───────────────────────────── 1. line search ─────────────────────────────


def _line_search_base() -> go.Figure:
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=("surrogate gain L(θ) − L(θ_old)", "mean KL̄(π_old ‖ π_θ)"))
    line = dict(mode="lines")

    def trials(key: str, name: str, color: str, symbol: str, row: int) -> go.Scatter:
        return go.Scatter(name=name, meta=f"line_search:{key}", mode="markers", showlegend=row == 1,
                          marker=dict(color=color, symbol=symbol, size=11, line_width=1),
                          hovertemplate="x = %{x:.3g}<br>%{y:.4g}<br>%{text}<extra></extra>")

    fig.add_trace(go.Scatter(name="real surrogate gain", meta="line_search:gain", line_color=REAL, **line),
                  1, 1)
    fig.add_trace(go.Scatter(name="linear model g·(xβs)", meta="line_search:linear_model",
                             line=dict(color=MODEL, dash="dash"),
                             **line), 1, 1)
    fig.add_trace(trials("rejected", "rejected trials", REJECTED, "x", 1), 1, 1)
    fig.add_trace(trials("accepted", "accepted trial", ACCEPTED, "circle", 1), 1, 1)
    fig.add_trace(go.Scatter(name="real KL̄", meta="line_search:kl", line_color="#9467bd", **line), 2, 1)
    fig.add_trace(go.Scatter(name="quadratic model ½xᵀFx", meta="line_search:quadratic_model",
                             line=dict(color=MODEL, dash="dash"),
                             **line), 2, 1)
    fig.add_trace(go.Scatter(name="damped model ½xᵀ(F+λI)x", meta="line_search:damped_model",
                             line=dict(color=MODEL, dash="dot"),
                             **line), 2, 1)
    fig.add_trace(go.Scatter(name="δ", meta="line_search:delta", line=dict(color="black", width=1.5),
                             **line), 2, 1)
    fig.add_trace(trials("rejected_kl", "rejected trials (KL)", REJECTED, "x", 2), 2, 1)
    fig.add_trace(trials("accepted_kl", "accepted trial (KL)", ACCEPTED, "circle", 2), 2, 1)
    fig.update_xaxes(range=[0, X_MAX])
    fig.update_xaxes(title_text="step fraction x   (θ = θ_old + x·βs)", row=2, col=1)
    return _style(fig, 500)


def line_search_update(report: StepReport, curve: StepCurve | None = None,
                       problem: UpdateProblem | None = None) -> Update:
    """The line-search view's data: real L and KL̄ along x·βs (the curve, joined by the trials
    themselves), g·(xβs), ½(xβ)²sᵀFs, ½(xβ)²sᵀ(F+λI)s = x²δ, δ, and the trials."""
    delta, damping = report.settings.max_kl, report.settings.damping
    has_step = _has_step(report)
    if has_step and curve is None and problem is not None:
        scale = view_scale(delta)
        curve = step_curve(problem, report.direction, curve_coefficients(report.sAs, scale))
    x, gain, kl = np.array([]), np.array([]), np.array([])
    if has_step and curve is not None:
        x = np.concatenate([curve.t / report.beta, [t.fraction for t in report.trials]])
        gain = np.concatenate([curve.gain, [t.surrogate_gain for t in report.trials]])
        kl = np.concatenate([curve.kl, [t.kl for t in report.trials]])
        order = np.argsort(x, kind="stable")
        keep = x[order] <= X_MAX * (1 + 1e-9)
        x, gain, kl = x[order][keep], gain[order][keep], kl[order][keep]
    xs = np.linspace(0, X_MAX, 53) if has_step else np.array([])
    s = report.direction
    sFs = report.sAs - damping * float(s @ s) if has_step else math.nan
    rej = [t for t in report.trials if not t.accepted]
    acc = [t for t in report.trials if t.accepted]

    def marks(ts: list, key: str) -> dict:
        return dict(x=[t.fraction for t in ts], y=[getattr(t, key) for t in ts],
                    text=[t.reason for t in ts])

    return {"traces": {
        "line_search:gain": dict(x=x, y=gain),
        "line_search:linear_model": dict(x=xs, y=xs * report.predicted_improvement if has_step else NONE),
        "line_search:rejected": marks(rej, "surrogate_gain"),
        "line_search:accepted": marks(acc, "surrogate_gain"),
        "line_search:kl": dict(x=x, y=kl),
        "line_search:quadratic_model": dict(x=xs, y=0.5 * (xs * report.beta) ** 2 * sFs if has_step
                                            else NONE),
        "line_search:damped_model": dict(x=xs, y=xs**2 * delta if has_step else NONE),
        "line_search:delta": dict(x=[0, X_MAX], y=[delta, delta]),
        "line_search:rejected_kl": marks(rej, "kl"),
        "line_search:accepted_kl": marks(acc, "kl"),
    }, "layout": {"title": {"text": f"Line search · δ = {delta:.3g}: {verdict(report)}"},
                  "yaxis2": {"range": [0, KL_AXIS * delta]}}}


def line_search_figure(report: StepReport, curve: StepCurve | None = None,
                       problem: UpdateProblem | None = None) -> go.Figure:
    """View 1 (`line_search_update` on a fresh skeleton); pass `problem` to compute the curve."""
    return apply_update(_line_search_base(), line_search_update(report, curve, problem))


# ───────────────────────────── 2. trust region slice ─────────────────────────────

POINTS = {"gradient_step": "gradient step (same model KL)", "natural_step": "full natural step βs",
          "accepted_step": "accepted step", "theta_old": "θ_old"}  # id → display name


def _trust_region_base() -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Contour(
        name="surrogate gain", meta="trust_region:gain", colorscale="RdBu", zmid=0, ncontours=16,
        line=dict(width=0.5),
        colorbar=dict(title=dict(text="L − L_old", side="right"), len=0.8,
                      ticklabeloverflow="allow"),
        hovertemplate="a = %{x:.3g}<br>b = %{y:.3g}<br>L − L_old = %{z:.4g}<extra></extra>"))
    fig.add_trace(go.Contour(name="real KL̄ = δ", meta="trust_region:kl_contour", autocontour=False,
                             showscale=False, showlegend=True,
                             contours=dict(coloring="lines"), line=dict(width=3), hoverinfo="skip",
                             colorscale=[[0, "black"], [1, "black"]]))
    fig.add_trace(go.Scatter(name="model ½cᵀ(F+λI)c = δ", meta="trust_region:model_ellipse", mode="lines",
                             line=dict(color="#ff7f0e", width=2.5, dash="dash")))
    looks = (("diamond", "#8c564b"), ("star", "#9467bd"), ("circle", ACCEPTED), ("cross", "black"))
    for (key, name), (symbol, color) in zip(POINTS.items(), looks):
        fig.add_trace(go.Scatter(name=name, meta=f"trust_region:{key}", mode="markers",
                                 marker=dict(symbol=symbol, size=14, color=color,
                                             line=dict(width=1, color="white")),
                                 hovertemplate="%{text}<br>a = %{x:.3g}, b = %{y:.3g}<extra></extra>"))
    return _style(fig, 500)


def trust_region_update(report: StepReport, plane: Plane | None = None, grid: Grid | None = None,
                        problem: UpdateProblem | None = None, grid_size: int | tuple[int, int] = GRID
                        ) -> Update:
    """The slice θ_old + a·ŝ + b·v̂ of the plane span{s, g} (v̂: g made (F+λI)-conjugate to ŝ, so
    the model ellipse is axis-aligned): contours of the real surrogate gain, the real KL̄ = δ
    contour, the model ellipse, the gradient / natural / accepted steps."""
    delta, damping = report.settings.max_kl, report.settings.damping
    has_step = _has_step(report)
    if has_step and plane is None and problem is not None:
        plane = slice_plane(report.direction, report.grad, fisher_operator(problem), damping)
    if has_step and grid is None and problem is not None and plane is not None:
        grid = slice_grid(problem, plane, view_scale(delta), grid_size)
    if not has_step:
        plane = grid = None
    traces: dict[str, dict] = {}
    if grid is not None:
        traces["trust_region:gain"] = dict(x=grid.a, y=grid.b, z=grid.gain)
        traces["trust_region:kl_contour"] = dict(x=grid.a, y=grid.b, z=grid.kl,
                                      contours=dict(start=delta, end=delta, size=delta))
    else:
        traces["trust_region:gain"] = dict(x=NONE, y=NONE, z=NONE)
        traces["trust_region:kl_contour"] = dict(x=NONE, y=NONE, z=NONE)
    ex, ey = model_ellipse(plane, delta) if plane is not None else (NONE, NONE)
    traces["trust_region:model_ellipse"] = dict(x=ex, y=ey)
    if plane is not None:
        gx, gy = gradient_step(plane, delta)
        natural = report.beta * plane.step_length
        taken = report.step_fraction * natural if report.accepted else 0.0
        where = {"gradient_step": (gx, gy), "natural_step": (natural, 0.0), "accepted_step": (taken, 0.0),
                 "theta_old": (0.0, 0.0)}
    else:
        where = {key: (math.nan, math.nan) for key in list(POINTS)[:3]} | {"theta_old": (0.0, 0.0)}
    label = POINTS | {"accepted_step": "accepted step" if report.accepted else
                      "no step accepted: θ stays at θ_old"}
    for key, (x, y) in where.items():
        traces[f"trust_region:{key}"] = dict(x=[x], y=[y], text=[label[key]])
    traces["trust_region:accepted_step"]["marker"] = {"color": ACCEPTED if report.accepted else REJECTED}
    second = "gradient" if plane is None else plane.second
    title = f"Trust-region slice · δ = {delta:.3g}, λ = {damping:.3g}"
    return {"traces": traces, "layout": {
        "title": {"text": title if has_step else f"{title}: {verdict(report)}"},
        "xaxis": {"title": {"text": "a along ŝ = s/‖s‖ (natural direction)"},
                  "range": [float(grid.a[0]), float(grid.a[-1])] if grid is not None else None},
        "yaxis": {"title": {"text": "b along v̂: g made (F+λI)-conjugate to ŝ" if second == "gradient"
                            else f"b along {second}, (F+λI)-conjugate to ŝ (g ∥ s here)"},
                  "range": [float(grid.b[0]), float(grid.b[-1])] if grid is not None else None}}}


def trust_region_figure(report: StepReport, plane: Plane | None = None, grid: Grid | None = None,
                        problem: UpdateProblem | None = None, grid_size: int | tuple[int, int] = GRID
                        ) -> go.Figure:
    """View 2; pass `problem` to compute the plane and grid (or give them, e.g. from a `Frame`)."""
    return apply_update(_trust_region_base(),
                        trust_region_update(report, plane, grid, problem, grid_size))


# ───────────────────────────── 3. conjugate gradient ─────────────────────────────


def _cg_base() -> go.Figure:
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09, subplot_titles=(
        "CG residual ‖g − (F+λI)x_k‖", "error vs exact x* = (F+λI)⁻¹g", "Fisher spectrum and λ"))
    fig.add_trace(go.Scatter(name="CG residual ‖r_k‖", meta="cg:residual", mode="lines+markers",
                             line_color=REAL), 1, 1)
    fig.add_trace(go.Scatter(name="stop: ‖r‖² < cg_tol", meta="cg:tolerance", mode="lines",
                             line=dict(color=MODEL, dash="dot")), 1, 1)
    fig.add_trace(go.Scatter(name="relative error ‖x_k − x*‖/‖x*‖", meta="cg:error", mode="lines+markers",
                             line_color="#ff7f0e"), 1, 2)
    fig.add_trace(go.Scatter(name="eigenvalues of F", meta="cg:eigenvalues", mode="lines",
                             line_color="#9467bd"), 1, 3)
    fig.add_trace(go.Scatter(name="damping λ", meta="cg:damping", mode="lines",
                             line=dict(color="black", dash="dash")),
                  1, 3)
    fig.update_yaxes(type="log", exponentformat="power")
    fig.update_xaxes(title_text="iteration k", row=1, col=1)
    fig.update_xaxes(title_text="iteration k", row=1, col=2)
    fig.update_xaxes(title_text="eigenvalue index (descending)", type="log", row=1, col=3)
    fig.add_annotation(name="note", text="", xref="paper", yref="paper", x=0, y=0, yshift=-78,
                       showarrow=False, xanchor="left", yanchor="top", font_size=11)
    for col in (2, 3):
        fig.add_annotation(name=f"panel {col}", text="", xref=f"x{col} domain", yref=f"y{col} domain",
                           x=0.5, y=0.5, showarrow=False, font=dict(size=12, color=MODEL))
    _style(fig, 440)
    fig.update_layout(margin_b=105, legend_y=-0.2)
    return fig


def cg_update(report: StepReport, exact: ExactComparison | None = None, exact_note: str = ""
              ) -> Update:
    """‖r_k‖ per CG iteration; with the exact F: ‖x_k − x*‖/‖x*‖ and F's eigenvalues vs λ."""
    damping, tol = report.settings.damping, report.settings.cg_tol
    norms = report.cg.residual_norms if report.cg is not None else NONE
    traces = {"cg:residual": dict(x=list(range(len(norms))), y=norms),
              "cg:tolerance": dict(x=[0, max(len(norms) - 1, 1)], y=[math.sqrt(tol)] * 2)}
    if exact is not None:
        eig = exact.eigenvalues
        traces["cg:error"] = dict(x=list(range(len(exact.errors))),
                                                      y=exact.errors)
        traces["cg:eigenvalues"] = dict(x=np.arange(1, len(eig) + 1), y=np.where(eig > 0, eig, np.nan))
        traces["cg:damping"] = dict(x=[1, len(eig)], y=[damping, damping])
        top = float(eig.max())
        kappa = (top + damping) / (max(float(eig.min()), 0.0) + damping)
        note = (f"CG's s vs x*: relative error {exact.relative_error:.2e}, angle {exact.angle:.3g}° · "
                f"vs undamped F⁺g: angle {exact.angle_natural:.3g}° · κ(F+λI) = {kappa:.3g} · "
                f"{int((eig < damping).sum())} of {len(eig)} eigenvalues below λ")
    else:
        for key in ("cg:error", "cg:eigenvalues", "cg:damping"):
            traces[key] = dict(x=NONE, y=NONE)
        note = exact_note or "exact comparison not computed"
    panel = "" if exact is not None else "needs the exact F<br>(small policies only)"
    return {"traces": traces, "notes": {"note": note, "panel 2": panel, "panel 3": panel},
            **cg_title_update(report)}


def cg_title_update(report: StepReport) -> Update:
    """The CG view's title: the solve's settings (damping, CG iterations) and outcome."""
    cg, st = report.cg, report.settings
    stop = f"{cg.iterations} iterations, {cg.stopped}" if cg is not None else "no CG solve"
    return {"layout": {"title": {"text": (
        f"Conjugate gradient · λ = {st.damping:.3g}, cg_iters = {st.cg_iters}: {stop}")}}}


def cg_caption(report: StepReport) -> str:
    """The line under the CG view's title: the δ and line search its direction serves. s = (F + λI)⁻¹g
    depends on neither, so the explorer shows this as text beside the figure (moving δ or a
    line-search slider then leaves the CG figure alone instead of redrawing it for its title)."""
    st = report.settings
    return (f"<span style='font-family:sans-serif;font-size:12px;color:#555'>The same s for every δ "
            f"(now {st.max_kl:.3g}) and line search (coef {st.backtrack_coef:.3g}, ≤ "
            f"{st.backtrack_iters} trials): s = (F + λI)⁻¹g depends on neither.</span>")


def cg_figure(report: StepReport, exact: ExactComparison | None = None, exact_note: str = ""
              ) -> go.Figure:
    """View 3 (the exact comparison comes from `ExplorerSession`, for small policies)."""
    return apply_update(_cg_base(), cg_update(report, exact, exact_note))


# ───────────────────────────── 4. summary ─────────────────────────────


def summary_rows(report: StepReport) -> list[tuple[str, str]]:
    """(quantity, value) rows of the summary view, with 4 significant digits."""
    s, cg = report.direction, report.cg
    sFs = report.sAs - report.settings.damping * float(s @ s) if s is not None else math.nan
    return [
        ("verdict", "accepted" if report.accepted else "rejected"),
        ("why", report.reason),
        ("δ (max KL)", fmt(report.settings.max_kl)),
        ("damping λ", fmt(report.settings.damping)),
        ("CG iterations", f"{cg.iterations} of {report.settings.cg_iters} ({cg.stopped})"
         if cg is not None else "—"),
        ("final CG residual", fmt(cg.residual_norms[-1]) if cg is not None else "—"),
        ("β = √(2δ / sᵀ(F+λI)s)", fmt(report.beta)),
        ("sᵀ(F+λI)s", fmt(report.sAs)),
        ("sᵀFs", fmt(sFs)),
        ("predicted improvement g·βs", fmt(report.predicted_improvement)),
        ("actual improvement L(θ_new) − L(θ_old)", fmt(report.surrogate_gain)),
        ("final KL̄(π_old ‖ π_new)", fmt(report.kl)),
        ("step fraction", fmt(report.step_fraction)),
        ("backtracks", str(report.backtracks)),
    ]


def summary_table_html(report: StepReport) -> str:
    """The rows of `summary_rows` as an HTML table (verdict and why in green or red). The explorer
    shows it in an `HTML` widget beside the summary's bars: a Plotly table is redrawn as SVG text on
    every change, which cost the page more than the other three figures did for a δ move."""
    color = ACCEPTED if report.accepted else REJECTED
    cells = "".join(
        f"<tr><td>{escape(name)}</td><td style='color:{color if i < 2 else 'black'}'>"
        f"{escape(value)}</td></tr>" for i, (name, value) in enumerate(summary_rows(report)))
    return ("<table class='trpo-summary-table' style='font-family:sans-serif;font-size:12px;"
            "border-collapse:collapse;width:100%'><thead><tr style='background:#eeeeee'>"
            f"<th align='left'>quantity</th><th align='left'>value</th></tr></thead><tbody>{cells}"
            "</tbody></table>")


def table_rows(html: str) -> dict[str, str]:
    """{quantity: value} read back from `summary_table_html` or `summary_html` (what the page shows)."""
    return {unescape(a): unescape(b)
            for a, b in re.findall(r"<tr><td>(.*?)</td><td[^>]*>(.*?)</td></tr>", html)}


def _bar_row(key: str, label: str, value: float, lo: float, hi: float, color: str,
             mark: tuple[str, float] | None = None) -> str:
    """One labelled horizontal bar from 0 to `value` on the axis [lo, hi] (lo ≤ 0 ≤ hi), with an
    optional vertical mark (label, position); `data-value` holds the number drawn."""
    def at(x: float) -> float:  # position on the track, in percent
        return 100.0 * (min(max(x, lo), hi) - lo) / (hi - lo)

    finite = math.isfinite(value)
    left, right = sorted((at(0.0), at(value))) if finite else (at(0.0), at(0.0))
    bar = (f"<div style='position:absolute;top:2px;bottom:2px;left:{left:.2f}%;"
           f"width:{right - left:.2f}%;background:{color}'></div>")
    zero = (f"<div style='position:absolute;top:0;bottom:0;left:{at(0.0):.2f}%;width:1px;"
            "background:#555'></div>") if lo < 0 else ""
    line = ""
    if mark is not None:
        line = (f"<div style='position:absolute;top:-3px;bottom:-3px;left:{at(mark[1]):.2f}%;width:2px;"
                f"background:black'></div><div style='position:absolute;top:-19px;left:{at(mark[1]):.2f}%;"
                f"transform:translateX(-50%);font-size:12px'>{escape(mark[0])}</div>")
    return (f"<div class='trpo-bar' data-key='{key}' data-value='{float(value)!r}' style='display:flex;"
            "align-items:center;gap:8px;margin:4px 0'>"
            f"<div style='width:170px;flex:none'>{escape(label)}</div>"
            "<div style='position:relative;flex:1;height:16px;background:#f2f2f2'>"
            f"{zero}{bar}{line}</div>"
            f"<div style='width:70px;flex:none;text-align:right'>{escape(fmt(value))}</div></div>")


def summary_bars_html(report: StepReport) -> str:
    """The summary's bars as HTML: predicted (g·βs, and at the accepted step fraction) vs actual
    improvement of the surrogate, and the final KL̄ against δ. HTML, not a Plotly figure, because
    the explorer redraws it on every slider move: as a fourth Plotly figure it added a whole
    replot (axes, text, layout) to each δ move in the browser (issue 10; README, browser latency).
    `bar_values` reads the numbers back."""
    color = ACCEPTED if report.accepted else REJECTED
    delta = report.settings.max_kl
    predicted_at = report.step_fraction * report.predicted_improvement if report.accepted else 0.0
    gains = [("predicted", "predicted g·βs (full step)", report.predicted_improvement, MODEL),
             ("predicted_at", "predicted x·g·βs (taken)", predicted_at, MODEL),
             ("actual", "actual L(θ_new) − L(θ_old)", report.surrogate_gain, color)]
    finite = [v for _, _, v, _ in gains if math.isfinite(v)]
    lo, hi = min([0.0, *finite]), max([0.0, *finite])
    if hi - lo <= 0:
        hi = 1.0
    kl_hi = 1.25 * max(delta, report.kl if math.isfinite(report.kl) else 0.0)
    head = "<div style='font-weight:bold;margin:6px 0 2px'>{}</div>"
    return ("<div class='trpo-summary-bars' style='font-family:sans-serif;font-size:12px'>"
            + head.format("improvement of the surrogate")
            + "".join(_bar_row(key, label, value, lo, hi, c) for key, label, value, c in gains)
            + head.format("final KL̄ vs δ")
            + "<div style='height:14px'></div>"
            + _bar_row("final_kl", "final KL̄(π_old ‖ π_new)", report.kl, 0.0, kl_hi, color,
                       mark=("δ", delta))
            + "</div>")


def summary_html(report: StepReport) -> str:
    """View 4 as the explorer shows it, in one HTML widget (one message per move): the table of
    numbers (`summary_table_html`) beside the bars (`summary_bars_html`)."""
    return ("<div style='display:flex;gap:24px;align-items:flex-start'>"
            f"<div style='flex:0 0 40%'>{summary_table_html(report)}</div>"
            f"<div style='flex:1;min-width:0'>{summary_bars_html(report)}</div></div>")


def bar_values(html: str) -> dict[str, float]:
    """{bar key: value} read back from `summary_bars_html` or `summary_html` (what the page draws):
    predicted, predicted_at, actual, final_kl."""
    return {k: float(v) for k, v in re.findall(r"data-key='(\w+)' data-value='([^']*)'", html)}


# ───────────────────────────── legends ─────────────────────────────

SYMBOLS = {"circle": "●", "x": "✕", "diamond": "◆", "star": "★", "cross": "✚", "square": "■"}
DASHES = {"dash": "dashed", "dot": "dotted"}


def _swatch(t: Any) -> str:
    """What a legend shows for trace `t`: its line (color, dash) and/or its marker (symbol, color)."""
    mode = getattr(t, "mode", None) or ""
    parts = []
    if t.type == "contour" or "lines" in mode:
        line = t.line
        color = line.color or (t.colorscale[-1][1] if t.type == "contour" and t.colorscale else MODEL)
        width = min(max(line.width or 2, 1.5), 3)
        parts.append(f"<span style='display:inline-block;width:26px;height:0;vertical-align:middle;"
                     f"border-top:{width:g}px {DASHES.get(line.dash or '', 'solid')} {color}'></span>")
    if "markers" in mode:
        marker = t.marker
        color = marker.color if isinstance(marker.color, str) else (t.line.color or MODEL)
        symbol = SYMBOLS.get(marker.symbol if isinstance(marker.symbol, str) else "circle", "●")
        margin = "margin-left:-17px;" if parts else ""
        parts.append(f"<span style='{margin}color:{color};font-size:13px;vertical-align:middle'>"
                     f"{symbol}</span>")
    return "".join(parts)


def legend_entries(fig: go.Figure) -> list[tuple[str, str]]:
    """(stable id, display name) of the traces a Plotly legend of `fig` would list, in its order:
    scatter traces unless `showlegend=False`, other traces only with `showlegend=True`."""
    return [(t.meta, t.name) for t in fig.data
            if (t.showlegend is not False if t.type == "scatter" else t.showlegend is True)]


LEGEND_PROPERTIES = ("name", "showlegend", "mode", "line", "marker", "colorscale")
"""The trace properties a legend entry is drawn from (`_swatch`, `legend_entries`)."""


def edits_change_legend(fig: go.Figure, edits: Edits) -> bool:
    """Whether `edits` (`figure_edits`, not yet written into `fig`) give a property the legend
    shows a new value, so that `legend_html` must be built again. Most moves change only data
    (x, y, z, text); the accepted step's marker colour is re-sent with every move of the trust-region
    view but changes only when the verdict does. A value other than a plain scalar counts as new."""
    traces, _ = edits
    for index, props in traces.items():
        for path, value in props.items():
            if path.split(".", 1)[0] in LEGEND_PROPERTIES and not (
                    isinstance(value, str | int | float | bool) and value == fig.data[index][path]):
                return True
    return False


def legend_html(fig: go.Figure) -> str:
    """`fig`'s legend as HTML (each entry: the trace's line and marker as they are drawn now, its
    display name; `data-key` holds its stable id). The explorer shows its figures' legends this way
    (their `showlegend` off): Plotly lays out and measures its legend again on every redraw, ~7 of the
    ~45 ms of JavaScript a δ move cost the page (issue 10; README, browser latency); this HTML changes
    only when a swatch does (the accepted step's marker turns red when no step is accepted)."""
    by_id = {t.meta: t for t in fig.data}
    items = "".join(
        f"<span class='trpo-legend-item' data-key='{escape(key)}' style='display:inline-flex;"
        f"align-items:center;gap:5px;margin-right:14px;white-space:nowrap'>{_swatch(by_id[key])}"
        f"{escape(name)}</span>" for key, name in legend_entries(fig))
    return (f"<div class='trpo-legend' style='font-family:sans-serif;font-size:11px;color:#444;"
            f"line-height:20px;padding:0 0 4px 60px'>{items}</div>")


# ───────────────────────────── all three figures ─────────────────────────────

BASES = {"line_search": _line_search_base, "trust_region": _trust_region_base, "cg": _cg_base}


def frame_updates(frame: Frame, views: tuple[str, ...] = tuple(BASES)) -> dict[str, Update]:
    """The update dicts of the requested views of one explorer frame."""
    r = frame.report
    make = {"line_search": lambda: line_search_update(r, frame.curve),
            "trust_region": lambda: trust_region_update(r, frame.plane, frame.grid),
            "cg": lambda: cg_update(r, frame.exact, frame.exact_note)}
    return {name: make[name]() for name in views}


def frame_figures(frame: Frame) -> dict[str, go.Figure]:
    """The three figures of one explorer frame, new."""
    return {name: apply_update(BASES[name](), update) for name, update in frame_updates(frame).items()}
