"""Small problems where everything TRPO approximates can be computed exactly (for notebook 01).

A finite MDP (S states, A actions, discount γ < 1) and a stochastic policy π [S, A] give, by linear
algebra alone (Schulman et al. 2015, §2):

    V_π = (I − γ P_π)⁻¹ r_π,   Q_π(s,a) = r(s,a) + γ Σ_s' P(s'|s,a) V_π(s'),   A_π = Q_π − V_π
    η(π) = Σ_s ρ₀(s) V_π(s),   ρ_π(s) = Σ_t γᵗ P(s_t = s) = [ρ₀ᵀ (I − γ P_π)⁻¹](s)

so the identity η(π̃) = η(π) + Σ_s ρ_π̃(s) Σ_a π̃(a|s) A_π(s,a) (eq. 2) and the surrogate
L_π(π̃) = η(π) + Σ_s ρ_π(s) Σ_a π̃(a|s) A_π(s,a) (eq. 3) can be checked to machine precision.

`bandit_problem` builds an `UpdateProblem` for a policy with only two parameters (μ, log σ), so the
trust region can be drawn in the plane. Arrays are float64 numpy; nothing here is sampled from an env.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .policies import GaussianPolicy
from .trust_region import UpdateProblem, make_update_problem


@dataclass(frozen=True)
class TabularMDP:
    """P[s, a, s'] transition probabilities, r[s, a] rewards, ρ₀[s] start distribution, γ ∈ [0, 1)."""

    transitions: np.ndarray
    rewards: np.ndarray
    initial: np.ndarray
    gamma: float

    def __post_init__(self) -> None:
        P, r, rho0 = self.transitions, self.rewards, self.initial
        if P.ndim != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"transitions has shape {P.shape}; expected [S, A, S]")
        S, A = P.shape[:2]
        if r.shape != (S, A):
            raise ValueError(f"rewards has shape {r.shape}; expected [S, A] = {(S, A)}")
        if rho0.shape != (S,):
            raise ValueError(f"initial has shape {rho0.shape}; expected [S] = ({S},)")
        if (P < 0).any() or not np.allclose(P.sum(-1), 1.0):
            raise ValueError("transitions: every P[s, a, :] must be a probability distribution")
        if (rho0 < 0).any() or not np.isclose(rho0.sum(), 1.0):
            raise ValueError("initial must be a probability distribution over states")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma = {self.gamma} is not allowed: must lie in [0, 1)")

    @property
    def num_states(self) -> int:
        return int(self.transitions.shape[0])

    @property
    def num_actions(self) -> int:
        return int(self.transitions.shape[1])


def random_mdp(num_states: int = 6, num_actions: int = 3, gamma: float = 0.9, seed: int = 0,
               concentration: float = 0.3) -> TabularMDP:
    """A random MDP: Dirichlet(`concentration`) transitions (small = peaked), 𝒩(0, 1) rewards."""
    if num_states < 1 or num_actions < 1:
        raise ValueError(f"num_states = {num_states}, num_actions = {num_actions}: both must be ≥ 1")
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(num_states, concentration), size=(num_states, num_actions))
    r = rng.normal(size=(num_states, num_actions))
    return TabularMDP(P, r, np.full(num_states, 1.0 / num_states), gamma)


def softmax_policy(logits: np.ndarray) -> np.ndarray:
    """π(a|s) = exp θ_sa / Σ_b exp θ_sb for logits θ [S, A]."""
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _check_policy(mdp: TabularMDP, pi: np.ndarray, name: str = "pi") -> None:
    if pi.shape != (mdp.num_states, mdp.num_actions):
        raise ValueError(f"{name} has shape {pi.shape}; expected [S, A] = "
                         f"{(mdp.num_states, mdp.num_actions)}")
    if (pi < 0).any() or not np.allclose(pi.sum(-1), 1.0):
        raise ValueError(f"{name}: every row π(·|s) must be a probability distribution")


def policy_transitions(mdp: TabularMDP, pi: np.ndarray) -> np.ndarray:
    """P_π[s, s'] = Σ_a π(a|s) P(s'|s, a)."""
    _check_policy(mdp, pi)
    return np.einsum("sa,sat->st", pi, mdp.transitions)


def state_values(mdp: TabularMDP, pi: np.ndarray) -> np.ndarray:
    """V_π = (I − γ P_π)⁻¹ r_π with r_π(s) = Σ_a π(a|s) r(s, a)."""
    P_pi = policy_transitions(mdp, pi)
    return np.linalg.solve(np.eye(mdp.num_states) - mdp.gamma * P_pi, (pi * mdp.rewards).sum(-1))


