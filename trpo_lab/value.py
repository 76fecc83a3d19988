"""Value fitting: regress V_φ(s) on the value targets (GAE returns) of a batch.

    φ ← argmin_φ  mean_i (V_φ(s_i) − R̂_i)²

by Adam on shuffled minibatches (default) or by full-batch L-BFGS. This is the only place that
mutates the value network; it never touches the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .policies import Tanh, ValueFunction, tanh

LBFGS_ITERS = 20  # L-BFGS iterations per `optimizer.step` call


@dataclass(frozen=True)
class ValueFitReport:
    loss_before: float  # mean squared error before fitting
    loss_after: float  # mean squared error after fitting
    explained_variance: float  # 1 − Var(R̂ − V_before) / Var(R̂), of the predictions before fitting
    updates: int  # optimiser steps taken


def explained_variance(predictions: Tensor, targets: Tensor) -> float:
    """1 − Var(targets − predictions) / Var(targets): 1 is perfect, 0 is no better than a constant
    (NaN when the targets have no variance)."""
    var = float(targets.var(unbiased=False)) if targets.numel() > 1 else 0.0
    if var == 0.0:
        return float("nan")
    return 1.0 - float((targets - predictions).var(unbiased=False)) / var


class Adam:
    """Adam (Kingma & Ba 2015) over a fixed list of parameter tensors, step t = 1, 2, …:

        m ← β₁·m + (1 − β₁)·g        v ← β₂·v + (1 − β₂)·g²
        φ ← φ − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

    The arithmetic of `torch.optim.Adam` on CPU, operation for operation (same numbers, bitwise).
    It is written out because building the first `torch.optim` optimiser imports torch._dynamo
    (1.5–2 s, as long as a whole CartPole run of value fits), and because for these small networks
    torch.optim's per-step bookkeeping costs more than the arithmetic. Takes the gradients as an
    argument (`step(grads)`), so no `.grad` buffers are kept or zeroed.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params: list[Tensor] = list(params)
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.t = 0
        # the moments live in one flat vector each (one kernel per operation instead of one per
        # tensor); m and v are per-parameter views of them
        self._sizes = [p.numel() for p in self.params]
        dtype = self.params[0].dtype if self.params else torch.float32
        self._m_flat = torch.zeros(sum(self._sizes), dtype=dtype)
        self._v_flat = torch.zeros(sum(self._sizes), dtype=dtype)
        self.m = self._per_param(self._m_flat)
        self.v = self._per_param(self._v_flat)

    def _per_param(self, flat: Tensor) -> list[Tensor]:
        return [c.view_as(p) for c, p in zip(torch.split(flat, self._sizes), self.params)]

    @torch.no_grad()
    def step(self, grads: tuple[Tensor, ...] | list[Tensor]) -> None:
        """One Adam update of every parameter with its gradient g (in `params` order)."""
        beta1, beta2 = self.betas
        self.t += 1
        step_size = self.lr / (1 - beta1**self.t)
        bias_correction2_sqrt = (1 - beta2**self.t) ** 0.5
        g = torch.cat([x.reshape(-1) for x in grads])
        m, v = self._m_flat, self._v_flat
        m.lerp_(g, 1 - beta1)  # m ← m + (1 − β₁)(g − m)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v ← β₂v + (1 − β₂)g²
        denom = v.sqrt().div_(bias_correction2_sqrt).add_(self.eps)  # √v / √(1 − β₂ᵗ) + ε
        update = torch.mul(m, -step_size).div_(denom)  # in the order addcdiv evaluates it
        torch._foreach_add_(self.params, self._per_param(update))

    def state_dict(self) -> dict:
        return {"t": self.t, "lr": self.lr, "betas": self.betas, "eps": self.eps,
                "m": [m.clone() for m in self.m], "v": [v.clone() for v in self.v]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["m"]) != len(self.params):
            raise ValueError(f"Adam state for {len(state['m'])} tensors; this optimiser has "
                             f"{len(self.params)}")
        self.t, self.lr, self.eps = int(state["t"]), float(state["lr"]), float(state["eps"])
        self.betas = tuple(state["betas"])
        for mine, saved in zip(self.m + self.v, list(state["m"]) + list(state["v"])):
            mine.copy_(saved)


def _mlp_layers(value_fn: ValueFunction) -> list[tuple[torch.nn.Linear, str | None]] | None:
    """value_fn's layers as (Linear, activation after it: 'tanh', 'relu' or None), or None when
    the network is not the plain Linear/activation stack that `mse_and_grads` knows."""
    layers: list[tuple[torch.nn.Linear, str | None]] = []
    for module in getattr(value_fn, "net", ()):
        if isinstance(module, torch.nn.Linear) and module.bias is not None:
            layers.append((module, None))
        elif isinstance(module, (Tanh, torch.nn.ReLU)) and layers and layers[-1][1] is None:
            layers[-1] = (layers[-1][0], "relu" if isinstance(module, torch.nn.ReLU) else "tanh")
        else:
            return None
    return layers if layers and layers[-1][1] is None else None


