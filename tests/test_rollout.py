"""Rollouts: spaces, truncation vs termination, faults from the environment, normalisation."""

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from toy_envs import registering_module_source

from trpo_lab import Trainer, TRPOConfig
from trpo_lab.policies import PolicySpec, SpaceError, build_policy
from trpo_lab.rollout import EnvError, RunningMeanStd, Sampler, make_vector_env


class Corridor(gym.Env):
    """obs = [position]; +1 per step; terminates at position `goal`, truncated by TimeLimit.
    Optional faults: a NaN observation or reward, or an exception, at step `fault_at`."""

    def __init__(self, goal=5, fault=None, fault_at=3):
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float64)
        self.action_space = spaces.Discrete(2)
        self.goal, self.fault, self.fault_at = goal, fault, fault_at
        self.t = self.pos = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = self.pos = 0
        return np.array([0.0]), {}

    def step(self, action):
        self.t += 1
        self.pos += 1
        obs, reward = np.array([float(self.pos)]), 1.0
        if self.fault and self.t == self.fault_at:
            if self.fault == "raise":
                raise RuntimeError("simulator exploded")
            if self.fault == "nan_obs":
                obs = np.array([np.nan])
            if self.fault == "inf_reward":
                reward = np.inf
        return obs, reward, self.pos >= self.goal, False, {}


def corridor(limit=100, **kw):
    return gym.wrappers.TimeLimit(Corridor(**kw), max_episode_steps=limit)


def test_termination_and_truncation_are_told_apart_and_the_real_final_obs_kept():
    envs = make_vector_env(corridor(limit=3, goal=100))
    sampler = Sampler(envs)
    sampler.reset(seed=0)
    policy = build_policy(PolicySpec("categorical", 1, 2))
    batch = sampler.collect(policy, 7, torch.Generator().manual_seed(0))
    ends = batch.episode_ends[:, 0].tolist()
    assert ends == [False, False, True, False, False, True, False]
    assert not batch.terminated.any()  # time-limit truncations only
    # the real s_{t+1} at a truncation is the final observation, not the reset one
    assert batch.next_obs[2, 0, 0] == 3.0 and batch.obs[3, 0, 0] == 0.0
    assert batch.episode_returns == [3.0, 3.0] and batch.episode_lengths == [3, 3]

    envs = make_vector_env(corridor(limit=100, goal=2))
    sampler = Sampler(envs)
    sampler.reset(seed=0)
    batch = sampler.collect(policy, 4, torch.Generator().manual_seed(0))
    assert batch.terminated[:, 0].tolist() == [False, True, False, True]
    assert batch.next_obs[1, 0, 0] == 2.0


@pytest.mark.parametrize("fault,message", [("raise", "raised at rollout step 2"),
                                           ("nan_obs", "non-finite observation at rollout step 2"),
                                           ("inf_reward", "non-finite reward at rollout step 2")])
def test_environment_faults_give_clear_errors_and_leave_the_policy_untouched(fault, message):
    config = TRPOConfig(env_id="unused", num_envs=1, batch_steps=8, total_steps=8)
    trainer = Trainer(config, env=corridor(fault=fault, goal=100))
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    with pytest.raises(EnvError, match=message):
        trainer.iterate()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    assert trainer.iteration == 0 and trainer.history == []


TOY_MODULE = registering_module_source("TrpoLabToy-v0")


