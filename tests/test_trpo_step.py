"""`trpo_step`: the trust region holds, rejections leave θ bitwise unchanged, reports are complete."""

import math
import re

import pytest
import torch
from helpers import KINDS, small_policy, small_problem

from trpo_lab.trust_region import (
    StepCache,
    backtracking_line_search,
    make_update_problem,
    mean_kl,
    natural_step,
    trpo_step,
)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("max_kl", [1e-4, 1e-3, 1e-2, 1e-1])
def test_an_accepted_step_never_exceeds_delta(kind, max_kl):
    for seed in range(3):
        problem = small_problem(kind, n=128, seed=seed)
        report = trpo_step(problem, max_kl=max_kl, damping=0.1)
        assert report.accepted, report.reason
        real_kl = float(mean_kl(problem, report.theta_new))
        assert real_kl <= max_kl and real_kl == pytest.approx(report.kl)
        assert report.surrogate_gain > 0
        # the full step sits on the boundary of the quadratic model: ½ (βs)ᵀ(F+λI)(βs) = δ
        assert 0.5 * report.beta**2 * report.sAs == pytest.approx(max_kl)


def test_the_report_records_every_trial_and_the_accepted_one_last():
    problem = small_problem("gaussian", n=64)
    report = trpo_step(problem, max_kl=0.5, damping=0.0, backtrack_coef=0.5, backtrack_iters=15)
    assert report.accepted
    fractions = [t.fraction for t in report.trials]
    assert fractions == [0.5**k for k in range(len(fractions))]
    assert all(not t.accepted for t in report.trials[:-1]) and report.trials[-1].accepted
    assert report.backtracks == len(report.trials) - 1
    for t in report.trials[:-1]:
        assert t.kl > 0.5 or t.surrogate_gain <= 0
    torch.testing.assert_close(report.theta_new,
                               report.theta_old + report.step_fraction * report.full_step)
    assert report.predicted_improvement == pytest.approx(float(report.grad @ report.full_step))
    assert report.cg is not None and len(report.cg.residual_norms) == report.cg.iterations + 1


def test_a_step_with_no_accepted_trial_leaves_theta_bitwise_unchanged():
    problem = small_problem("categorical", n=64)
    cache = StepCache()
    trpo_step(problem, cache=cache)
    cache.grad = -cache.grad  # search downhill: no trial can improve the real surrogate
    cache.solves.clear()
    report = trpo_step(problem, backtrack_iters=5, cache=cache)
    assert not report.accepted and "no line-search trial accepted in 5" in report.reason
    assert all(t.surrogate_gain < 0 and "≤ 0" in t.reason for t in report.trials)
    assert torch.equal(report.theta_new, problem.theta_old)
    assert report.kl == 0.0 and report.surrogate_gain == 0.0 and report.backtracks == 5


def test_zero_advantages_give_a_rejected_step_with_its_reason():
    policy = small_policy("gaussian")
    obs = torch.randn(32, 3, dtype=torch.float64)
    problem = make_update_problem(policy, obs, policy.sample(obs), torch.zeros(32, dtype=torch.float64),
                                  normalize_advantages=True)
    report = trpo_step(problem)
    assert not report.accepted and "gradient g is zero" in report.reason
    assert torch.equal(report.theta_new, problem.theta_old)


def test_a_singular_fisher_with_zero_damping_is_rejected_or_safe():
    # a categorical policy with a dead ReLU layer: most directions have zero Fisher curvature
    policy = small_policy("categorical")
    with torch.no_grad():
        for p in policy.parameters():
            p.zero_()
    obs = torch.randn(16, 3, dtype=torch.float64)
    adv = torch.randn(16, dtype=torch.float64)
    problem = make_update_problem(policy, obs, policy.sample(obs), adv)
    report = trpo_step(problem, damping=0.0, cg_iters=30)
    assert torch.isfinite(report.theta_new).all()
    if not report.accepted:
        assert torch.equal(report.theta_new, problem.theta_old)
    else:
        assert report.kl <= 0.01


def test_a_fisher_that_is_exactly_zero_along_g_is_rejected():
    problem = small_problem("gaussian", n=16)
    cache = StepCache()
    trpo_step(problem, cache=cache)
    cache.fvp = lambda v: torch.zeros_like(v)  # F = 0: sᵀFs = 0 with damping 0
    cache.solves.clear()
    report = trpo_step(problem, damping=0.0, cache=cache)
    assert not report.accepted and "breakdown" in report.cg.stopped
    assert "≤ 0" in report.reason and torch.equal(report.theta_new, problem.theta_old)


