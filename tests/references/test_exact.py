import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from invae.model.forward import LinearOperator
from invae.model.ggm import GaussianGraphicalModel
from invae.model.likelihoods import GaussianLikelihood, NoisePerRowGaussianLikelihood, linear_gaussian
from invae.references.exact import exact_posterior, marginal_log_likelihood, penalized_log_likelihood

from ..conftest import random_spd


def _joint(precision, a, noise_var):
    """Covariance of the joint Gaussian (z, x): [[Σ, ΣAᵀ], [AΣ, AΣAᵀ + D]]."""
    cov_z = np.linalg.inv(precision)
    return cov_z, cov_z @ a.T, a @ cov_z @ a.T + np.diag(noise_var)


@pytest.mark.parametrize("m, per_sensor", [(6, False), (3, False), (6, True)])
def test_posterior_equals_brute_force_conditioning(rng, m, per_sensor):
    p = 4
    precision, a = random_spd(rng, p), rng.standard_normal((m, p))
    sigma = rng.uniform(0.3, 1.5, m) if per_sensor else np.full(m, 0.6)
    x = rng.standard_normal((5, m))
    s_zz, s_zx, s_xx = _joint(precision, a, sigma**2)
    # Gaussian conditioning: E[z|x] = Σ_zx Σ_xx⁻¹ x, Cov[z|x] = Σ_zz − Σ_zx Σ_xx⁻¹ Σ_xz
    mean_bf = x @ np.linalg.solve(s_xx, s_zx.T)
    cov_bf = s_zz - s_zx @ np.linalg.solve(s_xx, s_zx.T)
    lik = linear_gaussian(a, torch.as_tensor(sigma) if per_sensor else 0.6)
    mean, cov = exact_posterior(torch.as_tensor(x), GaussianGraphicalModel(precision), lik)
    np.testing.assert_allclose(mean.numpy(), mean_bf, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), cov_bf, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("m", [2, 5, 8])
