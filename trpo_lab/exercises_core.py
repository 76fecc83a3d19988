"""Checks for the exercises on the TRPO core (notebook 01): the importance-sampled surrogate and its
gradient, the mean KL, the step scale β, and one whole step assembled from the student's own pieces.

    surrogate(problem, theta) -> L(θ)                 a differentiable scalar tensor (eq. 14)
    mean_kl(problem, theta) -> KL̄(θ)                  mean_i KL(π_old(·|s_i) ‖ π_θ(·|s_i)), differentiable
    step_scale(s, fvp, damping, max_kl) -> β           β = √(2δ / sᵀ(F + λI)s)
    trpo_update(problem, max_kl, damping) -> θ_new     compared with `trpo_step` on the same problem

Like `trpo_lab.exercises`, each check compares with trpo_lab's own math on random problems and names
the mistake when the answer matches a known wrong variant.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import kl_divergence

from . import cg
from . import problem as pr
from . import trust_region as tr
from .exercises import _line_search, random_problem
from .grading import CheckResult, Failed, as_vector, call, close, run

Variant = tuple[Callable[[tr.UpdateProblem, Tensor], Tensor], str]


def _thetas(problem: tr.UpdateProblem, g: torch.Generator) -> list[tuple[str, Tensor]]:
    """θ_old, a nearby θ and a far θ (where the variants that agree at θ_old drift apart)."""
    theta = problem.theta_old
    return [("θ = θ_old", theta.clone()),
            ("θ near θ_old", theta + 0.05 * torch.randn(theta.shape, generator=g, dtype=theta.dtype)),
            ("θ far from θ_old", theta + 0.5 * torch.randn(theta.shape, generator=g, dtype=theta.dtype))]


def _scalar(out, case: str, what: str) -> Tensor:
    if isinstance(out, (float, int)) and not isinstance(out, bool):
        raise Failed(f"{case}: you returned a Python number ({out:.6g}); return the tensor itself (no "
                     f".item() or float()), so that autograd can differentiate {what}")
    if not isinstance(out, Tensor) or out.numel() != 1:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise Failed(f"{case}: expected {what} as a scalar tensor, got {shape}: average over the batch")
    if not torch.isfinite(out).all():
        raise Failed(f"{case}: {what} is NaN or infinite")
    return out.reshape(())


def _reference_grad(reference: Callable, problem: tr.UpdateProblem, theta: Tensor) -> Tensor:
    theta = theta.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(reference(problem, theta), theta)
    return grad


def _check_scalar_of_theta(name: str, student: Callable, reference: Callable, variants: list[Variant],
                           what: str, seed: int, result: CheckResult) -> None:
    """Values and gradients at three θ, for a categorical and a Gaussian policy; on a wrong value, name
    the first variant whose values match the student's."""
    g = torch.Generator().manual_seed(seed + 101)
    for kind in ("categorical", "gaussian"):
        problem = random_problem(kind, seed + 3, batch=48)
        thetas = _thetas(problem, g)
        got, want, grads = [], [], []
        for label, theta in thetas:
            case = f"{kind} policy, {label}"
            param = theta.clone().requires_grad_(True)
            value = _scalar(call(student, case, problem, param), case, what)
            if not torch.equal(param.detach(), theta):
                raise Failed(f"{case}: your function changed θ in place")
            grad = None
            if value.requires_grad:
                (grad,) = torch.autograd.grad(value, param, allow_unused=True)
            got.append(float(value.detach()))
            want.append(float(reference(problem, theta)))
            grads.append(grad)
        got_t, want_t = torch.tensor(got, dtype=torch.float64), torch.tensor(want, dtype=torch.float64)
        if not close(got_t, want_t, 1e-9):
            for variant, why in variants:
                values = torch.tensor([float(variant(problem, th)) for _, th in thetas], dtype=torch.float64)
                if close(got_t, values, 1e-9):
                    raise Failed(f"{kind} policy: {why}")
            where = next(i for i in range(len(got)) if abs(got[i] - want[i]) > 1e-9 * (1 + abs(want[i])))
            raise Failed(f"{kind} policy, {thetas[where][0]}: expected {what} = {want[where]:.6g}, got "
                         f"{got[where]:.6g}")
        for (label, theta), grad in zip(thetas, grads):
            case = f"{kind} policy, {label}"
            if grad is None:
                raise Failed(f"{case}: the value of {what} is right, but it does not depend on θ through "
                             "autograd (torch.no_grad, .detach(), or a tensor rebuilt from numbers?): "
                             "TRPO differentiates it")
            if not close(grad, _reference_grad(reference, problem, theta), 1e-8):
                raise Failed(f"{case}: the value of {what} is right but its gradient is not: is part of "
                             "it detached from θ?")
        result.cases += 2 * len(thetas)


