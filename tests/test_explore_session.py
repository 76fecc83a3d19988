"""The explorer's engine: the same `trpo_step`, only the work a slider needs, honest landscapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trpo_lab import mean_kl, surrogate, trpo_step
from trpo_lab.explore import ExplorerSession, Settings, make_snapshot
from trpo_lab.explore.landscape import evaluate_at, model_ellipse, view_scale

SMALL = dict(hidden_sizes=(16, 16), batch_steps=512)


@pytest.fixture(scope="module")
def cartpole():
    return make_snapshot("CartPole-v1", **SMALL)


@pytest.fixture(scope="module")
def pendulum():
    return make_snapshot("Pendulum-v1", **SMALL)


@pytest.fixture()
def session(cartpole, pendulum):
    return ExplorerSession([cartpole, pendulum])


def test_frame_report_is_trpo_step_itself(session, cartpole):
    s = Settings(max_kl=0.02, damping=0.05, cg_iters=7, backtrack_coef=0.7, backtrack_iters=5)
    frame = session.compute(cartpole.name, s)
    direct = trpo_step(cartpole.problem(), max_kl=0.02, damping=0.05, cg_iters=7, cg_tol=s.cg_tol,
                       backtrack_coef=0.7, backtrack_iters=5)
    assert frame.report.summary() == direct.summary()
    assert torch.equal(frame.report.theta_new, direct.theta_new)
    work = dict(session.work)
    only_step = session.report(cartpole.name, s.replace(cg_iters=3))  # the step alone
    assert only_step.summary() == trpo_step(cartpole.problem(), max_kl=0.02, damping=0.05, cg_iters=3,
                                            cg_tol=s.cg_tol, backtrack_coef=0.7,
                                            backtrack_iters=5).summary()
    assert {k: v - work.get(k, 0) for k, v in session.work.items() if v != work.get(k, 0)} == {
        "trpo_step": 1, "cg_solve": 1}  # no curve, slice or exact comparison


def test_delta_alone_reruns_only_the_line_search(session, pendulum):
    session.compute(pendulum.name, Settings(max_kl=0.01))
    before = dict(session.work)
    for delta in (0.009, 0.008, 0.005, 0.0035):  # the same half decade (0.00316, 0.01]
        frame = session.compute(pendulum.name, Settings(max_kl=delta))
        assert frame.report.settings.max_kl == delta
    done = {k: v - before.get(k, 0) for k, v in session.work.items() if v != before.get(k, 0)}
    assert done == {"trpo_step": 4}
    session.compute(pendulum.name, Settings(max_kl=0.03))  # another half decade: reframe, no CG
    assert session.work["cg_solve"] == before["cg_solve"]
    assert session.work["plane"] == before["plane"]
    assert session.work["grid"] == before["grid"] + 1


def test_damping_and_cg_iters_need_a_new_direction(session, pendulum):
    session.compute(pendulum.name, Settings())
    for change in (dict(damping=0.3), dict(cg_iters=4)):
        before = dict(session.work)
        session.compute(pendulum.name, Settings(**change))
        done = {k: session.work[k] - before.get(k, 0) for k in ("cg_solve", "curve", "plane", "grid")}
        assert done == {"cg_solve": 1, "curve": 1, "plane": 1, "grid": 1}, change


def test_backtracking_sliders_change_only_the_line_search(session, cartpole):
    session.compute(cartpole.name, Settings(damping=1e-4))
    before = dict(session.work)
    a = session.compute(cartpole.name, Settings(damping=1e-4, backtrack_coef=0.5))
    b = session.compute(cartpole.name, Settings(damping=1e-4, backtrack_coef=0.5, backtrack_iters=1))
    assert session.work["cg_solve"] == before["cg_solve"] and session.work["grid"] == before["grid"]
    assert a.report.backtracks >= 1  # tiny damping overshoots on this snapshot
    assert [t.fraction for t in a.report.trials] == [0.5**k for k in range(len(a.report.trials))]
    assert not b.report.accepted and "no line-search trial accepted in 1" in b.report.reason


def test_landscape_values_are_the_core_surrogate_and_kl(cartpole):
    problem = cartpole.problem()
    thetas = problem.theta_old + 0.05 * torch.randn(3, problem.num_params,
                                                      generator=torch.Generator().manual_seed(1))
    gain, kl = evaluate_at(problem, thetas)
    with torch.no_grad():
        base = float(surrogate(problem, problem.theta_old))
        for i, theta in enumerate(thetas):
            assert gain[i] == float(surrogate(problem, theta)) - base
            assert kl[i] == float(mean_kl(problem, theta))


def test_curve_passes_through_the_trials_and_starts_at_zero(session, cartpole):
    frame = session.compute(cartpole.name, Settings(damping=1e-4, max_kl=0.01))
    r, curve = frame.report, frame.curve
    assert curve.t[0] == 0 and curve.gain[0] == 0 and curve.kl[0] == 0
    x = curve.t / r.beta
    for trial in r.trials:  # the real curve between its samples agrees with what the line search saw
        assert np.interp(trial.fraction, x, curve.kl) == pytest.approx(trial.kl, rel=0.05, abs=1e-6)
    assert x[-1] >= 1.3 - 1e-9


def test_grid_is_centred_on_theta_old_and_frames_the_model(session, pendulum):
    frame = session.compute(pendulum.name, Settings(max_kl=0.01))
    grid, plane = frame.grid, frame.plane
    ma, mb = len(grid.a) // 2, len(grid.b) // 2
    assert (len(grid.a), len(grid.b)) == (9, 7) and grid.gain.shape == (7, 9)
    assert grid.a[ma] == 0 and grid.b[mb] == 0
    assert grid.gain[mb, ma] == 0 and grid.kl[mb, ma] == 0
    assert grid.scale == view_scale(0.01) == pytest.approx(0.01)
    ex, ey = model_ellipse(plane, 0.01)
    assert np.abs(ex).max() < grid.a[-1] and np.abs(ey).max() < grid.b[-1]
    # v is (F+λI)-conjugate to u, so the model ellipse is axis-aligned in (a, b)
    assert abs(plane.A[0, 1]) < 1e-4 * np.sqrt(plane.A[0, 0] * plane.A[1, 1])
    assert float(plane.u.norm()) == pytest.approx(1) and float(plane.v.norm()) == pytest.approx(1)
    g = plane.g[0] * plane.u + plane.g[1] * plane.v  # the gradient lies in the plane
    torch.testing.assert_close(g, frame.report.grad, rtol=1e-4, atol=1e-6)


def test_model_ellipse_is_the_quadratic_model_and_scales_with_sqrt_delta(session, pendulum):
    plane = session.compute(pendulum.name, Settings()).plane
    for delta in (1e-4, 1e-2):
        ex, ey = model_ellipse(plane, delta)
        c = np.stack([ex, ey])
        np.testing.assert_allclose(0.5 * np.einsum("in,ij,jn->n", c, plane.A, c), delta, rtol=1e-9)
    small, big = np.stack(model_ellipse(plane, 1e-4)), np.stack(model_ellipse(plane, 1e-2))
    np.testing.assert_allclose(big, 10 * small, rtol=1e-9)


def test_exact_fisher_comparison(session, cartpole, pendulum):
    frame = session.compute(cartpole.name, Settings(damping=0.1, cg_iters=50))
    exact = frame.exact
    assert exact is not None and frame.exact_note == ""
    assert exact.relative_error < 1e-3 and exact.angle < 0.1
    assert exact.errors[0] == 1.0 and exact.errors[-1] < 1e-3
    assert np.all(np.diff(exact.eigenvalues) <= 0)  # descending
    # the exact F agrees with the Fisher-vector products it was built from
    s = frame.report.direction
    sFs = float(s.double() @ session.state(cartpole.name).fisher.matrix @ s.double())
    assert sFs == pytest.approx(frame.sFs, rel=1e-4)
    big = ExplorerSession(pendulum, exact_max_params=100)
    frame = big.compute(pendulum.name, Settings())
    assert frame.exact is None and "P = 354" in frame.exact_note


def test_more_cg_iterations_never_raise_the_final_residual(session, pendulum, cartpole):
    for snap in (pendulum, cartpole):  # damping 1 makes F + λI well conditioned here
        finals = [session.compute(snap.name, Settings(damping=1.0, cg_iters=k)).report.cg
                  .residual_norms[-1] for k in range(1, 21)]
        assert all(b <= a for a, b in zip(finals, finals[1:])), finals
        assert finals[-1] < 1e-3 * finals[0]


@pytest.mark.parametrize("field, value, allowed", [
    ("max_kl", 0.5, r"\[0.0001, 0.1\]"), ("max_kl", 0.0, r"\[0.0001, 0.1\]"),
    ("damping", 2.0, r"\[0.0001, 1\]"), ("cg_iters", 0, r"integer in \[1, 50\]"),
    ("cg_iters", 5.0, "integer"), ("backtrack_coef", 0.99, r"\[0.3, 0.95\]"),
    ("backtrack_iters", 31, r"\[1, 30\]"), ("max_kl", True, "number"), ("damping", "0.1", "number"),
])
def test_settings_validation_names_field_value_and_range(field, value, allowed):
    with pytest.raises(ValueError, match=rf"{field} = {value!r}.*not allowed.*{allowed}"):
        Settings(**{field: value})


def test_session_validation(cartpole):
    with pytest.raises(ValueError, match="give one or more Snapshot"):
        ExplorerSession([])
    with pytest.raises(ValueError, match="grid_size = 2 is not allowed"):
        ExplorerSession(cartpole, grid_size=2)
    with pytest.raises(ValueError, match=r"grid_size = \(9, 1\) is not allowed"):
        ExplorerSession(cartpole, grid_size=(9, 1))
    session = ExplorerSession(cartpole)
    with pytest.raises(ValueError, match="snapshot = 'nope' is not known"):
        session.compute("nope", Settings())


def test_from_config_clips_into_the_slider_ranges():
    s = Settings.from_config({"max_kl": 0.5, "damping": 0.0, "cg_iters": 100, "backtrack_coef": 0.8,
                              "backtrack_iters": 10, "cg_tol": 1e-8})
    assert (s.max_kl, s.damping, s.cg_iters, s.cg_tol) == (0.1, 1e-4, 50, 1e-8)
    assert math.isclose(view_scale(0.0035), 10**-2)


def test_memo_keeps_the_entries_used_last_whichever_way_they_are_read():
    """Reads by `memo[key]`, `get` and `setdefault` all count as a use (OrderedDict's own `get`
    and `setdefault` would bypass it): the session reads curves and grids with `get`, and the
    compare view keeps its step cache with `setdefault`."""
    from trpo_lab.explore.session import Memo

    memo = Memo(8)
    for i in range(8):
        memo[i] = i
    assert memo[0] == 0 and memo.get(1) == 1 and memo.setdefault(2, "new") == 2
    assert memo.get("absent") is None and memo.get("absent", 5) == 5 and "absent" not in memo
    for i in range(100, 105):
        memo[i] = i
    assert {0, 1, 2} <= set(memo) and len(memo) == 8  # 3…7, not the three just read, went first
    assert memo.setdefault("x", []) == [] and "x" in memo and len(memo) == 8
    with pytest.raises(ValueError, match="maxsize"):
        Memo(3)
