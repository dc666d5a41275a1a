import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm

from invae.normal_means import grid_posterior, simulate_normal_means
from invae.normal_means.deconvolution import NULL_WIDTH, MixturePrior, deconvolve, posterior_summaries
from invae.normal_means.grid import GridPrior, default_grid, with_null_atom

SPIKED = MixturePrior(np.array([0.6, 0.3, 0.1]), np.array([0.0, -1.0, 2.5]), np.array([0.0, 0.5, 2.0]), null=0)


def _gmm_data(n: int, seed: int):
    """z from 0.6 N(−1, 0.3²) + 0.4 N(2, 0.8²), x = z + N(0, σ_i²) with σ_i ~ U(0.5, 1.5)."""
    rng = np.random.default_rng(seed)
    upper = rng.random(n) < 0.4
    z = np.where(upper, rng.normal(2.0, 0.8, n), rng.normal(-1.0, 0.3, n))
    sigma = rng.uniform(0.5, 1.5, n)
    truth = MixturePrior(np.array([0.6, 0.4]), np.array([-1.0, 2.0]), np.array([0.09, 0.64]))
    return z + sigma * rng.standard_normal(n), sigma, truth


def _log_likelihood(x, sigma, prior: MixturePrior) -> float:
    """Σ_i log Σ_c π_c N(x_i; m_c, v_c + σ_i²), by scipy."""
    densities = norm.pdf(x[:, None], prior.means, np.sqrt(prior.variances + sigma[:, None] ** 2))
    return float(np.log(densities @ prior.weights).sum())


