"""The Gaussian graphical model prior ``z_i ~ N(μ + B c_i, Λ⁻¹)`` (docs/methods.md §2.4, §3.13)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .graphical_lasso import SOLVERS, solve_precision
from .location import covariate_effects, design_rows, least_squares, location_statistics
from .prior import Prior

__all__ = ["GaussianGraphicalModel", "count_edges"]


class GaussianGraphicalModel(Prior):
    """``z_i ~ N(μ + B c_i, Λ⁻¹)`` with a sparse precision matrix Λ (p, p): a graph on the
    coordinates; a location μ (p,) and, for k known covariates c_i per row, their effects B (p, k).

    The M-step is the graphical lasso on the second moment ``S = E[(1/n) Σ_i z_i z_iᵀ]``:

        Λ̂ = argmax_Λ  log det Λ − tr(Λ S) − α ‖Λ‖_{1,off}

    which is ``2 ×`` the objective of :class:`Prior` with ``penalty(Λ) = (α/2) ‖Λ‖_{1,off}``.
    ``α`` is in the usual per-sample scale; the source's ``λ`` on a batch of ``B`` draws
    corresponds to ``α = 2λ/B`` (docs/methods.md §2.4). With a fitted location, (μ, B) are
    first the least-squares fit of the draws on (1, c_i) and S is the residual moment
    (:mod:`invae.model.location`): still the exact maximiser.

    Parameters
    ----------
    precision : array or tensor (p, p), or None
        Λ; ``None`` with ``dim`` given means the identity (an uninformed start).
    alpha : float
        Off-diagonal ℓ1 penalty α ≥ 0 of the M-step.
    solver : {"newton", "sklearn"}
        The graphical-lasso solver of the M-step (:func:`invae.model.graphical_lasso.solve_precision`);
        ``"newton"`` starts from this prior's Λ, the previous Λ-step's answer.
    location : array or tensor (p,), or None
        μ (None: 0). The M-step estimates it if ``fit_intercept``, else keeps it fixed.
    coefficients : array or tensor (p, k), or None
        B, the effects of k covariates, which every row then carries (``covariate_dim = k``)
        and the M-step estimates; None: ``covariates`` columns of zeros.
    covariates : int
        k, when ``coefficients`` is None.
    fit_intercept : bool
        Whether the M-step estimates μ.
    ridge : float
        ρ ≥ 0, a ridge on B in Λ's metric, ``−(ρ/2) Σ_j b_jᵀ Λ b_j`` per sample (μ unpenalised;
        :mod:`invae.model.location`): the M-step stays exact, with D + ρJ for D.
    """

    def __init__(self, precision: Tensor | np.ndarray | None = None, *, alpha: float = 0.0,
                 dim: int | None = None, solver: str = "newton", location=None, coefficients=None,
                 covariates: int = 0, fit_intercept: bool = False, ridge: float = 0.0):
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
        if not (ridge >= 0 and math.isfinite(ridge)):
            raise ValueError(f"the ridge on the covariates' effects must be a finite number >= 0, got {ridge}")
        if solver not in SOLVERS:
            raise ValueError(f"unknown graphical-lasso solver {solver!r}; choose one of {', '.join(SOLVERS)}")
        self.dim = precision.shape[0]
        self.register_buffer("precision", 0.5 * (precision + precision.T))
        self.register_buffer("location", _vector(location, self.dim, precision))
        self.register_buffer("coefficients", covariate_effects(coefficients, (self.dim,), covariates, precision))
        self.alpha = float(alpha)
        self.solver = solver
        self.fit_intercept = bool(fit_intercept)
        self.ridge = float(ridge)
        self.covariate_dim = self.coefficients.shape[1]
        chol, info = torch.linalg.cholesky_ex(self.precision)
        self.register_buffer("_chol", chol, persistent=False)  # derived from Λ: not a parameter
        if info.item() != 0:
            raise ValueError("the precision matrix must be symmetric positive-definite")

    def __repr__(self) -> str:
        extra = "".join([", fit_intercept=True" if self.fit_intercept else "",
                         f", covariates={self.covariate_dim}" if self.covariate_dim else "",
                         f", ridge={self.ridge:g}" if self.ridge else ""])
        return f"GaussianGraphicalModel(dim={self.dim}, alpha={self.alpha:g}{extra})"

    @property
    def fits_location(self) -> bool:
        """Whether the M-step estimates a location: μ, or the effects B of covariates."""
        return self.fit_intercept or self.covariate_dim > 0

    def location_of(self, covariates: Tensor | None = None) -> Tensor:
        """E[z_i] = μ + B c_i: (p,) without covariates, (..., n, p) for covariates c (..., n, k)."""
        self._check_covariates(covariates)
        if self.covariate_dim == 0:
            return self.location
        return self.location + covariates.to(self.coefficients) @ self.coefficients.mT

    @property
    def covariance(self) -> Tensor:
        """Λ⁻¹, shape (p, p)."""
        return torch.cholesky_inverse(self._chol)

    def log_prob(self, z: Tensor, covariates: Tensor | None = None) -> Tensor:
        """``½ log det Λ − ½ (z − η)ᵀΛ(z − η) − (p/2) log 2π``, η = μ + B c, for z (..., p); shape (...)."""
        half_logdet = torch.log(torch.diagonal(self._chol)).sum()
        quad = (((z - self.location_of(covariates)) @ self._chol) ** 2).sum(-1)  # rᵀ L Lᵀ r
        return half_logdet - 0.5 * quad - 0.5 * self.dim * math.log(2 * math.pi)

    def expected_log_prob(self, mean: Tensor, cov: Tensor, covariates: Tensor | None = None) -> Tensor:
        """``E[log g(z)] = log g(m) − ½ tr(Λ Σ)`` for z ~ N(m, Σ) (:meth:`Prior.expected_log_prob`)."""
        log_density = self.log_prob(mean, covariates)
        if cov.ndim == mean.ndim:  # the variances of a diagonal Σ
            return log_density - 0.5 * cov @ self.precision.diagonal()
        return log_density - 0.5 * (self.precision * cov).sum((-2, -1))

    def sample(self, n: int, generator: torch.Generator | None = None, covariates: Tensor | None = None) -> Tensor:
        """``z = η + L⁻ᵀ ε`` with Λ = L Lᵀ and ε ~ N(0, I): Cov z = Λ⁻¹. Shape (n, p); covariates (n, k)."""
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.precision.dtype,
                          device=self.precision.device)
        return self.location_of(covariates) + torch.linalg.solve_triangular(self._chol.mT, eps.mT, upper=True).mT

    def statistics(self, z: Tensor, weights: Tensor | None = None, covariates: Tensor | None = None
                   ) -> dict[str, Tensor]:
        """``{"second_moment": S = Σ w z zᵀ / Σ w}`` (p, p) over all draws z (..., n, p), weights
        (..., n); with a fitted location also the cross and design moments of
        :func:`~invae.model.location.location_statistics` (z about a fixed μ otherwise)."""
        z = self._precise(z) - self._fixed_location()
        flat = z.reshape(-1, self.dim)
        if weights is None:
            statistics = {"second_moment": flat.mT @ flat / flat.shape[0]}
        else:
            w = weights.reshape(-1, 1).to(flat)
            statistics = {"second_moment": (w * flat).mT @ flat / w.sum()}
        if self.fits_location:
            statistics |= location_statistics(z, self._design(covariates, z), weights)
        return statistics

    def gaussian_statistics(self, mean: Tensor, cov: Tensor | None = None, *, var: Tensor | None = None,
                            covariates: Tensor | None = None) -> dict[str, Tensor]:
        """``{"second_moment": S = (1/n) Σ_i (m_i m_iᵀ + Σ_i)}`` (docs/methods.md §2.2, §2.5), and
        with a fitted location ``C = (1/n) Σ_i d_i m_iᵀ`` and ``D = (1/n) Σ_i d_i d_iᵀ`` (§3.13)."""
        if (cov is None) == (var is None):
            raise ValueError("give exactly one of cov (p, p) or (n, p, p) and var (n, p)")
        mean = self._precise(mean) - self._fixed_location()
        second = mean.mT @ mean / mean.shape[0]
        if var is not None:
            statistics = {"second_moment": second + torch.diag(var.mean(0))}
        else:
            statistics = {"second_moment": second + (cov if cov.ndim == 2 else cov.mean(0))}
        if self.fits_location:
            statistics |= location_statistics(mean, self._design(covariates, mean))
        return statistics

    def m_step_from(self, statistics: dict[str, Tensor]) -> GaussianGraphicalModel:
        """The least-squares location (with a fitted one), then the graphical lasso on the
        (residual) second moment S (see the class docstring)."""
        statistics = {key: value.detach().to("cpu", torch.float64) for key, value in statistics.items()}
        theta, second = self.location_fit(statistics)
        location = theta[0] if self.fit_intercept else self.location.to(theta)
        coefficients = theta[int(self.fit_intercept):].mT
        start = self.precision.detach().to("cpu", torch.float64).numpy()
        precision = torch.from_numpy(solve_precision(second.numpy(), self.alpha, initial=start, solver=self.solver))
        return self._with(*(t.to(self.precision) for t in (precision, location, coefficients)))

    def location_fit(self, statistics: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(Θ̂ = [μ̂, B̂]ᵀ (q, p), the moment S the graphical lasso sees (p, p)) from statistics:
        the least-squares location and the residual moment (:func:`~invae.model.location.least_squares`),
        or without a fitted location (q = 0) the second moment itself."""
        second = statistics["second_moment"]
        if not self.fits_location:
            return second.new_zeros(0, self.dim), second
        return least_squares(statistics, self.ridge, self.fit_intercept)

    def penalty(self) -> float:
        """``(α/2) ‖Λ‖_{1,off}``."""
        off = self.precision.abs().sum() - self.precision.diagonal().abs().sum()
        return 0.5 * self.alpha * float(off)

    def relative_change(self, previous: GaussianGraphicalModel) -> float:
        """``‖Λ − Λ_prev‖_F / ‖Λ_prev‖_F``, and with a location the larger of that and
        ``‖Θ − Θ_prev‖_F / max(‖Θ‖_F, ‖Θ_prev‖_F)`` for Θ = (μ, B): each block in its own units."""
        change = float(torch.linalg.norm(self.precision - previous.precision) / torch.linalg.norm(previous.precision))
        if not self.fits_location:
            return change
        now, before = self._location_vector(), previous._location_vector()
        scale = torch.maximum(torch.linalg.norm(now), torch.linalg.norm(before))
        return max(change, float(torch.linalg.norm(now - before) / scale) if scale > 0 else 0.0)

    def with_penalty(self, alpha: float) -> GaussianGraphicalModel:
        return GaussianGraphicalModel(self.precision, alpha=alpha, solver=self.solver, location=self.location,
                                      coefficients=self.coefficients, fit_intercept=self.fit_intercept,
                                      ridge=self.ridge)

    def config(self) -> dict:
        config = {"alpha": self.alpha, "solver": self.solver, "fit_intercept": self.fit_intercept}
        return config | ({"ridge": self.ridge} if self.ridge else {})  # model files without a ridge stay as they were

    @classmethod
    def from_state(cls, state: dict[str, Tensor], **config) -> GaussianGraphicalModel:
        """Model files written before priors had a location hold Λ alone: μ = 0, no covariates."""
        return cls(state["precision"], location=state.get("location"), coefficients=state.get("coefficients"),
                   **config)

    def summary(self) -> dict:
        """The penalty α and the number of edges of the graph (non-zero Λ_ij, i < j)."""
        return {"penalty": self.alpha, "edges": count_edges(self.precision)}

    def state(self) -> dict[str, Tensor]:
        """Λ, and μ and B where this prior has them (fitted, or a fixed μ ≠ 0): a zero-mean
        GGM's parameters are Λ alone, as its model files and outputs have always been."""
        state = {"precision": self.precision}
        if self.fit_intercept or bool(self.location.any()):
            state["location"] = self.location
        if self.covariate_dim:
            state["coefficients"] = self.coefficients
        return state

    def with_state(self, state: dict[str, Tensor]) -> GaussianGraphicalModel:
        return self._with(*(state.get(key, getattr(self, key)).to(self.precision)
                            for key in ("precision", "location", "coefficients")))

    def to(self, device=None, dtype=None) -> GaussianGraphicalModel:
        return self._with(*(t.to(device=device, dtype=dtype) for t in (self.precision, self.location,
                                                                         self.coefficients)))

    def _with(self, precision: Tensor, location: Tensor, coefficients: Tensor) -> GaussianGraphicalModel:
        """This prior's settings with other parameters."""
        return GaussianGraphicalModel(precision, alpha=self.alpha, solver=self.solver, location=location,
                                      coefficients=coefficients, fit_intercept=self.fit_intercept, ridge=self.ridge)

    def _precise(self, z: Tensor) -> Tensor:
        """z in float64 where a location is fitted: the residual moment S − Cᵀ D⁻¹ C is a difference
        of moments taken about 0, which float32 would lose to cancellation when |μ| ≫ the spread."""
        return z.double() if self.fits_location else z

    def _fixed_location(self) -> Tensor | float:
        """The μ the M-step keeps (the statistics are taken about it), or 0 where it estimates μ."""
        return 0.0 if self.fit_intercept else self.location.to(dtype=torch.float64 if self.fits_location else None)

    def _design(self, covariates: Tensor | None, like: Tensor) -> Tensor:
        """The design rows (n, q) of the location's least squares for the rows of ``like`` (..., n, p)."""
        self._check_covariates(covariates)
        return design_rows(covariates, like.shape[-2], self.fit_intercept, like)

    def _location_vector(self) -> Tensor:
        """Θ = (μ, B) flattened into one vector."""
        return torch.cat([self.location, self.coefficients.reshape(-1)])


def _vector(values, p: int, like: Tensor) -> Tensor:
    """A location (p,) in ``like``'s dtype and device (None: zeros)."""
    vector = like.new_zeros(p) if values is None else torch.as_tensor(values).to(like)
    if vector.shape != (p,) or not torch.isfinite(vector).all():
        raise ValueError(f"the location must be {p} finite numbers, got shape {tuple(vector.shape)}")
    return vector


def count_edges(precision: Tensor) -> int:
    """The edges of the graphs of precision matrices (..., p, p): non-zero entries above the diagonal."""
    return int(torch.count_nonzero(torch.triu(precision, diagonal=1)))
