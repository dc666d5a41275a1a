import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import norm

from invae.normal_means import NormalPrior, fit_normal_prior, grid_posterior
from invae.normal_means.grid import discretize, normal_cdf


def test_known_normal_prior_gives_the_closed_form_shrinkage(rng):
    # The closed form against Bayes' rule on the prior put on a fine grid: 6000 cells of
    # h = 0.004 with 0 on a cell edge, so P(z ≤ 0) is split exactly; the midpoint rule's
    # errors are O(h²) ≈ 1.6e-5 relative, below 1e-4.
    prior = NormalPrior(0.5, 2.0)
    x, sigma = rng.normal(0.5, 2, 100), rng.uniform(0.5, 2, 100)
    mean, std, lfsr = prior.posterior(x, sigma)
    brute = grid_posterior(x, sigma, discretize(normal_cdf(0.5, np.sqrt(2.0)), np.linspace(-12, 12, 6000)))
    np.testing.assert_allclose(mean, brute.mean, atol=1e-4)
    np.testing.assert_allclose(std, brute.std, atol=1e-4)
    np.testing.assert_allclose(lfsr, brute.lfsr, atol=1e-4)
    shrink = 2.0 / (2.0 + sigma**2)
    np.testing.assert_allclose(mean, 0.5 + shrink * (x - 0.5), rtol=1e-14)
    np.testing.assert_allclose(lfsr, norm.cdf(-np.abs(mean) / std), rtol=1e-10)


def test_james_stein_is_the_positive_part_estimator(rng):
    x = rng.normal(1.0, 1.2, 50)
    prior = fit_normal_prior(x, 1.0, "james-stein")
    spread = ((x - x.mean()) ** 2).sum()
    expected = x.mean() + max(0.0, 1 - (len(x) - 3) / spread) * (x - x.mean())
    np.testing.assert_allclose(prior.posterior(x, 1.0)[0], expected, rtol=1e-13)
    flat = fit_normal_prior(rng.normal(0, 0.5, 50), 1.0, "james-stein")  # S/(n−3) < σ²: all shrunk
    assert flat.variance == 0.0


def test_marginal_ml_maximises_the_heteroscedastic_likelihood(rng):
    sigma = rng.uniform(0.5, 2, 400)
    x = rng.normal(1.0, np.sqrt(1.5 + sigma**2))
    fitted = fit_normal_prior(x, sigma, "ml")

    def negative(theta):
        return -norm.logpdf(x, theta[0], np.sqrt(np.exp(theta[1]) + sigma**2)).sum()

    best = minimize(negative, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12})
    assert negative([fitted.mean, np.log(fitted.variance)]) <= best.fun + 1e-7
    np.testing.assert_allclose([fitted.mean, fitted.variance], [best.x[0], np.exp(best.x[1])], rtol=1e-4)


def test_bad_fits_are_refused():
    with pytest.raises(ValueError, match="fit"):
        fit_normal_prior(np.zeros(10), 1.0, "moments")
    with pytest.raises(ValueError, match="4 observations"):
        fit_normal_prior(np.zeros(3), 1.0)
