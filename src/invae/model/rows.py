"""A data row: what the likelihood reads, then what the prior reads.

Row i is ``(x_i1, …, x_i,data_dim, c_i1, …, c_ik)``: the likelihood's ``data_dim`` columns
(the measurements and what it knows of them, e.g. σ_i) followed by the prior's k =
``covariate_dim`` covariates (e.g. the location ``μ + B c_i``, :mod:`invae.model.location`).
Both travel together in every minibatch, an encoder reads all of them (the posterior
depends on c_i through the prior), and new rows bring their own.

Rows too many to hold twice (a memory-mapped ``.npy``) are read in blocks (:func:`row_blocks`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["split_rows", "row_dim", "log_joint", "block_rows", "row_blocks", "block_average", "RowMoments"]

_BLOCK_ENTRIES = 1 << 22  # entries per block: 32 MB of float64, whatever the row width


def block_rows(width: int) -> int:
    """Rows per block of rows ``width`` entries wide: about 4 million entries."""
    return max(1, _BLOCK_ENTRIES // max(1, width))


def block_average(parts: Iterable[tuple[int, dict[str, Tensor]]]) -> dict[str, Tensor]:
    """``Σ_b n_b s_b / Σ_b n_b``: statistics s_b that are averages over the n_b rows of block b
    (a prior's expected sufficient statistics are), as the average over all the rows."""
    parts = list(parts)
    if len(parts) == 1:  # as they are, not rounded through n_b s_b / n_b
        return parts[0][1]
    count = sum(rows for rows, _ in parts)
    return {key: sum(statistics[key] * (rows / count) for rows, statistics in parts) for key in parts[0][1]}


def row_blocks(rows, *, dtype: torch.dtype = torch.float64, device=None,
               entries_per_row: int | None = None) -> Iterator[tuple[slice, Tensor]]:
    """(the block's slice of rows, a copy of those rows as a tensor) for consecutive blocks of
    rows (n, r) — an array, a memory map, read only block by block, or a tensor. A block holds
    about 4 million entries of ``entries_per_row`` per row (default r; e.g. p² where each row
    makes a p × p matrix)."""
    size = block_rows(entries_per_row or rows.shape[1])
    for start in range(0, rows.shape[0], size):
        block = slice(start, start + size)
        part = rows[block] if isinstance(rows, Tensor) else torch.from_numpy(np.array(rows[block]))
        yield block, part.to(dtype=dtype, device=device, copy=True)


def split_rows(x: Tensor, likelihood) -> tuple[Tensor, Tensor | None]:
    """(the likelihood's columns (..., data_dim), the prior's covariates (..., k) or None when k = 0)."""
    columns = likelihood.data_dim
    return x[..., :columns], (x[..., columns:] if x.shape[-1] > columns else None)


def row_dim(prior, likelihood) -> int:
    """The columns of a data row: the likelihood's ``data_dim`` plus the prior's ``covariate_dim``."""
    return likelihood.data_dim + prior.covariate_dim


def log_joint(x: Tensor, z: Tensor, prior, likelihood) -> Tensor:
    """``log g(z; θ, c) + log p(x | z)`` for data rows x (n, row columns) and draws z (..., n, p); (..., n)."""
    measured, covariates = split_rows(x, likelihood)
    return prior.log_prob(z, covariates) + likelihood.log_prob(measured, z)


@dataclass(frozen=True)
class RowMoments:
    """The count n, mean ū (r,) and scatter M = Σ_i (u_i − ū)(u_i − ū)ᵀ (r, r) of rows u_i (or only
    its diagonal (r,), the columns' sums of squares), float64, taken block by block. Blocks merge
    by the pairwise update of Chan, Golub & LeVeque (1983), which stays accurate where the mean is
    far from 0 (raw sums of squares would lose the spread to cancellation):

        n = n_a + n_b,   δ = ū_b − ū_a,   ū = ū_a + δ n_b / n,   M = M_a + M_b + δ δᵀ n_a n_b / n

    (δ², elementwise, for the diagonal); the same merge joins the moments of several processes."""

    count: int
    mean: Tensor
    scatter: Tensor

    @classmethod
    def of(cls, rows, *, read: Callable[[Tensor], Tensor] | None = None, diagonal: bool = False) -> RowMoments:
        """The moments of ``rows`` (n, r) (a NumPy array, memory-mapped or not, or a tensor), read
        block by block (:func:`row_blocks`), each block mapped by ``read`` first where given;
        ``diagonal``: the scatter's diagonal only (O(n r) rather than O(n r²))."""
        total = None
        for _, block in row_blocks(rows):
            part = cls._of_block(block if read is None else read(block), diagonal)
            total = part if total is None else total.merge(part)
        if total is None:
            raise ValueError("no rows to take moments of")
        return total

    @classmethod
    def _of_block(cls, rows: Tensor, diagonal: bool) -> RowMoments:
        """The moments of rows (n, r), float64."""
        mean = rows.mean(0)
        centred = rows - mean
        return cls(len(rows), mean, centred.square().sum(0) if diagonal else centred.mT @ centred)

    def merge(self, other: RowMoments) -> RowMoments:
        """The moments of both sets of rows together (class docstring)."""
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        cross = delta.square() if self.scatter.ndim == 1 else torch.outer(delta, delta)
        scatter = self.scatter + other.scatter + cross * (self.count * other.count / count)
        return RowMoments(count, mean, scatter)

    @property
    def covariance(self) -> Tensor:
        """V = M / n: (r, r), or the variances (r,) where only the diagonal was taken."""
        return self.scatter / self.count
