"""Figures of a sweep: pure functions of its results table (and the trials' histories).

    heatmap_figure(rows, "max_kl", "damping")          final return, mean over seeds; spread on hover
    curves_figure(rows, histories, ["max_kl", …])      learning curves, one colour per setting, seed band
    return_vs_time_figure(rows, histories, [...])      return against each trial's training wall-clock
    SweepBrowser(rows, histories, "max_kl", "damping") the heatmap as a widget: click a cell (or pick a
                                                       setting) to see that setting's curves

`rows` come from `run_sweep` / `read_table`; `histories` maps a trial id to its records
(`load_histories`). Plotly is imported inside the functions. Traces carry stable ids in `meta`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dashboard import COLORS
from .metrics import read_metrics


def load_histories(out: str | Path, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict]]:
    """Each trial's history (its metrics file), by trial id."""
    return {r["trial"]: read_metrics(Path(out) / Path(r["history"]).parent) for r in rows}


def _key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def label(setting: Mapping[str, Any]) -> str:
    """'max_kl=0.01, damping=0.1'."""
    return ", ".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                     for k, v in setting.items())


def group_by(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> dict[tuple, list[Mapping]]:
    """Rows grouped by their values of `fields` (the seeds of one setting together), in table order."""
    groups: dict[tuple, list[Mapping]] = {}
    for r in rows:
        groups.setdefault(tuple(_key(r[f]) for f in fields), []).append(r)
    return groups


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def heatmap_cells(rows: Sequence[Mapping[str, Any]], x: str, y: str, value: str = "final_return"):
    """(x values, y values, mean z[y][x], spread [y][x] as (std, min, max, n)) of `value` over seeds."""
    xs = sorted({_key(r[x]) for r in rows})
    ys = sorted({_key(r[y]) for r in rows})
    groups = group_by(rows, [x, y])
    z = [[math.nan] * len(xs) for _ in ys]
    spread = [[(math.nan, math.nan, math.nan, 0)] * len(xs) for _ in ys]
    for (vx, vy), members in groups.items():
        values = _finite([m[value] for m in members])
        i, j = ys.index(vy), xs.index(vx)
        if values:
            z[i][j] = float(np.mean(values))
            spread[i][j] = (float(np.std(values)), min(values), max(values), len(values))
    return xs, ys, z, spread


def _tick(v: Any) -> str:
    return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)


def heatmap_figure(rows: Sequence[Mapping[str, Any]], x: str, y: str, value: str = "final_return",
                   height: int = 420):
    """`value` (mean over seeds) over two swept fields; hover shows std, min, max and the seeds."""
    import plotly.graph_objects as go

    if not rows:
        raise ValueError("heatmap_figure: the table has no rows")
    for f in (x, y):
        if f not in rows[0]:
            raise ValueError(f"heatmap_figure: {f!r} is not a column of the table; "
                             f"columns are {list(rows[0])}")
    xs, ys, z, spread = heatmap_cells(rows, x, y, value)
    custom = [[[s[0], s[1], s[2], s[3]] for s in line] for line in spread]
    text = [[f"{v:.1f}" if math.isfinite(v) else "" for v in line] for line in z]
    fig = go.Figure(go.Heatmap(
        x=[_tick(v) for v in xs], y=[_tick(v) for v in ys], z=z, customdata=custom, text=text,
        texttemplate="%{text}", colorscale="Viridis", colorbar=dict(title=value),
        hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{value}: mean %{{z:.1f}} ± %{{customdata[0]:.1f}} (std)"
                      "<br>min %{customdata[1]:.1f}, max %{customdata[2]:.1f} over %{customdata[3]} seeds"
                      "<extra></extra>",
        meta={"id": "heatmap", "x": x, "y": y, "value": value}))
    fig.update_xaxes(title_text=x, type="category")
    fig.update_yaxes(title_text=y, type="category")
    fig.update_layout(template="plotly_white", height=height, margin=dict(t=50, b=50, l=70, r=20),
                      title=dict(text=f"{value} (mean over seeds); click a cell", x=0.01))
    return fig


def _band(histories: Sequence[Sequence[Mapping]], column: str, x: str):
    """x, mean, min, max of `column` across seeds, on the iterations all seeds reached."""
    n = min(len(h) for h in histories)
    xs = [histories[0][i][x] for i in range(n)]
    values = np.array([[h[i][column] for i in range(n)] for h in histories], dtype=float)
    with np.errstate(all="ignore"), _quiet():
        return xs, np.nanmean(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)


class _quiet:
    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns before the first episode

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _none(values) -> list:
    return [None if not math.isfinite(v) else float(v) for v in values]


