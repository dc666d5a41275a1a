import numpy as np
import pytest

from invae.normal_means import fit_normal_means, grid_posterior, simulate_normal_means
from invae.normal_means.null import empirical_null, histogram_density, natural_spline_basis


@pytest.fixture(scope="module")
def two_groups():
    """n = 5 000 from 0.9 δ(0) + 0.1 N(0, 2.5²), σ = 1 (the calibration case of bench_lfdr)."""
    return simulate_normal_means("two-groups", 5000, seed=0)


@pytest.mark.parametrize("method", ["npmle", "log-spline"])
def test_lfdr_does_not_depend_on_the_grid(two_groups, method):
    # Before the null spike, the lfdr was the mass of the atom nearest 0: log-spline's largest
    # lfdr fell 10-fold from 100 to 1 000 atoms and npmle's was 0 on any fine grid.
    lfdr = [fit_normal_means(two_groups.x, two_groups.sigma, method, grid=size, null=0.0).lfdr
            for size in (100, 300, 1000)]
    assert max(np.abs(lfdr[0] - lfdr[2]).max(), np.abs(lfdr[1] - lfdr[2]).max()) <= 0.01


@pytest.mark.parametrize("method", ["npmle", "log-spline"])
def test_lfdr_is_calibrated_on_two_groups_data(two_groups, method):
    # The targets on one fixed seed: mean |lfdr − true lfdr| ≤ 0.03 (the true lfdr is
    # the Bayes rule under the true prior on its fine grid, exact to ~1e-4) and π̂₀ within 0.02
    # of 0.9 (bench_lfdr measures the seed-to-seed spread, sd ≈ 0.015, and the skewed alternative).
    fit = fit_normal_means(two_groups.x, two_groups.sigma, method, null=0.0)
    truth = grid_posterior(two_groups.x, two_groups.sigma, two_groups.prior, null=0.0).lfdr
    assert np.abs(fit.lfdr - truth).mean() <= 0.03
    assert abs(fit.null.proportion - 0.9) <= 0.02
    np.testing.assert_allclose(fit.lfdr, fit.prior.masses[fit.prior.atoms == 0.0] * np.exp(-0.5 * two_groups.x**2)
                               / np.sqrt(2 * np.pi) / np.exp(_log_marginal(fit, two_groups)), rtol=1e-9)


def _log_marginal(fit, problem):
    from invae.normal_means.grid import log_marginal

    return log_marginal(problem.x, problem.sigma, fit.prior)


@pytest.mark.parametrize("method", ["npmle", "log-spline"])
def test_pure_null_data_make_no_discoveries(method):
    # 5 000 draws of N(0, 1): π̂₀ near 1, no row with lfdr ≤ 0.2, mean lfdr ≈ 1 (the former
    # npmle reported lfdr ≈ 0 for every row of such data).
    x = np.random.default_rng(0).standard_normal(5000)
    fit = fit_normal_means(x, 1.0, method, null=0.0)
    assert fit.null.proportion >= 0.99 and fit.lfdr.min() > 0.2 and fit.lfdr.mean() >= 0.99


def test_the_empirical_null_is_found_within_three_standard_errors():
    # z = 0.1 + 1.2 ε for 95% of 5 000 rows, non-nulls N(0, 2.5²) + that noise for the rest.
    # The standard errors of δ̂₀ and σ̂₀ are their sds over 30 replicates; the fixed seed's
    # estimates are within 3 of them of (0.1, 1.2) (central matching's own bias included).
    estimates = np.array([_empirical_null_of_replicate(seed) for seed in range(31)])
    standard_errors = estimates[1:].std(axis=0)
    assert np.all(np.abs(estimates[0, :2] - [0.1, 1.2]) <= 3 * standard_errors[:2])
    assert np.all(np.abs(estimates[1:, :2].mean(axis=0) - [0.1, 1.2]) <= 3 * standard_errors[:2])


def _empirical_null_of_replicate(seed: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    effects = np.where(rng.random(5000) < 0.05, rng.normal(0, 2.5, 5000), 0.0)
    null = empirical_null(effects + 0.1 + 1.2 * rng.standard_normal(5000))
    return null.delta, null.sd, null.proportion


def test_the_histogram_density_integrates_to_one_and_matches_the_truth():
    # Poisson regression on the counts keeps the total (the score equation of the intercept):
    # Σ fitted = N; the density of N(0, 1) from 20 000 draws is within 0.02 of φ in the centre.
    z = np.random.default_rng(1).standard_normal(20_000)
    estimate = histogram_density(z)
    assert estimate.fitted.sum() == pytest.approx(len(z), rel=1e-6)
    t = np.linspace(-2, 2, 21)
    np.testing.assert_allclose(estimate.density(t), np.exp(-t**2 / 2) / np.sqrt(2 * np.pi), atol=0.02)


def test_an_empirical_null_rescales_the_noise(two_groups):
    fit = fit_normal_means(two_groups.x, 2.0 * two_groups.sigma, "log-spline", null="empirical")
    null = empirical_null(two_groups.x / 2.0)
    assert fit.null.kind == "empirical" and fit.null.value == pytest.approx(2.0 * null.delta)
    assert fit.null.scale == pytest.approx(null.sd) and fit.null.central_proportion == pytest.approx(null.proportion)
    assert fit.null.value in fit.prior.atoms


@pytest.mark.parametrize("method, null, options, match", [
    ("james-stein", 0.0, {}, "point mass"),
    ("npmle", 0.0, {"covariates": {"c": np.arange(40.0) % 2}}, "covariates"),
    ("npmle", "empirical", {"sigma": np.linspace(1, 2, 40)}, "one noise sd"),
    ("npmle", "middle", {}, "a number or 'empirical'")])
def test_a_null_that_cannot_be_used_is_refused(method, null, options, match):
    sigma = options.pop("sigma", 1.0)
    with pytest.raises(ValueError, match=match):
        fit_normal_means(np.linspace(-3, 3, 40), sigma, method, null=null, **options)


def test_natural_splines_hold_lines_but_not_curvature_at_the_ends():
    # A natural cubic spline is linear beyond its boundary knots: t lies in the span, t² (whose
    # second derivative is 2 at the ends) does not; the columns are orthonormal with mean 0.
    t = np.linspace(-3, 4, 119)
    basis = natural_spline_basis(t, 7)
    assert basis.shape == (119, 7)
    np.testing.assert_allclose(basis.T @ basis, np.eye(7), atol=1e-10)
    np.testing.assert_allclose(basis.mean(axis=0), 0, atol=1e-12)
    def residual(f):
        centred = f - f.mean()
        return np.linalg.norm(centred - basis @ (basis.T @ centred)) / np.linalg.norm(centred)
    assert residual(t) < 1e-10 and residual(t**2) > 1e-3
