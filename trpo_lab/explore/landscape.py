"""The landscape around θ_old that the explorer draws: real surrogate and KL along the step, on a
2-D slice of parameter space, and (for small policies) the exact Fisher matrix.

Every value comes from `trust_region.surrogate_and_kl` (one forward pass gives L(θ) and KL̄(θ), as
in the line search), `fisher_operator` and `conjugate_gradient`; nothing here re-implements the
TRPO math. On this lab's 2-core CPU a plain loop over θ (one [B, 64] activation stays in cache)
measured about twice as fast per θ as `torch.func.vmap` over θ, so the loop it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..trust_region import CGResult, UpdateProblem, conjugate_gradient, surrogate, surrogate_and_kl

DELTA_RANGE = (1e-4, 1e-1)  # the explorer's δ slider


def evaluate_at(problem: UpdateProblem, thetas: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Real L(θ) − L(θ_old) and KL̄(θ) for each row θ of `thetas` [N, P] (float64 arrays [N]),
    by `surrogate_and_kl`, the function the line search itself evaluates trials with."""
    gains, kls = np.empty(len(thetas)), np.empty(len(thetas))
    with torch.no_grad():
        base = float(surrogate(problem, problem.theta_old))
        for i, theta in enumerate(thetas):
            gain, kl = surrogate_and_kl(problem, theta)
            gains[i], kls[i] = float(gain) - base, float(kl)
    return gains, kls


# ───────────────────────────── along the step ─────────────────────────────


@dataclass(frozen=True)
class StepCurve:
    """The real surrogate gain and KL̄ at θ_old + t·s for a sweep of t (s: the CG direction)."""

    t: np.ndarray
    gain: np.ndarray
    kl: np.ndarray


def curve_coefficients(sAs: float, scale: float, points: int = 25, beyond: float = 1.3) -> np.ndarray:
    """t = 0 … `beyond`·β(scale), evenly spaced, β(δ) = √(2δ / sᵀ(F+λI)s): the step fractions
    x = t/β(δ) ≥ 0 … 1.3 of every δ ≤ `scale`, so moving δ below `scale` only rescales the curve."""
    return np.linspace(0.0, beyond * math.sqrt(2 * scale / sAs), points)


def step_curve(problem: UpdateProblem, direction: Tensor, t: np.ndarray) -> StepCurve:
    """Evaluate the real L and KL̄ along θ_old + t·s."""
    coef = torch.as_tensor(t, dtype=direction.dtype)
    gain, kl = evaluate_at(problem, problem.theta_old + coef[:, None] * direction)
    return StepCurve(np.asarray(t, float), gain, kl)


# ───────────────────────────── a 2-D slice through θ_old ─────────────────────────────


@dataclass(frozen=True)
class Plane:
    """θ = θ_old + a·u + b·v: u = s/‖s‖, and v the unit vector of the plane span{s, g} that is
    (F + λI)-conjugate to u (Gram–Schmidt in the trust region's own metric). In these coordinates
    the quadratic model ½cᵀAc is an axis-aligned ellipse with the natural step at its tip."""

    u: Tensor
    v: Tensor
    second: str  # what v was made from: "gradient", or a fallback when g ∥ s
    A: np.ndarray  # [2, 2] Bᵀ(F + damping·I)B, B = [u v]: the damped quadratic KL model in (a, b)
    F: np.ndarray  # [2, 2] BᵀFB
    g: np.ndarray  # [2] the gradient's coordinates (a, b): g = a·u + b·v
    step_length: float  # ‖s‖


def slice_plane(direction: Tensor, grad: Tensor, fvp: Callable[[Tensor], Tensor], damping: float
                ) -> Plane:
    """The plane through θ_old spanned by the natural direction s and the plain gradient g, with
    g made (F + damping·I)-conjugate to s for its second axis."""
    u = direction / direction.norm()
    au = fvp(u) + damping * u
    noise = torch.randn(u.shape, generator=torch.Generator().manual_seed(0), dtype=u.dtype)
    second = "gradient"
    for label, w in (("gradient", grad), ("F·u", au), ("random", noise)):
        w_conj = w - (float(au @ w) / float(au @ u)) * u  # Gram–Schmidt in the A-inner product
        if float(w_conj.norm()) > 1e-4 * float(w.norm()):
            second = label
            break
    v = w_conj / w_conj.norm()
    av = fvp(v) + damping * v
    A = np.array([[float(u @ au), float(u @ av)], [float(v @ au), float(v @ av)]])
    A = (A + A.T) / 2
    gram = np.array([[1.0, float(u @ v)], [float(u @ v), 1.0]])
    F = A - damping * gram
    coords = np.linalg.solve(gram, [float(grad @ u), float(grad @ v)])  # g = a·u + b·v (g ∈ plane)
    return Plane(u, v, second, A, F, coords, float(direction.norm()))


def model_ellipse(plane: Plane, max_kl: float, points: int = 121) -> tuple[np.ndarray, np.ndarray]:
    """Points c of the quadratic-model boundary ½ cᵀ A c = δ: c = √(2δ) Q Λ^-½ (cos φ, sin φ)."""
    lam, Q = np.linalg.eigh(plane.A)
    phi = np.linspace(0, 2 * np.pi, points)
    c = math.sqrt(2 * max_kl) * Q @ (np.stack([np.cos(phi), np.sin(phi)]) / np.sqrt(lam)[:, None])
    return c[0], c[1]


