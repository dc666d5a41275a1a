"""How a latent path is measured: a per-time forward operator applied at the observation times.

A series' data row is its T × m measurements flattened time-major (``x[t m + i]``; with
missing entries, :class:`~invae.model.missing.MissingEntries` appends their T m
indicators), and its latent path z the G × d grid values (:mod:`invae.paths.prior`). The
measurement at time t reads the grid point g_t = t k of the path (k sub-steps per interval):

    x_t = G(z_{g_t}) + noise,   t = 0, …, T − 1,

so any invae noise model (Gaussian, Poisson, Student-t, …) and forward operator (a matrix
H, a nonlinear sensor) becomes a path likelihood by taking :class:`PathOperator` as its
forward operator: its entries are independent given z, as every invae likelihood assumes.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..model.forward import ForwardOperator

__all__ = ["PathOperator", "series_rows"]


class PathOperator(ForwardOperator):
    """``z (..., G d) ↦ (G(z_{g_0}), …, G(z_{g_{T−1}})) (..., T m)`` for a per-time operator
    ``per_time`` (d → m), T observation times and ``substeps`` k (G = (T − 1) k + 1)."""

    def __init__(self, per_time: ForwardOperator, steps: int, substeps: int = 1):
        if not (isinstance(steps, int) and steps >= 1 and isinstance(substeps, int) and substeps >= 1):
            raise ValueError(f"steps T and substeps k must be integers >= 1, got {steps!r} and {substeps!r}")
        self.per_time, self.steps, self.substeps = per_time, steps, substeps
        self.grid_points = (steps - 1) * substeps + 1
        self.in_dim = self.grid_points * per_time.in_dim
        self.out_dim = steps * per_time.out_dim

    def __repr__(self) -> str:
        return f"PathOperator({self.per_time!r}, T={self.steps}, substeps={self.substeps})"

    def __call__(self, z: Tensor) -> Tensor:
        paths = z.reshape(*z.shape[:-1], self.grid_points, self.per_time.in_dim)
        return self.per_time(paths[..., :: self.substeps, :]).flatten(-2)

    def to(self, device=None, dtype=None) -> PathOperator:
        return PathOperator(self.per_time.to(device=device, dtype=dtype), self.steps, self.substeps)

    def record(self) -> dict:
        """``{"per_time": the per-time operator's record, "steps": T, "substeps": k}``."""
        return {"per_time": self.per_time.record(), "steps": self.steps, "substeps": self.substeps}

    def per_output(self, values: Tensor) -> Tensor:
        """One value per sensor (m,) (m > 1) repeated at each of the T times, (T m,) time-major as
        the outputs; any other shape as it is (a number, or (T m,) already)."""
        m = self.per_time.out_dim
        if values.ndim == 1 and m > 1 and values.numel() == m:
            return values.repeat(self.steps)
        return values


def series_rows(x) -> np.ndarray:
    """Series (n, T, m) as data rows (n, T m), time-major; NaN stays NaN (missing entries)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"series must be an array (n, T, m), got shape {x.shape}")
    return x.reshape(len(x), -1)
