"""The four views are pure functions of a step report (and what was computed around it): three
Plotly figures and the summary's HTML."""

from __future__ import annotations

import json
import math

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from trpo_lab import make_update_problem, trpo_step
from trpo_lab.explore import ExplorerSession, Settings, make_snapshot
from trpo_lab.explore.views import (
    ACCEPTED,
    apply_update,
    bar_values,
    cg_figure,
    frame_figures,
    line_search_figure,
    summary_bars_html,
    summary_html,
    summary_rows,
    summary_table_html,
    table_rows,
    trace,
    trust_region_figure,
)

SMALL = dict(hidden_sizes=(16, 16), batch_steps=512)


@pytest.fixture(scope="module", params=["CartPole-v1", "Pendulum-v1"])
def snap(request):
    return make_snapshot(request.param, **SMALL)


def test_each_view_builds_from_a_report_and_its_problem(snap):
    problem = snap.problem()
    report = trpo_step(problem, max_kl=0.01, damping=0.1)
    figs = {"line_search": line_search_figure(report, problem=problem),
            "trust_region": trust_region_figure(report, problem=problem),
            "cg": cg_figure(report)}
    for name, fig in figs.items():
        assert isinstance(fig, go.Figure), name
        assert fig.layout.title.text, name
    assert set(bar_values(summary_bars_html(report))) == {"predicted", "predicted_at", "actual", "final_kl"}
    assert len(trace(figs["line_search"], "real surrogate gain").x) > 10
    assert np.asarray(trace(figs["trust_region"], "surrogate gain").z).shape == (7, 9)  # b × a
    assert list(trace(figs["cg"], "CG residual ‖r_k‖").y) == report.cg.residual_norms


def test_line_search_view_shows_the_trials_the_models_and_delta(snap):
    problem = snap.problem()
    report = trpo_step(problem, max_kl=0.01, damping=1e-4)
    fig = line_search_figure(report, problem=problem)
    assert list(trace(fig, "δ").y) == [0.01, 0.01]
    acc, rej = trace(fig, "accepted trial (KL)"), trace(fig, "rejected trials (KL)")
    assert list(acc.x) == [report.step_fraction] and acc.y[0] <= 0.01
    assert len(rej.x) == report.backtracks and all(k > 0.01 or "surrogate" in r
                                                   for k, r in zip(rej.y, rej.text))
    x = np.asarray(trace(fig, "damped model ½xᵀ(F+λI)x").x)
    np.testing.assert_allclose(trace(fig, "damped model ½xᵀ(F+λI)x").y, x**2 * 0.01)
    np.testing.assert_allclose(trace(fig, "linear model g·(xβs)").y, x * report.predicted_improvement)
    kl_model = np.asarray(trace(fig, "quadratic model ½xᵀFx").y)
    assert kl_model[-1] < x[-1] ** 2 * 0.01  # undamped curvature is smaller than the damped model's
    assert "accepted at fraction" in fig.layout.title.text


def test_trust_region_view_points_lie_where_the_math_says(snap):
    session = ExplorerSession(snap)
    frame = session.compute(snap.name, Settings(max_kl=0.01, damping=0.1))
    fig = frame_figures(frame)["trust_region"]
    plane, r = frame.plane, frame.report
    natural = trace(fig, "full natural step βs")
    assert natural.x[0] == pytest.approx(r.beta * float(r.direction.norm())) and natural.y[0] == 0
    assert trace(fig, "accepted step").x[0] == pytest.approx(r.step_fraction * natural.x[0])
    g = np.array([trace(fig, "gradient step (same model KL)").x[0],
                  trace(fig, "gradient step (same model KL)").y[0]])
    assert 0.5 * g @ plane.A @ g == pytest.approx(0.01)  # on the model ellipse
    kl = trace(fig, "real KL̄ = δ")
    assert kl.contours.start == kl.contours.end == 0.01
    assert list(fig.layout.xaxis.range) == [frame.grid.a[0], frame.grid.a[-1]]


def test_cg_view_with_and_without_the_exact_fisher(snap):
    frame = ExplorerSession(snap).compute(snap.name, Settings(damping=0.01))
    fig = frame_figures(frame)["cg"]
    eig = np.asarray(trace(fig, "eigenvalues of F").y, float)
    assert len(eig) == snap.num_params and np.nanmax(eig) == frame.exact.eigenvalues[0]
    assert list(trace(fig, "damping λ").y) == [0.01, 0.01]
    assert "relative error" in fig.layout.annotations[-3].text
    no_exact = ExplorerSession(snap, exact_max_params=10).compute(snap.name, Settings())
    fig = frame_figures(no_exact)["cg"]
    assert len(trace(fig, "eigenvalues of F").y) == 0
    notes = {a.name: a.text for a in fig.layout.annotations if a.name}
    assert "exact F not formed" in notes["note"] and "small policies" in notes["panel 2"]


