"""Exact posterior and evidence of the linear-Gaussian model (docs/methods.md §2.5).

Model: ``z_i ~ N(η_i, Λ⁻¹)``, ``x | z ~ N(A z, D)`` with ``D = diag(σ²)`` (σ a scalar, one
value per sensor, or — :class:`~invae.model.likelihoods.NoisePerRowGaussianLikelihood` — one
known σ_i per observation, so D_i = σ_i² I differs by row) and the prior's location
``η_i = μ + B c_i`` (0 by default; docs/methods.md §3.13). Then, for every observation,

    Σ_post = (Λ + Aᵀ D⁻¹ A)⁻¹,        μ_post(x) = Σ_post (Λ η_i + Aᵀ D⁻¹ x),
    x ~ N(A η_i, A Λ⁻¹ Aᵀ + D)         (the marginal, so log p(x; Λ) is exact).

With D_i per row, Σ_post and the marginal covariance are per row too: (n, p, p), (n, m, m).

With the true Λ the posterior mean is the Bayes oracle, the floor for signal MSE.

Gaussian-mixture prior ``z_i ~ Σ_k π_k N(η_ik, Λ_k⁻¹)`` (:class:`~invae.model.mixture.GaussianMixture`),
with the component locations ``η_ik = μ_k + B_k c_i`` (μ_k without covariates) and ℓ_i the
component of row i: the posterior is a mixture of the components' Gaussian posteriors,

    p(ℓ_i = k | x_i) ∝ π_k N(x_i; A η_ik, A Λ_k⁻¹ Aᵀ + D),      V_k = (Λ_k + Aᵀ D⁻¹ A)⁻¹,
    z_i | x_i, ℓ_i = k ~ N(m_ik, V_k),   m_ik = V_k (Λ_k η_ik + Aᵀ D⁻¹ x_i),

and ``log p(x_i) = log Σ_k π_k N(x_i; A η_ik, A Λ_k⁻¹ Aᵀ + D)``: exact EM is tractable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.forward import LinearOperator
from ..model.ggm import GaussianGraphicalModel
from ..model.likelihoods import GaussianLikelihood, NoisePerRowGaussianLikelihood, gaussian_measurements
from ..model.missing import MissingEntries
from ..model.mixture import GaussianMixture
from ..model.rows import row_blocks, split_rows

__all__ = ["exact_posterior", "mean_field_optimum", "mixture_posterior", "MixturePosterior", "marginal_log_likelihood",
           "mean_log_likelihood", "penalized_log_likelihood", "has_exact_evidence", "has_exact_em"]


def has_exact_evidence(prior, likelihood) -> bool:
    """Whether this module applies: a Gaussian graphical or Gaussian-mixture prior and a
    linear-Gaussian likelihood (one σ, one per sensor, or one per row; entries may be missing
    under a graphical prior)."""
    missing = isinstance(likelihood, MissingEntries)
    base = likelihood.base if missing else likelihood
    graphical_or_mixture = isinstance(prior, GaussianGraphicalModel) or (isinstance(prior, GaussianMixture)
                                                                         and not missing)
    return (graphical_or_mixture and isinstance(base, (GaussianLikelihood, NoisePerRowGaussianLikelihood))
            and isinstance(base.forward, LinearOperator))


def has_exact_em(prior, likelihood) -> bool:
    """Whether :class:`~invae.references.em.EM` applies: exact evidence, and a graphical prior
    or a mixture with the same noise for every row (one σ, or one per sensor, every entry observed)."""
    return has_exact_evidence(prior, likelihood) and not (
        isinstance(prior, GaussianMixture) and not isinstance(likelihood, GaussianLikelihood))


def _prior_location(prior, likelihood, x: Tensor) -> Tensor:
    """η_i = μ + B c_i of the data rows x (n, row columns): (p,), or (n, p) with covariates; a
    mixture's η_ik = μ_k + B_k c_i: (K, p), or (n, K, p) with covariates; in x's dtype."""
    covariates = split_rows(x, likelihood)[1]
    if isinstance(prior, GaussianMixture):
        return prior.component_means(covariates).to(x)
    return prior.location_of(covariates).to(x)


def _linear_gaussian_parts(prior, likelihood, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(Λ (p, p) or the Λ_k (K, p, p), A (m, p), the measurements (n, m), σ² as (m,) or, with
    one σ_i per row, (n, m)) in x's dtype and device; x (n, data_dim) are the data rows."""
    if not has_exact_evidence(prior, likelihood):
        raise ValueError(
            "the exact references need a Gaussian graphical or Gaussian-mixture prior and a "
            f"linear-Gaussian likelihood, got {prior!r} and {likelihood!r}"
        )
    precision = (prior.precisions if isinstance(prior, GaussianMixture) else prior.precision).to(x)
    return precision, likelihood.forward.matrix.to(x), *_measurements(likelihood, x)


