"""Exercises that check themselves (notebook 01).

The student writes four steps of TRPO; after each, a `check_...` function runs the student's function
and trpo_lab's own implementation on random problems and explains the first difference it finds,
naming the usual mistake when the output matches it (wrong sign, forgotten damping, KL direction,
off-by-one in GAE, not starting at zero, …). Each check returns a `CheckResult` that is truthy when
everything passed, so a notebook cell reads `assert check_gae(gae)`.

    conjugate_gradient(Av, b, iters, tol) -> x                 x ≈ A⁻¹b, from x₀ = 0
    fisher_vector_product(problem, v, damping) -> (F + damping·I) v
    line_search(problem, full_step, max_kl, backtrack_coef, backtrack_iters) -> θ
    gae(rewards, values, next_values, terminated, episode_ends, gamma, lam) -> Â     (1-D, [T])

Solutions: `trpo_lab.solutions` holds one per exercise. An exercise cell decorated with `@exercise` runs
the student's code, or — loudly, and then it scores 0 — the reference for the exercises named in
TRPO_LAB_SOLUTIONS or `use_reference(...)` (see `trpo_lab.grading`). A student's function that calls
trpo_lab's own implementation of the exercise fails its check with a message saying so.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import kl_divergence

from . import advantages as adv
from . import cg
from . import problem as pr
from . import trust_region as tr
from .advantages import gae as reference_gae
from .grading import (  # noqa: F401  (re-exported for notebooks)
    SOLUTIONS_VAR,
    CheckResult,
    exercise,
    reference_chosen,
    solutions_enabled,
    use_reference,
)
from .grading import (
    Failed as _Failed,
)
from .grading import (
    as_vector as _as_vector,
)
from .grading import (
    call as _call,
)
from .grading import (
    close as _close,
)
from .grading import (
    run as _run,
)
from .policies import PolicySpec, build_policy


def show_solution(name: str) -> str:
    """Print and return the source of the solution `name` (for teachers handing out answers)."""
    from .grading import _solution

    source = inspect.getsource(_solution(name))
    print(source)
    return source


# ───────────────────────────── conjugate gradient ─────────────────────────────


def _spd(n: int, g: torch.Generator, low: float, high: float) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(math.log10(low), math.log10(high), n, dtype=torch.float64)
    return q @ torch.diag(eig) @ q.T


def _cg_second_iterate(A: Tensor, b: Tensor, residual_sign: float, beta_zero: bool) -> Tensor:
    """x₂ of CG with a planted mistake (for explanations only)."""
    a1 = (b @ b) / (b @ A @ b)
    x, r = a1 * b, b + residual_sign * a1 * (A @ b)
    p = r if beta_zero else r + (r @ r) / (b @ b) * b
    return x + (r @ r) / (p @ A @ p) * p


def check_conjugate_gradient(student: Callable, seed: int = 0, verbose: bool = True) -> CheckResult:
    """Check `student(Av, b, iters, tol) -> x` against `trust_region.conjugate_gradient` on random
    symmetric positive-definite systems (well and badly conditioned, 2 to 12 unknowns)."""

    def cases(result: CheckResult) -> None:
        g = torch.Generator().manual_seed(seed)
        calls = [0]  # products with A made by the student's last call
        for n, low, high in ((2, 0.5, 4.0), (5, 0.5, 5.0), (12, 0.3, 3.0), (8, 1e-3, 10.0)):
            A, b = _spd(n, g, low, high), torch.randn(n, generator=g, dtype=torch.float64)

            def Av(v: Tensor, A: Tensor = A) -> Tensor:
                calls[0] += 1
                return A @ v

            where = f"A is {n}×{n} with eigenvalues in [{low:g}, {high:g}]"
            zero = _call(student, f"b = 0 ({where})", Av, torch.zeros(n, dtype=torch.float64), 5, 1e-10)
            zero = getattr(zero, "x", zero)
            if isinstance(zero, Tensor) and zero.shape == b.shape and not torch.isfinite(zero).all():
                raise _Failed(f"with b = 0 ({where}) you returned NaN: r₀ = b = 0, so α = 0/0; test "
                              "rᵀr ≤ tol·bᵀb before each iteration, which returns x₀ = 0 at once")
            zero = _as_vector(zero, "b = 0", b, "x")
            if zero.abs().max() > 0:
                raise _Failed(f"with b = 0 ({where}) the answer is x = 0 but you returned ‖x‖ = "
                              f"{float(zero.norm()):.3g}: start from x₀ = 0 (not random noise), so r₀ = b")
            result.cases += 1
            case = f"one iteration ({where})"
            calls[0] = 0
            x1 = _as_vector(_call(student, case, Av, b.clone(), 1, 1e-30), case, b, "x")
            if calls[0] > 2:
                raise _Failed(f"{case}: iters = 1 but you made {calls[0]} products with A: do exactly "
                              "`iters` iterations, one product A p each (never form A)")
            again = _as_vector(_call(student, case, Av, b.clone(), 1, 1e-30), case, b, "x")
            if not torch.equal(x1, again):
                raise _Failed(f"{case}: two calls with the same A and b returned different x: CG must be "
                              "deterministic; start from x₀ = 0, not from random noise")
            alpha = float(b @ b / (b @ A @ b))
            if n > 1 and _close(x1, torch.linalg.solve(A, b), 1e-9):
                raise _Failed(f"{case}: with iters = 1 you returned A⁻¹b exactly: do only `iters` "
                              "iterations, one product A p each (never form A or solve directly)")
            if not _close(x1, alpha * b):
                scale = float(x1 @ b / (b @ b))
                if not _close(x1, scale * b, 1e-6):
                    raise _Failed(f"{case}: x₁ must be a multiple of b (x₀ = 0, p₀ = r₀ = b, x₁ = α₀ b); "
                                  "yours is not: did you start from x₀ = 0 and take p₀ = b?")
                if _close(torch.tensor(-scale), torch.tensor(alpha), 1e-6):
                    raise _Failed(f"{case}: wrong sign: x₁ = −α₀ b; the residual is r = b − A x and x "
                                  "moves along +p")
                raise _Failed(f"{case}: the step length is wrong: α = rᵀr / pᵀAp = {alpha:.6g}, "
                              f"yours is {scale:.6g} (pᵀp in the denominator? rᵀAr?)")
            result.cases += 1
            for k in range(2, n + 1):
                case = f"{k} iterations ({where})"
                calls[0] = 0
                x = _as_vector(_call(student, case, Av, b.clone(), k, 1e-30), case, b, "x")
                expected = tr.conjugate_gradient(lambda v, A=A: A @ v, b, k, 1e-30).x
                if not _close(x, expected, 1e-6 if low > 0.1 else 1e-4):
                    if k == 2 and _close(x, _cg_second_iterate(A, b, +1.0, False), 1e-6):
                        hint = "the residual update has the wrong sign: r ← r − α A p"
                    elif k == 2 and _close(x, _cg_second_iterate(A, b, -1.0, True), 1e-6):
                        hint = ("the new direction ignores the old one (steepest descent): "
                                "p ← r + β p with β = r_newᵀr_new / r_oldᵀr_old")
                    elif _close(x, alpha * b, 1e-6):
                        hint = "x never leaves the first direction: update p after each step"
                    else:
                        hint = ("after a correct first step the search directions go wrong: check "
                                "r ← r − α A p, β = r_newᵀr_new / r_oldᵀr_old, p ← r + β p")
                    raise _Failed(f"{case}: x differs from conjugate gradient's x_{k} (relative error "
                                  f"{float((x - expected).norm() / expected.norm()):.2g}): {hint}")
                if calls[0] > k + 1:
                    raise _Failed(f"{case}: you made {calls[0]} products with A for {k} iterations; CG "
                                  "needs one per iteration (never form A; reuse A p for α and for r)")
                result.cases += 1
            if low > 0.1:
                exact = torch.linalg.solve(A, b)
                if not _close(x, exact, 1e-6):
                    raise _Failed(f"{n} iterations ({where}): in exact arithmetic CG solves an n×n system "
                                  "in n iterations, but x is not A⁻¹b")
                result.cases += 1
            # ‖b‖² = 400, so a relative tol (tol·bᵀb = 20), its square root (tol²·bᵀb = 1) and an
            # absolute tol (0.05) stop at different iterations
            tol, big = 0.05, b * (20.0 / b.norm())
            case = f"tol = {tol:g}, ‖b‖² = 400 ({where})"
            x = _as_vector(_call(student, case, Av, big.clone(), n, tol), case, b, "x")
            expected = tr.conjugate_gradient(lambda v, A=A: A @ v, big, n, tol).x
            if not _close(x, expected, 1e-6):
                if _close(x, tr.conjugate_gradient(lambda v, A=A: A @ v, big, n, tol / 400.0).x, 1e-6):
                    raise _Failed(f"{case}: you stop when rᵀr < tol; the tolerance is relative to b: "
                                  "stop when rᵀr ≤ tol·bᵀb (a small g must still be solved)")
                if _close(x, tr.conjugate_gradient(lambda v, A=A: A @ v, big, n, tol**2).x, 1e-6):
                    raise _Failed(f"{case}: you stop when ‖r‖ ≤ tol·‖b‖; trpo_lab stops when "
                                  "‖r‖² = rᵀr ≤ tol·bᵀb")
                raise _Failed(f"{case}: stop as soon as rᵀr ≤ tol·bᵀb (checked before each iteration); "
                              "your x is not the early-stopped one")
            result.cases += 1

    return _run("conjugate_gradient", student, cases, verbose,
                lambda: [cg.conjugate_gradient, tr.natural_direction])


# ───────────────────────────── Fisher-vector product ─────────────────────────────


def random_problem(kind: str = "categorical", seed: int = 0, batch: int = 64,
                   fvp_fraction: float = 1.0) -> tr.UpdateProblem:
    """A small float64 `UpdateProblem` with random states, sampled actions and random advantages."""
    spec = PolicySpec(kind, 3, 3 if kind == "categorical" else 2, (5,), "tanh", -0.3)
    with torch.random.fork_rng():  # the initialisation draws from the global RNG: leave it untouched
        torch.manual_seed(seed)
        policy = build_policy(spec).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in policy.parameters():  # varied distributions, not the near-uniform initial ones
            p.add_(0.4 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    obs = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    actions = policy.sample(obs, g)
    advantages = torch.randn(batch, generator=g, dtype=torch.float64)
    return tr.make_update_problem(policy, obs, actions, advantages, fvp_fraction,
                                  normalize_advantages=True, generator=g)


def _explain_fvp(problem: tr.UpdateProblem, v: Tensor, damping: float, y: Tensor, Fv: Tensor) -> str:
    fit = torch.linalg.lstsq(torch.stack([Fv, v], 1), y[:, None]).solution[:, 0]
    a, c = float(fit[0]), float(fit[1])
    if _close(a * Fv + c * v, y, 1e-6):
        rows = problem.batch_size if problem.fvp_rows is None else len(problem.fvp_rows)
        if abs(a - 1) < 1e-6:
            if abs(c) < 1e-9 and damping > 0:
                return "you forgot the damping: return F v + damping·v"
            if abs(c + damping) < 1e-9:
                return "the damping has the wrong sign: F v + damping·v, not F v − damping·v"
            return f"the damping term is {c:.3g}·v; it must be damping·v = {damping:g}·v"
        if abs(a) < 1e-6:
            return ("your F v is zero: the KL must compare π_θ with a *fixed* π_old; if both sides "
                    "depend on θ (π_old not detached, or KL(π_θ ‖ π_θ)) the KL is 0 for every θ and so "
                    "is its Hessian. Use problem.old_distribution() for π_old")
        if abs(a + 1) < 1e-6:
            return "wrong sign: F is the Hessian of +KL̄ (positive semi-definite), your product is −F v"
        if abs(a - rows) < 1e-6 * rows:
            return f"your F v is {rows}× too large: KL̄ is the mean over states, not the sum"
        return f"your F v is {a:.4g} × the Hessian-vector product of KL̄ (a factor of ½ or 2?)"
    theta = problem.theta_old.detach()
    if problem.fvp_rows is not None:
        full = tr.fisher_operator(dataclasses.replace(problem, fvp_rows=None))(v)
        if _close(y, full + damping * v, 1e-6):
            return ("you used every state, but problem.fvp_rows selects the subsample for F v "
                    "(pass rows=problem.fvp_rows to distribution_at and old_distribution)")
    rows = problem.fvp_rows

    def log_prob(th: Tensor) -> Tensor:
        actions = problem.actions if rows is None else problem.actions[rows]
        return problem.distribution_at(th, rows).log_prob(actions)

    J = torch.autograd.functional.jacobian(log_prob, theta)
    if _close(y, J.T @ (J @ v) / J.shape[0] + damping * v, 1e-6):
        return ("that is the empirical Fisher (mean of ∇log π ∇log πᵀ over the sampled actions); TRPO uses "
                "the Hessian of the analytic mean KL, exact in expectation over actions")
    old_log_prob = problem.old_log_prob if rows is None else problem.old_log_prob[rows]
    sampled = torch.autograd.functional.hvp(lambda th: (old_log_prob - log_prob(th)).mean(), theta, v)[1]
    if _close(y, sampled + damping * v, 1e-6) or _close(y, sampled, 1e-6):
        cos = float(y @ (Fv + damping * v) / (y.norm() * (Fv + damping * v).norm() + 1e-300))
        return ("you differentiated the sampled KL estimate mean(log π_old(a|s) − log π_θ(a|s)) over the "
                "batch's actions. Its Hessian −mean ∇²log π_θ(a|s) is an unbiased estimate of F (its "
                "expectation over a ~ π_old is F), but on one batch it is noisy and need not even be "
                f"positive semi-definite (cosine with the right answer {cos:.3f}). TRPO differentiates "
                "the analytic KL between the distributions, exact for every state: "
                "kl_divergence(problem.old_distribution(rows), problem.distribution_at(theta, rows))")
    hvp = torch.autograd.functional.hvp(lambda th: tr.surrogate(problem, th), theta, v)[1]
    if _close(y, hvp + damping * v, 1e-6) or _close(y, hvp, 1e-6):
        return "that is the Hessian of the surrogate L, not of the mean KL"
    cos = float(y @ (Fv + damping * v) / (y.norm() * (Fv + damping * v).norm() + 1e-300))
    return (f"your result is not (F + damping·I) v (cosine with the right answer {cos:.3f}); F is the "
            "Hessian of KL̄(θ) = mean_s KL(π_old(·|s) ‖ π_θ(·|s)) at θ_old: grad with create_graph=True, "
            "then the gradient of (∇KL̄ · v)")


def _call_fvp(student: Callable, case: str, problem: tr.UpdateProblem, v: Tensor, damping: float):
    """The student's F v; torch's errors of a first-order-only gradient get an explanation."""
    try:
        return _call(student, case, problem, v, damping)
    except _Failed as e:
        text = str(e.__cause__ or "")
        if isinstance(e.__cause__, RuntimeError) and ("does not require grad" in text
                                                      or "not have been used in the graph" in text):
            raise _Failed(f"{case}: the second torch.autograd.grad failed ({text.splitlines()[0]}). The "
                          "first gradient ∇KL̄ was taken without create_graph=True, so it is a constant "
                          "with no graph and (∇KL̄ · v) cannot be differentiated again: call "
                          "torch.autograd.grad(kl, theta, create_graph=True) first") from e
        raise


def check_fisher_vector_product(student: Callable, seed: int = 0, verbose: bool = True) -> CheckResult:
    """Check `student(problem, v, damping) -> (F + damping·I) v` against `trust_region.fisher_operator`
    on random categorical and Gaussian policies (and on a problem whose F uses a subsample of rows)."""

    def cases(result: CheckResult) -> None:
        g = torch.Generator().manual_seed(seed)
        for kind, fraction in (("categorical", 1.0), ("gaussian", 1.0), ("categorical", 0.5)):
            problem = random_problem(kind, seed, fvp_fraction=fraction)
            theta_before = problem.theta_old.clone()
            Fop = tr.fisher_operator(problem)
            for damping in (0.1, 0.0, 0.37):
                v = torch.randn(problem.num_params, generator=g, dtype=torch.float64)
                v_before = v.clone()
                case = f"{kind} policy, damping = {damping}"
                case += ", F on half the rows" if fraction < 1 else ""
                y = _as_vector(_call_fvp(student, case, problem, v, damping), case, v, "(F + damping·I) v")
                if not torch.equal(v, v_before) or not torch.equal(problem.theta_old, theta_before):
                    raise _Failed(f"{case}: your function changed its input v or problem.theta_old in place")
                Fv = Fop(v)
                if not _close(y, Fv + damping * v, 1e-6):
                    raise _Failed(f"{case}: {_explain_fvp(problem, v, damping, y, Fv)}")
                result.cases += 1
        result.notes.append("both KL directions have the same Hessian at θ_old, so F v cannot tell them "
                            "apart; the line search can (the constraint is KL(π_old ‖ π_θ))")

    return _run("fisher_vector_product", student, cases, verbose,
                lambda: [pr.fisher_operator, pr.double_backprop_fisher_operator,
                         pr.fisher_vector_product, pr.empirical_fisher_operator])


# ───────────────────────────── line search ─────────────────────────────


def _line_search(problem: tr.UpdateProblem, step: Tensor, max_kl: float, coef: float, iters: int,
                 mistake: str = "") -> Tensor:
    """trpo_lab's backtracking line search on `problem`, or a version with a planted `mistake`."""
    with torch.no_grad():
        old = float(tr.surrogate(problem, problem.theta_old))

        def evaluate(theta: Tensor) -> tuple[float, float]:
            gain = float(tr.surrogate(problem, theta)) - old
            if mistake == "reverse_kl":
                kl = float(kl_divergence(problem.distribution_at(theta), problem.old_distribution()).mean())
            elif mistake == "max_kl":
                kl = float(kl_divergence(problem.old_distribution(), problem.distribution_at(theta)).max())
            else:
                kl = float(tr.mean_kl(problem, theta))
            return {"no_kl": (gain, 0.0), "no_gain": (1.0, kl), "kl_flipped": (gain, 2 * max_kl - kl)
                    }.get(mistake, (gain, kl))

        start = step * coef if mistake == "starts_at_coef" else step
        n = iters + {"one_less": -1, "one_more": 1}.get(mistake, 0)
        theta, trials = tr.backtracking_line_search(evaluate, problem.theta_old, start, 0.0, max_kl, coef,
                                                    max(n, 1))
    if mistake == "last_trial" and not trials[-1].accepted:
        return problem.theta_old + trials[-1].fraction * start
    return theta


