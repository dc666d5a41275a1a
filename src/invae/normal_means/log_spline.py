"""Efron's log-spline g-model (Efron 2016, "Empirical Bayes deconvolution estimates").

The prior lives on a grid of atoms a_k as a smooth exponential family:

    π_k(α) = exp(Q_k α) / Σ_j exp(Q_j α)         Q (K, df): a cubic B-spline basis on the
                                                 grid, columns standardised (as Efron)
    maximise  ℓ(α) − c0 ‖α‖,   ℓ(α) = Σ_i log Σ_k π_k(α) L_ik

Efron's penalty ``c0 ‖α‖`` (the norm, not its square; made smooth at 0 by
√(‖α‖² + 1e-12)) keeps α bounded when the data cannot pin it down. The gradient is

    ∂ℓ/∂α = Qᵀ (π ∘ D) − n Qᵀ π,   D_k = Σ_i L_ik / f(x_i)

and L-BFGS maximises it over the df coefficients. The basis is scikit-learn's
``SplineTransformer`` (df = n_knots + 1 splines, the one implied by Σ_k splines = 1 dropped),
imported when a basis is built: the other normal-means methods run without scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from .grid import GridPrior, default_grid, scaled_likelihood

__all__ = ["LogSplineResult", "log_spline", "spline_basis"]


@dataclass(frozen=True)
class LogSplineResult:
    """The fitted ``prior``, its coefficients ``alpha`` (df,), ``log_likelihood`` ℓ(α̂), and
    whether L-BFGS ``converged``."""

    prior: GridPrior
    alpha: np.ndarray
    log_likelihood: float
    converged: bool


def spline_basis(atoms: np.ndarray, df: int) -> np.ndarray:
    """Q (K, df): cubic B-splines with df − 1 equally spaced knots over the atoms,
    each column centred and scaled to unit sd."""
    from sklearn.preprocessing import SplineTransformer

    if df < 2:
        raise ValueError(f"the log-spline model needs df >= 2, got {df!r}")
    basis = SplineTransformer(n_knots=df - 1, degree=3, include_bias=False).fit_transform(atoms[:, None])
    basis = basis - basis.mean(axis=0)
    return basis / basis.std(axis=0)


def negative_objective(alpha: np.ndarray, basis: np.ndarray, scaled: np.ndarray,
                       penalty: float) -> tuple[float, np.ndarray]:
    """``−(ℓ(α) − c0 ‖α‖)/n`` and its gradient (df,), with ``scaled`` = L up to a factor per row."""
    n = len(scaled)
    masses = np.exp(log_softmax(basis @ alpha))
    fitted = scaled @ masses
    derivatives = scaled.T @ (1.0 / fitted)
    norm = np.sqrt(alpha @ alpha + 1e-12)
    value = np.log(fitted).sum() - penalty * norm
    gradient = basis.T @ (masses * derivatives) - n * basis.T @ masses - penalty * alpha / norm
    return -value / n, -gradient / n


def log_spline(x, sigma, grid: np.ndarray | None = None, *, df: int = 5, penalty: float = 1.0) -> LogSplineResult:
    """Efron's g-model fitted to ``x`` (n,) with known noise sds ``sigma`` (n,) or a scalar;
    ``penalty`` is Efron's c0, ``df`` the basis size, ``grid`` the atoms (default 300 over x's range)."""
    x = np.asarray(x, dtype=np.float64)
    atoms = default_grid(x) if grid is None else np.asarray(grid, dtype=np.float64)
    basis = spline_basis(atoms, df)
    scaled, row_max = scaled_likelihood(x, sigma, atoms)
    result = minimize(negative_objective, np.zeros(basis.shape[1]), args=(basis, scaled, penalty), jac=True,
                      method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-9})
    masses = np.exp(log_softmax(basis @ result.x))
    log_likelihood = float(np.log(scaled @ masses).sum() + row_max.sum())
    return LogSplineResult(GridPrior(atoms, masses), result.x, log_likelihood, bool(result.success))
