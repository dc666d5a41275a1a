"""Covariates move the prior's location: ``z_i = c_iᵀβ + θ_i``, ``θ_i ~ g`` (any method's g).

β is the least-squares fit of x on the design [1, c_i] (E[x_i | c_i] = c_iᵀβ + E θ, so it
is consistent whatever g; the intercept absorbs E θ). Every method then runs on the
residuals ``r_i = x_i − c_iᵀβ̂``, which have the same noise σ_i, and adds c_iᵀβ̂ back.
A text column is a group label (one indicator per group but the first); a numeric
column enters linearly.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["design_matrix", "location_fit"]

#: Rows per location parameter below which a warning is given: each group's β is then the
#: mean of a handful of rows, noise included, and the shrinkage towards it all but vanishes
#: (one label per row — a name column — removes it: every residual is 0).
ROWS_PER_PARAMETER = 5


def design_matrix(columns: dict[str, np.ndarray] | list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """The design (n, 1 + d) with an intercept, and its column names, from covariate
    columns (each (n,), numbers or text labels), named by the dict's keys (or c0, c1, …)."""
    if not isinstance(columns, dict):
        columns = {f"c{index}": column for index, column in enumerate(columns)}
    n = len(next(iter(columns.values())))
    parts, names = [np.ones((n, 1))], ["intercept"]
    for index, column in columns.items():
        column = np.asarray(column)
        if len(column) != n:
            raise ValueError(f"covariate column {index} has {len(column)} rows, the first has {n}")
        if column.dtype.kind in "biuf":
            values = column.astype(np.float64)
            if not np.isfinite(values).all():
                raise ValueError(f"covariate column {index} holds a non-finite number")
            parts.append(values[:, None])
            names.append(index)
        else:
            labels = np.unique(column)
            parts.append((column[:, None] == labels[None, 1:]).astype(np.float64))
            names += [f"{index}={label}" for label in labels[1:]]
    design = np.hstack(parts)
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError("the covariates are collinear (with each other or a constant): drop one")
    _warn_if_few_rows_per_parameter(n, names)
    return design, names


def _warn_if_few_rows_per_parameter(n: int, names: list[str]) -> None:
    """A UserWarning when the n rows give fewer than ``ROWS_PER_PARAMETER`` per column of the design."""
    if n < ROWS_PER_PARAMETER * len(names):
        warnings.warn(f"the covariates make {len(names)} location parameters for {n} rows "
                      f"({n / len(names):.1f} per parameter, fewer than {ROWS_PER_PARAMETER}): the prior's location "
                      "then follows the data and removes most of the shrinkage (a text column with one label "
                      "per row removes all of it)", UserWarning, stacklevel=3)


def location_fit(x: np.ndarray, design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(β̂ (1 + d,), the locations c_iᵀβ̂ (n,)) by least squares."""
    beta = np.linalg.lstsq(design, x, rcond=None)[0]
    return beta, design @ beta