def _measurements(likelihood, x: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`~invae.model.likelihoods.gaussian_measurements`; with missing entries, (n, m)
    variances that are infinite where an entry is missing (its weight 1/σ² in every formula is 0)."""
    if not isinstance(likelihood, MissingEntries):
        return gaussian_measurements(likelihood, x)
    rows, observed = likelihood.split(split_rows(x, likelihood)[0])
    measured, noise_var = gaussian_measurements(likelihood.base, rows)
    return measured, noise_var / observed


def _posterior_precision(precision: Tensor, a: Tensor, noise_var: Tensor) -> tuple[Tensor, Tensor]:
    """(``Λ + Aᵀ D⁻¹ A``, ``D⁻¹ A``): (..., p, p) and (..., m, p) for σ² (m,) or per row (n, m)."""
    a_scaled = a / noise_var[..., :, None]
    return precision + a.mT @ a_scaled, a_scaled


def _posterior_in_precision(x: Tensor, prior: GaussianGraphicalModel, likelihood) -> tuple[Tensor, Tensor, Tensor]:
    """Posterior mean (n, p), precision P = Λ + Aᵀ D⁻¹ A and its Cholesky factor, each
    (p, p) shared by all rows or (n, p, p) with one σ_i per row."""
    precision, a, measured, noise_var = _linear_gaussian_parts(prior, likelihood, x)
    post_precision, a_scaled = _posterior_precision(precision, a, noise_var)
    chol = torch.linalg.cholesky(post_precision)
    from_prior = _prior_location(prior, likelihood, x) @ precision  # (Λ η_i)ᵀ
    if chol.ndim == 2:
        mean = torch.cholesky_solve((measured @ a_scaled + from_prior).mT, chol).mT
    else:
        rhs = torch.einsum("nm,nmp->np", measured, a_scaled) + from_prior
        mean = torch.cholesky_solve(rhs[..., None], chol)[..., 0]
    return mean, post_precision, chol


def exact_posterior(x: Tensor, prior: GaussianGraphicalModel, likelihood) -> tuple[Tensor, Tensor]:
    """Posterior mean (n, p) and covariance Σ_post for the data rows x: (p, p), shared by
    all rows, or (n, p, p) with one σ_i per row."""
    mean, _, chol = _posterior_in_precision(x, prior, likelihood)
    cov = torch.cholesky_inverse(chol)
    return mean, 0.5 * (cov + cov.mT)


def mean_field_optimum(x: Tensor, prior: GaussianGraphicalModel, likelihood) -> tuple[Tensor, Tensor, float]:
    """The best diagonal Gaussian for each row's exact posterior ``N(m_i, P_i⁻¹)``: means m_i
    (n, p), variances ``1/(P_i)_jj`` ((p,), or (n, p) with one σ_i per row), and its mean KL
    to the exact posterior per row, ``½ (Σ_j log (P_i)_jj − log det P_i)``.

    Minimising ``KL(q ‖ N(m, P⁻¹))`` over diagonal Gaussians q: the means' gradient
    ``P (μ − m)`` vanishes at μ = m, and the variances' optimum ``1/P_jj`` does not depend on
    the means (Bishop 2006, §10.1.2)."""
    mean, post_precision, chol = _posterior_in_precision(x, prior, likelihood)  # P itself: no inverse of Σ
    precision_diagonal = post_precision.diagonal(dim1=-2, dim2=-1)
    log_det_precision = 2 * torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)
    kl = 0.5 * float((torch.log(precision_diagonal).sum(-1) - log_det_precision).mean())
    return mean, 1 / precision_diagonal, kl


def _gaussian_log_density(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """``log N(x_i; mean, cov)`` for x (n, m), mean (m,), cov (m, m) or one per row (n, m, m); returns (n,)."""
    chol = torch.linalg.cholesky(cov)
    if chol.ndim == 2:  # one triangular solve for all rows
        white = torch.linalg.solve_triangular(chol, (x - mean).mT, upper=False).mT  # (n, m)
    else:
        white = torch.linalg.solve_triangular(chol, (x - mean)[..., None], upper=False)[..., 0]
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (white**2).sum(-1) - 0.5 * logdet - 0.5 * x.shape[-1] * math.log(2 * math.pi)


def marginal_log_likelihood(x: Tensor, prior, likelihood) -> Tensor:
    """``log p(x_i; Λ) = log N(x_i; A η_i, A Λ⁻¹ Aᵀ + D)`` for the data rows x, or its mixture
    over the components of a Gaussian-mixture prior; returns (n,)."""
    if isinstance(prior, GaussianMixture):
        return torch.logsumexp(_component_log_joint(x, prior, likelihood), dim=-1)
    precision, a, measured, noise_var = _linear_gaussian_parts(prior, likelihood, x)
    mean = _prior_location(prior, likelihood, x) @ a.mT  # (m,), or (n, m) with covariates
    if isinstance(likelihood, MissingEntries):
        return _observed_log_density(measured - mean, precision, a, noise_var)
    cov_z = torch.cholesky_inverse(torch.linalg.cholesky(precision))
    return _gaussian_log_density(measured, mean, a @ cov_z @ a.mT + torch.diag_embed(noise_var))


def _observed_log_density(residual: Tensor, precision: Tensor, a: Tensor, noise_var: Tensor) -> Tensor:
    """``log N(y_O; 0, C)``, ``C = A_O Λ⁻¹ A_Oᵀ + D_O``, of each row's observed entries O (where
    σ² is finite), for the residuals y = x − A η (n, m); returns (n,). By Woodbury's identity
    and the determinant lemma, with W = D_O⁻¹ (0 off O), P = Λ + Aᵀ W A and b = Aᵀ W y,

        yᵀ C⁻¹ y = yᵀ W y − bᵀ P⁻¹ b,      log det C = Σ_O log σ_j² + log det P − log det Λ,

    so no row's m_O × m_O block is formed (docs/methods.md §3.14)."""
    observed = torch.isfinite(noise_var)
    y = torch.where(observed, residual, 0.0)
    post_precision, a_scaled = _posterior_precision(precision, a, noise_var)  # (n, p, p), (n, m, p)
    chol = torch.linalg.cholesky(post_precision)
    b = torch.einsum("nm,nmp->np", y, a_scaled)
    white = torch.linalg.solve_triangular(chol, b[..., None], upper=False)[..., 0]
    quad = (y.square() / noise_var).sum(-1) - white.square().sum(-1)
    log_det = (torch.where(observed, noise_var.log(), 0.0).sum(-1) + 2 * torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)
               - 2 * torch.log(torch.linalg.cholesky(precision).diagonal()).sum())
    return -0.5 * (quad + log_det + observed.sum(-1) * math.log(2 * math.pi))


