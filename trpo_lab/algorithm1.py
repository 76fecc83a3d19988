"""Algorithm 1 (the theory) against the mean-KL trust region (the practice), on a tabular MDP where η is
exact (Schulman et al. 2015, §3–4).

Algorithm 1 is minorisation–maximisation: at π_i maximise

    M_i(π) = L_{π_i}(π) − C_i · D_KL^max(π_i, π),    C_i = 4 ε_i γ / (1 − γ)²,  ε_i = max_{s,a} |A_{π_i}|

Theorem 1 says η(π) ≥ M_i(π) for every π, and M_i(π_i) = η(π_i), so any π_{i+1} with
M_i(π_{i+1}) ≥ M_i(π_i) has η(π_{i+1}) ≥ η(π_i): η never decreases. C is huge (for γ = 0.9,
C = 360·ε), so the steps are tiny.

The trust region replaces the penalty with a constraint on the mean KL, E_{s∼ρ̄}[KL] ≤ δ (eq. 12):
large steps, no guarantee.

Both search along the same direction, the natural gradient of a tabular softmax policy, which is
the advantage itself: π_α = softmax(θ_i + α·A_{π_i}) (Kakade 2002). Algorithm 1 takes the α that
maximises M_i on that line (a grid then golden-section refinement; α = 0 is on the grid, so
M_i(π_{i+1}) ≥ η(π_i) and the guarantee holds although the maximisation is over a line, not over
every policy). The trust region takes the largest α with mean KL ≤ δ (bisection) whose L improves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tabular import (
    TabularMDP,
    advantages,
    discounted_visitation,
    expected_advantage,
    expected_return,
    kl_per_state,
    max_kl,
    penalty_coefficient,
    softmax_policy,
)


@dataclass(frozen=True)
class PolicyIterate:
    """One iteration i → i+1: η before and after, the step's L, KLs, penalty and Theorem 1's bound."""

    iteration: int
    eta_before: float  # η(π_i)
    eta: float  # η(π_{i+1})
    surrogate: float  # L_{π_i}(π_{i+1})
    max_kl: float  # D_KL^max(π_i, π_{i+1})
    mean_kl: float  # E_{s∼ρ̄_{π_i}} KL(π_i ‖ π_{i+1})
    penalty: float  # C_i
    bound: float  # L − C_i·D_KL^max: Theorem 1's lower bound on η(π_{i+1})
    alpha: float  # the step length along A_{π_i}


class _Line:
    """The policies π_α = softmax(θ_i + α·A_{π_i}) and what is needed to score them, computed once."""

    def __init__(self, mdp: TabularMDP, logits: np.ndarray):
        self.mdp, self.logits = mdp, logits
        self.pi = softmax_policy(logits)
        self.A = advantages(mdp, self.pi)
        self.rho = discounted_visitation(mdp, self.pi)
        self.eta = expected_return(mdp, self.pi)
        self.C = penalty_coefficient(mdp, self.pi)

    def policy(self, alpha: float) -> np.ndarray:
        return softmax_policy(self.logits + alpha * self.A)

    def surrogate(self, alpha: float) -> float:
        """L_{π_i}(π_α) = η(π_i) + Σ_s ρ(s) Σ_a π_α(a|s) A(s,a)   (eq. 3)."""
        return self.eta + expected_advantage(self.rho, self.policy(alpha), self.A)

    def objective(self, alpha: float) -> float:
        """M_i(π_α) = L − C·D_KL^max (−∞ once a probability underflows to 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            value = self.surrogate(alpha) - self.C * max_kl(self.pi, self.policy(alpha))
        return value if np.isfinite(value) else -np.inf

    def mean_kl(self, alpha: float) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            k = float(self.rho @ kl_per_state(self.pi, self.policy(alpha)) / self.rho.sum())
        return k if np.isfinite(k) else np.inf

    def record(self, i: int, alpha: float) -> PolicyIterate:
        new = self.policy(alpha)
        L, kmax = self.surrogate(alpha), max_kl(self.pi, new)
        return PolicyIterate(i, self.eta, expected_return(self.mdp, new), L, kmax,
                             self.mean_kl(alpha), self.C, L - self.C * kmax, alpha)


def penalised_objective(mdp: TabularMDP, logits: np.ndarray, alpha: float) -> float:
    """M_i(π_α) = L_{π_i}(π_α) − C_i·D_KL^max(π_i, π_α) with π_α = softmax(θ_i + α·A_{π_i})."""
    return _Line(mdp, logits).objective(alpha)


def _check(iterations: int) -> None:
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations = {iterations!r} is not allowed: must be an integer ≥ 1")


def algorithm1(mdp: TabularMDP, logits: np.ndarray, iterations: int = 30,
               grid: np.ndarray | None = None) -> list[PolicyIterate]:
    """Iterate π_{i+1} = argmax_α M_i(softmax(θ_i + α·A_{π_i})) from π_0 = softmax(logits)."""
    _check(iterations)
    grid = np.concatenate([[0.0], np.geomspace(1e-6, 1e3, 181)]) if grid is None else grid
    out: list[PolicyIterate] = []
    for i in range(iterations):
        line = _Line(mdp, logits)
        values = np.array([line.objective(a) for a in grid])
        k = int(np.argmax(values))
        lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
        best, best_value = grid[k], values[k]
        g = (np.sqrt(5) - 1) / 2  # golden section on [lo, hi], keeping the best point seen
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        fa, fb = line.objective(a), line.objective(b)
        for _ in range(40):
            if fa > fb:
                hi, b, fb = b, a, fa
                a = hi - g * (hi - lo)
                fa = line.objective(a)
            else:
                lo, a, fa = a, b, fb
                b = lo + g * (hi - lo)
                fb = line.objective(b)
            for x, fx in ((a, fa), (b, fb)):
                if fx > best_value:
                    best, best_value = x, fx
        out.append(line.record(i, float(best)))
        logits = logits + float(best) * line.A
    return out


def trust_region_iterations(mdp: TabularMDP, logits: np.ndarray, iterations: int = 30,
                            max_kl_bound: float = 0.01) -> list[PolicyIterate]:
    """Iterate the mean-KL trust region: the largest α along A_{π_i} with mean KL ≤ δ, halved until
    L_{π_i} improves (α = 0 when it never does)."""
    _check(iterations)
    if not max_kl_bound > 0:
        raise ValueError(f"max_kl_bound = {max_kl_bound!r} is not allowed: must be > 0")
    out: list[PolicyIterate] = []
    for i in range(iterations):
        line = _Line(mdp, logits)
        kl = line.mean_kl
        lo, hi = 0.0, 1.0
        while kl(hi) < max_kl_bound and hi < 1e6:
            lo, hi = hi, 2 * hi
        for _ in range(60):  # bisection on the mean KL, which grows with α
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if kl(mid) <= max_kl_bound else (lo, mid)
        alpha = lo
        for _ in range(30):
            if line.surrogate(alpha) > line.eta:
                break
            alpha /= 2
        else:
            alpha = 0.0
        out.append(line.record(i, alpha))
        logits = logits + alpha * line.A
    return out
