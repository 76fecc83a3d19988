"""Policy and value networks.

A policy maps observations to the *parameters* of its action distribution (`forward`), and turns
those parameters into a `torch.distributions` object (`distribution`). Keeping the two apart lets the
trust-region math evaluate the same network at any flat parameter vector θ with
`torch.func.functional_call`, while rollouts use `sample`, which draws exactly the actions the
distribution would without building one (through `fast.mlp_forward`; the speed paths live in `fast`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal, kl_divergence, register_kl

from .fast import Tanh, mlp_forward

ACTIVATIONS = {"tanh": Tanh, "relu": nn.ReLU}
"""Hidden-layer activations by name; `Tanh` is tanh with a faster kernel on large batches (`fast`)."""


class SpaceError(ValueError):
    """An observation or action space that the lab's policies do not support."""


@dataclass(frozen=True)
class PolicySpec:
    """Everything needed to rebuild a policy network (saved with snapshots and checkpoints)."""

    kind: str  # "gaussian" (Box), "categorical" (Discrete) or "multi-categorical" (MultiDiscrete)
    obs_dim: int
    act_dim: int  # action dimensions (gaussian, multi-categorical) or number of actions (categorical)
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    init_log_std: float = 0.0
    nvec: tuple[int, ...] = ()  # multi-categorical: the number of choices of each action component

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PolicySpec:
        return cls(**{**data, "hidden_sizes": tuple(data["hidden_sizes"]),
                      "nvec": tuple(int(n) for n in data.get("nvec", ()))})


