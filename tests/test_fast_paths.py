"""The fast paths (`trpo_lab.fast`) compute what the plain code computes (issue 5: speed without new
math): bitwise where the arithmetic is the same, to float rounding where it is reordered (the written-out
value gradients, tanh through the sigmoid). Every path `fast` lists is tested here against the plain
version it replaces."""

import copy

import numpy as np
import pytest
import torch
from helpers import small_problem

from trpo_lab import fast
from trpo_lab.fast import SIGMOID_TANH_MIN_SIZE, Adam, mlp_forward, mse_and_grads, tanh
from trpo_lab.policies import ValueFunction
from trpo_lab.problem import double_backprop_fisher_operator
from trpo_lab.rollout import RunningMeanStd
from trpo_lab.trust_region import fisher_operator, make_update_problem, mean_kl, surrogate, surrogate_and_kl
from trpo_lab.value import fit_value, make_value_optimizer


def test_value_adam_step_is_bitwise_torch_adam():
    torch.manual_seed(0)
    ours = ValueFunction(5)
    theirs = copy.deepcopy(ours)
    opt_ours = make_value_optimizer(ours, "adam", 3e-3)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=3e-3)
    assert isinstance(opt_ours, Adam)
    gen = torch.Generator().manual_seed(1)
    for k in range(30):
        grads = [torch.randn(p.shape, generator=gen) * 10.0 ** (k % 7 - 3) for p in ours.parameters()]
        opt_ours.step(grads)
        for p, g in zip(theirs.parameters(), grads):
            p.grad = g.clone()
        opt_theirs.step()
    assert all(torch.equal(x, y) for x, y in zip(ours.parameters(), theirs.parameters()))


@pytest.mark.parametrize("hidden, activation", [((64, 64), "tanh"), ((7, 5, 3), "relu"), ((), "tanh")])
def test_written_out_value_gradients_are_autograds(hidden, activation):
    torch.manual_seed(0)
    vf = ValueFunction(4, hidden, activation).double()
    obs = torch.randn(50, 4, dtype=torch.float64)
    targets = 3.0 * obs[:, 0] - obs[:, 1] ** 2 + 10.0
    loss, grads = mse_and_grads(vf, obs, targets)
    expected_loss = ((vf(obs) - targets) ** 2).mean()
    expected = torch.autograd.grad(expected_loss, list(vf.parameters()))
    assert [g.shape for g in grads] == [p.shape for p in vf.parameters()]
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-12, atol=0)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def value_fit_twins() -> tuple[torch.Tensor, torch.Tensor, ValueFunction, ValueFunction]:
    """A float64 regression batch (obs, targets) and two identical value nets to fit to it."""
    torch.manual_seed(0)
    obs = torch.randn(300, 5, dtype=torch.float64)
    targets = 40.0 * obs[:, 0] + obs[:, 1] ** 2 + 100.0
    ours = ValueFunction(5).double()
    return obs, targets, ours, copy.deepcopy(ours)


def test_value_fit_with_written_out_gradients_follows_torch_adam_with_autograd():
    obs, targets, ours, theirs = value_fit_twins()
    opt_ours = make_value_optimizer(ours, "adam", 3e-3)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=3e-3)  # takes fit_value's autograd path
    for k in range(3):
        a = fit_value(ours, obs, targets, opt_ours, 4, 64, torch.Generator().manual_seed(k))
        b = fit_value(theirs, obs, targets, opt_theirs, 4, 64, torch.Generator().manual_seed(k))
        assert a.updates == b.updates == 20
        assert a.loss_after == pytest.approx(b.loss_after, rel=1e-9)
    assert a.loss_after < a.loss_before
    for x, y in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


def test_lbfgs_value_fit_with_written_out_gradients_follows_torch_lbfgs_with_autograd():
    obs, targets, ours, theirs = value_fit_twins()
    opt_ours = make_value_optimizer(ours, "lbfgs", 1.0, lbfgs_iters=7)
    opt_theirs = torch.optim.LBFGS(theirs.parameters(), lr=1.0, max_iter=7, history_size=10,
                                   line_search_fn="strong_wolfe")

    def closure():  # the plain torch recipe: autograd fills .grad
        opt_theirs.zero_grad()
        loss = ((theirs(obs) - targets) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(2):
        report = fit_value(ours, obs, targets, opt_ours, epochs=1)
        opt_theirs.step(closure)
        assert report.updates == 1
    iters = [opt.state[opt.param_groups[0]["params"][0]]["n_iter"] for opt in (opt_ours, opt_theirs)]
    assert iters[0] == iters[1] > 2  # the same path (it may stop before 2 × 7 on convergence)
    assert report.loss_after < report.loss_before
    for x, y in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-7, atol=1e-9)


