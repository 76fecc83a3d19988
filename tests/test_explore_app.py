"""The Explorer widget, headless: every slider is wired to `trpo_step` and redraws the views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trpo_lab.explore import Explorer, Settings, make_snapshot
from trpo_lab.explore.views import bar_values, summary_bars_html, summary_html, table_rows, trace

SMALL = dict(hidden_sizes=(16, 16), batch_steps=512)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def snapshots():
    return [make_snapshot("Pendulum-v1", **SMALL), make_snapshot("CartPole-v1", **SMALL)]


@pytest.fixture()
def explorer(snapshots):
    return Explorer(snapshots, settings=Settings())


def data(explorer, view: str, name: str):
    return trace(explorer.figures[view], name)


def summary(explorer) -> dict[str, str]:
    """The rows of the summary table the explorer shows."""
    return table_rows(explorer.table.value)


def test_explorer_exposes_its_wiring(explorer):
    assert set(explorer.sliders) == {"max_kl", "damping", "cg_iters", "backtrack_coef",
                                     "backtrack_iters", "snapshot"}
    assert set(explorer.figures) == {"line_search", "trust_region", "cg"}
    for name, widget in explorer.sliders.items():  # each observes its "value" trait
        assert explorer._on_change in widget._trait_notifiers["value"]["change"], name
    s = explorer.sliders
    assert (s["max_kl"].min, s["max_kl"].max, s["max_kl"].base) == (-4, -1, 10)
    assert (s["damping"].min, s["damping"].max) == (-4, 0)
    assert (s["cg_iters"].min, s["cg_iters"].max) == (1, 50)
    assert (s["backtrack_coef"].min, s["backtrack_coef"].max) == (0.3, 0.95)
    from plotly.graph_objects import FigureWidget

    for fig in explorer.figures.values():  # FigureWidgets that share one copy of plotly's JS bundle
        assert isinstance(fig, FigureWidget) and fig._bundle == ""
        assert len(fig._esm) < 5_000 and "trpo_lab.plotly_widget_bundle" in fig._esm
    assert explorer._repr_mimebundle_()  # displays as its widget
    assert summary(explorer) == explorer.summary()
    assert explorer.table.value == summary_html(explorer.report)  # the numbers' table and the bars
    assert bar_values(explorer.table.value) == bar_values(summary_bars_html(explorer.report))


def test_one_hidden_widget_per_kernel_carries_plotlys_bundle(explorer, snapshots):
    from trpo_lab import widgets

    assert len(widgets._PRELOADER) == 1
    bundle = widgets._PRELOADER[0]._bundle
    assert len(bundle) > 1_000_000 and bundle == widgets.plotly_widget_bundle()
    Explorer(snapshots[0])
    assert len(widgets._PRELOADER) == 1  # a second explorer does not send it again


def test_delta_slider_redraws_line_search_slice_and_summary_only(explorer):
    """δ redraws the line search and the slice figures, the summary table and bars; not the CG."""
    cg_before = list(data(explorer, "cg", "CG residual ‖r_k‖").y)
    cg_title = explorer.figures["cg"].layout.title.text
    for delta in (0.05, 0.002, 0.0003, 0.02):
        explorer.sliders["max_kl"].value = delta
        update = explorer.updates[-1]
        assert set(update["views"]) == {"line_search", "trust_region"}
        assert "cg_solve" not in update["work"]
        # the CG figure is left alone (s does not depend on δ); its caption says so
        assert list(data(explorer, "cg", "CG residual ‖r_k‖").y) == cg_before
        assert explorer.figures["cg"].layout.title.text == cg_title
        assert f"same s for every δ (now {delta:.3g})" in explorer.cg_caption.value
        assert list(data(explorer, "line_search", "δ").y) == [delta, delta]
        accepted = data(explorer, "line_search", "accepted trial (KL)").y
        assert len(accepted) == 1 and accepted[0] <= delta  # the accepted KL never exceeds δ
        assert float(summary(explorer)["final KL̄(π_old ‖ π_new)"]) <= delta * (1 + 1e-3)
        assert summary(explorer)["δ (max KL)"] == f"{delta:.4g}"
        bars = bar_values(explorer.table.value)
        assert bars["final_kl"] == explorer.report.kl <= delta * (1 + 1e-3)
        assert bars["actual"] == explorer.report.surrogate_gain
        assert f"δ = {delta:.3g}" in explorer.status.value
    assert list(data(explorer, "cg", "CG residual ‖r_k‖").y) == cg_before


def test_model_ellipse_scales_with_sqrt_delta(explorer):
    explorer.set(max_kl=0.001)
    small = np.array([data(explorer, "trust_region", "model ½cᵀ(F+λI)c = δ").x,
                      data(explorer, "trust_region", "model ½cᵀ(F+λI)c = δ").y])
    explorer.set(max_kl=0.04)
    big = np.array([data(explorer, "trust_region", "model ½cᵀ(F+λI)c = δ").x,
                    data(explorer, "trust_region", "model ½cᵀ(F+λI)c = δ").y])
    np.testing.assert_allclose(big, np.sqrt(40) * small, rtol=1e-9)
    kl = data(explorer, "trust_region", "real KL̄ = δ")
    assert kl.contours.start == 0.04


def test_damping_slider_redraws_everything_with_a_new_cg_solve(explorer):
    before = {k: list(data(explorer, *v).y) for k, v in {
        "cg": ("cg", "CG residual ‖r_k‖"), "curve": ("line_search", "real KL̄")}.items()}
    explorer.sliders["damping"].value = 0.01
    update = explorer.updates[-1]
    assert set(update["views"]) == {"line_search", "trust_region", "cg"}
    assert update["work"]["cg_solve"] == 1 and update["work"]["grid"] == 1
    assert list(data(explorer, "cg", "CG residual ‖r_k‖").y) != before["cg"]
    assert list(data(explorer, "line_search", "real KL̄").y) != before["curve"]
    assert summary(explorer)["damping λ"] == "0.01"
    assert "λ = 0.01" in explorer.figures["trust_region"].layout.title.text


def test_more_cg_iterations_never_raise_the_final_residual(explorer):
    explorer.set(damping=1.0)  # a well-conditioned F + λI
    finals = []
    for k in range(1, 16):
        explorer.sliders["cg_iters"].value = k
        residuals = data(explorer, "cg", "CG residual ‖r_k‖").y
        assert len(residuals) <= k + 1
        finals.append(residuals[-1])
    assert all(b <= a for a, b in zip(finals, finals[1:])), finals


def test_backtracking_sliders_change_the_trials(explorer, snapshots):
    explorer.set(snapshot=snapshots[1].name, damping=1e-4, max_kl=0.01)  # this overshoots
    rejected = data(explorer, "line_search", "rejected trials").x
    assert len(rejected) >= 1 and rejected[0] == 1.0
    explorer.sliders["backtrack_coef"].value = 0.5
    fractions = list(data(explorer, "line_search", "rejected trials").x) + \
        list(data(explorer, "line_search", "accepted trial").x)
    assert sorted(fractions, reverse=True) == [0.5**k for k in range(len(fractions))]
    assert "cg_solve" not in explorer.updates[-1]["work"]
    assert "coef 0.5, ≤ 10 trials" in explorer.cg_caption.value  # the CG view's caption answers
    explorer.sliders["backtrack_iters"].value = 1
    assert "≤ 1 trials" in explorer.cg_caption.value
    assert summary(explorer)["verdict"] == "rejected"
    assert len(data(explorer, "line_search", "accepted trial").x) == 0
    assert data(explorer, "trust_region", "accepted step").x[0] == 0  # θ stays at θ_old
    assert "rejected" in explorer.status.value


def test_snapshot_picker_switches_the_problem(explorer, snapshots):
    pendulum_eigs = data(explorer, "cg", "eigenvalues of F").y
    explorer.sliders["snapshot"].value = snapshots[1].name
    assert explorer.report.theta_old.numel() == snapshots[1].num_params
    assert len(data(explorer, "cg", "eigenvalues of F").y) == snapshots[1].num_params
    assert len(pendulum_eigs) == snapshots[0].num_params
    assert set(explorer.updates[-1]["views"]) == {"line_search", "trust_region", "cg"}


def test_set_validates_before_moving_anything(explorer):
    values = {k: w.value for k, w in explorer.sliders.items()}
    with pytest.raises(ValueError, match=r"max_kl = 0.5 is not allowed.*\[0.0001, 0.1\]"):
        explorer.set(max_kl=0.5, damping=0.3)
    with pytest.raises(ValueError, match="unknown slider"):
        explorer.set(delta=0.01)
    with pytest.raises(ValueError, match="snapshot = 'nope' is not known"):
        explorer.set(snapshot="nope")
    assert {k: w.value for k, w in explorer.sliders.items()} == values


def test_a_browser_snapping_the_handle_to_its_grid_changes_nothing(snapshots):
    """The browser snaps δ = 0.02 to the slider's grid (10^-1.70 = 0.01995) and sends it back."""
    explorer = Explorer(snapshots[0], settings=Settings(max_kl=0.02, backtrack_coef=0.8))
    n = len(explorer.updates)
    explorer.sliders["max_kl"].value = 10 ** (round(np.log10(0.02) / 0.05) * 0.05)
    explorer.sliders["backtrack_coef"].value = 0.30 + 50 * 0.01  # 0.8000000000000002
    assert len(explorer.updates) == n and explorer.settings.max_kl == 0.02
    assert explorer.settings.backtrack_coef == 0.8
    explorer.sliders["max_kl"].value = 10 ** (round(np.log10(0.02) / 0.05) * 0.05 + 0.05)  # a step
    assert len(explorer.updates) == n + 1 and explorer.settings.max_kl == pytest.approx(0.0224, rel=1e-2)
    explorer.set(max_kl=0.03)  # a value set from Python is kept exactly
    assert explorer.report.settings.max_kl == 0.03


