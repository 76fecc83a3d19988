"""The update problem and its math: a frozen θ_old with its batch, the surrogate, the KL and the Fisher.

    maximise_θ  L(θ) = E[π_θ(a|s) / π_old(a|s) · Â(s,a)]   subject to   KL̄(θ) = E_s[KL(π_old ‖ π_θ)] ≤ δ

An `UpdateProblem` is all an update rule needs (`trust_region` holds the rules). Everything here is
a pure function of the problem and an explicit flat θ; it knows nothing of environments, plotting or
logging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector

from . import fast
from .policies import GaussianPolicy, Policy

# ───────────────────────────── flat parameters ─────────────────────────────


def flat_params(module: torch.nn.Module) -> Tensor:
    """θ as one detached vector (a copy), in `module.parameters()` order."""
    return parameters_to_vector(module.parameters()).detach().clone()


def unflatten_params(module: torch.nn.Module, theta: Tensor) -> dict[str, Tensor]:
    """Views of the flat vector θ shaped like `module`'s named parameters (for `functional_call`)."""
    named = list(module.named_parameters())
    sizes = [p.numel() for _, p in named]
    if theta.ndim != 1 or theta.numel() != sum(sizes):
        raise ValueError(f"theta has shape {tuple(theta.shape)}; expected ({sum(sizes)},)")
    chunks = torch.split(theta, sizes)
    return {name: c.view_as(p) for (name, p), c in zip(named, chunks)}


# ───────────────────────────── the update problem ─────────────────────────────


@dataclass(frozen=True, eq=False)
class UpdateProblem:
    """A frozen policy snapshot θ_old together with the batch it produced.

    The policy module only supplies the architecture: the math evaluates it at explicit θ.
    """

    policy: Policy
    theta_old: Tensor  # [P]
    obs: Tensor  # [B, obs_dim]
    actions: Tensor  # [B] (Discrete), [B, K] (MultiDiscrete) or [B, act_dim] (Box)
    advantages: Tensor  # [B]
    old_params: tuple[Tensor, ...]  # π_old's distribution parameters at obs, each [B, ...]
    old_log_prob: Tensor  # [B]
    fvp_rows: Tensor | None = None  # rows used for Fisher-vector products (None: all)
    degenerate: str = ""  # why no update can help (e.g. constant advantages), or ""
    groups: Tensor | None = None  # [B] state index per row: ratios self-normalise within a group

    @property
    def batch_size(self) -> int:
        return int(self.obs.shape[0])

    @property
    def num_params(self) -> int:
        return int(self.theta_old.numel())

    def distribution_at(self, theta: Tensor, rows: Tensor | None = None) -> Distribution:
        """π_θ(·|s) for the batch's states (or the given rows)."""
        obs = self.obs if rows is None else self.obs[rows]
        params = functional_call(self.policy, unflatten_params(self.policy, theta), (obs,))
        return self.policy.distribution(params)

    def old_distribution(self, rows: Tensor | None = None) -> Distribution:
        params = self.old_params if rows is None else tuple(p[rows] for p in self.old_params)
        return self.policy.distribution(params)


def make_update_problem(policy: Policy, obs: Tensor, actions: Tensor, advantages: Tensor,
                        fvp_fraction: float = 1.0, normalize_advantages: bool = False,
                        generator: torch.Generator | None = None,
                        groups: Tensor | None = None) -> UpdateProblem:
    """Freeze `policy`'s current parameters with a batch; π_old is evaluated once, here.
    `groups` [B] (state index per row, 0 … G−1) makes the ratios self-normalise per group (vine)."""
    n = obs.shape[0] if obs.ndim else 0
    if obs.ndim != 2 or n < 1:
        raise ValueError(f"obs has shape {tuple(obs.shape)}; expected [B ≥ 1, obs_dim]")
    if actions.shape[0] != n or advantages.shape != (n,):
        raise ValueError(f"actions {tuple(actions.shape)} and advantages {tuple(advantages.shape)} "
                         f"must have {n} rows like obs")
    if not 0.0 < fvp_fraction <= 1.0:
        raise ValueError(f"fvp_fraction = {fvp_fraction} is not allowed: must lie in (0, 1]")
    if groups is not None and (groups.shape != (n,) or groups.dtype != torch.int64):
        raise ValueError(f"groups has shape {tuple(groups.shape)} and dtype {groups.dtype}; "
                         f"expected [{n}] int64 (one group index per row)")
    for name, x in (("obs", obs), ("advantages", advantages)):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values; the update needs finite data")
    degenerate = ""
    if normalize_advantages:
        advantages, degenerate = normalized_and_note(advantages)
    theta_old = flat_params(policy)
    with torch.no_grad():
        old_params = tuple(p.detach() for p in policy(obs))
        old_log_prob = policy.distribution(old_params).log_prob(actions)
    rows = None
    if fvp_fraction < 1.0:
        k = max(1, round(fvp_fraction * n))
        rows = torch.randperm(n, generator=generator)[:k].sort().values
    return UpdateProblem(policy, theta_old, obs, actions, advantages.detach(), old_params,
                         old_log_prob, rows, degenerate, groups)


