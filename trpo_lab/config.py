"""`TRPOConfig`: every hyperparameter of a training run, named after the math, and per-env presets.

Each field carries its docstring right under it (CleanRL style); the CLI reads them for `--help`.
Nothing here imports torch or gymnasium.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .settings import ConfigError, StepSettings, step_fields

SAMPLINGS = ("single-path", "vine")
"""The batch sources: single path (§5.1) and vine (§5.2)."""


def _bad(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"TRPOConfig.{name} = {value!r} is not allowed: {allowed}")


@dataclass(frozen=True)
class TRPOConfig(StepSettings):
    """Hyperparameters of one TRPO run (Schulman et al. 2015, arXiv:1502.05477).

    The step's settings (update rule, δ, damping, CG, line search, …) are inherited from
    `StepSettings`, where each is documented and validated; `config.step_settings()` gives them.
    """

    env_id: str = "CartPole-v1"
    """gymnasium environment id, e.g. 'CartPole-v1', 'Pendulum-v1', 'Hopper-v5'."""
    seed: int = 0
    """One seed drives the envs, the network initialisation and every sample: same seed, same numbers."""
    total_steps: int = 100_000
    """Environment steps to train for (summed over all parallel envs)."""
    num_envs: int = 8
    """Parallel environments stepped in lockstep (gymnasium SyncVectorEnv)."""
    batch_steps: int = 2048
    """Environment steps per TRPO iteration, over all envs: one update problem. A multiple of num_envs."""
    gamma: float = 0.99
    """Discount factor γ in [0, 1]."""
    lam: float = 0.97
    """GAE parameter λ in [0, 1]: 0 gives TD errors, 1 gives Monte-Carlo returns − V."""
    fvp_fraction: float = 1.0
    """Fraction of the batch used for Fisher-vector products (the paper used 0.1), in (0, 1]."""
    normalize_advantages: bool = True
    """Standardise advantages per batch (zero mean, unit std) before the policy step."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the policy MLP; () gives a linear policy."""
    activation: str = "tanh"
    """Activation of the hidden layers of both MLPs: 'tanh' or 'relu'."""
    init_log_std: float = 0.0
    """Initial log standard deviation of the Gaussian policy (Box action spaces only)."""
    vf_hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the value MLP; () gives a linear value function."""
    vf_optimizer: str = "adam"
    """Value-fitting optimiser: 'adam' (minibatches) or 'lbfgs' (full batch)."""
    vf_lr: float = 1e-3
    """Value-fitting learning rate (Adam) or initial step length (L-BFGS)."""
    vf_epochs: int = 5
    """Passes over the batch per value fit (Adam), or full-batch L-BFGS calls (each of up to
    vf_lbfgs_iters iterations)."""
    vf_lbfgs_iters: int = 20
    """L-BFGS: iterations per call (each evaluates the full-batch loss about once or twice, under a
    strong-Wolfe line search); Adam ignores it."""
    vf_minibatch_size: int = 64
    """Minibatch size of the Adam value fit."""
    normalize_obs: bool = False
    """Keep running mean/std of observations (owned by the agent, saved with it) and standardise inputs."""
    obs_clip: float = 10.0
    """Normalised observations are clipped to [−obs_clip, obs_clip]."""
    torch_threads: int = 1
    """torch intra-op threads; 1 is fastest for these small networks and keeps runs reproducible."""
    sampling: str = dataclasses.field(default="single-path", metadata={"choices": SAMPLINGS})
    """Batch source (§5): 'single-path' (trajectories, advantages by GAE) or 'vine' (branches from a
    rollout set of trunk states, Q from their returns; needs an env whose state can be restored)."""
    vine_states: int = 64
    """Vine: size N of the rollout set (trunk states branched from) per iteration."""
    vine_actions: int = 0
    """Vine: actions K per state; 0 means every action (Discrete spaces only, as the paper does)."""
    vine_length: int = 100
    """Vine: branch length H in steps (the first is the branch's own action); a branch that is cut
    bootstraps γᴴ·V(s_H)."""

    def __post_init__(self) -> None:
        # normalise sequences so configs loaded from JSON compare equal to ones written in code
        for name in ("hidden_sizes", "vf_hidden_sizes"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` naming the first field whose value is not allowed."""
        super().validate()
        types = {f.name: f.type for f in dataclasses.fields(self)}
        for name, kind in types.items():
            value = getattr(self, name)
            if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
                raise _bad(name, value, "must be an integer")
            if kind == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise _bad(name, value, "must be a number")
                if not math.isfinite(value):
                    raise _bad(name, value, "must be finite")
            if kind == "bool" and not isinstance(value, bool):
                raise _bad(name, value, "must be True or False")
            if kind == "str" and not isinstance(value, str):
                raise _bad(name, value, "must be a string")
        if not self.env_id:
            raise _bad("env_id", self.env_id, "must name a gymnasium environment")
        if self.seed < 0:
            raise _bad("seed", self.seed, "must be ≥ 0")
        for name in ("total_steps", "num_envs", "batch_steps", "vf_epochs", "vf_lbfgs_iters",
                     "vf_minibatch_size", "torch_threads"):
            if getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), "must be ≥ 1")
        if self.batch_steps % self.num_envs:
            raise _bad("batch_steps", self.batch_steps,
                       f"must be a multiple of num_envs = {self.num_envs}")
        for name in ("gamma", "lam"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise _bad(name, getattr(self, name), "must lie in [0, 1]")
        for name in ("vf_lr", "obs_clip"):
            if getattr(self, name) <= 0:
                raise _bad(name, getattr(self, name), "must be > 0")
        if not 0.0 < self.fvp_fraction <= 1.0:
            raise _bad("fvp_fraction", self.fvp_fraction, "must lie in (0, 1]")
        for name in ("hidden_sizes", "vf_hidden_sizes"):
            sizes = getattr(self, name)
            if not isinstance(sizes, tuple) or not all(
                isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in sizes
            ):
                raise _bad(name, sizes, "must be a tuple of positive integers, e.g. (64, 64)")
        if self.activation not in ("tanh", "relu"):
            raise _bad("activation", self.activation, "must be 'tanh' or 'relu'")
        if self.sampling not in SAMPLINGS:
            raise _bad("sampling", self.sampling, f"must be one of {SAMPLINGS}")
        for name in ("vine_states", "vine_length"):
            if getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), "must be ≥ 1")
        if self.vine_actions < 0 or self.vine_actions == 1:
            raise _bad("vine_actions", self.vine_actions,
                       "must be 0 (every action, Discrete spaces) or ≥ 2 (sampled actions)")
        if self.vf_optimizer not in ("adam", "lbfgs"):
            raise _bad("vf_optimizer", self.vf_optimizer, "must be 'adam' or 'lbfgs'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TRPOConfig:
        return cls().replace(**data)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TRPOConfig:
        """The preset for an environment (see `PRESETS`), with optional overrides. With
        `sampling='vine'`, the env's `VINE_PRESETS` entry (if any) goes on top of its preset."""
        return cls().replace(**{**preset_fields(name, overrides.get("sampling")), **overrides})


def preset_fields(name: str, sampling: str | None = None) -> dict[str, Any]:
    """The fields a preset sets: `PRESETS[name]`, with its `VINE_PRESETS` entry on top when
    `sampling` is 'vine'."""
    if name not in PRESETS:
        raise ConfigError(f"preset = {name!r} is not known; presets are: {sorted(PRESETS)}")
    return {**PRESETS[name], **(VINE_PRESETS.get(name, {}) if sampling == "vine" else {})}


PRESETS: dict[str, dict[str, Any]] = {
    # Tuned on this lab's implementation, in the spirit of rl-baselines3-zoo's hyperparams/trpo.yml.
    "CartPole-v1": dict(
        env_id="CartPole-v1", total_steps=100_000, num_envs=8, batch_steps=2048,
        gamma=0.99, lam=0.97, max_kl=0.01, damping=0.1, vf_epochs=3, vf_minibatch_size=128,
        fvp_fraction=0.25,
    ),
    "Acrobot-v1": dict(
        env_id="Acrobot-v1", total_steps=100_000, num_envs=8, batch_steps=2048,
        gamma=0.99, lam=0.97, max_kl=0.01, normalize_obs=True,
    ),
    # Chosen over held-out seeds 10–49 by benchmarks/preset_seeds.py (benchmarks/RESULTS.md): raw
    # observations (cos θ, sin θ, θ̇ ∈ [−8, 8]), δ 0.02 and 20 value epochs of 512 rows made the
    # δ 0.03 preset's late collapses rarer, at ~5 % more wall-clock per run.
    "Pendulum-v1": dict(
        env_id="Pendulum-v1", total_steps=100_000, num_envs=8, batch_steps=2048,
        gamma=0.95, lam=0.95, max_kl=0.02, normalize_obs=False, vf_epochs=20,
        vf_minibatch_size=512, vf_lr=3e-3, fvp_fraction=0.25,
    ),
    "Hopper-v5": dict(
        env_id="Hopper-v5", total_steps=1_000_000, num_envs=16, batch_steps=2048,
        gamma=0.995, lam=0.95, max_kl=0.02, normalize_obs=True, fvp_fraction=0.25,
        init_log_std=0.0, vf_epochs=20, vf_minibatch_size=512, vf_lr=3e-3,
    ),
}
"""Per-environment hyperparameters; `TRPOConfig.from_preset(name)` builds a config from one."""

VINE_PRESETS: dict[str, dict[str, Any]] = {
    # A vine iteration spends most of its simulator steps in branches (64 states × 2 actions × up
    # to 200 steps), so it needs a larger step budget than single path, a short trunk and a
    # larger δ (its batch has 128 rows). Seed 0 evaluates to 500 (README, Vine sampling).
    "CartPole-v1": dict(total_steps=600_000, batch_steps=512, vine_states=64, vine_actions=0,
                        vine_length=200, max_kl=0.03),
}
"""Overrides applied on top of `PRESETS[name]` when the run uses `sampling='vine'`."""


def field_docs() -> dict[str, str]:
    """Each `TRPOConfig` field's documentation (used by the CLI): the step settings' from their
    metadata, the others' from the docstring written under the field, read from the source."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(TRPOConfig))
    docs = {name: spec.doc for name, spec in step_fields().items()}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
            docs[node.target.id] = str(nxt.value.value)
    return docs

