"""The Kiefer–Wolfowitz nonparametric maximum-likelihood prior (NPMLE) on a grid.

    maximise  ℓ(π) = Σ_i log Σ_k π_k L_ik   over the simplex π_k ≥ 0, Σ_k π_k = 1

(:mod:`invae.normal_means.grid` for L). The problem is convex. Optimality (Lindsay 1983):
with the directional derivatives ``D_k(π) = Σ_i L_ik / f_π(x_i)``, π is the NPMLE iff
``D_k ≤ n`` for every atom, with equality on the support; and for any π on the simplex

    ℓ(π̂) − ℓ(π) ≤ n log(max_k D_k(π) / n)

so ``max_k D_k / n − 1 ≤ tol`` certifies a log-likelihood within ``n · tol`` of the optimum.
Both solvers stop on that certificate.

- ``"sqp"`` (default): sequential quadratic programming in the manner of mixSQP (Kim,
  Carbonetto, Stephens & Anitescu 2020, the solver of R's ashr): each step minimises the
  second-order model of the log-likelihood over the simplex (:func:`_newton_target`),
  then backtracks along the segment to it (Armijo); where the model is numerically poor
  and gives no ascent, it takes the EM step instead. It starts on 40 atoms spread over
  the grid, and only the support and the (at most 40) atoms with the largest D_k > n
  enter a step's model: a step costs O(n · 80²) flops, not O(n K²).
  Written here because no maintained Python package solves this problem (mixsqp and
  REBayes are R; cvxpy would solve it through a generic conic solver, much slower).
- ``"em"``: the classic fixed point ``π_k ← π_k D_k / n`` (Laird 1978), monotone but slow
  to converge; kept as the reference the benchmark measures the solver against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from .grid import GridPrior, default_grid, scaled_likelihood

__all__ = ["NPMLEResult", "npmle", "directional_derivatives"]

_SOLVERS = ("sqp", "em")
_NEW_ATOMS = 40  # the SQP starts on this many atoms and adds at most this many per step
_MAX_STEP = 0.99  # the longest step along the segment to the model's minimiser


@dataclass(frozen=True)
class NPMLEResult:
    """The NPMLE ``prior``, its ``log_likelihood`` ℓ(π̂), and how the solver ended:
    ``gap`` = max_k D_k/n − 1 (the optimality certificate), ``n_iter``, ``converged``."""

    prior: GridPrior
    log_likelihood: float
    gap: float
    n_iter: int
    converged: bool


def npmle(x, sigma, grid: np.ndarray | None = None, *, solver: str = "sqp", tol: float = 1e-6,
          max_iter: int | None = None) -> NPMLEResult:
    """The NPMLE of the prior of z from ``x`` (n,) with known noise sds ``sigma`` (n,) or a scalar.

    ``grid``: the candidate atoms (K,), by default :func:`~invae.normal_means.grid.default_grid`
    (300 atoms over the range of x). ``tol``: stop when max_k D_k/n − 1 ≤ tol (ℓ within n·tol
    of its maximum); ``max_iter``: 200 SQP steps or 100 000 EM steps by default.
    """
    if solver not in _SOLVERS:
        raise ValueError(f"unknown NPMLE solver {solver!r}; choose one of {', '.join(_SOLVERS)}")
    x = np.asarray(x, dtype=np.float64)
    atoms = default_grid(x) if grid is None else np.asarray(grid, dtype=np.float64)
    scaled, row_max = scaled_likelihood(x, sigma, atoms)
    if solver == "sqp":
        masses, n_iter = _sqp(scaled, tol, max_iter or 200)
    else:
        masses, n_iter = _em(scaled, tol, max_iter or 100_000)
    masses = masses / masses.sum()
    gap = float(_derivatives(scaled, masses).max() / len(x) - 1)
    log_likelihood = float(np.log(scaled @ masses).sum() + row_max.sum())
    return NPMLEResult(GridPrior(atoms, masses), log_likelihood, gap, n_iter, gap <= tol)


def directional_derivatives(x, sigma, prior: GridPrior) -> np.ndarray:
    """``D_k = Σ_i L_ik / f_π(x_i)`` for every atom of ``prior``, shape (K,); ≤ n at the NPMLE."""
    return _derivatives(scaled_likelihood(x, sigma, prior.atoms)[0], prior.masses)


def _derivatives(scaled: np.ndarray, masses: np.ndarray) -> np.ndarray:
    return scaled.T @ (1.0 / (scaled @ masses))


def _em(scaled: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, int]:
    n, k = scaled.shape
    masses = np.full(k, 1.0 / k)
    for iteration in range(1, max_iter + 1):
        derivatives = _derivatives(scaled, masses)
        if derivatives.max() / n - 1 <= tol:
            return masses, iteration - 1
        masses = masses * derivatives / n
    return masses, max_iter


def _sqp(scaled: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, int]:
    n, k = scaled.shape
    masses = _sparse_start(scaled)
    fitted = scaled @ masses
    value = np.log(fitted).mean()
    for iteration in range(1, max_iter + 1):
        derivatives = scaled.T @ (1.0 / fitted) / n  # D_k / n: the one pass over all atoms per step
        if derivatives.max() - 1.0 <= tol:
            return masses, iteration - 1
        violators = np.flatnonzero((masses == 0) & (derivatives > 1))
        violators = violators[np.argsort(derivatives[violators])[::-1][:_NEW_ATOMS]]
        work = np.union1d(np.flatnonzero(masses > 0), violators)
        direction = -masses[work]
        direction += _newton_target(scaled[:, work] / fitted[:, None])
        slope = float(derivatives[work] @ direction)  # d/dt of the mean log-likelihood along the step
        if not slope > 0:  # a numerically poor model: take the EM step, always uphill
            direction = masses[work] * (derivatives[work] - 1.0)
            slope = float(derivatives[work] @ direction)
        # Both steps keep π on the simplex for t ≤ 1 (a convex combination; π ∘ D/n), and
        # f is linear in t: the line search needs no pass over the atoms. Since the target
        # fit is ≥ 0, a step t leaves every f_i ≥ (1 − t) f_i: t ≤ 0.99 never cuts an
        # observation's fit by more than 100× at once (a full step can leave outlying rows
        # with f_i ≈ 1e-20, their weights 1/f_i then wreck the next quadratic model).
        change = scaled[:, work] @ direction
        step = _MAX_STEP
        while True:
            with np.errstate(divide="ignore", invalid="ignore"):
                trial_value = np.log(fitted + step * change).mean()
            if trial_value >= value + 0.01 * step * slope:
                break
            step *= 0.5
            if step < 1e-12:
                return masses, iteration
        masses[work] = np.clip(masses[work] + step * direction, 0.0, None)
        fitted, value = fitted + step * change, trial_value
    return masses, max_iter


def _sparse_start(scaled: np.ndarray) -> np.ndarray:
    """Equal masses on about ``_NEW_ATOMS`` atoms spread over the grid (every k-th), or on
    all atoms where those leave an observation with no likelihood at all (σ_i far below
    their spacing)."""
    n, k = scaled.shape
    masses = np.zeros(k)
    masses[:: max(1, k // _NEW_ATOMS)] = 1.0
    if np.any(scaled @ masses <= 1e-200):
        masses[:] = 1.0
    return masses / masses.sum()


def _newton_target(weighted: np.ndarray) -> np.ndarray:
    """The minimiser over the simplex of the quadratic model of −mean log-likelihood.

    With ``B = diag(1/f) L`` (n, K) at the current fit f, ``log (Ly)_i`` to second order is
    ``const − ½ ((By)_i − 2)²``: the model is ``‖By − 2·1‖² = yᵀHy − 2gᵀy + 4n``,
    ``H = BᵀB``, ``g = 2Bᵀ1``. With ``H = VΛVᵀ`` it is ``‖Λ^½Vᵀy − Λ^-½Vᵀg‖²`` up to a
    constant, a K-row least-squares problem. Atoms a grid step apart make H nearly singular;
    directions with λ below 1e-12 λ_max are dropped (the model is flat along them; g's part
    there is at most 2√(λn), so nothing blows up). A heavy row ``M (1ᵀy − 1)`` holds y on
    the simplex; NNLS (``scipy.optimize.nnls``) solves it. (A QR factor of B gives the same
    step at a higher cost: docs/benchmarks.md, "The NPMLE's least-squares step".)
    """
    k = weighted.shape[1]
    values, vectors = np.linalg.eigh(weighted.T @ weighted)
    keep = values > 1e-12 * values[-1]
    root, basis = np.sqrt(values[keep]), vectors[:, keep]
    heavy = 1e3 * np.sqrt(len(weighted))
    matrix = np.vstack([root[:, None] * basis.T, np.full((1, k), heavy)])
    rhs = np.append(basis.T @ (2.0 * weighted.sum(axis=0)) / root, heavy)
    solution, _ = nnls(matrix, rhs, maxiter=50 * k)
    total = solution.sum()
    return solution / total if total > 0 else np.full(k, 1.0 / k)
