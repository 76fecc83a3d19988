import pytest
import torch

from trpo_lab.trust_region import conjugate_gradient


def random_spd(n: int, seed: int, cond: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
    return q @ torch.diag(eig) @ q.T


@pytest.mark.parametrize("seed", range(5))
def test_cg_matches_linalg_solve_on_random_spd_systems(seed):
    n = 20
    A = random_spd(n, seed)
    b = torch.randn(n, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    # n steps in exact arithmetic; rounding costs a few more, so allow 2n
    result = conjugate_gradient(lambda v: A @ v, b, iters=2 * n, tol=1e-24)
    expected = torch.linalg.solve(A, b)
    torch.testing.assert_close(result.x, expected, rtol=1e-8, atol=1e-10)
    # the recorded residuals are the true residuals ‖b − A x_k‖, starting at ‖b‖ (x_0 = 0)
    assert result.residual_norms[0] == pytest.approx(float(b.norm()))
    assert result.residual_norms[-1] == pytest.approx(float((b - A @ result.x).norm()), abs=1e-9)
    assert len(result.residual_norms) == result.iterations + 1


def test_cg_starts_at_zero_and_is_deterministic():
    A = random_spd(8, 0)
    b = torch.arange(8, dtype=torch.float64)
    first = conjugate_gradient(lambda v: A @ v, b, iters=1)
    # one CG step from x0 = 0 is the exact line minimiser along b: x1 = (bᵀb / bᵀAb) b
    torch.testing.assert_close(first.x, (b @ b) / (b @ A @ b) * b)
    again = conjugate_gradient(lambda v: A @ v, b, iters=1)
    assert torch.equal(first.x, again.x)


def test_cg_stops_at_tolerance_and_on_zero_rhs():
    A = torch.eye(5, dtype=torch.float64) * 3
    b = torch.ones(5, dtype=torch.float64)
    result = conjugate_gradient(lambda v: A @ v, b, iters=10, tol=1e-20)
    assert result.iterations == 1 and result.stopped == "converged"
    zero = conjugate_gradient(lambda v: A @ v, torch.zeros(5, dtype=torch.float64), iters=10)
    assert zero.iterations == 0 and torch.equal(zero.x, torch.zeros(5, dtype=torch.float64))


def test_cg_reports_breakdown_on_an_indefinite_operator():
    A = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    result = conjugate_gradient(lambda v: A @ v, torch.tensor([0.0, 1.0], dtype=torch.float64), iters=5)
    assert "breakdown" in result.stopped and torch.isfinite(result.x).all()


def test_cg_rejects_zero_iterations():
    with pytest.raises(ValueError, match="iters = 0"):
        conjugate_gradient(lambda v: v, torch.ones(2), iters=0)
