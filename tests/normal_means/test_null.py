import numpy as np
import pytest
from scipy.stats import norm

from invae.normal_means import fit_normal_means, grid_posterior, log_spline, simulate_normal_means
from invae.normal_means.grid import log_marginal
from invae.normal_means.null import empirical_null, histogram_density, natural_spline_basis


@pytest.fixture(scope="module")
def two_groups():
    """n = 5 000 from 0.9 δ(0) + 0.1 N(0, 2.5²), σ = 1 (the calibration case of bench_lfdr)."""
    return simulate_normal_means("two-groups", 5000, seed=0)


@pytest.mark.parametrize("method", ["npmle", "log-spline", "vae"])
def test_lfdr_does_not_depend_on_the_grid(two_groups, method):
    # Before the null spike, the lfdr was the mass of the atom nearest 0: log-spline's largest
    # lfdr fell 10-fold from 100 to 1 000 atoms and npmle's was 0 on any fine grid. (vae's
    # lfdr is in closed form; its grid only displays the prior.)
    lfdr = [fit_normal_means(two_groups.x, two_groups.sigma, method, grid=size, null=0.0).lfdr
            for size in (100, 300, 1000)]
    assert max(np.abs(lfdr[0] - lfdr[2]).max(), np.abs(lfdr[1] - lfdr[2]).max()) <= 0.01


@pytest.mark.parametrize("method", ["npmle", "log-spline", "vae"])
def test_lfdr_is_calibrated_on_two_groups_data(method):
    # The targets, on the statistic bench_lfdr reports: over seeds 0–9 of n = 5 000,
    # the mean |lfdr − true lfdr| ≤ 0.03, the mean FDP among lfdr ≤ 0.2 ≤ 0.2 and the mean
    # π̂₀ within 0.02 of 0.9 (one seed's π̂₀ varies with sd ≈ 0.013–0.019, too much for 0.02).
    # The true lfdr is the Bayes rule under the true prior on its fine grid (exact to ~1e-4).
    errors, fdps, proportions = [], [], []
    for seed in range(10):
        problem = simulate_normal_means("two-groups", 5000, seed=seed)
        fit = fit_normal_means(problem.x, problem.sigma, method, null=0.0)
        truth = grid_posterior(problem.x, problem.sigma, problem.prior, null=0.0).lfdr
        errors.append(np.abs(fit.lfdr - truth).mean())
        fdps.append((problem.z[fit.lfdr <= 0.2] == 0).mean())
        proportions.append(fit.null.proportion)
    assert np.mean(errors) <= 0.03 and np.mean(fdps) <= 0.2 and abs(np.mean(proportions) - 0.9) <= 0.02


def test_lfdr_is_the_null_share_of_the_marginal(two_groups):
    # lfdr_i = π₀ φ(x_i − ν) / f(x_i), here with ν = 0.5 and σ = 1; npmle's other atoms keep
    # one σ from ν.
    fit = fit_normal_means(two_groups.x, two_groups.sigma, "npmle", null=0.5)
    others = fit.prior.atoms[fit.prior.atoms != 0.5]
    assert fit.null.value == 0.5 and np.abs(others - 0.5).min() >= 1.0
    density = np.exp(log_marginal(two_groups.x, two_groups.sigma, fit.prior))
    np.testing.assert_allclose(fit.lfdr, fit.null.proportion * norm.pdf(two_groups.x - 0.5) / density, rtol=1e-9)


@pytest.mark.parametrize("method", ["npmle", "log-spline", "vae"])
def test_pure_null_data_make_no_discoveries(method):
    # 5 000 draws of N(0, 1): π̂₀ near 1, no row with lfdr ≤ 0.2, mean lfdr ≈ 1 (the former
    # npmle reported lfdr ≈ 0 for every row of such data).
    x = np.random.default_rng(0).standard_normal(5000)
    fit = fit_normal_means(x, 1.0, method, null=0.0)
    assert fit.null.proportion >= 0.99 and fit.lfdr.min() > 0.2 and fit.lfdr.mean() >= 0.99


def test_the_empirical_null_is_found_within_three_standard_errors():
    # z = 0.1 + 1.2 ε for 95% of 5 000 rows, non-nulls N(0, 2.5²) + that noise for the rest.
    # The standard errors of δ̂₀ and σ̂₀ are their sds over 30 replicates: the fixed seed's
    # estimates are within 3 of them of (0.1, 1.2), and the replicates' mean within 3 of its
    # own standard error, sd/√30 (so central matching's bias here is below 3 of those).
    estimates = np.array([_empirical_null_of_replicate(seed) for seed in range(31)])
    spread = estimates[1:, :2].std(axis=0)
    assert np.all(np.abs(estimates[0, :2] - [0.1, 1.2]) <= 3 * spread)
    assert np.all(np.abs(estimates[1:, :2].mean(axis=0) - [0.1, 1.2]) <= 3 * spread / np.sqrt(30))


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
    ("npmle", "middle", {}, "a number, 'empirical' or 'none'"),
    ("npmle", float("nan"), {}, "outside the data's range"),
    ("log-spline", 7.0, {}, "outside the data's range")])
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


def test_log_spline_puts_its_null_on_the_default_grid(two_groups):
    fit = log_spline(two_groups.x, 1.0, null=0.0)
    assert 0.0 in fit.prior.atoms and len(fit.alpha) == 6  # df 5 and the spike's β
    assert fit.prior.masses[fit.prior.atoms == 0.0][0] > 0.8
