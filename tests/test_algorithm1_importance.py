"""Exact tabular checks of §3–5: the q-estimator (eqs. 13–14) is unbiased, its bridge to L_π and to
the gain training reports, Algorithm 1's monotonic improvement and the trust region's larger steps."""

import numpy as np
import pytest

from trpo_lab import importance as imp
from trpo_lab import tabular as tb
from trpo_lab.algorithm1 import algorithm1, penalised_objective, trust_region_iterations


@pytest.fixture(scope="module")
def case():
    mdp = tb.random_mdp(6, 3, 0.9, seed=0)
    logits = np.random.default_rng(1).normal(size=(6, 3))
    pi = tb.softmax_policy(logits)
    return mdp, logits, pi, tb.advantages(mdp, pi)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 3.0])
def test_the_q_estimator_is_unbiased_to_rounding_for_pi_old_and_uniform_q(case, alpha):
    mdp, logits, pi, A = case
    new = tb.softmax_policy(logits + alpha * A)
    for q in (pi, imp.uniform_policy(mdp), tb.softmax_policy(-logits)):
        m = imp.estimator_moments(mdp, pi, new, q)
        assert abs(m.bias) <= 1e-12 * max(1.0, abs(m.target))


def test_sample_means_scatter_around_the_exact_mean_with_the_exact_variance(case):
    mdp, logits, pi, A = case
    new = tb.softmax_policy(logits + A)
    q = imp.uniform_policy(mdp)
    m = imp.estimator_moments(mdp, pi, new, q)
    est = imp.sample_estimates(mdp, pi, new, q, num_samples=200, repeats=2000, seed=0)
    se = np.sqrt(m.variance / 200)
    assert abs(est.mean() - m.mean) < 4 * se / np.sqrt(2000)
    assert est.var() == pytest.approx(m.variance / 200, rel=0.1)


def test_the_variance_grows_as_pi_theta_moves_away_from_q(case):
    mdp, logits, pi, A = case
    var = [imp.estimator_moments(mdp, pi, tb.softmax_policy(logits + a * A), pi).variance
           for a in (0.0, 1.0, 3.0, 10.0)]
    assert var[0] < var[2] < var[3]


def test_the_surrogate_in_return_units_from_the_q_estimator(case):
    mdp, logits, pi, A = case
    new = tb.softmax_policy(logits + 0.5 * A)
    for q in (pi, imp.uniform_policy(mdp)):
        assert imp.surrogate_via_q(mdp, pi, new, q) == pytest.approx(tb.surrogate(mdp, pi, new),
                                                                     rel=1e-12, abs=1e-12)


def test_the_reported_gain_is_the_surrogate_gain_times_one_minus_gamma_over_sigma(case):
    mdp, logits, pi, A = case
    new = tb.softmax_policy(logits + 0.5 * A)
    L, eta = tb.surrogate(mdp, pi, new), tb.expected_return(mdp, pi)
    sigma = imp.advantage_std(mdp, pi)
    expected = (1 - mdp.gamma) * (L - eta) / sigma
    assert imp.reported_gain(mdp, pi, new) == pytest.approx(expected, rel=1e-12)
    # and what a training-style batch reports: s ∼ ρ̄, a ∼ π, advantages standardised by the batch
    rng = np.random.default_rng(0)
    rho = imp.state_distribution(mdp, pi)
    n = 400_000
    s = rng.choice(mdp.num_states, n, p=rho / rho.sum())
    a = (rng.random(n)[:, None] > np.cumsum(pi[s], 1)).sum(1)
    adv = A[s, a]
    z = (adv - adv.mean()) / adv.std()
    ratio = new[s, a] / pi[s, a]
    gains = (ratio - 1.0) * z
    assert gains.mean() == pytest.approx(expected, abs=4 * gains.std() / np.sqrt(n))


def test_algorithm1_never_decreases_eta_and_theorem1_bounds_every_step(case):
    mdp, logits, *_ = case
    its = algorithm1(mdp, logits, iterations=25)
    etas = [its[0].eta_before] + [r.eta for r in its]
    assert all(b >= a - 1e-12 for a, b in zip(etas, etas[1:]))
    assert etas[-1] > etas[0]
    for r in its:
        assert r.eta >= r.bound - 1e-12  # η(π_{i+1}) ≥ L − C·D_KL^max (Theorem 1)
        assert r.bound >= r.eta_before - 1e-12  # M_i(π_{i+1}) ≥ M_i(π_i) = η(π_i)
        assert r.alpha > 0 and r.max_kl < 1e-3  # tiny but real steps


def test_the_penalised_objective_equals_eta_at_the_current_policy(case):
    mdp, logits, *_ = case
    assert penalised_objective(mdp, logits, 0.0) == pytest.approx(
        tb.expected_return(mdp, tb.softmax_policy(logits)), abs=1e-12)


def test_the_mean_kl_trust_region_takes_larger_steps_and_gets_further(case):
    mdp, logits, *_ = case
    a1 = algorithm1(mdp, logits, iterations=10)
    tr = trust_region_iterations(mdp, logits, iterations=10, max_kl_bound=0.01)
    assert all(r.mean_kl <= 0.01 * (1 + 1e-9) for r in tr)
    assert np.median([r.mean_kl for r in tr]) > 50 * np.median([r.mean_kl for r in a1])
    assert tr[-1].eta > a1[-1].eta
    # Theorem 1 cannot certify these steps: their bound L − C·D_KL^max lies below η(π_i)
    assert all(r.bound < r.eta_before for r in tr if r.alpha > 0)


def test_bad_iteration_counts_are_named():
    mdp = tb.random_mdp(3, 2, 0.9)
    with pytest.raises(ValueError, match="iterations = 0"):
        algorithm1(mdp, np.zeros((3, 2)), iterations=0)
    with pytest.raises(ValueError, match="max_kl_bound = -1"):
        trust_region_iterations(mdp, np.zeros((3, 2)), 3, max_kl_bound=-1)
    with pytest.raises(ValueError, match="q must give every action"):
        imp.estimator_moments(mdp, np.full((3, 2), 0.5), np.full((3, 2), 0.5),
                              np.array([[1.0, 0.0]] * 3))
