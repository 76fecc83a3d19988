"""The speed paths: hand-optimised stand-ins for plain torch / numpy code, fenced in one module.

The math modules (`policies`, `value`, `rollout`, `problem`) read plainly and call in here where a
profile of training showed the plain version to cost more than the arithmetic (issue 5). Each path below says
what it replaces, whether it gives the same numbers bitwise or to float rounding, and which test in
`tests/test_fast_paths.py` holds it to the plain version.

- `tanh`, `Tanh` replace `torch.tanh`, `nn.Tanh`: equal to float rounding (≤ 2.5e-7) on tensors
  of ≥ 8,192 elements, bitwise below (`test_tanh_is_torch_tanh_to_float_rounding`); `tanh_` is
  `tanh` in place, bitwise (`test_in_place_tanh_is_tanh_bitwise`);
- `mlp_forward` replaces `net(x)` for an `mlp`: bitwise
  (`test_rollout_forward_is_the_modules_forward_bitwise`);
- `Adam` replaces `torch.optim.Adam` on CPU: bitwise (`test_value_adam_step_is_bitwise_torch_adam`);
- `mse_and_grads`, `mlp_mse_and_grads` replace autograd of the value MSE: equal to float rounding
  (`test_written_out_value_gradients_are_autograds`,
  `test_value_fit_with_written_out_gradients_follows_torch_adam_with_autograd`,
  `test_lbfgs_value_fit_with_written_out_gradients_follows_torch_lbfgs_with_autograd`);
  `fit_mlp_value` replaces fit_value's minibatch loop in Python (those gradients written into
  `Adam.grads`, then `Adam.step()`) by the same loop compiled with TorchScript: bitwise
  (`test_compiled_value_fit_is_the_python_loop_bitwise`);
- `gaussian_mlp_fisher_operator` replaces the Fisher-vector product by double backprop for a
  Gaussian tanh-MLP policy by autograd's operations written out: bitwise
  (`test_written_out_fisher_product_is_double_backprops_bitwise`,
  `test_written_out_fisher_product_falls_back_to_double_backprop`);
- `mean_and_var`, `clip` replace `x.mean(0)`, `x.var(0)`, `np.clip`: bitwise
  (`test_normaliser_statistics_are_numpys_mean_and_var_bitwise`,
  `test_fast_numpy_helpers_are_numpys_bitwise`).

Nothing here is new math: delete a path, call the plain version it names, and the lab still works
(slower; and where the numbers are only equal to rounding, a run's numbers change in the last bits).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

# ───────────────────────────── tanh through the sigmoid ─────────────────────────────

SIGMOID_TANH_MIN_SIZE = 8192
"""Tensors with at least this many elements take tanh through the sigmoid (see `tanh`)."""


def tanh(x: Tensor) -> Tensor:
    """tanh(x); on large tensors computed as 2·σ(2x) − 1 (the same function: tanh(x) = (1 − e⁻²ˣ)/(1 + e⁻²ˣ)).

    Replaces `torch.tanh`. On the CPUs this lab was measured on, `torch.tanh` runs a scalar loop
    while `torch.sigmoid` is vectorised: the sigmoid form is 3× faster on a 2,048 × 64 batch (value
    fits, GAE, the policy step). On a rollout step's few rows the one `torch.tanh` kernel is cheaper
    than four, so small tensors keep it. The two differ by at most ~2e-7 (float32 rounding). Both
    are built from differentiable primitives, so double backprop (the Fisher-vector product) works
    through either.
    """
    if x.numel() < SIGMOID_TANH_MIN_SIZE:
        return torch.tanh(x)
    return torch.sigmoid(2.0 * x) * 2.0 - 1.0


def tanh_(x: Tensor, min_size: int = SIGMOID_TANH_MIN_SIZE) -> Tensor:
    """`tanh(x)` computed in x's own memory, bitwise the same numbers, without `tanh`'s temporaries.

    For code that has no further use for x and needs no gradient through it (autograd cannot go
    through an in-place op on a tensor it needs): the written-out value backprop below, whose
    pre-activations are dropped once activated. Returns x. (`min_size` is `SIGMOID_TANH_MIN_SIZE`,
    an argument only because TorchScript, which compiles this inside the value fit, reads no
    module globals.)
    """
    if x.numel() < min_size:
        return x.tanh_()
    return x.mul_(2.0).sigmoid_().mul_(2.0).add_(-1.0)  # x + (−1) is x − 1 exactly


class Tanh(nn.Module):
    """The `tanh` activation as a layer; replaces `nn.Tanh` in the lab's MLPs."""

    def forward(self, x: Tensor) -> Tensor:
        return tanh(x)


