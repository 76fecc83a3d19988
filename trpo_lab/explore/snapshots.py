"""Snapshots: one TRPO update problem frozen to a small file.

A `Snapshot` holds what `trpo_step` needs, exactly as training froze it: the policy's architecture
(`PolicySpec`), θ_old, the batch (observations, actions, advantages as the step used them), π_old's
distribution parameters and log-probabilities, and the Fisher subsample. `Snapshot.problem()` turns
it back into the `UpdateProblem`; saving and loading round-trip every tensor bitwise.

`make_snapshot("CartPole-v1")` makes one in seconds from a short seeded training run, so notebooks
and tests make their own (nothing is downloaded).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils import vector_to_parameters

from ..config import PRESETS, TRPOConfig
from ..policies import PolicySpec, build_policy
from ..trust_region import UpdateProblem

FORMAT, VERSION = "trpo_lab.snapshot", 1
TENSORS = ("theta_old", "obs", "actions", "advantages", "old_log_prob")


class SnapshotError(ValueError):
    """A snapshot file that is missing, damaged, of another format or version, or inconsistent."""


@dataclass(frozen=True, eq=False)
class Snapshot:
    """A frozen `UpdateProblem` (θ_old + its batch) with a name and where it came from (`meta`)."""

    name: str
    spec: PolicySpec
    theta_old: Tensor  # [P]
    obs: Tensor  # [B, obs_dim]
    actions: Tensor  # [B] or [B, act_dim]
    advantages: Tensor  # [B], as the step used them (normalised if the run normalises)
    old_params: tuple[Tensor, ...]  # π_old's distribution parameters at obs
    old_log_prob: Tensor  # [B]
    fvp_rows: Tensor | None = None  # Fisher-vector-product subsample (None: every row)
    meta: dict[str, Any] = field(default_factory=dict)
    _problem: list = field(default_factory=list, repr=False)  # the rebuilt problem, made once

    @property
    def batch_size(self) -> int:
        return int(self.obs.shape[0])

    @property
    def num_params(self) -> int:
        return int(self.theta_old.numel())

    @classmethod
    def from_problem(cls, problem: UpdateProblem, name: str = "snapshot",
                     meta: dict[str, Any] | None = None) -> Snapshot:
        """Freeze `problem` (tensors are copied, so later training cannot change the snapshot)."""
        rows = None if problem.fvp_rows is None else problem.fvp_rows.detach().clone()
        return cls(name, problem.policy.spec, problem.theta_old.detach().clone(),
                   problem.obs.detach().clone(), problem.actions.detach().clone(),
                   problem.advantages.detach().clone(),
                   tuple(p.detach().clone() for p in problem.old_params),
                   problem.old_log_prob.detach().clone(), rows, dict(meta or {}))

    def problem(self) -> UpdateProblem:
        """The `UpdateProblem` (built once per snapshot, then reused so `StepCache`s stay valid)."""
        if not self._problem:
            with torch.random.fork_rng(devices=[]):  # building a policy must not consume the RNG
                policy = build_policy(self.spec).to(self.theta_old.dtype)
            with torch.no_grad():
                vector_to_parameters(self.theta_old, policy.parameters())
            self._problem.append(UpdateProblem(policy, self.theta_old, self.obs, self.actions,
                                               self.advantages, self.old_params, self.old_log_prob,
                                               self.fvp_rows))
        return self._problem[0]

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"format": FORMAT, "version": VERSION, "name": self.name,
                                 "spec": self.spec.to_dict(), "meta": self.meta,
                                 "old_params": list(self.old_params), "fvp_rows": self.fvp_rows}
        state.update({k: getattr(self, k) for k in TENSORS})
        return state

    def save(self, path: str | os.PathLike) -> Path:
        """Write the snapshot to `path` atomically (a `torch.save` file of tensors and plain data)."""
        from ..checkpoint import atomic_write

        atomic_write(path, lambda f: torch.save(self.to_state(), f))
        return Path(path)


def load_snapshot(path: str | os.PathLike) -> Snapshot:
    """Read a snapshot written by `Snapshot.save` (safe: `torch.load(weights_only=True)`)."""
    from ..checkpoint import read_versioned

    state = read_versioned(path, FORMAT, VERSION, "snapshot", SnapshotError, weights_only=True)
    snap = Snapshot(state["name"], PolicySpec.from_dict(state["spec"]),
                    *(state[k] for k in TENSORS[:4]), tuple(state["old_params"]),
                    state["old_log_prob"], state["fvp_rows"], state["meta"])
    check_snapshot(snap)
    return snap


def check_snapshot(snap: Snapshot) -> None:
    """Raise `SnapshotError` if the tensors do not fit together (e.g. a hand-edited file)."""
    n = snap.batch_size
    with torch.random.fork_rng(devices=[]):
        expected = sum(p.numel() for p in build_policy(snap.spec).parameters())
    if snap.theta_old.ndim != 1 or snap.num_params != expected:
        raise SnapshotError(f"snapshot {snap.name!r}: theta_old has shape {tuple(snap.theta_old.shape)}; "
                            f"the policy spec needs ({expected},)")
    for name in ("actions", "advantages", "old_log_prob"):
        if getattr(snap, name).shape[0] != n:
            raise SnapshotError(f"snapshot {snap.name!r}: {name} has {getattr(snap, name).shape[0]} "
                                f"rows; obs has {n}")


def snapshot_config(env_id: str, seed: int = 0, **overrides: Any) -> TRPOConfig:
    """The config of the run `make_snapshot` trains: the env's preset (if any), one torch thread."""
    overrides = {"seed": seed, "torch_threads": 1, **overrides}
    if env_id in PRESETS:
        return TRPOConfig.from_preset(env_id, **overrides)
    return TRPOConfig(env_id=env_id).replace(**overrides)


