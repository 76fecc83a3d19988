"""Training dashboards: pure figure builders from training histories, a live view that updates in place
while `train(..., callback=...)` runs, and a rendered episode shown as a Plotly animation or strip.

    training_figure({"δ = 0.01": trainer.history, ...}) -> go.Figure     (pure: history in, figure out)
    LiveDashboard(["δ = 0.01", ...]).callback("δ = 0.01")  -> fn(record, trainer) for `train`
    record_frames(policy, "CartPole-v1") -> RenderedEpisode;  frames_animation / frames_strip -> go.Figure

Each panel shows one `IterationRecord` field (defined in README.md, Metrics). Plotly is imported inside
the functions, so `import trpo_lab` stays light.
"""

from __future__ import annotations

import base64
import math
import os
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass

import numpy as np

# (row, col, title, [(column, line dash, legend suffix)], log y)
PANELS: list[tuple[int, int, str, list[tuple[str, str, str]], bool]] = [
    (1, 1, "mean return (last 20 episodes)", [("mean_return", "solid", "")], False),
    (1, 2, "KL̄(π_old ‖ π_new), dashed: δ", [("kl", "solid", ""), ("max_kl", "dash", " δ")], False),
    (2, 1, "surrogate gain, dotted: predicted g·βs",
     [("surrogate_gain", "solid", ""), ("predicted_improvement", "dot", " predicted")], False),
    (2, 2, "line-search backtracks", [("backtracks", "solid", "")], False),
    (3, 1, "policy entropy", [("entropy", "solid", "")], False),
    (3, 2, "value loss before the fit (log)", [("value_loss", "solid", "")], True),
    (4, 1, "explained variance of V before the fit", [("explained_variance", "solid", "")], False),
    (4, 2, "seconds per iteration", [("seconds", "solid", "")], False),
]
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


def history_columns(history: Sequence) -> dict[str, list]:
    """Training records (`IterationRecord`s or dicts) as columns, plus `seconds` = sample + update +
    value-fit time; non-finite numbers become None (a gap in a plot, `null` in JSON)."""
    rows = [asdict(r) if is_dataclass(r) else dict(r) for r in history]
    keys = list(rows[0]) if rows else ["iteration", "steps"] + [c for p in PANELS for c, *_ in p[3]]
    columns: dict[str, list] = {k: [r.get(k) for r in rows] for k in keys}
    if rows and "sample_seconds" in rows[0]:
        columns["seconds"] = [r["sample_seconds"] + r["update_seconds"] + r["value_seconds"] for r in rows]
    columns.setdefault("seconds", [None] * len(rows))
    for k, values in columns.items():
        columns[k] = [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]
    return columns


def training_figure(runs: Mapping[str, Sequence], target_return: float | None = None,
                    x: str = "steps", height: int = 900):
    """One figure for several runs (e.g. δ values or seeds) side by side: a panel per metric, one
    colour per run. Every trace carries meta = {"run": label, "column": metric} (`LiveDashboard`)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=4, cols=2, subplot_titles=[p[2] for p in PANELS], vertical_spacing=0.07,
                        horizontal_spacing=0.08)
    for i, (label, history) in enumerate(runs.items()):
        cols = history_columns(history)
        color = COLORS[i % len(COLORS)]
        for row, col, _, lines, _ in PANELS:
            for column, dash, suffix in lines:
                fig.add_trace(go.Scatter(
                    x=cols[x], y=cols[column], name=label + suffix, mode="lines+markers",
                    marker=dict(size=4), line=dict(color=color, dash=dash), legendgroup=label,
                    showlegend=(row, col, column) == (1, 1, "mean_return"),
                    meta={"run": label, "column": column}), row=row, col=col)
    for row, col, _, _, log in PANELS:
        fig.update_xaxes(title_text=x if row == 4 else None, row=row, col=col)
        if log:
            fig.update_yaxes(type="log", row=row, col=col)
    if target_return is not None:
        fig.add_hline(y=target_return, line=dict(color="grey", dash="dot"), row=1, col=1)
    fig.update_layout(height=height, template="plotly_white", margin=dict(t=110, b=40, l=50, r=20),
                      title=dict(text="TRPO training", x=0.01, y=0.99, yanchor="top"),
                      legend=dict(orientation="h", x=0.0, y=1.04, yanchor="bottom"))
    return fig


class LiveDashboard:
    """A `FigureWidget` of `training_figure` that fills in while training runs.

        dash = LiveDashboard(["δ = 0.01"]); display(dash.figure)
        train(config, callback=dash.callback("δ = 0.01"))

    Each update sets the traces of one run inside `batch_update()`, so the browser redraws once per
    iteration; the records themselves are kept in `runs`."""

    def __init__(self, labels: Sequence[str], target_return: float | None = None, x: str = "steps",
                 height: int = 900):
        from .widgets import preload_plotly_widgets, shared_bundle_figure_widget

        if len(set(labels)) != len(labels) or not labels:
            raise ValueError(f"labels = {list(labels)!r}: give one distinct label per run")
        self.x = x
        self.runs: dict[str, list] = {label: [] for label in labels}
        # a FigureWidget that shares the page's one import of plotly's widget bundle (see
        # trpo_lab.widgets): the dashboard then appears in about as long as the explorer does
        preload_plotly_widgets()
        figure_widget = shared_bundle_figure_widget()
        self.figure = figure_widget(training_figure(self.runs, target_return, x, height))
        self._traces: dict[str, list] = {label: [] for label in labels}
        for trace in self.figure.data:
            self._traces[trace.meta["run"]].append(trace)

    def update(self, label: str, record) -> None:
        """Append `record` to run `label` and redraw that run's traces in place."""
        if label not in self.runs:
            raise KeyError(f"run {label!r} is not on this dashboard; runs are {list(self.runs)}")
        self.runs[label].append(record)
        cols = history_columns(self.runs[label])
        with self.figure.batch_update():
            for trace in self._traces[label]:
                trace.x, trace.y = cols[self.x], cols[trace.meta["column"]]

    def callback(self, label: str, stop_at_return: float | None = None) -> Callable[..., bool]:
        """A `train` callback feeding run `label`; it stops training (returns True) once the mean
        return reaches `stop_at_return`, if given."""
        def on_iteration(record, trainer=None) -> bool:
            self.update(label, record)
            ret = record["mean_return"] if isinstance(record, Mapping) else record.mean_return
            return stop_at_return is not None and math.isfinite(ret) and ret >= stop_at_return

        return on_iteration