def test_value_gradients_fall_back_to_autograd_for_other_networks():
    vf = ValueFunction(3)
    vf.net.append(torch.nn.Sigmoid())  # not a Linear/activation stack the written-out pass knows
    obs, targets = torch.randn(10, 3), torch.randn(10)
    loss, grads = mse_and_grads(vf, obs, targets)
    expected = torch.autograd.grad(((vf(obs) - targets) ** 2).mean(), list(vf.parameters()))
    assert all(torch.equal(g, e) for g, e in zip(grads, expected))


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


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("rows", [8, 2048])  # a rollout step; a batch (tanh through the sigmoid)
def test_rollout_forward_is_the_modules_forward_bitwise(activation, rows):
    torch.manual_seed(0)
    net = ValueFunction(11, (64, 64), activation).net
    x = torch.randn(rows, 11)
    assert torch.equal(mlp_forward(net, x), net(x))


def test_tanh_is_torch_tanh_to_float_rounding():
    x = torch.linspace(-20.0, 20.0, 100_001)  # large enough for the sigmoid form
    assert x.numel() >= SIGMOID_TANH_MIN_SIZE
    assert float((tanh(x) - torch.tanh(x)).abs().max()) <= 2.5e-7
    small = x[:: x.numel() // 100]
    assert torch.equal(tanh(small), torch.tanh(small))


def test_in_place_tanh_is_tanh_bitwise():
    big = torch.linspace(-20.0, 20.0, 100_001)  # the sigmoid form
    small = big[:: big.numel() // 100].contiguous()  # torch.tanh
    special = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, float("inf"), -float("inf")])
    for x in (big, small, special, special.repeat(SIGMOID_TANH_MIN_SIZE // 8)):
        expected, work = tanh(x), x.clone()
        assert fast.tanh_(work) is work  # in place
        assert torch.equal(work, expected), float((work - expected).abs().max())


@pytest.mark.parametrize("hidden, activation, n, minibatch", [((64, 64), "tanh", 1024, 256),
                                                         ((7, 5, 3), "relu", 300, 64),
                                                         ((64,), "tanh", 500, 200)])
def test_compiled_value_fit_is_the_python_loop_bitwise(hidden, activation, n, minibatch, monkeypatch):
    """`fit_mlp_value` (the loop compiled by TorchScript) and its Python fallback `_fit_epochs` move
    the net and Adam's moments exactly as the loop fit_value ran in Python before: per minibatch,
    fresh gradients from `mlp_mse_and_grads`, then `Adam.step(grads)`. Float32; 256 × 64 units take
    tanh's sigmoid form, 64 × 7 do not; minibatch sizes that leave a shorter last minibatch."""
    assert isinstance(fast._compiled_fit_epochs(), torch.jit.ScriptFunction)  # what runs is compiled
    torch.manual_seed(0)
    compiled = ValueFunction(6, hidden, activation)
    fallback, reference = copy.deepcopy(compiled), copy.deepcopy(compiled)
    opts = [Adam(net.parameters(), lr=3e-3) for net in (compiled, fallback, reference)]
    obs = torch.randn(n, 6)
    targets = 5.0 * obs[:, 0] - obs[:, 1] ** 2 + 20.0
    with torch.no_grad():
        loss_before = float((compiled(obs) - targets).pow(2).mean())
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):  # three fits of two epochs, Adam's step count carried from one to the next
        orders = [torch.randperm(n, generator=generator) for _ in range(2)]
        steps = fast.fit_mlp_value(fast.mlp_layers(compiled), opts[0], obs, targets, orders, minibatch)
        with monkeypatch.context() as patch:
            patch.setattr(fast, "_compiled_fit_epochs", lambda: fast._fit_epochs)
            assert fast.fit_mlp_value(fast.mlp_layers(fallback), opts[1], obs, targets, orders,
                                      minibatch) == steps
        for order in orders:
            obs_epoch, targets_epoch = obs[order], targets[order]
            for start in range(0, n, minibatch):
                rows = slice(start, start + minibatch)
                layers = fast.mlp_layers(reference)
                opts[2].step(fast.mlp_mse_and_grads(layers, obs_epoch[rows], targets_epoch[rows])[1])
        assert steps == 2 * -(-n // minibatch) and opts[0].t == opts[1].t == opts[2].t
        for net, opt in ((compiled, opts[0]), (fallback, opts[1])):
            assert all(torch.equal(a, b) for a, b in zip(net.parameters(), reference.parameters()))
            assert all(torch.equal(a, b) for a, b in zip(opt.m + opt.v, opts[2].m + opts[2].v))
    with torch.no_grad():
        assert float((compiled(obs) - targets).pow(2).mean()) < loss_before  # it did fit


def test_value_fit_runs_in_python_when_torchscript_cannot_compile(monkeypatch):
    def refuse(fn):
        raise RuntimeError("no TorchScript here\nsecond line")

    fast._compiled_fit_epochs.cache_clear()
    monkeypatch.setattr(torch.jit, "script", refuse)
    try:
        with pytest.warns(RuntimeWarning, match="RuntimeError: no TorchScript here\\); it runs in Python"):
            assert fast._compiled_fit_epochs() is fast._fit_epochs
        value_fn = ValueFunction(3)
        report = fit_value(value_fn, torch.randn(64, 3), torch.randn(64), make_value_optimizer(value_fn),
                           epochs=1, minibatch_size=16)
        assert report.updates == 4
    finally:
        fast._compiled_fit_epochs.cache_clear()


def test_compiled_value_fit_names_a_foreign_optimiser():
    value_fn = ValueFunction(3)
    with pytest.raises(ValueError, match="optimiser's parameters must be the layers'"):
        fast.fit_mlp_value(fast.mlp_layers(value_fn), Adam(ValueFunction(3).parameters()), torch.randn(8, 3),
                           torch.randn(8), [torch.randperm(8)], 4)


def test_normaliser_statistics_are_numpys_mean_and_var_bitwise():
    rng = np.random.default_rng(0)
    ours, plain = RunningMeanStd((5,)), RunningMeanStd((5,))
    for k in range(200):
        x = rng.standard_normal((8, 5)) * 10.0 ** (k % 5 - 2) + k
        ours.update(x)
        b_mean, b_var, n = x.mean(0), x.var(0), x.shape[0]  # the textbook Chan et al. update
        delta, total = b_mean - plain.mean, plain.count + n
        plain.mean = plain.mean + delta * n / total
        m2 = plain.var * plain.count + b_var * n + delta**2 * plain.count * n / total
        plain.var, plain.count = m2 / total, total
        assert np.array_equal(ours.mean, plain.mean) and np.array_equal(ours.var, plain.var)
        expected = np.clip((x - plain.mean) / np.sqrt(plain.var + plain.eps), -plain.clip, plain.clip)
        assert np.array_equal(ours.normalize(x), expected)


def test_fast_numpy_helpers_are_numpys_bitwise():
    rng = np.random.default_rng(1)
    for shape in [(1, 3), (8, 5), (64, 11)]:
        x = rng.standard_normal(shape) * 1e3
        mean, var = fast.mean_and_var(x.copy())
        assert np.array_equal(mean, x.mean(0)) and np.array_equal(var, x.var(0))
        low, high = -rng.random(shape[1]), rng.random(shape[1])
        assert np.array_equal(fast.clip(x, low, high), np.clip(x, low, high))
        y = x.copy()
        assert fast.clip(y, -2.0, 2.0, out=y) is y and np.array_equal(y, np.clip(x, -2.0, 2.0))


def test_fast_module_lists_every_path_with_its_test():
    """Each fast path `fast` documents names a test that exists in this file."""
    import re
    import sys

    here = sys.modules[__name__]
    named = set(re.findall(r"`(test_[a-z_]+)`", fast.__doc__))
    assert named, "fast's module doc should name the tests that hold each path"
    assert all(hasattr(here, name) for name in named), sorted(n for n in named if not hasattr(here, n))
    for name in ("tanh", "tanh_", "Tanh", "mlp_forward", "Adam", "mse_and_grads", "mlp_mse_and_grads",
                 "fit_mlp_value", "gaussian_mlp_fisher_operator", "mean_and_var", "clip"):
        assert f"`{name}`" in fast.__doc__ and hasattr(fast, name)


def test_policies_and_value_use_the_fast_paths():
    """The plain modules call into `fast` (one implementation of each speed path, not copies)."""
    from trpo_lab import policies, rollout, value

    assert policies.ACTIVATIONS["tanh"] is fast.Tanh and policies.mlp_forward is fast.mlp_forward
    assert value.Adam is fast.Adam and rollout.clip is fast.clip
    assert isinstance(make_value_optimizer(ValueFunction(3), "adam"), fast.Adam)


def _gaussian_problem(hidden, n, act_dim=3, obs_dim=11, fvp_fraction=1.0, dtype=torch.float32, seed=0):
    problem = small_problem("gaussian", n=n, seed=seed, fvp_fraction=fvp_fraction, obs_dim=obs_dim,
                            act_dim=act_dim, hidden=hidden)
    if dtype is torch.float64:
        return problem
    policy = problem.policy.float()
    return make_update_problem(policy, problem.obs.float(), problem.actions.float(),
                               problem.advantages.float(), fvp_fraction,
                               generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("hidden, n, act_dim, fvp_fraction, dtype", [
    ((64, 64), 2048, 3, 0.25, torch.float32),  # Hopper's shapes: 512 of 2,048 rows
    ((64, 64), 512, 1, 1.0, torch.float32),  # Pendulum's, all rows
    ((128,), 64, 2, 1.0, torch.float32),  # one layer of exactly SIGMOID_TANH_MIN_SIZE elements
    ((64, 32, 64), 300, 4, 1.0, torch.float32),
    ((), 100, 2, 1.0, torch.float32),  # a linear mean
    ((64, 64), 256, 2, 1.0, torch.float64),
])
def test_written_out_fisher_product_is_double_backprops_bitwise(hidden, n, act_dim, fvp_fraction, dtype):
    problem = _gaussian_problem(hidden, n, act_dim, fvp_fraction=fvp_fraction, dtype=dtype)
    rows = problem.fvp_rows
    if rows is not None and not torch.equal(problem.distribution_at(problem.theta_old, rows).mean,
                                            problem.old_distribution(rows).mean):
        # BLAS may sum a product of fewer rows in another order (this CPU's float64 does): then the
        # path does not apply (see the fallback test); on the rows of the batch itself it always can
        pytest.skip("this CPU's matrix product gives a subsample's means other bits than the batch's")
    written_out = fast.gaussian_mlp_fisher_operator(problem)
    assert written_out is not None, "the written-out path should apply to this problem"
    autograd = double_backprop_fisher_operator(problem)
    g = torch.Generator().manual_seed(7)
    for _ in range(5):
        v = torch.randn(problem.num_params, generator=g, dtype=dtype)
        assert torch.equal(written_out(v), autograd(v))
    # and through the public operator, which picks the written-out path
    assert torch.equal(fisher_operator(problem)(v), autograd(v))


def test_written_out_fisher_product_falls_back_to_double_backprop():
    """Where the written-out products would not be autograd's, `fisher_operator` uses autograd."""
    import dataclasses

    assert fast.gaussian_mlp_fisher_operator(small_problem("categorical", n=256, hidden=(64,))) is None
    # hidden activations of fewer than SIGMOID_TANH_MIN_SIZE elements: tanh is torch.tanh there
    small = _gaussian_problem((64,), SIGMOID_TANH_MIN_SIZE // 64 - 1)
    assert fast.gaussian_mlp_fisher_operator(small) is None
    relu = small_problem("gaussian", n=256, hidden=(64,))
    relu.policy.mean_net[1] = torch.nn.ReLU()
    assert fast.gaussian_mlp_fisher_operator(relu) is None
    # π_old's means not reproduced bitwise by θ_old's forward (the terms it drops would not vanish)
    problem = _gaussian_problem((64,), 256)
    mean, log_std = problem.old_params
    moved = dataclasses.replace(problem, old_params=(mean + 1e-3, log_std))
    assert fast.gaussian_mlp_fisher_operator(moved) is None
    v = torch.randn(problem.num_params, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fisher_operator(moved)(v), double_backprop_fisher_operator(moved)(v))


def test_fisher_operator_takes_the_written_out_path_for_a_gaussian_mlp():
    """The speed path is used, not only correct: `fisher_operator` returns its products."""
    operator = fisher_operator(_gaussian_problem((64, 64), 512))
    assert "gaussian_mlp_fisher_operator" in getattr(operator, "__wrapped__", operator).__qualname__
    categorical = fisher_operator(small_problem("categorical", n=256, hidden=(64,)))
    assert "double_backprop_fisher_operator" in categorical.__qualname__