def capture_snapshot(trainer, name: str | None = None) -> Snapshot:
    """The update problem `trainer` solved in its last iteration, frozen, with what training did."""
    if trainer.last_problem is None:
        raise SnapshotError("the trainer has no update problem yet: call trainer.iterate() first")
    config: TRPOConfig = trainer.config
    report = trainer.last_report
    meta = {"env_id": config.env_id, "seed": config.seed, "iteration": trainer.iteration,
            "steps": trainer.steps, "config": config.to_dict(),
            "training_step": report.summary() if report is not None else None}
    name = name or f"{config.env_id} · seed {config.seed} · iteration {trainer.iteration}"
    return Snapshot.from_problem(trainer.last_problem, name, meta)


def snapshot_callback(iterations: set[int] | list[int], into: dict[int, Snapshot]
                      ) -> Callable[[Any, Any], None]:
    """A `train(..., callback=)` that captures the update problem of the given iterations."""
    wanted = set(iterations)

    def callback(record, trainer) -> None:
        if record.iteration in wanted:
            into[record.iteration] = capture_snapshot(trainer)

    return callback


def make_snapshot(env_id: str = "CartPole-v1", *, iteration: int = 1, seed: int = 0,
                  name: str | None = None, **overrides: Any) -> Snapshot:
    """Train `iteration` TRPO iterations of a seeded run and freeze the last one's update problem.

    `overrides` are `TRPOConfig` fields (e.g. `batch_steps=2048`, `hidden_sizes=(16,)`). Same
    arguments, same snapshot (bitwise): one seed drives envs, network and sampling.
    """
    from ..train import Trainer

    if not (isinstance(iteration, int) and iteration >= 1):
        raise ValueError(f"make_snapshot: iteration = {iteration!r} is not allowed: must be an "
                         "integer ≥ 1 (the update problem of that training iteration)")
    config = snapshot_config(env_id, seed, **overrides)
    threads = torch.get_num_threads()
    trainer = Trainer(config)
    try:
        for _ in range(iteration):
            trainer.iterate()
        return capture_snapshot(trainer, name)
    finally:
        trainer.envs.close()
        torch.set_num_threads(threads)
