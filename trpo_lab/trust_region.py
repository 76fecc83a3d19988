"""The TRPO update (Schulman et al. 2015, §6 and Appendix C), as pure functions over flat parameters.

    maximise_θ  L(θ) = E[π_θ(a|s) / π_old(a|s) · Â(s,a)]   subject to   KL̄(θ) = E_s[KL(π_old ‖ π_θ)] ≤ δ

1. g = ∇L(θ_old);  F = ∇²KL̄(θ_old), the Fisher information, used only through v ↦ F v;
2. s ≈ (F + damping·I)⁻¹ g by conjugate gradient, started at 0;
3. the full step β·s with β = √(2δ / sᵀ(F + damping·I)s) reaches the boundary of the quadratic model;
4. backtracking line search on the *real* surrogate and KL.

An `UpdateProblem` (frozen θ_old + its batch) is all the step needs; `trpo_step` returns a
`StepReport` of everything it did. Training and the explorer call the same `trpo_step`.
This module knows nothing of environments, plotting or logging.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector

from .policies import Policy

# ───────────────────────────── flat parameters ─────────────────────────────


def flat_params(module: torch.nn.Module) -> Tensor:
    """θ as one detached vector (a copy), in `module.parameters()` order."""
    return parameters_to_vector(module.parameters()).detach().clone()


def unflatten_params(module: torch.nn.Module, theta: Tensor) -> dict[str, Tensor]:
    """Views of the flat vector θ shaped like `module`'s named parameters (for `functional_call`)."""
    named = list(module.named_parameters())
    sizes = [p.numel() for _, p in named]
    if theta.ndim != 1 or theta.numel() != sum(sizes):
        raise ValueError(f"theta has shape {tuple(theta.shape)}; expected ({sum(sizes)},)")
    chunks = torch.split(theta, sizes)
    return {name: c.view_as(p) for (name, p), c in zip(named, chunks)}


# ───────────────────────────── the update problem ─────────────────────────────


@dataclass(frozen=True, eq=False)
class UpdateProblem:
    """A frozen policy snapshot θ_old together with the batch it produced.

    The policy module only supplies the architecture: the math evaluates it at explicit θ.
    """

    policy: Policy
    theta_old: Tensor  # [P]
    obs: Tensor  # [B, obs_dim]
    actions: Tensor  # [B] (discrete) or [B, act_dim]
    advantages: Tensor  # [B]
    old_params: tuple[Tensor, ...]  # π_old's distribution parameters at obs, each [B, ...]
    old_log_prob: Tensor  # [B]
    fvp_rows: Tensor | None = None  # rows used for Fisher-vector products (None: all)

    @property
    def batch_size(self) -> int:
        return int(self.obs.shape[0])

    @property
    def num_params(self) -> int:
        return int(self.theta_old.numel())

    def distribution_at(self, theta: Tensor, rows: Tensor | None = None) -> Distribution:
        """π_θ(·|s) for the batch's states (or the given rows)."""
        obs = self.obs if rows is None else self.obs[rows]
        params = functional_call(self.policy, unflatten_params(self.policy, theta), (obs,))
        return self.policy.distribution(params)

    def old_distribution(self, rows: Tensor | None = None) -> Distribution:
        params = self.old_params if rows is None else tuple(p[rows] for p in self.old_params)
        return self.policy.distribution(params)


def make_update_problem(policy: Policy, obs: Tensor, actions: Tensor, advantages: Tensor,
                        fvp_fraction: float = 1.0, normalize_advantages: bool = False,
                        generator: torch.Generator | None = None) -> UpdateProblem:
    """Freeze `policy`'s current parameters with a batch; π_old is evaluated once, here."""
    n = obs.shape[0] if obs.ndim else 0
    if obs.ndim != 2 or n < 1:
        raise ValueError(f"obs has shape {tuple(obs.shape)}; expected [B ≥ 1, obs_dim]")
    if actions.shape[0] != n or advantages.shape != (n,):
        raise ValueError(f"actions {tuple(actions.shape)} and advantages {tuple(advantages.shape)} "
                         f"must have {n} rows like obs")
    if not 0.0 < fvp_fraction <= 1.0:
        raise ValueError(f"fvp_fraction = {fvp_fraction} is not allowed: must lie in (0, 1]")
    for name, x in (("obs", obs), ("advantages", advantages)):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values; the update needs finite data")
    if normalize_advantages:
        advantages = normalized(advantages)
    theta_old = flat_params(policy)
    with torch.no_grad():
        old_params = tuple(p.detach() for p in policy(obs))
        old_log_prob = policy.distribution(old_params).log_prob(actions)
    rows = None
    if fvp_fraction < 1.0:
        k = max(1, round(fvp_fraction * n))
        rows = torch.randperm(n, generator=generator)[:k].sort().values
    return UpdateProblem(policy, theta_old, obs, actions, advantages.detach(), old_params,
                         old_log_prob, rows)


