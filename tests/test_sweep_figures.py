"""The sweep's figures are pure functions of the table and histories: checked on a hand-made sweep."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from trpo_lab.sweep_figures import (
    SweepBrowser,
    curves_figure,
    heatmap_cells,
    heatmap_figure,
    return_vs_time_figure,
)


def history(returns, seconds=1.0):
    return [{"iteration": i + 1, "steps": 100 * (i + 1), "mean_return": r, "sample_seconds": seconds,
             "update_seconds": 0.5, "value_seconds": 0.25} for i, r in enumerate(returns)]


ROWS, HISTORIES = [], {}
for i, (kl, damping) in enumerate([(0.01, 0.1), (0.01, 1.0), (0.03, 0.1), (0.03, 1.0)]):
    for seed in (0, 1, 2):
        trial = f"{i:03d}-s{seed}"
        returns = [math.nan, 10.0 * (i + 1) + seed, 20.0 * (i + 1) + 2 * seed]
        HISTORIES[trial] = history(returns, seconds=1.0 + seed)
        ROWS.append({"trial": trial, "max_kl": kl, "damping": damping, "seed": seed,
                     "final_return": returns[-1],
                     "history": f"trials/{trial}/metrics.csv"})


def test_heatmap_is_the_mean_over_seeds_with_the_spread_on_hover():
    fig = heatmap_figure(ROWS, "max_kl", "damping")
    trace = fig.data[0]
    assert trace.meta["id"] == "heatmap"
    assert list(trace.x) == ["0.01", "0.03"] and list(trace.y) == ["0.1", "1.0"]
    # cell (max_kl 0.03, damping 0.1) is setting 2: final returns 60, 62, 64
    assert trace.z[0][1] == pytest.approx(62.0)
    std, lo, hi, n = trace.customdata[0][1]
    assert (std, lo, hi, n) == (pytest.approx(np.std([60, 62, 64])), 60, 64, 3)
    assert [list(r) for r in trace.z] == [[pytest.approx(22.0), pytest.approx(62.0)],
                                          [pytest.approx(42.0), pytest.approx(82.0)]]
    assert "std" in trace.hovertemplate and "seeds" in trace.hovertemplate
    with pytest.raises(ValueError, match="'lam' is not a column"):
        heatmap_figure(ROWS, "max_kl", "lam")


def test_a_missing_cell_is_empty_not_zero():
    xs, ys, z, _ = heatmap_cells(ROWS[:9], "max_kl", "damping")
    assert math.isnan(z[1][1]) and z[0][1] == pytest.approx(62.0)


def test_curves_are_the_mean_over_seeds_with_a_min_max_band():
    fig = curves_figure(ROWS, HISTORIES, ["max_kl", "damping"])
    ids = [t.meta["id"] for t in fig.data]
    assert ids[:2] == ["band:max_kl=0.01, damping=0.1", "mean:max_kl=0.01, damping=0.1"] and len(ids) == 8
    mean = next(t for t in fig.data if t.meta["id"] == "mean:max_kl=0.03, damping=1.0")
    assert list(mean.x) == [100, 200, 300]
    assert mean.y[0] is None and list(mean.y[1:]) == [pytest.approx(41.0), pytest.approx(82.0)]
    band = next(t for t in fig.data if t.meta["id"] == "band:max_kl=0.03, damping=1.0")
    assert list(band.y) == [None, 42.0, 84.0, 80.0, 40.0, None]  # max forwards, min backwards


def test_return_vs_time_uses_each_trials_cumulative_training_seconds():
    fig = return_vs_time_figure(ROWS, HISTORIES, ["max_kl"])
    trace = next(t for t in fig.data if t.meta["id"] == "trial:001-s2")
    assert list(trace.x) == [3.75, 7.5, 11.25]  # (3 + 0.5 + 0.25) per iteration
    assert sum(t.showlegend for t in fig.data) == 2  # one legend entry per setting


def test_browser_click_and_picker_show_that_settings_curves():
    browser = SweepBrowser(ROWS, HISTORIES, "max_kl", "damping")
    assert browser.shown == (0.01, 0.1)
    browser._clicked(browser.heatmap.data[0], SimpleNamespace(xs=["0.03"], ys=["1.0"]), None)
    assert browser.shown == (0.03, 1.0) and browser.picker.value == "max_kl=0.03, damping=1.0"
    assert [t.meta["id"] for t in browser.curves.data] == ["band:max_kl=0.03, damping=1.0",
                                                          "mean:max_kl=0.03, damping=1.0"]
    browser.picker.value = "max_kl=0.01, damping=1.0"
    assert browser.shown == (0.01, 1.0)