ROUNDING_SPREAD_ULPS = 1e-5 / torch.finfo(torch.float32).eps
"""Advantages whose std is below this many units of rounding (machine epsilons of their dtype) times
their largest magnitude differ only by rounding: ~84, i.e. a std below 1e-5·max|Â| in float32 and
below 1.9e-14·max|Â| in float64."""


def normalized_and_note(advantages: Tensor, eps: float = 1e-8) -> tuple[Tensor, str]:
    """(Â − mean) / (std + eps), and a note when that would be meaningless.

    A batch of one step, or advantages that are constant up to rounding (std ≤ ~84 machine epsilons
    of their dtype times max|Â|: 1e-5·max|Â| in float32, where a constant 0.1 has a std of ~1e-9),
    carry no information about which action is better; scaling their rounding noise up to unit
    variance would fake a signal. They become 0 (so g = 0) and the note says why, for the step's
    report. (The cut-off scales with the dtype, so a float64 spread of 1e-4 on an offset of 100 —
    well resolved — stays a signal.)
    """
    centred = advantages - advantages.mean()
    if advantages.numel() < 2:
        return torch.zeros_like(advantages), "a batch of one step: the advantages' spread is undefined"
    std = float(advantages.std())
    scale = float(advantages.abs().max())
    if std <= ROUNDING_SPREAD_ULPS * torch.finfo(advantages.dtype).eps * scale or std == 0.0:
        return torch.zeros_like(advantages), (
            f"the advantages are constant up to rounding (std {std:.3g} vs max |Â| {scale:.3g}): "
            "no action looks better than another, so there is nothing to improve")
    return centred / (std + eps), ""


def normalized(advantages: Tensor, eps: float = 1e-8) -> Tensor:
    """(Â − mean) / (std + eps); constant advantages (up to rounding) become 0 (see
    `normalized_and_note`)."""
    return normalized_and_note(advantages, eps)[0]


# ───────────────────────────── surrogate, KL, Fisher ─────────────────────────────


def importance_weights(problem: UpdateProblem, log_prob: Tensor) -> Tensor:
    """w_i = π_θ(a_i|s_i) / π_old(a_i|s_i); with `problem.groups` (the vine's sampled actions),
    self-normalised within each group: w_i · K_g / Σ_{j∈g} w_j, so a group's rows average to
    Σ_j w_j Â_j / Σ_j w_j (§5.2) and equal the plain ratios at θ_old."""
    ratio = torch.exp(log_prob - problem.old_log_prob)
    if problem.groups is None:
        return ratio
    g = problem.groups
    sums = torch.zeros(int(g.max()) + 1, dtype=ratio.dtype).index_add(0, g, ratio)
    counts = torch.bincount(g).to(ratio.dtype)
    return ratio * (counts / sums)[g]


def surrogate(problem: UpdateProblem, theta: Tensor) -> Tensor:
    """L(θ) = mean_i [ exp(log π_θ(a_i|s_i) − log π_old(a_i|s_i)) · Â_i ]   (eq. 14)."""
    log_prob = problem.distribution_at(theta).log_prob(problem.actions)
    return (importance_weights(problem, log_prob) * problem.advantages).mean()


KL_DIRECTIONS = ("old-new", "new-old")


def _kl(old: Distribution, new: Distribution, direction: str) -> Tensor:
    if direction == "old-new":
        return kl_divergence(old, new)
    if direction == "new-old":
        return kl_divergence(new, old)
    raise ValueError(f"kl direction = {direction!r} is not allowed: must be one of {KL_DIRECTIONS}")


def per_state_kl(problem: UpdateProblem, theta: Tensor, direction: str = "old-new",
                 rows: Tensor | None = None) -> Tensor:
    """KL(π_old(·|s_i) ‖ π_θ(·|s_i)) for every state i ("old-new"; "new-old" swaps the arguments),
    analytic (`torch.distributions.kl_divergence`). Shape [B]."""
    return _kl(problem.old_distribution(rows), problem.distribution_at(theta, rows), direction)