# ───────────────────────────── a rendered episode ─────────────────────────────


@dataclass(frozen=True)
class RenderedEpisode:
    frames: list[np.ndarray]  # [H, W, 3] uint8, every `every`-th step, downsampled
    episode_return: float
    length: int


def record_frames(policy, env_id: str = "CartPole-v1", seed: int = 0, max_steps: int = 500,
                  normalizer=None, deterministic: bool = True, every: int = 1,
                  downsample: int = 2) -> RenderedEpisode:
    """Run one episode of `policy` with render_mode="rgb_array" and keep the frames (nothing is
    downloaded; no display is needed: SDL's dummy video driver is used unless one is set)."""
    import gymnasium as gym
    import torch

    from .rollout import run_episode

    if every < 1 or downsample < 1 or max_steps < 1:
        raise ValueError(f"every = {every}, downsample = {downsample}, max_steps = {max_steps}: "
                         "all must be ≥ 1")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    env = gym.make(env_id, render_mode="rgb_array")
    frames: list[np.ndarray] = []

    def render(t: int) -> None:
        if t % every == 0:
            frames.append(_shrink(env.render(), downsample))

    try:
        total, steps = run_episode(policy, env, seed, torch.Generator().manual_seed(seed), normalizer,
                                   deterministic, max_steps, before_step=render)
        frames.append(_shrink(env.render(), downsample))
    finally:
        env.close()
    return RenderedEpisode(frames, total, steps)


def _shrink(frame: np.ndarray, k: int) -> np.ndarray:
    """Average k×k blocks (a thin line stays visible, unlike with striding); crops to a multiple of k."""
    h, w = frame.shape[0] // k * k, frame.shape[1] // k * k
    blocks = frame[:h, :w].reshape(h // k, k, w // k, k, -1).astype(np.float32)
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8)


def png_data_uri(frame: np.ndarray) -> str:
    """An RGB uint8 frame [H, W, 3] as a "data:image/png;base64,…" URI (zlib only, no imaging library)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame has shape {frame.shape} and dtype {frame.dtype}; expected [H, W, 3] uint8")
    h, w, _ = frame.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), frame.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _image_axes(fig) -> None:
    frame = dict(showticklabels=False, ticks="", showgrid=False, zeroline=False, showline=True, mirror=True,
                 linecolor="#cccccc")
    fig.update_xaxes(**frame)
    fig.update_yaxes(**frame)
    fig.update_layout(template="plotly_white", margin=dict(l=10, r=10, t=50, b=10))


def frames_animation(frames: Sequence[np.ndarray], fps: float = 25.0, title: str = "episode",
                     every: int = 1):
    """A Plotly animation of the frames, with play/pause buttons and a slider over the time step
    (frames recorded every `every` steps)."""
    import plotly.graph_objects as go

    if not frames:
        raise ValueError("frames is empty: record at least one frame")
    uris = [png_data_uri(f) for f in frames]
    ms = 1000.0 / fps
    fig = go.Figure(data=[go.Image(source=uris[0])],
                    frames=[go.Frame(data=[go.Image(source=u)], name=str(k)) for k, u in enumerate(uris)])
    play = dict(frame=dict(duration=ms, redraw=True), fromcurrent=True, transition=dict(duration=0))
    stop = dict(frame=dict(duration=0, redraw=False), mode="immediate")
    jump = dict(mode="immediate", frame=dict(duration=0, redraw=True))
    fig.update_layout(
        title=title, height=int(frames[0].shape[0] * 1.25) + 120,
        updatemenus=[dict(type="buttons", direction="left", x=0.0, y=-0.02, xanchor="left", yanchor="top",
                          buttons=[dict(label="▶ play", method="animate", args=[None, play]),
                                   dict(label="❚❚ pause", method="animate", args=[[None], stop])])],
        sliders=[dict(active=0, x=0.2, len=0.8, y=-0.02, currentvalue=dict(prefix="t = "),
                      steps=[dict(label=str(k * every), method="animate", args=[[str(k)], jump])
                             for k in range(len(uris))])])
    _image_axes(fig)
    return fig


def frames_strip(frames: Sequence[np.ndarray], count: int = 6, title: str = "episode",
                 every: int = 1):
    """`count` frames evenly spaced through the episode, side by side (titled by time step, given
    that the frames were recorded every `every` steps)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not frames or count < 1:
        raise ValueError(f"{len(frames)} frames, count = {count}: need at least one of each")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    fig = make_subplots(1, len(picks), subplot_titles=[f"t = {k * every}" for k in picks],
                        horizontal_spacing=0.01)
    for i, k in enumerate(picks):
        fig.add_trace(go.Image(source=png_data_uri(frames[k])), 1, i + 1)
    fig.update_layout(title=title, height=int(260 * frames[0].shape[0] / frames[0].shape[1] * 6 / len(picks))
                      + 90)
    _image_axes(fig)
    return fig