def test_explorer_starts_at_the_training_settings(snapshots):
    explorer = Explorer(snapshots[0])
    c = snapshots[0].meta["config"]
    assert explorer.settings.max_kl == c["max_kl"] and explorer.settings.damping == c["damping"]
    assert explorer.report.summary() == snapshots[0].meta["training_step"]
    with pytest.raises(ValueError, match="settings = .* is not allowed"):
        Explorer(snapshots[0], settings={"max_kl": 0.01})


def _fresh_python(code: str) -> str:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_the_explorer_package_stays_light():
    out = _fresh_python(
        "import sys, trpo_lab.explore\n"
        "print(sorted(m for m in ('ipywidgets', 'plotly.basewidget', 'anywidget', 'nbformat')"
        " if m in sys.modules))")
    assert out.strip() == "[]"


def test_figure_widget_import_defers_rfc3987_but_iri_checks_still_work():
    out = _fresh_python(
        "import sys\n"
        "from trpo_lab.widgets import import_figure_widget\n"
        "import_figure_widget()\n"
        "print('lark' in sys.modules)\n"
        "from jsonschema import FormatChecker\n"
        "print(FormatChecker().conforms('http://a.b/ä', 'iri'), FormatChecker().conforms('no iri', 'iri'))\n"
        "print('lark' in sys.modules)")
    assert out.split() == ["False", "True", "False", "True"]


