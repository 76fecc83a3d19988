"""The Fisher-vector product against an explicit Fisher matrix and the Hessian of the KL."""

import pytest
import torch
from helpers import KINDS, small_problem
from torch.distributions import kl_divergence

from trpo_lab.trust_region import fisher_operator, fisher_vector_product, mean_kl


def kl_hessian(problem, rows=None):
    return torch.func.hessian(lambda th: mean_kl(problem, th, rows))(problem.theta_old)


def explicit_fisher(problem):
    """F = mean_i E_{a~π(·|s_i)}[∇ log π ∇ log πᵀ], computed exactly for a Categorical policy."""
    theta = problem.theta_old
    n_actions = problem.policy.spec.act_dim
    F = torch.zeros(theta.numel(), theta.numel(), dtype=theta.dtype)
    for i in range(problem.batch_size):
        for a in range(n_actions):
            def logp(th, i=i, a=a):
                dist = problem.distribution_at(th, torch.tensor([i]))
                return dist.log_prob(torch.tensor([a]))[0]
            grad = torch.func.grad(logp)(theta)
            prob = problem.old_distribution(torch.tensor([i])).probs[0, a]
            F += prob * torch.outer(grad, grad)
    return F / problem.batch_size


@pytest.mark.parametrize("kind", KINDS)
def test_fvp_equals_the_hessian_of_the_mean_kl(kind):
    problem = small_problem(kind, n=16)
    H = kl_hessian(problem)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(problem.num_params, generator=g, dtype=torch.float64)
        torch.testing.assert_close(fisher_vector_product(problem, v), H @ v, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(fisher_vector_product(problem, v, damping=0.3), H @ v + 0.3 * v,
                                   rtol=1e-9, atol=1e-11)


def test_fvp_equals_the_explicit_fisher_for_a_categorical_policy():
    problem = small_problem("categorical", n=6, hidden=(3,))
    F = explicit_fisher(problem)
    v = torch.randn(problem.num_params, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(fisher_operator(problem)(v), F @ v, rtol=1e-9, atol=1e-11)


def test_gaussian_fisher_in_the_mean_and_log_std_is_known():
    """For 𝒩(μ, σ²) the Fisher of (μ, log σ) is diag(1/σ², 2): check through a linear policy."""
    problem = small_problem("gaussian", n=1, hidden=(), obs_dim=1, act_dim=1)
    H = kl_hessian(problem)
    names = [name for name, _ in problem.policy.named_parameters()]
    assert names == ["log_std", "mean_net.0.weight", "mean_net.0.bias"]  # θ = (log σ, w, b)
    x = float(problem.obs[0, 0])  # μ = w·x + b
    sigma2 = float(problem.theta_old[0].exp() ** 2)
    expected = torch.tensor([[2.0, 0.0, 0.0], [0.0, x * x / sigma2, x / sigma2],
                             [0.0, x / sigma2, 1 / sigma2]], dtype=torch.float64)
    torch.testing.assert_close(H, expected, rtol=1e-9, atol=1e-12)


def test_fvp_on_a_subsample_uses_only_those_rows():
    problem = small_problem("gaussian", n=40, fvp_fraction=0.25)
    assert problem.fvp_rows is not None and len(problem.fvp_rows) == 10
    v = torch.randn(problem.num_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(fisher_operator(problem)(v), kl_hessian(problem, problem.fvp_rows) @ v,
                               rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", KINDS)
def test_analytic_kl_matches_monte_carlo(kind):
    problem = small_problem(kind, n=4)
    theta = problem.theta_old + 0.2 * torch.randn(problem.num_params, dtype=torch.float64,
                                                   generator=torch.Generator().manual_seed(5))
    p, q = problem.old_distribution(), problem.distribution_at(theta)
    with torch.no_grad():
        samples = p.sample((200_000,))
        monte_carlo = (p.log_prob(samples) - q.log_prob(samples)).mean(0)
        analytic = kl_divergence(p, q)
    torch.testing.assert_close(monte_carlo, analytic, rtol=0.03, atol=3e-3)
    # and the direction is KL(π_old ‖ π_θ), not the reverse
    assert float(mean_kl(problem, theta)) == pytest.approx(float(analytic.mean()))
    assert float(mean_kl(problem, theta)) != pytest.approx(float(kl_divergence(q, p).mean()))
