"""The prior's location given known covariates, ``E[z_i] = μ + B c_i``, and its exact M-step
(docs/methods.md §3.13).

With design rows ``d_i = (1, c_i)`` (q = 1 + k; without a fitted intercept d_i = c_i, and z
is taken about the fixed μ) and ``Θ = [μ, B]ᵀ`` (q, p), the expected complete-data
log-density of ``z_i ~ N(Θᵀ d_i, Λ⁻¹)`` depends on the draws through three averages:

    S = avg E[z zᵀ] (p, p),    C = avg d E[z]ᵀ (q, p),    D = avg d dᵀ (q, q),

and ``avg E[(z − Θᵀd)(z − Θᵀd)ᵀ] = S − ΘᵀC − CᵀΘ + ΘᵀDΘ = R + (Θ − Θ̂)ᵀ D (Θ − Θ̂)`` with
``Θ̂ = D⁻¹ C`` and ``R = S − Cᵀ D⁻¹ C``. The second term is positive semi-definite, so Θ̂
maximises ``−tr(Λ ·)`` for every Λ ≻ 0 at once: the M-step is the least-squares fit of the
posterior means on the design, then the graphical lasso on the residual moment R (for a
Gaussian q, ``E[z_i] = m_i``, so Θ̂ is ordinary least squares of the m_i on the d_i).

A ridge on the covariates' effects in Λ's metric, ``−(ρ/2) Σ_j b_jᵀ Λ b_j`` for the columns
b_j of B (the intercept unpenalised), adds ``ρ ΘᵀJΘ`` to the bracket above (J = diag(0, 1,
…, 1), or I without an intercept), so D becomes ``D + ρJ`` throughout: ``Θ̂ = (D + ρJ)⁻¹ C``,
``R = S − Cᵀ (D + ρJ)⁻¹ C`` — still the exact maximiser for every Λ at once.

A Gaussian mixture's component k, ``z_i | ℓ_i = k ~ N(Θ_kᵀ d_i, Λ_k⁻¹)`` with ℓ_i the component
of row i (:mod:`invae.model.mixture`), takes the same fit with row i weighted by its
responsibility r_ik: the averages ``S_k, C_k, D_k`` of :func:`component_location_statistics`
and, per component, ``Θ̂_k = D_k⁻¹ C_k`` (:func:`least_squares` on a stack of K).

Covariates collinear on the rows at hand (a level absent from a stability half or from a
mixture component's rows, two covariates that agree there) make D singular: Θ is then not
identified, but the fitted locations Θᵀd_i are. :func:`least_squares` adds ε = 10⁻¹⁰ × D's
mean diagonal to the covariates' entries, which leaves the locations unique (D's null
directions get coefficient 0, as the minimum-norm least squares) instead of stopping the fit.
Data whose covariates are collinear on all rows are refused where they enter (the CLI).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["covariate_effects", "design_rows", "location_statistics", "component_location_statistics",
           "least_squares"]

_COLLINEAR_RIDGE = 1e-10  # ε of the module docstring, relative to D's mean diagonal


def covariate_effects(values, rows: tuple[int, ...], k: int, like: Tensor) -> Tensor:
    """Covariate effects B (*rows, k) in ``like``'s dtype and device (None: zeros): (p, k) for a
    graphical prior, (K, p, k) for a mixture's components."""
    effects = like.new_zeros(*rows, k) if values is None else torch.as_tensor(values).to(like)
    if effects.shape[:-1] != rows or effects.ndim != len(rows) + 1 or not torch.isfinite(effects).all():
        expected = ", ".join(map(str, rows))
        raise ValueError(f"the covariate effects must be a finite ({expected}, k) array, "
                         f"got shape {tuple(effects.shape)}")
    return effects


def design_rows(covariates: Tensor | None, n: int, intercept: bool, like: Tensor) -> Tensor:
    """The design (n, q): a column of ones if ``intercept``, then the covariates (n, k), in ``like``'s
    dtype and device; (n, 0) without either."""
    parts = [like.new_ones(n, 1)] if intercept else []
    if covariates is not None:
        parts.append(covariates.to(like))
    return torch.cat(parts, dim=1) if parts else like.new_zeros(n, 0)


def location_statistics(z: Tensor, design: Tensor, weights: Tensor | None = None) -> dict[str, Tensor]:
    """``{"cross_moment": C (q, p), "design_moment": D (q, q)}`` for draws z (..., n, p) of the
    rows with design (n, q) and weights (..., n) (None: all equal), averaged like the second
    moment ``Σ w z zᵀ / Σ w``."""
    draws = z.reshape(-1, *z.shape[-2:])  # (S, n, p)
    w = (torch.ones(draws.shape[:-1], dtype=z.dtype, device=z.device) if weights is None
         else weights.reshape(draws.shape[:-1]).to(z))
    row_weights = w.sum(0)  # (n,)
    total = row_weights.sum()
    weighted_mean = torch.einsum("sn,snp->np", w, draws)
    return {"cross_moment": design.mT @ weighted_mean / total,
            "design_moment": (design * row_weights[:, None]).mT @ design / total}


def component_location_statistics(design: Tensor, resp: Tensor, mean: Tensor) -> dict[str, Tensor]:
    """``{"cross_moment": C_k (K, q, p), "design_moment": D_k (K, q, q)}`` of a mixture's components,

        C_k = (1/n) Σ_i r_ik d_i E[z_i | ℓ_i = k]ᵀ,      D_k = (1/n) Σ_i r_ik d_i d_iᵀ,

    for the design (n, q), the responsibilities r (n, K) and the component means E[z_i | ℓ_i = k] (n, K, p)."""
    n = len(design)
    return {"cross_moment": torch.einsum("nk,nq,nkp->kqp", resp, design, mean) / n,
            "design_moment": torch.einsum("nk,nq,nr->kqr", resp, design, design) / n}


def least_squares(statistics: dict[str, Tensor], ridge: float = 0.0, intercept: bool = True
                  ) -> tuple[Tensor, Tensor]:
    """(Θ̂ = (D + ρJ)⁻¹ C (..., q, p), the residual second moment R = S − Cᵀ (D + ρJ)⁻¹ C
    (..., p, p)) from the averaged statistics (module docstring), each a stack (...) of fits:
    none, or a mixture's K. ``ridge`` ρ ≥ 0 shrinks the covariates' effects, not the intercept
    (the design's first column where ``intercept``); ε J keeps collinear covariates' fitted
    locations unique (module docstring)."""
    second, cross, design = (statistics[key] for key in ("second_moment", "cross_moment", "design_moment"))
    penalised = torch.ones(design.shape[-1], dtype=design.dtype, device=design.device)
    penalised[:int(intercept)] = 0.0
    scale = design.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None]
    design = design + (ridge + _COLLINEAR_RIDGE * scale) * torch.diag(penalised)
    theta = torch.cholesky_solve(cross, torch.linalg.cholesky(design))
    residual = second - cross.mT @ theta
    return theta, 0.5 * (residual + residual.mT)