_LINE_SEARCH_MISTAKES = {
    "reverse_kl": "you measure KL(π_θ ‖ π_old). Some implementations do (Spinning Up's TRPO for Gaussian "
                  "policies, for one), and near θ_old it gives nearly the same steps; but the paper's "
                  "constraint (eq. 12), which this lab and this exercise follow, is KL(π_old ‖ π_θ), old "
                  "policy first: "
                  "kl_divergence(problem.old_distribution(), problem.distribution_at(θ)) (see exercise 2)",
    "max_kl": "you constrained the largest per-state KL (D_KL^max of Theorem 1); the practical "
              "constraint (eq. 12) is the mean over states, KL̄ ≤ δ: take .mean() of the per-state KLs, "
              "not .max() (the max rejects steps the mean accepts)",
    "no_kl": "you accepted a trial whose mean KL exceeds δ: check KL̄ ≤ max_kl before accepting",
    "kl_flipped": "the KL test is reversed: accept when KL̄ ≤ δ, reject when KL̄ > δ",
    "no_gain": "you accepted a trial whose surrogate does not improve: require L(θ) − L(θ_old) > 0",
    "starts_at_coef": "the first trial must be the full step (fraction c⁰ = 1), then c, c², …",
    "one_less": "you tried one trial too few: fractions c⁰ … c^(backtrack_iters−1)",
    "one_more": "you tried one trial too many: exactly backtrack_iters trials, fractions c⁰ … c^(n−1)",
    "last_trial": "when no trial is accepted return θ_old itself, not the last (rejected) trial",
}