@pytest.fixture
def toy_env_module(tmp_path, monkeypatch):
    """A module `trpo_lab_toy_env` on sys.path (not yet imported) that registers TrpoLabToy-v0 when
    imported; its env id in gymnasium's 'module:EnvId' form."""
    (tmp_path / "trpo_lab_toy_env.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "trpo_lab_toy_env:TrpoLabToy-v0"
    sys.modules.pop("trpo_lab_toy_env", None)
    gym.registry.pop("TrpoLabToy-v0", None)


def test_module_colon_env_ids_import_the_module_that_registers_the_env(toy_env_module):
    assert "trpo_lab_toy_env" not in sys.modules and "TrpoLabToy-v0" not in gym.registry
    trainer = Trainer(TRPOConfig(env_id=toy_env_module, num_envs=2, batch_steps=16, total_steps=16))
    record = trainer.iterate()
    assert record.steps == 16 and "TrpoLabToy-v0" in gym.registry
    returns, lengths = trainer.evaluate(2)
    assert list(lengths) == [8, 8]
    with pytest.raises(EnvError, match="module 'trpo_lab_no_such_module' could not be imported"):
        make_vector_env("trpo_lab_no_such_module:Toy-v0")
    with pytest.raises(EnvError, match="'trpo_lab_toy_env:Other-v0' is not a registered gymnasium "
                                       "environment \\(importing 'trpo_lab_toy_env' did not register it\\)"):
        make_vector_env("trpo_lab_toy_env:Other-v0")
    for bad in ("a:b:Toy-v0", ":Toy-v0"):
        with pytest.raises(EnvError, match="'module:EnvId' with one ':'"):
            make_vector_env(bad)


def test_unknown_env_ids_and_unsupported_spaces_are_named():
    with pytest.raises(EnvError, match="env_id = 'NoSuchEnv-v0' is not a registered"):
        Trainer(TRPOConfig(env_id="NoSuchEnv-v0"))

    class DictEnv(Corridor):
        def __init__(self):
            super().__init__()
            self.observation_space = spaces.Dict({"x": spaces.Box(0, 1, (1,))})

    with pytest.raises(SpaceError, match="observation_space = Dict"):
        Trainer(TRPOConfig(num_envs=1, batch_steps=8), env=DictEnv())

    class ImageEnv(Corridor):
        def __init__(self):
            super().__init__()
            self.observation_space = spaces.Box(0, 255, (8, 8, 3), np.uint8)

    with pytest.raises(SpaceError, match="image"):
        Trainer(TRPOConfig(num_envs=1, batch_steps=8), env=ImageEnv())

    class MultiBinaryEnv(Corridor):  # (1-D MultiDiscrete is supported: tests/test_multidiscrete.py)
        def __init__(self):
            super().__init__()
            self.action_space = spaces.MultiBinary(2)

    with pytest.raises(SpaceError, match="action_space = MultiBinary"):
        Trainer(TRPOConfig(num_envs=1, batch_steps=8), env=MultiBinaryEnv())

    class GridMultiDiscreteEnv(Corridor):
        def __init__(self):
            super().__init__()
            self.action_space = spaces.MultiDiscrete([[2, 2], [3, 3]])

    with pytest.raises(SpaceError, match="1-D MultiDiscrete"):
        Trainer(TRPOConfig(num_envs=1, batch_steps=8), env=GridMultiDiscreteEnv())


def test_a_next_step_autoreset_vector_env_is_refused_with_the_fix():
    envs = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    with pytest.raises(EnvError, match="SAME_STEP"):
        make_vector_env(envs)


def test_sampled_actions_follow_the_policy_distribution():
    torch.manual_seed(0)
    specs = (PolicySpec("gaussian", 3, 2, (8,), init_log_std=-0.5), PolicySpec("categorical", 3, 4, (8,)))
    for spec in specs:
        policy = build_policy(spec)
        obs = torch.randn(1, 3).expand(40_000, 3)
        actions = policy.sample(obs, torch.Generator().manual_seed(1))
        dist = policy.dist(obs[:1])
        if spec.kind == "gaussian":
            torch.testing.assert_close(actions.mean(0), dist.mean[0], atol=0.02, rtol=0)
            torch.testing.assert_close(actions.std(0), dist.stddev[0], atol=0.02, rtol=0)
            assert torch.equal(policy.sample(obs[:1], deterministic=True), dist.mean)
        else:
            freq = torch.bincount(actions, minlength=4).double() / len(actions)
            torch.testing.assert_close(freq, dist.probs[0].double(), atol=0.01, rtol=0)
            assert torch.equal(policy.sample(obs[:1], deterministic=True), dist.probs.argmax(-1))


def test_running_mean_std_matches_the_batch_statistics():
    data = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 2))
    rms = RunningMeanStd((2,))
    for chunk in np.split(data, 10):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-6)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-4)
    assert np.abs(rms.normalize(np.full((1, 2), 1e9))).max() == rms.clip
    for clip in (0.0, -1.0, np.nan, np.inf, "10"):
        with pytest.raises(ValueError, match=f"clip = {clip!r} is not allowed: a finite number > 0"):
            RunningMeanStd((2,), clip)


def test_observation_normalisation_belongs_to_the_agent():
    trainer = Trainer(TRPOConfig(env_id="Pendulum-v1", normalize_obs=True, num_envs=2, batch_steps=64,
                                 total_steps=64))
    trainer.iterate()
    assert trainer.normalizer is not None and trainer.normalizer.count > 64
    assert np.abs(trainer.last_problem.obs.mean(0).numpy()).max() < 1.5
