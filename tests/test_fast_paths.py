"""The fast paths compute exactly what the plain code computes (issue 5: speed without new numbers)."""

import copy

import pytest
import torch
from helpers import small_problem

from trpo_lab.policies import ValueFunction
from trpo_lab.trust_region import mean_kl, surrogate, surrogate_and_kl
from trpo_lab.value import Adam, fit_value, make_value_optimizer


def test_value_adam_is_bitwise_torch_adam():
    torch.manual_seed(0)
    obs = torch.randn(300, 5)
    targets = 40.0 * obs[:, 0] + obs[:, 1] ** 2 + 100.0
    ours, theirs = ValueFunction(5), None
    theirs = copy.deepcopy(ours)
    opt_ours = make_value_optimizer(ours, "adam", 3e-3)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=3e-3)
    assert isinstance(opt_ours, Adam)
    for k in range(3):
        a = fit_value(ours, obs, targets, opt_ours, 4, 64, torch.Generator().manual_seed(k))
        b = fit_value(theirs, obs, targets, opt_theirs, 4, 64, torch.Generator().manual_seed(k))
        assert a == b
    assert a.loss_after < a.loss_before
    assert all(torch.equal(x, y) for x, y in zip(ours.parameters(), theirs.parameters()))


def test_value_adam_state_round_trips_and_names_a_mismatch():
    vf = ValueFunction(3)
    opt = Adam(vf.parameters(), lr=1e-3)
    obs, targets = torch.randn(64, 3), torch.randn(64)
    fit_value(vf, obs, targets, opt, 2, 16)
    state = opt.state_dict()
    twin = Adam(copy.deepcopy(vf).parameters(), lr=5.0)
    twin.load_state_dict(state)
    assert twin.t == opt.t == 8 and twin.lr == 1e-3
    assert all(torch.equal(a, b) for a, b in zip(twin.m + twin.v, opt.m + opt.v))
    with pytest.raises(ValueError, match="Adam state for 6 tensors; this optimiser has 2"):
        Adam([torch.zeros(2), torch.zeros(3)]).load_state_dict(state)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_surrogate_and_kl_is_surrogate_and_mean_kl(kind):
    problem = small_problem(kind)
    noise = torch.randn(problem.num_params, generator=torch.Generator().manual_seed(3),
                        dtype=problem.theta_old.dtype)
    theta = problem.theta_old + 0.05 * noise
    with torch.no_grad():
        gain, kl = surrogate_and_kl(problem, theta)
        assert torch.equal(gain, surrogate(problem, theta))
        assert torch.equal(kl, mean_kl(problem, theta))
    assert kl > 0