def _kl_edge(problem: tr.UpdateProblem, step: Tensor, max_kl: float, reverse: bool) -> float:
    """The multiplier t at which the mean KL of θ_old + t·step reaches `max_kl` (bisection)."""
    with torch.no_grad():
        def kl(t: float) -> float:
            old, new = problem.old_distribution(), problem.distribution_at(problem.theta_old + t * step)
            return float((kl_divergence(new, old) if reverse else kl_divergence(old, new)).mean())

        low, high = 0.0, 1.0
        while kl(high) < max_kl and high < 1e3:
            low, high = high, 2 * high
        for _ in range(20):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if kl(mid) < max_kl else (low, mid)
    return 0.5 * (low + high)


def _line_search_scenarios(problem: tr.UpdateProblem) -> list[tuple[str, Tensor, float, float, int]]:
    natural = tr.trpo_step(problem, max_kl=0.01, damping=0.1).full_step
    assert natural is not None
    scenarios = [("the natural step for δ = 0.01", natural, 0.01, 0.8, 10),
                 ("a step 10× too long", 10 * natural, 0.01, 0.6, 10),
                 ("a step against the gradient", -natural, 0.01, 0.8, 5),
                 ("a step too long for 3 trials", 40 * natural, 0.01, 0.5, 3)]
    # where KL(π_old ‖ π_θ) = δ and KL(π_θ ‖ π_old) = δ at different step lengths, stop in between
    t = 0.5 * (_kl_edge(problem, natural, 0.05, False) + _kl_edge(problem, natural, 0.05, True))
    edge = ("a step between the δ-edges of the two KL directions", t * natural, 0.05, 0.8, 4)
    if not torch.equal(_line_search(problem, *edge[1:]), _line_search(problem, *edge[1:], "reverse_kl")):
        scenarios.append(edge)
    return scenarios


