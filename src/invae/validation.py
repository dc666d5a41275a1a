"""Checks at the door: every public entry point validates its input here, with a
``ValueError`` that says what was expected and what was found (never ``assert``)."""

from __future__ import annotations

import numpy as np

from .model.rows import block_rows

__all__ = ["check_data", "check_noise_std", "check_penalty"]

# Second moments of the data must stay finite in float32, the variational estimators' default
# precision: |x| ≤ √(float32 max) / 100 ≈ 1.8e17 leaves room for sums over rows and columns.
_LARGEST = float(np.sqrt(np.finfo(np.float32).max)) / 100


def check_data(X, *, name: str = "X", columns: int | None = None, allow_missing: bool = False,
               min_rows: int = 2) -> np.ndarray:
    """``X`` as a finite float64 array of shape (n, m) with n ≥ ``min_rows`` (and m == ``columns``);
    with ``allow_missing``, NaN marks a missing entry (inf is still refused). Two rows at least,
    unless each row holds several independent terms of the prior (a series: ``min_rows=1``)."""
    array = X if isinstance(X, np.memmap) else np.asarray(X)  # asarray would drop the memmap class
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{name} must hold numbers, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real, got complex dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n observations, m features), got shape {array.shape}")
    if array.shape[0] < min_rows:
        raise ValueError(f"{name} has {array.shape[0]} row(s); empirical Bayes needs at least {min_rows} "
                         f"{'observations' if min_rows > 1 else 'observation'}")
    if array.shape[1] < 1:
        raise ValueError(f"{name} has no columns")
    if columns is not None and array.shape[1] != columns:
        raise ValueError(
            f"{name} has {array.shape[1]} columns but the model expects {columns} (the rows of A, "
            "σ_i where each row carries its noise level, and the prior's covariates); check --forward / "
            "the data file"
        )
    with np.errstate(over="ignore"):
        # a copy, which callers may change, except of a memory map: never held whole
        array = array.astype(np.float64, copy=not isinstance(X, np.memmap))
    bad, first, largest = _scan_values(array, allow_missing)
    if bad:
        row, col = first
        raise ValueError(
            f"{name} holds {bad} {'inf' if allow_missing else 'NaN/inf'} value(s), the first at row {row}, "
            f"column {col}; {'remove them' if allow_missing else 'remove or impute them, or mark missing entries (NaN) with MissingEntries'}"
        )
    if largest > _LARGEST:
        raise ValueError(f"{name} holds values up to {largest:.3g}, too large for second moments in floating "
                         f"point (limit {_LARGEST:g}); rescale the data (and the noise level) first")
    return array


def _scan_values(array: np.ndarray, allow_missing: bool) -> tuple[int, tuple[int, int] | None, float]:
    """(how many entries are bad — inf, or NaN unless ``allow_missing`` —, the (row, column) of
    the first, the largest |value| but NaN) of a 2-D array, read block by block so that
    a memory-mapped file is never held whole (nor a temporary of its size)."""
    bad, first, largest = 0, None, 0.0
    block = block_rows(array.shape[1])
    for start in range(0, array.shape[0], block):
        values = np.array(array[start:start + block])
        wrong = np.isinf(values) if allow_missing else ~np.isfinite(values)
        if wrong.any():
            first = first or tuple(int(i) for i in np.argwhere(wrong)[0] + (start, 0))
            bad += int(wrong.sum())
        largest = max(largest, float(np.fmax.reduce(np.abs(values), axis=None, initial=0.0)))  # fmax skips NaN
    return bad, first, largest


def check_noise_std(noise_std: float) -> float:
    """A finite σ > 0."""
    if not (isinstance(noise_std, (int, float, np.floating, np.integer)) and np.isfinite(noise_std)
            and noise_std > 0):
        raise ValueError(f"the noise standard deviation must be a finite number > 0, got {noise_std!r}")
    return float(noise_std)


def check_penalty(alpha: float | str) -> float | str:
    """A finite penalty α ≥ 0, or ``"auto"`` or ``"stars"`` (chosen from the data, :mod:`invae.inference.penalty`,
    :mod:`invae.inference.stability`)."""
    if alpha in ("auto", "stars"):
        return alpha
    if not (isinstance(alpha, (int, float, np.floating, np.integer)) and np.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"the penalty must be a finite number >= 0, 'auto' or 'stars', got {alpha!r}")
    return float(alpha)