def normalized(advantages: Tensor, eps: float = 1e-8) -> Tensor:
    """(Â − mean) / (std + eps); a batch of one step becomes 0 (its std is undefined)."""
    centred = advantages - advantages.mean()
    if advantages.numel() < 2:
        return centred
    return centred / (advantages.std() + eps)


# ───────────────────────────── surrogate, KL, Fisher ─────────────────────────────


def surrogate(problem: UpdateProblem, theta: Tensor) -> Tensor:
    """L(θ) = mean_i [ exp(log π_θ(a_i|s_i) − log π_old(a_i|s_i)) · Â_i ]   (eq. 14)."""
    log_prob = problem.distribution_at(theta).log_prob(problem.actions)
    return (torch.exp(log_prob - problem.old_log_prob) * problem.advantages).mean()


def mean_kl(problem: UpdateProblem, theta: Tensor, rows: Tensor | None = None) -> Tensor:
    """KL̄(θ) = mean_i KL(π_old(·|s_i) ‖ π_θ(·|s_i)), analytic (`torch.distributions.kl_divergence`)."""
    return kl_divergence(problem.old_distribution(rows), problem.distribution_at(theta, rows)).mean()


def surrogate_and_kl(problem: UpdateProblem, theta: Tensor) -> tuple[Tensor, Tensor]:
    """(L(θ), KL̄(θ)) over the whole batch from one forward pass: the same numbers as `surrogate`
    and `mean_kl`, for the line search, which needs both at every trial."""
    new = problem.distribution_at(theta)
    ratio = torch.exp(new.log_prob(problem.actions) - problem.old_log_prob)
    return (ratio * problem.advantages).mean(), kl_divergence(problem.old_distribution(), new).mean()


def fisher_operator(problem: UpdateProblem) -> Callable[[Tensor], Tensor]:
    """v ↦ F v with F = ∇²_θ KL̄(θ)|θ_old, by double backprop (Pearlmutter's trick).

    The graph of ∇KL̄ is built once and reused for every product, so each product costs one
    backward pass. Uses `problem.fvp_rows` (a subsample, as in the paper) when it is set.
    """
    theta = problem.theta_old.detach().clone().requires_grad_(True)
    (grad_kl,) = torch.autograd.grad(mean_kl(problem, theta, problem.fvp_rows), theta,
                                     create_graph=True)

    def fvp(v: Tensor) -> Tensor:
        (fv,) = torch.autograd.grad(grad_kl @ v, theta, retain_graph=True)
        return fv

    return fvp


def fisher_vector_product(problem: UpdateProblem, v: Tensor, damping: float = 0.0) -> Tensor:
    """(F + damping·I) v, computed afresh (see `fisher_operator` to reuse the graph)."""
    return fisher_operator(problem)(v) + damping * v