def check_line_search(student: Callable, seed: int = 0, verbose: bool = True) -> CheckResult:
    """Check `student(problem, full_step, max_kl, backtrack_coef, backtrack_iters) -> θ` against
    trpo_lab's backtracking line search on steps that are accepted at once, need backtracking, never
    improve, or run out of trials, for a categorical and a Gaussian policy."""

    def cases(result: CheckResult) -> None:
        for kind in ("categorical", "gaussian"):
            problem = random_problem(kind, seed + 7, batch=128)
            for label, step, max_kl, coef, iters in _line_search_scenarios(problem):
                case = f"{kind} policy, {label} (max_kl = {max_kl}, coef = {coef}, iters = {iters})"
                out = _call(student, case, problem, step.clone(), max_kl, coef, iters)
                theta = _as_vector(out, case, problem.theta_old, "θ")
                expected = _line_search(problem, step, max_kl, coef, iters)
                if torch.allclose(theta, expected, rtol=0, atol=1e-12):
                    result.cases += 1
                    continue
                frac = float((expected - problem.theta_old) @ step / (step @ step))
                got = float((theta - problem.theta_old) @ step / (step @ step))
                said = (f"{case}: expected θ_old + {frac:.4g}·full_step" if frac else
                        f"{case}: expected θ_old (no trial is acceptable)")
                if torch.allclose(theta, expected - problem.theta_old, atol=1e-12):
                    raise _Failed(f"{said}; you returned the step itself: return θ_old + fraction·full_step")
                for mistake, why in _LINE_SEARCH_MISTAKES.items():
                    if torch.allclose(theta, _line_search(problem, step, max_kl, coef, iters, mistake),
                                      rtol=0, atol=1e-12):
                        raise _Failed(f"{said}, you returned fraction {got:.4g}: {why}")
                raise _Failed(f"{said}, you returned fraction {got:.4g}: try fractions 1, c, c², … in turn "
                              "and return the first θ with KL̄(π_old ‖ π_θ) ≤ δ and L(θ) > L(θ_old)")

    return _run("line_search", student, cases, verbose,
                lambda: [tr.backtracking_line_search, tr.trpo_step, tr.update_step])


