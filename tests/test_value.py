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
