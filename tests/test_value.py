import math

import pytest
import torch

from trpo_lab.policies import ValueFunction
from trpo_lab.value import explained_variance, fit_value, make_value_optimizer


def regression_problem(n=512):
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(n, 3, generator=g)
    return obs, 2.0 * obs[:, 0] - obs[:, 1] ** 2 + 0.5


@pytest.mark.parametrize("method,epochs", [("adam", 20), ("lbfgs", 3)])
def test_fit_value_reduces_the_loss(method, epochs):
    torch.manual_seed(0)
    obs, targets = regression_problem()
    vf = ValueFunction(3)
    report = fit_value(vf, obs, targets, make_value_optimizer(vf, method, 1e-2 if method == "adam" else 1.0),
                       epochs=epochs, minibatch_size=64, generator=torch.Generator().manual_seed(1))
    assert report.loss_after < 0.2 * report.loss_before
    assert report.updates == (epochs * 8 if method == "adam" else epochs)


def test_explained_variance_known_answers():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(y, y) == 1.0
    assert explained_variance(torch.full((4,), 2.5), y) == pytest.approx(0.0)
    assert explained_variance(y - 1, y) == pytest.approx(1.0)  # a constant offset is not variance
    assert math.isnan(explained_variance(y, torch.ones(4)))


def test_bad_inputs_are_named():
    vf = ValueFunction(3)
    opt = make_value_optimizer(vf)
    with pytest.raises(ValueError, match="targets must be"):
        fit_value(vf, torch.zeros(4, 3), torch.zeros(5), opt)
    with pytest.raises(ValueError, match="NaN"):
        fit_value(vf, torch.zeros(2, 3), torch.tensor([0.0, math.nan]), opt)
    with pytest.raises(ValueError, match="'sgd' is not allowed"):
        make_value_optimizer(vf, "sgd")
    for method in ("adam", "lbfgs"):
        for lr in (0.0, -1.0, math.nan, math.inf, "1e-3"):
            with pytest.raises(ValueError, match=f"lr = {lr!r} is not allowed: a finite number > 0"):
                make_value_optimizer(vf, method, lr)


def test_explained_variance_is_nan_when_the_targets_spread_is_rounding_noise():
    """One-step episodes with a constant reward: R̂ = (r − V) + V is r up to float32 rounding, and the
    ratio of two rounding noises reported −9e13 here (−1.9e13 in the audit) instead of NaN."""
    from trpo_lab.advantages import gae

    torch.manual_seed(0)
    vf = ValueFunction(3)
    obs = torch.randn(256, 1, 3)
    with torch.no_grad():
        v = vf(obs)
    ones = torch.ones(256, 1, dtype=torch.bool)
    _, targets = gae(torch.ones(256, 1), v, v, ones, ones, 0.99, 0.95)
    assert 0 < float(targets.std()) < 1e-6  # rounding noise, not exactly constant
    plain = 1.0 - float((targets - v).var(unbiased=False)) / float(targets.var(unbiased=False))
    assert plain < -1e6  # what the plain formula reports
    assert math.isnan(explained_variance(v.reshape(-1), targets.reshape(-1)))
    assert math.isnan(explained_variance(torch.zeros(1), torch.ones(1)))


def test_explained_variance_keeps_small_but_real_spreads():
    base = torch.full((1000,), 100.0)
    wiggle = torch.linspace(-1.0, 1.0, 1000) * 0.01  # std 6e-3: 1e4 ulps of 100 in float32
    targets = base + wiggle
    assert explained_variance(base, targets) == pytest.approx(0.0, abs=1e-3)
    assert explained_variance(targets, targets) == 1.0
    # float64 has a finer rounding grain: the same test scaled to 1e-10 is still a real spread there
    t64 = base.double() + wiggle.double() * 1e-8
    assert explained_variance(t64, t64) == 1.0


def test_a_non_finite_value_loss_is_an_error_not_a_frozen_value_net():
    """Rewards of 1e30 give finite returns and targets (~1e31) whose squares overflow float32: the loss
    is inf, Adam's √v is inf and every update is 0. That is an error naming the cause."""
    from trpo_lab.value import ValueFitError

    torch.manual_seed(0)
    vf = ValueFunction(3)
    obs, targets = torch.randn(64, 3), torch.full((64,), 2e31)
    assert torch.isfinite(targets).all()
    before = [p.clone() for p in vf.parameters()]
    with pytest.raises(ValueFitError, match=r"before fitting is inf .* max \|R̂\| = 2e\+31 .* overflow"):
        fit_value(vf, obs, targets, make_value_optimizer(vf), 2, 16)
    assert all(torch.equal(p, q) for p, q in zip(vf.parameters(), before))
    assert issubclass(ValueFitError, ValueError)


def test_a_value_fit_that_diverges_is_an_error():
    from trpo_lab.value import ValueFitError

    torch.manual_seed(0)
    vf = ValueFunction(3)
    obs, targets = regression_problem(64)
    targets = targets * 1e18  # finite squares (1e36), but an lr of 1e30 throws the net to inf / NaN
    with pytest.raises(ValueFitError, match="after fitting is (nan|inf)"):
        fit_value(vf, obs, targets, make_value_optimizer(vf, "adam", 1e30), 2, 16)
