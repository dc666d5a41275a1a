"""A path fit's forecasts as ``invae fit --forecast K`` writes them (docs/methods.md §3.16):
exact for ``kalman``, by Monte Carlo from the posterior's draws otherwise
(:mod:`invae.paths.forecast` holds the mathematics).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..inference.base import EmpiricalBayesEstimator
from ..inference.seeding import seeded
from ..paths.forecast import FORECAST_DRAWS, QUANTILES, Forecast, forecast_times, kalman_forecast, monte_carlo_forecast
from ..references.kalman import KalmanEM, measurement_model

__all__ = ["forecast_outputs"]

#: Numbers a Monte Carlo forecast holds at once (S draws of a group of series' paths), 128 MiB in float64.
_FORECAST_BUDGET = 2**24


def forecast_outputs(estimator: EmpiricalBayesEstimator, x: np.ndarray, series: np.ndarray, steps: int, seed: int
                     ) -> tuple[dict[str, np.ndarray], dict]:
    """A path fit's forecast at K = ``steps`` times after the last observation time, spaced by the
    median step (:mod:`invae.paths.forecast`), of the data rows x and their series (n, T, m): the
    arrays ``forecast``, ``forecast_lower`` and ``forecast_upper`` (n, K, d), the posterior
    predictive mean and its 5% and 95% quantiles, and the summary's record of them (the times,
    the files, how they were computed). Exact for ``kalman``; else by Monte Carlo from the
    posterior's draws (reweighted to the exact posterior where the fit's answers are), seeded by ``seed``."""
    ahead = forecast_times(estimator.prior_.times, steps)
    if isinstance(estimator, KalmanEM):
        result, how = _exact_forecast(estimator, series, ahead), "exact: the Kalman filter at the estimate"
    else:
        result = _sampled_forecast(estimator, x, ahead, seed)
        how = f"Monte Carlo: {FORECAST_DRAWS} posterior draws of each series' last state, propagated"
        if result.diverged():
            warnings.warn(f"the forecast's paths diverged: {result.diverged()} of its {result.mean.numel()} means "
                          "are not finite or lie outside their 90% band (Euler–Maruyama on too coarse a grid for "
                          "the drift); refine the grid (--substeps)", UserWarning, stacklevel=2)
    arrays = {"forecast": result.mean, "forecast_lower": result.lower, "forecast_upper": result.upper}
    record = {"times": ahead.tolist(), "files": [f"{name}.npy" for name in arrays], "quantiles": list(QUANTILES),
              "method": how}
    return {name: value.numpy() for name, value in arrays.items()}, record


def _exact_forecast(estimator: KalmanEM, series: np.ndarray, ahead: torch.Tensor) -> Forecast:
    """:func:`~invae.paths.forecast.kalman_forecast` at θ̂ (and σ̂ where it was learned), in float64 on the CPU."""
    prior = estimator.prior_.to("cpu", torch.float64)
    H, noise_var = measurement_model(prior, estimator.likelihood_.to("cpu", torch.float64))
    return kalman_forecast(torch.as_tensor(series, dtype=torch.float64), prior.sde(), prior.times, H, noise_var,
                           ahead, prior.substeps)


def _sampled_forecast(estimator: EmpiricalBayesEstimator, x: np.ndarray, ahead: torch.Tensor, seed: int) -> Forecast:
    """:func:`~invae.paths.forecast.monte_carlo_forecast` from ``estimator.sample_posterior``'s draws
    of the last grid point, a group of series at a time (:data:`_FORECAST_BUDGET`)."""
    prior = estimator.prior_.to("cpu", torch.float64)
    sde, d, generator = prior.sde(), prior.sde_dim, torch.Generator().manual_seed(seed)
    rows = max(1, _FORECAST_BUDGET // (FORECAST_DRAWS * max(prior.dim, len(ahead) * d)))
    parts = []
    with seeded(seed, estimator.device):  # sample_posterior draws from torch's global generator
        for first in range(0, len(x), rows):
            last = estimator.sample_posterior(x[first:first + rows], FORECAST_DRAWS)[..., -d:]  # z flattened time-major
            parts.append(monte_carlo_forecast(sde, torch.as_tensor(last), float(prior.times[-1]), ahead,
                                              prior.substeps, generator))
    return Forecast.concatenate(parts)
