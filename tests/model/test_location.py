"""The prior's location μ + B c_i and its M-step (docs/methods.md §3.13)."""

import numpy as np
import pytest
import torch

from invae.model.ggm import GaussianGraphicalModel
from invae.model.graphical_lasso import solve_precision

from ..conftest import random_spd


def _gaussian_q(rng, n, p):
    """Posterior means (n, p) and a shared covariance (p, p) of a Gaussian q."""
    return torch.as_tensor(rng.standard_normal((n, p)) + 2.0), torch.as_tensor(0.3 * random_spd(rng, p))


def test_without_a_location_the_prior_is_the_zero_mean_ggm_bit_for_bit(rng):
    # μ = 0 fixed and no covariates: every quantity is the one of N(0, Λ⁻¹), computed from
    # its formula here, to the last bit
    precision = random_spd(rng, 4)
    prior = GaussianGraphicalModel(precision, alpha=0.05)
    mean, cov = _gaussian_q(rng, 50, 4)
    second = mean.mT @ mean / 50 + cov
    expected = solve_precision(second.numpy(), 0.05, initial=precision, solver="newton")
    np.testing.assert_array_equal(prior.m_step_gaussian(mean, cov).precision.numpy(), expected)
    chol = torch.linalg.cholesky(prior.precision)
    formula = (torch.log(chol.diagonal()).sum() - 0.5 * ((mean @ chol) ** 2).sum(-1) - 2 * np.log(2 * np.pi))
    assert torch.equal(prior.log_prob(mean), formula)
    assert set(prior.gaussian_statistics(mean, cov)) == {"second_moment"}
    assert list(prior.state()) == ["precision"]  # what its model files and outputs hold


