"""The exercise checks pass trpo_lab's reference and the handed-out solutions, and catch planted
mistakes (written the way students make them) with an explanation that names the mistake."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.distributions import kl_divergence

from trpo_lab import advantages, solutions, trust_region
from trpo_lab.exercises import (
    check_conjugate_gradient,
    check_fisher_vector_product,
    check_gae,
    check_line_search,
    exercise,
    random_problem,
    show_solution,
    solutions_enabled,
)

# ───────────────────────────── the right answers pass ─────────────────────────────


def written(fn):
    """The same code as `fn`, compiled anew: a student who typed the reference solution (the guard only
    fails calls into trpo_lab's own function objects)."""
    import inspect
    namespace = dict(fn.__globals__)
    exec(compile(inspect.getsource(fn), f"<student {fn.__name__}>", "exec"), namespace)
    return namespace[fn.__name__]


def test_the_solutions_written_out_pass_every_check():
    for check, fn in ((check_conjugate_gradient, solutions.conjugate_gradient),
                      (check_fisher_vector_product, solutions.fisher_vector_product),
                      (check_line_search, solutions.line_search), (check_gae, solutions.gae)):
        result = check(written(fn), verbose=False)
        assert result.passed, result
        assert result and result.cases >= 5


@pytest.mark.parametrize("check, answer, called", [
    (check_conjugate_gradient,
     lambda Av, b, iters, tol: trust_region.conjugate_gradient(Av, b, iters, tol).x, "cg.conjugate_gradient"),
    (check_fisher_vector_product, trust_region.fisher_vector_product, "problem.fisher_vector_product"),
    (check_fisher_vector_product,
     lambda problem, v, damping: trust_region.fisher_operator(problem)(v) + damping * v, "fisher_operator"),
    (check_line_search,
     lambda problem, step, max_kl, coef=0.8, iters=10: trust_region.trpo_step(
         problem, max_kl=max_kl, backtrack_coef=coef, backtrack_iters=iters).theta_new, "trpo_step"),
    (check_gae, lambda *args: advantages.gae(*args)[0], "advantages.gae"),
    (check_gae, lambda *args: solutions.gae(*args), "solutions.gae"),
])
def test_calling_trpo_labs_own_implementation_fails_with_a_reason(check, answer, called):
    problem = _fails_with(check, answer, "trpo_lab's own implementation", called, "scores 0")
    assert problem.count("trpo_lab") >= 1


def test_the_checks_pass_trpo_labs_own_implementations_outside_a_student_function():
    # the guard is on the call, not on the numbers: the library's answers are the checks' answers
    from trpo_lab.grading import _forbidden
    assert not _forbidden.get()


def _fails_with(check, fn, *words: str) -> str:
    result = check(fn, verbose=False)
    assert not result.passed, f"{check.__name__} did not catch the planted mistake"
    assert not result
    for word in words:
        assert word in result.problem, f"expected {word!r} in the explanation:\n{result.problem}"
    assert "✘" in str(result)
    return result.problem


# ───────────────────────────── conjugate gradient: planted mistakes ─────────────────────────────


def cg(Av, b, iters=10, tol=1e-10, *, start=None, residual_sign=-1.0, beta=True, alpha_pp=False,
       norm_tol=False, x_sign=1.0, absolute_tol=False):
    """A student's CG with switches for the usual mistakes."""
    x = torch.zeros_like(b) if start is None else start(b)
    r = b - Av(x) if start is not None else b.clone()
    p = r.clone()
    rr = r @ r
    bb = b @ b
    for _ in range(iters):
        if absolute_tol:
            if rr < tol:
                break
        elif (rr.sqrt() <= tol * bb.sqrt()) if norm_tol else (rr <= tol * bb):
            break
        Ap = Av(p)
        alpha = rr / (p @ p if alpha_pp else p @ Ap)
        x = x + x_sign * alpha * p
        r = r + residual_sign * alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p if beta else r.clone()
        rr = rr_new
    return x


def test_cg_student_model_without_mistakes_passes():
    assert check_conjugate_gradient(cg, verbose=False)


@pytest.mark.parametrize("mistake, words", [
    (dict(start=lambda b: torch.randn_like(b)), ("x₀ = 0",)),
    (dict(residual_sign=+1.0), ("residual update has the wrong sign",)),
    (dict(beta=False), ("steepest descent",)),
    (dict(alpha_pp=True), ("step length",)),
    (dict(norm_tol=True), ("‖r‖ ≤ tol·‖b‖",)),
    (dict(absolute_tol=True), ("relative to b",)),
    (dict(x_sign=-1.0), ("wrong sign",)),
])
def test_cg_catches_planted_mistakes(mistake, words):
    _fails_with(check_conjugate_gradient, lambda Av, b, iters, tol: cg(Av, b, iters, tol, **mistake), *words)


def test_cg_explains_nan_when_convergence_is_tested_too_late():
    def late_test(Av, b, iters=10, tol=1e-10):
        x, r = torch.zeros_like(b), b.clone()
        p, rr = r.clone(), r @ r
        for _ in range(iters):
            Ap = Av(p)
            alpha = rr / (p @ Ap)
            x, r = x + alpha * p, r - alpha * Ap
            rr_new = r @ r
            if rr_new < tol:
                break
            p, rr = r + (rr_new / rr) * p, rr_new
        return x

    _fails_with(check_conjugate_gradient, late_test, "NaN", "before each iteration")


def test_cg_catches_forming_the_matrix():
    def forms_A(Av, b, iters=10, tol=1e-10):
        A = torch.stack([Av(e) for e in torch.eye(len(b), dtype=b.dtype)], 1)
        return torch.linalg.solve(A, b)

    _fails_with(check_conjugate_gradient, forms_A, "never form A")


def test_cg_reports_exceptions_and_wrong_types():
    def unfinished(Av, b, iters=10, tol=1e-10):
        raise NotImplementedError("write conjugate_gradient")

    _fails_with(check_conjugate_gradient, unfinished, "NotImplementedError", "write conjugate_gradient")
    _fails_with(check_conjugate_gradient, lambda Av, b, iters, tol: b.tolist(), "torch.Tensor")
    _fails_with(check_conjugate_gradient, lambda Av, b, iters, tol: b[:1], "shape")


# ───────────────────────────── Fisher-vector product: planted mistakes ─────────────────────────────


def fvp(problem, v, damping, *, damping_sign=1.0, detach_old=True, reduce="mean", rows=True,
        reverse=False):
    """A student's Fisher-vector product with switches for the usual mistakes."""
    theta = problem.theta_old.detach().clone().requires_grad_(True)
    r = problem.fvp_rows if rows else None
    old = problem.old_distribution(r) if detach_old else problem.distribution_at(theta, r)
    new = problem.distribution_at(theta, r)
    kl = kl_divergence(new, old) if reverse else kl_divergence(old, new)
    kl = kl.mean() if reduce == "mean" else kl.sum()
    (grad,) = torch.autograd.grad(kl, theta, create_graph=True)
    (fv,) = torch.autograd.grad(grad @ v, theta, allow_unused=True)
    fv = torch.zeros_like(v) if fv is None else fv
    return fv + damping_sign * damping * v


def empirical_fisher(problem, v, damping):
    theta = problem.theta_old.detach()

    def log_prob(th):
        return problem.distribution_at(th).log_prob(problem.actions)

    J = torch.autograd.functional.jacobian(log_prob, theta)
    return J.T @ (J @ v) / J.shape[0] + damping * v


def surrogate_hessian(problem, v, damping):
    theta = problem.theta_old.detach()
    return torch.autograd.functional.hvp(lambda th: trust_region.surrogate(problem, th), theta, v)[1] \
        + damping * v


def test_fvp_student_model_passes_and_either_kl_direction_is_accepted():
    assert check_fisher_vector_product(fvp, verbose=False)
    result = check_fisher_vector_product(lambda p, v, d: fvp(p, v, d, reverse=True), verbose=False)
    assert result.passed and "same Hessian" in result.notes[0]


@pytest.mark.parametrize("mistake, words", [
    (dict(damping_sign=0.0), ("forgot the damping",)),
    (dict(damping_sign=-1.0), ("damping has the wrong sign",)),
    (dict(detach_old=False), ("zero", "fixed")),
    (dict(reduce="sum"), ("mean over states, not the sum",)),
    (dict(rows=False), ("fvp_rows",)),
])
def test_fvp_catches_planted_mistakes(mistake, words):
    _fails_with(check_fisher_vector_product, lambda p, v, d: fvp(p, v, d, **mistake), *words)


def test_fvp_names_the_wrong_matrix():
    _fails_with(check_fisher_vector_product, empirical_fisher, "empirical Fisher")
    _fails_with(check_fisher_vector_product, surrogate_hessian, "Hessian of the surrogate")
    _fails_with(check_fisher_vector_product, lambda p, v, d: 2 * fvp(p, v, d) - d * v, "2")


def test_fvp_catches_in_place_changes():
    def in_place(problem, v, damping):
        result = fvp(problem, v, damping)
        v.zero_()  # e.g. reusing v as a buffer
        return result

    _fails_with(check_fisher_vector_product, in_place, "in place")


# ───────────────────────────── line search: planted mistakes ─────────────────────────────


def line_search(problem, full_step, max_kl, backtrack_coef=0.8, backtrack_iters=10, *, reverse=False,
                check_kl=True, check_gain=True, first=0, on_failure="old", return_step=False):
    """A student's backtracking line search with switches for the usual mistakes."""
    theta_old = problem.theta_old
    with torch.no_grad():
        old = trust_region.surrogate(problem, theta_old)
        theta = theta_old
        for k in range(first, first + backtrack_iters):
            theta = theta_old + backtrack_coef**k * full_step
            pi_old, pi_new = problem.old_distribution(), problem.distribution_at(theta)
            kl = kl_divergence(pi_new, pi_old) if reverse else kl_divergence(pi_old, pi_new)
            gain = trust_region.surrogate(problem, theta) - old
            if (not check_kl or kl.mean() <= max_kl) and (not check_gain or gain > 0):
                return theta - theta_old if return_step else theta
    return theta if on_failure == "last" else theta_old


def test_line_search_student_model_passes():
    assert check_line_search(line_search, verbose=False)


@pytest.mark.parametrize("mistake, words", [
    (dict(reverse=True), ("KL(π_θ ‖ π_old)",)),
    (dict(check_kl=False), ("exceeds δ",)),
    (dict(check_gain=False), ("does not improve",)),
    (dict(first=1), ("full step",)),
    (dict(on_failure="last"), ("θ_old itself",)),
    (dict(return_step=True), ("the step itself",)),
])
def test_line_search_catches_planted_mistakes(mistake, words):
    _fails_with(check_line_search, lambda *a: line_search(*a, **mistake), *words)


def test_the_kl_direction_matters_on_one_of_the_line_search_scenarios():
    from trpo_lab.exercises import _line_search_scenarios

    for kind in ("categorical", "gaussian"):
        problem = random_problem(kind, 7, batch=128)
        assert any("two KL directions" in label for label, *_ in _line_search_scenarios(problem)), kind


# ───────────────────────────── GAE: planted mistakes ─────────────────────────────


def gae(rewards, values, next_values, terminated, episode_ends, gamma, lam, *, use_terminated=True,
        cut_at="episode_ends", bootstrap_from="next_values", skip_last=False, use_lam=True, sign=1.0,
        add_values=False):
    """A student's GAE with switches for the usual mistakes."""
    T = len(rewards)
    adv = torch.zeros_like(rewards)
    running = 0.0
    for t in reversed(range(T - 1 if skip_last else T)):
        if bootstrap_from == "next_values":
            v_next = next_values[t]
        else:
            v_next = values[t + 1] if t + 1 < T else 0.0
        alive = 1.0 - float(terminated[t]) if use_terminated else 1.0
        delta = sign * (rewards[t] + gamma * alive * v_next - values[t])
        cut = {"episode_ends": episode_ends, "terminated": terminated}.get(cut_at)
        keep = 1.0 - float(cut[t]) if cut is not None else 1.0
        running = delta + gamma * (lam if use_lam else 1.0) * keep * running
        adv[t] = running
    return adv + values if add_values else adv


def test_gae_student_model_passes_and_tuples_are_accepted():
    assert check_gae(gae, verbose=False)
    assert check_gae(lambda *a: (gae(*a), gae(*a) + a[1]), verbose=False)
    _fails_with(check_gae, lambda *a: (gae(*a), gae(*a)), "value targets")


@pytest.mark.parametrize("mistake, words", [
    (dict(use_terminated=False), ("after a termination",)),
    (dict(cut_at=None), ("leak across episode boundaries",)),
    (dict(cut_at="terminated"), ("only at terminations",)),
    (dict(bootstrap_from="values[t+1]"), ("off-by-one",)),
    (dict(skip_last=True), ("last step",)),
    (dict(use_lam=False), ("λ is missing",)),
    (dict(sign=-1.0), ("wrong sign",)),
    (dict(add_values=True), ("value target",)),
])
def test_gae_catches_planted_mistakes(mistake, words):
    _fails_with(check_gae, lambda *a: gae(*a, **mistake), *words)


def test_gae_catches_not_bootstrapping_at_truncation():
    def no_truncation_bootstrap(r, V, Vn, term, ends, gamma, lam):
        return gae(r, V, Vn, ends, ends, gamma, lam)

    _fails_with(check_gae, no_truncation_bootstrap, "truncation")


def test_gae_explains_an_unknown_mistake_with_the_first_wrong_step():
    def forward(r, V, Vn, term, ends, gamma, lam):  # accumulates the past instead of the future
        return torch.flip(gae(*(torch.flip(x, [0]) for x in (r, V, Vn, term, ends)), gamma, lam), [0])

    _fails_with(check_gae, forward, "first wrong at t =")


# ───────────────────────────── solutions: use, show, hide ─────────────────────────────


@pytest.mark.parametrize("solutions_var, fast, swapped", [
    (None, None, set()), (None, "1", set()), ("1", None, {"gae", "line_search"}), ("0", "1", set()),
    ("false", None, set()), ("all", "1", {"gae", "line_search"}), ("gae", None, {"gae"}),
    (" line_search , conjugate_gradient", "1", {"line_search"}),
])
def test_the_reference_switch_is_per_exercise_and_never_silent_in_test_mode(
        monkeypatch, capsys, solutions_var, fast, swapped):
    for name, value in (("TRPO_LAB_SOLUTIONS", solutions_var), ("TRPO_LAB_FAST", fast)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert solutions_enabled() is (swapped == {"gae", "line_search"})

    def gae(*args):
        raise NotImplementedError

    def line_search(*args):
        raise NotImplementedError

    for fn, reference in ((gae, solutions.gae), (line_search, solutions.line_search)):
        used = exercise(fn)
        assert (used is reference) is (fn.__name__ in swapped)
        out = capsys.readouterr().out
        assert ("RUNNING THE REFERENCE SOLUTION, NOT YOUR CODE" in out) is (fn.__name__ in swapped)
        assert ("NOT GRADED" in out) is (fn.__name__ in swapped)


@pytest.mark.parametrize("value, unknown", [("gea,line-search", "'gea', 'line-search'"),
                                            ("gae, Line_Serch", "'line_serch'")])
def test_unknown_names_in_the_reference_switch_are_an_error_naming_the_exercises(monkeypatch, value, unknown):
    monkeypatch.setenv("TRPO_LAB_SOLUTIONS", value)

    def gae(*args):
        raise NotImplementedError

    with pytest.raises(ValueError, match=f"TRPO_LAB_SOLUTIONS = '{value}': no exercise named {unknown}; "
                                         "allowed: .*'line_search', 'gae', 'trpo_update'"):
        exercise(gae)


def test_use_reference_in_a_notebook_cell(monkeypatch, capsys):
    from trpo_lab.grading import use_reference
    monkeypatch.delenv("TRPO_LAB_SOLUTIONS", raising=False)

    def gae(*args):
        raise NotImplementedError

    try:
        use_reference("gae")
        assert exercise(gae) is solutions.gae
        with pytest.raises(ValueError, match="no exercise named 'gea'.*allowed"):
            use_reference("gea")
    finally:
        use_reference()
    assert exercise(gae) is gae


def test_a_switched_in_reference_scores_zero_under_nbgrader_and_lets_run_all_go_on_otherwise(
        monkeypatch, capsys):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    result = check_gae(solutions.gae, verbose=False)
    assert not result and result.reference_used and "scores 0" in result.problem
    assert "NOT GRADED" in str(result)
    assert result.require() is result          # interactive: warns, does not raise
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="NOT GRADED"):
        result.require()
    with pytest.raises(AssertionError, match="first wrong at t =|off-by-one|wrong"):
        check_gae(lambda *a: written(solutions.gae)(*a) + 1.0, verbose=False).require()
    assert check_gae(written(solutions.gae), verbose=False).require()


def test_hidden_solutions_give_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRPO_LAB_SOLUTIONS", "1")
    monkeypatch.setitem(sys.modules, "trpo_lab.solutions", None)  # as if solutions.py were deleted
    monkeypatch.delattr("trpo_lab.solutions", raising=False)

    def gae(*args):
        return None

    with pytest.raises(RuntimeError, match="solutions.py is not part of this copy"):
        exercise(gae)


def test_unknown_solution_and_show_solution(monkeypatch, capsys):
    monkeypatch.setenv("TRPO_LAB_SOLUTIONS", "1")

    def my_own_helper():
        return None

    with pytest.raises(RuntimeError, match="no solution named 'my_own_helper'"):
        exercise(my_own_helper)
    source = show_solution("conjugate_gradient")
    assert "def conjugate_gradient" in source and "torch.zeros_like(b)" in source
    assert "def conjugate_gradient" in capsys.readouterr().out


# ───────────────────────────── the four sharpened messages ─────────────────────────────


def test_fvp_without_create_graph_is_explained():
    def fvp(problem, v, damping):
        theta = problem.theta_old.detach().clone().requires_grad_(True)
        rows = problem.fvp_rows
        kl = kl_divergence(problem.old_distribution(rows), problem.distribution_at(theta, rows)).mean()
        (grad_kl,) = torch.autograd.grad(kl, theta)  # no create_graph
        (fv,) = torch.autograd.grad(grad_kl @ v, theta)
        return fv + damping * v

    _fails_with(check_fisher_vector_product, fvp, "create_graph=True", "cannot be differentiated again")


def test_fvp_of_the_sampled_kl_is_called_an_unbiased_estimate():
    def fvp(problem, v, damping):
        theta = problem.theta_old.detach().clone().requires_grad_(True)
        rows = problem.fvp_rows
        actions = problem.actions if rows is None else problem.actions[rows]
        old = problem.old_log_prob if rows is None else problem.old_log_prob[rows]
        kl = (old - problem.distribution_at(theta, rows).log_prob(actions)).mean()
        (grad_kl,) = torch.autograd.grad(kl, theta, create_graph=True)
        (fv,) = torch.autograd.grad(grad_kl @ v, theta)
        return fv + damping * v

    _fails_with(check_fisher_vector_product, fvp, "sampled KL estimate", "unbiased estimate of F",
                "cosine with the right answer")


def test_line_search_with_the_max_kl_is_explained():
    def line_search(problem, full_step, max_kl, backtrack_coef=0.8, backtrack_iters=10):
        old = trust_region.surrogate(problem, problem.theta_old)
        with torch.no_grad():
            for k in range(backtrack_iters):
                theta = problem.theta_old + backtrack_coef**k * full_step
                kl = kl_divergence(problem.old_distribution(), problem.distribution_at(theta)).max()
                if kl <= max_kl and trust_region.surrogate(problem, theta) - old > 0:
                    return theta
        return problem.theta_old

    _fails_with(check_line_search, line_search, "largest per-state KL", "mean over states")


def test_line_search_reverse_kl_message_reconciles_the_direction():
    from trpo_lab.exercises import _LINE_SEARCH_MISTAKES
    message = _LINE_SEARCH_MISTAKES["reverse_kl"]
    assert "Spinning Up" in message and "eq. 12" in message and "old policy first" in message


def test_normalised_gae_advantages_are_explained():
    def normalised(*args):
        adv = written(solutions.gae)(*args)
        return (adv - adv.mean()) / (adv.std() + 1e-8)

    _fails_with(check_gae, normalised, "you normalised the advantages", "raw Â")
