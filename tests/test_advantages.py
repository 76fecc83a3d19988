"""GAE and discounted returns against hand-computed answers."""

import math
import re

import pytest
import torch

from trpo_lab.advantages import discounted_returns, gae, td_errors

F64 = torch.float64


def episode(rewards, values, next_values, terminated, ends):
    t = lambda x: torch.tensor(x, dtype=F64)  # noqa: E731
    return t(rewards), t(values), t(next_values), torch.tensor(terminated), torch.tensor(ends)


def test_lambda_zero_gives_td_errors():
    r, v, nv, term, ends = episode([1.0, 2.0, 3.0], [0.5, 0.1, -0.2], [0.1, -0.2, 0.7],
                                   [False, False, True], [False, False, True])
    adv, ret = gae(r, v, nv, term, ends, gamma=0.9, lam=0.0)
    expected = torch.tensor([1 + 0.9 * 0.1 - 0.5, 2 + 0.9 * -0.2 - 0.1, 3 - (-0.2)], dtype=F64)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(adv, td_errors(r, v, nv, term, 0.9))
    torch.testing.assert_close(ret, adv + v)


def test_lambda_one_gives_monte_carlo_returns_minus_values():
    r, v, nv, term, ends = episode([1.0, 2.0, 3.0], [0.5, 0.1, -0.2], [0.1, -0.2, 99.0],
                                   [False, False, True], [False, False, True])
    adv, ret = gae(r, v, nv, term, ends, gamma=0.9, lam=1.0)
    mc = torch.tensor([1 + 0.9 * 2 + 0.81 * 3, 2 + 0.9 * 3, 3], dtype=F64)  # V(terminal) ignored
    torch.testing.assert_close(adv, mc - v)
    torch.testing.assert_close(ret, mc)
    torch.testing.assert_close(discounted_returns(r, ends, 0.9), mc)


def test_truncation_bootstraps_the_real_next_state_but_termination_does_not():
    # one env, two episodes: the first truncated at t = 1 (V(s_2) = 10), the second terminated at t = 3
    r, v, nv, term, ends = episode([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 10.0, 0.0, 50.0],
                                   [False, False, False, True], [False, True, False, True])
    adv, _ = gae(r, v, nv, term, ends, gamma=0.5, lam=1.0)
    torch.testing.assert_close(adv, torch.tensor([1 + 0.5 * (1 + 0.5 * 10), 1 + 0.5 * 10, 1.5, 1.0],
                                                 dtype=F64))


def test_the_batch_end_bootstraps_and_envs_are_independent():
    # [T=2, N=2]: env 0 runs on past the batch end, env 1 terminates at t = 0 and starts anew
    r = torch.tensor([[1.0, 2.0], [1.0, 3.0]], dtype=F64)
    v = torch.zeros(2, 2, dtype=F64)
    nv = torch.tensor([[0.0, 7.0], [4.0, 0.0]], dtype=F64)
    term = torch.tensor([[False, True], [False, False]])
    ends = torch.tensor([[False, True], [False, False]])
    adv, _ = gae(r, v, nv, term, ends, gamma=0.5, lam=0.5)
    d = td_errors(r, v, nv, term, 0.5)
    expected = torch.tensor([[d[0, 0] + 0.25 * d[1, 0], d[0, 1]], [d[1, 0], d[1, 1]]], dtype=F64)
    torch.testing.assert_close(adv, expected)
    assert d[0, 1] == 2.0 and d[1, 0] == 1 + 0.5 * 4


def test_discounted_returns_of_a_constant_reward_tend_to_one_over_one_minus_gamma():
    T, gamma = 2000, 0.99
    ret = discounted_returns(torch.ones(T, dtype=F64), torch.zeros(T, dtype=torch.bool), gamma)
    assert float(ret[0]) == pytest.approx(1 / (1 - gamma), rel=1e-6)
    boot = discounted_returns(torch.ones(1, dtype=F64), torch.zeros(1, dtype=torch.bool), gamma, 5.0)
    assert float(boot[0]) == pytest.approx(1 + gamma * 5.0)


def test_bad_shapes_and_parameters_are_named():
    r = torch.zeros(3)
    with pytest.raises(ValueError, match="next_values has shape"):
        gae(r, r, torch.zeros(2), r.bool(), r.bool(), 0.9, 0.9)
    with pytest.raises(ValueError, match="lam = 1.5"):
        gae(r, r, r, r.bool(), r.bool(), 0.9, 1.5)


@pytest.mark.parametrize("gamma", [-0.1, 1.5, 2.0, math.nan, math.inf, "0.9", None])
def test_every_discounting_function_refuses_a_gamma_outside_zero_one(gamma):
    r, no = torch.zeros(3), torch.zeros(3, dtype=torch.bool)
    message = f"gamma = {re.escape(repr(gamma))} is not allowed: must be a number in \\[0, 1\\]"
    for call in (lambda: discounted_returns(r, no, gamma), lambda: td_errors(r, r, r, no, gamma),
                 lambda: gae(r, r, r, no, no, gamma, 0.9)):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match="lam = nan is not allowed: must be a number in \\[0, 1\\]"):
        gae(r, r, r, no, no, 0.9, math.nan)


def test_an_overflowing_gae_names_the_overflow():
    rewards = torch.full((10,), 3e38)  # finite in float32; the discounted sums are not
    zeros, no = torch.zeros(10), torch.zeros(10, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"GAE overflowed float32 .* max \|r\| = 3e\+38"):
        gae(rewards, zeros, zeros, no, no, 0.99, 0.95)
    with pytest.raises(ValueError, match="values contain NaN"):
        gae(torch.ones(10), torch.full((10,), math.nan), zeros, no, no, 0.99, 0.95)
