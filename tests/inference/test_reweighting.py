import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import Independent, MultivariateNormal, Normal, TransformedDistribution

from invae import GaussianGraphicalModel, linear_gaussian
from invae.inference.posteriors import IAFEncoder, MixtureEncoder
from invae.inference.reweighting import (defensive_draws, importance_draws, normalised_weights, resample, weighted_cdf,
                                         weighted_moments)
from invae.references.exact import exact_posterior

from ..conftest import random_spd


def _randomized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every parameter away from its start, so the flow's steps are far from the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.5 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return module


def test_defensive_density_of_a_gaussian_is_the_stratified_mixture():
    # 5 draws over widths (1, 2) are 3 + 2: r = (3/5) N(μ, σ²) + (2/5) N(μ, 4σ²), per row (scipy).
    torch.manual_seed(0)
    loc, scale = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64) + 0.5
    z, log_r = defensive_draws(Independent(Normal(loc, scale), 1), 5)
    assert z.shape == (5, 4, 3) and log_r.shape == (5, 4)
    expected = np.log(0.6 * np.prod(stats.norm.pdf(z, loc, scale), axis=-1)
                      + 0.4 * np.prod(stats.norm.pdf(z, loc, 2 * scale), axis=-1))
    np.testing.assert_allclose(log_r, expected, rtol=1e-10)


def test_defensive_density_of_a_mixture_widens_every_component():
    torch.manual_seed(0)
    encoder = _randomized(MixtureEncoder(m=3, p=2, hidden=(8,), components=2).double(), seed=1)
    q = encoder(torch.randn(4, 3, dtype=torch.float64))
    z, log_r = defensive_draws(q, 6)
    weights = q.mixture_distribution.probs.detach().numpy()
    means, covs = q.component_distribution.mean.detach().numpy(), q.component_distribution.covariance_matrix.detach().numpy()
    for row in range(4):
        density = sum(0.5 * weights[row, c] * stats.multivariate_normal(means[row, c], width**2 * covs[row, c]).pdf(z[:, row])
                      for c in range(2) for width in (1.0, 2.0))
        np.testing.assert_allclose(log_r[:, row].detach(), np.log(density), rtol=1e-10)


@pytest.mark.parametrize("steps", [1, 3])
def test_defensive_density_of_a_flow_is_that_of_each_widened_flow(steps):
    # Through the flow, r(z) = ½ q(z) + ½ q₂(z), q₂ = the same flow on a base twice as wide.
    # Brute force: score z under q and q₂ by inverting the flow (Pyro's sequential inversion;
    # a clone of z, so no cached forward pass is reused).
    torch.manual_seed(0)
    encoder = _randomized(IAFEncoder(m=4, p=3, hidden=(8,), n_steps=steps, context=5).double(), seed=2)
    with torch.no_grad():
        q = encoder(torch.randn(2, 4, dtype=torch.float64))
        z, log_r = defensive_draws(q, 8)
        base = q.base_dist.base_dist
        wide = TransformedDistribution(Independent(Normal(base.loc, 2 * base.scale), 1), q.transforms)
        expected = torch.logaddexp(q.log_prob(z.clone()), wide.log_prob(z.clone())) - math.log(2)
    torch.testing.assert_close(log_r, expected, rtol=1e-8, atol=1e-8)


@pytest.fixture(scope="module")
def linear_gaussian_posterior():
    """Rows x (n, m), the model, and the exact posterior's mean (n, p) and covariance (p, p)."""
    generator = torch.Generator().manual_seed(0)
    prior = GaussianGraphicalModel(torch.as_tensor(random_spd(np.random.default_rng(0), 3)))
    likelihood = linear_gaussian(torch.randn(4, 3, generator=generator, dtype=torch.float64), 0.5)
    x = likelihood.sample(prior.sample(40, generator=generator), generator=generator)
    mean, cov = exact_posterior(x, prior, likelihood)
    return x, prior, likelihood, mean, cov


