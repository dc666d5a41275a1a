import numpy as np
import pytest
import torch

import invae.references.em as em_module
from invae import EM, GaussianGraphicalModel, linear_gaussian, simulate_problem
from invae.model.likelihoods import NoisePerRowGaussianLikelihood
from invae.model.forward import LinearOperator
from invae.model.missing import MissingEntries
from invae.model.mixture import GaussianMixture
from invae.references.exact import marginal_log_likelihood
from invae.model.rows import RowMoments
from invae.references.moments import moments_suffice, sigma_rows


def _rows(rng, n=3000, r=5, offset=1e3):
    return rng.standard_normal((n, r)) @ rng.standard_normal((r, r)) + offset


def test_sigma_rows_have_the_rows_mean_and_covariance_even_when_it_is_singular(rng):
    rows = _rows(rng, r=4)
    rows = np.column_stack([rows, rows[:, 0] - rows[:, 1], np.full(len(rows), 2.0)])  # collinear, constant
    sigma = sigma_rows(RowMoments.of(rows)).numpy()
    assert sigma.shape == (12, 6)
    np.testing.assert_allclose(sigma.mean(0), rows.mean(0), rtol=1e-13)
    np.testing.assert_allclose(np.cov(sigma.T, bias=True), np.cov(rows.T, bias=True), atol=1e-9)


def test_the_mean_log_likelihood_on_the_sigma_rows_is_that_on_all_rows(rng):
    # log N(x_i; A η_i, C) is quadratic in the row (x_i, c_i): its average depends on the rows'
    # mean and covariance only, so the 2r sigma rows give it to round-off
    problem = simulate_problem(p=4, n=2000, m=6, forward="gaussian", noise_std=0.7, seed=2)
    prior = GaussianGraphicalModel(problem.precision, location=[1.0, -2.0, 0.0, 0.5])
    likelihood = linear_gaussian(problem.A, 0.7)
    x = torch.as_tensor(problem.X)
    sigma = sigma_rows(RowMoments.of(problem.X))
    np.testing.assert_allclose(float(marginal_log_likelihood(sigma, prior, likelihood).mean()),
                               float(marginal_log_likelihood(x, prior, likelihood).mean()), rtol=1e-12)


def _em_on_all_rows(monkeypatch, prior, likelihood, rows, **options):
    monkeypatch.setattr(em_module, "moments_suffice", lambda prior, likelihood: False)
    fitted = EM(prior, likelihood, **options).fit(rows)
    monkeypatch.undo()
    return fitted


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("mean_field", [False, True])
def test_em_from_the_moments_follows_em_on_all_rows_step_for_step(rng, monkeypatch, mean_field):
    # a compressive A, a penalty, two covariates and a fitted intercept: every part of EM's path
    problem = simulate_problem(p=5, n=1500, m=4, forward="compressive", noise_std=0.8, seed=4)
    covariates = rng.standard_normal((1500, 2))
    rows = np.column_stack([problem.X + covariates @ rng.standard_normal((2, 4)) + 3.0, covariates])
    prior = GaussianGraphicalModel(dim=5, alpha=0.05, covariates=2, fit_intercept=True)
    likelihood = linear_gaussian(problem.A, 0.8)
    options = {"max_iter": 25, "tol": 0.0, "mean_field": mean_field}
    assert moments_suffice(prior, likelihood)
    fast = EM(prior, likelihood, **options).fit(rows)
    slow = _em_on_all_rows(monkeypatch, prior, likelihood, rows, **options)
    # both run the same 25 iterations from the same start: the objectives agree to round-off at
    # every step, and Λ̂ to the graphical lasso's own tolerance (its Newton steps stop at 1e-10)
    np.testing.assert_allclose(fast.history_["objective"], slow.history_["objective"], rtol=1e-10)
    np.testing.assert_allclose(fast.precision_, slow.precision_, atol=1e-7)
    np.testing.assert_allclose(fast.prior_.coefficients.numpy(), slow.prior_.coefficients.numpy(), atol=1e-7)
    np.testing.assert_allclose(fast.transform(rows), slow.transform(rows), atol=1e-7)


def test_only_a_graphical_prior_with_one_noise_for_every_row_and_no_missing_entry_is_fitted_from_moments():
    graphical, a = GaussianGraphicalModel(dim=2), np.eye(2)
    assert moments_suffice(graphical, linear_gaussian(a, [0.5, 1.0]))
    assert not moments_suffice(graphical, MissingEntries(linear_gaussian(a, 0.5)))
    assert not moments_suffice(graphical, NoisePerRowGaussianLikelihood(LinearOperator(a)))
    mixture = GaussianMixture([0.5, 0.5], [[1.0, 0.0], [-1.0, 0.0]], np.stack([np.eye(2)] * 2))
    assert not moments_suffice(mixture, linear_gaussian(a, 0.5))
