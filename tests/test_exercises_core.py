"""The TRPO-core exercise checks (surrogate, mean KL, β, one whole step) pass the reference written out,
and each catches at least five planted mistakes with an explanation that names the mistake."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch.distributions import kl_divergence

from trpo_lab import solutions, trust_region
from trpo_lab.exercises import random_problem
from trpo_lab.exercises_core import check_mean_kl, check_step_scale, check_surrogate, check_trpo_update


def written(fn, **replace):
    """`fn`'s source compiled anew, as a student who typed it (names in `replace` rebound)."""
    namespace = {**fn.__globals__, **replace}
    exec(compile(inspect.getsource(fn), f"<student {fn.__name__}>", "exec"), namespace)
    return namespace[fn.__name__]


def _fails_with(check, fn, *words):
    result = check(fn, verbose=False)
    assert not result, f"{check.__name__} did not catch the planted mistake"
    for word in words:
        assert word in result.problem, f"expected {word!r} in:\n{result.problem}"
    return result.problem


@pytest.mark.parametrize("check, fn", [
    (check_surrogate, solutions.surrogate), (check_mean_kl, solutions.mean_kl),
    (check_step_scale, solutions.step_scale), (check_trpo_update, solutions.trpo_update)])
def test_the_reference_written_out_passes(check, fn):
    for seed in (0, 1):
        result = check(written(fn), seed=seed, verbose=False)
        assert result and result.cases >= 4, result


@pytest.mark.parametrize("check, fn", [
    (check_surrogate, solutions.surrogate), (check_mean_kl, solutions.mean_kl),
    (check_step_scale, solutions.step_scale), (check_trpo_update, solutions.trpo_update)])
def test_the_switched_in_reference_is_not_graded(check, fn):
    _fails_with(check, fn, "scores 0")


# ───────────────────────────── the surrogate ─────────────────────────────


def _lp(problem, theta):
    return problem.distribution_at(theta).log_prob(problem.actions)


SURROGATES = {
    "log ratio": (lambda p, th: ((_lp(p, th) - p.old_log_prob) * p.advantages).mean(), "log-ratio"),
    "pg loss": (lambda p, th: (_lp(p, th) * p.advantages).mean(), "policy-gradient loss"),
    "inverted": (lambda p, th: (torch.exp(p.old_log_prob - _lp(p, th)) * p.advantages).mean(),
                 "upside down"),
    "sum": (lambda p, th: (torch.exp(_lp(p, th) - p.old_log_prob) * p.advantages).sum(), "summed"),
    "sign": (lambda p, th: -(torch.exp(_lp(p, th) - p.old_log_prob) * p.advantages).mean(), "wrong sign"),
    "old not fixed": (lambda p, th: (torch.exp(_lp(p, th) - _lp(p, th)) * p.advantages).mean(),
                      "ratio is 1"),
    "no advantages": (lambda p, th: torch.exp(_lp(p, th) - p.old_log_prob).mean(), "advantages are missing"),
    "detached": (lambda p, th: (torch.exp(_lp(p, th) - p.old_log_prob) * p.advantages).mean().detach(),
                 "does not depend on θ through autograd"),
    "item": (lambda p, th: (torch.exp(_lp(p, th) - p.old_log_prob) * p.advantages).mean().item(),
             "Python number"),
    "half detached": (lambda p, th: (torch.exp(_lp(p, th).detach() - p.old_log_prob) * p.advantages).mean()
                      + 0 * th.sum(), "gradient is not"),
}


@pytest.mark.parametrize("mistake", SURROGATES)
def test_surrogate_catches_planted_mistakes(mistake):
    fn, words = SURROGATES[mistake]
    _fails_with(check_surrogate, fn, words)


def test_surrogate_catches_calling_the_library():
    _fails_with(check_surrogate, lambda p, th: trust_region.surrogate(p, th), "trpo_lab's own", "scores 0")


# ───────────────────────────── the mean KL ─────────────────────────────


def _kl(p, th):
    return kl_divergence(p.old_distribution(), p.distribution_at(th))


KLS = {
    "reverse": (lambda p, th: kl_divergence(p.distribution_at(th), p.old_distribution()).mean(),
                "KL(π_θ ‖ π_old)"),
    "sum": (lambda p, th: _kl(p, th).sum(), "summed"),
    "max": (lambda p, th: _kl(p, th).max(), "largest per-state KL"),
    "sampled": (lambda p, th: (p.old_log_prob - _lp(p, th)).mean(), "sample estimate"),
    "symmetrised": (lambda p, th: 0.5 * (_kl(p, th) + kl_divergence(p.distribution_at(th),
                                                                    p.old_distribution())).mean(),
                    "averaged both directions"),
    "self": (lambda p, th: kl_divergence(p.distribution_at(th), p.distribution_at(th)).mean(),
             "0 at every θ"),
    "sign": (lambda p, th: -_kl(p, th).mean(), "wrong sign"),
    "detached": (lambda p, th: _kl(p, th).mean().detach(), "does not depend on θ through autograd"),
    "per state": (lambda p, th: _kl(p, th), "scalar tensor"),
}


