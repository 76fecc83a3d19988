"""One measured training run, in its own process: `python benchmarks/worker.py LIB ENV SEED STEPS`.

LIB is `floor` (see floor.py), `trpo_lab`, `sb3` (Stable-Baselines3-contrib TRPO with
rl-baselines3-zoo hyperparameters) or `tianshou` (tianshou TRPO with the hyperparameters of
tianshou's own TRPO examples). Prints one JSON line: wall-clock of training (construction of
envs and agent + learning; library imports and the evaluation are outside the clock), steps,
steps/s and the deterministic evaluation returns of the common protocol in `_common.evaluate`.
The parent reads this process's peak memory with `os.wait4`.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from _common import evaluate, one_thread

# rl-baselines3-zoo hyperparams/trpo.yml (CartPole-v1, Pendulum-v1 as tuned there; Hopper-v5 takes
# the zoo's MuJoCo defaults, the entry for Hopper-v3/v4). `normalize` is the zoo's VecNormalize
# (observations and rewards, with the run's gamma); `n_envs` DummyVecEnv copies.
SB3_ZOO: dict[str, dict] = {
    "CartPole-v1": dict(n_envs=2, n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98,
                        gamma=0.99, learning_rate=1e-3, n_critic_updates=20),
    "Pendulum-v1": dict(n_envs=2, n_steps=1024, gamma=0.9, n_critic_updates=15, use_sde=True,
                        sde_sample_freq=4),
    "Hopper-v5": dict(normalize=True, n_envs=2, batch_size=128, n_steps=1024, gamma=0.99,
                      gae_lambda=0.95, sub_sampling_factor=1, cg_max_steps=25, cg_damping=0.1,
                      n_critic_updates=20, learning_rate=1e-3),
}

# tianshou's own TRPO settings: test/continuous/test_trpo.py (Pendulum; CartPole uses the same with
# a categorical actor and gamma 0.99, as tianshou ships no discrete TRPO example) and
# examples/mujoco/mujoco_trpo.py (Hopper). Full-batch updates, 64x64 tanh networks.
TIANSHOU: dict[str, dict] = {
    "CartPole-v1": dict(num_envs=16, collect=2048, repeat=2, gamma=0.99, gae_lambda=0.95,
                        return_scaling=True, critic_iters=5, max_kl=0.005, lr=1e-3, obs_norm=False,
                        lr_decay=False, log_std=None),
    "Pendulum-v1": dict(num_envs=16, collect=2048, repeat=2, gamma=0.95, gae_lambda=0.95,
                        return_scaling=True, critic_iters=5, max_kl=0.005, lr=1e-3, obs_norm=False,
                        lr_decay=False, log_std=None),
    "Hopper-v5": dict(num_envs=16, collect=1024, repeat=1, gamma=0.99, gae_lambda=0.95,
                      return_scaling=True, critic_iters=20, max_kl=0.01, lr=1e-3, obs_norm=True,
                      lr_decay=True, log_std=-0.5),
}


def run_trpo_lab(env_id: str, seed: int, steps: int, **overrides) -> dict:
    """`overrides` change the preset's fields (benchmarks/preset_seeds.py compares presets)."""
    from trpo_lab import TRPOConfig, train

    config = TRPOConfig.from_preset(env_id, seed=seed, total_steps=steps, **overrides)
    start = time.perf_counter()
    trainer = train(config, progress=False)
    wall = time.perf_counter() - start
    policy, normalizer = trainer.policy, trainer.normalizer

    def act(obs):
        x = np.asarray(obs, np.float64)[None]
        if normalizer is not None:
            x = normalizer.normalize(x)
        with torch.no_grad():
            return policy.sample(torch.as_tensor(x, dtype=torch.float32), deterministic=True)[0].numpy()

    history = trainer.history
    return dict(wall_s=wall, steps=trainer.steps, returns=evaluate(act, env_id, seed),
                sample_s=sum(r.sample_seconds for r in history),
                policy_step_s=sum(r.update_seconds for r in history),
                value_fit_s=sum(r.value_seconds for r in history),
                iterations=trainer.iteration,
                max_step_kl=max(r.kl for r in history), max_kl=config.max_kl)


def run_sb3(env_id: str, seed: int, steps: int) -> dict:
    from sb3_contrib import TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import VecNormalize

    hp = dict(SB3_ZOO[env_id])
    normalize, n_envs = hp.pop("normalize", False), hp.pop("n_envs")
    start = time.perf_counter()
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    if normalize:
        env = VecNormalize(env, gamma=hp["gamma"])
    model = TRPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **hp)
    model.set_logger(Logger(folder=None, output_formats=[]))  # no SB3-<date> folder in /tmp per run
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - start
    if normalize:
        env.training = False

    def act(obs):
        x = env.normalize_obs(np.asarray(obs)[None]) if normalize else np.asarray(obs)[None]
        return model.predict(x, deterministic=True)[0][0]

    return dict(wall_s=wall, steps=int(model.num_timesteps), returns=evaluate(act, env_id, seed))