def test_the_log_sliders_readouts_show_the_values_the_update_uses(snapshots):
    """A log slider's own readout would show the grid point (δ = 0.03 as 3.16e-2): the explorer's
    readouts show the δ and damping that `trpo_step` gets, also after the browser snaps a handle."""
    explorer = Explorer(snapshots[0], settings=Settings(max_kl=0.03, damping=0.1))
    assert not explorer.sliders["max_kl"].readout and not explorer.sliders["damping"].readout
    assert (explorer.readouts["max_kl"].value, explorer.readouts["damping"].value) == ("3.00e-02", "1.00e-01")
    explorer.sliders["max_kl"].value = 10 ** (round(np.log10(0.03) / 0.05) * 0.05)  # the browser's snap
    assert explorer.readouts["max_kl"].value == "3.00e-02" and explorer.report.settings.max_kl == 0.03
    explorer.sliders["max_kl"].value = 10 ** -2.0  # the user moves the handle
    assert explorer.readouts["max_kl"].value == "1.00e-02" == f"{explorer.report.settings.max_kl:.2e}"


def test_figure_edits_reach_the_page_as_one_message_of_the_changed_leaves(explorer, monkeypatch):
    import json

    sent: dict[str, list] = {name: [] for name in explorer.figures}
    for name, fig in explorer.figures.items():
        monkeypatch.setattr(fig, "send", lambda content, buffers=None, name=name: sent[name].append(content))
    explorer.sliders["max_kl"].value = 0.002
    assert sent["cg"] == []  # δ leaves the CG figure alone
    (msg,) = sent["line_search"]  # one message per figure and move
    json.dumps(msg, allow_nan=False)  # plain JSON: arrays as lists, NaN as null
    fig = explorer.figures["line_search"]
    index = {t.name: str(i) for i, t in enumerate(fig.data)}
    assert msg["trpo"] == "update" and msg["traces"][index["δ"]]["y"] == [0.002, 0.002]
    assert msg["layout"]["yaxis2.range"] == list(fig.layout.yaxis2.range)
    unchanged = {name for name, i in index.items() if i not in msg["traces"]}
    assert "linear model g·(xβs)" not in unchanged  # the step rescaled: the model line changed …
    for name in unchanged:  # … and what was not sent did not change
        assert name in ("rejected trials", "rejected trials (KL)"), name

    # a view rendered later asks for every leaf changed since the figure was built
    explorer.sliders["max_kl"].value = 0.003
    fig._trpo_on_msg(fig, {"type": "trpo_resync"}, [])
    state = sent["line_search"][-1]
    assert state["trpo"] == "state" and state["seq"] == sent["line_search"][-2]["seq"]
    assert state["traces"][index["δ"]]["y"] == [0.003, 0.003]
    assert state["traces"][index["δ"]].keys() >= {"y"} and "yaxis2.range" in state["layout"]


