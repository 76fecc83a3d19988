"""Collecting batches from gymnasium environments, and observation normalisation.

Environments are stepped as a `gymnasium.vector.SyncVectorEnv` with *same-step* autoreset: when an
episode ends at step t, the env returns the first observation of the next episode and the real
final observation s_{t+1} in `info["final_obs"]`. The batch keeps that real s_{t+1} (`next_obs`), so
a time-limit truncation can bootstrap V(s_{t+1}) while a termination does not.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv
from torch import Tensor

from .fast import clip, mean_and_var
from .policies import Policy
from .settings import is_number


class EnvError(RuntimeError):
    """The environment could not be made, raised during a rollout, or returned non-finite data."""


class RunningMeanStd:
    """Running mean and variance of observations (Chan et al. parallel update), in float64."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, eps: float = 1e-8):
        if not is_number(clip, 0.0, lo_open=True):
            raise ValueError(f"clip = {clip!r} is not allowed: a finite number > 0 (observations are "
                             "clipped to ±clip after normalising)")
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4
        self.clip, self.eps = clip, eps
        self._std_of: np.ndarray | None = None  # the `var` array that `_std` was computed from
        self._std = np.ones(shape, np.float64)

    def update(self, x: np.ndarray) -> None:
        """Fold a batch x [n, *shape] into the statistics."""
        b_count = x.shape[0]
        b_mean, b_var = mean_and_var(x)  # x.mean(0), x.var(0) (`fast`: this runs every step)
        delta, total = b_mean - self.mean, self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var, self.count = m2 / total, total

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """clip((x − mean) / √(var + eps), ±clip)."""
        if self._std_of is not self.var:  # √(var + eps) once per update, not per call
            self._std, self._std_of = np.sqrt(self.var + self.eps), self.var
        z = (x - self.mean) / self._std
        return clip(z, -self.clip, self.clip, out=z)  # np.clip (`fast`: this runs every step)

    def state_dict(self) -> dict:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count,
                "clip": self.clip, "eps": self.eps}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var = np.array(state["mean"]), np.array(state["var"])
        self.count, self.clip, self.eps = state["count"], state["clip"], state["eps"]
        self._std_of = None


def check_env_id(env_id: str) -> None:
    """Raise `EnvError` unless `gymnasium.make(env_id)` can find the environment.

    Like `gymnasium.make`, an id 'module:EnvId' first imports `module` (which registers EnvId on
    import), so environments of one's own work without registering them in this process first."""
    module, sep, name = env_id.rpartition(":")
    if sep:
        if not module or ":" in module:
            raise EnvError(f"env_id = {env_id!r} is not allowed: an env id, or 'module:EnvId' with one "
                           "':' (the module registers EnvId when imported)")
        try:
            importlib.import_module(module)
        except Exception as e:
            raise EnvError(f"env_id = {env_id!r}: module {module!r} could not be imported ({e!r}); it must "
                           "be importable (on sys.path / PYTHONPATH) and register the environment") from e
    try:
        gym.spec(name)
    except gym.error.Error as e:
        where = f" (importing {module!r} did not register it)" if sep else ""
        raise EnvError(f"env_id = {env_id!r} is not a registered gymnasium environment{where} ({e})") from e


def make_vector_env(env: str | gym.Env | VectorEnv, num_envs: int = 1) -> VectorEnv:
    """A same-step-autoreset vector env from an env id (`num_envs` copies), one env, or a vector env."""
    if isinstance(env, VectorEnv):
        mode = env.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise EnvError(
                f"vector env autoreset_mode = {mode} is not supported: create it with "
                "vector_kwargs={'autoreset_mode': AutoresetMode.SAME_STEP} so that the real final "
                "observation of a truncated episode can be bootstrapped")
        return env
    if isinstance(env, gym.Env):
        return SyncVectorEnv([lambda: env], autoreset_mode=AutoresetMode.SAME_STEP)
    if not isinstance(env, str):
        raise EnvError(f"env = {env!r} is not allowed: an env id, a gymnasium.Env or a VectorEnv")
    check_env_id(env)
    return SyncVectorEnv([functools.partial(gym.make, env) for _ in range(num_envs)],
                         autoreset_mode=AutoresetMode.SAME_STEP)