def test_reweighting_a_wrong_q_recovers_the_exact_posterior(linear_gaussian_posterior):
    # q is off: mean shifted by 0.5 sd, sds 0.7 × the posterior's, no correlations. The
    # weighted moments must meet the exact posterior within Monte Carlo error: the standard
    # error of a self-normalised mean is ≈ sd/√ESS (delta method), that of an sd ≈ sd/√(2 ESS)
    # for a Gaussian target; so 4 standard errors over 120 coordinates (fixed seed).
    x, prior, likelihood, mean, cov = linear_gaussian_posterior
    sd = cov.diagonal().sqrt()
    q = Independent(Normal(mean + 0.5 * sd, 0.7 * sd.expand_as(mean)), 1)
    torch.manual_seed(0)
    z, weights = importance_draws(q, x, prior, likelihood, n_draws=4096)
    ess = 1 / weights.square().sum(0)
    assert float(ess.min()) > 400  # a tenth of the draws at least (measured: 1017)
    estimate, spread = weighted_moments(z, weights)
    standard_error = sd / ess.sqrt()[:, None]
    assert float(((estimate - mean) / standard_error).abs().max()) < 4
    assert float(((spread - sd) / (standard_error / math.sqrt(2))).abs().max()) < 4
    assert float(((q.mean - mean) / standard_error).abs().min()) > 10  # q's own mean is far off
    # P(z_j ≤ μ_j | x) = ½ for a Gaussian posterior; sd of the weighted fraction ≤ ½/√ESS
    below = weighted_cdf(z, weights, mean)
    assert float(((below - 0.5) / (0.5 / ess.sqrt()[:, None])).abs().max()) < 4


def test_normalised_weights_give_impossible_draws_none_and_refuse_nan():
    weights = normalised_weights(torch.tensor([[0.0, -math.inf], [math.log(3.0), 0.0]]))
    torch.testing.assert_close(weights, torch.tensor([[0.25, 0.0], [0.75, 1.0]]))
    with pytest.raises(FloatingPointError, match="not finite"):
        normalised_weights(torch.tensor([[0.0, math.nan], [0.0, 0.0]]))
    with pytest.raises(FloatingPointError, match="not finite"):
        normalised_weights(torch.tensor([[0.0, -math.inf], [0.0, -math.inf]]))  # row 2 has no weight
    with pytest.raises(FloatingPointError, match="not finite"):
        normalised_weights(torch.tensor([[0.0, math.inf], [0.0, 0.0]]))


def test_resample_draws_in_proportion_to_the_weights():
    z = torch.arange(3.0)[:, None, None].expand(3, 2, 1)  # draw s is the value s, in both rows
    weights = torch.tensor([[0.0, 0.2], [1.0, 0.3], [0.0, 0.5]])
    torch.manual_seed(0)
    picked = resample(z, weights, 20_000)
    assert picked.shape == (20_000, 2, 1)
    assert bool((picked[:, 0] == 1).all())
    # frequencies of row 2 against (0.2, 0.3, 0.5): binomial sd ≤ 0.0036, 4 sds
    frequencies = torch.stack([(picked[:, 1, 0] == s).double().mean() for s in range(3)])
    torch.testing.assert_close(frequencies, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), atol=0.015, rtol=0)



def test_a_gauss_markov_path_widens_by_its_noise(generator):
    # the markov family's q: its density, widened by τ, is the dense Gaussian N(μ, τ² Σ) (to_dense: N(μ, Σ))
    from invae.paths.encoder import FlatPath
    from invae.paths.gauss_markov import GaussMarkov

    diagonal = torch.linalg.cholesky(torch.tensor(random_spd(np.random.default_rng(1), 2))).expand(3, 4, 2, 2)
    path = GaussMarkov(torch.randn(3, 4, 2, generator=generator), diagonal, torch.randn(3, 3, 2, 2, generator=generator))
    z, log_r = defensive_draws(FlatPath(path), 5)
    assert z.shape == (5, 3, 8) and log_r.shape == (5, 3)
    dense = path.to_dense()
    wide = MultivariateNormal(dense.mean, 4 * dense.covariance_matrix)
    expected = torch.logsumexp(torch.stack([math.log(0.6) + dense.log_prob(z), math.log(0.4) + wide.log_prob(z)]), 0)
    torch.testing.assert_close(log_r, expected, rtol=1e-9, atol=1e-9)
