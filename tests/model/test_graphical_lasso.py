import warnings

import numpy as np
import pytest
from sklearn.covariance import empirical_covariance, graphical_lasso
from sklearn.exceptions import ConvergenceWarning

import invae.model.graphical_lasso as graphical_lasso_module
from invae.evaluation.simulate import sparse_precision
from invae.model.graphical_lasso import glasso_objective, hessian_product, optimality_violation, solve_precision

from ..conftest import random_spd


def test_no_penalty_gives_the_inverse(rng):
    s = np.linalg.inv(random_spd(rng, 8))
    np.testing.assert_allclose(solve_precision(s, 0.0), np.linalg.inv(s), rtol=1e-10, atol=1e-12)


def test_optimality_violation_on_hand_derived_cases(rng):
    s = np.linalg.inv(random_spd(rng, 5))
    # α = 0: Λ = S⁻¹ is optimal; Λ = (S + εI)⁻¹ has gradient W − S = εI, so the violation is ε.
    assert optimality_violation(np.linalg.inv(s), s, 0.0) < 1e-12
    assert optimality_violation(np.linalg.inv(s + 1e-3 * np.eye(5)), s, 0.0) == pytest.approx(1e-3, rel=1e-8)
    # Λ = diag(1/S_ii): the gradient is −S off the diagonal, all inactive, so the violation
    # is max |S_ij| − α when positive, and zero for α above it.
    diagonal = np.diag(1 / np.diag(s))
    largest = np.abs(s - np.diag(np.diag(s))).max()
    assert optimality_violation(diagonal, s, 0.1 * largest) == pytest.approx(0.9 * largest, rel=1e-10)
    assert optimality_violation(diagonal, s, 1.1 * largest) < 1e-15  # the diagonal of W − S rounds


@pytest.mark.parametrize("alpha", [0.02, 0.1, 0.3])
def test_penalised_solution_meets_the_optimality_conditions(rng, alpha):
    # The solver stops at a relative KKT residual of 1e-6, each entry's violation over
    # √(S_ii S_jj); here S_ii ≲ 1 (covariance eigenvalues in [0.1, 1]), so 1e-6 holds absolutely.
    z = rng.standard_normal((500, 10)) @ np.linalg.cholesky(np.linalg.inv(random_spd(rng, 10))).T
    s = empirical_covariance(z, assume_centered=True)
    precision = solve_precision(s, alpha)
    assert optimality_violation(precision, s, alpha) < 1e-6
    off = ~np.eye(10, dtype=bool)
    assert (off & (precision == 0)).any(), "this penalty should zero some entries"


def test_solution_beats_nearby_points(rng):
    s = np.linalg.inv(random_spd(rng, 6))
    precision = solve_precision(s, 0.1)
    best = glasso_objective(precision, s, 0.1)
    for _ in range(20):
        step = rng.standard_normal((6, 6)) * 1e-3
        assert glasso_objective(precision + step + step.T, s, 0.1) <= best + 1e-9


def test_singular_second_moment_is_solved_with_a_ridge(rng):
    z = rng.standard_normal((3, 6))  # 3 draws in 6 dimensions: S has rank 3
    s = z.T @ z / 3
    for alpha in (0.0, 0.05):
        precision = solve_precision(s, alpha)
        assert np.all(np.isfinite(precision))
        assert np.all(np.linalg.eigvalsh(precision) > 0)


def test_objective_is_minus_infinity_off_the_cone():
    assert glasso_objective(-np.eye(3), np.eye(3), 0.1) == -np.inf
    # two negative eigenvalues: the determinant is positive, the matrix is not PD
    assert glasso_objective(np.diag([-1.0, -2.0, 3.0]), np.eye(3), 0.1) == -np.inf


