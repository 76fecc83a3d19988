"""Checkpoints: everything a `Trainer` needs to continue exactly where it stopped.

Saved: config, policy, value net, value optimiser, observation normaliser, RNG state, the sampler's
current observations and running episode returns, the environments themselves (pickled, with
MuJoCo simulator state restored explicitly), counters and history. Files are written atomically
(temporary file + `os.replace`), so a crash mid-write never damages an existing checkpoint.
Checkpoints are pickles (the environments are saved whole): load only files you trust.
"""

from __future__ import annotations

import os
import pickle
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from .config import TRPOConfig
from .policies import Policy, PolicySpec, build_policy
from .rollout import RunningMeanStd
from .train import IterationRecord, Trainer

FORMAT, VERSION = "trpo_lab.checkpoint", 1


class CheckpointError(RuntimeError):
    """A file that is not a trpo_lab checkpoint, is damaged, or is of an unknown version."""


def _mujoco_state(env) -> dict | None:
    base = env.unwrapped
    if not hasattr(base, "data") or not hasattr(base, "set_state"):
        return None
    return {"qpos": base.data.qpos.copy(), "qvel": base.data.qvel.copy(),
            "time": float(base.data.time), "rng": base.np_random.bit_generator.state}


def _restore_mujoco(env, state: dict | None) -> None:
    if state is None:
        return
    base = env.unwrapped
    base.set_state(state["qpos"], state["qvel"])
    base.data.time = state["time"]
    base.np_random.bit_generator.state = state["rng"]


def _env_state(trainer: Trainer) -> bytes | None:
    envs = trainer.envs.envs if isinstance(trainer.envs, SyncVectorEnv) else None
    if envs is None:
        return None
    try:
        return pickle.dumps({"envs": envs, "mujoco": [_mujoco_state(e) for e in envs]})
    except Exception:  # an env that cannot be pickled: resume restarts its episodes
        return None


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over `path`.
    The file gets the permissions of any new file (0666 less the umask), not mkstemp's private 0600,
    so a run folder shared with a group reads like one written by plain `open`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(trainer: Trainer, path: str | os.PathLike) -> None:
    """Write `trainer`'s whole state to `path` atomically."""
    state = {
        "format": FORMAT, "version": VERSION,
        "config": trainer.config.to_dict(), "spec": trainer.spec.to_dict(),
        "policy": trainer.policy.state_dict(), "value": trainer.value.state_dict(),
        "value_optimizer": trainer.value_optimizer.state_dict(),
        "normalizer": trainer.normalizer.state_dict() if trainer.normalizer else None,
        "generator": trainer.generator.get_state(),
        "sampler": trainer.sampler.state_dict(), "envs": _env_state(trainer),
        "iteration": trainer.iteration, "steps": trainer.steps,
        "last_sim_steps": trainer.last_sim_steps,
        "recent_returns": list(trainer.recent_returns),
        "recent_lengths": list(trainer.recent_lengths),
        "history": [r.as_dict() for r in trainer.history],
    }
    atomic_write(path, lambda f: torch.save(state, f))


