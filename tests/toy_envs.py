"""Tiny gymnasium environments made for tests: a constant reward of any size, and MultiDiscrete actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ConstantRewardEnv(gym.Env):
    """Observations ~ 𝒩(0, 1)³, two actions, reward `reward` every step, episodes of `length` steps
    (terminated). length = 1 gives one-step episodes."""

    def __init__(self, reward: float = 1.0, length: int = 10):
        self.observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.reward, self.length, self.t = reward, length, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.standard_normal(3).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.standard_normal(3).astype(np.float32)
        return obs, self.reward, self.t >= self.length, False, {}


class MatchTargetsEnv(gym.Env):
    """MultiDiscrete([3, 4, 2]) actions: the observation shows a target per component (one-hot,
    concatenated); the reward is the number of components whose action hits its target. Episodes
    last `length` steps (truncated). A random policy scores 0.33 + 0.25 + 0.5 ≈ 1.08 per step; a
    perfect one 3."""

    nvec = (3, 4, 2)

    def __init__(self, length: int = 20):
        self.observation_space = spaces.Box(0.0, 1.0, (sum(self.nvec),), np.float32)
        self.action_space = spaces.MultiDiscrete(list(self.nvec))
        self.length, self.t = length, 0
        self.targets = np.zeros(len(self.nvec), np.int64)

    def _obs(self) -> np.ndarray:
        obs = np.zeros(sum(self.nvec), np.float32)
        offsets = np.cumsum((0,) + self.nvec[:-1])
        obs[offsets + self.targets] = 1.0
        return obs

    def _draw(self) -> None:
        self.targets = np.array([self.np_random.integers(n) for n in self.nvec])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self._draw()
        return self._obs(), {}

    def step(self, action):
        action = np.asarray(action)
        assert action.shape == (len(self.nvec),) and self.action_space.contains(action), action
        reward = float((action == self.targets).sum())
        self.t += 1
        self._draw()
        return self._obs(), reward, False, self.t >= self.length, {}


MATCH_TARGETS_ID = "trpo_lab_test/MatchTargets-v0"
if MATCH_TARGETS_ID not in gym.registry:
    gym.register(MATCH_TARGETS_ID, entry_point=MatchTargetsEnv)


_REGISTERING_MODULE = """
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Toy(gym.Env):
    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), float(action), False, self.t >= 8, {}


gym.register("{env_id}", entry_point=Toy)
"""


def registering_module_source(env_id: str) -> str:
    """The source of a module that registers `env_id` when imported (a toy env: 2-D observations, two
    actions, reward = the action, 8-step episodes), for gymnasium's 'module:EnvId' ids."""
    return _REGISTERING_MODULE.replace("{env_id}", env_id)
