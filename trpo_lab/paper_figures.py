"""Figures for notebook 06 (the rest of the paper): pure functions, records in, `go.Figure` out.

Traces carry stable ids in `meta`; their names are labels that may change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .algorithm1 import PolicyIterate


def _go():
    import plotly.graph_objects as go

    return go


def estimator_variance_figure(alphas: np.ndarray, variances: dict[str, Sequence[float]],
                              biases: dict[str, Sequence[float]]):
    """Var[X] of the q-estimator (left, log) and its bias E[X] − target (right) against α, one line
    per q, for π_θ = softmax(θ_old + α·A)."""
    from plotly.subplots import make_subplots

    go = _go()
    fig = make_subplots(1, 2, subplot_titles=("variance of one sample X", "bias E[X] − target"))
    for name in variances:
        fig.add_trace(go.Scatter(x=alphas, y=variances[name], name=f"q = {name}",
                                 meta=f"variance/{name}", legendgroup=name), 1, 1)
        fig.add_trace(go.Scatter(x=alphas, y=biases[name], name=f"q = {name}", showlegend=False,
                                 meta=f"bias/{name}", legendgroup=name), 1, 2)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_xaxes(title_text="α  (π_θ = softmax(θ_old + α·A))")
    fig.update_layout(template="plotly_white", height=380,
                      title="Importance sampling with q: unbiased for every q, "
                            "variance grows as π_θ leaves q")
    return fig


def algorithm1_figure(penalised: Sequence[PolicyIterate], trust_region: Sequence[PolicyIterate],
                      max_kl: float):
    """η per iteration for Algorithm 1 and the mean-KL trust region, with Algorithm 1's lower bound
    L − C·D_KL^max (left); each step's KLs on a log axis (right)."""
    from plotly.subplots import make_subplots

    go = _go()
    fig = make_subplots(1, 2, subplot_titles=("η(π_i) per iteration", "the step's KL"))
    for key, its, name in (("a1", penalised, "Algorithm 1 (penalty C)"),
                           ("tr", trust_region, f"trust region (mean KL ≤ {max_kl:g})")):
        i = np.arange(len(its) + 1)
        eta = [its[0].eta_before] + [r.eta for r in its]
        fig.add_trace(go.Scatter(x=i, y=eta, name=name, mode="lines+markers", meta=f"eta/{key}"), 1, 1)
        fig.add_trace(go.Scatter(x=i[1:], y=[r.max_kl for r in its], name=f"{name}: max KL",
                                 meta=f"maxkl/{key}"), 1, 2)
        fig.add_trace(go.Scatter(x=i[1:], y=[r.mean_kl for r in its], name=f"{name}: mean KL",
                                 line=dict(dash="dot"), meta=f"meankl/{key}"), 1, 2)
    fig.add_trace(go.Scatter(x=np.arange(1, len(penalised) + 1), y=[r.bound for r in penalised],
                             name="Algorithm 1: L − C·D_KL^max (Theorem 1)", line=dict(dash="dash"),
                             meta="bound/a1"), 1, 1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="iteration")
    fig.update_layout(template="plotly_white", height=400, title="Algorithm 1 vs the trust region")
    return fig


def state_kl_figure(kls: dict[str, np.ndarray], max_kl: float):
    """Histograms of the per-state KL of steps (one per constraint), with δ marked."""
    go = _go()
    fig = go.Figure()
    for name, k in kls.items():
        fig.add_trace(go.Histogram(x=np.asarray(k), name=name, opacity=0.6, nbinsx=60,
                                   meta=f"kl/{name}"))
    fig.add_vline(x=max_kl, line=dict(color="black", dash="dash"), annotation_text="δ")
    fig.update_layout(template="plotly_white", barmode="overlay", height=360,
                      xaxis_title="KL(π_old(·|s) ‖ π_new(·|s)) per state", yaxis_title="states",
                      title="Per-state KL of one step: the mean-KL vs the max-KL constraint")
    return fig


def learning_curves_figure(curves: dict[str, list[tuple[np.ndarray, np.ndarray]]],
                           title: str = "learning curves at equal simulator steps"):
    """Mean return against simulator steps: one thin line per seed and a thick mean per method
    (each method's seeds interpolated on a common grid)."""
    go = _go()
    fig = go.Figure()
    palette = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd")
    for (name, runs), color in zip(curves.items(), palette):
        for seed, (x, y) in enumerate(runs):
            fig.add_trace(go.Scatter(x=x, y=y, line=dict(color=color, width=1), opacity=0.35,
                                     showlegend=False, meta=f"{name}/seed{seed}"))
        end = min(float(x[-1]) for x, _ in runs)
        grid = np.linspace(0, end, 50)
        finite = [(np.asarray(x)[np.isfinite(y)], np.asarray(y)[np.isfinite(y)]) for x, y in runs]
        mean = np.mean([np.interp(grid, x, y) for x, y in finite if len(x)], 0)
        fig.add_trace(go.Scatter(x=grid, y=mean, name=name, line=dict(color=color, width=3),
                                 meta=f"{name}/mean"))
    fig.update_layout(template="plotly_white", height=380, title=title,
                      xaxis_title="simulator steps (trunk + branches)",
                      yaxis_title="mean return (last 20 episodes)")
    return fig
