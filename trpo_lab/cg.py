"""Conjugate gradient (Schulman et al. 2015, Appendix C): solve A x = b knowing only v ↦ A v."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class CGResult:
    """x ≈ A⁻¹ b, with ‖r_k‖ = ‖b − A x_k‖ for k = 0 … iterations (x_0 = 0, so ‖r_0‖ = ‖b‖)."""

    x: Tensor
    residual_norms: list[float]
    iterations: int
    stopped: str  # "converged", "max iterations", or why CG broke down


def conjugate_gradient(Av: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10,
                       tol: float = 1e-10) -> CGResult:
    """Solve A x = b for symmetric positive-definite A given only v ↦ A v (Appendix C).

    In TRPO, A = F + damping·I and b = g, so x ≈ F⁻¹ g. Starts at x = 0 (deterministic) and stops
    when the residual is small *relative to b*, ‖r‖² ≤ tol·‖b‖², or after `iters` iterations. (An
    absolute threshold would stop at once for a small gradient, e.g. with unnormalised advantages and
    small rewards, and return x = 0.)
    """
    if not (isinstance(iters, int) and not isinstance(iters, bool) and iters >= 1):
        raise ValueError(f"iters = {iters!r} is not allowed: must be an integer ≥ 1")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol = {tol!r} is not allowed: must be a finite number > 0")
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = float(r @ r)
    norms = [math.sqrt(rr)]
    threshold = tol * rr  # b = 0 stops at once: 0 ≤ 0
    stopped = "max iterations"
    done = 0
    for _ in range(iters):
        if rr <= threshold:
            break
        Ap = Av(p)
        pAp = float(p @ Ap)
        if not math.isfinite(pAp) or pAp <= 0.0:
            stopped = f"breakdown: pᵀAp = {pAp:.3g} is not positive"
            break
        alpha = rr / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = float(r @ r)
        norms.append(math.sqrt(rr_new))
        p = r + (rr_new / rr) * p
        rr = rr_new
        done += 1
    if rr <= threshold:
        stopped = "converged"
    return CGResult(x, norms, done, stopped)
