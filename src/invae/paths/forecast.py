"""Forecasts of latent paths beyond the last observation time (``invae fit --forecast K``;
docs/methods.md §3.16).

n series are seen at t_0 < … < t_{T−1}; the forecast times are ``t_{T−1} + j Δ``, j = 1, …, K,
Δ the median observation step (:func:`forecast_times`). The posterior predictive law of the path
there, at the fitted θ̂, is

    p(z(t_{T−1} + jΔ) | x; θ̂) = ∫ p(z(t_{T−1} + jΔ) | z(t_{T−1}); θ̂) p(z(t_{T−1}) | x; θ̂) dz(t_{T−1}):

the path is Markov and the data end at t_{T−1}, so the future depends on x only through the
posterior of the last state. A :class:`Forecast` reports, per series, time and coordinate, its
mean and its 5% and 95% quantiles (a central 90% band), each (n, K, d).

- Monte Carlo (:func:`monte_carlo_forecast`, any SDE): S draws z⁽ˢ⁾ of the last state's posterior,
  each propagated by the SDE's Gaussian transition ``z ← m(z, Δ_g, t_g) + chol(Q(Δ_g)) ε``
  (``SDEPrior.transition``: exact for Ornstein–Uhlenbeck and Brownian motion, Euler–Maruyama
  otherwise) on the forecast times refined k-fold, as the fit's grid (:func:`propagate`); the
  mean and the empirical quantiles over the S paths.
- Exact (:func:`kalman_forecast`, a linear SDE seen through Gaussian noise by a matrix H): the last
  state's posterior is N(m, P), the Kalman filter's (at the last time the smoother's equals the
  filter's), and a linear transition maps N(m, P) to N(A m + b, A P Aᵀ + Q): the filter's
  prediction, iterated over the grid points where nothing is observed. So the filter on the grid
  of the observation and forecast times, the latter unobserved, gives the forecast, and the
  band is m_j ± 1.645 sd_j.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import torch
from torch import Tensor

from .kalman import kalman_filter
from .kalman_em import state_space
from .sde import SDEPrior, check_times, refine

__all__ = ["FORECAST_DRAWS", "QUANTILES", "Forecast", "forecast_times", "kalman_forecast", "monte_carlo_forecast",
           "propagate"]

#: The quantiles that bound a forecast's band: a central 90% band.
QUANTILES = (0.05, 0.95)
#: S, the Monte Carlo draws per series. With independent draws the mean's standard error is
#: sd/√S = 0.022 sd, and a 5% or 95% quantile's √(0.05 · 0.95 / S) / φ(1.645) = 0.047 sd
#: (the empirical quantile's asymptotic sd, φ the normal density at the quantile, for a Gaussian
#: predictive law): the band's edges move by 5% of a predictive sd from one seed to the next, well
#: below what a figure shows, for S · n · K · d numbers in memory.
FORECAST_DRAWS = 2000


@dataclass(frozen=True)
class Forecast:
    """n series' paths forecast at K ``times`` (K,): ``mean``, ``lower`` and ``upper`` (n, K, d),
    the last two the :data:`QUANTILES` (5% and 95%) of each coordinate's predictive law."""

    times: Tensor
    mean: Tensor
    lower: Tensor
    upper: Tensor

    @classmethod
    def from_draws(cls, times: Tensor, paths: Tensor) -> Forecast:
        """The mean and empirical quantiles over S draws of the paths ``paths`` (S, n, K, d)."""
        lower, upper = torch.quantile(paths, torch.tensor(QUANTILES, dtype=paths.dtype, device=paths.device), dim=0)
        return cls(times, paths.mean(0), lower, upper)

    @classmethod
    def from_gaussian(cls, times: Tensor, mean: Tensor, cov: Tensor) -> Forecast:
        """Gaussian marginals N(mean (n, K, d), cov (n, K, d, d)): the quantiles m + z_q sd, z_q = Φ⁻¹(q)."""
        sd = cov.diagonal(dim1=-2, dim2=-1).sqrt()
        lower, upper = (mean + NormalDist().inv_cdf(q) * sd for q in QUANTILES)
        return cls(times, mean, lower, upper)

    def diverged(self) -> int:
        """How many of the n K d means are not finite or lie outside their own band [lower, upper]:
        no predictive law of a path does that, but a mean that a few exploding draws dominate
        does (Euler–Maruyama with a cubic drift on a coarse grid is transient: |z| → ∞ with
        positive probability)."""
        return int((~torch.isfinite(self.mean) | (self.mean < self.lower) | (self.mean > self.upper)).sum())

    @classmethod
    def concatenate(cls, parts: list[Forecast]) -> Forecast:
        """The forecasts of consecutive groups of series (same times) as one, series after series."""
        return cls(parts[0].times, *(torch.cat([getattr(part, key) for part in parts]) for key in
                                     ("mean", "lower", "upper")))