def test_summary_view_states_the_numbers_of_the_report(snap):
    report = trpo_step(snap.problem(), max_kl=0.02, damping=0.1)
    bars = bar_values(summary_bars_html(report))
    html = summary_table_html(report)
    rows = table_rows(html)
    assert rows == dict(summary_rows(report))
    assert f"color:{ACCEPTED}'>accepted</td>" in html  # the verdict in green
    assert rows["verdict"] == "accepted" and rows["backtracks"] == str(report.backtracks)
    assert float(rows["β = √(2δ / sᵀ(F+λI)s)"]) == pytest.approx(report.beta, rel=1e-3)
    assert float(rows["final KL̄(π_old ‖ π_new)"]) == pytest.approx(report.kl, rel=1e-3)
    assert float(rows["predicted improvement g·βs"]) == pytest.approx(report.predicted_improvement,
                                                                      rel=1e-3)
    s = report.direction
    assert float(rows["sᵀFs"]) == pytest.approx(report.sAs - 0.1 * float(s @ s), rel=1e-3)
    assert bars == {"predicted": report.predicted_improvement, "actual": report.surrogate_gain,
                    "predicted_at": report.step_fraction * report.predicted_improvement,
                    "final_kl": report.kl}


def test_summary_bars_are_drawn_to_scale_with_the_delta_mark():
    """Bars start at the zero line and end at their value on a shared axis; the δ mark sits at
    δ on the KL axis, which spans 1.25 · max(δ, KL̄)."""
    import re
    from types import SimpleNamespace

    report = SimpleNamespace(accepted=True, step_fraction=0.5, predicted_improvement=0.04,
                             surrogate_gain=-0.02, kl=0.01, settings=SimpleNamespace(max_kl=0.02))
    html = summary_bars_html(report)
    positions = {k: tuple(float(x) for x in re.findall(
        r"data-key='" + k
        + r"'.*?<div style='position:absolute;top:2px;bottom:2px;left:([\d.]+)%;width:([\d.]+)%",
        html)[0]) for k in ("predicted", "predicted_at", "actual", "final_kl")}
    zero = 100 * 0.02 / 0.06  # the improvement axis spans [−0.02, 0.04]
    assert positions["predicted"] == pytest.approx((zero, 100 - zero), abs=0.01)
    assert positions["predicted_at"] == pytest.approx((zero, 100 * 0.02 / 0.06), abs=0.01)
    assert positions["actual"] == pytest.approx((0.0, zero), abs=0.01)  # negative: left of zero
    assert positions["final_kl"] == pytest.approx((0.0, 100 * 0.01 / 0.025), abs=0.01)
    mark = re.search(r"left:([\d.]+)%;width:2px;background:black", html)
    assert float(mark.group(1)) == pytest.approx(100 * 0.02 / 0.025, abs=0.01)
    nan = SimpleNamespace(**{**vars(report), "kl": math.nan, "surrogate_gain": math.nan})
    assert math.isnan(bar_values(summary_bars_html(nan))["final_kl"])


def test_views_of_a_rejected_step_build_and_say_why():
    torch.manual_seed(0)
    snap = make_snapshot("CartPole-v1", **SMALL)
    p = snap.problem()
    zero = make_update_problem(p.policy, p.obs, p.actions, torch.zeros_like(p.advantages))
    report = trpo_step(zero, max_kl=0.01, damping=0.1)
    assert not report.accepted
    figs = {"line_search": line_search_figure(report, problem=zero),
            "trust_region": trust_region_figure(report, problem=zero),
            "cg": cg_figure(report)}
    for fig in figs.values():
        assert "rejected" in fig.layout.title.text or "no CG solve" in fig.layout.title.text
    assert len(trace(figs["line_search"], "real surrogate gain").x) == 0
    assert dict(summary_rows(report))["why"].startswith("the policy gradient g is zero")
    bars = bar_values(summary_html(report))  # no direction: the predicted bar is empty, not an error
    assert math.isnan(bars["predicted"]) and bars["actual"] == bars["final_kl"] == 0.0


