import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from invae.model.ggm import GaussianGraphicalModel
from invae.model.mixture import GaussianMixture

from ..conftest import random_spd


def test_log_prob_matches_scipy(rng):
    precision = random_spd(rng, 5)
    z = rng.standard_normal((7, 5))
    prior = GaussianGraphicalModel(precision)
    expected = multivariate_normal(np.zeros(5), np.linalg.inv(precision)).logpdf(z)
    np.testing.assert_allclose(prior.log_prob(torch.as_tensor(z)).numpy(), expected, rtol=1e-12)


def test_log_prob_broadcasts_over_leading_dimensions(rng):
    prior = GaussianGraphicalModel(random_spd(rng, 4))
    z = torch.as_tensor(rng.standard_normal((3, 6, 4)))
    assert prior.log_prob(z).shape == (3, 6)
    torch.testing.assert_close(prior.log_prob(z)[1], prior.log_prob(z[1]))


def test_samples_have_covariance_inverse_precision(rng, generator):
    precision = random_spd(rng, 4, condition=3.0)
    n = 200_000
    z = GaussianGraphicalModel(precision).sample(n, generator).numpy()
    cov = np.linalg.inv(precision)
    # Var of a sample covariance entry: (Σ_ij² + Σ_ii Σ_jj)/n; allow 5 standard errors.
    se = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / n)
    assert np.all(np.abs(z.T @ z / n - cov) < 5 * se)


def test_unpenalised_m_step_is_the_inverse_second_moment(rng):
    z = torch.as_tensor(rng.standard_normal((2, 50, 4)))  # S = 2 draws × 50 observations
    fitted = GaussianGraphicalModel(dim=4).m_step(z)
    flat = z.reshape(-1, 4)
    torch.testing.assert_close(fitted.precision, torch.linalg.inv(flat.T @ flat / 100))


def test_gaussian_m_step_adds_the_posterior_covariance(rng):
    mean = torch.as_tensor(rng.standard_normal((30, 3)))
    var = torch.as_tensor(rng.uniform(0.1, 1.0, (30, 3)))
    prior = GaussianGraphicalModel(dim=3, alpha=0.0)
    expected = torch.linalg.inv(mean.T @ mean / 30 + torch.diag(var.mean(0)))
    torch.testing.assert_close(prior.m_step_gaussian(mean, var=var).precision, expected)
    torch.testing.assert_close(prior.m_step_gaussian(mean, torch.diag_embed(var)).precision, expected)
    torch.testing.assert_close(prior.m_step_gaussian(mean, torch.diag(var.mean(0))).precision, expected)
    with pytest.raises(ValueError, match="exactly one"):
        prior.m_step_gaussian(mean)


def test_penalty_is_half_alpha_times_off_diagonal_l1():
    precision = torch.tensor([[2.0, -0.5, 0.0], [-0.5, 2.0, 0.3], [0.0, 0.3, 1.0]])
    assert GaussianGraphicalModel(precision, alpha=0.1).penalty() == pytest.approx(0.5 * 0.1 * 1.6)


@pytest.mark.parametrize("precision, message", [
    (np.ones((2, 3)), "square"),
    (np.zeros((2, 2)), "positive-definite"),
])
def test_bad_precision_is_refused(precision, message):
    with pytest.raises(ValueError, match=message):
        GaussianGraphicalModel(precision)


def test_negative_penalty_is_refused():
    with pytest.raises(ValueError, match="alpha"):
        GaussianGraphicalModel(dim=3, alpha=-0.1)


def test_weighted_m_step_equals_the_m_step_on_replicated_draws(rng):
    # Integer weights are copies: S = Σ w z zᵀ / Σ w is the second moment of the replicated draws.
    z = torch.as_tensor(rng.standard_normal((3, 40, 4)))
    weights = torch.as_tensor(rng.integers(1, 4, size=(3, 40)), dtype=z.dtype)
    prior = GaussianGraphicalModel(dim=4, alpha=0.05)
    replicated = torch.repeat_interleave(z.reshape(-1, 4), weights.reshape(-1).long(), dim=0)
    torch.testing.assert_close(prior.m_step(z, weights).precision, prior.m_step(replicated).precision,
                               rtol=1e-9, atol=1e-9)


def test_a_prior_is_a_module_whose_state_dict_holds_its_parameters_and_to_returns_a_copy(rng):
    prior = GaussianGraphicalModel(random_spd(rng, 4))
    mixture = GaussianMixture.standard(4, 3)
    assert isinstance(prior, torch.nn.Module) and list(prior.state_dict()) == ["precision", "location", "coefficients"]
    assert list(mixture.state_dict()) == ["weights", "means", "precisions", "coefficients"]  # Cholesky factors: derived
    moved = prior.to(dtype=torch.float32)  # priors are immutable: a moved copy, the original as it was
    assert moved is not prior and prior.precision.dtype == torch.float64 and moved.precision.dtype == torch.float32
    z = torch.as_tensor(rng.standard_normal((5, 4)))
    torch.testing.assert_close(prior(z), prior.log_prob(z), rtol=0, atol=0)


def test_expected_log_prob_is_minus_the_kl_minus_the_entropy(rng):
    # E_q[log g] = −KL(q ‖ g) − H(q) exactly, by torch's Gaussian KL and entropy; a diagonal
    # q given as its variances too
    from torch.distributions import MultivariateNormal, kl_divergence
    p, n = 4, 3
    precision = torch.as_tensor(random_spd(rng, p))
    prior = GaussianGraphicalModel(precision)
    mean = torch.as_tensor(rng.standard_normal((n, p)))
    cov = torch.as_tensor(random_spd(rng, p)).expand(n, p, p)
    variances = torch.as_tensor(rng.uniform(0.2, 2.0, (n, p)))
    g = MultivariateNormal(torch.zeros(p, dtype=torch.float64), precision_matrix=precision)
    for covariance, given in ((cov, cov), (torch.diag_embed(variances), variances)):
        q = MultivariateNormal(mean, covariance)
        torch.testing.assert_close(prior.expected_log_prob(mean, given), -kl_divergence(q, g) - q.entropy(),
                                   rtol=0, atol=1e-12)