@pytest.mark.parametrize("ridge", [0.0, 0.7])
def test_the_location_m_step_is_the_brute_force_maximiser(rng, ridge):
    # maximise (1/n) Σ_i E_q[log N(z_i; μ + B c_i, Λ⁻¹)] − (ρ/2) Σ_j b_jᵀ Λ b_j over (μ, B, Λ = L Lᵀ)
    # by L-BFGS from scratch; the closed form (least squares with D + ρJ, then Λ = R⁻¹) must be
    # that maximiser (ρ = 0.7 moves B by ~0.5, far beyond the tolerance)
    n, p, k = 200, 3, 2
    mean, cov = _gaussian_q(rng, n, p)
    covariates = torch.as_tensor(rng.standard_normal((n, k)))
    mean = mean + covariates @ torch.as_tensor([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0]])
    prior = GaussianGraphicalModel(dim=p, covariates=k, fit_intercept=True, ridge=ridge)
    fitted = prior.m_step_gaussian(mean, cov, covariates=covariates)

    location, effects = torch.zeros(p, requires_grad=True), torch.zeros(p, k, requires_grad=True)
    raw = torch.zeros(p, p, requires_grad=True)
    optimizer = torch.optim.LBFGS([location, effects, raw], max_iter=2000, tolerance_grad=1e-12,
                                  tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        chol = torch.tril(raw, -1) + torch.diag(torch.exp(raw.diagonal()))
        candidate = GaussianGraphicalModel(chol @ chol.mT, location=location, coefficients=effects)
        shrinkage = 0.5 * ridge * torch.trace(effects.mT @ chol @ chol.mT @ effects)
        loss = -candidate.expected_log_prob(mean, cov.expand(n, p, p), covariates).mean() + shrinkage
        loss.backward()
        return loss

    optimizer.step(closure)
    torch.testing.assert_close(fitted.location, location.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(fitted.coefficients, effects.detach(), atol=1e-6, rtol=0)
    chol = torch.tril(raw, -1) + torch.diag(torch.exp(raw.diagonal()))
    torch.testing.assert_close(fitted.precision, (chol @ chol.mT).detach(), atol=1e-5, rtol=0)


def test_draws_with_weights_give_the_weighted_least_squares(rng):
    # the statistics of weighted draws: Θ̂ = (Σ w d dᵀ)⁻¹ Σ w d zᵀ, computed here by lstsq on √w-scaled rows
    n, p, k, s = 40, 3, 1, 5
    z = torch.as_tensor(rng.standard_normal((s, n, p)))
    weights = torch.as_tensor(rng.uniform(0.1, 1.0, (s, n)))
    covariates = torch.as_tensor(rng.standard_normal((n, k)))
    fitted = GaussianGraphicalModel(dim=p, covariates=k, fit_intercept=True).m_step(z, weights, covariates)
    design = np.column_stack([np.ones(n), covariates.numpy()])
    root = np.sqrt(weights.numpy()).reshape(-1, 1)
    theta = np.linalg.lstsq(root * np.tile(design, (s, 1)), root * z.numpy().reshape(-1, p), rcond=None)[0]
    # the M-step's ridge of 1e-10 × D's mean diagonal (collinear covariates) moves Θ̂ by about 1e-10 relative
    np.testing.assert_allclose(fitted.location.numpy(), theta[0], rtol=1e-9)
    np.testing.assert_allclose(fitted.coefficients.numpy(), theta[1:].T, rtol=1e-9)


def test_a_fixed_location_is_kept_and_the_second_moment_taken_about_it(rng):
    mean, cov = _gaussian_q(rng, 100, 3)
    location = torch.tensor([2.0, 1.0, -1.0])
    fitted = GaussianGraphicalModel(dim=3, location=location).m_step_gaussian(mean, cov)
    centred = mean - location
    torch.testing.assert_close(fitted.location, location)
    torch.testing.assert_close(fitted.precision, torch.linalg.inv(centred.mT @ centred / 100 + cov))


def test_samples_have_the_location_of_their_rows(generator):
    prior = GaussianGraphicalModel(torch.eye(2) * 4, location=[1.0, -1.0], coefficients=[[2.0], [0.0]])
    covariates = torch.tensor([[0.0], [3.0]]).repeat(20_000, 1)
    z = prior.sample(len(covariates), generator, covariates=covariates)
    # sd 1/2 per coordinate, 20 000 draws per row type: standard error 0.0035
    torch.testing.assert_close(z[0::2].mean(0), torch.tensor([1.0, -1.0]), atol=0.015, rtol=0)
    torch.testing.assert_close(z[1::2].mean(0), torch.tensor([7.0, -1.0]), atol=0.015, rtol=0)


@pytest.mark.parametrize("covariates, message", [(None, "needs 2 covariates"), (torch.zeros(3, 1), "got 1")])
def test_rows_without_the_priors_covariates_are_refused(covariates, message):
    prior = GaussianGraphicalModel(dim=2, covariates=2)
    with pytest.raises(ValueError, match=message):
        prior.log_prob(torch.zeros(3, 2), covariates)


def test_collinear_covariates_leave_the_fitted_locations_unique(rng):
    # a binary level absent from these rows (a stability half's): B's column for it is not
    # identified, the locations are, and they must be least squares' on the rows' posterior means
    mean, cov = _gaussian_q(rng, 20, 2)
    covariates = torch.column_stack([torch.as_tensor(rng.standard_normal(20)), torch.zeros(20)])
    prior = GaussianGraphicalModel(dim=2, covariates=2, fit_intercept=True)
    fitted = prior.m_step_gaussian(mean, cov, covariates=covariates)
    design = np.column_stack([np.ones(20), covariates.numpy()])
    expected = design @ np.linalg.lstsq(design, mean.numpy(), rcond=None)[0]
    np.testing.assert_allclose(fitted.location + covariates @ fitted.coefficients.T, expected, atol=1e-8)
    assert torch.all(fitted.coefficients[:, 1] == 0)


def test_state_and_config_rebuild_the_prior_and_old_states_have_no_location(rng):
    prior = GaussianGraphicalModel(random_spd(rng, 3), location=[1.0, 2.0, 3.0], coefficients=np.ones((3, 2)),
                                   fit_intercept=True)
    rebuilt = GaussianGraphicalModel.from_state(prior.state(), **prior.config())
    for key, value in prior.state().items():
        assert torch.equal(rebuilt.state()[key], value)
    assert rebuilt.fit_intercept and rebuilt.covariate_dim == 2
    old = GaussianGraphicalModel.from_state({"precision": prior.precision}, alpha=0.0, solver="newton")
    assert torch.equal(old.location, torch.zeros(3)) and old.covariate_dim == 0


def test_the_relative_change_takes_each_block_in_its_own_units():
    # a large μ must not hide a change of Λ, and a move of Θ away from 0 counts fully
    before = GaussianGraphicalModel(torch.eye(2), location=[1000.0, 0.0], fit_intercept=True)
    after = GaussianGraphicalModel(2 * torch.eye(2), location=[1000.0, 0.0], fit_intercept=True)
    assert after.relative_change(before) == pytest.approx(1.0)  # ‖Λ − Λ_prev‖ / ‖Λ_prev‖
    start = GaussianGraphicalModel(torch.eye(2), fit_intercept=True)
    moved = GaussianGraphicalModel(torch.eye(2), location=[0.1, 0.0], fit_intercept=True)
    assert moved.relative_change(start) == pytest.approx(1.0)
    assert GaussianGraphicalModel(2 * torch.eye(2)).relative_change(GaussianGraphicalModel(torch.eye(2))) == 1.0