@dataclass(frozen=True)
class MixturePosterior:
    """The exact posterior of z given x (n, m) under a Gaussian-mixture prior.

    ``responsibilities`` p(ℓ_i = k | x_i), (n, K); ``means`` m_ik, (n, K, p); ``cov`` V_k,
    (K, p, p); ``log_evidence`` log p(x_i), (n,).
    """

    responsibilities: Tensor
    means: Tensor
    cov: Tensor
    log_evidence: Tensor

    @property
    def mean(self) -> Tensor:
        """E[z | x] = Σ_k r_k m_k, shape (n, p)."""
        return torch.einsum("nk,nkp->np", self.responsibilities, self.means)

    @property
    def variance(self) -> Tensor:
        """Var[z_j | x] = Σ_k r_k (V_k,jj + m_k,j²) − E[z_j | x]², shape (n, p)."""
        second = torch.diagonal(self.cov, dim1=-2, dim2=-1) + self.means**2  # (n, K, p)
        return (torch.einsum("nk,nkp->np", self.responsibilities, second) - self.mean**2).clamp_min(0)


def _component_log_joint(x: Tensor, prior: GaussianMixture, likelihood) -> Tensor:
    """``log π_k + log N(x_i; A η_ik, A Λ_k⁻¹ Aᵀ + D)`` for the data rows x; returns (n, K)."""
    _, a, measured, noise_var = _linear_gaussian_parts(prior, likelihood, x)
    centres = _prior_location(prior, likelihood, x) @ a.mT  # A η_ik: (K, m), or (n, K, m) with covariates
    weights, covariances = prior.weights.to(x), prior.covariances.to(x)
    return torch.stack([
        torch.log(weights[k]) + _gaussian_log_density(measured, centres[..., k, :],
                                                      a @ covariances[k] @ a.mT + torch.diag_embed(noise_var))
        for k in range(prior.components)], dim=-1)


