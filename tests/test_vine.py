"""The vine (§5.2): exact env-state restore, common random numbers, Q̂ against Monte-Carlo returns,
and the paper's per-state estimators as update-problem rows."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from trpo_lab.config import ConfigError, TRPOConfig
from trpo_lab.envstate import EnvStateError, restore_state, save_state
from trpo_lab.policies import PolicySpec, build_policy
from trpo_lab.problem import make_update_problem, surrogate
from trpo_lab.rollout import Sampler, make_vector_env
from trpo_lab.vine import VineSampler, VineSettings, act_with_noise, shared_noise


def _replay(env, actions):
    """The steps `actions` give, up to the end of the episode (stepping past it is undefined)."""
    out = []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        out.append((np.array(obs, copy=True), reward, terminated, truncated))
        if terminated or truncated:
            break
    return out


@pytest.mark.parametrize("env_id, kwargs", [
    ("Hopper-v5", dict(terminate_when_unhealthy=False)),
    ("Walker2d-v5", dict(terminate_when_unhealthy=False)),
    ("Swimmer-v5", {}),
])
def test_restoring_a_mujoco_state_reproduces_the_next_100_steps_bitwise(env_id, kwargs):
    env, other = gym.make(env_id, **kwargs), gym.make(env_id, **kwargs)
    env.reset(seed=0)
    other.reset(seed=123)  # a different instance in a different state
    rng = np.random.default_rng(0)
    for _ in range(25):
        env.step(rng.uniform(-1, 1, env.action_space.shape))
    state = save_state(env)
    actions = [rng.uniform(-1, 1, env.action_space.shape) for _ in range(100)]
    first = _replay(env, actions)
    restore_state(env, state)  # the same instance, rewound
    again = _replay(env, actions)
    restore_state(other, state)
    elsewhere = _replay(other, actions)
    assert len(first) == len(again) == len(elsewhere) == 100
    for a, b, c in zip(first, again, elsewhere):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[0], c[0])  # bitwise
        assert a[1:] == b[1:] == c[1:]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCar-v0"])
def test_restoring_a_classic_control_state_reproduces_the_following_steps(env_id):
    env, other = gym.make(env_id), gym.make(env_id)
    env.reset(seed=1)
    other.reset(seed=2)
    env.action_space.seed(0)
    for _ in range(5):
        env.step(env.action_space.sample())
    state = save_state(env)
    actions = [env.action_space.sample() for _ in range(30)]
    first = _replay(env, actions)
    restore_state(other, state)
    again = _replay(other, actions)
    assert len(first) == len(again) >= 5
    for a, b in zip(first, again):
        assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]


def test_an_env_without_a_restorable_state_is_named_in_the_error():
    env = gym.make("FrozenLake-v1")
    env.reset(seed=0)
    with pytest.raises(EnvStateError, match="FrozenLake-v1"):
        save_state(env)

    class Opaque(gym.Env):  # vector observations, but its state lives nowhere the vine can copy
        observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(2, np.float32), {}

        def step(self, action):
            return np.zeros(2, np.float32), 0.0, False, False, {}

    from trpo_lab.train import Trainer
    config = TRPOConfig(sampling="vine", num_envs=1, batch_steps=8)
    with pytest.raises(EnvStateError, match="Opaque .*cannot be branched"):
        Trainer(config, env=Opaque())


def test_vine_config_fields_are_validated_with_clear_errors():
    with pytest.raises(ConfigError, match="sampling = 'vines'.*single-path"):
        TRPOConfig(sampling="vines")
    with pytest.raises(ConfigError, match="vine_actions = 1"):
        TRPOConfig(vine_actions=1)
    with pytest.raises(ConfigError, match="vine_length = 0"):
        TRPOConfig(vine_length=0)
    envs = make_vector_env("Pendulum-v1", 1)
    with pytest.raises(ValueError, match="vine_actions = 0 .*Discrete"):
        VineSampler(Sampler(envs), lambda: gym.make("Pendulum-v1"), VineSettings(actions=0))


def _vine(env_id, num_envs, settings, seed=0):
    envs = make_vector_env(env_id, num_envs)
    sampler = Sampler(envs)
    sampler.reset(seed=seed)
    vine = VineSampler(sampler, lambda: gym.make(env_id), settings)
    space = envs.single_action_space
    kind = "categorical" if isinstance(space, gym.spaces.Discrete) else "gaussian"
    act_dim = int(space.n) if kind == "categorical" else int(space.shape[0])
    torch.manual_seed(seed)
    policy = build_policy(PolicySpec(kind, int(envs.single_observation_space.shape[0]), act_dim,
                                     (16,), "tanh"))
    return vine, policy


def test_branches_of_one_state_start_from_the_same_state_and_share_their_random_numbers():
    policy = build_policy(PolicySpec("gaussian", 3, 2, (8,), "tanh"))
    noise = shared_noise(policy, 5, 3, torch.Generator().manual_seed(0))
    assert noise.shape == (15, 2)
    for n in range(5):
        block = noise[3 * n:3 * n + 3]
        assert torch.equal(block[0], block[1]) and torch.equal(block[0], block[2])
    assert not torch.equal(noise[0], noise[3])  # different states, different draws
    cat = build_policy(PolicySpec("categorical", 4, 2, (8,), "tanh"))
    u = shared_noise(cat, 4, 2, torch.Generator().manual_seed(1))
    assert torch.equal(u[0::2], u[1::2])

    # end to end: the branch envs of one state hold bitwise the state saved from the trunk, and
    # branches that share their first action (sampled K = 4 of 2 actions) share every later
    # random number, so in a deterministic env their returns are bitwise equal
    vine, policy = _vine("CartPole-v1", 2, VineSettings(states=6, actions=4, length=40))
    batch = vine.collect(policy, None, 32, torch.Generator().manual_seed(0))
    for n, start in enumerate(batch.start_states):
        for k in range(4):
            env = vine.pool[4 * n + k]
            restore_state(env, start)
            now = save_state(env)
            assert all(np.array_equal(now.data[a], start.data[a]) for a in ("state",))
            assert now.elapsed_steps == start.elapsed_steps
    pairs = 0
    for n in range(6):
        for i in range(4):
            for j in range(i + 1, 4):
                if batch.actions[n, i] == batch.actions[n, j]:
                    pairs += 1
                    assert batch.q_values[n, i] == batch.q_values[n, j]  # bitwise
    assert pairs >= 6  # 4 draws of 2 actions always repeat one
    assert batch.branch_steps > 0


def test_inverse_cdf_sampling_follows_the_policy():
    policy = build_policy(PolicySpec("categorical", 2, 3, (), "tanh"))
    obs = torch.zeros(20000, 2)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    actions = act_with_noise(policy, obs, u)
    freq = torch.bincount(actions, minlength=3).double() / 20000
    assert torch.allclose(freq, policy.dist(obs[:1]).probs[0].double(), atol=0.015)


def _deterministic_cartpole_policy():
    """A policy saturated so hard that it is deterministic: always push right (a state-dependent
    linear rule would sometimes sit on its boundary, where it is not)."""
    policy = build_policy(PolicySpec("categorical", 4, 2, (), "tanh"))
    with torch.no_grad():
        policy.logits_net[-1].weight.zero_()
        policy.logits_net[-1].bias.copy_(torch.tensor([-100.0, 100.0]))
    return policy


def _monte_carlo(env, policy, first_action, gamma):
    """Σ_t γᵗ r_t of one single path: `first_action`, then the (deterministic) policy."""
    total, discount, action = 0.0, 1.0, first_action
    probs = []
    while True:
        obs, reward, terminated, truncated, _ = env.step(action)
        total += discount * float(reward)
        discount *= gamma
        if terminated or truncated:
            return total, probs
        with torch.no_grad():
            p = policy.dist(torch.as_tensor(obs, dtype=torch.float32)[None]).probs[0]
        probs.append(float(p.max()))
        action = int(p.argmax())


def test_vine_q_estimates_equal_monte_carlo_returns_of_single_paths():
    gamma, seed = 0.97, 3
    policy = _deterministic_cartpole_policy()
    vine, _ = _vine("CartPole-v1", 1, VineSettings(states=8, actions=0, length=600, gamma=gamma),
                    seed=seed)
    trunk_len = 60
    batch = vine.collect(policy, None, trunk_len, torch.Generator().manual_seed(0))
    trunk_actions = batch.trunk.actions[:, 0].tolist()
    trunk_obs = batch.trunk.obs[:, 0]
    checked = 0
    for n in range(batch.q_values.shape[0]):
        t = int(torch.nonzero((trunk_obs == batch.obs[n]).all(1))[0])
        for a in (0, 1):
            # a single path: the same seed, the trunk's actions up to t, then a, then the policy
            env = gym.make("CartPole-v1")
            env.reset(seed=seed)
            for x in trunk_actions[:t]:  # the vector env resets a finished episode at once
                _, _, terminated, truncated, _ = env.step(x)
                if terminated or truncated:
                    env.reset()
            mc, probs = _monte_carlo(env, policy, a, gamma)
            assert min(probs, default=1.0) > 1 - 1e-12  # the policy really is deterministic
            assert batch.q_values[n, a].item() == pytest.approx(mc, rel=1e-6)  # float32 Q̂
            checked += 1
    assert checked >= 4


def test_all_actions_rows_give_the_papers_estimator_gradient():
    torch.manual_seed(0)
    policy = build_policy(PolicySpec("categorical", 3, 3, (8,), "tanh")).double()
    N, K = 7, 3
    obs = torch.randn(N, 3, dtype=torch.float64)
    q = torch.randn(N, K, dtype=torch.float64) * 5 + 10
    with torch.no_grad():
        old = policy.dist(obs).probs
    from trpo_lab.vine import VineBatch
    vb = VineBatch(None, obs, torch.arange(K).expand(N, K), q, old, True, 0)  # type: ignore[arg-type]
    o, a, adv, groups = vb.rows(normalize=False)
    problem = make_update_problem(policy, o, a, adv, groups=groups)
    theta = problem.theta_old.clone().requires_grad_(True)
    (g_rows,) = torch.autograd.grad(surrogate(problem, theta), theta)

    def paper(th):  # (1/N) Σ_n Σ_k π_θ(a_k|s_n) Q̂(s_n, a_k)
        from trpo_lab.problem import unflatten_params
        params = torch.func.functional_call(policy, unflatten_params(policy, th), (obs,))
        return (policy.distribution(params).probs * q).sum(1).mean()

    theta2 = problem.theta_old.clone().requires_grad_(True)
    (g_paper,) = torch.autograd.grad(paper(theta2), theta2)
    assert torch.allclose(g_rows, g_paper, rtol=1e-10, atol=1e-12)


def test_sampled_actions_self_normalise_within_each_state():
    torch.manual_seed(1)
    policy = build_policy(PolicySpec("gaussian", 2, 1, (), "tanh")).double()
    N, K = 4, 5
    obs = torch.randn(N, 2, dtype=torch.float64)
    actions = torch.randn(N, K, 1, dtype=torch.float64)
    q = torch.randn(N, K, dtype=torch.float64)
    from trpo_lab.vine import VineBatch
    vb = VineBatch(None, obs, actions, q, torch.ones(N, K), False, 0)  # type: ignore[arg-type]
    o, a, adv, groups = vb.rows(normalize=False)
    problem = make_update_problem(policy, o, a, adv, groups=groups)
    theta = problem.theta_old + 0.3 * torch.randn(problem.num_params, dtype=torch.float64)
    w = torch.exp(problem.distribution_at(theta).log_prob(a) - problem.old_log_prob).reshape(N, K)
    centred = q - q.mean(1, keepdim=True)
    paper = ((w * centred).sum(1) / w.sum(1)).mean()  # Σ_k w_k Q̂_k / Σ_k w_k, baseline-free
    assert float(surrogate(problem, theta)) == pytest.approx(float(paper), rel=1e-12)
    shifted = ((w * q).sum(1) / w.sum(1)).mean() - q.mean(1).mean()
    assert float(paper) == pytest.approx(float(shifted), rel=1e-10, abs=1e-12)


def test_the_vine_preset_applies_only_with_vine_sampling():
    from trpo_lab.config import PRESETS, VINE_PRESETS

    vine = TRPOConfig.from_preset("CartPole-v1", sampling="vine")
    plain = TRPOConfig.from_preset("CartPole-v1")
    for name, value in VINE_PRESETS["CartPole-v1"].items():
        assert getattr(vine, name) == value
    assert plain.total_steps == PRESETS["CartPole-v1"]["total_steps"] and plain.sampling == "single-path"
    assert TRPOConfig.from_preset("CartPole-v1", sampling="vine", max_kl=0.05).max_kl == 0.05


def test_cli_trains_with_the_vine_and_counts_branch_steps(tmp_path):
    import csv

    from trpo_lab.cli import main

    out = tmp_path / "run"
    assert main(["train", "--preset", "CartPole-v1", "--sampling", "vine", "--vine-states", "4",
                 "--vine-length", "10", "--batch-steps", "64", "--num-envs", "2",
                 "--total-steps", "600", "--out", str(out), "--no-progress"]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    steps = [int(r["steps"]) for r in rows]
    assert steps[0] > 64 and steps[-1] <= 600  # trunk + branches, within the budget
    assert all(b - a > 64 for a, b in zip([0] + steps, steps))
    assert '"sampling": "vine"' in (out / "config.json").read_text()


def test_resuming_a_vine_run_gives_the_same_numbers_as_never_stopping(tmp_path):
    import dataclasses

    from trpo_lab.checkpoint import checkpoint_callback, load_checkpoint
    from trpo_lab.train import train

    config = TRPOConfig.from_preset("CartPole-v1", sampling="vine", vine_states=6, vine_length=20,
                                    batch_steps=64, num_envs=2, total_steps=2000)
    whole = train(config, progress=False)
    first = train(config.replace(total_steps=600), progress=False,
                  callback=checkpoint_callback(tmp_path / "c.pt"))
    resumed = train(config, trainer=load_checkpoint(tmp_path / "c.pt", total_steps=2000),
                    progress=False)
    assert 0 < first.iteration < whole.iteration

    def numbers(history):
        skip = {"sample_seconds", "update_seconds", "value_seconds"}
        return [tuple(repr(v) for k, v in dataclasses.asdict(r).items() if k not in skip)
                for r in history]

    assert numbers(resumed.history) == numbers(whole.history)
    assert all(torch.equal(x, y) for x, y in zip(whole.policy.parameters(),
                                                  resumed.policy.parameters()))
