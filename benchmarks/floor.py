"""The simulation floor: how fast can the environments alone be stepped on this machine?

Two numbers per environment, both with `num_envs` gymnasium envs in one `SyncVectorEnv` (same-step
autoreset, as trpo_lab trains):
  * random: actions from `action_space.sample()`;
  * policy: actions from one batched forward of a 64×64 tanh MLP per vector step (argmax for discrete
    actions, clipped outputs for continuous ones), under `torch.inference_mode`, one torch thread.
No learning happens: any training run of the same steps costs at least the `policy` time.

    .venv-bench/bin/python benchmarks/floor.py            # CartPole-v1, Pendulum-v1 100k; Hopper-v5 200k
    .venv-bench/bin/python benchmarks/floor.py --quick    # a tenth of the steps
"""

from __future__ import annotations

import argparse
import functools
import time

import gymnasium as gym
import numpy as np
import torch
from _common import machine, one_thread, save, table
from gymnasium.vector import AutoresetMode, SyncVectorEnv

STEPS = {"CartPole-v1": 100_000, "Pendulum-v1": 100_000, "Hopper-v5": 200_000}


def make_envs(env_id: str, num_envs: int) -> SyncVectorEnv:
    return SyncVectorEnv([functools.partial(gym.make, env_id) for _ in range(num_envs)],
                         autoreset_mode=AutoresetMode.SAME_STEP)


def mlp_policy(envs: SyncVectorEnv, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    obs_dim = envs.single_observation_space.shape[0]
    space = envs.single_action_space
    out = space.n if isinstance(space, gym.spaces.Discrete) else space.shape[0]
    return torch.nn.Sequential(torch.nn.Linear(obs_dim, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                               torch.nn.Tanh(), torch.nn.Linear(64, out))


def simulate(env_id: str, steps: int, seed: int = 0, num_envs: int = 8, policy: bool = True) -> float:
    """Seconds to take `steps` env steps (summed over envs), with random or MLP actions."""
    envs = make_envs(env_id, num_envs)
    space = envs.single_action_space
    discrete = isinstance(space, gym.spaces.Discrete)
    net = mlp_policy(envs, seed)
    envs.action_space.seed(seed)
    obs, _ = envs.reset(seed=seed)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(steps // num_envs):
            if policy:
                out = net(torch.as_tensor(obs, dtype=torch.float32)).numpy()
                action = out.argmax(-1) if discrete else np.clip(out, space.low, space.high)
            else:
                action = envs.action_space.sample()
            obs, _, _, _, _ = envs.step(action)
    seconds = time.perf_counter() - start
    envs.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="*", default=list(STEPS))
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="a tenth of the steps")
    args = parser.parse_args()
    one_thread()
    rows = []
    for env_id in args.envs:
        steps = STEPS.get(env_id, 100_000) // (10 if args.quick else 1)
        for kind in ("random", "policy"):
            seconds = simulate(env_id, steps, num_envs=args.num_envs, policy=kind == "policy")
            rows.append(dict(env=env_id, actions=kind, num_envs=args.num_envs, steps=steps,
                             seconds=seconds, steps_per_s=steps / seconds))
            print(f"{env_id:12s} {kind:6s} {steps:>7d} steps {seconds:6.2f} s {steps / seconds:9.0f} steps/s",
                  flush=True)
    meta = machine()
    print()
    print(table(rows, ["env", "actions", "num_envs", "steps", "seconds", "steps_per_s"]))
    print(f"\n{meta['cpu']}, {meta['cores']} cores, load average {meta['load_average']}")
    save("floor", rows, meta)


if __name__ == "__main__":
    main()
