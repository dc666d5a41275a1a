"""Known forward operators ``G: R^p → R^m`` of the measurement model ``x = G(z) + noise``.

Every operator maps a batch ``z`` of shape (..., p) to (..., m). The linear one also has
its matrix, adjoint and pseudo-inverse, which the exact references and baselines use
(a blur is linear: :meth:`LinearOperator.blur`); a nonlinear one (:class:`FunctionOperator`,
e.g. the saturating sensor :func:`saturating`) implements only ``__call__``, which is all
the variational estimators need.
"""

from __future__ import annotations

import abc

import numpy as np
import torch
from torch import Tensor

__all__ = ["ForwardOperator", "LinearOperator", "FunctionOperator", "saturating"]


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

    @abc.abstractmethod
    def record(self) -> dict:
        """What a model file keeps of the operator: plain values and tensors."""

    def per_output(self, values: Tensor) -> Tensor:
        """Values given per measurement (a noise level) in a shape that broadcasts against G(z)
        (..., m): as they are here; a path's operator repeats one per sensor at every time."""
        return values


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

    @classmethod
    def blur(cls, p: int, width: float) -> LinearOperator:
        """A 1-D Gaussian blur of a length-p signal, ``(Az)_i = Σ_j k(i − j) z_j`` with
        ``k(d) ∝ exp(−d²/(2 width²))`` normalised over each row (zero outside the signal)."""
        if not width > 0:
            raise ValueError(f"the blur width must be > 0, got {width!r}")
        offsets = torch.arange(p, dtype=torch.float64)
        kernel = torch.exp(-0.5 * ((offsets[:, None] - offsets[None, :]) / width) ** 2)
        return cls(kernel / kernel.sum(1, keepdim=True))

    def __repr__(self) -> str:
        return f"LinearOperator(m={self.out_dim}, p={self.in_dim})"

    @property
    def rank(self) -> int:
        """rank A (from its singular values in float64, torch's default tolerance)."""
        return int(torch.linalg.matrix_rank(self.matrix.to(torch.float64)))

    def __call__(self, z: Tensor) -> Tensor:
        return z @ self.matrix.mT

    def adjoint(self, x: Tensor) -> Tensor:
        """``Aᵀ x``: (..., m) → (..., p)."""
        return x @ self.matrix

    def record(self) -> dict:
        """``{"matrix": A}``."""
        return {"matrix": self.matrix}

    def pinv(self, x: Tensor) -> Tensor:
        """Least-squares / minimum-norm solution ``A⁺ x``: (..., m) → (..., p)."""
        return x @ torch.linalg.pinv(self.matrix).mT

    def to(self, device=None, dtype=None) -> LinearOperator:
        return LinearOperator(self.matrix.to(device=device, dtype=dtype))


class FunctionOperator(ForwardOperator):
    """``G(z) = function(z)`` for any differentiable torch function or ``nn.Module``.

    ``function`` maps (..., p) to (..., m); m is read off one call on zeros (1, p). Every
    call is checked: a result of the wrong shape is a ``ValueError``; a non-finite one a
    ``FloatingPointError`` (during training, a divergence that is rolled back). ``source``
    says where the function comes from (``FILE.py:FUNCTION``), so that a model file can
    record it; a function without one cannot be saved.
    """

    def __init__(self, function, in_dim: int, *, name: str | None = None, source: str | None = None):
        if not callable(function):
            raise ValueError(f"the forward function must be callable, got {type(function).__name__}")
        if not (isinstance(in_dim, int) and in_dim >= 1):
            raise ValueError(f"the latent dimension p must be an integer >= 1, got {in_dim!r}")
        self.function, self.in_dim, self.source = function, in_dim, source
        self.name = name or getattr(function, "__name__", type(function).__name__)
        self.out_dim = -1  # unknown until the probe below
        probe = self._checked(torch.zeros(1, in_dim, dtype=torch.float64), probe=True)
        self.out_dim = probe.shape[-1]

    def __repr__(self) -> str:
        return f"FunctionOperator({self.name}, m={self.out_dim}, p={self.in_dim})"

    def record(self) -> dict:
        """``{"function": FILE.py:FUNCTION, "latent_dim": p}``; a ``ValueError`` without a ``source``."""
        if self.source is None:
            raise ValueError(f"the forward function {self.name} cannot be saved: only one read from a file "
                             "(--forward FILE.py:FUNCTION, or FunctionOperator(..., source=...)) can")
        return {"function": self.source, "latent_dim": self.in_dim}

    def __call__(self, z: Tensor) -> Tensor:
        return self._checked(z)

    def _checked(self, z: Tensor, probe: bool = False) -> Tensor:
        if probe:  # the first call: a user's function that fails here fails for p itself
            try:
                out = self.function(z)
            except Exception as error:
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise ValueError(f"the forward function {self.name} fails on z of shape {tuple(z.shape)} "
                                 f"(p = {self.in_dim}): {reason}") from None
        else:
            out = self.function(z)
        if not isinstance(out, Tensor):
            raise ValueError(f"the forward function {self.name} must return a tensor, got {type(out).__name__}")
        expected = (*z.shape[:-1], out.shape[-1] if probe else self.out_dim)
        if out.ndim != z.ndim or tuple(out.shape) != expected:
            raise ValueError(f"the forward function {self.name} maps z of shape {tuple(z.shape)} to "
                             f"{tuple(out.shape)}; expected {expected} (it must keep the leading dimensions)")
        if not torch.isfinite(out).all():
            raise FloatingPointError(f"the forward function {self.name} returned non-finite values")
        return out

    def to(self, device=None, dtype=None) -> FunctionOperator:
        if isinstance(self.function, torch.nn.Module):
            self.function.to(device=device, dtype=dtype)
        return self


def saturating(matrix: Tensor | np.ndarray) -> FunctionOperator:
    """The saturating sensor ``G(z) = tanh(A z)`` for A (m, p): linear for small signals, clipped at ±1."""
    linear = LinearOperator(matrix)

    def tanh_of_linear(z: Tensor) -> Tensor:
        return torch.tanh(z @ linear.matrix.to(z).mT)

    return FunctionOperator(tanh_of_linear, linear.in_dim, name="tanh(A z)")