def mean_kl(problem: UpdateProblem, theta: Tensor, rows: Tensor | None = None,
            direction: str = "old-new") -> Tensor:
    """KL̄(θ) = mean_i KL(π_old(·|s_i) ‖ π_θ(·|s_i))."""
    return per_state_kl(problem, theta, direction, rows).mean()


def surrogate_and_kl(problem: UpdateProblem, theta: Tensor) -> tuple[Tensor, Tensor]:
    """(L(θ), KL̄(θ)) over the whole batch from one forward pass: the same numbers as `surrogate`
    and `mean_kl`."""
    gain, kls = surrogate_and_kls(problem, theta)
    return gain, kls.mean()


def surrogate_and_kls(problem: UpdateProblem, theta: Tensor, direction: str = "old-new"
                      ) -> tuple[Tensor, Tensor]:
    """(L(θ), per-state KLs [B]) from one forward pass, for the line search, which needs both (and
    the mean or the max of the KLs) at every trial."""
    new = problem.distribution_at(theta)
    ratio = importance_weights(problem, new.log_prob(problem.actions))
    return (ratio * problem.advantages).mean(), _kl(problem.old_distribution(), new, direction)


def fisher_operator(problem: UpdateProblem) -> Callable[[Tensor], Tensor]:
    """v ↦ F v with F = ∇²_θ KL̄(θ)|θ_old, by double backprop (`double_backprop_fisher_operator`).

    For a Gaussian tanh-MLP policy the same products come from `fast.gaussian_mlp_fisher_operator`,
    which writes autograd's operations out (bitwise the same numbers, about half the time). Uses
    `problem.fvp_rows` (a subsample, as in the paper) when it is set.
    """
    written_out = (fast.gaussian_mlp_fisher_operator(problem)
                   if type(problem.policy) is GaussianPolicy else None)
    return written_out or double_backprop_fisher_operator(problem)


def double_backprop_fisher_operator(problem: UpdateProblem) -> Callable[[Tensor], Tensor]:
    """v ↦ F v by double backprop (Pearlmutter's trick): F v = ∇_θ (∇_θ KL̄(θ) · v) at θ_old.

    The graph of ∇KL̄ is built once and reused for every product, so each product costs one
    backward pass. Uses `problem.fvp_rows` when it is set.
    """
    theta = problem.theta_old.detach().clone().requires_grad_(True)
    (grad_kl,) = torch.autograd.grad(mean_kl(problem, theta, problem.fvp_rows), theta,
                                     create_graph=True)

    def fvp(v: Tensor) -> Tensor:
        (fv,) = torch.autograd.grad(grad_kl @ v, theta, retain_graph=True)
        return fv

    return fvp


def score_matrix(problem: UpdateProblem, rows: Tensor | None = None) -> Tensor:
    """Per-sample scores ∇_θ log π_θ(a_i|s_i) at θ_old, one row per sample: [N, P]."""
    rows = problem.fvp_rows if rows is None else rows
    actions = problem.actions if rows is None else problem.actions[rows]

    def log_probs(theta: Tensor) -> Tensor:
        return problem.distribution_at(theta, rows).log_prob(actions)

    return torch.func.jacrev(log_probs)(problem.theta_old.detach())


def empirical_fisher_operator(problem: UpdateProblem) -> Callable[[Tensor], Tensor]:
    """v ↦ F̂ v with the empirical Fisher F̂ = (1/N) Σ_i ∇log π(a_i|s_i) ∇log π(a_i|s_i)ᵀ, the mean
    outer product of the sampled actions' scores (the paper's "empirical FIM" baseline). An
    unbiased estimate of F, noisier than the analytic Hessian of the KL. Uses `problem.fvp_rows`."""
    scores = score_matrix(problem)
    n = scores.shape[0]

    def fvp(v: Tensor) -> Tensor:
        return scores.T @ (scores @ v) / n

    return fvp


FISHERS = {"analytic": fisher_operator, "empirical": empirical_fisher_operator}


def fisher_vector_product(problem: UpdateProblem, v: Tensor, damping: float = 0.0,
                          fisher: str = "analytic") -> Tensor:
    """(F + damping·I) v, computed afresh (see `fisher_operator` to reuse the graph)."""
    if fisher not in FISHERS:
        raise ValueError(f"fisher = {fisher!r} is not allowed: must be one of {tuple(FISHERS)}")
    return FISHERS[fisher](problem)(v) + damping * v