def test_a_batch_of_one_step_gives_a_clear_rejection():
    policy = small_policy("categorical")
    obs = torch.randn(1, 3, dtype=torch.float64)
    problem = make_update_problem(policy, obs, policy.sample(obs), torch.tensor([2.0], dtype=torch.float64),
                                  normalize_advantages=True)
    report = trpo_step(problem)
    assert not report.accepted and "zero" in report.reason
    assert torch.equal(report.theta_new, problem.theta_old)


def test_non_finite_data_is_refused_by_name():
    policy = small_policy("gaussian")
    obs = torch.randn(4, 3, dtype=torch.float64)
    adv = torch.tensor([1.0, math.nan, 0.0, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="advantages contains NaN"):
        make_update_problem(policy, obs, policy.sample(obs), adv)
    with pytest.raises(ValueError, match="fvp_fraction = 0"):
        make_update_problem(policy, obs, policy.sample(obs), torch.zeros(4, dtype=torch.float64), 0.0)


def test_non_finite_surrogate_trials_are_rejected_with_their_reason():
    theta = torch.zeros(3)
    step = torch.ones(3)
    calls = iter([(math.nan, 0.0), (1.0, 0.5), (-1.0, 0.001), (0.2, 0.001)])
    theta_new, trials = backtracking_line_search(lambda th: next(calls), theta, step, 1.0, 0.01, 0.5, 4)
    assert [t.accepted for t in trials] == [False, False, False, True]
    assert "non-finite" in trials[0].reason and "KL" in trials[1].reason and "≤ 0" in trials[2].reason
    torch.testing.assert_close(theta_new, theta + 0.125 * step)


def test_natural_step_reaches_the_quadratic_boundary():
    s = torch.tensor([3.0, 4.0], dtype=torch.float64)
    full, beta = natural_step(s, sAs=8.0, max_kl=0.01)
    assert beta == pytest.approx(math.sqrt(2 * 0.01 / 8.0))
    torch.testing.assert_close(full, beta * s)
    with pytest.raises(ValueError, match="must be > 0"):
        natural_step(s, 0.0, 0.01)


@pytest.mark.parametrize("max_kl", [0.0, -1.0, math.nan, math.inf, "0.01", True])
def test_natural_step_refuses_a_radius_that_is_not_a_finite_positive_number(max_kl):
    with pytest.raises(ValueError, match=f"max_kl = {re.escape(repr(max_kl))} is not allowed: must be a "
                                         "finite number > 0"):
        natural_step(torch.ones(2), 8.0, max_kl)


@pytest.mark.parametrize("name, value, allowed", [
    ("max_kl", math.nan, "must be a finite number > 0"), ("max_kl", -0.01, "must be a finite number > 0"),
    ("backtrack_coef", 1.5, "must lie in (0, 1)"), ("backtrack_coef", 1.0, "must lie in (0, 1)"),
    ("backtrack_coef", 0.0, "must lie in (0, 1)"), ("backtrack_coef", math.nan, "must lie in (0, 1)"),
    ("backtrack_iters", 0, "must be an integer ≥ 1"), ("backtrack_iters", 2.0, "must be an integer ≥ 1"),
])
def test_the_line_search_refuses_settings_outside_their_rule(name, value, allowed):
    settings = {"max_kl": 0.01, "backtrack_coef": 0.8, "backtrack_iters": 3, name: value}
    calls = []
    with pytest.raises(ValueError, match=re.escape(f"{name} = {value!r} is not allowed: {allowed}")):
        backtracking_line_search(lambda th: calls.append(th) or (1.0, 0.0), torch.zeros(3), torch.ones(3),
                                 1.0, **settings)
    assert calls == []  # refused before any trial (a NaN δ would have switched the KL check off)


def test_the_cache_gives_the_same_report_as_a_fresh_step():
    problem = small_problem("gaussian", n=64)
    cache = StepCache()
    for max_kl, damping in [(0.01, 0.1), (0.05, 0.1), (0.01, 0.01), (0.02, 0.1)]:
        cached = trpo_step(problem, max_kl=max_kl, damping=damping, cache=cache)
        fresh = trpo_step(problem, max_kl=max_kl, damping=damping)
        assert torch.equal(cached.theta_new, fresh.theta_new)
        assert cached.trials == fresh.trials
    assert len(cache.solves) == 2  # δ alone never triggered a new CG solve


@pytest.mark.parametrize("name,value", [("max_kl", 0.0), ("max_kl", math.inf), ("damping", -0.1),
                                        ("cg_iters", 0), ("cg_iters", 2.5), ("cg_tol", 0.0),
                                        ("backtrack_coef", 1.0), ("backtrack_iters", 0)])
def test_step_settings_are_validated_by_name(name, value):
    problem = small_problem("gaussian", n=8)
    with pytest.raises(ValueError, match=f"{name} = {value!r} is not allowed"):
        trpo_step(problem, **{name: value})