# ───────────────────────────── GAE ─────────────────────────────


def _gae_case(T: int, g: torch.Generator, term_at: tuple[int, ...], trunc_at: tuple[int, ...]):
    rewards = torch.randn(T, generator=g, dtype=torch.float64)
    values = torch.randn(T, generator=g, dtype=torch.float64)
    terminated = torch.zeros(T, dtype=torch.bool)
    ends = torch.zeros(T, dtype=torch.bool)
    terminated[list(term_at)] = True
    ends[list(term_at + trunc_at)] = True
    next_values = torch.cat([values[1:], torch.randn(1, generator=g, dtype=torch.float64)])
    for t in term_at + trunc_at:  # the real s_{t+1} of an ended episode is not the next row's state
        next_values[t] = float(torch.randn(1, generator=g, dtype=torch.float64))
    return rewards, values, next_values, terminated, ends


def _explain_gae(args: tuple, gamma: float, lam: float, got: Tensor, expected: Tensor) -> str:
    r, V, Vn, term, ends = args
    no = torch.zeros_like(term)
    shifted = torch.cat([V[1:], V.new_zeros(1)])
    variants = [
        (reference_gae(r, V, Vn, no, ends, gamma, lam)[0],
         "you bootstrap V(s_{t+1}) after a termination: δ_t = r_t + γ(1 − terminated_t)V(s_{t+1}) − V(s_t)"),
        (reference_gae(r, V, Vn, term, term, gamma, lam)[0],
         "you cut the carry only at terminations; a truncation (time limit) also ends the episode: "
         "use episode_ends for the carry"),
        (reference_gae(r, V, Vn, term, no, gamma, lam)[0],
         "advantages leak across episode boundaries: the carry γλ·Â_{t+1} must be cut where episode_ends"),
        (reference_gae(r, V, Vn, ends, ends, gamma, lam)[0],
         "at a truncation the episode was cut by a time limit, not ended: still bootstrap V(s_{t+1}) "
         "(only `terminated` removes it)"),
        (reference_gae(r, V, shifted, term, ends, gamma, lam)[0],
         "off-by-one: you used values[t+1] as V(s_{t+1}); at the last step and at episode ends the next "
         "state's value is next_values[t]"),
        (reference_gae(r, V, torch.cat([V[1:], V[-1:]]), term, ends, gamma, lam)[0],
         "off-by-one: you used values[t+1] as V(s_{t+1}); use next_values[t]"),
        (reference_gae(r, V, Vn, term, ends, gamma, 1.0)[0],
         "λ is missing: the carry is γλ·Â_{t+1}, not γ·Â_{t+1}"),
        (-expected, "wrong sign: δ_t = r_t + γV(s_{t+1}) − V(s_t)"),
        (expected + V, "that is the value target R̂ = Â + V(s_t): return the advantage Â"),
        ((expected - expected.mean()) / (expected.std() + 1e-8),
         "you normalised the advantages (mean 0, std 1): GAE returns the raw Â; the update normalises "
         "each batch's advantages later (make_update_problem(normalize_advantages=True)), and the value "
         "targets Â + V need the raw ones"),
        ((expected - expected.mean()) / (expected.std(unbiased=False) + 1e-8),
         "you normalised the advantages (mean 0, std 1): GAE returns the raw Â; the update normalises "
         "each batch's advantages later (make_update_problem(normalize_advantages=True)), and the value "
         "targets Â + V need the raw ones"),
    ]
    if 0 < lam <= gamma:
        variants.append((reference_gae(r, V, Vn, term, ends, gamma, lam / gamma)[0],
                         "γ is missing from the carry: Â_t = δ_t + γλ·Â_{t+1}"))
    for variant, why in variants:
        if _close(got, variant, 1e-9):
            return why
    if _close(got[:-1], expected[1:], 1e-9) or _close(got[1:], expected[:-1], 1e-9):
        return "off-by-one: your advantages are shifted by one step against δ_t"
    if _close(got[:-1], reference_gae(r[:-1], V[:-1], Vn[:-1], term[:-1], ends[:-1], gamma, lam)[0], 1e-9):
        return "the last step t = T − 1 is missing: loop over reversed(range(T))"
    t = int(torch.nonzero((got - expected).abs() > 1e-9 * (1 + expected.abs()))[0])
    return (f"first wrong at t = {t}: expected {float(expected[t]):.6g}, got {float(got[t]):.6g}; go "
            "backwards: Â_t = δ_t + γλ(1 − end_t)·Â_{t+1}, "
            "δ_t = r_t + γ(1 − terminated_t)V(s_{t+1}) − V(s_t)")


