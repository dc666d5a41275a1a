"""The Λ-step of the Gaussian graphical model: a (penalised) Gaussian maximum likelihood.

Given a second-moment matrix ``S`` (p, p), solve (docs/methods.md §2.4, per-sample scale)

    Λ̂ = argmax_{Λ ≻ 0}  log det Λ − tr(Λ S) − α ‖Λ‖_{1,off}

:func:`solve_precision` offers three solvers:

- ``α = 0``: the closed form ``Λ̂ = S⁻¹``, whatever the solver named.
- ``"newton"`` (default): orthant-wise Newton with conjugate gradients on the free set
  (Oztoprak, Nocedal, Rennie & Olsen, "Newton-like methods for sparse inverse covariance
  estimation", NIPS 2012; the free set is QUIC's, Hsieh et al., JMLR 2014). It starts
  from the previous Λ̂ when that beats the starts ``diag(1/S_ii)`` and ``(S + αI)⁻¹``.
  Should it end without meeting the optimality conditions (an ill-conditioned S, where
  its CG directions degrade), ADMM (Boyd et al., "Distributed optimization and statistical
  learning via the alternating direction method of multipliers", 2011, §6.5) continues
  from its iterate: first order, but each step is an exact eigen-decomposition, so it
  converges for any S with a positive diagonal.
- ``"sklearn"``: scikit-learn's coordinate descent from scratch, the reference; also the
  fallback should ADMM fail too.

Why a hand-written Newton method: the estimators solve this problem once per outer
iteration, hundreds of times, for an S that drifts little. A warm start pays there, and
Newton's quadratic convergence turns a good start into one or two steps. scikit-learn's
public solver takes no warm start (``cov_init`` went in 1.5) and its duality-gap test
stalls at p ≥ 200; QUIC's Python wrapper (skggm 0.2.8) is a source distribution that
needs Cython and a C++ build; gglasso's ADMM warm-starts but is first order. Its time
against scikit-learn's, and the objectives both reach, are measured side by side by
benchmarks/bench_lambda_step.py (docs/benchmarks.md, "The Λ-step solver").
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse
from sklearn.covariance import graphical_lasso as _sklearn_graphical_lasso
from sklearn.exceptions import ConvergenceWarning

__all__ = ["solve_precision", "glasso_objective", "optimality_violation", "hessian_product", "SOLVERS"]

SOLVERS = ("newton", "sklearn")

# Every solver stops once the relative KKT residual (optimality_violation(relative=True)) is
# at most _KKT_TOL: then the objective sits within ~1e-12 (relative) of its maximum.
_KKT_TOL = 1e-6
# Ridges tried, relative to mean(diag S), when a solver meets an ill-conditioned S.
_RIDGES = (0.0, 1e-8, 1e-6, 1e-4)

# scikit-learn: its default enet_tol=1e-4 stalls at max_iter with the same answer, and so
# does a tol below enet_tol: keep both equal (docs/benchmarks.md, "scikit-learn's stopping
# rule"). Even so its duality-gap test can stall once rounding dominates the gap, so stop
# after _FIRST_SWEEPS if the KKT residual is small enough, else run to _MAX_SWEEPS.
_SKLEARN_TOL = 1e-8
_FIRST_SWEEPS = 16
_MAX_SWEEPS = 200

# Newton: the Armijo constant, the smallest line-search step, the relative decrease of f
# below which a step counts as no progress (rounding), the caps on Newton and CG steps,
# and how many capped CG solves in a row end Newton (its directions have degraded).
_ARMIJO = 1e-4
_SMALLEST_STEP = 1e-10
_NO_PROGRESS = 1e-14
_MAX_NEWTON = 100
_MAX_CG = 200
_CG_FAILURES = 2  # capped CG solves in a row that Newton tolerates (it gives up on the next)
_SPARSE_BELOW = 60  # sparse Hessian products where |F| < p²/60 (docs/benchmarks.md, "Dense Hessian products")

# ADMM: the step count cap, how often the KKT residual is checked (it costs an inverse),
# the primal/dual residual ratio that rebalances ρ (Boyd et al. 2011, §3.4.1) and the
# over-relaxation (§3.4.3); 3 and 1.6 took 0.4–0.7 × the steps of 10 and 1 on the
# near-singular S of the 114-taxa oaks data.
_MAX_ADMM = 5000
_ADMM_CHECK = 10
_ADMM_BALANCE = 3.0
_ADMM_RELAX = 1.6
_ADMM_ADAPTIVE = 1000  # ρ is fixed after these steps: ADMM's convergence needs it fixed eventually


def glasso_objective(precision: np.ndarray, second_moment: np.ndarray, alpha: float) -> float:
    """``log det Λ − tr(Λ S) − α ‖Λ‖_{1,off}`` for Λ, S of shape (p, p); −inf if Λ is not PD."""
    try:  # a Cholesky factor exists iff Λ is PD (a positive determinant does not say so)
        chol = np.linalg.cholesky(precision)
    except np.linalg.LinAlgError:
        return -np.inf
    logdet = 2 * np.log(np.diag(chol)).sum()
    off = np.abs(precision).sum() - np.abs(np.diag(precision)).sum()
    return float(logdet - np.sum(precision * second_moment) - alpha * off)


def optimality_violation(precision: np.ndarray, second_moment: np.ndarray, alpha: float, *,
                         relative: bool = False) -> float:
    """How far Λ (p, p) is from satisfying the graphical lasso's optimality (KKT) conditions.

    With ``W = Λ⁻¹`` the objective's gradient is ``G = W − S``; Λ is optimal iff
    ``G_ii = 0``, ``G_ij = α sign(Λ_ij)`` where ``Λ_ij ≠ 0`` and ``|G_ij| ≤ α`` where
    ``Λ_ij = 0`` (i ≠ j). Returns the largest violation of these, in the units of S; with
    ``relative=True`` each entry's violation is divided by ``√(S_ii S_jj)``, the scale of
    ``G_ij`` (invariant to rescaling the coordinates).
    """
    descent = second_moment - np.linalg.inv(precision)
    violation = np.abs(_minimum_norm_subgradient(precision, descent, alpha))
    return _relative(violation, second_moment) if relative else float(violation.max())


def solve_precision(second_moment: np.ndarray, alpha: float, *, initial: np.ndarray | None = None,
                    solver: str = "newton") -> np.ndarray:
    """Maximiser Λ̂ (p, p) of :func:`glasso_objective` for a symmetric PSD ``S`` (p, p).

    Parameters
    ----------
    second_moment : (p, p) array
        S; symmetrised first.
    alpha : float
        The off-diagonal penalty α ≥ 0; ``0`` gives the closed form ``S⁻¹``.
    initial : (p, p) array, optional
        A start for ``"newton"`` (typically the previous Λ̂); used only where its objective
        beats the starts ``diag(1/S_ii)`` and ``(S + αI)⁻¹``.
    solver : {"newton", "sklearn"}
        See the module docstring. Both stop at a relative KKT residual
        (:func:`optimality_violation` with ``relative=True``) of 1e-6.

    An ill-conditioned S (scikit-learn raises ``FloatingPointError``; Newton's steps stall),
    or one with a zero on its diagonal (a coordinate without signal, whose Λ̂_jj is
    unbounded), is retried with a small ridge on S, at most 1e-4 of its mean diagonal,
    which moves the answer by as much. Where even that fails, the answer is ADMM's last
    iterate on S: not the maximiser, but better than ``initial`` (Newton starts from the
    best start and only descends; ADMM keeps the better of its start and its last iterate),
    so that an M-step built on it is still an ascent step (a generalised M-step, Dempster,
    Laird & Rubin 1977), with a ``ConvergenceWarning``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown graphical-lasso solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    s = 0.5 * (second_moment + second_moment.T)
    scale = float(np.mean(np.diag(s)))
    last_error: Exception | None = None
    best = None  # ADMM's answer on S itself (its last iterate, or Newton's): the one of last resort
    for ridge in _RIDGES:
        s_r = s + ridge * scale * np.eye(len(s)) if ridge else s
        if not np.all(np.diag(s_r) > 0):
            continue
        try:
            if alpha == 0.0:
                return _cholesky_inverse(s_r)
            if solver == "newton":
                precision, converged = _newton(s_r, alpha, initial, _KKT_TOL)
                if not converged:
                    precision, converged = _admm(s_r, alpha, precision, _KKT_TOL)
                if converged:
                    return precision
                best = precision if best is None else best
            precision = _sklearn(s_r, alpha, _KKT_TOL)
            if solver == "sklearn" or _is_optimal(precision, s_r, alpha, _KKT_TOL):
                return precision
        except (FloatingPointError, np.linalg.LinAlgError) as error:
            last_error = error
    if best is not None:
        warnings.warn(f"the graphical lasso did not converge (α = {alpha:g}, S near singular: {last_error}); Λ̂ is "
                      "the best iterate reached, an ascent step", ConvergenceWarning, stacklevel=3)
        return best
    reason = last_error or "S has a diagonal entry <= 0"
    raise FloatingPointError(f"the Λ-step failed even with a ridge of {_RIDGES[-1]:g}·mean(diag S) on S: {reason}")


def _minimum_norm_subgradient(precision: np.ndarray, gradient: np.ndarray, alpha: float) -> np.ndarray:
    """The minimum-norm subgradient of ``−objective`` at Λ, given its smooth part ``S − Λ⁻¹``.

    Diagonal and nonzero entries: ``gradient + α sign(Λ_ij)`` (off the diagonal); zero
    entries: the gradient soft-thresholded at α. It is zero exactly at the optimum.
    """
    off = ~np.eye(len(precision), dtype=bool)
    active, inactive = off & (precision != 0), off & (precision == 0)
    out = gradient.copy()
    out[active] += alpha * np.sign(precision[active])
    out[inactive] = np.sign(gradient[inactive]) * np.maximum(np.abs(gradient[inactive]) - alpha, 0.0)
    return out


def _relative(violation: np.ndarray, s: np.ndarray) -> float:
    """``max_ij violation_ij / √(S_ii S_jj)``."""
    root = np.sqrt(np.diag(s))
    return float((violation / np.outer(root, root)).max())


def _newton(s: np.ndarray, alpha: float, initial: np.ndarray | None, kkt_tol: float) -> tuple[np.ndarray, bool]:
    """Orthant-wise Newton-CG for ``min_Λ f(Λ) = −log det Λ + tr(ΛS) + α‖Λ‖_{1,off}``.

    Each step: ``W = Λ⁻¹``, smooth gradient ``G = S − W``. The free set F holds the upper
    triangle's diagonal, its nonzero entries, and the zero entries with ``|G_ij| > α``;
    the orthant ξ fixes each free entry's sign (its own, or ``−sign G_ij`` for a zero).
    On F, preconditioned CG solves the Newton system ``P_F(W D W) = −(G + α ξ)`` for a
    symmetric D supported on F, to relative accuracy 0.1 (measured: the looser
    ``min(½, √‖g‖)`` took gradient-like steps and hundreds of iterations on
    ill-conditioned S). A backtracking (Armijo) line search projects entries that leave
    their orthant to zero and rejects points that are not positive definite. Returns
    (the last iterate, whether it met the optimality conditions); it stops early when it
    stops making progress, or when CG keeps hitting its cap (W too ill-conditioned).
    """
    p = len(s)
    starts = [np.diag(1.0 / np.diag(s)), _cholesky_inverse(s + alpha * np.eye(p))]
    if initial is not None:
        starts.append(0.5 * (initial + initial.T))
    values = [-glasso_objective(start, s, alpha) for start in starts]
    theta, value = starts[int(np.argmin(values))], min(values)
    upper, unsolved = np.triu_indices(p), 0
    for _ in range(_MAX_NEWTON):
        w = np.linalg.inv(theta)
        w = 0.5 * (w + w.T)
        gradient = s - w
        subgradient = _minimum_norm_subgradient(theta, gradient, alpha)
        if _relative(np.abs(subgradient), s) <= kkt_tol:
            return theta, True
        free = ((theta != 0) | (subgradient != 0))[upper]
        rows, cols = upper[0][free], upper[1][free]
        x = theta[rows, cols]
        off = rows != cols
        orthant = np.where(off, np.where(x != 0, np.sign(x), -np.sign(gradient[rows, cols])), 0.0)
        g = gradient[rows, cols] + alpha * orthant
        direction, solved = _newton_direction(w, g, rows, cols)
        unsolved = 0 if solved else unsolved + 1
        if unsolved > _CG_FAILURES:  # the Hessian is too ill-conditioned for CG: leave it to ADMM
            return theta, False
        slope = _weights(rows, cols) @ (g * direction)  # the directional derivative, < 0
        step = 1.0
        while step > _SMALLEST_STEP:
            trial = x + step * direction
            trial[off & (np.sign(trial) != orthant)] = 0.0
            candidate = theta.copy()
            candidate[rows, cols] = trial
            candidate[cols, rows] = trial
            new_value = -glasso_objective(candidate, s, alpha)
            if new_value <= value + _ARMIJO * step * slope:
                break
            step *= 0.5
        if not value - new_value > _NO_PROGRESS * abs(value):  # no step found, or rounding only
            return theta, False
        theta, value = candidate, new_value
    return theta, False


def _admm(s: np.ndarray, alpha: float, start: np.ndarray, kkt_tol: float) -> tuple[np.ndarray, bool]:
    """ADMM for the graphical lasso (Boyd et al. 2011, §6.5), from ``start`` (p, p).

    Splitting Λ = Z: the Λ-update maximises ``log det Λ − tr(ΛS) − (ρ/2)‖Λ − Z + U‖²`` in
    closed form, ``Λ = V diag((e + √(e² + 4ρ)) / 2ρ) Vᵀ`` for ``ρ(Z − U) − S = V diag(e) Vᵀ``;
    the Z-update soft-thresholds ``Λ + U`` off the diagonal at α/ρ (Λ over-relaxed), so Z is
    exactly sparse; ρ is rebalanced on the residuals. Returns (Z, whether it met the optimality conditions),
    or ``start`` where ADMM ended below it.
    """
    off = ~np.eye(len(s), dtype=bool)
    z, dual, rho = start.copy(), np.zeros_like(s), 1.0
    for step in range(1, _MAX_ADMM + 1):
        eigenvalues, vectors = np.linalg.eigh(rho * (z - dual) - s)
        precision = (vectors * ((eigenvalues + np.sqrt(eigenvalues**2 + 4 * rho)) / (2 * rho))) @ vectors.T
        precision = 0.5 * (precision + precision.T)  # rounding would let Z_ij and Z_ji part
        relaxed = _ADMM_RELAX * precision + (1 - _ADMM_RELAX) * z
        previous, z = z, relaxed + dual
        z[off] = np.sign(z[off]) * np.maximum(np.abs(z[off]) - alpha / rho, 0.0)
        dual += relaxed - z
        if step % _ADMM_CHECK == 0 and _is_optimal(z, s, alpha, kkt_tol):
            return z, True
        primal, dual_residual = np.linalg.norm(precision - z), rho * np.linalg.norm(z - previous)
        if step <= _ADMM_ADAPTIVE and max(primal, dual_residual) > _ADMM_BALANCE * min(primal, dual_residual):
            factor = 2.0 if primal > dual_residual else 0.5
            rho, dual = rho * factor, dual / factor  # U is the dual scaled by 1/ρ
    better = glasso_objective(z, s, alpha) > glasso_objective(start, s, alpha)
    return (z if better else start), False


def _is_optimal(precision: np.ndarray, s: np.ndarray, alpha: float, kkt_tol: float) -> bool:
    """Whether Λ (p, p) is positive definite and meets the relative KKT tolerance."""
    if not np.isfinite(glasso_objective(precision, s, alpha)):
        return False
    return optimality_violation(precision, s, alpha, relative=True) <= kkt_tol


def _newton_direction(w: np.ndarray, g: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, bool]:
    """Preconditioned CG for ``P_F(W D W) = −g`` over symmetric D on F = (rows, cols), i ≤ j;
    returns (D's values, whether CG met its tolerance within _MAX_CG steps).

    Vectors hold the upper-triangle values; the inner product weights an off-diagonal entry
    by 2 (it stands for two entries of D), so the operator is self-adjoint. The Jacobi
    preconditioner is the Hessian's diagonal, ``W_ii W_jj + W_ij²`` (``W_ii²`` on the diagonal).
    """
    weights = _weights(rows, cols)
    preconditioner = np.where(rows != cols, w[rows, rows] * w[cols, cols] + w[rows, cols] ** 2,
                              w[rows, rows] ** 2)
    target = np.sqrt(weights @ (g * g))
    tolerance = 0.1 * target
    d = np.zeros_like(g)
    residual = -g
    z = residual / preconditioner
    search = z.copy()
    rz = weights @ (residual * z)
    for _ in range(_MAX_CG):
        product = hessian_product(w, search, rows, cols)
        step = rz / (weights @ (search * product))
        d += step * search
        residual -= step * product
        if np.sqrt(weights @ (residual * residual)) <= tolerance:
            return d, True
        z = residual / preconditioner
        rz, previous = weights @ (residual * z), rz
        search = z + (rz / previous) * search
    return d, False


def hessian_product(w: np.ndarray, values: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    sparse: bool | None = None) -> np.ndarray:
    """``(W D W)_ij`` on F = (rows, cols), i ≤ j, for W (p, p) symmetric and the symmetric D
    supported on F with ``D_ij = D_ji = values`` (|F|,); returns (|F|,).

    Dense: D as a (p, p) array, two matrix products, O(p³). Sparse: D in CSR, ``D W`` in
    O(|F| p), then ``(W D W)_ij = Σ_l (D W)_li W_lj``, one dot product of length p per entry
    of F, O(|F| p). ``sparse=None`` takes the sparse one where |F| < p²/``_SPARSE_BELOW``
    (docs/benchmarks.md, "Dense Hessian products").
    """
    if sparse is None:
        sparse = _SPARSE_BELOW * len(values) < w.shape[0] ** 2
    if not sparse:
        d = np.zeros_like(w)
        d[rows, cols] = values
        d[cols, rows] = values
        return (w @ d @ w)[rows, cols]
    off = rows != cols
    d = scipy.sparse.csr_array((np.concatenate([values, values[off]]),
                                (np.concatenate([rows, cols[off]]), np.concatenate([cols, rows[off]]))), shape=w.shape)
    dw = d @ w
    return np.einsum("fl,fl->f", dw.T[rows], w[cols])


def _weights(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.where(rows != cols, 2.0, 1.0)


def _sklearn(s: np.ndarray, alpha: float, kkt_tol: float) -> np.ndarray:
    """scikit-learn's coordinate descent, first capped at _FIRST_SWEEPS sweeps (see above)."""
    for max_iter in (_FIRST_SWEEPS, _MAX_SWEEPS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            _, precision = _sklearn_graphical_lasso(s, alpha, mode="cd", tol=_SKLEARN_TOL,
                                                    enet_tol=_SKLEARN_TOL, max_iter=max_iter)
        precision = 0.5 * (precision + precision.T)
        if optimality_violation(precision, s, alpha, relative=True) <= kkt_tol:
            break
    return precision


def _cholesky_inverse(s: np.ndarray) -> np.ndarray:
    chol = np.linalg.cholesky(s)
    inv_chol = np.linalg.solve(chol, np.eye(len(s)))
    return inv_chol.T @ inv_chol