def action_values(mdp: TabularMDP, pi: np.ndarray) -> np.ndarray:
    """Q_π(s, a) = r(s, a) + γ Σ_s' P(s'|s, a) V_π(s')."""
    return mdp.rewards + mdp.gamma * mdp.transitions @ state_values(mdp, pi)


def advantages(mdp: TabularMDP, pi: np.ndarray) -> np.ndarray:
    """A_π(s, a) = Q_π(s, a) − V_π(s); note Σ_a π(a|s) A_π(s, a) = 0 in every state."""
    return action_values(mdp, pi) - state_values(mdp, pi)[:, None]


def discounted_visitation(mdp: TabularMDP, pi: np.ndarray) -> np.ndarray:
    """ρ_π(s) = Σ_t γᵗ P(s_t = s | ρ₀, π), i.e. ρ_πᵀ = ρ₀ᵀ (I − γ P_π)⁻¹ (unnormalised: Σ ρ = 1/(1 − γ))."""
    S = mdp.num_states
    return np.linalg.solve((np.eye(S) - mdp.gamma * policy_transitions(mdp, pi)).T, mdp.initial)


def expected_return(mdp: TabularMDP, pi: np.ndarray) -> float:
    """η(π) = E[Σ_t γᵗ r(s_t, a_t)] = Σ_s ρ₀(s) V_π(s)."""
    return float(mdp.initial @ state_values(mdp, pi))


def expected_advantage(visitation: np.ndarray, pi_new: np.ndarray, adv: np.ndarray) -> float:
    """Σ_s ρ(s) Σ_a π̃(a|s) A(s, a): the advantage of π̃ over π, weighted by a visitation ρ."""
    return float(np.einsum("s,sa,sa->", visitation, pi_new, adv))


def surrogate(mdp: TabularMDP, pi: np.ndarray, pi_new: np.ndarray) -> float:
    """L_π(π̃) = η(π) + Σ_s ρ_π(s) Σ_a π̃(a|s) A_π(s, a)   (eq. 3: ρ_π instead of ρ_π̃)."""
    _check_policy(mdp, pi_new, "pi_new")
    return expected_return(mdp, pi) + expected_advantage(
        discounted_visitation(mdp, pi), pi_new, advantages(mdp, pi))


def kl_per_state(pi: np.ndarray, pi_new: np.ndarray) -> np.ndarray:
    """KL(π(·|s) ‖ π̃(·|s)) = Σ_a π(a|s) log(π(a|s) / π̃(a|s)) for every state s."""
    return np.sum(pi * (np.log(pi) - np.log(pi_new)), axis=-1)


def max_kl(pi: np.ndarray, pi_new: np.ndarray) -> float:
    """D_KL^max(π, π̃) = max_s KL(π(·|s) ‖ π̃(·|s))."""
    return float(kl_per_state(pi, pi_new).max())


def mean_kl(mdp: TabularMDP, pi: np.ndarray, pi_new: np.ndarray) -> float:
    """D̄_KL^ρ(π, π̃) = E_{s∼ρ_π}[KL(π(·|s) ‖ π̃(·|s))], ρ_π normalised (eq. 12: what TRPO constrains)."""
    rho = discounted_visitation(mdp, pi)
    return float(rho @ kl_per_state(pi, pi_new) / rho.sum())


def penalty_coefficient(mdp: TabularMDP, pi: np.ndarray) -> float:
    """C = 4εγ / (1 − γ)² with ε = max_{s,a} |A_π(s, a)|   (Theorem 1)."""
    eps = float(np.abs(advantages(mdp, pi)).max())
    return 4.0 * eps * mdp.gamma / (1.0 - mdp.gamma) ** 2


def logit_gradient(mdp: TabularMDP, logits: np.ndarray) -> np.ndarray:
    """∇_θ η for a softmax policy: ∂η/∂θ_sa = ρ_π(s) π(a|s) A_π(s, a) (the policy gradient theorem)."""
    pi = softmax_policy(logits)
    return discounted_visitation(mdp, pi)[:, None] * pi * advantages(mdp, pi)


