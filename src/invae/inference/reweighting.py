"""The exact posterior under the fitted prior, by importance sampling with q as the proposal.

q_φ is fitted by the ELBO, and its family may miss the exact posterior
``p(z | x; Λ̂) ∝ g(z; Λ̂) p(x | z)``; e.g. an affine flow cannot hold the skewed posterior
behind a saturating sensor. q's draws still make a good proposal:

    proposal  r(z | x) = Σ_k c_k q_τk(z | x),   τ = (1, 2),  c_k = S_k / S    (S_k draws of q_τk)
    weights   w_s = g(z_s; Λ̂) p(x | z_s) / r(z_s | x),   w̃_s = w_s / Σ_t w_t
    E[f(z) | x] ≈ Σ_s w̃_s f(z_s),   ESS = 1 / Σ_s w̃_s²

``q_τ`` is q with its Gaussian noise scaled by τ: the same map (mean, Cholesky factor,
flow steps) applied to ``ε ~ N(0, τ² I)``. q fitted by the reverse KL tends to be narrower
than the posterior; the wider component bounds the weights in its tails (a defensive
mixture, with the balance heuristic of multiple importance sampling: Hesterberg 1995, Owen
& Zhou 2000). For a flow, every q_τ shares the map z = f(z₀), so r is evaluated at q's own
draws from the base alone: ``log r(z) = log r₀(z₀) − log |det ∂f/∂z₀|``, with no inversion.
The estimates are consistent as S → ∞, with Monte Carlo standard error ≈ sd(z | x)/√ESS.
Why the wider component, and what reweighting gains: docs/benchmarks.md, "Reweighted
posterior answers".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import (Distribution, Independent, LowRankMultivariateNormal, MixtureSameFamily,
                                 MultivariateNormal, Normal, TransformedDistribution)
from torch.distributions.utils import _sum_rightmost

from ..model.likelihoods import Likelihood
from ..model.prior import Prior
from ..model.rows import log_joint
from ..paths.encoder import FlatPath
from ..paths.gauss_markov import GaussMarkov
from .parallel import Noise, draw

__all__ = ["WIDTHS", "defensive_draws", "normalised_weights", "importance_draws", "weighted_moments",
           "weighted_cdf", "resample"]

WIDTHS = (1.0, 2.0)  # τ of the proposal's components


def _widened(q: Distribution, width: float) -> Distribution:
    """q with its Gaussian noise scaled by ``width`` (Gaussian, full-covariance, low-rank, mixture
    and Gauss–Markov path q)."""
    if isinstance(q, Independent):
        return Independent(_widened(q.base_dist, width), q.reinterpreted_batch_ndims, validate_args=False)
    if isinstance(q, Normal):
        return Normal(q.loc, width * q.scale, validate_args=False)
    if isinstance(q, MultivariateNormal):
        return MultivariateNormal(q.loc, scale_tril=width * q.scale_tril, validate_args=False)
    if isinstance(q, LowRankMultivariateNormal):
        return LowRankMultivariateNormal(q.loc, width * q.cov_factor, width**2 * q.cov_diag, validate_args=False)
    if isinstance(q, MixtureSameFamily):
        return MixtureSameFamily(q.mixture_distribution, _widened(q.component_distribution, width),
                                 validate_args=False)
    if isinstance(q, FlatPath):  # z = μ + L⁻ᵀ ε: ε scaled by τ is the precision factor L scaled by 1/τ
        path = q.path
        return FlatPath(GaussMarkov(path.loc, path.diagonal_blocks / width, path.subdiagonal_blocks / width,
                                    validate_args=False))
    raise TypeError(f"cannot widen a posterior of type {type(q).__name__}")


def defensive_draws(q: Distribution, n_draws: int, widths: tuple[float, ...] = WIDTHS, *,
                    noise: Noise | None = None) -> tuple[Tensor, Tensor]:
    """``n_draws`` S draws of the proposal r (module docstring), (S, n, p), and log r at them, (S, n).

    q has batch (n,) and event (p,): a Gaussian, a mixture of Gaussians, or a flow on one.
    The draws are stratified: ``S_k`` = S/K (rounded) come from each ``q_τk``, from ``noise``
    where given (:mod:`invae.inference.parallel`).
    """
    if isinstance(q, TransformedDistribution):
        z, log_r = defensive_draws(q.base_dist, n_draws, widths, noise=noise)
        event_dim = len(q.base_dist.event_shape)
        for transform in q.transforms:  # z = f(z₀): subtract each step's log |det Jacobian|
            y = transform(z)
            log_r = log_r - _sum_rightmost(transform.log_abs_det_jacobian(z, y), event_dim - transform.domain.event_dim)
            z = y
        return z, log_r
    counts = [n_draws // len(widths) + (k < n_draws % len(widths)) for k in range(len(widths))]
    parts = [_widened(q, width) for width in widths]
    z = torch.cat([draw(part, (count,), noise) for part, count in zip(parts, counts) if count]).detach()
    log_r = torch.logsumexp(torch.stack([math.log(count / n_draws) + part.log_prob(z)
                                         for part, count in zip(parts, counts) if count]), dim=0)
    return z, log_r


def normalised_weights(log_w: Tensor) -> Tensor:
    """Self-normalised weights ``w̃ = softmax(log w)`` over draws (dim 0), e.g. (S, n).

    A draw with log w = −∞ (an impossible one) gets weight 0; a NaN or +∞, or a row with no
    positive weight, raises ``FloatingPointError``.
    """
    if not bool(torch.isfinite(log_w.amax(0)).all()):  # amax propagates NaN
        raise FloatingPointError("importance weights are not finite for some row")
    return torch.softmax(log_w, dim=0)


def importance_draws(q: Distribution, x: Tensor, prior: Prior, likelihood: Likelihood, n_draws: int = 256,
                     widths: tuple[float, ...] = WIDTHS, *, noise: Noise | None = None) -> tuple[Tensor, Tensor]:
    """Draws z (S, n, p) of the proposal and their weights w̃ (S, n) towards p(z | x; prior),
    for the data rows x (n, row columns) and q over them (module docstring); ``noise``: as
    :func:`defensive_draws`."""
    z, log_r = defensive_draws(q, n_draws, widths, noise=noise)
    return z, normalised_weights(log_joint(x, z, prior, likelihood) - log_r)


def weighted_moments(z: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted means and marginal sds, each (n, p), of draws z (S, n, p) with weights (S, n)
    summing to 1 over S: ``μ = Σ_s w̃_s z_s``, ``sd² = Σ_s w̃_s (z_s − μ)²``."""
    w = weights.unsqueeze(-1)
    mean = (w * z).sum(0)
    return mean, (w * (z - mean).square()).sum(0).sqrt()


def weighted_cdf(z: Tensor, weights: Tensor, threshold: float | Tensor = 0.0) -> Tensor:
    """``P(z_j ≤ t) ≈ Σ_s w̃_s 1[z_sj ≤ t]``, (n, p); t broadcasts against (n, p)."""
    return (weights.unsqueeze(-1) * (z <= threshold).to(z.dtype)).sum(0).clamp(0.0, 1.0)  # rounding: ≤ 1


def resample(z: Tensor, weights: Tensor, n_samples: int) -> Tensor:
    """``n_samples`` draws per row from the weighted draws (multinomial, with replacement:
    sampling importance resampling), (n_samples, n, p)."""
    pick = torch.multinomial(weights.T, n_samples, replacement=True).T  # (n_samples, n)
    return torch.gather(z, 0, pick.unsqueeze(-1).expand(-1, -1, z.shape[-1]))