@pytest.mark.parametrize("x, s", [(-2.0, 1.0), (0.3, 0.5), (3.0, 2.0)])
def test_the_posterior_is_bayes_rule_by_quadrature(x, s):
    # The spike's share and the continuous parts integrated numerically against the closed forms.
    smooth = lambda z, power: z**power * norm.pdf(x, z, s) * sum(
        w * norm.pdf(z, m, np.sqrt(v)) for w, m, v in zip(SPIKED.weights[1:], SPIKED.means[1:], SPIKED.variances[1:]))
    parts = [quad(smooth, -30, 30, args=(k,), points=[-1, 0, 2.5], epsabs=1e-14, epsrel=1e-11)[0] for k in range(3)]
    below = quad(smooth, -30, 0, args=(0,), epsabs=1e-14, epsrel=1e-11)[0]
    spike = SPIKED.weights[0] * norm.pdf(x, 0.0, s)
    f = spike + parts[0]
    mean, second = parts[1] / f, parts[2] / f
    post = posterior_summaries(np.array([x]), np.array([s]), SPIKED)
    np.testing.assert_allclose(post.mean, mean, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(post.std, np.sqrt(second - mean**2), rtol=1e-7)
    np.testing.assert_allclose(post.lfdr, spike / f, rtol=1e-9)
    # the spike sits at 0, on both sides of the sign: lfsr = min(P(z ≤ 0), P(z ≥ 0)) counts it twice
    np.testing.assert_allclose(post.lfsr, min(below + spike, f - below) / f, rtol=1e-7)


def test_a_location_shifts_the_prior_row_by_row():
    x, sigma, location = np.array([0.5, 2.0, -1.0]), np.array([1.0, 1.0, 0.7]), np.array([1.0, -3.0, 0.4])
    shifted = posterior_summaries(x, sigma, SPIKED, location)
    plain = posterior_summaries(x - location, sigma, SPIKED)
    np.testing.assert_allclose(shifted.mean, plain.mean + location)
    np.testing.assert_allclose(shifted.std, plain.std)
    np.testing.assert_allclose(shifted.lfdr, plain.lfdr)
    # lfsr is of z_i = ℓ_i + θ_i, so it moves with ℓ: against the grid posterior of SPIKED on
    # 40 001 atoms (cell masses; its cdf error is below 1e-3 at these spacings)
    atoms = with_null_atom(np.linspace(-12, 12, 40_001), 0.0)
    grid = grid_posterior(x, sigma, SPIKED.on_grid(atoms), location)
    np.testing.assert_allclose(shifted.lfsr, grid.lfsr, atol=1e-3)
    assert np.abs(shifted.lfsr - plain.lfsr).max() > 0.1  # the shift matters here


def test_em_climbs_and_beats_the_true_prior():
    # EM's log-likelihood never falls (SQUAREM keeps the ascent: each cycle is checked), and
    # the maximum over 10 components is at least the likelihood of the true 2-component prior,
    # a member of the family: an EM that stopped short or climbed wrongly would fall below it.
    x, sigma, truth = _gmm_data(3000, seed=0)
    fit = deconvolve(x, sigma)
    assert fit.converged and np.all(np.diff(fit.log_likelihood) >= -1e-9 * abs(fit.log_likelihood[-1]))
    assert fit.log_likelihood[-1] >= _log_likelihood(x, sigma, truth)
    assert fit.log_likelihood[-1] == pytest.approx(_log_likelihood(x, sigma, fit.prior), rel=1e-12)


def test_em_ends_at_a_stationary_point():
    # The KKT conditions of max Σ log f over m and v ≥ 0 (central differences, step 1e-5):
    # ∂/∂m_c = 0, and ∂/∂v_c = 0 or, at the boundary v_c → 0 where the MLE puts most
    # components (points, as the NPMLE), ∂/∂v_c ≤ 0. Tolerance 0.05 nats per unit: a move
    # of 0.01 in any parameter would change Σ log f by less than 5e-4 nats.
    x, sigma, _ = _gmm_data(2000, seed=1)
    prior = deconvolve(x, sigma, tol=1e-10).prior  # tighter than the default 1e-8, which stops short of 0.05
    for field in ("means", "variances"):
        for c in np.flatnonzero(prior.weights > 0.01):
            gradient = _partial_derivative(x, sigma, prior, field, c)
            if field == "means" or prior.variances[c] > 0.01:
                assert abs(gradient) < 0.05, (field, c, gradient)
            else:
                assert gradient < 0.05, (field, c, gradient)


def _partial_derivative(x, sigma, prior: MixturePrior, field: str, c: int, step: float = 1e-5) -> float:
    values = []
    for sign in (1, -1):
        moved = {"means": prior.means.copy(), "variances": prior.variances.copy()}
        moved[field][c] += sign * step
        values.append(_log_likelihood(x, sigma, MixturePrior(prior.weights, moved["means"], moved["variances"])))
    return (values[0] - values[1]) / (2 * step)


def test_a_null_spike_finds_its_mass_beside_a_point_effect_away_from_it():
    # 0.7 δ0 + 0.3 δ3, σ = 1, n = 4 000: π̂₀ within 3 binomial SEs (√(0.21/4000) = 0.0072) of 0.7.
    # The effect at 3 lies outside the band |m| < 1 = w, so a point may hold it (a floor on
    # every component's width, tried first, held π̂₀ near 0.62 on such data). No other component is in
    # the band, the likelihood climbs, and lfdr_i = π̂₀ φ(x_i) / f(x_i).
    problem = simulate_normal_means("two-point", 4000, seed=2)
    fit = deconvolve(problem.x, problem.sigma, null=0.0)
    prior = fit.prior
    assert prior.null == 0 and prior.means[0] == 0.0 and prior.variances[0] == 0.0
    assert abs(prior.weights[0] - 0.7) < 3 * 0.0072
    others = slice(1, None)
    assert not np.any((np.abs(prior.means[others]) < NULL_WIDTH * (1 - 1e-9))
                      & (prior.variances[others] < NULL_WIDTH**2 * (1 - 1e-9)))
    assert np.all(np.diff(fit.log_likelihood) >= -1e-9 * abs(fit.log_likelihood[-1]))
    density = np.exp(np.array([_log_likelihood(problem.x[i:i + 1], problem.sigma[i:i + 1], prior) for i in range(5)]))
    np.testing.assert_allclose(posterior_summaries(problem.x[:5], problem.sigma[:5], prior).lfdr,
                               prior.weights[0] * norm.pdf(problem.x[:5]) / density, rtol=1e-9)


def test_on_grid_gives_the_spike_its_own_mass_and_each_cell_its_share():
    atoms = with_null_atom(default_grid(np.array([-4.0, 6.0]), 101), 0.0)
    grid = SPIKED.on_grid(atoms)
    assert isinstance(grid, GridPrior) and grid.masses[atoms == 0.0] == pytest.approx(0.6, abs=1e-15)
    others = MixturePrior(np.array([0.75, 0.25]), SPIKED.means[1:], SPIKED.variances[1:])
    rest = atoms[atoms != 0.0]
    edges = np.r_[-np.inf, (rest[1:] + rest[:-1]) / 2, np.inf]
    np.testing.assert_allclose(grid.masses[atoms != 0.0], 0.4 * np.diff(others.cdf(edges)), atol=1e-15)
