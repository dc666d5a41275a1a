"""A data row: what the likelihood reads, then what the prior reads.

Row i is ``(x_i1, …, x_i,data_dim, c_i1, …, c_ik)``: the likelihood's ``data_dim`` columns
(the measurements and what it knows of them, e.g. σ_i) followed by the prior's k =
``covariate_dim`` covariates (e.g. the location ``μ + B c_i``, :mod:`invae.model.location`).
Both travel together in every minibatch, an encoder reads all of them (the posterior
depends on c_i through the prior), and new rows bring their own.

Rows too many to hold twice (a memory-mapped ``.npy``) are read in blocks (:func:`row_blocks`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = ["split_rows", "row_dim", "log_joint", "block_rows", "row_blocks"]

_BLOCK_ENTRIES = 1 << 22  # entries per block: 32 MB of float64, whatever the row width


def block_rows(width: int) -> int:
    """Rows per block of rows ``width`` entries wide: about 4 million entries."""
    return max(1, _BLOCK_ENTRIES // max(1, width))


def row_blocks(rows, *, dtype: torch.dtype = torch.float64, device=None) -> Iterator[tuple[slice, Tensor]]:
    """(the block's slice of rows, a copy of those rows as a tensor) for consecutive blocks of
    rows (n, r) — an array, a memory map, read only block by block, or a tensor."""
    size = block_rows(rows.shape[1])
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
