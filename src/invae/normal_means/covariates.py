"""Covariates move the prior's location: ``z_i = c_iᵀβ + θ_i``, ``θ_i ~ g`` (any method's g).

β is the least-squares fit of x on the design [1, c_i] (E[x_i | c_i] = c_iᵀβ + E θ, so it
is consistent whatever g; the intercept absorbs E θ). Every method then runs on the
residuals ``r_i = x_i − c_iᵀβ̂``, which have the same noise σ_i, and adds c_iᵀβ̂ back.
A text column is a group label (one indicator per group but the first); a numeric
column enters linearly (:func:`invae.app.covariates.design_matrix`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["location_fit"]


def location_fit(x: np.ndarray, design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(β̂ (1 + d,), the locations c_iᵀβ̂ (n,)) by least squares."""
    beta = np.linalg.lstsq(design, x, rcond=None)[0]
    return beta, design @ beta
