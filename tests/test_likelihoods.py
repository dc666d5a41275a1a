import numpy as np
import pytest
import torch
from scipy.stats import norm

from invae.likelihoods import linear_gaussian


def test_log_prob_matches_scipy(rng):
    a = rng.standard_normal((3, 2))
    z, x = rng.standard_normal((5, 2)), rng.standard_normal((5, 3))
    lik = linear_gaussian(a, 0.7)
    expected = norm(z @ a.T, 0.7).logpdf(x).sum(-1)
    np.testing.assert_allclose(lik.log_prob(torch.as_tensor(x), torch.as_tensor(z)).numpy(), expected)


def test_per_observation_noise_levels(rng):
    a = rng.standard_normal((3, 2))
    z, x = rng.standard_normal((5, 2)), rng.standard_normal((5, 3))
    sigma = rng.uniform(0.5, 2.0, (5, 1))
    lik = linear_gaussian(a, torch.as_tensor(sigma))
    expected = norm(z @ a.T, sigma).logpdf(x).sum(-1)
    np.testing.assert_allclose(lik.log_prob(torch.as_tensor(x), torch.as_tensor(z)).numpy(), expected)


def test_monte_carlo_draws_broadcast_against_data(rng):
    lik = linear_gaussian(np.eye(2), 1.0)
    z = torch.as_tensor(rng.standard_normal((4, 6, 2)))  # S = 4 draws for each of n = 6
    x = torch.as_tensor(rng.standard_normal((6, 2)))
    assert lik.log_prob(x, z).shape == (4, 6)


def test_samples_have_the_noise_level(generator):
    lik = linear_gaussian(np.eye(3), 0.5)
    n = 100_000
    x = lik.sample(torch.ones(n, 3), generator)
    # mean: SE 0.5/√n; variance: SE 0.25·√(2/n). Five standard errors.
    assert torch.all((x.mean(0) - 1).abs() < 5 * 0.5 / n**0.5)
    assert torch.all((x.var(0) - 0.25).abs() < 5 * 0.25 * (2 / n) ** 0.5)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_noise_level_is_refused(sigma):
    with pytest.raises(ValueError, match="noise standard deviation"):
        linear_gaussian(np.eye(2), sigma)