# ───────────────────────────── the surrogate ─────────────────────────────


def _log_prob(problem: tr.UpdateProblem, theta: Tensor) -> Tensor:
    return problem.distribution_at(theta).log_prob(problem.actions)


def _ratio(problem: tr.UpdateProblem, theta: Tensor) -> Tensor:
    return torch.exp(_log_prob(problem, theta) - problem.old_log_prob)


SURROGATE_MISTAKES: list[Variant] = [
    (lambda p, th: ((_log_prob(p, th) - p.old_log_prob) * p.advantages).mean(),
     "you weighted the log-ratio log π_θ − log π_old by Â; the surrogate weights the ratio "
     "π_θ/π_old = exp(log π_θ − log π_old) (same gradient at θ_old, different away from it)"),
    (lambda p, th: (_log_prob(p, th) * p.advantages).mean(),
     "that is the policy-gradient loss mean(log π_θ · Â): it has the surrogate's gradient at θ_old but "
     "not its value, and it does not measure the change of the policy; use the ratio π_θ/π_old"),
    (lambda p, th: (torch.exp(p.old_log_prob - _log_prob(p, th)) * p.advantages).mean(),
     "the ratio is upside down: π_θ/π_old (new over old), not π_old/π_θ"),
    (lambda p, th: (_ratio(p, th) * p.advantages).sum(),
     "you summed over the batch; L is the mean (the sample average estimates an expectation)"),
    (lambda p, th: -(_ratio(p, th) * p.advantages).mean(),
     "wrong sign: TRPO maximises L = mean(ratio · Â); −L is a loss for a minimiser"),
    (lambda p, th: p.advantages.mean() + 0 * th.sum(),
     "your ratio is 1 at every θ: π_old must be fixed (problem.old_log_prob), not recomputed from θ"),
    (lambda p, th: _ratio(p, th).mean(),
     "the advantages are missing: L = mean(ratio · Â)"),
]


def check_surrogate(student: Callable, seed: int = 0, verbose: bool = True) -> CheckResult:
    """Check `student(problem, theta) -> L(θ)` against `trust_region.surrogate`: the value at θ_old and
    away from it, and its gradient (autograd through the student's tensor)."""

    def cases(result: CheckResult) -> None:
        _check_scalar_of_theta("surrogate", student, pr.surrogate, SURROGATE_MISTAKES, "L(θ)", seed, result)

    return run("surrogate", student, cases, verbose,
               lambda: [pr.surrogate, pr.surrogate_and_kl, pr.surrogate_and_kls, tr.surrogate_and_gradient])


# ───────────────────────────── the mean KL ─────────────────────────────


def _kls(problem: tr.UpdateProblem, theta: Tensor, reverse: bool = False) -> Tensor:
    old, new = problem.old_distribution(), problem.distribution_at(theta)
    return kl_divergence(new, old) if reverse else kl_divergence(old, new)


KL_MISTAKES: list[Variant] = [
    (lambda p, th: _kls(p, th, reverse=True).mean(),
     "you computed KL(π_θ ‖ π_old); TRPO's constraint is KL(π_old ‖ π_θ), old policy first (the "
     "expectation is over the old policy's actions, which the batch has). The two agree to second "
     "order near θ_old and differ far from it"),
    (lambda p, th: _kls(p, th).sum(), "you summed over the states; KL̄ is the mean over states"),
    (lambda p, th: _kls(p, th).max(),
     "that is the largest per-state KL (the theory's D_KL^max); TRPO constrains the mean over states"),
    (lambda p, th: (p.old_log_prob - _log_prob(p, th)).mean(),
     "that is the sample estimate mean(log π_old(a|s) − log π_θ(a|s)) over the batch's actions: "
     "unbiased, but noisy; TRPO uses the analytic KL between the distributions (kl_divergence)"),
    (lambda p, th: 0.5 * (_kls(p, th) + _kls(p, th, reverse=True)).mean(),
     "you averaged both directions (a symmetrised KL); TRPO uses KL(π_old ‖ π_θ) only"),
    (lambda p, th: (_kls(p, th) + _kls(p, th, reverse=True)).mean(),
     "you added both directions (Jeffreys divergence); TRPO uses KL(π_old ‖ π_θ) only"),
    (lambda p, th: 0 * th.sum(),
     "your KL is 0 at every θ: π_old must be fixed (problem.old_distribution()); KL(π_θ ‖ π_θ) is 0"),
    (lambda p, th: -_kls(p, th).mean(), "wrong sign: a KL divergence is ≥ 0"),
]