# ───────────────────────────── conjugate gradient ─────────────────────────────


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
    when ‖r‖² < tol or after `iters` iterations.
    """
    if iters < 1:
        raise ValueError(f"iters = {iters} is not allowed: must be ≥ 1")
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = float(r @ r)
    norms = [math.sqrt(rr)]
    stopped = "max iterations"
    done = 0
    for _ in range(iters):
        if rr < tol:
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
    if rr < tol:
        stopped = "converged"
    return CGResult(x, norms, done, stopped)


# ───────────────────────────── natural step and line search ─────────────────────────────


def natural_step(s: Tensor, sAs: float, max_kl: float) -> tuple[Tensor, float]:
    """Scale the search direction to the trust-region boundary of the quadratic KL model:
    β = √(2δ / sᵀAs) so that ½ (βs)ᵀ A (βs) = δ. Returns (β·s, β)."""
    if not sAs > 0.0:
        raise ValueError(f"sᵀAs = {sAs} must be > 0 to scale the step")
    beta = math.sqrt(2.0 * max_kl / sAs)
    return beta * s, beta


@dataclass(frozen=True)
class Trial:
    """One line-search trial θ_old + fraction·(β s)."""

    fraction: float
    surrogate_gain: float  # L(θ) − L(θ_old)
    kl: float  # KL̄(θ)
    expected_gain: float  # fraction · g·(β s), the linear model's prediction
    accepted: bool
    reason: str  # "accepted", or why it was rejected


def backtracking_line_search(evaluate: Callable[[Tensor], tuple[float, float]], theta_old: Tensor,
                             full_step: Tensor, expected_improvement: float, max_kl: float,
                             backtrack_coef: float = 0.8, backtrack_iters: int = 10,
                             ) -> tuple[Tensor, list[Trial]]:
    """Try fractions 1, c, c², …: accept the first θ whose real KL̄ ≤ δ and whose real surrogate
    improves. `evaluate(θ)` returns (L(θ) − L(θ_old), KL̄(θ)). If nothing is accepted, θ_old itself
    (the same tensor, bitwise unchanged) is returned."""
    trials: list[Trial] = []
    for k in range(backtrack_iters):
        fraction = backtrack_coef**k
        theta = theta_old + fraction * full_step
        gain, kl = evaluate(theta)
        if not (math.isfinite(gain) and math.isfinite(kl)):
            reason = f"non-finite surrogate gain {gain} or KL {kl}"
        elif kl > max_kl:
            reason = f"KL {kl:.3g} > δ = {max_kl:.3g}"
        elif gain <= 0.0:
            reason = f"surrogate gain {gain:.3g} ≤ 0"
        else:
            reason = "accepted"
        trials.append(Trial(fraction, gain, kl, fraction * expected_improvement, reason == "accepted",
                            reason))
        if reason == "accepted":
            return theta, trials
    return theta_old, trials


# ───────────────────────────── one TRPO step ─────────────────────────────


@dataclass
class StepReport:
    """Everything one `trpo_step` did; figures and training records are built from this."""

    settings: dict[str, float]
    accepted: bool
    reason: str
    theta_old: Tensor
    theta_new: Tensor
    grad: Tensor  # g = ∇L(θ_old)
    grad_norm: float
    direction: Tensor | None = None  # s ≈ (F + damping·I)⁻¹ g
    cg: CGResult | None = None
    sAs: float = float("nan")  # sᵀ(F + damping·I)s
    beta: float = float("nan")
    full_step: Tensor | None = None  # β s
    predicted_improvement: float = float("nan")  # g·(β s)
    trials: list[Trial] = field(default_factory=list)
    kl: float = 0.0  # KL̄ of the accepted step (0 when rejected: θ is unchanged)
    surrogate_gain: float = 0.0
    step_fraction: float = 0.0

    @property
    def backtracks(self) -> int:
        """Rejected trials before the accepted one (all trials when nothing was accepted)."""
        return len(self.trials) - (1 if self.accepted else 0)

    def summary(self) -> dict[str, float | int | bool | str]:
        """The scalars of the report (for logs, tables and the explorer's summary view)."""
        return {
            "accepted": self.accepted, "reason": self.reason, "grad_norm": self.grad_norm,
            "cg_iterations": self.cg.iterations if self.cg else 0,
            "cg_final_residual": self.cg.residual_norms[-1] if self.cg else float("nan"),
            "sAs": self.sAs, "beta": self.beta, "predicted_improvement": self.predicted_improvement,
            "surrogate_gain": self.surrogate_gain, "kl": self.kl, "step_fraction": self.step_fraction,
            "backtracks": self.backtracks,
        }


@dataclass
class StepCache:
    """Work that `trpo_step` may reuse across calls on one problem: g, the Fisher graph, CG solves.

    δ, the backtrack coefficient and the number of backtracks change only the cheap line search;
    damping and CG settings need a new CG solve but not a new gradient or Fisher graph.
    """

    problem: UpdateProblem | None = None
    grad: Tensor | None = None
    surrogate_old: float = float("nan")  # L(θ_old), from the same pass as the gradient
    fvp: Callable[[Tensor], Tensor] | None = None
    solves: dict[tuple[float, int, float], tuple[CGResult, float]] = field(default_factory=dict)


def surrogate_and_gradient(problem: UpdateProblem) -> tuple[float, Tensor]:
    """(L(θ_old), g = ∇_θ L(θ)|θ_old) from one forward and one backward pass."""
    theta = problem.theta_old.detach().clone().requires_grad_(True)
    value = surrogate(problem, theta)
    (g,) = torch.autograd.grad(value, theta)
    return float(value.detach()), g


def policy_gradient(problem: UpdateProblem) -> Tensor:
    """g = ∇_θ L(θ)|θ_old."""
    return surrogate_and_gradient(problem)[1]


def _check_step_args(max_kl: float, damping: float, cg_iters: int, cg_tol: float,
                     backtrack_coef: float, backtrack_iters: int) -> None:
    def bad(name: str, value: object, allowed: str) -> ValueError:
        return ValueError(f"trpo_step: {name} = {value!r} is not allowed: {allowed}")

    if not (isinstance(max_kl, (int, float)) and math.isfinite(max_kl) and max_kl > 0):
        raise bad("max_kl", max_kl, "must be a finite number > 0")
    if not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping >= 0):
        raise bad("damping", damping, "must be a finite number ≥ 0")
    if not (isinstance(cg_iters, int) and cg_iters >= 1):
        raise bad("cg_iters", cg_iters, "must be an integer ≥ 1")
    if not (isinstance(cg_tol, (int, float)) and cg_tol > 0):
        raise bad("cg_tol", cg_tol, "must be > 0")
    if not (isinstance(backtrack_coef, (int, float)) and 0 < backtrack_coef < 1):
        raise bad("backtrack_coef", backtrack_coef, "must lie in (0, 1)")
    if not (isinstance(backtrack_iters, int) and backtrack_iters >= 1):
        raise bad("backtrack_iters", backtrack_iters, "must be an integer ≥ 1")