def test_the_page_gets_text_then_every_figure_before_python_stores_the_edits(explorer, monkeypatch):
    """One move: the status line and table first, then one message per changed figure, and only then
    the same edits are written into the Python figures (which sends nothing more): the page draws
    while the kernel writes."""
    import trpo_lab.explore.app as app

    events: list[str] = []
    for name, fig in explorer.figures.items():
        monkeypatch.setattr(fig, "send",
                            lambda content, buffers=None, name=name: events.append(f"send {name}"))
    explorer.status.observe(lambda change: events.append("status"), names="value")
    explorer.table.observe(lambda change: events.append("table"), names="value")
    write = app.write_edits
    monkeypatch.setattr(app, "write_edits", lambda fig, edits, **kw: (events.append("validate"),
                                                                      write(fig, edits, **kw)))
    explorer.sliders["damping"].value = 0.01
    sends = [e for e in events if e.startswith("send")]
    assert sorted(sends) == sorted(f"send {name}" for name in explorer.figures)  # one each, no echo
    first_send, first_validate = events.index(sends[0]), events.index("validate")
    assert events.index("status") < first_send and events.index("table") < first_send
    assert max(events.index(s) for s in sends) < first_validate
    assert events.count("validate") == len(explorer.figures)
    assert list(trace(explorer.figures["line_search"], "δ").y) == [explorer.report.settings.max_kl] * 2


def test_the_figures_equal_the_frames_figures_built_through_plotlys_validators(explorer, snapshots):
    """The explorer writes its edits into the figures without plotly's validators
    (`write_edits(validate=False)`, 3–5× cheaper); after moves of every slider and of the snapshot,
    each figure equals the frame's figures built through the validators (legend aside: HTML)."""
    import json

    from trpo_lab.explore.views import frame_figures

    moves = [dict(max_kl=0.05), dict(max_kl=0.0003), dict(damping=0.05), dict(cg_iters=3),
             dict(backtrack_coef=0.5), dict(backtrack_iters=1), dict(snapshot=snapshots[1].name),
             dict(max_kl=0.002)]
    for move in moves:
        (name, value), = move.items()
        explorer.sliders[name].value = value  # as the page moves it: staged, one slider at a time
        fresh = frame_figures(explorer.frame)
        for key, fig in explorer.figures.items():
            fresh[key].update_layout(showlegend=False)
            assert json.loads(fig.to_json()) == json.loads(fresh[key].to_json()), (move, key)
    explorer.set(max_kl=0.01, damping=0.1)  # and as `set` moves them
    fresh = frame_figures(explorer.frame)
    for key, fig in explorer.figures.items():
        assert json.loads(fig.to_json()) == json.loads(fresh[key].update_layout(showlegend=False).to_json())
    z = trace(explorer.figures["trust_region"], "trust_region:gain").z  # the session's cached grid
    with pytest.raises(ValueError, match="read-only"):
        z[0, 0] = 0.0  # the figure is no way to edit what the session computed


def test_legends_are_html_below_the_figures_with_the_swatches_as_drawn(explorer, snapshots):
    """Plotly's legend is off in the explorer's figures (it is laid out again on every redraw); an
    HTML legend below each lists what Plotly's would, and follows the swatches: the accepted step's
    marker, and its swatch, turn red when no step is accepted."""
    import re

    from trpo_lab.explore.views import frame_figures, legend_entries

    def shown(widget):
        yield widget
        for child in getattr(widget, "children", ()):
            yield from shown(child)

    on_screen = list(shown(explorer.widget))
    fresh = frame_figures(explorer.frame)
    for key, fig in explorer.figures.items():
        assert fig.layout.showlegend is False and explorer.legends[key] in on_screen
        html = explorer.legends[key].value
        assert re.findall(r"data-key='([^']+)'", html) == [k for k, _ in legend_entries(fresh[key])]
    assert "model ½cᵀ(F+λI)c = δ" in explorer.legends["trust_region"].value

    def accepted_swatch() -> str:
        return re.search(r"data-key='trust_region:accepted_step'.*?color:(#\w+)",
                         explorer.legends["trust_region"].value).group(1)

    assert explorer.report.accepted and accepted_swatch() == "#2ca02c"
    explorer.set(snapshot=snapshots[1].name, damping=1e-4, max_kl=0.01, backtrack_iters=1)
    assert not explorer.report.accepted and accepted_swatch() == "#d62728"
    assert data(explorer, "trust_region", "accepted step").marker.color == "#d62728"