def test_marginal_log_likelihood_matches_scipy(rng, m):
    precision, a = random_spd(rng, 5), rng.standard_normal((m, 5))
    x = rng.standard_normal((10, m)) * 2
    _, _, s_xx = _joint(precision, a, np.full(m, 0.8**2))
    expected = multivariate_normal(np.zeros(m), s_xx).logpdf(x)
    got = marginal_log_likelihood(torch.as_tensor(x), GaussianGraphicalModel(precision), linear_gaussian(a, 0.8))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_one_noise_level_per_row_is_each_rows_own_model(rng):
    # Row i under NoisePerRowGaussianLikelihood is x_i ~ N(A z, σ_i² I): brute-force conditioning
    # of each row's joint Gaussian, and scipy's density of its marginal, one row at a time.
    p, m, n = 3, 5, 6
    precision, a = random_spd(rng, p), rng.standard_normal((m, p))
    x, sigma = rng.standard_normal((n, m)), rng.uniform(0.3, 1.5, n)
    rows = torch.as_tensor(NoisePerRowGaussianLikelihood.rows(x, sigma))
    lik = NoisePerRowGaussianLikelihood(LinearOperator(a))
    mean, cov = exact_posterior(rows, GaussianGraphicalModel(precision), lik)
    log_evidence = marginal_log_likelihood(rows, GaussianGraphicalModel(precision), lik)
    assert cov.shape == (n, p, p)
    for i in range(n):
        s_zz, s_zx, s_xx = _joint(precision, a, np.full(m, sigma[i] ** 2))
        np.testing.assert_allclose(mean[i].numpy(), np.linalg.solve(s_xx, s_zx.T).T @ x[i], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(cov[i].numpy(), s_zz - s_zx @ np.linalg.solve(s_xx, s_zx.T), rtol=1e-9, atol=1e-12)
        assert log_evidence[i].item() == pytest.approx(multivariate_normal(np.zeros(m), s_xx).logpdf(x[i]), rel=1e-10)


def test_penalized_log_likelihood_subtracts_the_penalty(rng):
    precision, x = random_spd(rng, 3), torch.as_tensor(rng.standard_normal((4, 3)))
    lik = linear_gaussian(np.eye(3), 1.0)
    plain = float(marginal_log_likelihood(x, GaussianGraphicalModel(precision), lik).mean())
    prior = GaussianGraphicalModel(precision, alpha=0.3)
    assert penalized_log_likelihood(x, prior, lik) == pytest.approx(plain - prior.penalty())


def test_models_without_closed_form_are_refused(rng):
    class Squared:
        in_dim = out_dim = 2

        def __call__(self, z):
            return z**2

        def to(self, device=None, dtype=None):
            return self

    with pytest.raises(ValueError, match="linear-Gaussian"):
        exact_posterior(torch.zeros(3, 2), GaussianGraphicalModel(dim=2), GaussianLikelihood(Squared(), 1.0))
    with pytest.raises(ValueError, match="one noise level"):
        exact_posterior(torch.zeros(3, 2), GaussianGraphicalModel(dim=2),
                        linear_gaussian(np.eye(2), torch.ones(3, 1)))


def test_posterior_and_evidence_with_a_location_equal_brute_force_conditioning(rng):
    # z ~ N(η_i, Λ⁻¹), η_i = μ + B c_i: E[z|x] = η + Σ_zx Σ_xx⁻¹ (x − A η), x ~ N(A η, Σ_xx)
    p, m, k, n = 4, 6, 2, 5
    precision, a = random_spd(rng, p), rng.standard_normal((m, p))
    location, effects = rng.standard_normal(p), rng.standard_normal((p, k))
    x, covariates = rng.standard_normal((n, m)), rng.standard_normal((n, k))
    s_zz, s_zx, s_xx = _joint(precision, a, np.full(m, 0.36))
    eta = location + covariates @ effects.T
    mean_bf = eta + (x - eta @ a.T) @ np.linalg.solve(s_xx, s_zx.T)
    prior = GaussianGraphicalModel(precision, location=location, coefficients=effects)
    rows = torch.as_tensor(np.column_stack([x, covariates]))
    mean, cov = exact_posterior(rows, prior, linear_gaussian(a, 0.6))
    np.testing.assert_allclose(mean.numpy(), mean_bf, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), s_zz - s_zx @ np.linalg.solve(s_xx, s_zx.T), rtol=1e-9, atol=1e-12)
    expected = [multivariate_normal(a @ eta_i, s_xx).logpdf(x_i) for x_i, eta_i in zip(x, eta)]
    got = marginal_log_likelihood(rows, prior, linear_gaussian(a, 0.6))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_posterior_and_evidence_with_missing_entries_condition_on_the_observed_block(rng):
    # each row conditions the dense joint Gaussian of (z, x) on its observed entries alone
    from invae.model.missing import MissingEntries

    p, m, n = 4, 6, 8
    precision, a = random_spd(rng, p), rng.standard_normal((m, p))
    sigma = rng.uniform(0.3, 1.2, m)
    location = rng.standard_normal(p)
    x = rng.standard_normal((n, m)) * 2
    x[rng.random((n, m)) < 0.4] = np.nan
    x[0, :] = np.r_[np.nan, x[0, 1:]]  # at least one entry each
    x[:, 0] = np.where(np.isnan(x[:, 0]).all(), 1.0, x[:, 0])
    likelihood = MissingEntries(linear_gaussian(a, torch.as_tensor(sigma)))
    rows = torch.as_tensor(likelihood.rows(x))
    prior = GaussianGraphicalModel(precision, location=location)
    mean, cov = exact_posterior(rows, prior, likelihood)
    log_evidence = marginal_log_likelihood(rows, prior, likelihood)
    s_zz, s_zx, s_xx = _joint(precision, a, sigma**2)
    for i in range(n):
        seen = ~np.isnan(x[i])
        gain = np.linalg.solve(s_xx[np.ix_(seen, seen)], s_zx[:, seen].T).T  # Σ_zO Σ_OO⁻¹
        np.testing.assert_allclose(mean[i].numpy(), location + gain @ (x[i, seen] - a[seen] @ location),
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(cov[i].numpy(), s_zz - gain @ s_zx[:, seen].T, rtol=1e-9, atol=1e-12)
        expected = multivariate_normal(a[seen] @ location, s_xx[np.ix_(seen, seen)]).logpdf(x[i, seen])
        assert float(log_evidence[i]) == pytest.approx(expected, rel=1e-10)


def test_a_mixture_prior_has_no_exact_evidence_with_missing_entries():
    from invae.model.missing import MissingEntries
    from invae.model.mixture import GaussianMixture
    from invae.references.exact import has_exact_evidence

    likelihood = linear_gaussian(np.eye(3), 0.5)
    mixture = GaussianMixture.standard(3, 2)
    assert has_exact_evidence(mixture, likelihood) and not has_exact_evidence(mixture, MissingEntries(likelihood))
    assert has_exact_evidence(GaussianGraphicalModel(dim=3), MissingEntries(likelihood))
