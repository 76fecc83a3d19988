"""Reference solutions of the exercises in notebook 01, written the way a student would write them.

The same code sits in notebook 01's solution cells (between nbgrader's BEGIN / END SOLUTION markers;
tests/test_nbgrader.py keeps the two identical), so the notebook runs without this file. It is the
per-exercise fallback: TRPO_LAB_SOLUTIONS=gae (or `use_reference("gae")`) runs the reference for the named
exercises only, loudly, and those exercises score 0 (see `trpo_lab.grading`). Test mode never swaps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import kl_divergence

from . import trust_region as tr
from .trust_region import UpdateProblem


def conjugate_gradient(Av: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10,
                       tol: float = 1e-10) -> Tensor:
    """Solve A x = b (A symmetric positive definite, known only through v ↦ A v), from x₀ = 0."""
    x = torch.zeros_like(b)
    r = b.clone()  # r₀ = b − A x₀ = b
    p = r.clone()
    rr = r @ r
    threshold = tol * rr  # stop when rᵀr ≤ tol·bᵀb (relative to b, so a small g is still solved)
    for _ in range(iters):
        if rr <= threshold:
            break
        Ap = Av(p)  # the only product with A in this iteration
        alpha = rr / (p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def fisher_vector_product(problem: UpdateProblem, v: Tensor, damping: float) -> Tensor:
    """(F + damping·I) v with F = ∇²_θ mean_s KL(π_old(·|s) ‖ π_θ(·|s)) at θ_old (double backprop)."""
    theta = problem.theta_old.detach().clone().requires_grad_(True)
    rows = problem.fvp_rows
    kl = kl_divergence(problem.old_distribution(rows), problem.distribution_at(theta, rows)).mean()
    (grad_kl,) = torch.autograd.grad(kl, theta, create_graph=True)
    (fv,) = torch.autograd.grad(grad_kl @ v, theta)
    return fv + damping * v


def line_search(problem: UpdateProblem, full_step: Tensor, max_kl: float,
                backtrack_coef: float = 0.8, backtrack_iters: int = 10) -> Tensor:
    """θ_old + c^k·full_step for the first k whose mean KL(π_old ‖ π_θ) ≤ δ and whose surrogate
    improves; θ_old itself if no trial qualifies."""
    theta_old = problem.theta_old
    with torch.no_grad():
        surrogate_old = tr.surrogate(problem, theta_old)
        for k in range(backtrack_iters):
            theta = theta_old + backtrack_coef**k * full_step
            gain = tr.surrogate(problem, theta) - surrogate_old
            kl = kl_divergence(problem.old_distribution(), problem.distribution_at(theta)).mean()
            if kl <= max_kl and gain > 0:
                return theta
    return theta_old


def gae(rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor,
        episode_ends: Tensor, gamma: float, lam: float) -> Tensor:
    """Â_t = δ_t + γλ(1 − end_t)·Â_{t+1} with δ_t = r_t + γ(1 − terminated_t)·V(s_{t+1}) − V(s_t)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        alive = 1.0 - terminated[t].to(rewards.dtype)
        delta = rewards[t] + gamma * alive * next_values[t] - values[t]
        running = delta + gamma * lam * (1.0 - episode_ends[t].to(rewards.dtype)) * running
        advantages[t] = running
    return advantages


# ───────── the TRPO core (notebook 01, exercises on the surrogate, the KL, β and one whole step) ─────────


def surrogate(problem: UpdateProblem, theta: Tensor) -> Tensor:
    """L(θ) = mean_i [π_θ(a_i|s_i) / π_old(a_i|s_i)] · Â_i, differentiable in θ (eq. 14)."""
    log_prob = problem.distribution_at(theta).log_prob(problem.actions)
    ratio = torch.exp(log_prob - problem.old_log_prob)  # π_old is fixed: its log-probs are stored
    return (ratio * problem.advantages).mean()


def mean_kl(problem: UpdateProblem, theta: Tensor) -> Tensor:
    """KL̄(θ) = mean_i KL(π_old(·|s_i) ‖ π_θ(·|s_i)), analytic, old policy first."""
    return kl_divergence(problem.old_distribution(), problem.distribution_at(theta)).mean()


def step_scale(s: Tensor, fvp: Callable[[Tensor], Tensor], damping: float, max_kl: float) -> Tensor:
    """β = √(2δ / sᵀ(F + λI)s): the step βs lies on the model's boundary ½xᵀ(F + λI)x = δ."""
    sAs = s @ (fvp(s) + damping * s)
    return torch.sqrt(2 * max_kl / sAs)


def trpo_update(problem: UpdateProblem, max_kl: float, damping: float, cg_iters: int = 10,
                backtrack_coef: float = 0.8, backtrack_iters: int = 10) -> Tensor:
    """One TRPO step from the pieces above: g = ∇L, s ≈ (F + λI)⁻¹g, β, then the line search."""
    theta = problem.theta_old.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(surrogate(problem, theta), theta)
    s = conjugate_gradient(lambda v: fisher_vector_product(problem, v, damping), g, cg_iters, 1e-10)
    beta = step_scale(s, lambda v: fisher_vector_product(problem, v, 0.0), damping, max_kl)
    return line_search(problem, beta * s, max_kl, backtrack_coef, backtrack_iters)
