"""The Gaussian graphical model prior ``z ~ N(0, Λ⁻¹)`` (docs/methods.md §2.4)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .graphical_lasso import SOLVERS, solve_precision
from .prior import Prior

__all__ = ["GaussianGraphicalModel", "count_edges"]


class GaussianGraphicalModel(Prior):
    """``z ~ N(0, Λ⁻¹)`` with a sparse precision matrix Λ (p, p): a graph on the coordinates.

    The M-step is the graphical lasso on the second moment ``S = E[(1/n) Σ_i z_i z_iᵀ]``:

        Λ̂ = argmax_Λ  log det Λ − tr(Λ S) − α ‖Λ‖_{1,off}

    which is ``2 ×`` the objective of :class:`Prior` with ``penalty(Λ) = (α/2) ‖Λ‖_{1,off}``.
    ``α`` is in the usual per-sample scale; the source's ``λ`` on a batch of ``B`` draws
    corresponds to ``α = 2λ/B`` (docs/methods.md §2.4).

    Parameters
    ----------
    precision : array or tensor (p, p), or None
        Λ; ``None`` with ``dim`` given means the identity (an uninformed start).
    alpha : float
        Off-diagonal ℓ1 penalty α ≥ 0 of the M-step.
    solver : {"newton", "sklearn"}
        The graphical-lasso solver of the M-step (:func:`invae.model.graphical_lasso.solve_precision`);
        ``"newton"`` starts from this prior's Λ, the previous Λ-step's answer.
    """

    def __init__(self, precision: Tensor | np.ndarray | None = None, *, alpha: float = 0.0,
                 dim: int | None = None, solver: str = "newton"):
        super().__init__()
        if precision is None:
            if dim is None:
                raise ValueError("GaussianGraphicalModel needs a precision matrix or its dim")
            precision = torch.eye(dim, dtype=torch.float64)
        precision = torch.as_tensor(precision)
        if precision.ndim != 2 or precision.shape[0] != precision.shape[1]:
            raise ValueError(f"precision must be a square (p, p) matrix, got shape {tuple(precision.shape)}")
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise ValueError(f"the penalty alpha must be a finite number >= 0, got {alpha}")
        if solver not in SOLVERS:
            raise ValueError(f"unknown graphical-lasso solver {solver!r}; choose one of {', '.join(SOLVERS)}")
        self.register_buffer("precision", 0.5 * (precision + precision.T))
        self.alpha = float(alpha)
        self.solver = solver
        self.dim = precision.shape[0]
        chol, info = torch.linalg.cholesky_ex(self.precision)
        self.register_buffer("_chol", chol, persistent=False)  # derived from Λ: not a parameter
        if info.item() != 0:
            raise ValueError("the precision matrix must be symmetric positive-definite")

    def __repr__(self) -> str:
        return f"GaussianGraphicalModel(dim={self.dim}, alpha={self.alpha:g})"

    @property
    def covariance(self) -> Tensor:
        """Λ⁻¹, shape (p, p)."""
        return torch.cholesky_inverse(self._chol)

    def log_prob(self, z: Tensor) -> Tensor:
        """``½ log det Λ − ½ zᵀΛz − (p/2) log 2π`` for z (..., p)."""
        half_logdet = torch.log(torch.diagonal(self._chol)).sum()
        quad = ((z @ self._chol) ** 2).sum(-1)  # zᵀ L Lᵀ z
        return half_logdet - 0.5 * quad - 0.5 * self.dim * math.log(2 * math.pi)

    def expected_log_prob(self, mean: Tensor, cov: Tensor) -> Tensor:
        """``E[log g(z)] = log g(μ) − ½ tr(Λ Σ)`` for z ~ N(μ, Σ) (:meth:`Prior.expected_log_prob`)."""
        if cov.ndim == mean.ndim:  # the variances of a diagonal Σ
            return self.log_prob(mean) - 0.5 * cov @ self.precision.diagonal()
        return self.log_prob(mean) - 0.5 * (self.precision * cov).sum((-2, -1))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``z = L⁻ᵀ ε`` with Λ = L Lᵀ and ε ~ N(0, I): Cov z = Λ⁻¹. Shape (n, p)."""
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.precision.dtype,
                          device=self.precision.device)
        return torch.linalg.solve_triangular(self._chol.mT, eps.mT, upper=True).mT

    def statistics(self, z: Tensor, weights: Tensor | None = None) -> dict[str, Tensor]:
        """``{"second_moment": S = Σ w z zᵀ / Σ w}`` (p, p) over all draws z (..., n, p), weights (..., n)."""
        flat = z.reshape(-1, self.dim)
        if weights is None:
            return {"second_moment": flat.mT @ flat / flat.shape[0]}
        w = weights.reshape(-1, 1).to(flat)
        return {"second_moment": (w * flat).mT @ flat / w.sum()}

    def gaussian_statistics(self, mean: Tensor, cov: Tensor | None = None, *,
                            var: Tensor | None = None) -> dict[str, Tensor]:
        """``{"second_moment": S = (1/n) Σ_i (μ_i μ_iᵀ + Σ_i)}`` (docs/methods.md §2.2, §2.5)."""
        if (cov is None) == (var is None):
            raise ValueError("give exactly one of cov (p, p) or (n, p, p) and var (n, p)")
        second = mean.mT @ mean / mean.shape[0]
        if var is not None:
            return {"second_moment": second + torch.diag(var.mean(0))}
        return {"second_moment": second + (cov if cov.ndim == 2 else cov.mean(0))}

    def m_step_from(self, statistics: dict[str, Tensor]) -> GaussianGraphicalModel:
        """The graphical lasso on the second moment S (see the class docstring)."""
        s = statistics["second_moment"].detach().to("cpu", torch.float64).numpy()
        start = self.precision.detach().to("cpu", torch.float64).numpy()
        precision = torch.from_numpy(solve_precision(s, self.alpha, initial=start, solver=self.solver))
        return self._with(precision.to(self.precision.device, self.precision.dtype))

    def penalty(self) -> float:
        """``(α/2) ‖Λ‖_{1,off}``."""
        off = self.precision.abs().sum() - self.precision.diagonal().abs().sum()
        return 0.5 * self.alpha * float(off)

    def relative_change(self, previous: GaussianGraphicalModel) -> float:
        """``‖Λ − Λ_prev‖_F / ‖Λ_prev‖_F``."""
        return float(torch.linalg.norm(self.precision - previous.precision) / torch.linalg.norm(previous.precision))

    def with_penalty(self, alpha: float) -> GaussianGraphicalModel:
        return GaussianGraphicalModel(self.precision, alpha=alpha, solver=self.solver)

    def config(self) -> dict:
        return {"alpha": self.alpha, "solver": self.solver}

    @classmethod
    def from_state(cls, state: dict[str, Tensor], **config) -> GaussianGraphicalModel:
        return cls(state["precision"], **config)

    def summary(self) -> dict:
        """The penalty α and the number of edges of the graph (non-zero Λ_ij, i < j)."""
        return {"penalty": self.alpha, "edges": count_edges(self.precision)}

    def with_state(self, state: dict[str, Tensor]) -> GaussianGraphicalModel:
        return self._with(state["precision"].to(self.precision))

    def to(self, device=None, dtype=None) -> GaussianGraphicalModel:
        return self._with(self.precision.to(device=device, dtype=dtype))

    def _with(self, precision: Tensor) -> GaussianGraphicalModel:
        """This prior's settings with another Λ."""
        return GaussianGraphicalModel(precision, alpha=self.alpha, solver=self.solver)


def count_edges(precision: Tensor) -> int:
    """The edges of the graphs of precision matrices (..., p, p): non-zero entries above the diagonal."""
    return int(torch.count_nonzero(torch.triu(precision, diagonal=1)))
