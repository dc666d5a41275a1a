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

The blocks merge by Chan, Golub & LeVeque's pairwise update (1983), stable where the mean is
far from 0 (raw sums of squares lose the covariance to cancellation):

    n = n_a + n_b,  δ = ū_b − ū_a,  ū = ū_a + δ n_b / n,  M = M_a + M_b + δ δᵀ n_a n_b / n

with M = n V the scatter matrix; the same merge joins the moments of several processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..model.ggm import GaussianGraphicalModel
from ..model.likelihoods import GaussianLikelihood
from ..model.rows import row_blocks
from .exact import has_exact_evidence

__all__ = ["RowMoments", "moments_suffice"]

def moments_suffice(prior, likelihood) -> bool:
    """Whether EM depends on the rows only through :class:`RowMoments` (module docstring): a
    Gaussian graphical prior, a linear-Gaussian likelihood with one noise level or one per sensor,
    every entry observed."""
    return (isinstance(prior, GaussianGraphicalModel) and isinstance(likelihood, GaussianLikelihood)
            and has_exact_evidence(prior, likelihood))


@dataclass(frozen=True)
class RowMoments:
    """The count n, mean ū (r,) and scatter M = Σ_i (u_i − ū)(u_i − ū)ᵀ (r, r) of rows u_i, float64."""

    count: int
    mean: Tensor
    scatter: Tensor

    @classmethod
    def of(cls, rows: np.ndarray | Tensor) -> RowMoments:
        """The moments of ``rows`` (n, r) (a NumPy array, memory-mapped or not, or a tensor),
        read block by block (:func:`~invae.model.rows.row_blocks`) and merged."""
        total = None
        for _, block in row_blocks(rows):
            part = cls._of_block(block)
            total = part if total is None else total.merge(part)
        if total is None:
            raise ValueError("no rows to take moments of")
        return total

    @classmethod
    def _of_block(cls, rows: Tensor) -> RowMoments:
        """The moments of rows (n, r), float64."""
        mean = rows.mean(0)
        centred = rows - mean
        return cls(len(rows), mean, centred.mT @ centred)

    def merge(self, other: RowMoments) -> RowMoments:
        """The moments of both sets of rows together (module docstring)."""
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        scatter = self.scatter + other.scatter + torch.outer(delta, delta) * (self.count * other.count / count)
        return RowMoments(count, mean, scatter)

    @property
    def covariance(self) -> Tensor:
        """V = M / n (r, r)."""
        return self.scatter / self.count

    def sigma_rows(self) -> Tensor:
        """2r rows (2r, r) with mean ū and covariance V: ``ū ± √r c_j``, V = Σ_j c_j c_jᵀ from its
        eigendecomposition (V may be singular: a constant or collinear column)."""
        values, vectors = torch.linalg.eigh(0.5 * (self.covariance + self.covariance.mT))
        columns = vectors * values.clamp_min(0).sqrt()  # c_j as columns
        spread = math.sqrt(len(self.mean)) * columns.mT  # (r, r): row j is √r c_j
        return torch.cat([self.mean + spread, self.mean - spread])