@torch.no_grad()
def mse_and_grads(value_fn: ValueFunction, obs: Tensor, targets: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The loss mean_i (V_φ(s_i) − R̂_i)² and its gradient for every parameter of `value_fn`
    (in `parameters()` order), by backpropagation written out for the MLP:

        forward    a₀ = s,   zₖ = aₖ₋₁Wₖᵀ + bₖ,   aₖ = act(zₖ)   (no activation after the last layer)
        backward   δ = 2(V − R̂)/n,   ∂Wₖ = δᵀaₖ₋₁,   ∂bₖ = Σᵢ δᵢ,   δ ← (δ Wₖ) ⊙ act′(zₖ₋₁)

    with tanh′ = 1 − a² and relu′ = [a > 0]. The same gradients as autograd (up to float rounding,
    tested) at about half the cost: for these small networks autograd's graph bookkeeping costs more
    than the arithmetic, and the value fit takes thousands of these steps per run. Networks that
    are not a plain Linear/activation stack go through autograd.
    """
    layers = _mlp_layers(value_fn)
    if layers is None:
        with torch.enable_grad():
            loss = ((value_fn(obs) - targets) ** 2).mean()
            return loss.detach(), list(torch.autograd.grad(loss, list(value_fn.parameters())))
    return _mlp_mse_and_grads(layers, obs, targets)


@torch.no_grad()
def _mlp_mse_and_grads(layers: list[tuple[torch.nn.Linear, str | None]], obs: Tensor,
                       targets: Tensor) -> tuple[Tensor, list[Tensor]]:
    activations = [obs]
    for linear, act in layers:
        z = torch.addmm(linear.bias, activations[-1], linear.weight.t())
        activations.append(z if act is None else (torch.relu(z) if act == "relu" else tanh(z)))
    residual = activations.pop().squeeze(-1) - targets
    loss = (residual * residual).mean()
    delta = (residual * (2.0 / residual.numel())).unsqueeze(-1)  # ∂loss/∂V, [n, 1]
    grads: list[Tensor] = []
    for k in range(len(layers) - 1, -1, -1):
        a_prev = activations[k]
        grads += [delta.sum(0), delta.t().mm(a_prev)]  # ∂bₖ, ∂Wₖ (reversed below)
        if k > 0:
            delta = delta.mm(layers[k][0].weight)
            if layers[k - 1][1] == "relu":
                delta.mul_(a_prev > 0)
            else:
                delta.mul_(1.0 - a_prev * a_prev)
    return loss, grads[::-1]


def make_value_optimizer(value_fn: ValueFunction, method: str = "adam",
                         lr: float = 1e-3) -> Adam | torch.optim.LBFGS:
    """The optimiser `fit_value` expects: `Adam`, or L-BFGS with a strong-Wolfe line search."""
    if method == "adam":
        return Adam(value_fn.parameters(), lr=lr)
    if method == "lbfgs":
        return torch.optim.LBFGS(value_fn.parameters(), lr=lr, max_iter=LBFGS_ITERS, history_size=10,
                                 line_search_fn="strong_wolfe")
    raise ValueError(f"method = {method!r} is not allowed: 'adam' or 'lbfgs'")


def fit_value(value_fn: ValueFunction, obs: Tensor, targets: Tensor,
              optimizer: Adam | torch.optim.Optimizer, epochs: int = 5, minibatch_size: int = 64,
              generator: torch.Generator | None = None) -> ValueFitReport:
    """Fit V_φ to `targets` [B] at `obs` [B, obs_dim]: `epochs` passes of minibatch Adam, or
    `epochs` full-batch L-BFGS calls (up to `LBFGS_ITERS` iterations each) when `optimizer` is
    L-BFGS. `updates` in the report counts minibatch steps or L-BFGS calls."""
    if obs.shape[0] != targets.shape[0] or targets.ndim != 1:
        raise ValueError(f"obs {tuple(obs.shape)} and targets {tuple(targets.shape)}: "
                         "targets must be [B] with B = obs.shape[0]")
    if epochs < 1 or minibatch_size < 1:
        raise ValueError(f"epochs = {epochs}, minibatch_size = {minibatch_size}: both must be ≥ 1")
    if not torch.isfinite(targets).all():
        raise ValueError("targets contain NaN or infinite values")
    targets = targets.detach()
    with torch.no_grad():
        before = value_fn(obs)
    loss_before = float(((before - targets) ** 2).mean())
    n, updates = obs.shape[0], 0
    if isinstance(optimizer, torch.optim.LBFGS):
        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = ((value_fn(obs) - targets) ** 2).mean()
            loss.backward()
            return loss

        for _ in range(epochs):
            optimizer.step(closure)
            updates += 1
    elif isinstance(optimizer, Adam):
        own_params = len(optimizer.params) == len(list(value_fn.parameters())) and all(
            p is q for p, q in zip(optimizer.params, value_fn.parameters()))
        layers = _mlp_layers(value_fn) if own_params else None  # None: gradients by autograd
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            obs_epoch, targets_epoch = obs[order], targets[order]  # one gather, then contiguous slices
            for start in range(0, n, minibatch_size):
                x, y = obs_epoch[start:start + minibatch_size], targets_epoch[start:start + minibatch_size]
                if layers is not None:
                    optimizer.step(_mlp_mse_and_grads(layers, x, y)[1])
                else:
                    loss = ((value_fn(x) - y) ** 2).mean()
                    optimizer.step(torch.autograd.grad(loss, optimizer.params))
                updates += 1
    else:  # any torch.optim optimiser (e.g. torch.optim.Adam built by the caller)
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, minibatch_size):
                idx = order[start:start + minibatch_size]
                loss = ((value_fn(obs[idx]) - targets[idx]) ** 2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                updates += 1
    with torch.no_grad():
        loss_after = float(((value_fn(obs) - targets) ** 2).mean())
    return ValueFitReport(loss_before, loss_after, explained_variance(before, targets), updates)
