"""Exact tabular quantities against known answers, and the identities of §2–3 of the TRPO paper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trpo_lab import tabular as tb
from trpo_lab import trust_region as tr


def _policies(mdp, seed):
    rng = np.random.default_rng(seed)
    shape = (mdp.num_states, mdp.num_actions)
    return tb.softmax_policy(rng.normal(size=shape)), tb.softmax_policy(2 * rng.normal(size=shape))


def test_one_state_mdp_known_values():
    mdp = tb.TabularMDP(np.ones((1, 2, 1)), np.array([[1.0, 3.0]]), np.ones(1), 0.9)
    pi = np.array([[0.25, 0.75]])
    assert tb.state_values(mdp, pi)[0] == pytest.approx(2.5 / (1 - 0.9))
    assert tb.expected_return(mdp, pi) == pytest.approx(25.0)
    assert tb.discounted_visitation(mdp, pi)[0] == pytest.approx(10.0)
    np.testing.assert_allclose(tb.advantages(mdp, pi), [[-1.5, 0.5]], atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_policy_improvement_identity_holds_exactly(seed):
    """η(π̃) = η(π) + Σ_s ρ_π̃(s) Σ_a π̃(a|s) A_π(s,a)   (eq. 2), for arbitrary π, π̃."""
    mdp = tb.random_mdp(7, 4, gamma=0.95, seed=seed, concentration=0.2)
    pi, new = _policies(mdp, seed)
    rhs = tb.expected_return(mdp, pi) + tb.expected_advantage(
        tb.discounted_visitation(mdp, new), new, tb.advantages(mdp, pi))
    assert tb.expected_return(mdp, new) == pytest.approx(rhs, abs=1e-10)
    # the surrogate uses ρ_π instead: it is not η(π̃) for a distant π̃
    assert abs(tb.surrogate(mdp, pi, new) - tb.expected_return(mdp, new)) > 1e-3


def test_visitation_advantage_and_value_facts():
    mdp = tb.random_mdp(5, 3, gamma=0.9, seed=3)
    pi, _ = _policies(mdp, 3)
    rho = tb.discounted_visitation(mdp, pi)
    assert rho.sum() == pytest.approx(1 / (1 - 0.9)) and (rho >= 0).all()
    np.testing.assert_allclose((pi * tb.advantages(mdp, pi)).sum(1), 0.0, atol=1e-12)
    V, Q = tb.state_values(mdp, pi), tb.action_values(mdp, pi)
    np.testing.assert_allclose((pi * Q).sum(1), V, atol=1e-12)
    # Bellman: V = r_π + γ P_π V
    np.testing.assert_allclose(V, (pi * mdp.rewards).sum(1) + 0.9 * tb.policy_transitions(mdp, pi) @ V,
                               atol=1e-12)
    # η = (1 − γ)⁻¹-weighted expected reward under ρ_π
    assert tb.expected_return(mdp, pi) == pytest.approx(float(rho @ (pi * mdp.rewards).sum(1)))


def test_surrogate_matches_eta_to_first_order():
    mdp = tb.random_mdp(6, 3, gamma=0.95, seed=1, concentration=0.1)
    logits = np.random.default_rng(0).normal(size=(6, 3))
    pi = tb.softmax_policy(logits)
    assert tb.surrogate(mdp, pi, pi) == pytest.approx(tb.expected_return(mdp, pi), abs=1e-12)
    d = tb.logit_gradient(mdp, logits)
    d /= np.linalg.norm(d)
    c = tb.curves_along(mdp, logits, d, np.array([1e-3, 1e-2, 1e-1, 3.0]))
    gap = np.abs(c["eta"] - c["surrogate"])
    # second order: ten times farther, a hundred times the gap
    assert gap[1] / gap[0] == pytest.approx(100, rel=0.05)
    assert gap[3] > 100 * gap[1]
    assert c["max_kl"][0] < c["max_kl"][1] < c["max_kl"][2] < c["max_kl"][3]


def test_logit_gradient_matches_finite_differences():
    mdp = tb.random_mdp(4, 3, gamma=0.9, seed=2)
    logits = np.random.default_rng(1).normal(size=(4, 3))
    eta = tb.expected_return(mdp, tb.softmax_policy(logits))
    eps, numeric = 1e-6, np.zeros_like(logits)
    for idx in np.ndindex(*logits.shape):
        shifted = logits.copy()
        shifted[idx] += eps
        numeric[idx] = (tb.expected_return(mdp, tb.softmax_policy(shifted)) - eta) / eps
    np.testing.assert_allclose(tb.logit_gradient(mdp, logits), numeric, atol=1e-4)


def test_theorem_one_lower_bound_holds_along_a_path():
    mdp = tb.random_mdp(5, 3, gamma=0.9, seed=4)
    logits = np.zeros((5, 3))
    d = np.random.default_rng(2).normal(size=(5, 3))
    c = tb.curves_along(mdp, logits, d, np.linspace(-2, 2, 21))
    assert (c["eta"] >= c["bound"] - 1e-12).all()
    assert c["mean_kl"].max() <= c["max_kl"].max()


def test_validation_names_the_bad_field():
    P, r, rho0 = np.full((2, 2, 2), 0.5), np.zeros((2, 2)), np.array([0.5, 0.5])
    with pytest.raises(ValueError, match="gamma = 1.0"):
        tb.TabularMDP(P, r, rho0, 1.0)
    with pytest.raises(ValueError, match="rewards has shape"):
        tb.TabularMDP(P, np.zeros(2), rho0, 0.9)
    with pytest.raises(ValueError, match="transitions"):
        tb.TabularMDP(np.full((2, 2, 2), 0.7), r, rho0, 0.9)
    with pytest.raises(ValueError, match="initial"):
        tb.TabularMDP(P, r, np.array([0.7, 0.7]), 0.9)
    mdp = tb.TabularMDP(P, r, rho0, 0.9)
    with pytest.raises(ValueError, match="pi has shape"):
        tb.state_values(mdp, np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="pi_new: every row"):
        tb.surrogate(mdp, np.full((2, 2), 0.5), np.full((2, 2), 0.7))
    with pytest.raises(ValueError, match="num_states"):
        tb.random_mdp(0, 2)
    with pytest.raises(ValueError, match="num_samples"):
        tb.bandit_problem(num_samples=1)


def test_bandit_problem_has_two_parameters_and_the_known_fisher():
    """For 𝒩(μ, σ²) in (μ, log σ): F = diag(1/σ², 2)."""
    problem = tb.bandit_problem(num_samples=256, log_std=np.log(0.5))
    assert problem.num_params == 2
    fvp = tr.fisher_operator(problem)
    F = torch.stack([fvp(e) for e in torch.eye(2, dtype=torch.float64)])
    np.testing.assert_allclose(F.numpy(), np.diag([4.0, 2.0]), atol=1e-10)
    g = tr.policy_gradient(problem)
    assert g[0] > 0  # the target 1.5 lies to the right of μ = 0
    report = tr.trpo_step(problem, max_kl=0.02)
    assert report.accepted and report.kl <= 0.02


def test_eta_surrogate_figure():
    mdp = tb.random_mdp(seed=0)
    c = tb.curves_along(mdp, np.zeros((6, 3)), np.ones((6, 3)) * [[1, 0, -1]], np.linspace(-1, 1, 5))
    fig = tb.eta_surrogate_figure(c, show_bound=True)
    names = [t.name for t in fig.data]
    assert names[:3] == ["η(π̃)  true return", "L_π(π̃)  surrogate (uses ρ_π)", "L − C·D_KL^max  (Theorem 1)"]
    np.testing.assert_allclose(fig.data[0].y, c["eta"])
    assert len(fig.data[3].x) == 4  # α = 0 is left out of the log–log gap panel
    assert len(tb.eta_surrogate_figure(c).data) == 4
