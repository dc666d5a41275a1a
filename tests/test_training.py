import math

import pytest
import torch
from torch.distributions import AffineTransform, Independent, MultivariateNormal, Normal, TransformedDistribution

from invae import GaussianGraphicalModel
from invae.training import TrainingSettings, lambda_step, seeded

from .conftest import random_spd


def test_full_covariance_lambda_step_averages_the_per_row_covariances(rng):
    n, p = 6, 3
    mean = torch.as_tensor(rng.standard_normal((n, p)))
    covs = torch.stack([torch.as_tensor(random_spd(rng, p)) for _ in range(n)])
    prior = GaussianGraphicalModel(dim=p, alpha=0.05)
    got = lambda_step(prior, MultivariateNormal(mean, covs))
    torch.testing.assert_close(got.precision, prior.m_step_gaussian(mean, covs).precision)


def test_sampled_lambda_step_matches_the_exact_second_moment_within_standard_errors(rng):
    # A Gaussian q hidden behind a flow (torch gives it no closed-form moments): the Λ-step
    # falls back on draws. With α = 0, Λ̂⁻¹ = S = (1/(Kn)) Σ z zᵀ; each entry's standard error
    # is √((E[z_j² z_k²] − S_jk²)/(Kn)) ≈ √((S_jj S_kk + S_jk²)/(Kn)) for a near-centred z.
    n, p, draws = 400, 3, 50
    loc = torch.as_tensor(rng.normal(0, 0.3, (n, p)))
    scale = torch.as_tensor(rng.uniform(0.5, 1.5, (n, p)))
    base = Independent(Normal(torch.zeros(n, p), torch.ones(n, p)), 1)
    q = TransformedDistribution(base, [AffineTransform(loc, scale, event_dim=1)])
    torch.manual_seed(0)
    got = torch.linalg.inv(lambda_step(GaussianGraphicalModel(dim=p), q, n_draws=draws).precision)
    exact = (loc.T @ loc + torch.diag(scale.square().sum(0))) / n
    se = torch.sqrt((exact.diagonal()[:, None] * exact.diagonal()[None] + exact.square()) / (draws * n))
    assert torch.all((got - exact).abs() < 4 * se)


def test_seeded_repeats_draws_and_leaves_the_global_stream_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with seeded(123, "cpu"):
        first = torch.randn(4)
    with seeded(123, "cpu"):
        again = torch.randn(4)
    torch.testing.assert_close(first, again)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("name, value", [("lambda_draws", 0), ("n_critic", 1.5), ("lr_decay", 0.0),
                                         ("tol", math.inf)])
def test_settings_are_validated(name, value):
    settings = {"learning_rate": 1e-3, "batch_size": 8, "n_critic": 2, "lambda_step": "expected",
                "max_iter": 10, "tol": 1e-4, "window": 5, name: value}
    with pytest.raises(ValueError, match=name):
        TrainingSettings(**settings)
