"""The VAE-like estimator on the normal-means problem trained by Adam: :class:`~invae.VariationalEB` itself.

``fit_normal_means(..., "vae")`` sets q to the exact posterior at every iteration, which makes
the fit EM (:mod:`~invae.normal_means.deconvolution`); ``closed_form=False`` runs this module
instead, the amortized estimator of ``invae fit`` with its encoder trained by Adam.

The prior is a Gaussian mixture with many components (``z ~ Σ_c π_c N(m_c, v_c)``, a
flexible g), the likelihood ``x_i ~ N(z_i, σ_i²)`` carries each σ_i in the data row
(:class:`~invae.model.likelihoods.NoisePerRowGaussianLikelihood`, so the encoder sees σ_i), and
the posterior family is a mixture of as many Gaussians: with a Gaussian-mixture prior and
normal noise the exact posterior is such a mixture, so the family can hold it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..inference.estimator import VariationalEB
from ..model.forward import LinearOperator
from ..model.likelihoods import NoisePerRowGaussianLikelihood
from ..model.mixture import GaussianMixture
from .deconvolution import MixturePrior, narrow_start
from .grid import NormalMeansPosterior

__all__ = ["variational_normal_means", "as_mixture_prior"]


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
    start = narrow_start(x, components)
    prior = GaussianMixture(start.weights, start.means[:, None], (1 / start.variances)[:, None, None])
    likelihood = NoisePerRowGaussianLikelihood(LinearOperator(torch.eye(1, dtype=torch.float64)))
    estimator = VariationalEB(prior, likelihood, family="mixture", posterior_components=components,
                              random_state=seed, tol=tol, lambda_step=lambda_step, **options).fit(rows)
    mean, std = estimator.posterior(rows)
    below = estimator.posterior_cdf(rows, -shift)[:, 0]  # P(θ_i ≤ −ℓ_i) = P(z_i ≤ 0)
    return estimator, NormalMeansPosterior(mean[:, 0] + shift, std[:, 0], np.minimum(below, 1 - below), None)


def as_mixture_prior(prior: GaussianMixture) -> MixturePrior:
    """A one-dimensional :class:`~invae.model.mixture.GaussianMixture` as NumPy arrays."""
    weights, means, covariances = (t.detach().cpu().double().numpy() for t in
                                   (prior.weights, prior.means[:, 0], prior.covariances[:, 0, 0]))
    return MixturePrior(weights, means, covariances)
