"""Efron's log-spline g-model (Efron 2016, "Empirical Bayes deconvolution estimates").

The prior lives on a grid of atoms a_k as a smooth exponential family:

    π_k(α) = exp(Q_k α) / Σ_j exp(Q_j α)         Q (K, df): a cubic B-spline basis on the
                                                 grid, columns standardised (as Efron)
    maximise  ℓ(α) − c0 ‖α‖,   ℓ(α) = Σ_i log Σ_k π_k(α) L_ik

Efron's penalty ``c0 ‖α‖`` (the norm, not its square; made smooth at 0 by
√(‖α‖² + 1e-12)) keeps α bounded when the data cannot pin it down. The gradient is

    ∂ℓ/∂α = Qᵀ (π ∘ D) − n Qᵀ π,   D_k = Σ_i L_ik / f(x_i)

and L-BFGS maximises it over the df coefficients. With a null value ν (an atom), the prior is
Efron's g-model with a spike, ``π₀ δ(ν) + (1 − π₀) π(α)``, π₀ = sigmoid(β) a free, unpenalised
weight (so that the spike's mass does not move with the number of atoms); with the spline
part's fit ``h_i = Σ_k π_k(α) L_ik`` and ``f_i = π₀ L_iν + (1 − π₀) h_i``,

    ∂ℓ/∂α = (1 − π₀) (Qᵀ (π ∘ D) − (πᵀD) Qᵀ π),   ∂ℓ/∂β = π₀ (1 − π₀) (D_ν − πᵀD)

(without the spike, πᵀD = n and the first is the gradient above). The basis is scikit-learn's
``SplineTransformer`` (df = n_knots + 1 splines, the one implied by Σ_k splines = 1 dropped),
imported when a basis is built: the other normal-means methods run without scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_softmax

from .grid import GridPrior, default_grid, scaled_likelihood, with_null_atom

__all__ = ["LogSplineResult", "log_spline", "negative_objective", "prior_masses", "spline_basis"]


@dataclass(frozen=True)
class LogSplineResult:
    """The fitted ``prior``, its coefficients ``alpha`` (df,), or (df + 1,) with the spike's β
    last, ``log_likelihood`` ℓ(α̂), and whether L-BFGS ``converged``."""

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


def negative_objective(params: np.ndarray, basis: np.ndarray, scaled: np.ndarray, penalty: float,
                       null_index: int | None = None) -> tuple[float, np.ndarray]:
    """``−(ℓ − c0 ‖α‖)/n`` and its gradient, with ``scaled`` = L up to a factor per row;
    ``params`` = α (df,), or (α, β) (df + 1,) with a spike at atom ``null_index``."""
    n, df = len(scaled), basis.shape[1]
    alpha, smooth = params[:df], np.exp(log_softmax(basis @ params[:df]))
    share = 1.0 if null_index is None else 1.0 - expit(params[df])  # 1 − π₀
    fitted = share * (scaled @ smooth)
    if null_index is not None:
        fitted += (1.0 - share) * scaled[:, null_index]
    derivatives = scaled.T @ (1.0 / fitted)
    norm = np.sqrt(alpha @ alpha + 1e-12)
    value = np.log(fitted).sum() - penalty * norm
    gradient = share * (basis.T @ (smooth * derivatives) - (smooth @ derivatives) * (basis.T @ smooth))
    gradient -= penalty * alpha / norm
    if null_index is not None:
        gradient = np.append(gradient, share * (1.0 - share) * (derivatives[null_index] - smooth @ derivatives))
    return -value / n, -gradient / n


def prior_masses(params: np.ndarray, basis: np.ndarray, null_index: int | None = None) -> np.ndarray:
    """The masses (K,) of the g-model at ``params`` (see :func:`negative_objective`)."""
    df = basis.shape[1]
    masses = np.exp(log_softmax(basis @ params[:df]))
    if null_index is None:
        return masses
    null_mass = expit(params[df])
    masses *= 1.0 - null_mass
    masses[null_index] += null_mass
    return masses


def log_spline(x, sigma, grid: np.ndarray | None = None, *, df: int = 5, penalty: float = 1.0,
               null: float | None = None) -> LogSplineResult:
    """Efron's g-model fitted to ``x`` (n,) with known noise sds ``sigma`` (n,) or a scalar;
    ``penalty`` is Efron's c0, ``df`` the basis size, ``grid`` the atoms (default 300 over x's
    range); ``null``: the null value ν, made an atom of the grid, that gets a spike of its own."""
    x = np.asarray(x, dtype=np.float64)
    atoms = default_grid(x) if grid is None else np.asarray(grid, dtype=np.float64)
    if null is not None:
        atoms = with_null_atom(atoms, null)
    null_index = None if null is None else int(np.flatnonzero(atoms == null)[0])
    basis = spline_basis(atoms, df)
    scaled, row_max = scaled_likelihood(x, sigma, atoms)
    start = np.zeros(df + (null is not None))
    result = minimize(negative_objective, start, args=(basis, scaled, penalty, null_index), jac=True,
                      method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-9})
    masses = prior_masses(result.x, basis, null_index)
    log_likelihood = float(np.log(scaled @ masses).sum() + row_max.sum())
    return LogSplineResult(GridPrior(atoms, masses), result.x, log_likelihood, bool(result.success))