def test_legends_are_built_again_only_when_a_swatch_changes_and_always_match_the_figures(
        explorer, snapshots, monkeypatch):
    """Moves that change only data leave the legends' HTML alone (building it takes ~0.7 ms a figure);
    after every move, staged as from the page or through `set`, each legend is still exactly the
    HTML of its figure as it now is, including when the verdict turns the accepted step's swatch red
    and back."""
    from trpo_lab.explore import app
    from trpo_lab.explore.views import legend_html

    built = []
    monkeypatch.setattr(app, "legend_html", lambda fig: built.append(fig) or legend_html(fig))
    rejecting = dict(snapshot=snapshots[1].name, damping=1e-4, max_kl=0.01, backtrack_iters=1)
    moves = [dict(max_kl=0.05), dict(max_kl=0.002), dict(damping=0.05), dict(cg_iters=3),
             dict(backtrack_coef=0.5), rejecting, dict(max_kl=0.02), dict(backtrack_iters=10),
             dict(snapshot=snapshots[0].name, damping=0.1, max_kl=0.01, backtrack_iters=10)]
    verdicts = []
    for k, move in enumerate(moves):
        if len(move) == 1 and k % 2 == 0:  # as the page moves a slider: staged
            (name, value), = move.items()
            explorer.sliders[name].value = value
        else:
            explorer.set(**move)
        verdicts.append(explorer.report.accepted)
        for key, fig in explorer.figures.items():
            assert explorer.legends[key].value == legend_html(fig), (move, key)
    assert verdicts[:5] == [True] * 5 and not verdicts[5] and verdicts[-1]  # red, then green again
    assert 2 <= len(built) <= 4, len(built)  # the two verdict changes (and their views), not every move


def test_sliders_are_built_from_the_settings_metadata(explorer):
    """Each slider's label, range, step and scale is its setting's (trpo_lab.settings), spelled once."""
    from trpo_lab.settings import slider_widget, step_fields

    for key, slider in explorer.sliders.items():
        if key == "snapshot":
            continue
        spec = step_fields()[key]
        lo, hi = spec.slider
        assert slider.description == spec.label and slider.step == spec.step
        if spec.log:
            assert (slider.base, slider.min, slider.max) == (10, pytest.approx(np.log10(lo)),
                                                             pytest.approx(np.log10(hi)))
        else:
            assert (slider.min, slider.max) == (lo, hi)
    with pytest.raises(ValueError, match="accept_rule"):
        slider_widget("accept_rule", "strict")


def test_figures_needing_new_forward_passes_follow_the_others(explorer, monkeypatch):
    """Damping moves the direction: the CG figure (and the text) reaches the page before the kernel
    evaluates the new curve and slice grid, the line search and slice right after; the frame ends up
    complete and equal to computing it in one go."""
    from trpo_lab.explore.session import ExplorerSession

    events: list[str] = []
    for name, fig in explorer.figures.items():
        monkeypatch.setattr(fig, "send", lambda content, buffers=None, name=name: events.append(name))
    complete = explorer.session.complete
    monkeypatch.setattr(explorer.session, "complete",
                        lambda frame: (events.append("complete"), complete(frame))[1])
    explorer.sliders["damping"].value = 0.02
    k = events.index("complete")
    assert sorted(events[:k]) == ["cg"], events
    assert sorted(events[k + 1:]) == ["line_search", "trust_region"], events
    frame = explorer.frame
    assert frame.pending == () and frame.curve is not None and frame.grid is not None
    fresh = ExplorerSession(explorer.session.snapshots, explorer.session.grid_size).compute(
        frame.snapshot, frame.settings)
    np.testing.assert_array_equal(frame.grid.gain, fresh.grid.gain)
    np.testing.assert_array_equal(frame.curve.kl, fresh.curve.kl)
    # δ within its half decade: the curve and the grid are cached, every figure goes out at once
    events.clear()
    explorer.sliders["max_kl"].value = 0.009
    assert "complete" not in events and sorted(events) == ["line_search", "trust_region"]
