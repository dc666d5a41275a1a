"""The graph of a fitted precision matrix as users read it: named variables, each edge's
partial correlation and, where stability selection ran, how often it was selected.

The partial correlation of variables a and b given all the others is
``ρ_ab = −Λ_ab / √(Λ_aa Λ_bb)``; an edge is a nonzero Λ_ab (a < b). ``edges.csv`` lists them,
the strongest |ρ| first.
"""

from __future__ import annotations

import csv
import io

import numpy as np

__all__ = ["variable_names", "partial_correlations", "edge_rows", "edges_csv"]


def variable_names(p: int, names=None) -> list[str]:
    """``names`` checked (p distinct, non-empty), or z0 … z(p−1) without them."""
    if names is None:
        return [f"z{j}" for j in range(p)]
    names = [str(name).strip() for name in names]
    if len(names) != p:
        raise ValueError(f"{len(names)} variable names for p = {p} signal coordinates")
    if not all(names) or len(set(names)) != p:
        raise ValueError("the variable names must be non-empty and distinct")
    return names


def partial_correlations(precision: np.ndarray) -> np.ndarray:
    """``ρ_ab = −Λ_ab / √(Λ_aa Λ_bb)`` (p, p), with 0 on the diagonal."""
    scale = np.sqrt(np.diag(precision))
    rho = -precision / np.outer(scale, scale)
    np.fill_diagonal(rho, 0.0)
    return rho


def edge_rows(precision: np.ndarray, names: list[str], stability: np.ndarray | None = None) -> list[dict]:
    """One dict per edge (nonzero Λ_ab, a < b): ``a``, ``b``, ``precision`` Λ_ab,
    ``partial_correlation`` ρ_ab and, given a (p, p) ``stability``, its selection frequency;
    sorted by |ρ_ab|, largest first."""
    rho = partial_correlations(precision)
    rows, cols = np.nonzero(np.triu(precision, k=1))
    order = np.argsort(-np.abs(rho[rows, cols]), kind="stable")
    return [{"a": names[i], "b": names[j], "precision": float(precision[i, j]),
             "partial_correlation": float(rho[i, j]),
             **({} if stability is None else {"stability": float(stability[i, j])})}
            for i, j in zip(rows[order], cols[order])]


def edges_csv(rows: list[dict], stability: bool = False) -> bytes:
    """``edges.csv``: a header, then one line per edge of :func:`edge_rows`."""
    fields = ["a", "b", "precision", "partial_correlation"] + (["stability"] if stability else [])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: (f"{value:.10g}" if isinstance(value, float) else value) for key, value in row.items()}
                     for row in rows)
    return buffer.getvalue().encode("utf-8")
