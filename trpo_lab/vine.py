"""The vine procedure (Schulman et al. 2015, §5.2): Q(s, a) from branches rolled out of saved states.

1. **Trunk**: trajectories from the current policy π_old (the ordinary single-path sampler).
2. **Rollout set**: N states s_1 … s_N chosen uniformly at random from the trunk; each env's state
   is saved (`envstate.save_state`) when the trunk passes through it.
3. **Branches**: from each s_n, K actions a_{n,k} — every action for a Discrete space with
   `vine_actions = 0` (as the paper does), else K actions drawn from π_old(·|s_n). Branch (n, k)
   restores s_n, takes a_{n,k}, then follows π_old for up to `vine_length` steps in all. The K
   branches of one state share their random numbers (common random numbers): the same noise ε_t
   at every step t, so their returns differ through the first action, not through luck.
4. **Q̂(s_n, a_{n,k})** = Σ_t γᵗ r_t along the branch, plus γᴴ V(s_H) when the branch stops before
   the episode ends (cut at `vine_length`, or a time-limit truncation); no bootstrap on termination.
5. **The surrogate at s_n**, as in the paper:
   - all actions:      L_n(θ) = Σ_k π_θ(a_k|s_n) Q̂(s_n, a_k)
   - sampled actions:  L_n(θ) = Σ_k w_k Q̂_k / Σ_k w_k,   w_k = π_θ(a_{n,k}|s_n) / π_old(a_{n,k}|s_n)
     (self-normalised importance sampling, which needs no baseline).
   Both become rows of an ordinary `UpdateProblem` (ratio × weight), so every update rule runs on
   a vine batch unchanged: all actions give rows (s_n, a_k) with Â = K·π_old(a_k|s_n)·(Q̂_k − V̄_n),
   V̄_n = Σ_k π_old(a_k|s_n) Q̂_k (Σ_k π_θ(a_k|s_n)·V̄_n = V̄_n is a constant, so the gradient is
   the paper's); sampled actions give rows with Â = Q̂_k − mean_k Q̂ and `groups` = n, which makes
   the problem's surrogate self-normalise its ratios within each state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from .envstate import EnvState, restore_state, save_state, state_kind
from .policies import Policy
from .rollout import Batch, RunningMeanStd, Sampler


@dataclass(frozen=True)
class VineSettings:
    """N states, K actions per state (0: all, Discrete only), branch length H, discount γ."""

    states: int = 64
    actions: int = 0
    length: int = 100
    gamma: float = 0.99


@dataclass
class VineBatch:
    """The trunk batch and the branches' estimates, one row per (state n, action k)."""

    trunk: Batch
    obs: Tensor  # [N, obs_dim] the rollout set, as the policy saw it
    actions: Tensor  # [N, K] (Discrete) or [N, K, act_dim]
    q_values: Tensor  # [N, K] Q̂(s_n, a_{n,k})
    old_probs: Tensor  # [N, K] π_old(a_{n,k}|s_n) (probabilities; densities for Box spaces)
    all_actions: bool  # True: a_{n,k} = k for every action k
    branch_steps: int  # simulator steps spent in branches
    start_states: list[EnvState] = field(default_factory=list)  # the N saved states

    def rows(self, normalize: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """(obs, actions, advantages, groups) for `make_update_problem`: the paper's estimator as
        rows (see the module docstring). `normalize` divides the advantages by their std (a
        positive scale: it leaves the step's direction unchanged; no centring, which would change
        the all-actions estimator)."""
        N, K = self.q_values.shape
        obs = self.obs.repeat_interleave(K, 0)
        actions = self.actions.reshape(N * K, *self.actions.shape[2:])
        q = self.q_values
        if self.all_actions:
            baseline = (self.old_probs * q).sum(1, keepdim=True)
            adv = K * self.old_probs * (q - baseline)
            groups = None
        else:
            adv = q - q.mean(1, keepdim=True)
            groups = torch.arange(N).repeat_interleave(K)
        adv = adv.reshape(-1)
        if normalize and adv.numel() > 1 and float(adv.std()) > 0:
            adv = adv / (adv.std() + 1e-8)
        return obs, actions, adv, groups


def check_branchable(envs: gym.vector.VectorEnv) -> None:
    """`EnvStateError` naming the env unless its sub-envs can be saved and restored."""
    for env in getattr(envs, "envs", [envs]):
        state_kind(env)


def shared_noise(policy: Policy, states: int, actions: int, generator: torch.Generator) -> Tensor:
    """One step's random numbers for N·K branches: N draws, each repeated for the K branches of its
    state (common random numbers). Uniforms [N·K] (Discrete) or standard normals [N·K, act_dim]."""
    if policy.spec.kind == "categorical":
        noise = torch.rand(states, generator=generator, dtype=torch.float64)
    else:
        noise = torch.randn(states, policy.spec.act_dim, generator=generator)
    return noise.repeat_interleave(actions, 0)


@torch.no_grad()
def act_with_noise(policy: Policy, obs: Tensor, noise: Tensor) -> Tensor:
    """Actions of π(·|s) driven by given noise: inverse-CDF of the softmax for a uniform u
    (Discrete), μ + σ·ε for a standard normal ε (Box)."""
    params = policy(obs)
    if policy.spec.kind == "categorical":
        cdf = torch.softmax(params[0].double(), -1).cumsum(-1)
        return (cdf < noise[:, None]).sum(-1).clamp(max=cdf.shape[-1] - 1)
    mean, log_std = params
    return mean + log_std.exp() * noise.to(mean.dtype)


class VineSampler:
    """Trunk from a `Sampler`, branches in a pool of N·K envs made from the same env id, stepped in
    lockstep with one batched policy forward per step."""

    def __init__(self, sampler: Sampler, make_env, settings: VineSettings):
        space = sampler.envs.single_action_space
        if isinstance(space, gym.spaces.MultiDiscrete):
            raise ValueError(f"sampling = 'vine' does not support MultiDiscrete actions ({space}): "
                             "use sampling = 'single-path'")
        check_branchable(sampler.envs)
        self.sampler, self.settings = sampler, settings
        self.discrete = isinstance(space, gym.spaces.Discrete)
        if settings.actions == 0 and not self.discrete:
            raise ValueError(f"vine_actions = 0 (every action) needs a Discrete action space; "
                             f"{space} is not: give the number of sampled actions K ≥ 2")
        self.num_actions = int(space.n) if self.discrete and settings.actions == 0 \
            else settings.actions
        self.low = None if self.discrete else space.low
        self.high = None if self.discrete else space.high
        self.make_env = make_env
        self.pool: list[gym.Env] = []

    def _branch_envs(self, count: int, seed: int) -> list[gym.Env]:
        while len(self.pool) < count:
            env = self.make_env()
            env.reset(seed=seed + len(self.pool))  # once: OrderEnforcing wants a reset before step
            self.pool.append(env)
        return self.pool[:count]

    def _normalized(self, obs: np.ndarray, normalizer: RunningMeanStd | None) -> np.ndarray:
        return obs if normalizer is None else normalizer.normalize(obs)

    def collect(self, policy: Policy, value, steps_per_env: int, generator: torch.Generator,
                normalizer: RunningMeanStd | None = None) -> VineBatch:
        """Trunk of `steps_per_env` steps per env, then the branches (see the module docstring)."""
        s = self.settings
        N_env = self.sampler.num_envs
        total = steps_per_env * N_env
        n = min(s.states, total)
        chosen = torch.randperm(total, generator=generator)[:n].sort().values.tolist()
        at_step: dict[int, list[int]] = {}
        for flat in chosen:
            at_step.setdefault(flat // N_env, []).append(flat % N_env)
        saved: dict[int, EnvState] = {}

        def before_step(t: int) -> None:
            for i in at_step.get(t, ()):
                saved[t * N_env + i] = save_state(self.sampler.envs.envs[i])

        trunk = self.sampler.collect(policy, steps_per_env, generator, before_step=before_step)
        starts = [saved[f] for f in chosen]
        obs = trunk.obs.reshape(total, -1)[chosen]
        K = self.num_actions
        with torch.no_grad():
            dist = policy.dist(obs)
            if self.discrete and s.actions == 0:
                actions = torch.arange(K).expand(n, K).clone()
            elif self.discrete:  # K draws from π_old(·|s_n), from the run's generator
                u = torch.rand(n, K, generator=generator, dtype=torch.float64)
                cdf = dist.probs.double().cumsum(-1)
                actions = (cdf[:, None, :] < u[..., None]).sum(-1).clamp(max=cdf.shape[-1] - 1)
            else:
                eps = torch.randn(n, K, policy.spec.act_dim, generator=generator)
                actions = dist.mean[:, None] + dist.stddev[:, None] * eps
            old_probs = dist.log_prob(actions.transpose(0, 1)).transpose(0, 1).exp()
        q, steps = self._branches(policy, value, starts, actions, generator, normalizer,
                                  seed=int(torch.randint(2**31 - 1, (1,), generator=generator)))
        return VineBatch(trunk, obs, actions, q, old_probs.float(), self.discrete and s.actions == 0,
                         steps, starts)

    def _branches(self, policy: Policy, value, starts: list[EnvState], actions: Tensor,
                  generator: torch.Generator, normalizer, seed: int) -> tuple[Tensor, int]:
        """Q̂ [N, K] from the N·K branches; returns (Q̂, simulator steps)."""
        s = self.settings
        N, K = actions.shape[:2]
        envs = self._branch_envs(N * K, seed)
        for b, env in enumerate(envs):
            restore_state(env, starts[b // K])
        flat_actions = actions.reshape(N * K, *actions.shape[2:]).numpy()
        q = np.zeros(N * K)
        discount = np.ones(N * K)
        active = np.ones(N * K, bool)
        last_obs = [None] * (N * K)
        bootstrap = np.zeros(N * K, bool)
        steps = 0
        dtype = next(policy.parameters()).dtype
        for t in range(s.length):  # every branch steps at t = 0, so last_obs is full after it
            if t == 0:
                a = flat_actions
            else:
                noise = shared_noise(policy, N, K, generator)
                x = self._normalized(np.stack(last_obs).astype(np.float64), normalizer)
                a = act_with_noise(policy, torch.as_tensor(x, dtype=dtype), noise).numpy()
            for b in np.flatnonzero(active):
                env_action = a[b] if self.discrete else np.clip(a[b], self.low, self.high)
                obs, reward, terminated, truncated, _ = envs[b].step(env_action)
                steps += 1
                q[b] += discount[b] * float(reward)
                discount[b] *= s.gamma
                last_obs[b] = np.asarray(obs, np.float64)
                if terminated or truncated:
                    active[b] = False
                    bootstrap[b] = bool(truncated and not terminated)
            if not active.any():
                break
        bootstrap |= active  # cut at the branch length
        if value is not None and bootstrap.any():
            idx = np.flatnonzero(bootstrap)
            x = self._normalized(np.stack([last_obs[b] for b in idx]), normalizer)
            with torch.no_grad():
                v = value(torch.as_tensor(x, dtype=dtype)).double().numpy()
            q[idx] += discount[idx] * v
        return torch.as_tensor(q, dtype=torch.float32).reshape(N, K), steps