def gradient_step(plane: Plane, max_kl: float) -> np.ndarray:
    """The plain gradient step α·g scaled to the same model boundary: ½ α² gᵀAg = δ."""
    gAg = float(plane.g @ plane.A @ plane.g)
    return math.sqrt(2 * max_kl / gAg) * plane.g


def view_scale(max_kl: float) -> float:
    """The δ the slice window is framed for: δ rounded up to a half decade (10^(k/2)), so a grid
    is reused while δ moves inside a half decade and the trust region stays well framed."""
    return 10 ** (math.ceil(2 * math.log10(max_kl) - 1e-9) / 2)


@dataclass(frozen=True)
class Grid:
    """Real L(θ) − L(θ_old) and KL̄(θ) on a grid of plane coordinates: values [len(b), len(a)]."""

    a: np.ndarray
    b: np.ndarray
    gain: np.ndarray
    kl: np.ndarray
    scale: float  # the δ the window was framed for


GRID = (9, 7)  # default slice grid: 9 points along ŝ (a) × 7 along v̂ (b), 63 forward passes


def grid_shape(size: int | tuple[int, int]) -> tuple[int, int]:
    """(points along a, points along b) from an int n (n × n) or a pair."""
    shape = (size, size) if isinstance(size, int) else tuple(size)
    if len(shape) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 3
                                  for n in shape):
        raise ValueError(f"grid_size = {size!r} is not allowed: an integer ≥ 3 or a pair of them")
    return shape  # type: ignore[return-value]


def slice_grid(problem: UpdateProblem, plane: Plane, scale: float,
               size: int | tuple[int, int] = GRID, pad: float = 1.7) -> Grid:
    """Evaluate the slice on a grid covering `pad` × the model ellipse's bounding box at δ = `scale`
    (odd sizes put θ_old itself on the grid)."""
    na, nb = grid_shape(size)
    half = pad * np.sqrt(2 * scale * np.diag(np.linalg.inv(plane.A)))  # ellipse bounding box × pad
    a, b = np.linspace(-half[0], half[0], na), np.linspace(-half[1], half[1], nb)
    A, B = np.meshgrid(a, b)
    coef = torch.as_tensor(np.stack([A.ravel(), B.ravel()], 1), dtype=plane.u.dtype)
    thetas = problem.theta_old + coef[:, :1] * plane.u + coef[:, 1:] * plane.v
    gain, kl = evaluate_at(problem, thetas)
    return Grid(a, b, gain.reshape(nb, na), kl.reshape(nb, na), scale)


# ───────────────────────────── the exact Fisher (small policies) ─────────────────────────────


@dataclass(frozen=True)
class ExactFisher:
    """F formed column by column from Fisher-vector products (float64), with its eigenvalues."""

    matrix: Tensor  # [P, P]
    eigenvalues: Tensor  # [P], ascending
    eigenvectors: Tensor  # [P, P]


def exact_fisher(fvp: Callable[[Tensor], Tensor], num_params: int, dtype: torch.dtype) -> ExactFisher:
    """F = [F e_1 … F e_P] by P Fisher-vector products, symmetrised, with `torch.linalg.eigh`."""
    eye = torch.eye(num_params, dtype=dtype)
    cols = torch.stack([fvp(e) for e in eye], 1).double()
    matrix = (cols + cols.T) / 2
    w, V = torch.linalg.eigh(matrix)
    return ExactFisher(matrix, w, V)


def exact_direction(fisher: ExactFisher, grad: Tensor, damping: float) -> Tensor:
    """(F + damping·I)⁻¹ g from the eigendecomposition (what CG approximates)."""
    V, w = fisher.eigenvectors, fisher.eigenvalues
    return V @ ((V.T @ grad.double()) / (w + damping))


def natural_direction(fisher: ExactFisher, grad: Tensor, rcond: float = 1e-6) -> Tensor:
    """F⁺ g, the undamped natural gradient: a pseudo-inverse that drops eigenvalues below
    `rcond`·max (F is singular for softmax policies, and float32 products blur the smallest)."""
    V, w = fisher.eigenvectors, fisher.eigenvalues
    inv = torch.where(w > rcond * float(w.max()), 1 / w, torch.zeros_like(w))
    return V @ ((V.T @ grad.double()) * inv)


def angle_degrees(x: Tensor, y: Tensor) -> float:
    x, y = x.double(), y.double()
    cos = float(x @ y) / max(float(x.norm() * y.norm()), 1e-300)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def cg_errors(fisher: ExactFisher, grad: Tensor, damping: float, iters: int, tol: float
              ) -> np.ndarray:
    """‖x_k − x*‖ / ‖x*‖ for k = 0 … iters, x* = (F + damping·I)⁻¹ g, x_k the iterate of
    `conjugate_gradient` stopped after k iterations on the exact matrix (float64)."""
    A = fisher.matrix + damping * torch.eye(fisher.matrix.shape[0], dtype=torch.float64)
    b = grad.double()
    target = exact_direction(fisher, grad, damping)
    errors = [1.0]
    for k in range(1, iters + 1):
        result: CGResult = conjugate_gradient(lambda p: A @ p, b, k, tol)
        errors.append(float((result.x - target).norm() / target.norm()))
        if result.iterations < k:  # CG stopped early: later iterates are the same
            errors.extend([errors[-1]] * (iters - k))
            break
    return np.array(errors)
