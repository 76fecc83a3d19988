"""The compare view: every rule on one frozen batch, its records, figures and widget."""

import numpy as np
import pytest
import torch

from trpo_lab.explore import make_snapshot
from trpo_lab.explore.compare import Memo, RuleComparison, compare_figures, compare_rules
from trpo_lab.settings import ConfigError, StepSettings


@pytest.fixture(scope="module")
def snap():
    return make_snapshot("CartPole-v1", iteration=2, seed=0, batch_steps=512, num_envs=4,
                         hidden_sizes=(16,), vf_hidden_sizes=(16,))


def by_id(fig, trace_id):
    matches = [t for t in fig.data if t.meta == trace_id]
    assert len(matches) == 1, [t.meta for t in fig.data]
    return matches[0]


def test_every_rule_on_one_batch(snap):
    problem = snap.problem()
    delta = 0.01
    c = compare_rules(problem, StepSettings(max_kl=delta))
    assert list(c.results) == ["trpo", "npg", "pg", "ppo-clip"]
    trpo, npg, pg, ppo = (c.results[r] for r in c.results)
    assert trpo.report.accepted and trpo.mean_kl <= delta
    assert trpo.mean_kl == pytest.approx(trpo.report.kl, rel=1e-5)
    # npg's full step and pg's step sit on the model boundary ½cᵀAc = δ of the slice plane
    for r in (npg, pg):
        a = np.array(r.coords)
        assert 0.5 * a @ c.plane.A @ a == pytest.approx(delta, rel=1e-3)
        assert r.off_plane < 1e-4
    # pg steps along g: its coordinates are parallel to the gradient's
    cos = np.dot(pg.coords, c.plane.g) / np.linalg.norm(pg.coords) / np.linalg.norm(c.plane.g)
    assert cos == pytest.approx(1.0, abs=1e-5)
    assert abs(npg.coords[1]) < 1e-4 * abs(npg.coords[0])  # s is the plane's first axis
    assert ppo.off_plane > 0.05  # PPO's step leaves span{s, g}
    for r in c.results.values():
        assert r.state_kls.shape == (problem.batch_size,) and r.max_state_kl >= r.mean_kl
        assert r.seconds > 0
    assert [row["rule"] for row in c.table()] == list(c.results)


def test_the_memo_reruns_only_rules_whose_settings_changed(snap):
    problem, memo = snap.problem(), {}
    first = compare_rules(problem, StepSettings(max_kl=0.01), memo=memo)
    second = compare_rules(problem, StepSettings(max_kl=0.02), memo=memo)
    assert second.results["ppo-clip"].report is first.results["ppo-clip"].report  # δ is not PPO's
    assert second.results["trpo"].report is not first.results["trpo"].report
    assert second.results["trpo"].report.settings.max_kl == 0.02
    third = compare_rules(problem, StepSettings(max_kl=0.02, ppo_clip=0.1), memo=memo)
    assert third.results["ppo-clip"].report is not first.results["ppo-clip"].report
    assert third.results["trpo"].report is second.results["trpo"].report


def test_the_compare_views_memo_keeps_the_entries_used_last(snap):
    """A long slider session does not grow the memo without bound, and an evicted setting is
    recomputed to the same numbers."""
    problem, memo = snap.problem(), Memo(maxsize=12)
    first = compare_rules(problem, StepSettings(max_kl=0.01), memo=memo)
    for delta in (0.011, 0.012, 0.013, 0.014, 0.015, 0.016, 0.017):
        compare_rules(problem, StepSettings(max_kl=delta), memo=memo)
        assert len(memo) <= 12
    again = compare_rules(problem, StepSettings(max_kl=0.01), memo=memo)
    assert again.results["trpo"].report is not first.results["trpo"].report  # evicted, re-run
    for rule in first.results:
        a, b = first.results[rule], again.results[rule]
        assert torch.equal(a.report.theta_new, b.report.theta_new), rule
        np.testing.assert_array_equal(a.state_kls, b.state_kls)
    assert again.results["ppo-clip"].report is compare_rules(  # used last: still there
        problem, StepSettings(max_kl=0.01), memo=memo).results["ppo-clip"].report
    with pytest.raises(ValueError, match="maxsize = 0 is not allowed"):
        Memo(maxsize=0)


def test_bad_rules_are_named(snap):
    with pytest.raises(ConfigError, match=r"rules = \('trpo', 'adam'\) is not allowed"):
        compare_rules(snap.problem(), rules=("trpo", "adam"))
    with pytest.raises(ConfigError, match="rules = \\(\\) is not allowed"):
        compare_rules(snap.problem(), rules=())


def test_figures_key_traces_by_stable_ids(snap):
    c = compare_rules(snap.problem(), StepSettings(max_kl=0.01))
    figs = compare_figures(c)
    assert set(figs) == {"slice", "metrics", "histogram"}
    for rule, r in c.results.items():
        end = by_id(figs["slice"], f"slice:{rule}")
        assert (end.x[-1], end.y[-1]) == pytest.approx(r.coords)
        assert sum(by_id(figs["histogram"], f"histogram:{rule}").y) == snap.problem().batch_size
    bars = by_id(figs["metrics"], "metrics:max_state_kl")
    assert list(bars.y) == pytest.approx([r.max_state_kl for r in c.results.values()])


def test_the_widget_redraws_on_a_slider_and_validates_first(snap):
    app = RuleComparison(snap)
    before = list(by_id(app.figures["slice"], "slice:trpo").x)
    app.set(max_kl=0.03)
    assert app.comparison.settings.max_kl == pytest.approx(0.03)
    after = list(by_id(app.figures["slice"], "slice:trpo").x)
    assert after != before and after[-1] == pytest.approx(app.comparison.results["trpo"].coords[0])
    assert "0.03" in app.figures["metrics"].layout.title.text
    app.sliders["damping"].value = 0.5  # a move in the page re-runs the rules too
    assert app.comparison.settings.damping == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="ppo_clip = 2.0 is not allowed"):
        app.set(ppo_clip=2.0, max_kl=0.01)
    assert app.sliders["max_kl"].value == pytest.approx(0.03)  # nothing moved
    with pytest.raises(ValueError, match="unknown slider"):
        app.set(delta=0.1)


def test_a_rule_that_does_not_rerun_keeps_its_end_point_bitwise():
    """Moving ε re-runs PPO only: the other rules' results, end points included, are the same objects
    and numbers (a recomputed least-squares projection could move them in the last bits)."""
    snapshot = make_snapshot("Pendulum-v1", iteration=1, batch_steps=256)
    problem, memo = snapshot.problem(), {}
    first = compare_rules(problem, StepSettings(max_kl=0.02), memo=memo)
    again = compare_rules(problem, StepSettings(max_kl=0.02, ppo_clip=0.1), memo=memo)
    for rule in ("trpo", "npg", "pg"):
        assert again.results[rule].report is first.results[rule].report
        assert again.results[rule].coords == first.results[rule].coords
    assert again.results["ppo-clip"].report is not first.results["ppo-clip"].report