@pytest.mark.parametrize("mistake", KLS)
def test_mean_kl_catches_planted_mistakes(mistake):
    fn, words = KLS[mistake]
    _fails_with(check_mean_kl, fn, words)


def test_mean_kl_catches_calling_the_library():
    _fails_with(check_mean_kl, trust_region.mean_kl, "trpo_lab's own", "scores 0")


# ───────────────────────────── β ─────────────────────────────


def _sAs(s, fvp, damping):
    return float(s @ (fvp(s) + damping * s))


BETAS = {
    "no 2": (lambda s, fvp, lam, d: math.sqrt(d / _sAs(s, fvp, lam)), "factor 2"),
    "no sqrt": (lambda s, fvp, lam, d: 2 * d / _sAs(s, fvp, lam), "square root"),
    "inverted": (lambda s, fvp, lam, d: math.sqrt(_sAs(s, fvp, lam) / (2 * d)), "upside down"),
    "no damping": (lambda s, fvp, lam, d: math.sqrt(2 * d / float(s @ fvp(s))), "damping is missing"),
    "euclidean": (lambda s, fvp, lam, d: math.sqrt(2 * d / float(s @ s)), "sᵀs"),
    "no sqrt of sAs": (lambda s, fvp, lam, d: math.sqrt(2 * d) / _sAs(s, fvp, lam), "square root"),
    "negative": (lambda s, fvp, lam, d: -math.sqrt(2 * d / _sAs(s, fvp, lam)), "positive"),
    "the step": (lambda s, fvp, lam, d: math.sqrt(2 * d / _sAs(s, fvp, lam)) * s, "a vector"),
}


@pytest.mark.parametrize("mistake", BETAS)
def test_step_scale_catches_planted_mistakes(mistake):
    fn, words = BETAS[mistake]
    _fails_with(check_step_scale, fn, words)


def test_step_scale_catches_calling_the_library():
    _fails_with(check_step_scale,
                lambda s, fvp, lam, d: trust_region.natural_step(s, _sAs(s, fvp, lam), d)[1],
                "trpo_lab's own")


# ───────────────────────────── one whole step ─────────────────────────────

PIECES = {name: written(getattr(solutions, name)) for name in
          ("conjugate_gradient", "fisher_vector_product", "line_search", "surrogate", "step_scale")}


def student_step(problem, max_kl, damping, *, direction="natural", line_search=True, beta=True, sign=1.0,
                 beta_damping=True, cg_damping=True, return_step=False):
    """A student's step from their own pieces, with switches for the usual mistakes."""
    P = PIECES
    theta = problem.theta_old.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(P["surrogate"](problem, theta), theta)
    lam = damping if cg_damping else 0.0
    s = g if direction == "gradient" else P["conjugate_gradient"](
        lambda v: P["fisher_vector_product"](problem, v, lam), g, 10, 1e-10)
    b = P["step_scale"](s, lambda v: P["fisher_vector_product"](problem, v, 0.0),
                        damping if beta_damping else 0.0, max_kl) if beta else 1.0
    step = sign * b * s
    if return_step:
        return step
    if not line_search:
        return problem.theta_old + step
    return P["line_search"](problem, step, max_kl, 0.8, 10)


def test_the_students_pieces_assembled_pass():
    assert check_trpo_update(student_step, verbose=False)


STEPS = {
    "no line search": (dict(line_search=False), "without the line search"),
    "gradient direction": (dict(direction="gradient"), "along the gradient g"),
    "no beta": (dict(beta=False), "β is missing"),
    "minus": (dict(sign=-1.0), "wrong sign"),
    "the step": (dict(return_step=True), "you returned the step"),
    "beta without damping": (dict(beta_damping=False), "β ignores the damping"),
    "cg without damping": (dict(cg_damping=False), "without the damping"),
}


@pytest.mark.parametrize("mistake", STEPS)
def test_trpo_update_catches_planted_mistakes(mistake):
    options, words = STEPS[mistake]
    _fails_with(check_trpo_update, lambda p, d, lam: student_step(p, d, lam, **options), words)


def test_trpo_update_catches_calling_trpo_step():
    _fails_with(check_trpo_update,
                lambda p, d, lam: trust_region.trpo_step(p, max_kl=d, damping=lam).theta_new,
                "trpo_lab's own", "trpo_step")


def test_one_case_of_the_step_check_backtracks():
    # the "no line search" mistake is only visible when trpo_step backtracks
    problem = random_problem("categorical", 5, batch=96)
    assert trust_region.trpo_step(problem, max_kl=1.0, damping=0.05).backtracks > 0
