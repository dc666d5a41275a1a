import numpy as np
import pytest
from sklearn.covariance import empirical_covariance

from invae.graphical_lasso import glasso_objective, solve_precision

from .conftest import random_spd


def test_no_penalty_gives_the_inverse(rng):
    s = np.linalg.inv(random_spd(rng, 8))
    np.testing.assert_allclose(solve_precision(s, 0.0), np.linalg.inv(s), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.02, 0.1, 0.3])
def test_penalised_solution_meets_the_optimality_conditions(rng, alpha):
    # Subgradient (KKT) conditions of log det Λ − tr(ΛS) − α‖Λ‖_{1,off}, with W = Λ⁻¹:
    #   diagonal: W_ii = S_ii;  Λ_ij ≠ 0: W_ij − S_ij = α sign(Λ_ij);  Λ_ij = 0: |W_ij − S_ij| ≤ α.
    # The solver stops at a duality gap of 1e-8 with inner tolerance 1e-8: measured KKT
    # residuals are ~1e-7 at p = 100; 1e-6 leaves an order of magnitude of room.
    z = rng.standard_normal((500, 10)) @ np.linalg.cholesky(np.linalg.inv(random_spd(rng, 10))).T
    s = empirical_covariance(z, assume_centered=True)
    precision = solve_precision(s, alpha)
    grad = np.linalg.inv(precision) - s
    tol = 1e-6
    np.testing.assert_allclose(np.diag(grad), 0.0, atol=tol)
    off = ~np.eye(10, dtype=bool)
    support = off & (precision != 0)
    np.testing.assert_allclose(grad[support], alpha * np.sign(precision[support]), atol=tol)
    assert np.all(np.abs(grad[off & (precision == 0)]) <= alpha + tol)
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
