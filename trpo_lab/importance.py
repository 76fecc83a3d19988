"""Importance sampling with a sampling distribution q (Schulman et al. 2015, §5, eqs. 13–14), exactly.

On a `tabular.TabularMDP` the sample estimator of the surrogate can be taken apart without sampling:

    eq. 13   maximise_θ  Σ_s ρ_old(s) Σ_a q(a|s) · π_θ(a|s)/q(a|s) · A_old(s,a)
    eq. 14   maximise_θ  E_{s∼ρ̄_old, a∼q}[ π_θ(a|s)/q(a|s) · Q_old(s,a) ]

where ρ̄ = (1 − γ)·ρ is the discounted visitation normalised to a distribution. One sample is
X = π_θ(a|s)/q(a|s) · Q_old(s,a) with s ∼ ρ̄, a ∼ q(·|s). Its mean and variance are sums over the
finite (s, a) pairs (`estimator_moments`), so unbiasedness — E[X] = Σ_s ρ̄(s) Σ_a π_θ(a|s) Q(s,a)
for *any* q with full support — holds to rounding, and the variance can be watched as π_θ moves
away from q.

The bridge to training (`surrogate_via_q`, `reported_gain`):

    L_π(π̃) = η(π) + 1/(1 − γ) · ( E_{ρ̄,q}[π̃/q · Q_π] − E_{ρ̄}[V_π] )        (return units)

and the gain training reports — mean_i [ratio_i · Â_i] − mean_i Â_i on advantages standardised to
zero mean and unit std — has expectation (1 − γ)·(L_π(π̃) − η(π)) / σ_A, with σ_A the std of A_π
under s ∼ ρ̄, a ∼ π (its mean is 0: Σ_a π(a|s) A_π(s,a) = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tabular import (
    TabularMDP,
    _check_policy,
    action_values,
    advantages,
    discounted_visitation,
    expected_return,
    state_values,
)


def state_distribution(mdp: TabularMDP, pi: np.ndarray) -> np.ndarray:
    """ρ̄_π = (1 − γ)·ρ_π: the discounted visitation as a probability distribution over states."""
    return (1.0 - mdp.gamma) * discounted_visitation(mdp, pi)


def uniform_policy(mdp: TabularMDP) -> np.ndarray:
    """q(a|s) = 1/|A| in every state."""
    return np.full((mdp.num_states, mdp.num_actions), 1.0 / mdp.num_actions)


@dataclass(frozen=True)
class EstimatorMoments:
    """Mean and variance of one sample X = π_θ(a|s)/q(a|s)·Q_old(s,a), s ∼ ρ̄_old, a ∼ q, and the
    quantity it estimates, target = Σ_s ρ̄_old(s) Σ_a π_θ(a|s) Q_old(s,a)."""

    mean: float
    variance: float
    target: float

    @property
    def bias(self) -> float:
        return self.mean - self.target


def estimator_moments(mdp: TabularMDP, pi_old: np.ndarray, pi_new: np.ndarray,
                      q: np.ndarray) -> EstimatorMoments:
    """E[X] and Var[X] by summing over every (s, a) with its probability ρ̄_old(s)·q(a|s)."""
    for name, p in (("pi_old", pi_old), ("pi_new", pi_new), ("q", q)):
        _check_policy(mdp, p, name)
    if (q <= 0).any():
        raise ValueError("q must give every action a positive probability (π_θ/q is undefined "
                         "where q = 0)")
    rho = state_distribution(mdp, pi_old)
    Q = action_values(mdp, pi_old)
    x = pi_new / q * Q  # the value of X at each (s, a)
    prob = rho[:, None] * q
    mean = float((prob * x).sum())
    variance = float((prob * (x - mean) ** 2).sum())
    target = float((rho[:, None] * pi_new * Q).sum())
    return EstimatorMoments(mean, variance, target)


def sample_estimates(mdp: TabularMDP, pi_old: np.ndarray, pi_new: np.ndarray, q: np.ndarray,
                     num_samples: int, repeats: int, seed: int = 0) -> np.ndarray:
    """`repeats` sample means of `num_samples` draws of X each (to compare with the exact moments)."""
    if num_samples < 1 or repeats < 1:
        raise ValueError(f"num_samples = {num_samples}, repeats = {repeats}: both must be ≥ 1")
    rng = np.random.default_rng(seed)
    rho = state_distribution(mdp, pi_old)
    Q = action_values(mdp, pi_old)
    x = (pi_new / q * Q).ravel()
    prob = (rho[:, None] * q).ravel()
    draws = rng.choice(x.size, size=(repeats, num_samples), p=prob / prob.sum())
    return x[draws].mean(1)


def surrogate_via_q(mdp: TabularMDP, pi: np.ndarray, pi_new: np.ndarray, q: np.ndarray) -> float:
    """L_π(π̃) = η(π) + 1/(1 − γ)·(E_{ρ̄,q}[π̃/q·Q_π] − E_{ρ̄}[V_π]): the surrogate in return units,
    from the q-estimator's exact mean (equals `tabular.surrogate`)."""
    rho = state_distribution(mdp, pi)
    m = estimator_moments(mdp, pi, pi_new, q)
    return expected_return(mdp, pi) + (m.mean - float(rho @ state_values(mdp, pi))) / (1 - mdp.gamma)


def advantage_std(mdp: TabularMDP, pi: np.ndarray) -> float:
    """σ_A: the std of A_π(s,a) under s ∼ ρ̄_π, a ∼ π (its mean is exactly 0)."""
    rho, A = state_distribution(mdp, pi), advantages(mdp, pi)
    return float(np.sqrt((rho[:, None] * pi * A**2).sum()))


def reported_gain(mdp: TabularMDP, pi: np.ndarray, pi_new: np.ndarray) -> float:
    """The expectation of the gain training reports on standardised advantages:
    E[(π̃/π − 1)·A_π/σ_A] = (1 − γ)·(L_π(π̃) − η(π)) / σ_A   (samples s ∼ ρ̄_π, a ∼ π)."""
    rho, A = state_distribution(mdp, pi), advantages(mdp, pi)
    return float((rho[:, None] * pi * (pi_new / pi - 1.0) * A).sum()) / advantage_std(mdp, pi)
