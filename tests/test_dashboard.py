"""Dashboard figures are pure functions of training histories; the live view updates in place; frames
are rendered with rgb_array and encoded without any imaging library."""

from __future__ import annotations

import base64
import math
import struct
import zlib

import numpy as np
import pytest
import torch

from trpo_lab import TRPOConfig, train
from trpo_lab.dashboard import (
    PANELS,
    LiveDashboard,
    frames_animation,
    frames_strip,
    history_columns,
    png_data_uri,
    record_frames,
    training_figure,
)
from trpo_lab.policies import PolicySpec, build_policy
from trpo_lab.rollout import evaluate_policy


def record(i: int, ret: float = float("nan"), kl: float = 0.005) -> dict:
    return dict(iteration=i, steps=512 * i, episodes=3, mean_return=ret, mean_length=ret, max_kl=0.01,
                kl=kl, surrogate_gain=0.01 * i, predicted_improvement=0.02 * i, backtracks=i % 3,
                accepted=True, entropy=0.69 - 0.01 * i, value_loss=10.0 / i, explained_variance=0.1 * i,
                sample_seconds=0.1, update_seconds=0.02, value_seconds=0.03)


def test_history_columns_from_dicts_and_records():
    cols = history_columns([record(1), record(2, 30.0)])
    assert cols["mean_return"] == [None, 30.0]  # NaN becomes a gap
    assert cols["steps"] == [512, 1024]
    assert cols["seconds"] == pytest.approx([0.15, 0.15])
    assert history_columns([])["mean_return"] == []
    trainer = train(TRPOConfig(total_steps=1024, num_envs=2, batch_steps=512, hidden_sizes=(8,),
                               vf_hidden_sizes=(8,)), progress=False)
    cols = history_columns(trainer.history)
    assert cols["iteration"] == [1, 2] and len(cols["kl"]) == 2


def test_training_figure_has_every_metric_for_every_run():
    runs = {"δ = 0.01": [record(i, 10.0 * i) for i in range(1, 5)], "δ = 0.03": [record(1, 5.0)]}
    fig = training_figure(runs, target_return=500)
    per_run = sum(len(p[3]) for p in PANELS)
    assert len(fig.data) == 2 * per_run
    metas = [t.meta for t in fig.data]
    assert {m["column"] for m in metas} >= {"mean_return", "kl", "max_kl", "surrogate_gain", "backtracks",
                                           "entropy", "value_loss", "explained_variance"}
    first = next(t for t in fig.data if t.meta == {"run": "δ = 0.01", "column": "mean_return"})
    assert list(first.y) == [10.0, 20.0, 30.0, 40.0] and list(first.x) == [512, 1024, 1536, 2048]
    assert [t.showlegend for t in fig.data].count(True) == 2  # one legend entry per run
    assert fig.layout.yaxis6.type == "log"  # value loss
    assert any(s.y0 == 500 for s in fig.layout.shapes)
    # pure: the same input gives the same figure, and the input is not modified
    assert training_figure(runs, target_return=500).to_json() == fig.to_json()
    assert len(runs["δ = 0.03"]) == 1


def test_live_dashboard_updates_traces_in_place_in_one_batch():
    dash = LiveDashboard(["a", "b"])
    trace_ids = [id(t) for t in dash.figure.data]
    batches = []
    original = dash.figure.batch_update

    def counting():
        batches.append(1)
        return original()

    dash.figure.batch_update = counting
    on_a = dash.callback("a")
    for i in range(1, 4):
        assert on_a(record(i, 20.0 * i)) is False
    assert len(batches) == 3
    assert [id(t) for t in dash.figure.data] == trace_ids  # same traces, new data
    ret_a = next(t for t in dash.figure.data if t.meta == {"run": "a", "column": "mean_return"})
    ret_b = next(t for t in dash.figure.data if t.meta == {"run": "b", "column": "mean_return"})
    assert list(ret_a.y) == [20.0, 40.0, 60.0] and not ret_b.y
    kl_a = next(t for t in dash.figure.data if t.meta == {"run": "a", "column": "kl"})
    assert list(kl_a.y) == [0.005] * 3
    assert len(dash.runs["a"]) == 3


def test_live_dashboard_stops_training_at_a_target_and_validates():
    dash = LiveDashboard(["run"])
    stop = dash.callback("run", stop_at_return=50.0)
    assert stop(record(1)) is False  # NaN return: no episode finished yet
    assert stop(record(2, 49.0)) is False
    assert stop(record(3, 50.0)) is True
    with pytest.raises(KeyError, match="'other' is not on this dashboard"):
        dash.update("other", record(1))
    with pytest.raises(ValueError, match="one distinct label per run"):
        LiveDashboard(["x", "x"])


def test_live_dashboard_follows_a_real_training_run():
    dash = LiveDashboard(["cartpole"])
    config = TRPOConfig(total_steps=1536, num_envs=2, batch_steps=512, hidden_sizes=(8,),
                        vf_hidden_sizes=(8,))
    trainer = train(config, callback=dash.callback("cartpole"), progress=False)
    ent = next(t for t in dash.figure.data if t.meta["column"] == "entropy")
    assert list(ent.y) == pytest.approx([r.entropy for r in trainer.history])
    assert list(ent.x) == [512, 1024, 1536]


def _decode_png(uri: str) -> np.ndarray:
    data = base64.b64decode(uri.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = size
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(h, w, 3)


def test_png_data_uri_round_trips():
    frame = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_decode_png(png_data_uri(frame)), frame)
    with pytest.raises(ValueError, match="expected \\[H, W, 3\\] uint8"):
        png_data_uri(frame.astype(np.float32))


def test_record_frames_matches_evaluation_and_builds_figures():
    torch.manual_seed(0)
    policy = build_policy(PolicySpec("categorical", 4, 2, (8,)))
    episode = record_frames(policy, "CartPole-v1", seed=3, every=2, downsample=4)
    returns, lengths = evaluate_policy(policy, "CartPole-v1", episodes=1, seed=3)
    assert episode.episode_return == returns[0] and episode.length == lengths[0]
    assert len(episode.frames) == math.ceil(episode.length / 2) + 1
    assert episode.frames[0].shape == (100, 150, 3) and episode.frames[0].dtype == np.uint8
    anim = frames_animation(episode.frames, fps=20, every=2)
    assert len(anim.frames) == len(episode.frames)
    assert [s.label for s in anim.layout.sliders[0].steps[:3]] == ["0", "2", "4"]
    assert anim.data[0].source.startswith("data:image/png;base64,")
    assert anim.layout.updatemenus[0].buttons[0].args[1]["frame"]["duration"] == 50
    strip = frames_strip(episode.frames, count=4, every=2)
    assert len(strip.data) == 4
    assert strip.layout.annotations[0].text == "t = 0"
    assert record_frames(policy, seed=3, max_steps=5).length == 5
    with pytest.raises(ValueError, match="frames is empty"):
        frames_animation([])
    with pytest.raises(ValueError, match="every = 0"):
        record_frames(policy, every=0)


def test_downsampling_keeps_thin_lines():
    from trpo_lab.dashboard import _shrink

    frame = np.full((6, 8, 3), 255, np.uint8)
    frame[3] = 0  # a one-pixel line, like CartPole's track
    small = _shrink(frame, 2)
    assert small.shape == (3, 4, 3)
    assert (small[1] == 128).all() and (small[0] == 255).all()  # striding would have dropped it