def check_gae(student: Callable, seed: int = 0, verbose: bool = True) -> CheckResult:
    """Check `student(rewards, values, next_values, terminated, episode_ends, gamma, lam) -> Â` (1-D
    tensors [T]; returning (Â, value targets) is fine too) against `advantages.gae`: λ = 0 (TD errors),
    λ = 1 (Monte-Carlo), a termination, a truncation, several episodes."""

    def cases(result: CheckResult) -> None:
        g = torch.Generator().manual_seed(seed)
        settings = [("λ = 0, one episode", 0.9, 0.0, (), ()),
                    ("λ = 1, one episode", 0.9, 1.0, (), ()),
                    ("a termination at t = 4", 0.9, 0.95, (4,), ()),
                    ("a truncation at t = 7", 0.95, 0.9, (), (7,)),
                    ("a termination at t = 2, truncations at t = 6 and 9", 0.95, 0.8, (2,), (6, 9))]
        for label, gamma, lam, term_at, trunc_at in settings:
            args = _gae_case(12, g, term_at, trunc_at)
            copies = tuple(a.clone() for a in args)
            case = f"{label} (T = 12, γ = {gamma}, λ = {lam})"
            out = _call(student, case, *copies, gamma, lam)
            if any(not torch.equal(a, c) for a, c in zip(args, copies, strict=True)):
                raise _Failed(f"{case}: your function changed its inputs in place")
            expected, targets = reference_gae(*args, gamma, lam)
            got = _as_vector(out, case, expected, "advantages")
            if not _close(got, expected, 1e-9):
                raise _Failed(f"{case}: {_explain_gae(args, gamma, lam, got, expected)}")
            if isinstance(out, tuple) and len(out) > 1 and isinstance(out[1], Tensor):
                if not _close(out[1].detach().to(targets.dtype), targets, 1e-9):
                    raise _Failed(f"{case}: the advantages are right but the value targets are not Â + V")
            result.cases += 1

    return _run("gae", student, cases, verbose, lambda: [adv.gae, adv.td_errors])
