"""Known forward operators ``G: R^p → R^m`` of the measurement model ``x = G(z) + noise``.

Every operator maps a batch ``z`` of shape (..., p) to (..., m). The linear one also has
its matrix, adjoint and pseudo-inverse, which the exact references and baselines use;
later operators (nonlinear sensors, convolutions) implement only ``__call__``.
"""

from __future__ import annotations

import abc

import numpy as np
import torch
from torch import Tensor

__all__ = ["ForwardOperator", "LinearOperator"]


class ForwardOperator(abc.ABC):
    """A differentiable map ``G`` from latent (..., p) to observed (..., m)."""

    in_dim: int
    out_dim: int

    @abc.abstractmethod
    def __call__(self, z: Tensor) -> Tensor:
        """``G(z)``: (..., p) → (..., m)."""

    @abc.abstractmethod
    def to(self, device=None, dtype=None) -> ForwardOperator:
        """The same operator on ``device`` / in ``dtype``."""


class LinearOperator(ForwardOperator):
    """``G(z) = A z`` for a known matrix ``A`` of shape (m, p)."""

    def __init__(self, matrix: Tensor | np.ndarray):
        matrix = torch.as_tensor(matrix)
        if matrix.ndim != 2:
            raise ValueError(f"the forward matrix A must be 2-D (m, p), got shape {tuple(matrix.shape)}")
        if not torch.isfinite(matrix).all():
            raise ValueError("the forward matrix A holds NaN or inf values")
        self.matrix = matrix
        self.out_dim, self.in_dim = matrix.shape

    @classmethod
    def identity(cls, p: int, dtype: torch.dtype = torch.float64) -> LinearOperator:
        return cls(torch.eye(p, dtype=dtype))

    def __repr__(self) -> str:
        return f"LinearOperator(m={self.out_dim}, p={self.in_dim})"

    def __call__(self, z: Tensor) -> Tensor:
        return z @ self.matrix.mT

    def adjoint(self, x: Tensor) -> Tensor:
        """``Aᵀ x``: (..., m) → (..., p)."""
        return x @ self.matrix

    def pinv(self, x: Tensor) -> Tensor:
        """Least-squares / minimum-norm solution ``A⁺ x``: (..., m) → (..., p)."""
        return x @ torch.linalg.pinv(self.matrix).mT

    def to(self, device=None, dtype=None) -> LinearOperator:
        return LinearOperator(self.matrix.to(device=device, dtype=dtype))
