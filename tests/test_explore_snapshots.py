"""Snapshots: made from short seeded runs, captured at any iteration, saved and loaded bitwise."""

from __future__ import annotations

import pytest
import torch

from trpo_lab import Trainer, TRPOConfig, train, trpo_step
from trpo_lab.explore import (
    Snapshot,
    SnapshotError,
    capture_snapshot,
    load_snapshot,
    make_snapshot,
    snapshot_callback,
)

SMALL = dict(hidden_sizes=(16, 16), batch_steps=512)


FIELDS = ("theta_old", "obs", "actions", "advantages", "old_log_prob", "fvp_rows")


def bits(x: torch.Tensor | None) -> tuple | None:
    return None if x is None else (x.dtype, tuple(x.shape), x.contiguous().numpy().tobytes())


def assert_same_snapshot(a: Snapshot, b: Snapshot, meta: bool = True) -> None:
    for name in FIELDS:
        assert bits(getattr(a, name)) == bits(getattr(b, name)), name
    assert [bits(p) for p in a.old_params] == [bits(p) for p in b.old_params]
    assert a.spec == b.spec and a.name == b.name
    if meta:
        assert a.meta == b.meta


@pytest.fixture(scope="module", params=["CartPole-v1", "Pendulum-v1"])
def snap(request) -> Snapshot:
    return make_snapshot(request.param, **SMALL)


def test_make_snapshot_is_deterministic(snap):
    again = make_snapshot(snap.meta["env_id"], **SMALL)
    assert_same_snapshot(snap, again)


def test_snapshot_kinds_and_sizes(snap):
    kind = "categorical" if snap.meta["env_id"] == "CartPole-v1" else "gaussian"
    assert snap.spec.kind == kind
    assert snap.batch_size == 512 and snap.spec.hidden_sizes == (16, 16)
    assert snap.num_params == sum(p.numel() for p in snap.problem().policy.parameters())


def test_save_load_round_trips_bitwise(snap, tmp_path):
    path = snap.save(tmp_path / "snap.pt")
    loaded = load_snapshot(path)
    assert_same_snapshot(snap, loaded)
    assert path.stat().st_size < 200_000  # "a small file": 512 samples of a 16×16 policy
    # the loaded problem gives the very same step, bit for bit
    a, b = trpo_step(snap.problem(), max_kl=0.01, damping=0.1), trpo_step(loaded.problem(), max_kl=0.01,
                                                                                   damping=0.1)
    assert bits(a.theta_new) == bits(b.theta_new) and a.summary() == b.summary()


def test_snapshot_replays_the_step_training_took(snap):
    c = snap.meta["config"]
    report = trpo_step(snap.problem(), max_kl=c["max_kl"], damping=c["damping"], cg_iters=c["cg_iters"],
                       cg_tol=c["cg_tol"], backtrack_coef=c["backtrack_coef"],
                       backtrack_iters=c["backtrack_iters"])
    assert report.summary() == snap.meta["training_step"]


def test_capture_at_any_iteration_matches_make_snapshot():
    config = TRPOConfig.from_preset("CartPole-v1", total_steps=3 * 512, torch_threads=1, **SMALL)
    captured: dict[int, Snapshot] = {}
    train(config, callback=snapshot_callback({2, 3}, captured), progress=False)
    assert sorted(captured) == [2, 3]
    made = make_snapshot("CartPole-v1", iteration=2, **SMALL)
    assert_same_snapshot(captured[2], made, meta=False)  # the run's total_steps differ
    assert captured[2].meta["training_step"] == made.meta["training_step"]
    assert captured[2].meta["iteration"] == 2 and captured[3].meta["iteration"] == 3
    assert not torch.equal(captured[2].theta_old, captured[3].theta_old)


def test_snapshot_is_a_copy_that_training_cannot_change():
    trainer = Trainer(TRPOConfig.from_preset("CartPole-v1", torch_threads=1, **SMALL))
    trainer.iterate()
    snap = capture_snapshot(trainer)
    before = bits(snap.theta_old)
    trainer.iterate()
    assert bits(snap.theta_old) == before
    trainer.envs.close()


def test_problem_does_not_consume_the_global_rng(snap):
    fresh = Snapshot.from_problem(snap.problem(), "copy")
    state = torch.get_rng_state()
    fresh.problem()
    assert torch.equal(state, torch.get_rng_state())


def test_load_errors(tmp_path, snap):
    with pytest.raises(SnapshotError, match="does not exist"):
        load_snapshot(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a snapshot")
    with pytest.raises(SnapshotError, match="not a readable"):
        load_snapshot(tmp_path / "junk.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(SnapshotError, match="no 'trpo_lab.snapshot' header"):
        load_snapshot(tmp_path / "other.pt")
    state = snap.to_state() | {"version": 99}
    torch.save(state, tmp_path / "future.pt")
    with pytest.raises(SnapshotError, match="version 99"):
        load_snapshot(tmp_path / "future.pt")
    state = snap.to_state() | {"theta_old": snap.theta_old[:-1]}
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(SnapshotError, match="theta_old has shape"):
        load_snapshot(tmp_path / "cut.pt")


def test_make_and_capture_validation():
    with pytest.raises(ValueError, match="iteration = 0 is not allowed"):
        make_snapshot("CartPole-v1", iteration=0)
    trainer = Trainer(TRPOConfig.from_preset("CartPole-v1", torch_threads=1, **SMALL))
    with pytest.raises(SnapshotError, match="no update problem yet"):
        capture_snapshot(trainer)
    trainer.envs.close()