@dataclass
class Batch:
    """One rollout, time-major [T, N, ...]; observations as the policy saw them (normalised if on)."""

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    next_obs: Tensor  # the real s_{t+1}, also at episode ends
    terminated: Tensor
    episode_ends: Tensor  # terminated or truncated
    episode_returns: list[float] = field(default_factory=list)  # episodes finished in this batch
    episode_lengths: list[int] = field(default_factory=list)

    @property
    def num_steps(self) -> int:
        return int(self.rewards.numel())


class Sampler:
    """Steps a vector env with a policy and hands out `Batch`es; keeps the state between batches
    (the current observations and the running episode returns) so episodes span iterations."""

    def __init__(self, envs: VectorEnv, normalizer: RunningMeanStd | None = None):
        self.envs, self.normalizer = envs, normalizer
        self.num_envs = envs.num_envs
        space = envs.single_action_space
        self.discrete = isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete))
        self.act_shape = tuple(space.shape)  # () for Discrete, (K,) for MultiDiscrete, (d,) for Box
        self.low = None if self.discrete else space.low
        self.high = None if self.discrete else space.high
        self.obs: np.ndarray | None = None
        self.ep_return = np.zeros(self.num_envs)
        self.ep_length = np.zeros(self.num_envs, np.int64)

    def reset(self, seed: int) -> None:
        obs, _ = self.envs.reset(seed=seed)
        self.obs = self._checked(obs, "observation", -1)
        self.ep_return[:] = 0.0
        self.ep_length[:] = 0

    def _checked(self, x: np.ndarray, what: str, t: int) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if not np.isfinite(x).all():
            env_id = self.envs.spec.id if self.envs.spec else type(self.envs).__name__
            raise EnvError(f"{env_id} returned a non-finite {what} at rollout step {t}: {x}")
        return x

    def _policy_input(self, obs: np.ndarray, update: bool) -> np.ndarray:
        if self.normalizer is None:
            return obs
        if update:
            self.normalizer.update(obs)
        return self.normalizer.normalize(obs)

    def collect(self, policy: Policy, steps_per_env: int, generator: torch.Generator,
                before_step: Callable[[int], object] | None = None) -> Batch:
        """Run `steps_per_env` steps in every env with actions sampled from `policy`.

        `before_step(t)` runs before step t (the vine saves env states there).
        One batched policy forward per step for all envs (`policy.sample`, no distribution object),
        under `torch.inference_mode`; the batch is written into preallocated numpy buffers and
        handed to torch once at the end.
        """
        if self.obs is None:
            raise EnvError("Sampler.collect called before reset(seed)")
        T, N = steps_per_env, self.num_envs
        obs_dim = self.obs.shape[1]
        obs_buf = np.empty((T, N, obs_dim), np.float32)
        next_buf = np.empty((T, N, obs_dim), np.float32)
        act_buf = np.empty((T, N, *self.act_shape), np.int64 if self.discrete else np.float32)
        rew = np.empty((T, N))
        term = np.empty((T, N), bool)
        ends = np.empty((T, N), bool)
        returns: list[float] = []
        lengths: list[int] = []
        obs_buf[0] = self._policy_input(self.obs, update=True)
        with torch.inference_mode():
            for t in range(T):
                if before_step is not None:
                    before_step(t)
                act_buf[t] = policy.sample(torch.from_numpy(obs_buf[t]), generator).numpy()
                # Box actions are clipped only on their way to the env
                env_action = act_buf[t] if self.discrete else clip(act_buf[t], self.low, self.high)
                try:
                    obs, reward, terminated, truncated, info = self.envs.step(env_action)
                except Exception as e:  # an env that raises must not leave a half-made batch behind
                    raise EnvError(f"the environment raised at rollout step {t}: {e!r}") from e
                obs = self._checked(obs, "observation", t)
                rew[t] = self._checked(reward, "reward", t)
                done = terminated | truncated
                term[t], ends[t] = terminated, done
                self.ep_return += rew[t]
                self.ep_length += 1
                real_next = obs
                if done.any():
                    real_next = obs.copy()
                    for i in np.flatnonzero(done):
                        real_next[i] = self._checked(info["final_obs"][i], "final observation", t)
                        returns.append(float(self.ep_return[i]))
                        lengths.append(int(self.ep_length[i]))
                        self.ep_return[i], self.ep_length[i] = 0.0, 0
                next_buf[t] = self._policy_input(real_next, update=False)
                self.obs = obs
                if t + 1 < T:  # the last obs is folded into the statistics by the next collect
                    obs_buf[t + 1] = self._policy_input(obs, update=True)
        with np.errstate(over="ignore"):
            rew32 = rew.astype(np.float32)
        if not np.isfinite(rew32).all():
            t, i = np.argwhere(~np.isfinite(rew32))[0]
            raise EnvError(f"reward {rew[t, i]:.3g} at rollout step {t} is too large for the batch's "
                           f"float32 (largest {np.finfo(np.float32).max:.3g}): scale the rewards down "
                           "(e.g. gymnasium.wrappers.TransformReward)")
        return Batch(torch.from_numpy(obs_buf), torch.from_numpy(act_buf),
                     torch.from_numpy(rew32), torch.from_numpy(next_buf),
                     torch.from_numpy(term), torch.from_numpy(ends), returns, lengths)

    def state_dict(self) -> dict:
        return {"obs": self.obs, "ep_return": self.ep_return.copy(),
                "ep_length": self.ep_length.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.obs = state["obs"]
        self.ep_return, self.ep_length = state["ep_return"].copy(), state["ep_length"].copy()


@torch.no_grad()
def run_episode(policy: Policy, env: gym.Env, seed: int, generator: torch.Generator,
                normalizer: RunningMeanStd | None = None, deterministic: bool = True,
                max_steps: int | None = None, before_step=None) -> tuple[float, int]:
    """Play one episode of `env` (reset with `seed`) with `policy`; returns (return, length).

    Actions are clipped to a Box's bounds only when sent to the env; `before_step(t)` is called
    before each step t (the dashboard renders frames there); `max_steps` cuts the episode short."""
    discrete = isinstance(env.action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete))
    dtype = next(policy.parameters()).dtype
    obs, _ = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    while not done and (max_steps is None or steps < max_steps):
        if before_step is not None:
            before_step(steps)
        x = np.asarray(obs, np.float64)[None]
        if normalizer is not None:
            x = normalizer.normalize(x)
        action = policy.sample(torch.as_tensor(x, dtype=dtype), generator, deterministic)[0].numpy()
        if not discrete:
            action = np.clip(action, env.action_space.low, env.action_space.high)
        obs, reward, terminated, truncated, _ = env.step(action)
        total, steps, done = total + float(reward), steps + 1, terminated or truncated
    return total, steps


def evaluate_policy(policy: Policy, env_id: str, episodes: int = 10, seed: int = 0,
                    normalizer: RunningMeanStd | None = None,
                    deterministic: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Run `episodes` full episodes (deterministic actions by default), episode k reset with
    seed + k; returns (returns, lengths)."""
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes = {episodes!r} is not allowed: must be an integer ≥ 1")
    env = make_vector_env(env_id, 1).envs[0]
    generator = torch.Generator().manual_seed(seed)
    try:
        results = [run_episode(policy, env, seed + k, generator, normalizer, deterministic)
                   for k in range(episodes)]
    finally:
        env.close()
    returns, lengths = zip(*results)
    return np.array(returns), np.array(lengths)