def curves_along(mdp: TabularMDP, logits: np.ndarray, direction: np.ndarray,
                 alphas: np.ndarray) -> dict[str, np.ndarray]:
    """η(π̃_α), L_π(π̃_α), D_KL^max, the mean KL and the lower bound L − C·D_KL^max (Theorem 1) for the
    policies π̃_α = softmax(θ + α·d) along a direction d in logit space (π = π̃_0)."""
    pi = softmax_policy(logits)
    C = penalty_coefficient(mdp, pi)
    out: dict[str, list[float]] = {k: [] for k in ("eta", "surrogate", "max_kl", "mean_kl", "bound")}
    for a in alphas:
        new = softmax_policy(logits + a * direction)
        L, kmax = surrogate(mdp, pi, new), max_kl(pi, new)
        for key, value in (("eta", expected_return(mdp, new)), ("surrogate", L), ("max_kl", kmax),
                           ("mean_kl", mean_kl(mdp, pi, new)), ("bound", L - C * kmax)):
            out[key].append(value)
    return {"alpha": np.asarray(alphas, float), **{k: np.array(v) for k, v in out.items()}}


def eta_surrogate_figure(curves: dict[str, np.ndarray], show_bound: bool = False,
                         title: str = "η(π̃) and L_π(π̃) as π̃ moves away from π"):
    """Left: η and L (and, if asked, the Theorem-1 bound L − C·D_KL^max) against α, from
    `curves_along`. Right: |η − L| against |α| on log axes with an α² guide: the gap is second order."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    a = curves["alpha"]
    fig = make_subplots(1, 2, column_widths=[0.6, 0.4],
                        subplot_titles=("η and L along the path", "gap |η − L|  (log–log)"))
    fig.add_trace(go.Scatter(x=a, y=curves["eta"], name="η(π̃)  true return", line=dict(width=3)), 1, 1)
    fig.add_trace(go.Scatter(x=a, y=curves["surrogate"], name="L_π(π̃)  surrogate (uses ρ_π)",
                             line=dict(dash="dash", width=3)), 1, 1)
    if show_bound:
        fig.add_trace(go.Scatter(x=a, y=curves["bound"], name="L − C·D_KL^max  (Theorem 1)",
                                 line=dict(dash="dot")), 1, 1)
    nz = a != 0
    gap = np.abs(curves["eta"] - curves["surrogate"])[nz]
    fig.add_trace(go.Scatter(x=np.abs(a[nz]), y=gap, mode="markers", name="|η − L|"), 1, 2)
    x = np.abs(a[nz])
    if x.size:
        k = int(np.argmin(x))  # anchor the guide where the expansion holds: the smallest step
        fig.add_trace(go.Scatter(x=np.sort(x), y=gap[k] * (np.sort(x) / x[k]) ** 2, name="∝ α²",
                                 line=dict(color="grey", dash="dot")), 1, 2)
    fig.add_vline(x=0.0, line=dict(color="grey", width=1), row=1, col=1)
    fig.update_xaxes(title_text="α  (π̃ = softmax(θ + α d))", row=1, col=1)
    fig.update_xaxes(title_text="|α|", type="log", row=1, col=2)
    fig.update_yaxes(title_text="discounted return", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(title=title, template="plotly_white", height=420)
    return fig


# ───────────────────────────── a policy with two parameters ─────────────────────────────


class TwoParameterGaussian(nn.Module):
    """π_θ(a) = 𝒩(μ, σ²) with θ = (μ, log σ), the same in every state: a policy small enough to draw."""

    def __init__(self, mean: float = 0.0, log_std: float = 0.0):
        super().__init__()
        self.mean = nn.Parameter(torch.tensor([mean], dtype=torch.float64))
        self.log_std = nn.Parameter(torch.tensor([log_std], dtype=torch.float64))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        shape = (obs.shape[0], 1)
        return self.mean.expand(shape), self.log_std.expand(shape)

    distribution = staticmethod(GaussianPolicy.distribution)


def bandit_problem(num_samples: int = 512, target: float = 1.5, mean: float = 0.0,
                   log_std: float = 0.0, seed: int = 0) -> UpdateProblem:
    """An `UpdateProblem` for a one-state bandit with reward r(a) = −(a − target)², sampled from
    `TwoParameterGaussian(mean, log_std)`; advantages Â = r(a) − mean r (float64, no env)."""
    if num_samples < 2:
        raise ValueError(f"num_samples = {num_samples} is not allowed: must be ≥ 2")
    policy = TwoParameterGaussian(mean, log_std)
    g = torch.Generator().manual_seed(seed)
    obs = torch.zeros(num_samples, 1, dtype=torch.float64)
    actions = mean + np.exp(log_std) * torch.randn(num_samples, 1, generator=g, dtype=torch.float64)
    rewards = -((actions[:, 0] - target) ** 2)
    return make_update_problem(policy, obs, actions, rewards - rewards.mean())  # type: ignore[arg-type]