def curves_figure(rows: Sequence[Mapping[str, Any]], histories: Mapping[str, Sequence[Mapping]],
                  fields: Sequence[str], x: str = "steps", column: str = "mean_return",
                  height: int = 420, title: str = "learning curves: mean over seeds, band: min–max"):
    """One colour per setting of `fields`: the mean over seeds of `column`, and a min–max band."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (values, members) in enumerate(group_by(rows, fields).items()):
        name = label(dict(zip(fields, values)))
        color = COLORS[i % len(COLORS)]
        xs, mean, lo, hi = _band([histories[m["trial"]] for m in members], column, x)
        fig.add_trace(go.Scatter(x=list(xs) + list(xs)[::-1], y=_none(hi) + _none(lo)[::-1],
                                 fill="toself", mode="lines",
                                 fillcolor=color, opacity=0.2, line=dict(width=0), hoverinfo="skip",
                                 showlegend=False, legendgroup=name,
                                 meta={"id": f"band:{name}", "setting": name, "seeds": len(members)}))
        fig.add_trace(go.Scatter(x=xs, y=_none(mean), name=f"{name} ({len(members)} seeds)", mode="lines",
                                 line=dict(color=color), legendgroup=name,
                                 meta={"id": f"mean:{name}", "setting": name, "seeds": len(members)}))
    fig.update_layout(template="plotly_white", height=height, margin=dict(t=50, b=50, l=60, r=20),
                      title=dict(text=title, x=0.01), xaxis_title=x, yaxis_title=column)
    return fig


def return_vs_time_figure(rows: Sequence[Mapping[str, Any]], histories: Mapping[str, Sequence[Mapping]],
                          fields: Sequence[str], column: str = "mean_return", height: int = 420):
    """Each trial's `column` against its cumulative training seconds (sampling + step + value fit),
    coloured by setting."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (values, members) in enumerate(group_by(rows, fields).items()):
        name = label(dict(zip(fields, values)))
        for k, m in enumerate(members):
            h = histories[m["trial"]]
            seconds = np.cumsum([r["sample_seconds"] + r["update_seconds"] + r["value_seconds"] for r in h])
            fig.add_trace(go.Scatter(x=seconds.tolist(), y=_none([r[column] for r in h]), mode="lines",
                                     name=name, legendgroup=name, showlegend=k == 0,
                                     line=dict(color=COLORS[i % len(COLORS)]),
                                     meta={"id": f"trial:{m['trial']}", "setting": name, "seed": m["seed"]}))
    fig.update_layout(template="plotly_white", height=height, margin=dict(t=50, b=50, l=60, r=20),
                      title=dict(text=f"{column} vs training wall-clock (one line per trial)", x=0.01),
                      xaxis_title="seconds of training", yaxis_title=column)
    return fig


class SweepBrowser:
    """The heatmap as a widget: clicking a cell, or picking a setting in `picker`, draws that
    setting's learning curves (seed band) below it. Display `browser.widget`."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], histories: Mapping[str, Sequence[Mapping]],
                 x: str, y: str, value: str = "final_return"):
        import ipywidgets as W

        from .widgets import preload_plotly_widgets, shared_bundle_figure_widget

        preload_plotly_widgets()
        figure_widget = shared_bundle_figure_widget()
        self.rows, self.histories, self.x, self.y = list(rows), histories, x, y
        self.heatmap = figure_widget(heatmap_figure(self.rows, x, y, value))
        self.curves = figure_widget(curves_figure([], histories, [x, y], title="click a cell"))
        self.cells = {label({x: vx, y: vy}): (vx, vy) for vx, vy in group_by(self.rows, [x, y])}
        self.picker = W.Dropdown(options=list(self.cells), description="setting",
                                 style={"description_width": "initial"})
        self.picker.observe(lambda change: self.show(*self.cells[change["new"]]), names="value")
        self.heatmap.data[0].on_click(self._clicked)
        self.widget = W.VBox([self.heatmap, self.picker, self.curves])
        self.shown: tuple | None = None
        self.show(*self.cells[self.picker.value])

    def _clicked(self, trace, points, state) -> None:
        if points.xs:
            vx = next(v for v in {_key(r[self.x]) for r in self.rows} if _tick(v) == str(points.xs[0]))
            vy = next(v for v in {_key(r[self.y]) for r in self.rows} if _tick(v) == str(points.ys[0]))
            self.picker.value = label({self.x: vx, self.y: vy})  # observe() redraws

    def show(self, vx: Any, vy: Any) -> None:
        """Draw the curves of the setting x = vx, y = vy (all its seeds)."""
        members = [r for r in self.rows if _key(r[self.x]) == vx and _key(r[self.y]) == vy]
        fresh = curves_figure(members, self.histories, [self.x, self.y],
                              title=f"{label({self.x: vx, self.y: vy})}: mean over seeds, band: min–max")
        with self.curves.batch_update():
            self.curves.data = []
            for trace in fresh.data:
                self.curves.add_trace(trace)
            self.curves.layout.title = fresh.layout.title
        self.shown = (vx, vy)