# ───────────────────────────── MLP forward without module calls ─────────────────────────────


def mlp_forward(net: nn.Sequential, x: Tensor) -> Tensor:
    """`net(x)` for a network built by `policies.mlp`, calling each layer's function directly.

    Replaces `net(x)` in rollouts: the same numbers (bitwise), without nn.Module's call machinery,
    which costs about half of a forward on the few rows of one rollout step (the rollout runs one
    forward per environment step)."""
    for layer in net:
        if isinstance(layer, nn.Linear):
            x = F.linear(x, layer.weight, layer.bias)
        elif isinstance(layer, Tanh):
            x = tanh(x)
        else:
            x = layer(x)
    return x


# ───────────────────────────── Adam written out ─────────────────────────────


class Adam:
    """Adam (Kingma & Ba 2015) over a fixed list of parameter tensors, step t = 1, 2, …:

        m ← β₁·m + (1 − β₁)·g        v ← β₂·v + (1 − β₂)·g²
        φ ← φ − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

    Replaces `torch.optim.Adam` for the value fit and PPO-clip: its arithmetic on CPU, operation
    for operation (same numbers, bitwise). It is written out because building the first
    `torch.optim` optimiser imports torch._dynamo (1.5–2 s, as long as a whole CartPole run of value
    fits), and because for these small networks torch.optim's per-step bookkeeping costs more than
    the arithmetic. Takes the gradients as an argument (`step(grads)`), so no `.grad` buffers are
    kept or zeroed; or, with no argument, reads them from `self.grads`, per-parameter views of one
    flat buffer that a caller can write into directly (`fit_mlp_value` does), which saves
    concatenating them every step.
    """

    ALIGN = 16
    """Elements between the starts of two parameters' chunks in the flat vectors: 16 float32 are
    64 bytes, the alignment of torch's CPU allocations."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params: list[Tensor] = list(params)
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.t = 0
        # the moments and the gradient live in one flat vector each (one kernel per operation
        # instead of one per tensor); m, v and grads are per-parameter views of them. Each
        # parameter's chunk starts on a 64-byte boundary, as a freshly allocated tensor does: a
        # matrix product written into a view (`fit_mlp_value`) then gives the same numbers as
        # one written into a new tensor (BLAS kernels may sum in another order at another alignment)
        self._sizes = [p.numel() for p in self.params]
        self._starts: list[int] = []
        end = 0
        for size in self._sizes:
            self._starts.append(-(-end // self.ALIGN) * self.ALIGN)  # end rounded up to ALIGN
            end = self._starts[-1] + size
        dtype = self.params[0].dtype if self.params else torch.float32
        self._m_flat = torch.zeros(end, dtype=dtype)  # the gaps stay 0 (Adam's update of g = 0 is 0)
        self._v_flat = torch.zeros(end, dtype=dtype)
        self._g_flat = torch.zeros(end, dtype=dtype)
        self._update_flat = torch.zeros(end, dtype=dtype)  # each step's Δφ, written in place
        self.m = self._per_param(self._m_flat)
        self.v = self._per_param(self._v_flat)
        self.grads = self._per_param(self._g_flat)  # where `step()` reads g when given none
        self._updates = self._per_param(self._update_flat)

    def _per_param(self, flat: Tensor) -> list[Tensor]:
        return [flat[start:start + size].view_as(p)
                for start, size, p in zip(self._starts, self._sizes, self.params)]

    @torch.no_grad()
    def step(self, grads: tuple[Tensor, ...] | list[Tensor] | None = None) -> None:
        """One Adam update of every parameter with its gradient g (in `params` order); with
        `grads` None, g is what the caller wrote into `self.grads`."""
        beta1, beta2 = self.betas
        self.t += 1
        if grads is not None:
            torch._foreach_copy_(self.grads, list(grads))
        _adam_update(self.params, self._updates, self._g_flat, self._m_flat, self._v_flat,
                     self._update_flat, self.t, self.lr, beta1, beta2, self.eps)

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


def _adam_update(params: list[Tensor], updates: list[Tensor], g: Tensor, m: Tensor, v: Tensor,
                 update: Tensor, t: int, lr: float, beta1: float, beta2: float, eps: float) -> None:
    """`Adam.step`'s arithmetic on its flat vectors g, m, v at step t; the update is written into
    the flat `update`, of which `updates` are the per-parameter views. Plain tensors and numbers, so
    TorchScript can compile it into `fit_mlp_value` too."""
    step_size = lr / (1 - beta1**t)
    bias_correction2_sqrt = (1 - beta2**t) ** 0.5
    m.lerp_(g, 1 - beta1)  # m ← m + (1 − β₁)(g − m)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v ← β₂v + (1 − β₂)g²
    denom = v.sqrt().div_(bias_correction2_sqrt).add_(eps)  # √v / √(1 − β₂ᵗ) + ε
    torch.mul(m, -step_size, out=update).div_(denom)  # in the order addcdiv evaluates it
    torch._foreach_add_(params, updates)


# ───────────────────────────── value-net backprop written out ─────────────────────────────

Layers = list[tuple[nn.Linear, str | None]]


def mlp_layers(value_fn: nn.Module) -> Layers | None:
    """value_fn's layers as (Linear, activation after it: 'tanh', 'relu' or None), or None when
    the network is not the plain Linear/activation stack (in `value_fn.net`) that
    `mlp_mse_and_grads` knows."""
    layers: Layers = []
    for module in getattr(value_fn, "net", ()):
        if isinstance(module, nn.Linear) and module.bias is not None:
            layers.append((module, None))
        elif isinstance(module, (Tanh, nn.ReLU)) and layers and layers[-1][1] is None:
            layers[-1] = (layers[-1][0], "relu" if isinstance(module, nn.ReLU) else "tanh")
        else:
            return None
    return layers if layers and layers[-1][1] is None else None


@torch.no_grad()
def mse_and_grads(value_fn: nn.Module, obs: Tensor, targets: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The loss mean_i (V_φ(s_i) − R̂_i)² and its gradient for every parameter of `value_fn`
    (in `parameters()` order): by `mlp_mse_and_grads` for a plain MLP, by autograd otherwise."""
    layers = mlp_layers(value_fn)
    if layers is None:
        with torch.enable_grad():
            loss = ((value_fn(obs) - targets) ** 2).mean()
            return loss.detach(), list(torch.autograd.grad(loss, list(value_fn.parameters())))
    return mlp_mse_and_grads(layers, obs, targets)


