"""The update rules (trpo, npg, pg, ppo-clip) and the TRPO options, against explicit float64 matrices."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import KINDS, small_policy, small_problem

from trpo_lab.ppo import clipped_surrogate, ppo_clip_update
from trpo_lab.settings import ConfigError, StepSettings
from trpo_lab.trust_region import (
    StepCache,
    accept_reason,
    conjugate_gradient,
    empirical_fisher_operator,
    make_update_problem,
    mean_kl,
    per_state_kl,
    policy_gradient,
    surrogate,
    update_step,
)


def kl_hessian(problem):
    return torch.func.hessian(lambda th: mean_kl(problem, th))(problem.theta_old)


def settings(**kw) -> StepSettings:
    return StepSettings(cg_iters=200, cg_tol=1e-28, **kw)  # CG run to convergence


@pytest.mark.parametrize("kind", KINDS)
def test_npg_is_the_scaled_exact_natural_gradient(kind):
    problem = small_problem(kind, n=32)
    damping, delta = 0.05, 0.01
    A = kl_hessian(problem) + damping * torch.eye(problem.num_params, dtype=torch.float64)
    g = policy_gradient(problem)
    x = torch.linalg.solve(A, g)
    expected = math.sqrt(2 * delta / float(g @ x)) * x
    report = update_step(problem, settings(update="npg", max_kl=delta, damping=damping))
    assert report.accepted and report.trials[0].fraction == 1.0 and len(report.trials) == 1
    torch.testing.assert_close(report.theta_new - problem.theta_old, expected, rtol=1e-7, atol=1e-10)
    assert math.isnan(report.backtracks)  # no line search: not a fake 0
    # npg takes the same direction and β as trpo; trpo only adds the line search
    trpo = update_step(problem, settings(update="trpo", max_kl=delta, damping=damping))
    torch.testing.assert_close(trpo.full_step, report.full_step)
    assert trpo.beta == report.beta


@pytest.mark.parametrize("kind", KINDS)
def test_pg_steps_along_g_to_the_same_model_kl(kind):
    problem = small_problem(kind, n=32)
    damping, delta = 0.1, 0.02
    A = kl_hessian(problem) + damping * torch.eye(problem.num_params, dtype=torch.float64)
    g = policy_gradient(problem)
    report = update_step(problem, settings(update="pg", max_kl=delta, damping=damping))
    step = report.theta_new - problem.theta_old
    cosine = float(step @ g) / float(step.norm() * g.norm())
    assert cosine == pytest.approx(1.0, abs=1e-12)
    assert 0.5 * float(step @ A @ step) == pytest.approx(delta, rel=1e-9)
    assert report.cg is None and math.isnan(report.summary()["cg_iterations"])


@pytest.mark.parametrize("kind", KINDS)
def test_the_empirical_fisher_is_the_mean_outer_product_of_scores(kind):
    problem = small_problem(kind, n=12)
    F = torch.zeros(problem.num_params, problem.num_params, dtype=torch.float64)
    for i in range(problem.batch_size):
        def log_prob(theta, i=i):
            rows = torch.tensor([i])
            return problem.distribution_at(theta, rows).log_prob(problem.actions[rows])[0]
        score = torch.func.grad(log_prob)(problem.theta_old)
        F += torch.outer(score, score)
    F /= problem.batch_size
    v = torch.randn(problem.num_params, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(empirical_fisher_operator(problem)(v), F @ v, rtol=1e-9, atol=1e-12)
    # and the rule uses it: its npg step solves (F̂ + λI)x = g
    damping = 0.1
    x = torch.linalg.solve(F + damping * torch.eye(problem.num_params, dtype=torch.float64),
                           policy_gradient(problem))
    report = update_step(problem, settings(update="npg", fisher="empirical", damping=damping))
    cosine = float(report.direction @ x) / float(report.direction.norm() * x.norm())
    assert cosine == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("delta", [1e-3, 1e-2, 5e-2])
def test_max_kl_constraint_bounds_every_states_kl(kind, delta):
    accepted = 0
    for seed in range(4):
        problem = small_problem(kind, n=64, seed=seed)
        report = update_step(problem, StepSettings(max_kl=delta, kl_constraint="max",
                                                   backtrack_iters=30))
        if report.accepted:
            accepted += 1
            kls = per_state_kl(problem, report.theta_new)
            assert float(kls.max()) <= delta
            assert report.max_state_kl == pytest.approx(float(kls.max()))
        for t in report.trials[:-1]:
            assert t.max_state_kl > delta or t.surrogate_gain <= 0
    assert accepted >= 3
    # the mean-KL constraint lets the largest per-state KL exceed δ on the same problem
    problem = small_problem(kind, n=64, seed=0)
    mean_report = update_step(problem, StepSettings(max_kl=delta))
    assert mean_report.max_state_kl > delta >= mean_report.kl


def test_kl_direction_new_old_checks_the_reverse_kl():
    problem = small_problem("gaussian", n=64)
    report = update_step(problem, StepSettings(max_kl=0.05, kl_direction="new-old"))
    assert report.accepted
    reverse = float(per_state_kl(problem, report.theta_new, "new-old").mean())
    assert report.kl == pytest.approx(reverse) and reverse <= 0.05
    assert reverse != pytest.approx(float(mean_kl(problem, report.theta_new)))


def test_accept_rules():
    # strict: KL ≤ δ and gain > 0; kl-1.5: KL ≤ 1.5δ and gain ≥ 0; improvement-ratio: gain ≥ r·expected
    assert accept_reason(0.1, 0.012, 0.05, 1.0, 0.01) == "KL 0.012 > δ = 0.01"
    assert accept_reason(0.1, 0.012, 0.05, 1.0, 0.01, "kl-1.5") == "accepted"
    assert accept_reason(0.0, 0.01, 0.05, 1.0, 0.01, "kl-1.5") == "accepted"
    assert "1.5δ" in accept_reason(0.1, 0.016, 0.05, 1.0, 0.01, "kl-1.5")
    assert accept_reason(0.1, 5.0, 9.0, 0.5, 0.01, "improvement-ratio") == "accepted"
    assert "0.1 × predicted" in accept_reason(0.01, 0.0, 0.0, 0.5, 0.01, "improvement-ratio")
    assert "max per-state KL 0.05 > δ" in accept_reason(0.1, 0.001, 0.05, 1.0, 0.01, "strict", "max")
    assert "≤ 0" in accept_reason(-0.1, 0.001, 0.001, 1.0, 0.01)
    with pytest.raises(ValueError, match="accept rule = 'loose' is not allowed"):
        accept_reason(0.1, 0.0, 0.0, 1.0, 0.01, "loose")


def test_improvement_ratio_rule_may_exceed_delta_and_strict_may_not():
    problem = small_problem("categorical", n=64)
    loose = update_step(problem, StepSettings(max_kl=0.5, damping=0.0, accept_rule="improvement-ratio"))
    strict = update_step(problem, StepSettings(max_kl=0.5, damping=0.0))
    assert loose.accepted and strict.accepted
    assert loose.step_fraction >= strict.step_fraction
    assert strict.kl <= 0.5


def test_ppo_clip_is_deterministic_and_its_objective_is_the_clipped_surrogate():
    problem = small_problem("categorical", n=64)
    s = StepSettings(update="ppo-clip", ppo_epochs=3, ppo_minibatch_size=16, ppo_lr=1e-2)
    a = update_step(problem, s, generator=torch.Generator().manual_seed(0))
    b = update_step(problem, s, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.theta_new, b.theta_new) and a.accepted
    assert len(a.ppo_epoch_losses) == 3 and math.isnan(a.beta) and a.cg is None
    assert math.isnan(a.backtracks) and a.trials == []
    assert a.surrogate_gain == pytest.approx(float(surrogate(problem, a.theta_new) -
                                                   surrogate(problem, problem.theta_old)))
    # L^CLIP by hand at a moved θ
    theta = a.theta_new
    ratio = torch.exp(problem.distribution_at(theta).log_prob(problem.actions) - problem.old_log_prob)
    adv = problem.advantages
    by_hand = torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
    objective, clipped = clipped_surrogate(problem, theta, 0.2)
    torch.testing.assert_close(objective, by_hand)
    assert float(clipped) == pytest.approx(float(((ratio - 1).abs() > 0.2).double().mean()))
    assert a.surrogate_gain > 0


def test_cg_stops_on_a_residual_relative_to_g():
    # a tiny gradient (unnormalised advantages, small rewards): CG must still solve
    A = torch.diag(torch.tensor([1.0, 2.0, 5.0, 9.0], dtype=torch.float64))
    b = 1e-6 * torch.tensor([1.0, -1.0, 2.0, 0.5], dtype=torch.float64)
    result = conjugate_gradient(lambda v: A @ v, b, iters=10, tol=1e-10)
    assert result.iterations == 4 and result.stopped == "converged"
    torch.testing.assert_close(result.x, torch.linalg.solve(A, b), rtol=1e-6, atol=0)


def test_a_tiny_gradient_still_gives_a_step():
    policy = small_policy("gaussian")
    obs = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    adv = 1e-7 * torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    problem = make_update_problem(policy, obs, policy.sample(obs), adv)
    report = update_step(problem, StepSettings())
    assert float(report.grad.norm()) < 1e-5
    assert report.cg.iterations == 10 and report.accepted, report.reason


def test_near_constant_advantages_are_rejected_with_a_clear_reason():
    policy = small_policy("categorical").float()
    obs = torch.randn(256, 3, generator=torch.Generator().manual_seed(0))
    # float32 rounding of a constant 0.1, as GAE gives it: std ~1e-9, not a signal
    adv = (torch.full((256,), 0.1) * 3 + torch.randn(256).mul(1e-9)) / 3
    problem = make_update_problem(policy, obs, policy.sample(obs), adv, normalize_advantages=True)
    report = update_step(problem, StepSettings())
    assert not report.accepted and "constant up to rounding" in report.reason
    assert torch.equal(report.theta_new, problem.theta_old)


def test_a_resolved_float64_spread_on_a_large_offset_is_a_signal():
    """The rounding cut-off scales with the dtype: in float64 a spread of 1e-4 on an offset of 100
    is ~5e10 units of rounding, a real signal (a fixed 1e-5·max|Â| cut-off called it constant)."""
    policy = small_policy("categorical")
    obs = torch.randn(256, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    actions = policy.sample(obs)
    adv = 100.0 + 1e-4 * torch.randn(256, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    problem = make_update_problem(policy, obs, actions, adv, normalize_advantages=True)
    report = update_step(problem, StepSettings())
    assert report.accepted
    assert float(problem.advantages.std()) == pytest.approx(1.0, rel=1e-3)  # std / (std + 1e-8)
    float32 = make_update_problem(policy.float(), obs.float(), actions, adv.float(),
                                  normalize_advantages=True)
    assert float(float32.advantages.abs().max()) == 0.0  # in float32 that spread is ~1 ulp: no signal


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_ppo_clip_is_minibatch_torch_adam_on_the_clipped_surrogate_bitwise(kind):
    """`ppo_clip_update` is the plain loop with `torch.optim.Adam` (its `fast.Adam` gives the same
    numbers bitwise), over the same permutations; the last minibatch is shorter."""
    problem = small_problem(kind, n=50)
    result = ppo_clip_update(problem, clip=0.2, epochs=3, minibatch_size=16, lr=1e-2,
                             generator=torch.Generator().manual_seed(0))
    theta = problem.theta_old.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        order = torch.randperm(50, generator=generator)
        for start in range(0, 50, 16):
            objective, _ = clipped_surrogate(problem, theta, 0.2, order[start:start + 16])
            optimizer.zero_grad()
            (-objective).backward()
            optimizer.step()
    assert torch.equal(result.theta, theta.detach()) and not torch.equal(result.theta, problem.theta_old)


def test_a_first_ppo_step_does_not_import_torch_dynamo():
    """Building the first torch.optim optimiser of a process imports torch._dynamo (a second or
    two): a first PPO step in the compare view looked 100x a TRPO step. PPO uses `fast.Adam`."""
    code = ("import sys\nfrom helpers import small_problem\nfrom trpo_lab.ppo import ppo_clip_update\n"
            "ppo_clip_update(small_problem('gaussian', n=32), epochs=1)\n"
            "print('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False"]


def test_update_step_names_a_problem_that_is_not_one():
    with pytest.raises(TypeError, match="problem = None is not allowed: give an UpdateProblem"):
        update_step(None, StepSettings())


def test_rules_share_one_cache():
    problem = small_problem("gaussian", n=32)
    cache = StepCache()
    for rule in ("trpo", "npg", "pg", "ppo-clip", "trpo"):
        update_step(problem, StepSettings(update=rule), cache)
    assert len(cache.solves) == 2  # one CG solve for trpo and npg, one curvature for pg


@pytest.mark.parametrize("name,value,allowed", [
    ("update", "sgd", "must be one of"), ("accept_rule", "loose", "'strict'"),
    ("kl_direction", "both", "'old-new'"), ("fisher", "exact", "'analytic'"),
    ("kl_constraint", "median", "'mean'"), ("ppo_clip", 0.0, r"\(0, 1\)"), ("ppo_epochs", 0, "≥ 1"),
    ("ppo_lr", -1.0, "> 0"), ("accept_ratio", 1.5, r"\(0, 1\]"), ("max_kl", math.nan, "finite"),
])
def test_step_settings_name_the_bad_field(name, value, allowed):
    with pytest.raises(ConfigError, match=rf"StepSettings\.{name} = .* is not allowed: .*{allowed}"):
        StepSettings(**{name: value})
    with pytest.raises(ConfigError, match="has no field 'delta'"):
        StepSettings().replace(delta=0.1)
    with pytest.raises(ConfigError, match="give a StepSettings"):
        update_step(small_problem("gaussian", n=4), {"max_kl": 0.01})
