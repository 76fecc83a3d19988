"""Value fitting: regress V_φ(s) on the value targets (GAE returns) of a batch.

    φ ← argmin_φ  mean_i (V_φ(s_i) − R̂_i)²

by Adam on shuffled minibatches (default) or by full-batch L-BFGS. This is the only place that
mutates the value network; it never touches the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .fast import Adam, mlp_layers, mlp_mse_and_grads
from .policies import ValueFunction

LBFGS_ITERS = 20  # L-BFGS iterations per `optimizer.step` call


@dataclass(frozen=True)
class ValueFitReport:
    loss_before: float  # mean squared error before fitting
    loss_after: float  # mean squared error after fitting
    explained_variance: float  # 1 − Var(R̂ − V_before) / Var(R̂), of the predictions before fitting
    updates: int  # optimiser steps taken


def explained_variance(predictions: Tensor, targets: Tensor) -> float:
    """1 − Var(targets − predictions) / Var(targets): 1 is perfect, 0 is no better than a constant
    (NaN when the targets have no variance)."""
    var = float(targets.var(unbiased=False)) if targets.numel() > 1 else 0.0
    if var == 0.0:
        return float("nan")
    return 1.0 - float((targets - predictions).var(unbiased=False)) / var


def make_value_optimizer(value_fn: ValueFunction, method: str = "adam",
                         lr: float = 1e-3) -> Adam | torch.optim.LBFGS:
    """The optimiser `fit_value` expects: `Adam`, or L-BFGS with a strong-Wolfe line search."""
    if method == "adam":
        return Adam(value_fn.parameters(), lr=lr)
    if method == "lbfgs":
        return torch.optim.LBFGS(value_fn.parameters(), lr=lr, max_iter=LBFGS_ITERS, history_size=10,
                                 line_search_fn="strong_wolfe")
    raise ValueError(f"method = {method!r} is not allowed: 'adam' or 'lbfgs'")


def fit_value(value_fn: ValueFunction, obs: Tensor, targets: Tensor,
              optimizer: Adam | torch.optim.Optimizer, epochs: int = 5, minibatch_size: int = 64,
              generator: torch.Generator | None = None) -> ValueFitReport:
    """Fit V_φ to `targets` [B] at `obs` [B, obs_dim]: `epochs` passes of minibatch Adam, or
    `epochs` full-batch L-BFGS calls (up to `LBFGS_ITERS` iterations each) when `optimizer` is
    L-BFGS. `updates` in the report counts minibatch steps or L-BFGS calls."""
    if obs.shape[0] != targets.shape[0] or targets.ndim != 1:
        raise ValueError(f"obs {tuple(obs.shape)} and targets {tuple(targets.shape)}: "
                         "targets must be [B] with B = obs.shape[0]")
    if epochs < 1 or minibatch_size < 1:
        raise ValueError(f"epochs = {epochs}, minibatch_size = {minibatch_size}: both must be ≥ 1")
    if not torch.isfinite(targets).all():
        raise ValueError("targets contain NaN or infinite values")
    targets = targets.detach()
    with torch.no_grad():
        before = value_fn(obs)
    loss_before = float(((before - targets) ** 2).mean())
    n, updates = obs.shape[0], 0
    if isinstance(optimizer, torch.optim.LBFGS):
        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = ((value_fn(obs) - targets) ** 2).mean()
            loss.backward()
            return loss

        for _ in range(epochs):
            optimizer.step(closure)
            updates += 1
    elif isinstance(optimizer, Adam):
        own_params = len(optimizer.params) == len(list(value_fn.parameters())) and all(
            p is q for p, q in zip(optimizer.params, value_fn.parameters()))
        layers = mlp_layers(value_fn) if own_params else None  # None: gradients by autograd
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            obs_epoch, targets_epoch = obs[order], targets[order]  # one gather, then contiguous slices
            for start in range(0, n, minibatch_size):
                x, y = obs_epoch[start:start + minibatch_size], targets_epoch[start:start + minibatch_size]
                if layers is not None:
                    optimizer.step(mlp_mse_and_grads(layers, x, y)[1])  # backprop written out (`fast`)
                else:
                    loss = ((value_fn(x) - y) ** 2).mean()
                    optimizer.step(torch.autograd.grad(loss, optimizer.params))
                updates += 1
    else:  # any torch.optim optimiser (e.g. torch.optim.Adam built by the caller)
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, minibatch_size):
                idx = order[start:start + minibatch_size]
                loss = ((value_fn(obs[idx]) - targets[idx]) ** 2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                updates += 1
    with torch.no_grad():
        loss_after = float(((value_fn(obs) - targets) ** 2).mean())
    return ValueFitReport(loss_before, loss_after, explained_variance(before, targets), updates)