def mlp(sizes: list[int], activation: str, out_gain: float) -> nn.Sequential:
    """An MLP with orthogonal init: gain √2 on hidden layers, `out_gain` on the last, zero biases."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(n_in, n_out)
        last = i == len(sizes) - 2
        nn.init.orthogonal_(linear.weight, gain=out_gain if last else math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class _PolicyNet(nn.Module):
    """What every policy here shares: `forward(obs)` gives the distribution's parameters, and
    `distribution(params)` (each class's own) turns them into π_θ(·|s)."""

    def dist(self, obs: Tensor) -> Distribution:
        """π_θ(·|s) for a batch of observations."""
        return self.distribution(self(obs))  # type: ignore[attr-defined]


class GaussianPolicy(_PolicyNet):
    """π_θ(a|s) = 𝒩(μ_θ(s), diag(σ²)) with a state-independent log σ (Box actions)."""

    def __init__(self, spec: PolicySpec):
        super().__init__()
        self.spec = spec
        self.mean_net = mlp([spec.obs_dim, *spec.hidden_sizes, spec.act_dim], spec.activation, 0.01)
        self.log_std = nn.Parameter(torch.full((spec.act_dim,), float(spec.init_log_std)))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """obs [B, obs_dim] ↦ (mean [B, act_dim], log_std [B, act_dim])."""
        mean = self.mean_net(obs)
        return mean, self.log_std.expand_as(mean)

    @staticmethod
    def distribution(params: tuple[Tensor, ...]) -> Distribution:
        mean, log_std = params
        return Independent(Normal(mean, log_std.exp(), validate_args=False), 1, validate_args=False)

    @torch.no_grad()
    def sample(self, obs: Tensor, generator: torch.Generator | None = None,
               deterministic: bool = False) -> Tensor:
        """Actions a = μ + σ·ε, ε ~ 𝒩(0, I) (or μ when deterministic), unclipped."""
        mean = mlp_forward(self.mean_net, obs)
        if deterministic:
            return mean
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + self.log_std.exp() * noise


class CategoricalPolicy(_PolicyNet):
    """π_θ(a|s) = softmax(logits_θ(s))_a (Discrete actions)."""

    def __init__(self, spec: PolicySpec):
        super().__init__()
        self.spec = spec
        self.logits_net = mlp([spec.obs_dim, *spec.hidden_sizes, spec.act_dim], spec.activation, 0.01)

    def forward(self, obs: Tensor) -> tuple[Tensor]:
        """obs [B, obs_dim] ↦ (logits [B, n_actions],)."""
        return (self.logits_net(obs),)

    @staticmethod
    def distribution(params: tuple[Tensor, ...]) -> Distribution:
        return Categorical(logits=params[0], validate_args=False)

    @torch.no_grad()
    def sample(self, obs: Tensor, generator: torch.Generator | None = None,
               deterministic: bool = False) -> Tensor:
        """Actions drawn from softmax(logits) (or the arg-max when deterministic)."""
        logits = mlp_forward(self.logits_net, obs)
        if deterministic:
            return logits.argmax(-1)
        probs = torch.softmax(logits, -1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class MultiCategorical(Distribution):
    """π(a|s) = Π_k softmax(logits_k)_{a_k}: independent categoricals, one per action component
    (a MultiDiscrete action a = (a_1, …, a_K), as Stable-Baselines3's MultiCategoricalDistribution).

    Because the components are independent, everything that is a log or a KL is a sum over them:
    log π(a|s) = Σ_k log π_k(a_k|s), H = Σ_k H_k, KL(π ‖ π′) = Σ_k KL(π_k ‖ π′_k) (registered with
    `torch.distributions.kl_divergence`, so the update math needs no special case).
    """

    arg_constraints: dict = {}
    has_enumerate_support = False

    def __init__(self, logits: Tensor, nvec: tuple[int, ...]):
        self.logits, self.nvec = logits, tuple(nvec)
        self.components = [Categorical(logits=chunk, validate_args=False)
                           for chunk in torch.split(logits, list(self.nvec), dim=-1)]
        super().__init__(logits.shape[:-1], torch.Size([len(self.nvec)]), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        """Σ_k log π_k(a_k): `value` [..., K] ↦ [...]."""
        return torch.stack([c.log_prob(value[..., k]) for k, c in enumerate(self.components)], -1).sum(-1)

    def entropy(self) -> Tensor:
        return torch.stack([c.entropy() for c in self.components], -1).sum(-1)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        return torch.stack([c.sample(torch.Size(sample_shape)) for c in self.components], -1)

    @property
    def mode(self) -> Tensor:
        return torch.stack([c.logits.argmax(-1) for c in self.components], -1)


@register_kl(MultiCategorical, MultiCategorical)
def _kl_multi_categorical(p: MultiCategorical, q: MultiCategorical) -> Tensor:
    """KL(p ‖ q) = Σ_k KL(p_k ‖ q_k)."""
    if p.nvec != q.nvec:
        raise ValueError(f"KL between MultiCategoricals with nvec {p.nvec} and {q.nvec}")
    return torch.stack([kl_divergence(a, b) for a, b in zip(p.components, q.components)], -1).sum(-1)


class MultiCategoricalPolicy(_PolicyNet):
    """π_θ(a|s) = Π_k softmax(logits_θ,k(s))_{a_k} (MultiDiscrete actions): one MLP whose output is
    the concatenated logits of every component."""

    def __init__(self, spec: PolicySpec):
        super().__init__()
        if len(spec.nvec) != spec.act_dim or not spec.nvec or min(spec.nvec) < 1:
            raise SpaceError(f"PolicySpec.nvec = {spec.nvec} is not allowed for a multi-categorical "
                             f"policy with act_dim = {spec.act_dim}: act_dim counts in ≥ 1 each")
        self.spec = spec
        self.logits_net = mlp([spec.obs_dim, *spec.hidden_sizes, sum(spec.nvec)], spec.activation, 0.01)

    def forward(self, obs: Tensor) -> tuple[Tensor]:
        """obs [B, obs_dim] ↦ (logits [B, Σ_k n_k],)."""
        return (self.logits_net(obs),)

    def distribution(self, params: tuple[Tensor, ...]) -> Distribution:
        return MultiCategorical(params[0], self.spec.nvec)

    @torch.no_grad()
    def sample(self, obs: Tensor, generator: torch.Generator | None = None,
               deterministic: bool = False) -> Tensor:
        """Actions [B, K]: each component drawn from its softmax (or its arg-max when deterministic)."""
        logits = mlp_forward(self.logits_net, obs)
        actions = []
        for chunk in torch.split(logits, list(self.spec.nvec), dim=-1):
            if deterministic:
                actions.append(chunk.argmax(-1))
            else:
                probs = torch.softmax(chunk, -1)
                actions.append(torch.multinomial(probs, 1, generator=generator).squeeze(-1))
        return torch.stack(actions, -1)


Policy = GaussianPolicy | CategoricalPolicy | MultiCategoricalPolicy

POLICY_KINDS = {"gaussian": GaussianPolicy, "categorical": CategoricalPolicy,
                "multi-categorical": MultiCategoricalPolicy}


def build_policy(spec: PolicySpec) -> Policy:
    """The policy network described by `spec`."""
    if spec.kind not in POLICY_KINDS:
        raise SpaceError(f"PolicySpec.kind = {spec.kind!r} is not allowed: one of {tuple(POLICY_KINDS)}")
    return POLICY_KINDS[spec.kind](spec)


class ValueFunction(nn.Module):
    """V_φ(s): an MLP from observations to a scalar state value."""

    def __init__(self, obs_dim: int, hidden_sizes: tuple[int, ...] = (64, 64), activation: str = "tanh"):
        super().__init__()
        self.net = mlp([obs_dim, *hidden_sizes, 1], activation, 1.0)

    def forward(self, obs: Tensor) -> Tensor:
        """obs [B, obs_dim] ↦ V [B]."""
        return self.net(obs).squeeze(-1)


def spec_for_spaces(observation_space, action_space, hidden_sizes: tuple[int, ...] = (64, 64),
                    activation: str = "tanh", init_log_std: float = 0.0) -> PolicySpec:
    """The policy spec for gymnasium spaces: Box observations; Box (1-D), Discrete (starting at 0) or
    MultiDiscrete (1-D, starting at 0) actions."""
    from gymnasium import spaces

    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise SpaceError(
            f"observation_space = {observation_space} is not supported: the lab's MLP policies need a "
            "1-D Box (vector observations; no Dict, Discrete or image spaces)")
    obs_dim = int(observation_space.shape[0])
    if isinstance(action_space, spaces.Discrete):
        if int(action_space.start) != 0:
            raise SpaceError(f"action_space = {action_space} is not supported: a Discrete space "
                             f"must start at 0 (start = {int(action_space.start)})")
        return PolicySpec("categorical", obs_dim, int(action_space.n), hidden_sizes, activation)
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        return PolicySpec("gaussian", obs_dim, int(action_space.shape[0]), hidden_sizes, activation,
                          init_log_std)
    if isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 1:
        if np.any(action_space.start != 0):
            raise SpaceError(f"action_space = {action_space} is not supported: a MultiDiscrete space "
                             f"must start at 0 (start = {action_space.start})")
        nvec = tuple(int(n) for n in action_space.nvec)
        return PolicySpec("multi-categorical", obs_dim, len(nvec), hidden_sizes, activation, nvec=nvec)
    raise SpaceError(
        f"action_space = {action_space} is not supported: use Discrete, a 1-D MultiDiscrete or a 1-D Box")
