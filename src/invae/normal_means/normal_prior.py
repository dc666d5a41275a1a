"""Parametric g-modelling: a normal prior ``z ~ N(μ, τ²)``, fitted from the data.

Marginally ``x_i ~ N(μ, τ² + σ_i²)``; the posterior is normal (linear shrinkage):

    E[z_i | x_i] = μ + B_i (x_i − μ),   B_i = τ² / (τ² + σ_i²),   Var = B_i σ_i²

Two fits of (μ, τ²):
- ``"ml"``: marginal maximum likelihood. For fixed τ², μ̂ is the precision-weighted mean
  Σ w_i x_i / Σ w_i, w_i = 1/(τ² + σ_i²); τ² maximises the profile likelihood (bounded
  scalar search).
- ``"james-stein"``: moments, ``μ̂ = x̄``, ``τ̂² = max(0, S/(n − 3) − mean σ_i²)``,
  S = Σ (x_i − x̄)². With one σ this is exactly the positive-part James–Stein estimator
  ``x̄ + (1 − (n − 3)σ²/S)₊ (x_i − x̄)``; with unequal σ_i it is this moment estimator, not
  Brown's (2008, eq. 4.17) heteroscedastic James–Stein (docs/methods.md §3.10.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_ndtr, ndtri

__all__ = ["NormalPrior", "fit_normal_prior"]

_FITS = ("ml", "james-stein")


@dataclass(frozen=True)
class NormalPrior:
    """``N(mean, variance)``; variance 0 is a point mass."""

    mean: float
    variance: float

    def posterior(self, x, sigma, location=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Posterior (mean, sd, lfsr) of every z_i, each (n,); lfsr = Φ(−|E| / sd).
        ``location`` (n,) shifts the prior row by row (z_i = ℓ_i + θ_i, θ_i ~ this prior)."""
        x = np.asarray(x, dtype=np.float64)
        shift = 0.0 if location is None else np.asarray(location, dtype=np.float64)
        noise_var = np.broadcast_to(np.asarray(sigma, dtype=np.float64) ** 2, x.shape)
        shrink = self.variance / (self.variance + noise_var)
        mean = shift + self.mean + shrink * (x - shift - self.mean)
        std = np.sqrt(shrink * noise_var)
        with np.errstate(divide="ignore", invalid="ignore"):
            lfsr = np.where(std > 0, np.exp(log_ndtr(-np.abs(mean) / np.where(std > 0, std, 1.0))),
                            (mean == 0).astype(np.float64))
        return mean, std, lfsr

    def quantile(self, u) -> np.ndarray:
        return self.mean + np.sqrt(self.variance) * ndtri(np.asarray(u))


def fit_normal_prior(x, sigma, method: str = "ml") -> NormalPrior:
    """(μ̂, τ̂²) from ``x`` (n,) and known noise sds ``sigma`` (n,) or a scalar; n ≥ 4."""
    if method not in _FITS:
        raise ValueError(f"unknown normal-prior fit {method!r}; choose one of {', '.join(_FITS)}")
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 4:
        raise ValueError(f"a normal prior needs at least 4 observations, got {len(x)}")
    noise_var = np.broadcast_to(np.asarray(sigma, dtype=np.float64) ** 2, x.shape)
    if method == "james-stein":
        spread = float(((x - x.mean()) ** 2).sum())
        return NormalPrior(float(x.mean()), max(0.0, spread / (len(x) - 3) - float(noise_var.mean())))

    def weighted_mean(tau2: float) -> float:
        w = 1.0 / (tau2 + noise_var)
        return float(w @ x / w.sum())

    def negative_profile(tau2: float) -> float:
        total = tau2 + noise_var
        return 0.5 * float(np.sum(np.log(total) + (x - weighted_mean(tau2)) ** 2 / total))

    upper = max(float(np.var(x)) * 2, 1e-8)
    tau2 = float(minimize_scalar(negative_profile, bounds=(0.0, upper), method="bounded",
                                 options={"xatol": 1e-10 * upper}).x)
    return NormalPrior(weighted_mean(tau2), tau2)
