"""The VAE-like estimator on the normal-means problem: :class:`~invae.VariationalEB` itself.

The prior is a Gaussian mixture with many components (``z ~ Σ_c π_c N(m_c, v_c)``, a
flexible g), the likelihood ``x_i ~ N(z_i, σ_i²)`` carries each σ_i in the data row
(:class:`~invae.model.likelihoods.NoisePerRowGaussianLikelihood`, so the encoder sees σ_i), and
the posterior family is a mixture of as many Gaussians: with a Gaussian-mixture prior and
normal noise the exact posterior is such a mixture, so the family can hold it.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import log_ndtr

from ..inference.estimator import VariationalEB
from ..model.forward import LinearOperator
from ..model.likelihoods import NoisePerRowGaussianLikelihood
from ..model.mixture import GaussianMixture
from .grid import GridPrior, NormalMeansPosterior, discretize

__all__ = ["variational_normal_means", "mixture_on_grid"]


def variational_normal_means(x, sigma, *, location=None, components: int = 10, seed: int = 0, tol: float = 3e-4,
                             lambda_step: str = "expected", **options) -> tuple[VariationalEB, NormalMeansPosterior]:
    """Fit ``VariationalEB`` to ``x`` (n,) with noise sds ``sigma`` (n,) or a scalar; returns the
    fitted estimator and every z_i's posterior mean, sd and lfsr under q (lfdr: None, the
    mixture prior has no atom). ``location`` (n,) shifts the prior row by row (the
    estimator sees x − ℓ). ``options`` go to ``VariationalEB`` (e.g. ``max_iter``).

    ``lambda_step`` is "expected", not the mixture family's default "importance": here q can
    hold the exact posterior, and the importance step costs several times the time for a
    small gain (docs/benchmarks.md, "The Λ-step of invae eb --method vae")."""
    shift = np.zeros(np.shape(x)) if location is None else np.asarray(location, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64) - shift
    rows = NoisePerRowGaussianLikelihood.rows(x, sigma)
    prior = _narrow_start(x, components)
    likelihood = NoisePerRowGaussianLikelihood(LinearOperator(torch.eye(1, dtype=torch.float64)))
    estimator = VariationalEB(prior, likelihood, family="mixture", posterior_components=components,
                              random_state=seed, tol=tol, lambda_step=lambda_step, **options).fit(rows)
    mean, std = estimator.posterior(rows)
    below = estimator.posterior_cdf(rows, -shift)[:, 0]  # P(θ_i ≤ −ℓ_i) = P(z_i ≤ 0)
    return estimator, NormalMeansPosterior(mean[:, 0] + shift, std[:, 0], np.minimum(below, 1 - below), None)


def _narrow_start(x: np.ndarray, components: int) -> GaussianMixture:
    """Equal weights, means at the quantiles (k + ½)/K of x, sds half the spacing (q95 − q5)/K."""
    means = np.quantile(x, (np.arange(components) + 0.5) / components)
    spacing = max((np.quantile(x, 0.95) - np.quantile(x, 0.05)) / components, 1e-6)
    precision = 1.0 / (0.5 * spacing) ** 2
    return GaussianMixture(np.full(components, 1.0 / components), means[:, None],
                           np.full((components, 1, 1), precision))


def mixture_on_grid(prior: GaussianMixture, atoms: np.ndarray) -> GridPrior:
    """A one-dimensional Gaussian mixture as a grid prior (each atom takes its cell's mass)."""
    weights = prior.weights.detach().cpu().double().numpy()
    means = prior.means.detach().cpu().double().numpy()[:, 0]
    stds = prior.covariances.detach().cpu().double().numpy()[:, 0, 0] ** 0.5

    def cdf(t: np.ndarray) -> np.ndarray:
        return np.exp(log_ndtr((t[:, None] - means) / stds)) @ weights

    return discretize(cdf, atoms)
