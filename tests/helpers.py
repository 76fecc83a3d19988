"""Small float64 policies and update problems shared by the core tests."""

from __future__ import annotations

import torch

from trpo_lab.policies import PolicySpec, build_policy
from trpo_lab.trust_region import make_update_problem

KINDS = ["gaussian", "categorical", "multi-categorical"]
MULTI_NVEC = (3, 2, 4)  # the action components of the small multi-categorical policy


def small_policy(kind: str, obs_dim: int = 3, act_dim: int = 2, hidden: tuple[int, ...] = (5,),
                 seed: int = 0, init_log_std: float = -0.3):
    torch.manual_seed(seed)
    nvec = MULTI_NVEC if kind == "multi-categorical" else ()
    if nvec:
        act_dim = len(nvec)
    policy = build_policy(PolicySpec(kind, obs_dim, act_dim, hidden, "tanh", init_log_std, nvec)).double()
    # larger output weights than the orthogonal 0.01 init, so the distributions are not all alike
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, dtype=p.dtype))
    return policy


def small_problem(kind: str, n: int = 64, seed: int = 0, fvp_fraction: float = 1.0, **kw):
    policy = small_policy(kind, seed=seed, **kw)
    g = torch.Generator().manual_seed(seed + 1)
    obs = torch.randn(n, policy.spec.obs_dim, generator=g, dtype=torch.float64)
    with torch.no_grad():
        actions = policy.sample(obs, g)
    advantages = torch.randn(n, generator=g, dtype=torch.float64)
    return make_update_problem(policy, obs, actions, advantages, fvp_fraction,
                               normalize_advantages=True, generator=g)
