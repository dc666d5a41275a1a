import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from invae import FunctionOperator, GaussianLikelihood, LinearOperator, PoissonLikelihood
from invae.model.missing import MissingEntries
from invae.paths.kalman import rts_smoother
from invae.paths.kalman_em import kalman_em, state_space
from invae.paths.observation import PathOperator, series_rows
from invae.paths.prior import PathPrior
from invae.paths.sde import Brownian, BrownianLearnedStart, DoubleWell, OrnsteinUhlenbeck
from invae.references.kalman import KalmanEM, has_kalman, kalman_log_likelihood

NOISE_STD = 0.4


def _series(generator, n=12, times=None, missing=0.15):
    """OU series (n, T, 1) seen with noise, NaN where missing; and their times (T,)."""
    times = torch.arange(10.0) if times is None else times
    z = OrnsteinUhlenbeck(1, drift=0.4, mean=1.0, diffusion=0.6).simulate(n, times, generator=generator)
    x = z + NOISE_STD * torch.randn(z.shape, generator=generator)
    x[torch.rand(x.shape, generator=generator) < missing] = torch.nan
    return x, times


def _likelihood(x, substeps=1, per_time=None):
    base = GaussianLikelihood(PathOperator(per_time or LinearOperator.identity(x.shape[-1]), x.shape[1], substeps),
                              NOISE_STD)
    return MissingEntries(base) if bool(torch.isnan(x).any()) else base


def _rows(x, likelihood):
    rows = series_rows(x)
    return likelihood.rows(rows, fitting=False) if isinstance(likelihood, MissingEntries) else rows


def _start(times, substeps=1):
    return PathPrior(OrnsteinUhlenbeck(1, drift=1.0, mean=0.0, diffusion=1.0), times, substeps)


def test_its_fit_is_kalman_ems(generator):
    x, times = _series(generator)
    likelihood = _likelihood(x)
    fitted = KalmanEM(_start(times), likelihood, tol=1e-10).fit(_rows(x, likelihood))
    direct = kalman_em(x, OrnsteinUhlenbeck(1, drift=1.0, mean=0.0, diffusion=1.0), times, torch.eye(1),
                       torch.tensor([NOISE_STD**2]), tol=1e-10)
    for name, value in direct.prior.parameters_by_name().items():
        np.testing.assert_allclose(fitted.prior_.summary()[name], value, rtol=1e-12)
    assert fitted.log_likelihood_ == pytest.approx(direct.log_likelihood, rel=1e-12)
    assert fitted.n_iter_ == direct.n_iter and fitted.converged_
    np.testing.assert_allclose(np.array(fitted.history_["objective"]) * len(x), direct.history, rtol=1e-12)
    assert len(fitted.history_["time"]) == len(direct.history)
    assert fitted.history_["objective"] == sorted(fitted.history_["objective"])  # EM never falls
    # the exact evidence at θ̂, from the rows
    assert kalman_log_likelihood(_rows(x, likelihood), fitted.prior_, likelihood) == pytest.approx(
        fitted.log_likelihood_, rel=1e-12)


def test_a_learned_noise_level_is_kalman_ems_and_its_posterior_is_at_it(generator):
    # two sensors H = (1, 0.5)ᵀ of a d = 1 path, entries missing: one σ̂ per sensor, as kalman_em learns them
    times = torch.arange(10.0)
    z = OrnsteinUhlenbeck(1, drift=0.4, mean=1.0, diffusion=0.6).simulate(12, times, generator=generator)
    h = torch.tensor([[1.0], [0.5]])
    x = z @ h.T + torch.tensor([0.3, 0.6]) * torch.randn(12, 10, 2, generator=generator)
    x[torch.rand(x.shape, generator=generator) < 0.15] = torch.nan
    likelihood = MissingEntries(GaussianLikelihood(PathOperator(LinearOperator(h), 10), torch.tensor([1.0, 1.0]),
                                                   learn_noise=True))
    rows = _rows(x, likelihood)
    with warnings.catch_warnings():  # 30 iterations of the same EM, settled or not
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = KalmanEM(_start(times), likelihood, max_iter=30).fit(rows)
        direct = kalman_em(x, OrnsteinUhlenbeck(1, drift=1.0, mean=0.0, diffusion=1.0), times, h, torch.ones(2),
                           learn_noise=True, max_iter=30)
    assert fitted.n_iter_ == direct.n_iter == 30
    assert fitted.history_["objective"] == sorted(fitted.history_["objective"])  # EM never falls
    for name, value in direct.prior.parameters_by_name().items():
        np.testing.assert_allclose(fitted.prior_.summary()[name], value, rtol=1e-12)
    std = fitted.likelihood_.base.noise_std
    assert fitted.likelihood_.base.learn_noise and std.shape == (2,)
    torch.testing.assert_close(std, direct.noise_var.sqrt(), rtol=1e-12, atol=0)
    assert fitted.log_likelihood_ == pytest.approx(direct.log_likelihood, rel=1e-12)
    assert kalman_log_likelihood(rows, fitted.prior_, fitted.likelihood_) == pytest.approx(direct.log_likelihood,
                                                                                            rel=1e-12)
    with torch.no_grad():  # the posterior is the smoother's at θ̂ and σ̂
        smoothed = rts_smoother(x, state_space(direct.prior, times, h, direct.noise_var))
    np.testing.assert_allclose(fitted.posterior(rows)[0], smoothed.mean[..., 0], rtol=1e-10)