def test_legend_html_lists_the_entries_plotlys_legend_shows_with_their_swatches(snap):
    """Scatter traces unless showlegend=False (the KL row's trials repeat the gain row's), other
    traces only with showlegend=True (the KL = δ contour, not the surrogate's filled contour); each
    entry draws its trace's line (dash) and marker (symbol, color)."""
    import re

    from trpo_lab.explore.views import legend_entries, legend_html

    figs = frame_figures(ExplorerSession(snap).compute(snap.name, Settings()))
    names = [n for _, n in legend_entries(figs["line_search"])]
    assert names == ["real surrogate gain", "linear model g·(xβs)", "rejected trials", "accepted trial",
                     "real KL̄", "quadratic model ½xᵀFx", "damped model ½xᵀ(F+λI)x", "δ"]
    keys = [k for k, _ in legend_entries(figs["trust_region"])]
    assert "trust_region:kl_contour" in keys and "trust_region:gain" not in keys
    assert len(keys) == len(figs["trust_region"].data) - 1

    def item(fig, key):
        return re.search(rf"data-key='{key}'.*?</span>([^<]*)</span>", legend_html(fig)).group(0)

    assert "dashed #7f7f7f" in item(figs["line_search"], "line_search:linear_model")
    assert "dotted #7f7f7f" in item(figs["line_search"], "line_search:damped_model")
    assert "★" in item(figs["trust_region"], "trust_region:natural_step")
    assert "solid black" in item(figs["trust_region"], "trust_region:kl_contour")
    residual = item(figs["cg"], "cg:residual")  # lines and markers: both
    assert "solid #1f77b4" in residual and "●" in residual
    assert "&lt; cg_tol" in legend_html(figs["cg"])  # names are escaped


def test_update_dicts_give_the_same_figure_as_building_it_again(snap):
    """The explorer updates widgets in place; the result must equal the pure figure."""
    session = ExplorerSession(snap)
    first = frame_figures(session.compute(snap.name, Settings()))
    later = session.compute(snap.name, Settings(max_kl=0.05, damping=1e-3, cg_iters=3))
    fresh = frame_figures(later)
    from trpo_lab.explore.views import frame_updates

    for name, update in frame_updates(later).items():
        patched = apply_update(go.Figure(first[name]), update)
        assert json.loads(pio.to_json(patched)) == json.loads(pio.to_json(fresh[name])), name
    assert math.isfinite(later.sFs)


def test_traces_have_stable_ids_and_updates_are_keyed_by_them(snap):
    """Every trace carries a unique id "<view>:<trace>" in `meta`; its display name is separate; an
    update dict names traces by id only, and sets every trace of its view."""
    from trpo_lab.explore.views import BASES, frame_updates

    frame = ExplorerSession(snap).compute(snap.name, Settings())
    for view, update in frame_updates(frame).items():
        ids = [t.meta for t in BASES[view]().data]
        assert len(set(ids)) == len(ids) and all(i.startswith(f"{view}:") for i in ids), ids
        assert sorted(update["traces"]) == sorted(ids), view
        names = {t.meta: t.name for t in frame_figures(frame)[view].data}
        assert all(names[i] and names[i] != i for i in ids)  # the legend shows a name, not the id
    assert trace(frame_figures(frame)["line_search"], "line_search:delta") is not None


def test_update_dicts_flatten_to_attribute_paths_both_plotlys_take(snap):
    """Updates are written as nested dicts, never plotly's magic underscores (`marker_color`), so
    `figure_edits` can send them to plotly.js as they are: every path it makes names a property of
    the figure (plotly's Python side rejects an unknown one) and has no underscore."""
    from trpo_lab.explore.views import BASES, figure_edits, frame_updates
    from trpo_lab.widgets import flat_paths

    assert flat_paths({"marker": {"color": "red"}, "y": [1], "title": {"font": {"size": 3}}}) == {
        "marker.color": "red", "y": [1], "title.font.size": 3}
    frame = ExplorerSession(snap).compute(snap.name, Settings(max_kl=0.05))
    for view, update in frame_updates(frame).items():
        fig = BASES[view]()
        traces, layout = figure_edits(fig, update)
        paths = [p for props in traces.values() for p in props] + list(layout)
        assert paths and not [p for p in paths if "_" in p], (view, paths)
        for i, props in traces.items():
            for path in props:
                fig.data[i][path]  # raises if plotly does not know the path
        for path in layout:
            fig.layout[path]
