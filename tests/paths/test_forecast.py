"""Forecasts of latent paths (invae.paths.forecast): the exact Gaussian forecast against its
closed form, and the Monte Carlo forecast against the exact one within its Monte Carlo error."""

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from invae.paths.forecast import FORECAST_DRAWS, QUANTILES, forecast_times, kalman_forecast, monte_carlo_forecast, \
    propagate
from invae.paths.kalman import kalman_filter
from invae.paths.kalman_em import state_space
from invae.paths.sde import DoubleWell, OrnsteinUhlenbeck

THETA, MU, S, NOISE = 0.4, 1.0, 0.5, 0.3
TIMES = torch.tensor([0.0, 1.0, 1.5, 2.5, 3.5, 4.5])  # median step 1
THETA2 = [[0.8, 0.3], [-0.2, 0.5]]  # not symmetric, stable
SCALE2 = [[0.6, 0.0], [0.2, 0.4]]


def _series(sde, n: int, seed: int) -> torch.Tensor:
    """n series (n, T, d) of ``sde`` at TIMES seen through N(0, NOISE²) noise, one entry missing."""
    generator = torch.Generator().manual_seed(seed)
    z = sde.simulate(n, TIMES, 4, generator)
    x = z + NOISE * torch.randn(z.shape, generator=generator, dtype=z.dtype)
    x[0, -1, 0] = torch.nan
    return x


def _last_state(x: torch.Tensor, sde) -> tuple[torch.Tensor, torch.Tensor]:
    """The Kalman filter's law of z(t_{T−1}) given x: (mean (n, d), cov (n, d, d))."""
    eye = torch.eye(sde.dim, dtype=torch.float64)
    filtered = kalman_filter(x, state_space(sde, TIMES, eye, torch.full((sde.dim,), NOISE**2)))
    return filtered.mean[:, -1], filtered.cov[:, -1]


def test_forecast_times_step_by_the_median_observation_step():
    torch.testing.assert_close(forecast_times(TIMES, 3), torch.tensor([5.5, 6.5, 7.5]))
    torch.testing.assert_close(forecast_times(torch.tensor([0.0, 1.0, 4.0, 6.0]), 2), torch.tensor([8.0, 10.0]))
    for steps in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="integer >= 1"):
            forecast_times(TIMES, steps)
    with pytest.raises(ValueError, match="T >= 2"):
        forecast_times(torch.tensor([1.0]), 2)


