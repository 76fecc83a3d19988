"""Saving and restoring a gymnasium environment's state exactly, so that the vine (§5.2) can branch.

    s = save_state(env);  … env moves on …;  restore_state(other_env, s)   ⇒ other_env continues
    from s bitwise: the same actions give the same observations and rewards.

Two kinds of environments can be branched:
- classic control (CartPole, Acrobot, MountainCar, Pendulum): the simulator state is the array
  `env.unwrapped.state` (plus CartPole's `steps_beyond_terminated`);
- MuJoCo (`gymnasium.envs.mujoco.MujocoEnv`): the full integration state that `mujoco.mj_getState`
  returns for `mjSTATE_INTEGRATION` — time, qpos, qvel, act, the warm-start accelerations, ctrl,
  mocap and user data — not only qpos/qvel: the solver's warm start changes the next step in the
  last bits.

Both also carry the `TimeLimit` step counter and the env's random generator state, so a restored
env truncates and samples like the one it was saved from. Any other env raises `EnvStateError`
naming it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from .rollout import EnvError

CLASSIC_ATTRIBUTES = ("state", "steps_beyond_terminated")
"""The attributes of a classic-control env that hold its state (those present are saved)."""


class EnvStateError(EnvError):
    """The environment's state cannot be saved and restored (so the vine cannot branch from it)."""


@dataclass(frozen=True)
class EnvState:
    """A snapshot of one environment: `kind` is 'classic' or 'mujoco'."""

    env_id: str
    kind: str
    data: dict[str, Any]
    elapsed_steps: int | None  # the TimeLimit wrapper's counter (None: no TimeLimit)
    rng_state: dict | None  # env.unwrapped.np_random's bit-generator state


def env_name(env: gym.Env) -> str:
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else type(env.unwrapped).__name__


def state_kind(env: gym.Env) -> str:
    """'mujoco' or 'classic' for an env whose state can be restored; `EnvStateError` otherwise."""
    inner = env.unwrapped
    if hasattr(inner, "model") and hasattr(inner, "data") and type(inner.data).__name__ == "MjData":
        return "mujoco"
    if type(inner).__module__.startswith("gymnasium.envs.classic_control") or getattr(
            inner, "vine_restorable", False):
        return "classic"
    raise EnvStateError(
        f"{env_name(env)} ({type(inner).__name__}) cannot be branched: the vine needs an env whose "
        "state can be saved and restored exactly — gymnasium classic control or a "
        "MuJoCo env — or one that sets `vine_restorable = True` and keeps its state in `.state`")


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def save_state(env: gym.Env) -> EnvState:
    """A deep copy of everything `restore_state` needs to continue `env` from here exactly."""
    kind = state_kind(env)
    inner = env.unwrapped
    if kind == "mujoco":
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        buf = np.empty(mujoco.mj_stateSize(inner.model, spec))
        mujoco.mj_getState(inner.model, inner.data, buf, spec)
        data = {"integration": buf}
    else:
        data = {a: copy.deepcopy(getattr(inner, a)) for a in CLASSIC_ATTRIBUTES if hasattr(inner, a)}
    limit = _time_limit(env)
    rng = getattr(inner, "_np_random", None)
    return EnvState(env_name(env), kind, data,
                    None if limit is None else int(limit._elapsed_steps),
                    None if rng is None else copy.deepcopy(rng.bit_generator.state))


def restore_state(env: gym.Env, state: EnvState) -> None:
    """Put `env` (the one saved, or another instance of the same env id, already reset) in `state`."""
    kind = state_kind(env)
    if kind != state.kind or env_name(env) != state.env_id:
        raise EnvStateError(f"a {state.kind} state of {state.env_id} cannot be restored into "
                            f"{env_name(env)} ({kind})")
    inner = env.unwrapped
    if kind == "mujoco":
        import mujoco

        mujoco.mj_setState(inner.model, inner.data, state.data["integration"],
                           mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(inner.model, inner.data)  # derived quantities (positions of bodies…)
    else:
        for name, value in state.data.items():
            setattr(inner, name, copy.deepcopy(value))
    limit = _time_limit(env)
    if limit is not None and state.elapsed_steps is not None:
        limit._elapsed_steps = state.elapsed_steps
    if state.rng_state is not None and getattr(inner, "_np_random", None) is not None:
        inner._np_random.bit_generator.state = copy.deepcopy(state.rng_state)