@torch.no_grad()
def mlp_mse_and_grads(layers: Layers, obs: Tensor, targets: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The value MSE and its gradients by backpropagation written out for the MLP:

        forward    a₀ = s,   zₖ = aₖ₋₁Wₖᵀ + bₖ,   aₖ = act(zₖ)   (no activation after the last layer)
        backward   δ = 2(V − R̂)/n,   ∂Wₖ = δᵀaₖ₋₁,   ∂bₖ = Σᵢ δᵢ,   δ ← (δ Wₖ) ⊙ act′(zₖ₋₁)

    with tanh′ = 1 − a² and relu′ = [a > 0]. Replaces autograd: the same gradients up to float
    rounding, at about half the cost (for these small networks autograd's graph bookkeeping costs
    more than the arithmetic, and the value fit takes thousands of these steps per run).
    """
    grads = [torch.empty_like(linear_part) for linear, _ in layers
             for linear_part in (linear.weight, linear.bias)]
    weights, biases, relu = _unpack(layers)
    residual = _mlp_backprop(weights, biases, relu, obs, targets, grads)
    return (residual * residual).mean(), grads


def _unpack(layers: Layers) -> tuple[list[Tensor], list[Tensor], list[bool]]:
    """layers as plain lists: weights, biases, and whether each layer's activation is relu."""
    return ([linear.weight for linear, _ in layers], [linear.bias for linear, _ in layers],
            [act == "relu" for _, act in layers])


def _mlp_backprop(weights: list[Tensor], biases: list[Tensor], relu: list[bool], obs: Tensor,
                  targets: Tensor, out: list[Tensor]) -> Tensor:
    """Write ∂Wₖ, ∂bₖ into out[2k], out[2k + 1] (see `mlp_mse_and_grads`; activation tanh, or relu
    where relu[k], none after the last layer); return V − R̂."""
    last = len(weights) - 1
    activations = [obs]
    for k in range(len(weights)):
        z = torch.addmm(biases[k], activations[-1], weights[k].t())  # new: activated in place
        if k < last:
            z = z.relu_() if relu[k] else tanh_(z)
        activations.append(z)
    residual = activations.pop().squeeze(-1) - targets
    delta = (residual * (2.0 / residual.numel())).unsqueeze(-1)  # ∂loss/∂V, [n, 1]
    for k in range(last, -1, -1):
        a_prev = activations[k]
        torch.sum(delta, [0], out=out[2 * k + 1])  # ∂bₖ
        torch.mm(delta.t(), a_prev, out=out[2 * k])  # ∂Wₖ
        if k > 0:
            delta = delta.mm(weights[k])
            if relu[k - 1]:
                delta.mul_(a_prev > 0)
            else:
                delta.mul_(torch.rsub(a_prev * a_prev, 1.0))  # 1 − a² (TorchScript spells it in 3 ops)
    return residual


# ───────────────────────────── the value fit's loop, compiled ─────────────────────────────


@torch.no_grad()
def fit_mlp_value(layers: Layers, optimizer: Adam, obs: Tensor, targets: Tensor, orders: list[Tensor],
                  minibatch_size: int) -> int:
    """Minibatch Adam on the value MSE of an MLP: for each permutation in `orders` (one an epoch),
    the rows in minibatches of `minibatch_size`, each the gradients of `mlp_mse_and_grads` written
    into `optimizer.grads`, then `optimizer.step()`. Returns the number of steps.

    Replaces that loop written in Python (`_fit_epochs`, what `fit_value` ran before): the same
    operations in the same order, compiled by TorchScript, so the numbers are the same bitwise
    (`test_compiled_value_fit_is_the_python_loop_bitwise`) and Python's per-operation overhead — a
    quarter of the value fit's time on these small networks — is gone. Runs without TorchScript's
    graph optimisations (they could fuse or reorder operations); where TorchScript is unavailable
    (or PYTORCH_JIT=0) the Python loop runs itself.
    """
    mine = [p for linear, _ in layers for p in (linear.weight, linear.bias)]
    if len(optimizer.params) != len(mine) or any(p is not q for p, q in zip(optimizer.params, mine)):
        raise ValueError("the optimiser's parameters must be the layers' weights and biases, in order")
    weights, biases, relu = _unpack(layers)
    t = optimizer.t
    with torch.jit.optimized_execution(False):
        optimizer.t = _compiled_fit_epochs()(
            weights, biases, relu, optimizer.params, optimizer._updates, optimizer.grads,
            optimizer._g_flat, optimizer._m_flat, optimizer._v_flat, optimizer._update_flat, obs, targets,
            orders, minibatch_size, t, optimizer.lr, optimizer.betas[0], optimizer.betas[1], optimizer.eps)
    return optimizer.t - t


def _fit_epochs(weights: list[Tensor], biases: list[Tensor], relu: list[bool], params: list[Tensor],
                updates: list[Tensor], grads: list[Tensor], g: Tensor, m: Tensor, v: Tensor,
                update: Tensor, obs: Tensor, targets: Tensor, orders: list[Tensor], minibatch_size: int,
                t: int, lr: float, beta1: float, beta2: float, eps: float) -> int:
    """`fit_mlp_value`'s loop over plain tensors (TorchScript compiles this); returns Adam's new t."""
    n = obs.shape[0]
    for order in orders:
        # one gather (index_select: obs[order]'s copy, faster), then contiguous slices
        obs_epoch, targets_epoch = obs.index_select(0, order), targets.index_select(0, order)
        for start in range(0, n, minibatch_size):
            _mlp_backprop(weights, biases, relu, obs_epoch[start:start + minibatch_size],
                          targets_epoch[start:start + minibatch_size], grads)
            t += 1
            _adam_update(params, updates, g, m, v, update, t, lr, beta1, beta2, eps)
    return t


@functools.cache
def _compiled_fit_epochs():
    """`_fit_epochs` compiled by TorchScript once a process (~30 ms with its first call), or
    `_fit_epochs` itself when TorchScript cannot compile it. (torch deprecates `torch.jit.script`
    in favour of `torch.compile`, whose fused kernels would change the numbers; the pinned torch
    still uses TorchScript internally.)"""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(_fit_epochs)
    except Exception as error:  # noqa: BLE001 - any failure to compile: run the same loop in Python
        warnings.warn(f"TorchScript could not compile the value fit ({type(error).__name__}: "
                      f"{str(error).splitlines()[0] if str(error) else ''}); it runs in Python "
                      "(same numbers, slower)", RuntimeWarning, stacklevel=3)
        return _fit_epochs


# ───────────────────────────── the Fisher-vector product written out ─────────────────────────────


def gaussian_mlp_fisher_operator(problem: Any) -> Callable[[Tensor], Tensor] | None:
    """v ↦ F v for an `UpdateProblem` whose Gaussian policy's mean is a tanh MLP, or None where this
    path does not apply. (`problem` is typed Any: this module imports no other trpo_lab module.)

    Replaces `problem.double_backprop_fisher_operator` (autograd's double backward through ∇KL̄),
    which `problem.fisher_operator` runs where this returns None. At θ_old the Hessian of the mean
    KL is a Gauss–Newton product: with J the Jacobian of the mean network's output,

        F v = (1/N) Σ_i [ J_iᵀ (J_i v) / σ²  ;  2 · v_logσ ]     (per action dimension)

    computed as autograd computes it: the tangent J v forward through the network, the KL's
    curvature, then Jᵀ back; the same ATen operations on the same layouts in the same order as the
    double backward, minus the terms that vanish exactly at θ_old (they carry μ_θ − μ_old = 0 and
    1 − σ²_old/σ²_θ = 0, and add zeros). So the numbers are autograd's, bitwise
    (`test_written_out_fisher_product_is_double_backprops_bitwise`), in about half the time, and
    building the operator needs one forward pass instead of a backward with its graph.

    For a problem whose policy is a `policies.GaussianPolicy` (the caller checks the class: this
    module cannot import `policies`, which imports it). None (use double backprop) for a policy
    without a mean network and log σ, or with another activation; for hidden layers whose
    activations over the rows have fewer than `SIGMOID_TANH_MIN_SIZE` elements (`tanh` is then
    `torch.tanh`, whose double backward is another sequence); and where θ_old's forward does not
    reproduce π_old's parameters bitwise (the vanishing terms would not be exactly 0).
    """
    policy = problem.policy
    if not isinstance(getattr(policy, "mean_net", None), nn.Sequential) or not hasattr(policy, "log_std"):
        return None
    modules = list(policy.mean_net)
    linears, activations = modules[0::2], modules[1::2]
    if (len(linears) != len(activations) + 1 or any(type(m) is not nn.Linear for m in linears)
            or any(type(m) is not Tanh for m in activations)):
        return None
    rows = problem.fvp_rows
    obs = problem.obs if rows is None else problem.obs[rows]
    n = obs.shape[0]
    if any(n * m.out_features < SIGMOID_TANH_MIN_SIZE for m in linears[:-1]):
        return None
    named = list(policy.named_parameters())
    sizes = [p.numel() for _, p in named]
    slot = {id(p): k for k, (_, p) in enumerate(named)}  # parameter ↦ its place in θ
    weight_at = [slot[id(m.weight)] for m in linears]
    bias_at = [slot[id(m.bias)] for m in linears]
    log_std_at = slot[id(policy.log_std)]

    with torch.no_grad():
        # views of a fresh copy of θ_old, as double backprop's (the same chunks at the same alignment:
        # BLAS kernels may sum in another order at another one)
        theta = [c.view_as(p) for (_, p), c in zip(named, torch.split(problem.theta_old.clone(), sizes))]
        weights = [theta[k] for k in weight_at]
        biases = [theta[k] for k in bias_at]
        # the forward at θ_old: each layer's input, and σ(2z) of each hidden layer (tanh = 2σ(2z) − 1)
        inputs, sigmoids = [obs], []
        for w, b in zip(weights[:-1], biases[:-1]):
            s = torch.sigmoid(torch.addmm(b, inputs[-1], w.t()) * 2.0)
            sigmoids.append(s)
            inputs.append(s * 2.0 - 1.0)
        mean = torch.addmm(biases[-1], inputs[-1], weights[-1].t())
        d = mean.shape[1]
        old_mean, old_log_std = (problem.old_params if rows is None
                                 else tuple(p[rows] for p in problem.old_params))
        sigma_old = old_log_std.exp()
        sigma = theta[log_std_at].expand(n, d).exp()
        if not (torch.equal(mean, old_mean) and torch.equal(sigma, sigma_old)):
            return None
        # the KL's constants, by the operations the double backward forms them with (from
        # torch.distributions' Normal KL ½(r² + ((μ_old − μ)/σ)² − 1 − log r²), r = σ_old/σ, summed
        # over d, averaged over n; r.pow(1.0), a copy of r, is the backward of r.pow(2))
        ratio = sigma_old / sigma
        half_over_n = (torch.ones(n, dtype=mean.dtype) / n).unsqueeze(-1).expand(n, d) * 0.5
        twice_ratio = ratio.pow(1.0) * 2.0
        ratio_over_sigma = sigma_old / sigma / sigma
        curvature_log_std = half_over_n / ratio.pow(2) / ratio.pow(2)
        transposed = [w.t() for w in weights]

    @torch.no_grad()
    def fvp(v: Tensor) -> Tensor:
        chunks = [c.view_as(p) for (_, p), c in zip(named, torch.split(v, sizes))]
        # J v: the mean's tangent, layer by layer: dz = (db + a dWᵀ) + da Wᵀ, da = tanh'(z) dz
        da = None
        for k in range(len(linears)):
            dz = chunks[bias_at[k]] + torch.mm(inputs[k], chunks[weight_at[k]].t())
            if da is not None:
                dz = dz + torch.mm(da, transposed[k])
            if k < len(linears) - 1:
                da = torch.ops.aten.sigmoid_backward(dz * 2.0, sigmoids[k]) * 2.0
        # the curvature: ∂²KL̄/∂μ² = 1/(nσ²) on the mean's tangent; 2/n per state on log σ's (each
        # product in autograd's order; its sign flips pair up and are exact, so they are left out)
        grad_mean = dz / sigma * half_over_n * 2.0 / sigma
        grad_log_std = (chunks[log_std_at].view(1, d).expand(n, d) * sigma * ratio_over_sigma
                        * twice_ratio * curvature_log_std * twice_ratio * ratio_over_sigma * sigma)
        # Jᵀ: back through the network
        out: list[Tensor] = [grad_log_std] * len(named)  # each slot is written below
        out[log_std_at] = grad_log_std.sum(0, keepdim=True).view(d)
        g = grad_mean
        for k in range(len(linears) - 1, -1, -1):
            if k < len(linears) - 1:
                g = torch.ops.aten.sigmoid_backward(g * 2.0, sigmoids[k]) * 2.0
            out[weight_at[k]] = torch.mm(g.t(), inputs[k]).view(-1)
            out[bias_at[k]] = g.sum(0, keepdim=True).view(-1)
            if k > 0:
                g = torch.mm(g, weights[k])
        return torch.cat(out)

    return fvp


# ───────────────────────────── numpy without the wrappers ─────────────────────────────


def mean_and_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x.mean(0), x.var(0)), bitwise, without numpy's per-call wrapper overhead (the observation
    normaliser runs this at every rollout step, on a few numbers)."""
    n = x.shape[0]
    mean = np.add.reduce(x, 0) / n
    centred = x - mean
    return mean, np.add.reduce(np.multiply(centred, centred, out=centred), 0) / n


def clip(x: np.ndarray, low, high, out: np.ndarray | None = None) -> np.ndarray:
    """np.clip(x, low, high), bitwise, without np.clip's Python wrapper, which costs more than the
    arithmetic on one step's few numbers. With `out=x` it clips in place."""
    return np.minimum(np.maximum(x, low, out=out), high, out=out)
