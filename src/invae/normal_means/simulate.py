"""Normal-means problems of known truth, for tests and the benchmark.

Priors (each also given on a fine grid, so the Bayes oracle is :func:`grid_posterior`):
- ``two-point``: 0.7 δ(0) + 0.3 δ(3);
- ``uniform``: Uniform(−3, 3);
- ``spike-slab``: 0.8 δ(0) + 0.2 N(0, 3²) (sparse signals, a point mass at 0).
Noise: ``homoscedastic`` σ_i = 1, or ``heteroscedastic`` σ_i ~ Uniform(0.5, 2).
The continuous parts are put on 4001 atoms over [−15, 15] cell by cell (spacing 0.0075):
the oracle's posterior mean is then exact up to a midpoint-rule error of order 1e-5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

from .grid import GridPrior, discretize

__all__ = ["TRUE_PRIORS", "NOISE_MODELS", "NormalMeansProblem", "simulate_normal_means", "true_prior"]

TRUE_PRIORS = ("two-point", "uniform", "spike-slab")
NOISE_MODELS = ("homoscedastic", "heteroscedastic")
_FINE = np.linspace(-15.0, 15.0, 4001)


@dataclass(frozen=True)
class NormalMeansProblem:
    """Observations ``x`` (n,), their noise sds ``sigma`` (n,), the signals ``z`` (n,) and
    the true prior on a grid (``prior``) for the oracle."""

    x: np.ndarray
    sigma: np.ndarray
    z: np.ndarray
    prior: GridPrior


def true_prior(name: str) -> GridPrior:
    """The named prior on a grid (exact for the point masses, cell by cell for the rest)."""
    if name == "two-point":
        return GridPrior(np.array([0.0, 3.0]), np.array([0.7, 0.3]))
    if name == "uniform":
        return discretize(lambda t: np.clip((t + 3.0) / 6.0, 0.0, 1.0), _FINE)
    if name == "spike-slab":
        slab = lambda t: np.exp(log_ndtr(t / 3.0))  # noqa: E731
        return discretize(lambda t: 0.8 * (t >= 0) + 0.2 * slab(t), _FINE)
    raise ValueError(f"unknown prior {name!r}; choose one of {', '.join(TRUE_PRIORS)}")


def simulate_normal_means(prior: str, n: int, noise: str = "homoscedastic", seed: int = 0) -> NormalMeansProblem:
    """n draws z_i from the named prior (the continuous ones exactly, not from the grid) and
    x_i = z_i + σ_i ε_i."""
    if noise not in NOISE_MODELS:
        raise ValueError(f"unknown noise {noise!r}; choose one of {', '.join(NOISE_MODELS)}")
    grid = true_prior(prior)
    rng = np.random.default_rng(seed)
    if prior == "two-point":
        z = grid.sample(n, rng)
    elif prior == "uniform":
        z = rng.uniform(-3.0, 3.0, n)
    else:
        z = np.where(rng.random(n) < 0.8, 0.0, 3.0 * rng.standard_normal(n))
    sigma = np.ones(n) if noise == "homoscedastic" else rng.uniform(0.5, 2.0, n)
    return NormalMeansProblem(z + sigma * rng.standard_normal(n), sigma, z, grid)