def check_mean_kl(student: Callable, seed: int = 0, verbose: bool = True) -> CheckResult:
    """Check `student(problem, theta) -> KL̄(θ)` against `trust_region.mean_kl` (value and gradient)."""

    def cases(result: CheckResult) -> None:
        _check_scalar_of_theta("mean_kl", student, pr.mean_kl, KL_MISTAKES, "KL̄(θ)", seed, result)

    return run("mean_kl", student, cases, verbose,
               lambda: [pr.mean_kl, pr.per_state_kl, pr.surrogate_and_kl, pr.surrogate_and_kls])


# ───────────────────────────── β ─────────────────────────────


def _beta_variants(s: Tensor, F: Tensor, damping: float, max_kl: float) -> list[tuple[float, str]]:
    sFs, ss = float(s @ F @ s), float(s @ s)
    sAs = sFs + damping * ss
    return [
        (math.sqrt(max_kl / sAs), "the factor 2 is missing: ½(βs)ᵀA(βs) = δ gives β = √(2δ / sᵀAs)"),
        (2 * max_kl / sAs, "the square root is missing: β = √(2δ / sᵀAs)"),
        (math.sqrt(sAs / (2 * max_kl)), "upside down: β = √(2δ / sᵀAs), not √(sᵀAs / 2δ)"),
        (math.sqrt(2 * max_kl / sFs),
         "the damping is missing: the model is ½xᵀ(F + λI)x, so β = √(2δ / sᵀ(F + λI)s) with "
         "sᵀ(F + λI)s = sᵀF s + λ sᵀs (CG solved with F + λI, and β must use the same matrix)"),
        (math.sqrt(2 * max_kl / ss), "you used sᵀs (a step of Euclidean length √(2δ)); the trust region "
                                     "is measured by the Fisher model: sᵀ(F + λI)s"),
        (math.sqrt(2 * max_kl) / sAs, "you divided √(2δ) by sᵀAs; divide by its square root"),
        (-math.sqrt(2 * max_kl / sAs), "β is positive: the step goes along s"),
        (math.sqrt(2 * max_kl**2 / sAs), "δ appears squared; β = √(2δ / sᵀAs)"),
    ]


def check_step_scale(student: Callable, seed: int = 0, verbose: bool = True) -> CheckResult:
    """Check `student(s, fvp, damping, max_kl) -> β` (fvp: v ↦ F v without damping) on random
    positive semi-definite F, with and without damping."""

    def cases(result: CheckResult) -> None:
        g = torch.Generator().manual_seed(seed + 11)
        for n, damping, max_kl, rank in ((4, 0.1, 0.01, 4), (7, 0.5, 0.05, 3), (6, 0.0, 0.02, 6),
                                         (3, 0.01, 0.3, 1)):
            Q = torch.randn(n, rank, generator=g, dtype=torch.float64)
            F = Q @ Q.T / rank
            s = torch.randn(n, generator=g, dtype=torch.float64)
            case = f"{n} parameters, damping = {damping}, max_kl = {max_kl}, F of rank {rank}"
            s_before = s.clone()
            out = call(student, case, s, lambda v, F=F: F @ v, damping, max_kl)
            if not torch.equal(s, s_before):
                raise Failed(f"{case}: your function changed s in place")
            if isinstance(out, Tensor) and out.shape == s.shape:
                raise Failed(f"{case}: you returned a vector (the step βs?); return the scalar β")
            if isinstance(out, Tensor):
                if out.numel() != 1:
                    raise Failed(f"{case}: expected β as a scalar, got shape {tuple(out.shape)}")
                out = float(out)
            if not isinstance(out, (float, int)) or not math.isfinite(out):
                raise Failed(f"{case}: expected β as a finite number or scalar tensor, got {out!r}")
            beta = math.sqrt(2 * max_kl / float(s @ F @ s + damping * s @ s))
            if abs(out - beta) <= 1e-9 * beta:
                result.cases += 1
                continue
            for value, why in _beta_variants(s, F, damping, max_kl):
                if abs(out - value) <= 1e-9 * abs(value):
                    raise Failed(f"{case}: expected β = {beta:.6g}, got {out:.6g}: {why}")
            raise Failed(f"{case}: expected β = {beta:.6g}, got {out:.6g}; β = √(2δ / sᵀ(F + λI)s)")
        result.notes.append("βs lands on the boundary of the model ½xᵀ(F + λI)x = δ; the real KL of βs "
                            "is only close to δ, which is why the line search follows")

    return run("step_scale", student, cases, verbose, lambda: [tr.natural_step])


# ───────────────────────────── one whole step ─────────────────────────────