def test_its_posterior_is_the_rts_smoothers_at_the_fitted_theta(generator):
    x, times = _series(generator)
    likelihood = _likelihood(x)
    rows = _rows(x, likelihood)
    fitted = KalmanEM(_start(times), likelihood).fit(rows)
    with torch.no_grad():
        smoothed = rts_smoother(x, state_space(fitted.prior_.sde(), times, torch.eye(1), torch.tensor([NOISE_STD**2])))
    mean, std = fitted.posterior(rows)
    assert mean.shape == std.shape == (12, 10)
    np.testing.assert_allclose(mean, smoothed.mean[..., 0], rtol=1e-12)
    np.testing.assert_allclose(std, smoothed.cov[..., 0, 0].sqrt(), rtol=1e-12)


def test_sub_steps_are_answered_by_dense_conditioning(generator):
    # OU, d = 1, irregular times, k = 3: the grid's posterior is that of the dense Gaussian of the
    # grid path, Cov(z_s, z_t) = Σ∞ exp(−θ |s − t|), conditioned on the observed entries
    times = torch.tensor([0.0, 0.7, 1.1, 2.5, 3.0, 4.2])
    x, _ = _series(generator, n=3, times=times, missing=0.2)
    likelihood = _likelihood(x, substeps=3)
    prior = PathPrior(OrnsteinUhlenbeck(1, drift=0.5, mean=0.3, diffusion=0.8), times, 3)
    estimator = KalmanEM(prior, likelihood).restore()  # at prior's θ
    mean, std = estimator.posterior(_rows(x, likelihood))
    assert mean.shape == (3, 16)
    grid, observed_at = prior.grid.numpy(), prior.observed_index.numpy()
    variance = 0.8**2 / (2 * 0.5)
    cov = variance * np.exp(-0.5 * np.abs(grid[:, None] - grid[None, :]))
    for i in range(3):
        seen = ~np.isnan(x[i, :, 0].numpy())
        rows = observed_at[seen]
        gain = cov[:, rows] @ np.linalg.inv(cov[np.ix_(rows, rows)] + NOISE_STD**2 * np.eye(len(rows)))
        np.testing.assert_allclose(mean[i], 0.3 + gain @ (x[i, seen, 0].numpy() - 0.3), rtol=1e-9)
        np.testing.assert_allclose(std[i], np.sqrt(np.diag(cov - gain @ cov[rows])), rtol=1e-9)


def test_one_series_is_enough(generator):
    x, times = _series(generator, n=1, missing=0.0)
    likelihood = _likelihood(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = KalmanEM(_start(times), likelihood, max_iter=5).fit(_rows(x, likelihood))
    assert fitted.posterior(_rows(x, likelihood))[0].shape == (1, 10)


@pytest.mark.parametrize("sde, names", [(Brownian, {"diffusion"}),
                                         (BrownianLearnedStart, {"diffusion", "start_mean", "start_scale"})])
def test_brownian_fits_with_a_diffuse_or_learned_start(generator, sde, names):
    x, times = _series(generator, n=8)
    likelihood = _likelihood(x)
    fitted = KalmanEM(PathPrior(sde(1), times), likelihood).fit(_rows(x, likelihood))
    assert set(fitted.prior_.summary()) == names
    assert fitted.history_["objective"][-1] > fitted.history_["objective"][0]


@pytest.mark.parametrize("case, message", [
    ("double-well", "kalman needs a linear SDE"),
    ("poisson", "kalman needs Gaussian noise"),
    ("function", "kalman needs a per-time forward matrix H"),
])
def test_what_kalman_cannot_do_is_refused(generator, case, message):
    x, times = _series(generator, missing=0.0)
    prior = PathPrior(DoubleWell(), times) if case == "double-well" else _start(times)
    if case == "poisson":
        likelihood = PoissonLikelihood(PathOperator(LinearOperator.identity(1), 10))
    elif case == "function":
        likelihood = _likelihood(x, per_time=FunctionOperator(torch.tanh, 1))
    else:
        likelihood = _likelihood(x)
    assert not has_kalman(prior, likelihood)
    with pytest.raises(ValueError, match=message):
        KalmanEM(prior, likelihood).fit(series_rows(x))
