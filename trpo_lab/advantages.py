"""Discounted returns and generalised advantage estimation (GAE-λ, Schulman et al. 2016).

Shapes: time-major [T, N] (T steps of N parallel envs); a 1-D [T] input is treated as N = 1.
Episode boundaries are handled with two masks, because they mean two different things:

* `terminated[t]`: s_{t+1} is terminal, its value is 0, so nothing is bootstrapped from it;
* `episode_ends[t]`: the episode ended at t (terminated *or* truncated by a time limit), so the
  advantage of step t must not look at the next episode's steps. At a truncation the value of the
  real next state s_{t+1} (`next_values[t]`) is still bootstrapped.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _check(name: str, x: Tensor, shape: torch.Size) -> None:
    if x.shape != shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {tuple(shape)} like rewards")


def _check_factors(**factors: float) -> None:
    """ValueError naming the first factor (γ, λ) that is not a number in [0, 1] (NaN is not)."""
    for name, value in factors.items():
        try:
            allowed = 0.0 <= value <= 1.0
        except TypeError:
            allowed = False
        if not allowed:
            raise ValueError(f"{name} = {value!r} is not allowed: must be a number in [0, 1]")


def td_errors(rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor,
              gamma: float) -> Tensor:
    """δ_t = r_t + γ·(1 − terminated_t)·V(s_{t+1}) − V(s_t)."""
    _check_factors(gamma=gamma)
    return rewards + gamma * (1.0 - terminated.to(rewards.dtype)) * next_values - values


def _explain_non_finite(rewards: Tensor, values: Tensor, next_values: Tensor, delta: np.ndarray) -> None:
    """Raise a ValueError saying why GAE came out NaN or infinite."""
    for name, x in (("rewards", rewards), ("values", values), ("next_values", next_values)):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contain NaN or infinite values; GAE needs finite inputs")
    largest = float(np.finfo(delta.dtype).max)
    raise ValueError(
        f"GAE overflowed {delta.dtype} (largest {largest:.3g}) although its inputs are finite: "
        f"max |r| = {float(rewards.abs().max()):.3g}, and the discounted sums of the TD errors exceed "
        "what the dtype holds. Scale the rewards down (e.g. gymnasium.wrappers.TransformReward)")


def gae(rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor,
        episode_ends: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Â_t = Σ_k (γλ)^k δ_{t+k}, summed within the episode; returns (advantages, value targets Â + V).

    λ = 0 gives the TD errors δ_t; λ = 1 gives the Monte-Carlo return (bootstrapped with V at a
    truncation or at the end of the batch) minus V(s_t).
    """
    _check_factors(gamma=gamma, lam=lam)
    for name, x in (("values", values), ("next_values", next_values),
                    ("terminated", terminated), ("episode_ends", episode_ends)):
        _check(name, x, rewards.shape)
    delta = td_errors(rewards, values, next_values, terminated, gamma).detach().cpu().numpy()
    carry = gamma * lam * (1.0 - episode_ends.detach().cpu().numpy().astype(delta.dtype))
    adv = np.empty_like(delta)
    running = np.zeros_like(delta[0])
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(delta.shape[0] - 1, -1, -1):
            running = delta[t] + carry[t] * running
            adv[t] = running
    if not np.isfinite(adv).all():
        _explain_non_finite(rewards, values, next_values, delta)
    advantages = torch.from_numpy(adv).to(rewards.device)
    return advantages, advantages + values


def discounted_returns(rewards: Tensor, episode_ends: Tensor, gamma: float,
                       bootstrap: Tensor | float = 0.0) -> Tensor:
    """G_t = r_t + γ·G_{t+1} within each episode; `bootstrap` is V after the last step of the batch."""
    _check_factors(gamma=gamma)
    _check("episode_ends", episode_ends, rewards.shape)
    r = rewards.detach().cpu().numpy()
    carry = gamma * (1.0 - episode_ends.detach().cpu().numpy().astype(r.dtype))
    out = np.empty_like(r)
    running = np.broadcast_to(np.asarray(bootstrap, dtype=r.dtype), r[0].shape).copy()
    for t in range(r.shape[0] - 1, -1, -1):
        running = r[t] + carry[t] * running
        out[t] = running
    return torch.from_numpy(out).to(rewards.device)