def run_tianshou(env_id: str, seed: int, steps: int) -> dict:
    import gymnasium as gym
    from tianshou.algorithm import TRPO
    from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy, ProbabilisticActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory, LRSchedulerFactoryLinear
    from tianshou.data import Collector, CollectStats, VectorReplayBuffer
    from tianshou.env import DummyVectorEnv, VectorEnvNormObs
    from tianshou.trainer import OnPolicyTrainerParams
    from tianshou.utils.net.common import Net
    from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic
    from tianshou.utils.net.discrete import DiscreteActor, DiscreteCritic
    from torch import nn
    from torch.distributions import Independent, Normal

    hp = TIANSHOU[env_id]
    start = time.perf_counter()
    np.random.seed(seed)
    torch.manual_seed(seed)
    env = gym.make(env_id)
    envs = DummyVectorEnv([lambda: gym.make(env_id) for _ in range(hp["num_envs"])])
    envs.seed(seed)
    if hp["obs_norm"]:
        envs = VectorEnvNormObs(envs)
    obs_dim = env.observation_space.shape
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    net = lambda: Net(state_shape=obs_dim, hidden_sizes=[64, 64], activation=nn.Tanh)  # noqa: E731
    if discrete:
        actor = DiscreteActor(preprocess_net=net(), action_shape=env.action_space.n,
                              softmax_output=False)
        critic = DiscreteCritic(preprocess_net=net())
    else:
        actor = ContinuousActorProbabilistic(preprocess_net=net(), action_shape=env.action_space.shape,
                                             unbounded=True)
        critic = ContinuousCritic(preprocess_net=net())
    for m in list(actor.modules()) + list(critic.modules()):
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=np.sqrt(2) if hp["log_std"] is not None else 1.0)
            nn.init.zeros_(m.bias)
    if hp["log_std"] is not None:  # examples/mujoco: sigma -0.5 and a small last policy layer
        nn.init.constant_(actor.sigma_param, hp["log_std"])
        for m in actor.mu.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
                m.weight.data.copy_(0.01 * m.weight.data)
    optim = AdamOptimizerFactory(lr=hp["lr"])
    epochs, epoch_steps = 1, steps
    if hp["lr_decay"]:
        optim.with_lr_scheduler_factory(LRSchedulerFactoryLinear(
            max_epochs=epochs, epoch_num_steps=epoch_steps,
            collection_step_num_env_steps=hp["collect"]))
    if discrete:
        policy = DiscreteActorPolicy(actor=actor, action_space=env.action_space)
    else:
        policy = ProbabilisticActorPolicy(
            actor=actor, dist_fn=lambda loc_scale: Independent(Normal(*loc_scale), 1),
            action_space=env.action_space, action_scaling=True, action_bound_method="clip")
    algorithm = TRPO(policy=policy, critic=critic, optim=optim, gamma=hp["gamma"],
                     gae_lambda=hp["gae_lambda"], return_scaling=hp["return_scaling"],
                     advantage_normalization=True, optim_critic_iters=hp["critic_iters"],
                     max_kl=hp["max_kl"], backtrack_coeff=0.8, max_backtracks=10)
    collector = Collector[CollectStats](algorithm, envs,
                                        VectorReplayBuffer(max(4096, hp["collect"]), len(envs)))
    collector.reset()
    algorithm.run_training(OnPolicyTrainerParams(
        training_collector=collector, test_collector=None, max_epochs=epochs,
        epoch_num_steps=epoch_steps, update_step_num_repetitions=hp["repeat"], batch_size=None,
        collection_step_num_env_steps=hp["collect"], verbose=False, show_progress=False,
        logger=None))
    wall = time.perf_counter() - start
    done_steps = int(collector.collect_step) if hasattr(collector, "collect_step") else steps
    policy.eval()
    policy.deterministic_eval = True
    rms = envs.get_obs_rms() if hp["obs_norm"] else None

    def act(obs):
        x = rms.norm(np.asarray(obs)) if rms is not None else np.asarray(obs)
        with torch.no_grad():
            return policy.compute_action(x.astype(np.float32))

    return dict(wall_s=wall, steps=done_steps, returns=evaluate(act, env_id, seed))


def run_floor(env_id: str, seed: int, steps: int) -> dict:
    """The simulation floor of the same steps: 8 sync envs and a batched 64×64 MLP forward."""
    from floor import simulate

    wall = simulate(env_id, steps, seed=seed, num_envs=8, policy=True)
    return dict(wall_s=wall, steps=steps, returns=[float("nan")])


RUNNERS = {"trpo_lab": run_trpo_lab, "sb3": run_sb3, "tianshou": run_tianshou, "floor": run_floor}


def main(argv: list[str]) -> None:
    lib, env_id, seed, steps = argv[0], argv[1], int(argv[2]), int(argv[3])
    one_thread()
    import warnings

    warnings.filterwarnings("ignore")  # tianshou warns on every backtrack
    result = RUNNERS[lib](env_id, seed, steps)
    result.update(lib=lib, env=env_id, seed=seed, steps_per_s=result["steps"] / result["wall_s"],
                  eval_mean=float(np.mean(result["returns"])), eval_std=float(np.std(result["returns"])))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