def trpo_step(problem: UpdateProblem, max_kl: float = 0.01, damping: float = 0.1,
              cg_iters: int = 10, cg_tol: float = 1e-10, backtrack_coef: float = 0.8,
              backtrack_iters: int = 10, cache: StepCache | None = None) -> StepReport:
    """One TRPO update of θ_old on `problem`; returns a `StepReport` (θ_new is `report.theta_new`).

    If sᵀ(F + damping·I)s ≤ 0, anything is non-finite, or no line-search trial is accepted, θ_new
    is θ_old bitwise and `report.reason` says why. Pass a `StepCache` to reuse the gradient, the
    Fisher graph and CG solves across calls on the same problem (the explorer does).
    """
    _check_step_args(max_kl, damping, cg_iters, cg_tol, backtrack_coef, backtrack_iters)
    settings = dict(max_kl=max_kl, damping=damping, cg_iters=cg_iters, cg_tol=cg_tol,
                    backtrack_coef=backtrack_coef, backtrack_iters=backtrack_iters)
    cache = cache if cache is not None else StepCache()
    if cache.problem is not problem:
        cache.problem, cache.grad, cache.fvp, cache.solves = problem, None, None, {}
        cache.surrogate_old = float("nan")
    theta_old = problem.theta_old
    if cache.grad is None:
        cache.surrogate_old, cache.grad = surrogate_and_gradient(problem)
    g = cache.grad
    grad_norm = float(g.norm())

    def rejected(reason: str, **found) -> StepReport:
        return StepReport(settings, False, reason, theta_old, theta_old, g, grad_norm, **found)

    if not math.isfinite(grad_norm):
        return rejected("the policy gradient g is not finite")
    if grad_norm == 0.0:
        return rejected("the policy gradient g is zero (are all advantages zero?)")

    key = (float(damping), cg_iters, float(cg_tol))
    if key not in cache.solves:
        if cache.fvp is None:
            cache.fvp = fisher_operator(problem)
        fvp = cache.fvp

        def damped(v: Tensor) -> Tensor:
            return fvp(v) + damping * v

        cg = conjugate_gradient(damped, g, cg_iters, cg_tol)
        cache.solves[key] = (cg, float(cg.x @ damped(cg.x)))
    cg, sAs = cache.solves[key]
    s = cg.x
    found: dict = dict(direction=s, cg=cg, sAs=sAs)
    if not (torch.isfinite(s).all() and math.isfinite(sAs)):
        return rejected("the CG solution or sᵀ(F+damping·I)s is not finite", **found)
    if sAs <= 0.0:
        return rejected(f"sᵀ(F+damping·I)s = {sAs:.3g} ≤ 0: the Fisher model is not positive "
                        "along s (singular F with damping 0?)", **found)
    full_step, beta = natural_step(s, sAs, max_kl)
    predicted = float(g @ full_step)
    found.update(beta=beta, full_step=full_step, predicted_improvement=predicted)

    surrogate_old = cache.surrogate_old
    with torch.no_grad():
        def evaluate(theta: Tensor) -> tuple[float, float]:
            gain, kl = surrogate_and_kl(problem, theta)
            return float(gain) - surrogate_old, float(kl)

        theta_new, trials = backtracking_line_search(evaluate, theta_old, full_step, predicted,
                                                     max_kl, backtrack_coef, backtrack_iters)
    found["trials"] = trials
    if not trials[-1].accepted:
        return rejected(f"no line-search trial accepted in {len(trials)} "
                        f"(last: {trials[-1].reason})", **found)
    last = trials[-1]
    return StepReport(settings, True, f"accepted at fraction {last.fraction:.3g}", theta_old,
                      theta_new, g, grad_norm, kl=last.kl, surrogate_gain=last.surrogate_gain,
                      step_fraction=last.fraction, **found)
