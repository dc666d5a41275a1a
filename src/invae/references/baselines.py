"""Baselines of the source (docs/methods.md §2.6) and the complete-data floor (§2.5).

- :class:`Naive`: ``ẑ = A⁺ x`` — the posterior mean under a flat prior — with the
  plug-in prior estimate (the M-step on the ẑ's).
- :func:`rank_matching`: the order-statistics estimator: estimates whose empirical
  distribution matches the estimated prior while keeping the order of the data.
- :func:`complete_data_floor`: the M-step (to convergence) on the true signals; no estimator from x beats it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..inference.base import EmpiricalBayesEstimator
from ..model.forward import LinearOperator
from ..model.likelihoods import gaussian_measurements
from ..model.missing import MissingEntries
from ..model.prior import Prior
from ..model.rows import split_rows

__all__ = ["Naive", "rank_matching", "complete_data_floor"]


class Naive(EmpiricalBayesEstimator):
    """Least squares / minimum norm ``ẑ = A⁺ x``; ``Λ̂`` = M-step on the ẑ's.

    The standard deviation reported is the sampling spread of ``ẑ`` under the noise,
    ``sqrt(diag A⁺ D A⁺ᵀ)`` with ``D = diag(σ²)`` (σ_i² I per row with
    :class:`~invae.model.likelihoods.NoisePerRowGaussianLikelihood`) — the flat-prior posterior's when A has
    full column rank; a coordinate that ``A`` does not determine (``e_j`` outside the
    row space of A, e.g. when m < p) gets ``inf``.
    """

    def fit(self, X) -> Naive:
        if not isinstance(self.likelihood.forward, LinearOperator):
            raise ValueError("the naive method needs a linear forward matrix A (it computes A⁺x)")
        if isinstance(self.likelihood, MissingEntries):
            raise ValueError("the naive method needs every entry observed (it computes A⁺x): use em or a variational "
                             "method with missing entries")
        if not self.prior.has_m_step:
            raise ValueError(f"the naive method takes the M-step on A⁺x, and {type(self.prior).__name__} has none: "
                             "use a variational method")
        x = self._tensor(X)
        prior, likelihood = self._models()
        self.likelihood_ = likelihood
        self.prior_ = prior.m_step(likelihood.forward.pinv(gaussian_measurements(likelihood, x)[0]),
                                   covariates=split_rows(x, likelihood)[1])
        self.n_iter_, self.converged_, self.history_ = 1, True, {}
        return self

    def _posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a = self.likelihood_.forward.matrix
        a_pinv = torch.linalg.pinv(a)  # (p, m)
        x, noise_var = gaussian_measurements(self.likelihood_, x)
        var = noise_var.expand_as(x) @ a_pinv.mT.square()
        # e_j lies in the row space of A iff the projector A⁺A keeps it whole.
        determined = torch.diagonal(a_pinv @ a) > 1 - 1e-8
        std = torch.where(determined, var.sqrt(), torch.full_like(var, float("inf")))
        return x @ a_pinv.mT, std


def rank_matching(estimates: np.ndarray, quantile: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Replace each column's values by the prior's quantiles at the same ranks (docs/methods.md §2.6).

    ``ẑ_(i),j = Q_j((i − ½) / n)`` for the observation of rank ``i`` (ties by position) in
    column j of ``estimates`` (n, p) or (n,); ``quantile`` maps levels u of that shape to the
    prior's marginal quantiles, e.g. ``lambda u: sd * norm.ppf(u)`` for centred Gaussian
    marginals with sds ``sd`` (p,) (the GGM), or a grid prior's ``quantile`` in one dimension.
    The estimates' empirical distribution is then the prior's, in the data's order.
    """
    estimates = np.asarray(estimates, dtype=np.float64)
    n = estimates.shape[0]
    ranks = np.argsort(np.argsort(estimates, axis=0, kind="stable"), axis=0, kind="stable")
    return np.asarray(quantile((ranks + 0.5) / n), dtype=np.float64)


def complete_data_floor(z: Tensor | np.ndarray, prior: Prior, *, tol: float = 1e-8, max_iter: int = 1000,
                        covariates=None) -> Prior:
    """The prior estimated from the true signals ``z`` (n, p) (and their rows' ``covariates``
    (n, k) where the prior reads them): ``prior``'s M-step on z,
    repeated from ``prior`` until the parameters move by less than ``tol`` (relative). A
    Gaussian prior's M-step is exact at once; a mixture's is one EM step on z, so this
    runs EM on the complete data to its maximum."""
    z = torch.as_tensor(np.asarray(z, dtype=np.float64))
    covariates = None if covariates is None else torch.as_tensor(np.asarray(covariates, dtype=np.float64))
    estimate = prior.to("cpu", torch.float64).m_step(z, covariates=covariates)
    for _ in range(max_iter):
        previous, estimate = estimate, estimate.m_step(z, covariates=covariates)
        if estimate.relative_change(previous) < tol:
            break
    return estimate
