"""Normal-means problems of known truth, for tests and the benchmark.

Priors (each also given on a fine grid, so the Bayes oracle is :func:`grid_posterior`):
- ``two-point``: 0.7 δ(0) + 0.3 δ(3);
- ``uniform``: Uniform(−3, 3);
- ``spike-slab``: 0.8 δ(0) + 0.2 N(0, 3²) (sparse signals, a point mass at 0);
- ``two-groups``: 0.9 δ(0) + 0.1 N(0, 2.5²) (the lfdr calibration's symmetric alternative);
- ``two-groups-skew``: 0.9 δ(0) + 0.1 g₁, g₁ the asymmetric "skew" alternative of Stephens
  (2017, ashr): ¼ N(−2, 2²) + ¼ N(−1, 1.5²) + ⅓ N(0, 1) + ⅙ N(1, 1).
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

TRUE_PRIORS = ("two-point", "uniform", "spike-slab", "two-groups", "two-groups-skew")
NOISE_MODELS = ("homoscedastic", "heteroscedastic")
_FINE = np.linspace(-15.0, 15.0, 4001)
_FINE[2000] = 0.0  # exactly: the spikes' atom, the null of lfdr
# The non-null parts (weights, means, sds) of the spike-and-slab priors: (null share, components).
_SLABS = {"spike-slab": (0.8, [(1.0, 0.0, 3.0)]),
          "two-groups": (0.9, [(1.0, 0.0, 2.5)]),
          "two-groups-skew": (0.9, [(1 / 4, -2.0, 2.0), (1 / 4, -1.0, 1.5), (1 / 3, 0.0, 1.0), (1 / 6, 1.0, 1.0)])}


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
    if name in _SLABS:
        null, components = _SLABS[name]
        slab = lambda t: sum(w * np.exp(log_ndtr((t - m) / s)) for w, m, s in components)  # noqa: E731
        return discretize(lambda t: null * (t >= 0) + (1 - null) * slab(t), _FINE)
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
        null, components = _SLABS[prior]
        weights, means, sds = (np.array(column) for column in zip(*components))
        is_null, standard = rng.random(n) < null, rng.standard_normal(n)
        label = rng.choice(len(weights), size=n, p=weights) if len(weights) > 1 else np.zeros(n, dtype=int)
        z = np.where(is_null, 0.0, means[label] + sds[label] * standard)
    sigma = np.ones(n) if noise == "homoscedastic" else rng.uniform(0.5, 2.0, n)
    return NormalMeansProblem(z + sigma * rng.standard_normal(n), sigma, z, grid)