class CheckpointCallback:
    """A `train(callback=...)` that writes a checkpoint of the trainer to `path` (atomically) every
    `every` iterations, once the step budget is spent, and when training stops early: `then(record,
    trainer)` runs first, and its return value (True stops training) is passed on. `saved_iteration`
    is the iteration of the last checkpoint it wrote (None before the first; a caller resuming from a
    checkpoint may set it)."""

    def __init__(self, path: str | os.PathLike, every: int = 10,
                 then: Callable[[IterationRecord, Trainer], object] | None = None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint every = {every!r} is not allowed: must be an integer ≥ 1")
        self.path, self.every, self.then = path, every, then
        self.saved_iteration: int | None = None

    def __call__(self, record: IterationRecord, trainer: Trainer) -> object:
        stop = self.then(record, trainer) if self.then is not None else None
        if stop is True or trainer.iteration % self.every == 0 or trainer.done:
            save_checkpoint(trainer, self.path)
            self.saved_iteration = trainer.iteration
        return stop


def checkpoint_callback(path: str | os.PathLike, every: int = 10,
                        then: Callable[[IterationRecord, Trainer], object] | None = None
                        ) -> CheckpointCallback:
    """A `CheckpointCallback(path, every, then)`: checkpoints every `every` iterations, at the end of
    the budget and when `then` stops training."""
    return CheckpointCallback(path, every, then)


def read_versioned(path: str | os.PathLike, fmt: str, version: int, what: str,
                   error: type[Exception], weights_only: bool) -> dict:
    """Load a torch file that trpo_lab wrote with a {"format": fmt, "version": version} header.
    A missing, damaged or foreign file, or another version, raises `error` naming file and fault."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:
        raise error(f"{str(path)!r} is not a readable trpo_lab {what} "
                    f"(damaged or of another format): {e}") from e
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise error(f"{str(path)!r} is not a trpo_lab {what} (no '{fmt}' header)")
    if state.get("version") != version:
        raise error(f"{str(path)!r} has {what} version {state.get('version')!r}; "
                    f"this trpo_lab reads version {version}")
    return state


KEYS = ("config", "spec", "policy", "value", "value_optimizer", "normalizer", "generator", "sampler",
        "envs", "iteration", "steps", "recent_returns", "recent_lengths", "history")
"""What `save_checkpoint` writes (besides the header and the optional `last_sim_steps`)."""


def _read(path: str | os.PathLike) -> tuple[dict, Path]:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    # weights_only=False: the environments are pickled whole
    state = read_versioned(path, FORMAT, VERSION, "checkpoint", CheckpointError, weights_only=False)
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{str(path)!r} is a damaged trpo_lab checkpoint: it has no {missing[0]!r} "
                              f"entry (missing: {missing})")
    return state, path


def _damaged(path: Path, e: Exception) -> CheckpointError:
    return CheckpointError(f"{str(path)!r} is a damaged trpo_lab checkpoint: {type(e).__name__}: {e}")


def load_agent(path: str | os.PathLike) -> tuple[Policy, RunningMeanStd | None, TRPOConfig]:
    """The policy, observation normaliser and config of a checkpoint (no environments made)."""
    state, path = _read(path)
    try:
        policy = build_policy(PolicySpec.from_dict(state["spec"]))
        policy.load_state_dict(state["policy"])
        normalizer = None
        if state["normalizer"] is not None:
            normalizer = RunningMeanStd((policy.spec.obs_dim,))
            normalizer.load_state_dict(state["normalizer"])
        return policy, normalizer, TRPOConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _damaged(path, e) from e


def load_checkpoint(path: str | os.PathLike, total_steps: int | None = None) -> Trainer:
    """A `Trainer` that continues the saved run exactly (optionally with a new step budget)."""
    state, path = _read(path)
    try:
        config = TRPOConfig.from_dict(state["config"])
    except (TypeError, ValueError) as e:
        raise _damaged(path, e) from e
    if total_steps is not None:
        config = config.replace(total_steps=total_steps)
    trainer = Trainer(config)
    trainer.policy.load_state_dict(state["policy"])
    trainer.value.load_state_dict(state["value"])
    trainer.value_optimizer.load_state_dict(state["value_optimizer"])
    if trainer.normalizer is not None:
        trainer.normalizer.load_state_dict(state["normalizer"])
    trainer.generator.set_state(state["generator"])
    if state["envs"] is not None:
        saved = pickle.loads(state["envs"])
        for env, mujoco in zip(saved["envs"], saved["mujoco"]):
            _restore_mujoco(env, mujoco)
        trainer.envs.close()
        trainer.envs = SyncVectorEnv([lambda e=e: e for e in saved["envs"]],
                                     autoreset_mode=AutoresetMode.SAME_STEP)
        trainer.sampler.envs = trainer.envs
        trainer.sampler.load_state_dict(state["sampler"])
    else:
        warnings.warn("the checkpoint holds no environment state (the env could not be pickled): "
                      "episodes restart from a reset, so the resumed run is not bit-identical",
                      stacklevel=2)
    trainer.iteration, trainer.steps = state["iteration"], state["steps"]
    trainer.last_sim_steps = state.get("last_sim_steps", 0)  # the vine's batch size, for `done`
    trainer.recent_returns.extend(state["recent_returns"])
    trainer.recent_lengths.extend(state["recent_lengths"])
    trainer.history = [IterationRecord(**r) for r in state["history"]]
    return trainer
