"""Exact posterior and evidence of the linear-Gaussian model (DESIGN §2.5).

Model: ``z ~ N(0, Λ⁻¹)``, ``x | z ~ N(A z, D)`` with ``D = diag(σ²)`` (σ a scalar or one
value per sensor). Then, for every observation,

    Σ_post = (Λ + Aᵀ D⁻¹ A)⁻¹,        μ_post(x) = Σ_post Aᵀ D⁻¹ x,
    x ~ N(0, A Λ⁻¹ Aᵀ + D)             (the marginal, so log p(x; Λ) is exact).

With the true Λ the posterior mean is the Bayes oracle, the floor for signal MSE.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .likelihoods import GaussianLikelihood
from .priors import GaussianGraphicalModel

__all__ = ["exact_posterior", "marginal_log_likelihood", "mean_log_likelihood", "penalized_log_likelihood",
           "has_exact_evidence"]


def has_exact_evidence(prior, likelihood) -> bool:
    """Whether this module applies: a Gaussian graphical prior and a linear-Gaussian likelihood."""
    return (isinstance(prior, GaussianGraphicalModel) and isinstance(likelihood, GaussianLikelihood)
            and likelihood.is_linear)


def _linear_gaussian_parts(prior, likelihood, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(Λ (p, p), A (m, p), σ² as a vector (m,)) in ``like``'s dtype and device."""
    if not has_exact_evidence(prior, likelihood):
        raise ValueError(
            "the exact references need a Gaussian graphical prior and a linear-Gaussian "
            f"likelihood, got {prior!r} and {likelihood!r}"
        )
    a = likelihood.forward.matrix.to(like)
    m = a.shape[0]
    std = likelihood.noise_std.to(like)
    if std.numel() not in (1, m):
        raise ValueError(
            "the exact references take one noise level, or one per sensor (m,) = "
            f"({m},); got noise_std of shape {tuple(std.shape)}"
        )
    return prior.precision.to(like), a, (std.reshape(-1) ** 2).expand(m)


def exact_posterior(x: Tensor, prior: GaussianGraphicalModel,
                    likelihood: GaussianLikelihood) -> tuple[Tensor, Tensor]:
    """Posterior mean (n, p) and the covariance Σ_post (p, p) shared by all x (n, m)."""
    precision, a, noise_var = _linear_gaussian_parts(prior, likelihood, x)
    a_scaled = a / noise_var[:, None]  # D⁻¹ A
    chol = torch.linalg.cholesky(precision + a.mT @ a_scaled)
    cov = torch.cholesky_inverse(chol)
    mean = torch.cholesky_solve((x @ a_scaled).mT, chol).mT
    return mean, 0.5 * (cov + cov.mT)


def marginal_log_likelihood(x: Tensor, prior: GaussianGraphicalModel,
                            likelihood: GaussianLikelihood) -> Tensor:
    """``log p(x_i; Λ) = log N(x_i; 0, A Λ⁻¹ Aᵀ + D)`` for x (n, m); returns (n,)."""
    precision, a, noise_var = _linear_gaussian_parts(prior, likelihood, x)
    cov_z = torch.cholesky_inverse(torch.linalg.cholesky(precision))
    chol = torch.linalg.cholesky(a @ cov_z @ a.mT + torch.diag(noise_var))
    white = torch.linalg.solve_triangular(chol, x.mT, upper=False)  # (m, n)
    logdet = 2 * torch.log(torch.diagonal(chol)).sum()
    return -0.5 * (white**2).sum(0) - 0.5 * logdet - 0.5 * a.shape[0] * math.log(2 * math.pi)


def mean_log_likelihood(x, prior: GaussianGraphicalModel, likelihood: GaussianLikelihood) -> float:
    """Mean ``log p(x_i; Λ)`` over the rows of x (n, m), array or tensor, in float64 on the CPU."""
    x = torch.as_tensor(x, dtype=torch.float64, device="cpu")
    return float(marginal_log_likelihood(x, prior.to("cpu", torch.float64),
                                         likelihood.to("cpu", torch.float64)).mean())


def penalized_log_likelihood(x: Tensor, prior: GaussianGraphicalModel,
                             likelihood: GaussianLikelihood) -> float:
    """The objective EM ascends: ``(1/n) Σ_i log p(x_i; Λ) − (α/2) ‖Λ‖_{1,off}``."""
    return float(marginal_log_likelihood(x, prior, likelihood).mean()) - prior.penalty()
