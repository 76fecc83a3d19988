"""Value fitting: regress V_φ(s) on the value targets (GAE returns) of a batch.

    φ ← argmin_φ  mean_i (V_φ(s_i) − R̂_i)²

by Adam on shuffled minibatches (default) or by full-batch L-BFGS. This is the only place that
mutates the value network; it never touches the policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .fast import Adam, fit_mlp_value, mlp_layers, mlp_mse_and_grads
from .policies import ValueFunction
from .settings import is_number

LBFGS_ITERS = 20
"""Default L-BFGS iterations per `optimizer.step` call (`TRPOConfig.vf_lbfgs_iters`)."""


@dataclass(frozen=True)
class ValueFitReport:
    loss_before: float  # mean squared error before fitting
    loss_after: float  # mean squared error after fitting
    explained_variance: float  # 1 − Var(R̂ − V_before) / Var(R̂), of the predictions before fitting
    updates: int  # optimiser steps taken


ROUNDING_ULPS = 64
"""Targets whose spread is below this many machine epsilons of their magnitude are rounding noise."""


class ValueFitError(ValueError):
    """The value fit met a loss that is not a finite number (see `fit_value`)."""


def explained_variance(predictions: Tensor, targets: Tensor) -> float:
    """1 − Var(R̂ − V) / Var(R̂): 1 is perfect, 0 is no better than a constant.

    NaN when the targets have no variance to explain: fewer than two of them, or a spread that is
    rounding noise, std(R̂) ≤ 64·ε·(max|R̂| + max|V|) with ε the dtype's machine epsilon (1.2e-7 in
    float32). R̂ = Â + V is computed from numbers of that magnitude, so a spread of a few dozen units
    in their last place carries no signal; one-step episodes with a constant reward give exactly that,
    and dividing by it reported −1.9e13 in the audit (issue 11).
    """
    if targets.numel() < 2:
        return float("nan")
    var = float(targets.var(unbiased=False))
    scale = float(targets.abs().max()) + float(predictions.abs().max())
    if not math.sqrt(var) > ROUNDING_ULPS * torch.finfo(targets.dtype).eps * scale:
        return float("nan")
    return 1.0 - float((targets - predictions).var(unbiased=False)) / var


def _check_loss(loss: float, when: str, targets: Tensor, predictions: Tensor, updates: int) -> None:
    """Raise `ValueFitError` when the value loss is not finite, saying where it came from."""
    if math.isfinite(loss):
        return
    info = torch.finfo(targets.dtype)
    if not torch.isfinite(predictions).all():
        raise ValueFitError(
            f"the value loss {when} fitting is {loss}: the value net's predictions are not finite "
            f"(after {updates} updates); lower vf_lr or scale the rewards down")
    big_r, big_v = float(targets.abs().max()), float(predictions.abs().max())
    raise ValueFitError(
        f"the value loss mean (V(s) − R̂)² {when} fitting is {loss} although the targets and "
        f"predictions are finite: max |R̂| = {big_r:.3g} and max |V| = {big_v:.3g} are too large for "
        f"{targets.dtype}, whose largest number is {info.max:.3g}, so the squared errors overflow "
        + ("and the value net would silently stop learning. The rewards are too large: scale them "
           "down (e.g. gymnasium.wrappers.TransformReward)" if when == "before" else
           f"after {updates} updates: the fit diverged; lower vf_lr or scale the rewards down"))


def make_value_optimizer(value_fn: ValueFunction, method: str = "adam", lr: float = 1e-3,
                         lbfgs_iters: int = LBFGS_ITERS) -> Adam | torch.optim.LBFGS:
    """The optimiser `fit_value` expects: `Adam`, or L-BFGS with a strong-Wolfe line search and up
    to `lbfgs_iters` iterations per call."""
    if not is_number(lr, 0.0, lo_open=True):
        raise ValueError(f"lr = {lr!r} is not allowed: a finite number > 0")
    if method == "adam":
        return Adam(value_fn.parameters(), lr=lr)
    if method == "lbfgs":
        if isinstance(lbfgs_iters, bool) or not isinstance(lbfgs_iters, int) or lbfgs_iters < 1:
            raise ValueError(f"lbfgs_iters = {lbfgs_iters!r} is not allowed: an integer ≥ 1")
        return torch.optim.LBFGS(value_fn.parameters(), lr=lr, max_iter=lbfgs_iters, history_size=10,
                                 line_search_fn="strong_wolfe")
    raise ValueError(f"method = {method!r} is not allowed: 'adam' or 'lbfgs'")


def fit_value(value_fn: ValueFunction, obs: Tensor, targets: Tensor,
              optimizer: Adam | torch.optim.Optimizer, epochs: int = 5, minibatch_size: int = 64,
              generator: torch.Generator | None = None) -> ValueFitReport:
    """Fit V_φ to `targets` [B] at `obs` [B, obs_dim]: `epochs` passes of minibatch Adam, or
    `epochs` full-batch L-BFGS calls (up to its `max_iter` iterations each) when `optimizer` is
    L-BFGS. `updates` in the report counts minibatch steps or L-BFGS calls. When the optimiser
    holds exactly `value_fn`'s parameters and the net is a plain MLP, the gradients come from
    `fast.mlp_mse_and_grads` (backprop written out) instead of autograd, and with Adam the whole
    minibatch loop runs compiled (`fast.fit_mlp_value`).

    Raises `ValueFitError` when the loss is not finite, before fitting (targets so large that their
    squares overflow: rewards of 1e30 give targets of ~1e31; Adam's √v would be inf and every update
    0, freezing the net without a word) or after it (the fit diverged)."""
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
    _check_loss(loss_before, "before", targets, before, 0)
    n, updates = obs.shape[0], 0
    params = list(value_fn.parameters())
    if isinstance(optimizer, torch.optim.LBFGS):
        group = optimizer.param_groups[0]["params"]
        own_params = len(optimizer.param_groups) == 1 and len(group) == len(params) and all(
            p is q for p, q in zip(group, params))
        layers = mlp_layers(value_fn) if own_params else None

        def closure() -> Tensor:
            if layers is not None:  # backprop written out (`fast`); L-BFGS reads .grad
                loss, grads = mlp_mse_and_grads(layers, obs, targets)
                for p, grad in zip(params, grads):
                    p.grad = grad
                return loss
            optimizer.zero_grad()
            loss = ((value_fn(obs) - targets) ** 2).mean()
            loss.backward()
            return loss

        for _ in range(epochs):
            optimizer.step(closure)
            updates += 1
    elif isinstance(optimizer, Adam):
        own_params = len(optimizer.params) == len(params) and all(
            p is q for p, q in zip(optimizer.params, params))
        layers = mlp_layers(value_fn) if own_params else None  # None: gradients by autograd
        orders = [torch.randperm(n, generator=generator) for _ in range(epochs)]
        if layers is not None:  # backprop written out, the whole loop compiled (`fast`)
            updates = fit_mlp_value(layers, optimizer, obs, targets, orders, minibatch_size)
        else:
            for order in orders:
                obs_epoch, targets_epoch = obs[order], targets[order]  # one gather, then slices
                for start in range(0, n, minibatch_size):
                    rows = slice(start, start + minibatch_size)
                    loss = ((value_fn(obs_epoch[rows]) - targets_epoch[rows]) ** 2).mean()
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
        after = value_fn(obs)
    loss_after = float(((after - targets) ** 2).mean())
    _check_loss(loss_after, "after", targets, after, updates)
    return ValueFitReport(loss_before, loss_after, explained_variance(before, targets), updates)