@pytest.mark.parametrize("substeps", [1, 3])
def test_the_exact_forecast_of_an_ou_path_is_its_closed_form(substeps):
    # z(t + h) | z(t) ~ N(μ + e^{−θh}(z − μ), e^{−2θh} P + σ∞² (1 − e^{−2θh})), σ∞² = s²/(2θ), from the
    # filter's last state N(m, P); sub-steps compose exact transitions, so they change nothing but rounding
    sde = OrnsteinUhlenbeck(1, drift=THETA, mean=MU, diffusion=S).double()
    x = _series(sde, 3, seed=0)
    m, p = _last_state(x, sde)
    ahead = forecast_times(TIMES, 4)
    forecast = kalman_forecast(x, sde, TIMES, torch.eye(1, dtype=torch.float64), torch.tensor([NOISE**2]), ahead,
                               substeps)
    decay = torch.exp(-THETA * (ahead - TIMES[-1]))[None, :, None]  # (1, K, 1)
    mean = MU + decay * (m[:, None] - MU)
    var = decay**2 * p[:, None, :, 0] + S**2 / (2 * THETA) * (1 - decay**2)
    torch.testing.assert_close(forecast.mean, mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(forecast.upper - forecast.mean, NormalDist().inv_cdf(0.95) * var.sqrt(), rtol=1e-10,
                               atol=1e-12)
    torch.testing.assert_close(forecast.mean - forecast.lower, forecast.upper - forecast.mean, rtol=1e-12, atol=0)


def test_the_monte_carlo_forecast_agrees_with_the_exact_one_within_its_monte_carlo_error():
    # A two-dimensional OU (full Θ and S) from the filter's Gaussian last state: S = FORECAST_DRAWS
    # independent draws, propagated on a grid refined 2-fold. Per series, time and coordinate the
    # Monte Carlo mean has the standard error sd/√S and a 5% or 95% empirical quantile
    # √(q(1 − q)/S)/φ(z_q) · sd (the Gaussian predictive law's density φ at z_q, over sd). Over the
    # 3 × 4 × 2 = 24 comparisons of each, 4.5 standard errors fail by chance with probability
    # 24 × 7e-6 < 2e-4 (the seed is fixed, so the test is deterministic; its largest is 2.8). A
    # wrong transition fails: Euler–Maruyama's in place of the exact one misses by 5.7 (mean) and
    # 9.2 (lower quantile) standard errors.
    sde = OrnsteinUhlenbeck(2, drift=THETA2, mean=[0.5, -1.0], diffusion=SCALE2).double()
    x = _series(sde, 3, seed=1)
    m, p = _last_state(x, sde)
    ahead = forecast_times(TIMES, 4)
    exact = kalman_forecast(x, sde, TIMES, torch.eye(2, dtype=torch.float64), torch.full((2,), NOISE**2), ahead, 2)
    generator = torch.Generator().manual_seed(2)
    noise = torch.randn(FORECAST_DRAWS, *m.shape, generator=generator, dtype=m.dtype)
    draws = m + (torch.linalg.cholesky(p) @ noise[..., None])[..., 0]  # (S, n, d) ~ N(m, P)
    sampled = monte_carlo_forecast(sde, draws, float(TIMES[-1]), ahead, 2, generator)
    sd = (exact.upper - exact.mean) / NormalDist().inv_cdf(QUANTILES[1])
    quantile_se = math.sqrt(0.05 * 0.95 / FORECAST_DRAWS) / math.exp(-0.5 * NormalDist().inv_cdf(0.95) ** 2) \
        * math.sqrt(2 * math.pi) * sd
    assert ((sampled.mean - exact.mean).abs() < 4.5 * sd / math.sqrt(FORECAST_DRAWS)).all()
    assert ((sampled.lower - exact.lower).abs() < 4.5 * quantile_se).all()
    assert ((sampled.upper - exact.upper).abs() < 4.5 * quantile_se).all()
    torch.testing.assert_close(sampled.times, ahead)


def test_propagate_takes_the_sub_steps_of_euler_maruyama_as_simulate_does():
    # The double well has Euler–Maruyama transitions, N(z + f(z) Δ, s² Δ): from the same start and
    # the same random numbers, propagate's paths are simulate's at the forecast times, the 3
    # sub-steps between them included (skipping them would change every value).
    sde = DoubleWell(theta1=1.5, theta2=1.0, diffusion=0.4).double()
    start, times = torch.linspace(-1.5, 1.5, 7, dtype=torch.float64)[:, None], torch.tensor([2.0, 2.5, 3.0, 4.0])
    ours = propagate(sde, start, times, 3, torch.Generator().manual_seed(5))
    theirs = sde.simulate(7, times, 3, torch.Generator().manual_seed(5), start=start)
    torch.testing.assert_close(ours, theirs[:, 1:], rtol=1e-12, atol=1e-12)
    assert ours.shape == (7, 3, 1)


def test_a_forecast_of_draws_is_their_mean_and_quantiles():
    # one draw per series repeated S times: a point forecast whose band has no width
    sde = OrnsteinUhlenbeck(1, drift=THETA, mean=MU, diffusion=1e-12).double()
    last = torch.tensor([[[0.0], [2.0]]], dtype=torch.float64).expand(50, 2, 1)
    forecast = monte_carlo_forecast(sde, last, 0.0, torch.tensor([1.0, 2.0], dtype=torch.float64))
    expected = MU + np.exp(-THETA * np.array([1.0, 2.0]))[None, :, None] * (np.array([0.0, 2.0])[:, None, None] - MU)
    for values in (forecast.mean, forecast.lower, forecast.upper):
        np.testing.assert_allclose(values.numpy(), expected, rtol=1e-9)


def test_a_forecast_whose_draws_diverge_says_so():
    # Euler–Maruyama with the double well's cubic drift, z ← z + θ₁ z (θ₂ − z²) Δ + noise, at Δ = 1
    # (θ₁ = θ₂ = 1): from |z| > √(θ₂ + 2/(θ₁Δ)) = √3 on a step overshoots further, so a few paths
    # explode and drag the means out of their bands (or to inf); at Δ = 1/4 (threshold 3) none does
    sde = DoubleWell(theta1=1.0, theta2=1.0, diffusion=0.5).double()
    ahead = torch.arange(1.0, 9.0, dtype=torch.float64)
    last = torch.ones(FORECAST_DRAWS, 3, 1, dtype=torch.float64)
    coarse = monte_carlo_forecast(sde, last, 0.0, ahead, 1, torch.Generator().manual_seed(0))
    fine = monte_carlo_forecast(sde, last, 0.0, ahead, 4, torch.Generator().manual_seed(0))
    assert coarse.diverged() > 0 and fine.diverged() == 0
