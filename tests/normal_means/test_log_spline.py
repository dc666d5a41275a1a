import numpy as np
import pytest
from scipy.optimize import check_grad

from invae.normal_means import log_spline, simulate_normal_means
from invae.normal_means.grid import scaled_likelihood
from invae.normal_means.log_spline import negative_objective, prior_masses, spline_basis


def test_gradient_matches_finite_differences(rng):
    x = rng.normal(0, 2, 200)
    atoms = np.linspace(-6, 6, 80)
    basis = spline_basis(atoms, 6)
    scaled = scaled_likelihood(x, 0.7, atoms)[0]
    for alpha in rng.normal(0, 1, (3, 6)):
        error = check_grad(lambda a: negative_objective(a, basis, scaled, 2.0)[0],
                           lambda a: negative_objective(a, basis, scaled, 2.0)[1], alpha)
        assert error < 1e-6 * max(1.0, np.linalg.norm(negative_objective(alpha, basis, scaled, 2.0)[1]))


def test_basis_has_df_standardised_columns():
    basis = spline_basis(np.linspace(-3, 3, 200), 5)
    assert basis.shape == (200, 5)
    np.testing.assert_allclose(basis.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(basis.std(axis=0), 1, atol=1e-12)
    with pytest.raises(ValueError, match="df"):
        spline_basis(np.linspace(-3, 3, 200), 1)


def test_a_heavy_penalty_flattens_the_prior():
    problem = simulate_normal_means("two-point", 500, seed=2)
    fit = log_spline(problem.x, problem.sigma, penalty=1e7)
    np.testing.assert_allclose(fit.prior.masses, 1 / len(fit.prior.masses), rtol=1e-3)


def test_log_spline_fits_a_smooth_prior():
    # Uniform(−3, 3) seen through N(0, 1) noise, n = 20 000: the fitted prior's mean and
    # variance are within 4 standard errors of the truth (0, 3); SE(mean) ≈ √(4/n) = 0.014,
    # SE(variance) ≈ √(Var((x−μ)²)/n) ≈ 0.035 for x's variance 4.
    problem = simulate_normal_means("uniform", 20_000, seed=3)
    fit = log_spline(problem.x, problem.sigma)
    assert fit.converged
    assert abs(fit.prior.mean) < 4 * 0.014
    assert abs(fit.prior.variance - 3.0) < 4 * 0.035


def test_gradient_with_a_spike_matches_finite_differences(rng):
    x = rng.normal(0, 2, 200)
    atoms = np.linspace(-6, 6, 81)  # atom 40 is 0
    basis = spline_basis(atoms, 6)
    scaled = scaled_likelihood(x, 0.7, atoms)[0]
    for params in rng.normal(0, 1, (3, 7)):
        value, gradient = negative_objective(params, basis, scaled, 2.0, 40)
        error = check_grad(lambda a: negative_objective(a, basis, scaled, 2.0, 40)[0],
                           lambda a: negative_objective(a, basis, scaled, 2.0, 40)[1], params)
        assert error < 1e-6 * max(1.0, np.linalg.norm(gradient))
        masses = prior_masses(params, basis, 40)
        assert masses.sum() == pytest.approx(1.0) and masses[40] > 1 / (1 + np.exp(-params[-1]))
        assert value == pytest.approx(-(np.log(scaled @ masses).sum() - 2.0 * np.linalg.norm(params[:6])) / 200)
