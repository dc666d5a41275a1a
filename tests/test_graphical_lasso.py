import numpy as np
import pytest
from sklearn.covariance import empirical_covariance

from invae.graphical_lasso import glasso_objective, optimality_violation, solve_precision

from .conftest import random_spd


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
    # The solver stops at a duality gap of 1e-8 with inner tolerance 1e-8: measured KKT
    # residuals are ~1e-7 at p = 100; 1e-6 leaves an order of magnitude of room.
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