def _step_variants(problem: tr.UpdateProblem, max_kl: float, damping: float) -> list[tuple[Tensor, str]]:
    F = tr.fisher_operator(problem)
    g = tr.policy_gradient(problem)
    theta_old = problem.theta_old

    def solve(b: Tensor, lam: float) -> Tensor:
        return cg.conjugate_gradient(lambda v: F(v) + lam * v, b, 10, 1e-10).x

    def quad(x: Tensor, lam: float) -> float:
        return float(x @ (F(x) + lam * x))

    def search(step: Tensor) -> Tensor:
        return _line_search(problem, step, max_kl, 0.8, 10)

    s = solve(g, damping)
    beta = math.sqrt(2 * max_kl / quad(s, damping))
    s0 = solve(g, 0.0) if damping > 0 else s
    out = [
        (theta_old + beta * s, "you took the full step βs without the line search; the real KL of βs "
                               "can exceed δ (and the real surrogate can drop): backtrack"),
        (search(math.sqrt(2 * max_kl / quad(g, damping)) * g),
         "you stepped along the gradient g; TRPO's direction is the natural gradient s ≈ (F + λI)⁻¹g "
         "from conjugate gradient"),
        (search(s), "β is missing: the line search starts from the full step βs, β = √(2δ / sᵀ(F + λI)s)"),
        (search(-beta * s), "wrong sign: the step is +βs (s ≈ (F + λI)⁻¹g points uphill on L)"),
        (beta * s, "you returned the step βs; return θ_new = θ_old + (accepted fraction)·βs"),
        (search(math.sqrt(2 * max_kl / quad(s, 0.0)) * s),
         "β ignores the damping: use sᵀ(F + λI)s, the matrix CG solved with"),
    ]
    if damping > 0:
        out.append((search(math.sqrt(2 * max_kl / quad(s0, damping)) * s0),
                    "CG solved F s = g without the damping; solve (F + λI)s = g"))
    return out


PIECES = ("surrogate", "conjugate_gradient", "fisher_vector_product", "step_scale", "line_search")


@contextlib.contextmanager
def _reference_pieces(student: Callable):
    """While the assembly is checked, the pieces it calls by name from its module (the notebook) are the
    reference solutions, so a mistake in an earlier exercise is not counted twice."""
    from . import solutions

    namespace = getattr(student, "__globals__", {})
    saved = {name: namespace[name] for name in PIECES if callable(namespace.get(name))}
    namespace.update({name: getattr(solutions, name) for name in saved})
    try:
        yield sorted(saved)
    finally:
        namespace.update(saved)


def check_trpo_update(student: Callable, seed: int = 0, verbose: bool = True) -> CheckResult:
    """Check `student(problem, max_kl, damping) -> θ_new` against `trpo_step(problem, max_kl=…,
    damping=…)` (10 CG iterations, tol 1e-10, backtracking coefficient 0.8, 10 trials): a step accepted
    at once and one that needs backtracking, for a categorical and a Gaussian policy. The pieces the
    student's function calls by name (exercises 1–6) are the reference ones during the check; the
    notebook's next cell runs the student's own."""

    def cases(result: CheckResult) -> None:
        with _reference_pieces(student) as swapped:
            _step_cases(result)
        if swapped:
            result.notes.append(f"graded with the reference {', '.join(swapped)} (each is graded in its own "
                                "exercise); the next cell runs yours")

    def _step_cases(result: CheckResult) -> None:
        for kind in ("categorical", "gaussian"):
            problem = random_problem(kind, seed + 5, batch=96)
            for max_kl, damping in ((0.01, 0.1), (1.0, 0.05)):
                case = f"{kind} policy, max_kl = {max_kl}, damping = {damping}"
                report = tr.trpo_step(problem, max_kl=max_kl, damping=damping, cg_iters=10, cg_tol=1e-10,
                                      backtrack_coef=0.8, backtrack_iters=10)
                out = call(student, case, problem, max_kl, damping)
                theta = as_vector(out, case, problem.theta_old, "θ_new")
                if close(theta, report.theta_new, 1e-8):
                    result.cases += 1
                    continue
                for variant, why in _step_variants(problem, max_kl, damping):
                    if close(theta, variant, 1e-8):
                        raise Failed(f"{case}: {why}")
                if close(theta, problem.theta_old, 1e-12):
                    raise Failed(f"{case}: you returned θ_old, but trpo_step accepts a step "
                                 f"({report.reason}): check the direction and β")
                raise Failed(f"{case}: your θ_new differs from trpo_step's (‖Δ‖ = "
                             f"{float((theta - report.theta_new).norm()):.3g}); assemble g → s (CG on "
                             "F + λI) → β → line search from βs")
        result.notes.append("your step equals trpo_step's: the same update that trains the agents")

    return run("trpo_update", student, cases, verbose,
               lambda: [tr.trpo_step, tr.update_step, tr.natural_direction, tr.natural_step,
                        tr.backtracking_line_search, tr.gradient_direction, cg.conjugate_gradient,
                        pr.fisher_operator, pr.double_backprop_fisher_operator, pr.fisher_vector_product,
                        tr.policy_gradient, tr.surrogate_and_gradient])
