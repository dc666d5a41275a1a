"""Exact EM from the data's first two moments: one pass over the rows, then iterations in O(r³).

Under a Gaussian graphical prior and a linear-Gaussian likelihood with the same noise for every
row (one σ or one per sensor, every entry observed), everything EM computes from the data rows
u_i (r = m measurements + k covariates) is an average over the rows of a quadratic function of
(1, u_i): the posterior means are affine in u_i (docs/methods.md §2.5), so the E-step statistics
S, C and D (§3.13) are averages of products of two affine functions, and log p(x_i; Λ) is a
Gaussian log-density in u_i. Such an average depends on the rows only through their count, mean
ū and covariance V = (1/n) Σ (u_i − ū)(u_i − ū)ᵀ (docs/methods.md §3.17).

So EM on any rows with the same mean and covariance gives the same Λ̂ and objective. The 2r
sigma rows ``ū ± √r c_j``, with V = Σ_j c_j c_jᵀ, have exactly those (the ± cancel in the
mean; (1/2r) Σ_j 2 r c_j c_jᵀ = V): EM runs on them, after one pass over the n rows that
accumulates (n, ū, V) block by block — a memory-mapped ``.npy`` is never read whole.

The blocks merge by Chan, Golub & LeVeque's pairwise update (:class:`~invae.model.rows.RowMoments`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..model.ggm import GaussianGraphicalModel
from ..model.likelihoods import GaussianLikelihood
from ..model.rows import RowMoments
from .exact import has_exact_evidence

__all__ = ["moments_suffice", "sigma_rows"]


def moments_suffice(prior, likelihood) -> bool:
    """Whether EM depends on the rows only through their moments (module docstring): a Gaussian
    graphical prior, a linear-Gaussian likelihood with one noise level or one per sensor, every
    entry observed."""
    return (isinstance(prior, GaussianGraphicalModel) and isinstance(likelihood, GaussianLikelihood)
            and has_exact_evidence(prior, likelihood))


def sigma_rows(moments: RowMoments) -> Tensor:
    """2r rows (2r, r) with the mean ū and covariance V of ``moments``: ``ū ± √r c_j``, V = Σ_j c_j c_jᵀ
    from its eigendecomposition (V may be singular: a constant or collinear column)."""
    covariance = moments.covariance
    values, vectors = torch.linalg.eigh(0.5 * (covariance + covariance.mT))
    columns = vectors * values.clamp_min(0).sqrt()  # c_j as columns
    spread = math.sqrt(len(moments.mean)) * columns.mT  # (r, r): row j is √r c_j
    return torch.cat([moments.mean + spread, moments.mean - spread])