def mixture_posterior(x: Tensor, prior: GaussianMixture, likelihood: GaussianLikelihood) -> MixturePosterior:
    """The exact posterior (module docstring) for the data rows x (n, m + k, the prior's k
    covariates last); one σ, or one per sensor."""
    if not isinstance(likelihood, GaussianLikelihood):
        raise ValueError("the exact mixture posterior takes one noise level (or one per sensor) and every "
                         "entry observed, not one per row or missing entries")
    precisions, a, _, noise_var = _linear_gaussian_parts(prior, likelihood, x)
    post_precisions, a_scaled = _posterior_precision(precisions, a, noise_var)
    centres = _prior_location(prior, likelihood, x)  # η_ik: (K, p), or (n, K, p) with covariates
    log_joint = _component_log_joint(x, prior, likelihood)  # (n, K)
    chol = torch.linalg.cholesky(post_precisions)  # (K, p, p)
    cov = torch.cholesky_inverse(chol)
    rhs = (precisions @ centres[..., None])[..., 0] + (split_rows(x, likelihood)[0] @ a_scaled)[:, None, :]
    post_means = torch.cholesky_solve(rhs.permute(1, 2, 0), chol).permute(2, 0, 1)
    log_evidence = torch.logsumexp(log_joint, dim=-1)
    return MixturePosterior(torch.exp(log_joint - log_evidence[:, None]), post_means, 0.5 * (cov + cov.mT),
                            log_evidence)


def mean_log_likelihood(x, prior, likelihood: GaussianLikelihood) -> float:
    """Mean ``log p(x_i; Λ)`` over the rows of x (n, m) — an array, a memory map or a tensor —, in
    float64 on the CPU, block by block (:func:`~invae.model.rows.row_blocks`)."""
    prior, likelihood = prior.to("cpu", torch.float64), likelihood.to("cpu", torch.float64)
    total = sum(float(marginal_log_likelihood(block, prior, likelihood).sum()) for _, block in row_blocks(x))
    return total / len(x)


def penalized_log_likelihood(x: Tensor, prior, likelihood: GaussianLikelihood) -> float:
    """The objective EM ascends: ``(1/n) Σ_i log p(x_i; Λ) − penalty(Λ)``."""
    return float(marginal_log_likelihood(x, prior, likelihood).mean()) - prior.penalty()