def _reference(s, alpha):
    """scikit-learn run far past its default tolerances: the objective to compare with."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return graphical_lasso(s, alpha, mode="cd", tol=1e-10, enet_tol=1e-10, max_iter=500)[1]


def _second_moment(rng, p, kind):
    """S from 2p draws of a sparse Gaussian graphical model (Erdős–Rényi graph). "well": unit
    variances, condition ~10; "ill": the coordinates rescaled by factors spread over
    [0.03, 30], condition ~1e6; "singular": rank p/2 from p/2 draws (Λ̂ exists only
    because α > 0)."""
    precision = sparse_precision("erdos-renyi", p, rng)
    if kind == "ill":
        scale = np.exp(rng.uniform(np.log(0.03), np.log(30.0), p))
        precision = precision * np.outer(scale, scale)
    draws = p // 2 if kind == "singular" else 2 * p
    z = rng.multivariate_normal(np.zeros(p), np.linalg.inv(precision), size=draws)
    return z.T @ z / draws


def _check_against_sklearn(rng, p, kind, alpha):
    # Both stop at a relative KKT residual ≤ 1e-6: the objective error is then second order,
    # far below the 1e-6 relative the issue asks.
    s = _second_moment(rng, p, kind)
    alpha = alpha * np.mean(np.diag(s))
    newton = solve_precision(s, alpha, solver="newton")
    assert optimality_violation(newton, s, alpha, relative=True) <= 1e-6
    expected = glasso_objective(_reference(s, alpha), s, alpha)
    assert abs(glasso_objective(newton, s, alpha) - expected) <= 1e-6 * abs(expected)


@pytest.mark.parametrize("kind", ["well", "ill", "singular"])
@pytest.mark.parametrize("p, alpha", [(20, 0.05), (60, 0.02), (60, 0.2)])
def test_newton_meets_kkt_and_sklearns_objective(rng, p, kind, alpha):
    _check_against_sklearn(rng, p, kind, alpha)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["well", "ill", "singular"])
@pytest.mark.parametrize("p", [200, 500])
def test_newton_meets_kkt_and_sklearns_objective_at_large_p(rng, p, kind):
    _check_against_sklearn(rng, p, kind, 0.05)


@pytest.mark.parametrize("sparse", [False, True])
def test_hessian_product_is_the_derivative_of_the_inverse(rng, sparse):
    # ∇(−log det Λ) = −Λ⁻¹, whose derivative along D is W D W: compare with central differences.
    precision = random_spd(rng, 7)
    w = np.linalg.inv(precision)
    rows, cols = np.triu_indices(7)
    keep = rng.random(len(rows)) < 0.5
    keep[rows == cols] = True  # the diagonal is always free
    rows, cols = rows[keep], cols[keep]
    values = rng.standard_normal(len(rows))
    d = np.zeros((7, 7))
    d[rows, cols] = values
    d[cols, rows] = values
    h = 1e-5
    numeric = (np.linalg.inv(precision - h * d) - np.linalg.inv(precision + h * d)) / (2 * h)
    np.testing.assert_allclose(hessian_product(w, values, rows, cols, sparse), numeric[rows, cols], rtol=1e-7, atol=1e-9)


def test_warm_start_gives_the_same_answer_faster(rng):
    s = _second_moment(rng, 40, "well")
    s_next = s + 1e-3 * _second_moment(rng, 40, "well")
    cold = solve_precision(s_next, 0.05)
    warm = solve_precision(s_next, 0.05, initial=solve_precision(s, 0.05))
    assert abs(glasso_objective(warm, s_next, 0.05) - glasso_objective(cold, s_next, 0.05)) < 1e-10
    # the optimum as the start is returned as it is
    np.testing.assert_array_equal(solve_precision(s_next, 0.05, initial=cold), cold)


def test_a_start_that_is_not_positive_definite_is_ignored(rng):
    s = _second_moment(rng, 10, "well")
    precision = solve_precision(s, 0.05, initial=-np.eye(10))
    assert optimality_violation(precision, s, 0.05, relative=True) <= 1e-6


def test_newton_falls_back_to_sklearn_when_it_runs_out_of_steps(rng, monkeypatch):
    monkeypatch.setattr(graphical_lasso_module, "_MAX_NEWTON", 1)
    s = _second_moment(rng, 30, "well")
    assert not graphical_lasso_module._newton(s, 0.02, None, 1e-6)[1]
    precision = solve_precision(s, 0.02)
    assert optimality_violation(precision, s, 0.02, relative=True) <= 1e-6


def test_unknown_solver_is_refused():
    with pytest.raises(ValueError, match="solver"):
        solve_precision(np.eye(3), 0.1, solver="quic")


def test_a_coordinate_without_signal_gets_a_finite_answer_from_the_ridge():
    s = np.eye(4)
    s[0, 0] = 0.0  # no finite Λ̂_00 without the ridge
    s[1, 2] = s[2, 1] = 0.5
    for solver in ("newton", "sklearn"):
        precision = solve_precision(s, 0.1, solver=solver)
        assert np.all(np.isfinite(precision)) and np.all(np.linalg.eigvalsh(precision) > 0)
        assert precision[0, 0] > 1e6  # 1 / (ridge · mean diag S) with the smallest ridge, 1e-8


def _rank_deficient_problem(rng, monkeypatch):
    """S (12, 12) of 8 rows, Newton capped at 3 steps and scikit-learn failing outright."""
    monkeypatch.setattr(graphical_lasso_module, "_MAX_NEWTON", 3)

    def fail(*args):
        raise FloatingPointError("Non SPD result")

    monkeypatch.setattr(graphical_lasso_module, "_sklearn", fail)
    z = rng.standard_normal((8, 12))
    return z.T @ z / 8 + 1e-3 * np.eye(12)


def test_where_newton_gives_up_admm_meets_the_optimality_conditions(rng, monkeypatch):
    s = _rank_deficient_problem(rng, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        precision = solve_precision(s, 0.05)
    assert optimality_violation(precision, s, 0.05, relative=True) <= 1e-6


def test_where_no_solver_converges_the_answer_is_an_ascent_step(rng, monkeypatch):
    # Newton and ADMM both capped: the answer is ADMM's last iterate, or its start (Newton's
    # last iterate) where ADMM ended below it; either beats the start it was given
    s = _rank_deficient_problem(rng, monkeypatch)
    monkeypatch.setattr(graphical_lasso_module, "_MAX_ADMM", 3)
    start = np.diag(1 / np.diag(s))
    with pytest.warns(ConvergenceWarning, match="best iterate reached"):
        precision = solve_precision(s, 0.05, initial=start)
    assert np.all(np.linalg.eigvalsh(precision) > 0)
    assert glasso_objective(precision, s, 0.05) > glasso_objective(start, s, 0.05)