def forecast_times(times, steps: int) -> Tensor:
    """``t_{T−1} + j Δ`` for j = 1, …, K = ``steps``, (K,): Δ the median step of the observation
    ``times`` (T,), T ≥ 2 (the median, not the mean: one long gap does not stretch the forecast)."""
    times = check_times(times)
    if times.ndim != 1 or len(times) < 2:
        raise ValueError(f"a forecast needs shared observation times (T,) with T >= 2, got shape {tuple(times.shape)}")
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
        raise ValueError(f"the forecast's number of times K must be an integer >= 1, got {steps!r}")
    step = torch.quantile(times.diff(), 0.5)  # interpolates between the middle two, as numpy's median
    return times[-1] + step * torch.arange(1, steps + 1, dtype=times.dtype, device=times.device)


@torch.no_grad()
def propagate(sde: SDEPrior, start: Tensor, times: Tensor, substeps: int = 1,
              generator: torch.Generator | None = None) -> Tensor:
    """Paths from ``start`` (N, d) at ``times[0]`` to ``times[1:]`` (K,), by the SDE's transition
    ``z ← m(z, Δ, t) + chol(Q(Δ)) ε``, ε ~ N(0, I) from ``generator``, on ``times`` refined
    ``substeps``-fold; the values at ``times[1:]``, (N, K, d)."""
    grid, _ = refine(times, substeps)
    grid, z, kept = grid.to(start), start, []
    for g in range(len(grid) - 1):
        mean, cov = sde.transition(z, grid[g + 1] - grid[g], grid[g])
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        z = mean + (torch.linalg.cholesky(cov) @ noise[..., None])[..., 0]
        if (g + 1) % substeps == 0:  # a forecast time, not a sub-step
            kept.append(z)
    return torch.stack(kept, dim=1)


def monte_carlo_forecast(sde: SDEPrior, last: Tensor, last_time: float, ahead: Tensor, substeps: int = 1,
                         generator: torch.Generator | None = None) -> Forecast:
    """The Monte Carlo forecast at ``ahead`` (K,) from S draws ``last`` (S, n, d) of each series'
    posterior at ``last_time`` (module docstring): each draw propagated by :func:`propagate`.

    Draws that repeat (an importance-resampled posterior) count once each: the Monte Carlo
    error is then that of their effective number, not of S."""
    draws, n, d = last.shape
    times = torch.cat([torch.as_tensor([float(last_time)], dtype=ahead.dtype, device=ahead.device), ahead])
    paths = propagate(sde, last.reshape(draws * n, d).to(ahead), times, substeps, generator)
    return Forecast.from_draws(ahead, paths.reshape(draws, n, len(ahead), d))


@torch.no_grad()
def kalman_forecast(series: Tensor, sde: SDEPrior, times: Tensor, H: Tensor, noise_var: Tensor, ahead: Tensor,
                    substeps: int = 1) -> Forecast:
    """The exact forecast (module docstring) at ``ahead`` (K,) of the series (n, T, m), NaN where
    missing, seen at ``times`` (T,) through H (m, d) with noise variances ``noise_var`` (m,) under
    the linear SDE ``sde``: the Kalman filter on the grid of ``times`` and ``ahead`` refined
    ``substeps``-fold, observed at ``times`` only."""
    steps = series.shape[1]
    grid, index = refine(torch.cat([times, ahead]), substeps)
    on_grid = series.new_full((len(series), len(grid), series.shape[-1]), torch.nan)
    on_grid[:, index[:steps]] = series
    filtered = kalman_filter(on_grid, state_space(sde, grid, H, noise_var))
    return Forecast.from_gaussian(ahead, filtered.mean[:, index[steps:]], filtered.cov[:, index[steps:]])
