"""PPO-clip on an `UpdateProblem` (Schulman et al. 2017, eq. 7), for comparison with TRPO on one batch.

    L^CLIP(θ) = mean_i min( r_i Â_i , clip(r_i, 1 − ε, 1 + ε) Â_i ),   r_i = π_θ(a_i|s_i) / π_old(a_i|s_i)

Epochs of minibatch Adam ascend L^CLIP from θ_old; no KL is computed or bounded during the epochs
(the clip is PPO's only trust region). The value function is fitted separately, as for TRPO.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .fast import Adam
from .problem import UpdateProblem


def clipped_surrogate(problem: UpdateProblem, theta: Tensor, clip: float,
                      rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(L^CLIP(θ) over the rows, fraction of those rows whose ratio lies outside [1 − ε, 1 + ε])."""
    actions = problem.actions if rows is None else problem.actions[rows]
    old_log_prob = problem.old_log_prob if rows is None else problem.old_log_prob[rows]
    advantages = problem.advantages if rows is None else problem.advantages[rows]
    log_prob = problem.distribution_at(theta, rows).log_prob(actions)
    ratio = torch.exp(log_prob - old_log_prob)
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    objective = torch.minimum(ratio * advantages, clipped * advantages).mean()
    return objective, ((ratio - 1.0).abs() > clip).float().mean()


@dataclass(frozen=True)
class PPOResult:
    theta: Tensor  # θ after the epochs
    losses: list[float]  # mean −L^CLIP over each epoch's minibatches
    clip_fraction: float  # fraction of the batch clipped at θ (after the last epoch)


def ppo_clip_update(problem: UpdateProblem, clip: float = 0.2, epochs: int = 10,
                    minibatch_size: int = 64, lr: float = 3e-4,
                    generator: torch.Generator | None = None) -> PPOResult:
    """`epochs` passes of Adam over shuffled minibatches of −L^CLIP, starting at θ_old (Adam's state
    starts fresh every update). Deterministic for a given `generator`. Adam is `fast.Adam`, bitwise
    `torch.optim.Adam`, without the second or two the first `torch.optim` optimiser of a process
    spends importing torch._dynamo (which made a first PPO step look 100× a TRPO step)."""
    theta = problem.theta_old.detach().clone().requires_grad_(True)
    optimizer = Adam([theta], lr=lr)
    n = problem.batch_size
    size = min(minibatch_size, n)
    losses: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        total, count = 0.0, 0
        for start in range(0, n, size):
            rows = order[start:start + size]
            objective, _ = clipped_surrogate(problem, theta, clip, rows)
            optimizer.step(torch.autograd.grad(-objective, [theta]))
            total, count = total - float(objective.detach()), count + 1
        losses.append(total / count)
    theta = theta.detach()
    with torch.no_grad():
        _, clipped = clipped_surrogate(problem, theta, clip)
    return PPOResult(theta, losses, float(clipped))
