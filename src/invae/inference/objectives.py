"""The evidence lower bound (docs/methods.md §2.1), one value per observation.

    ELBO_i = E_{q(z|x_i)} [ log g(z; Λ) + log p(x_i | z) − log q(z | x_i) ]  ≤  log p(x_i; Λ)

estimated with ``S`` reparameterised draws. Where ``q`` has a closed-form entropy (Gaussian
families) it replaces the Monte Carlo ``−log q`` term: same expectation, less variance. So
do the other two terms where q is Gaussian and the prior or likelihood has
``E_q[log g]`` / ``E_q[log p(x|z)]`` in closed form (``expected_log_prob``: a Gaussian
graphical prior; Gaussian or Poisson noise through a linear G, whose Poisson term is the
log-normal mean ``exp(η̄ + v/2)``): with all three, the ELBO is exact, free of Monte Carlo
noise, as in the Poisson log-normal model's variational fits (Chiquet et al. 2018). A
draw's ``exp(η)`` is heavy-tailed where q is wide, and its gradients with it
(docs/benchmarks.md, "Stable fits of counts").
For a mixture ``q = Σ_c w_c q_c`` (:class:`~invae.inference.posteriors.MixtureEncoder`) the expectation
is summed over the components exactly, ``ELBO = Σ_c w_c E_{q_c}[log g + log p(x|z) − log q]``,
with reparameterised draws within each: the weights get exact gradients, no discrete draw.
For a diagonal Gaussian ``H(q) = Σ_j log σ_j + (p/2) log(2πe)``, so the φ-step loss is
docs/methods.md §2.4's ``Σ_b [−log g(z_b) − log p(x_b|z_b) − Σ_j log σ_bj]`` up to a constant.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MixtureSameFamily, MultivariateNormal, Normal

from ..model.likelihoods import Likelihood
from ..model.prior import Prior
from ..model.rows import log_joint, split_rows
from .parallel import Noise, draw
from .reweighting import WIDTHS, defensive_draws

__all__ = ["elbo", "importance_weighted_bound"]


def elbo(x: Tensor, q: Distribution, prior: Prior, likelihood: Likelihood, n_samples: int = 1, *,
         z: Tensor | None = None, noise: Noise | None = None) -> Tensor:
    """ELBO estimates for data rows x (n, row columns, :mod:`invae.model.rows`) under q (batch
    (n,), event (p,)); returns (n,).

    Terms in closed form (module docstring) take no draws. ``z`` (S, n, p), if given, are
    the draws of q to use for every term (e.g. fixed noise pushed through q); otherwise
    ``n_samples`` fresh reparameterised draws for the terms that need them, from ``noise`` where
    given (a shard's part of a batch's noise, :mod:`invae.inference.parallel`).
    """
    x, covariates = split_rows(x, likelihood)
    if isinstance(q, MixtureSameFamily):
        return _mixture_elbo(x, covariates, q, prior, likelihood, n_samples)
    moments = _gaussian_moments(q) if z is None else None
    prior_term = prior.expected_log_prob(*moments, covariates) if moments else None
    likelihood_term = likelihood.expected_log_prob(x, *moments) if moments else None
    if prior_term is not None and likelihood_term is not None:
        return prior_term + likelihood_term + q.entropy()
    z = draw(q, (n_samples,), noise) if z is None else z  # (S, n, p)
    log_joint = ((prior.log_prob(z, covariates) if prior_term is None else prior_term)
                 + (likelihood.log_prob(x, z) if likelihood_term is None else likelihood_term))  # (S, n)
    try:
        return log_joint.mean(0) + q.entropy()
    except NotImplementedError:
        return (log_joint - q.log_prob(z)).mean(0)


def importance_weighted_bound(x: Tensor, q: Distribution, prior: Prior, likelihood: Likelihood,
                              n_draws: int, noise: Noise | None = None) -> Tensor:
    """The importance-weighted bound (Burda et al., 2016) of the data rows x (n, row columns) at
    S draws of the proposal r that carry no gradient; returns (n,):

        L_S(θ, ψ) = log (1/S) Σ_s g(z_s; θ) p(x | z_s; ψ) / r(z_s | x),   z_s ~ r

    r is q (batch (n,), event (p,)) mixed with q widened 2-fold (the defensive mixture of
    :func:`~invae.inference.reweighting.defensive_draws`), S = 2 ``n_draws`` draws, half from each:
    q fitted by the reverse KL is narrower than the posterior, and the wider half bounds the
    weights in its tails. E exp(L_S) = p(x; θ, ψ), and L_S tends to log p(x; θ, ψ) as S grows.
    Its gradient in the prior's θ and the likelihood's
    ψ is ``Σ_s w̃_s ∇ log g(z_s; θ) p(x | z_s; ψ)`` with the self-normalised weights w̃_s ∝ g p / r:
    Fisher's identity ∇ log p = E_{p(z|x)} ∇ log g p estimated by importance sampling, where the
    ELBO's gradient ``E_q ∇ log g p`` keeps the bias of q's family. No gradient reaches φ.
    """
    with torch.no_grad():
        z, log_r = defensive_draws(q, n_draws * len(WIDTHS), noise=noise)
    return torch.logsumexp(log_joint(x, z, prior, likelihood) - log_r, dim=0) - math.log(len(z))


def _gaussian_moments(q: Distribution) -> tuple[Tensor, Tensor] | None:
    """(mean (n, p), covariance (n, p, p) or diagonal variances (n, p)) of a Gaussian q, else None."""
    if isinstance(q, MultivariateNormal):
        return q.mean, q.covariance_matrix
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        return q.mean, q.variance
    return None


def _mixture_elbo(x: Tensor, covariates: Tensor | None, q: MixtureSameFamily, prior: Prior, likelihood: Likelihood,
                  n_samples: int) -> Tensor:
    """``Σ_c w_c mean_s [log g(z_cs) + log p(x | z_cs) − log q(z_cs)]``, z_cs ~ q_c; returns (n,)."""
    z = q.component_distribution.rsample((n_samples,))  # (S, n, K, p)
    per_component = None if covariates is None else covariates[:, None, :]
    log_joint = prior.log_prob(z, per_component) + likelihood.log_prob(x[:, None, :], z)  # (S, n, K)
    log_q = q.log_prob(z.movedim(-2, 0)).movedim(0, -1)  # each draw under the whole mixture, (S, n, K)
    return (q.mixture_distribution.probs * (log_joint - log_q).mean(0)).sum(-1)
