"""Update rules on an `UpdateProblem`, built from the parts the paper names (§6, Appendix C):

    direction   g = ∇L(θ_old); s ≈ (F + λI)⁻¹ g by conjugate gradient (or s = g for the plain gradient)
    scale       β = √(2δ / sᵀ(F + λI)s), so the full step βs sits on the model's boundary ½xᵀ(F + λI)x = δ
    acceptance  backtracking line search on the *real* surrogate and KL, with a chosen accept rule

    trpo = direction → scale → line search        npg = direction → scale (Kakade 2002)
    pg   = gradient  → scale                       ppo-clip = epochs of clipped-surrogate Adam (`ppo`)

`update_step(problem, settings)` runs the rule `settings.update` names and returns a `StepReport`;
training and the explorer both call it. Fields that do not apply to a rule are NaN (or None).
The problem's math (surrogate, KL, Fisher) lives in `problem`, CG in `cg`; both are re-exported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .cg import CGResult, conjugate_gradient
from .ppo import ppo_clip_update
from .problem import (
    FISHERS,
    UpdateProblem,
    empirical_fisher_operator,
    fisher_operator,
    fisher_vector_product,
    flat_params,
    make_update_problem,
    mean_kl,
    normalized,
    per_state_kl,
    score_matrix,
    surrogate,
    surrogate_and_kl,
    surrogate_and_kls,
    unflatten_params,
)
from .settings import ConfigError, StepSettings, check_step_setting

__all__ = [
    "CGResult", "Direction", "StepCache", "StepReport", "Trial", "UpdateProblem", "accept_reason",
    "backtracking_line_search", "conjugate_gradient", "empirical_fisher_operator", "fisher_operator",
    "fisher_vector_product", "flat_params", "gradient_direction", "make_update_problem", "mean_kl",
    "natural_direction", "natural_step", "normalized", "per_state_kl", "policy_gradient", "score_matrix",
    "surrogate", "surrogate_and_gradient", "surrogate_and_kl", "surrogate_and_kls", "trpo_step",
    "unflatten_params", "update_step",
]

NAN = float("nan")

# ───────────────────────────── direction ─────────────────────────────


def surrogate_and_gradient(problem: UpdateProblem) -> tuple[float, Tensor]:
    """(L(θ_old), g = ∇_θ L(θ)|θ_old) from one forward and one backward pass."""
    theta = problem.theta_old.detach().clone().requires_grad_(True)
    value = surrogate(problem, theta)
    (g,) = torch.autograd.grad(value, theta)
    return float(value.detach()), g


def policy_gradient(problem: UpdateProblem) -> Tensor:
    """g = ∇_θ L(θ)|θ_old."""
    return surrogate_and_gradient(problem)[1]


@dataclass(frozen=True)
class Direction:
    """A search direction s and its curvature sᵀAs under the model A = F + λI."""

    s: Tensor
    sAs: float
    cg: CGResult | None  # None when s = g (no solve)


def natural_direction(g: Tensor, fvp: Callable[[Tensor], Tensor], damping: float, cg_iters: int,
                      cg_tol: float) -> Direction:
    """s ≈ (F + λI)⁻¹ g by conjugate gradient from 0 (Appendix C), and sᵀ(F + λI)s."""
    def damped(v: Tensor) -> Tensor:
        return fvp(v) + damping * v

    cg = conjugate_gradient(damped, g, cg_iters, cg_tol)
    return Direction(cg.x, float(cg.x @ damped(cg.x)), cg)


def gradient_direction(g: Tensor, fvp: Callable[[Tensor], Tensor], damping: float) -> Direction:
    """s = g (the plain policy gradient), with its curvature gᵀ(F + λI)g for the scale."""
    return Direction(g, float(g @ (fvp(g) + damping * g)), None)


# ───────────────────────────── scale ─────────────────────────────


def natural_step(s: Tensor, sAs: float, max_kl: float) -> tuple[Tensor, float]:
    """Scale the search direction to the trust-region boundary of the quadratic KL model:
    β = √(2δ / sᵀAs) so that ½ (βs)ᵀ A (βs) = δ. Returns (β·s, β)."""
    check_step_setting("max_kl", max_kl)
    if not sAs > 0.0:
        raise ValueError(f"sᵀAs = {sAs} must be > 0 to scale the step")
    beta = math.sqrt(2.0 * max_kl / sAs)
    return beta * s, beta


# ───────────────────────────── acceptance ─────────────────────────────


@dataclass(frozen=True)
class Trial:
    """One trial θ_old + fraction·(β s) of the line search (or the one evaluation of a rule without)."""

    fraction: float
    surrogate_gain: float  # L(θ) − L(θ_old)
    kl: float  # KL̄(θ), in the settings' KL direction
    expected_gain: float  # fraction · g·(β s), the linear model's prediction
    accepted: bool
    reason: str  # "accepted", or why it was rejected
    max_state_kl: float = NAN  # the largest per-state KL


def accept_reason(gain: float, kl: float, max_state_kl: float, expected_gain: float,
                  max_kl: float, rule: str = "strict", kl_constraint: str = "mean",
                  accept_ratio: float = 0.1) -> str:
    """"accepted", or why a trial is rejected under `rule`:

    strict              KL ≤ δ and L(θ) − L(θ_old) > 0 (the paper, Appendix C)
    improvement-ratio   gain > 0 and gain ≥ accept_ratio · expected gain; KL is not checked (the
                        original code: its δ acts only through β)
    kl-1.5              KL ≤ 1.5 δ and gain ≥ 0 (OpenAI baselines)
    The KL checked is the mean over states, or the largest per-state KL with kl_constraint "max".
    """
    kl_checked = max_state_kl if kl_constraint == "max" else kl
    what = "max per-state KL" if kl_constraint == "max" else "KL"
    if not (math.isfinite(gain) and math.isfinite(kl_checked)):
        return f"non-finite surrogate gain {gain} or KL {kl_checked}"
    if rule == "strict":
        if kl_checked > max_kl:
            return f"{what} {kl_checked:.3g} > δ = {max_kl:.3g}"
        return "accepted" if gain > 0.0 else f"surrogate gain {gain:.3g} ≤ 0"
    if rule == "kl-1.5":
        if kl_checked > 1.5 * max_kl:
            return f"{what} {kl_checked:.3g} > 1.5δ = {1.5 * max_kl:.3g}"
        return "accepted" if gain >= 0.0 else f"surrogate gain {gain:.3g} < 0"
    if rule == "improvement-ratio":
        if gain <= 0.0:
            return f"surrogate gain {gain:.3g} ≤ 0"
        if gain < accept_ratio * expected_gain:
            return f"gain {gain:.3g} < {accept_ratio:g} × predicted {expected_gain:.3g}"
        return "accepted"
    raise ValueError(f"accept rule = {rule!r} is not allowed: must be 'strict', "
                     "'improvement-ratio' or 'kl-1.5'")


Evaluate = Callable[[Tensor], tuple[float, float, float]]  # θ ↦ (gain, mean KL, max per-state KL)


def backtracking_line_search(evaluate: Callable[[Tensor], tuple], theta_old: Tensor,
                             full_step: Tensor, expected_improvement: float, max_kl: float,
                             backtrack_coef: float = 0.8, backtrack_iters: int = 10,
                             accept: Callable[..., str] | None = None) -> tuple[Tensor, list[Trial]]:
    """Try fractions 1, c, c², …: accept the first θ the accept rule passes (by default KL̄ ≤ δ and
    the real surrogate improves). `evaluate(θ)` returns (L(θ) − L(θ_old), KL̄(θ)[, max per-state
    KL]); `accept(gain, kl, max_state_kl, expected_gain)` returns "accepted" or a reason. If nothing
    is accepted, θ_old itself (the same tensor, bitwise unchanged) is returned."""
    for name, value in (("max_kl", max_kl), ("backtrack_coef", backtrack_coef),
                        ("backtrack_iters", backtrack_iters)):
        check_step_setting(name, value)
    if accept is None:
        def accept(gain: float, kl: float, max_state_kl: float, expected: float) -> str:
            return accept_reason(gain, kl, max_state_kl, expected, max_kl)
    trials: list[Trial] = []
    for k in range(backtrack_iters):
        fraction = backtrack_coef**k
        theta = theta_old + fraction * full_step
        gain, kl, *rest = evaluate(theta)
        max_state_kl = rest[0] if rest else NAN
        expected = fraction * expected_improvement
        reason = accept(gain, kl, max_state_kl, expected)
        trials.append(Trial(fraction, gain, kl, expected, reason == "accepted", reason, max_state_kl))
        if reason == "accepted":
            return theta, trials
    return theta_old, trials


# ───────────────────────────── the report ─────────────────────────────


@dataclass
class StepReport:
    """Everything one update did; figures and training records are built from this. Fields that do
    not apply to the rule are NaN or None (npg and pg have no line search, pg no CG, ppo-clip none
    of the trust-region parts)."""

    settings: StepSettings
    accepted: bool
    reason: str
    theta_old: Tensor
    theta_new: Tensor
    grad: Tensor  # g = ∇L(θ_old)
    grad_norm: float
    direction: Tensor | None = None  # s ≈ (F + λI)⁻¹ g (trpo, npg), s = g (pg)
    cg: CGResult | None = None
    sAs: float = NAN  # sᵀ(F + λI)s
    beta: float = NAN
    full_step: Tensor | None = None  # β s (for ppo-clip: θ_new − θ_old)
    predicted_improvement: float = NAN  # g·(full step)
    trials: list[Trial] = field(default_factory=list)
    kl: float = 0.0  # KL̄ of the accepted step (0 when rejected: θ is unchanged)
    surrogate_gain: float = 0.0
    step_fraction: float = 0.0
    max_state_kl: float = 0.0  # the largest per-state KL of the accepted step
    ppo_epoch_losses: list[float] | None = None  # ppo-clip: mean clipped loss per epoch
    ppo_clip_fraction: float = NAN  # ppo-clip: fraction of samples clipped in the last epoch

    @property
    def rule(self) -> str:
        return self.settings.update

    @property
    def has_line_search(self) -> bool:
        return self.rule == "trpo"

    @property
    def backtracks(self) -> float:
        """Rejected trials before the accepted one (all trials when nothing was accepted); NaN for
        rules without a line search."""
        if not self.has_line_search:
            return NAN
        return len(self.trials) - (1 if self.accepted else 0)

    def summary(self) -> dict[str, float | int | bool | str]:
        """The scalars of the report (for logs, tables and the explorer's summary view)."""
        return {
            "rule": self.rule, "accepted": self.accepted, "reason": self.reason,
            "grad_norm": self.grad_norm,
            "cg_iterations": self.cg.iterations if self.cg else NAN,
            "cg_final_residual": self.cg.residual_norms[-1] if self.cg else NAN,
            "sAs": self.sAs, "beta": self.beta, "predicted_improvement": self.predicted_improvement,
            "surrogate_gain": self.surrogate_gain, "kl": self.kl, "max_state_kl": self.max_state_kl,
            "step_fraction": self.step_fraction, "backtracks": self.backtracks,
        }


# ───────────────────────────── the rules ─────────────────────────────


@dataclass
class StepCache:
    """Work that updates may reuse across calls on one problem: g, the Fisher operators, CG solves.

    δ, the accept rule and the line-search settings change only the cheap line search; damping and
    CG settings need a new CG solve but not a new gradient or Fisher operator.
    """

    problem: UpdateProblem | None = None
    grad: Tensor | None = None
    surrogate_old: float = NAN  # L(θ_old), from the same pass as the gradient
    fvp: Callable[[Tensor], Tensor] | None = None  # the analytic Fisher's (kept for the explorer)
    fvps: dict[str, Callable[[Tensor], Tensor]] = field(default_factory=dict)
    solves: dict[tuple, Direction] = field(default_factory=dict)

    def bind(self, problem: UpdateProblem) -> None:
        """Start afresh when the problem changes."""
        if self.problem is not problem:
            self.problem, self.grad, self.fvp, self.fvps, self.solves = problem, None, None, {}, {}
            self.surrogate_old = NAN
        if self.grad is None:
            self.surrogate_old, self.grad = surrogate_and_gradient(problem)

    def fisher(self, kind: str) -> Callable[[Tensor], Tensor]:
        if kind == "analytic" and self.fvp is not None:
            return self.fvp
        if kind not in self.fvps:
            self.fvps[kind] = FISHERS[kind](self.problem)
        if kind == "analytic":
            self.fvp = self.fvps[kind]
        return self.fvps[kind]

    def direction(self, settings: StepSettings) -> Direction:
        s = settings
        natural = s.update in ("trpo", "npg")
        key = ((s.update == "pg"), s.fisher, float(s.damping)) + (
            (s.cg_iters, float(s.cg_tol)) if natural else ())
        if key not in self.solves:
            fvp = self.fisher(s.fisher)
            self.solves[key] = (natural_direction(self.grad, fvp, s.damping, s.cg_iters, s.cg_tol)
                                if natural else gradient_direction(self.grad, fvp, s.damping))
        return self.solves[key]


def _evaluator(problem: UpdateProblem, surrogate_old: float, direction: str) -> Evaluate:
    def evaluate(theta: Tensor) -> tuple[float, float, float]:
        with torch.no_grad():
            value, kls = surrogate_and_kls(problem, theta, direction)
        return float(value) - surrogate_old, float(kls.mean()), float(kls.max())
    return evaluate


def _trust_region_step(problem: UpdateProblem, s: StepSettings, cache: StepCache) -> StepReport:
    """trpo, npg and pg: direction → scale → (line search | take the full step)."""
    g, theta_old = cache.grad, problem.theta_old
    grad_norm = float(g.norm())

    def rejected(reason: str, **found) -> StepReport:
        return StepReport(s, False, reason, theta_old, theta_old, g, grad_norm, **found)

    if not math.isfinite(grad_norm):
        return rejected("the policy gradient g is not finite")
    if grad_norm == 0.0:
        why = problem.degenerate or "are all advantages zero?"
        return rejected(f"the policy gradient g is zero ({why})")
    d = cache.direction(s)
    found: dict = dict(direction=d.s, cg=d.cg, sAs=d.sAs)
    if not (torch.isfinite(d.s).all() and math.isfinite(d.sAs)):
        return rejected("the search direction or sᵀ(F+damping·I)s is not finite", **found)
    if d.sAs <= 0.0:
        return rejected(f"sᵀ(F+damping·I)s = {d.sAs:.3g} ≤ 0: the Fisher model is not positive "
                        "along s (singular F with damping 0?)", **found)
    full_step, beta = natural_step(d.s, d.sAs, s.max_kl)
    predicted = float(g @ full_step)
    found.update(beta=beta, full_step=full_step, predicted_improvement=predicted)
    evaluate = _evaluator(problem, cache.surrogate_old, s.kl_direction)

    def accept(gain: float, kl: float, max_state_kl: float, expected: float) -> str:
        return accept_reason(gain, kl, max_state_kl, expected, s.max_kl, s.accept_rule,
                             s.kl_constraint, s.accept_ratio)

    if s.update == "trpo":
        theta_new, trials = backtracking_line_search(evaluate, theta_old, full_step, predicted,
                                                     s.max_kl, s.backtrack_coef, s.backtrack_iters,
                                                     accept)
    else:  # npg, pg: the full step, evaluated once so the report says what it did
        gain, kl, max_state_kl = evaluate(theta_old + full_step)
        finite = math.isfinite(gain) and math.isfinite(kl)
        reason = "accepted" if finite else f"non-finite surrogate gain {gain} or KL {kl}"
        theta_new = theta_old + full_step if finite else theta_old
        trials = [Trial(1.0, gain, kl, predicted, finite, reason, max_state_kl)]
    found["trials"] = trials
    last = trials[-1]
    if not last.accepted:
        what = f"no line-search trial accepted in {len(trials)}" if s.update == "trpo" else \
            "the full step was not taken"
        return rejected(f"{what} (last: {last.reason})", **found)
    where = f"at fraction {last.fraction:.3g}" if s.update == "trpo" else "(full step, no line search)"
    return StepReport(s, True, f"accepted {where}", theta_old, theta_new, g, grad_norm, kl=last.kl,
                      surrogate_gain=last.surrogate_gain, step_fraction=last.fraction,
                      max_state_kl=last.max_state_kl, **found)


def _ppo_step(problem: UpdateProblem, s: StepSettings, cache: StepCache,
              generator: torch.Generator | None) -> StepReport:
    g, theta_old = cache.grad, problem.theta_old
    grad_norm = float(g.norm())
    if grad_norm == 0.0 or not math.isfinite(grad_norm):
        why = problem.degenerate or "are all advantages zero?"
        what = "zero" if grad_norm == 0.0 else "not finite"
        return StepReport(s, False, f"the policy gradient g is {what} ({why})", theta_old, theta_old, g,
                          grad_norm)
    result = ppo_clip_update(problem, s.ppo_clip, s.ppo_epochs, s.ppo_minibatch_size, s.ppo_lr,
                             generator)
    gain, kl, max_state_kl = _evaluator(problem, cache.surrogate_old, s.kl_direction)(result.theta)
    step = result.theta - theta_old
    finite = math.isfinite(gain) and math.isfinite(kl) and bool(torch.isfinite(step).all())
    common = dict(full_step=step, predicted_improvement=float(g @ step), ppo_epoch_losses=result.losses,
                  ppo_clip_fraction=result.clip_fraction)
    if not finite:
        return StepReport(s, False, f"non-finite surrogate gain {gain} or KL {kl} after PPO",
                          theta_old, theta_old, g, grad_norm, **common)
    return StepReport(s, True, f"accepted after {s.ppo_epochs} PPO epochs", theta_old, result.theta, g,
                      grad_norm, kl=kl, surrogate_gain=gain, step_fraction=1.0,
                      max_state_kl=max_state_kl, **common)


def update_step(problem: UpdateProblem, settings: StepSettings | None = None,
                cache: StepCache | None = None, generator: torch.Generator | None = None
                ) -> StepReport:
    """One update of θ_old on `problem` by the rule `settings.update`; returns a `StepReport`
    (θ_new is `report.theta_new`). A rejected step leaves θ_new = θ_old bitwise, and `report.reason`
    says why. Pass a `StepCache` to reuse the gradient, the Fisher operator and CG solves across calls
    on the same problem (the explorer does); `generator` drives ppo-clip's minibatches."""
    if not isinstance(problem, UpdateProblem):
        raise TypeError(f"problem = {problem!r} is not allowed: give an UpdateProblem (from "
                        "make_update_problem, a snapshot's .problem(), or Trainer.collect_problem)")
    settings = StepSettings() if settings is None else settings
    if not isinstance(settings, StepSettings):
        raise ConfigError(f"settings = {settings!r} is not allowed: give a StepSettings (or a "
                          "TRPOConfig) or None")
    settings = settings.step_settings()
    cache = StepCache() if cache is None else cache
    cache.bind(problem)
    if settings.update == "ppo-clip":
        return _ppo_step(problem, settings, cache, generator)
    return _trust_region_step(problem, settings, cache)


def timed_update_step(problem: UpdateProblem, settings: StepSettings, cache: StepCache | None = None,
                      generator: torch.Generator | None = None) -> tuple[StepReport, float]:
    """`update_step` and the seconds it took."""
    start = time.perf_counter()
    report = update_step(problem, settings, cache, generator)
    return report, time.perf_counter() - start


def trpo_step(problem: UpdateProblem, settings: StepSettings | None = None,
              cache: StepCache | None = None, **overrides) -> StepReport:
    """One TRPO update: `update_step` with the rule "trpo". Settings come from `settings` (a
    `StepSettings` or `TRPOConfig`, default `StepSettings()`), changed by keyword `overrides`, e.g.
    `trpo_step(problem, max_kl=0.02, damping=0.1)`."""
    if settings is not None and not isinstance(settings, StepSettings):
        raise ConfigError(f"trpo_step: settings = {settings!r} is not allowed: give a StepSettings "
                          "(keyword arguments such as max_kl=0.01 set single fields)")
    base = (settings or StepSettings()).step_settings()
    settings = base.replace(update="trpo", **overrides)
    return update_step(problem, settings, cache)
