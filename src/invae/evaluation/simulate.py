"""Seeded simulations of the Gaussian-graphical-model inverse problem (the source's study).

``z_i ~ N(0, Λ⁻¹)`` with a sparse Λ from a graph family, ``x_i = A z_i + σ ε_i``.
Everything takes an explicit seed or ``numpy.random.Generator``: same seed, same problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["GRAPHS", "FORWARDS", "graph_adjacency", "sparse_precision", "forward_matrix",
           "Problem", "simulate_problem"]

GRAPHS = ("chain", "erdos-renyi", "hub", "grid")
FORWARDS = ("identity", "gaussian", "compressive")


def graph_adjacency(graph: str, p: int, rng: np.random.Generator, *, degree: float = 2.0,
                    hub_size: int = 10) -> np.ndarray:
    """Symmetric boolean adjacency (p, p), no self-loops.

    chain: i ~ i+1. erdos-renyi: each pair independently with probability degree/(p−1).
    hub: groups of ``hub_size`` nodes, each joined to its group's first node.
    grid: a ⌈√p⌉-wide 2-D lattice, row-major, 4-neighbour edges.
    """
    adj = np.zeros((p, p), dtype=bool)
    idx = np.arange(p)
    if graph == "chain":
        adj[idx[:-1], idx[1:]] = True
    elif graph == "erdos-renyi":
        adj = np.triu(rng.random((p, p)) < min(1.0, degree / max(p - 1, 1)), k=1)
    elif graph == "hub":
        adj[(idx // hub_size) * hub_size, idx] = True
    elif graph == "grid":
        width = int(np.ceil(np.sqrt(p)))
        right = idx[(idx % width < width - 1) & (idx + 1 < p)]
        down = idx[idx + width < p]
        adj[right, right + 1] = True
        adj[down, down + width] = True
    else:
        raise ValueError(f"unknown graph {graph!r}; choose one of {', '.join(GRAPHS)}")
    adj = adj | adj.T
    np.fill_diagonal(adj, False)
    return adj


def sparse_precision(graph: str, p: int, rng: np.random.Generator, *, condition_number: float = 10.0,
                     **graph_options) -> np.ndarray:
    """A sparse, well-conditioned precision matrix Λ (p, p) on ``graph``, unit marginal variances.

    Edge weights ``W_ij = ±U(0.5, 1)`` (random signs); ``Θ = W + δI`` with δ chosen so that
    ``cond(Θ) = condition_number``; then ``Λ = DΘD`` with ``D = diag(Θ⁻¹)^{1/2}`` so that
    ``diag(Λ⁻¹) = 1`` (σ is then a noise-to-signal ratio). The rescaling changes the
    condition number by at most the spread of D².
    """
    if condition_number <= 1:
        raise ValueError(f"condition_number must exceed 1, got {condition_number}")
    adj = np.triu(graph_adjacency(graph, p, rng, **graph_options), k=1)
    weights = rng.uniform(0.5, 1.0, size=(p, p)) * rng.choice([-1.0, 1.0], size=(p, p))
    w = np.where(adj, weights, 0.0)
    w = w + w.T
    eig = np.linalg.eigvalsh(w)
    shift = (eig[-1] - condition_number * eig[0]) / (condition_number - 1)
    theta = w + shift * np.eye(p)
    d = np.sqrt(np.diag(np.linalg.inv(theta)))
    precision = d[:, None] * theta * d[None, :]
    return 0.5 * (precision + precision.T)


def forward_matrix(kind: str, p: int, rng: np.random.Generator, *, m: int | None = None) -> np.ndarray:
    """Forward matrix A (m, p).

    identity: I_p. gaussian: entries N(0, 1/m), m = p by default (so E‖A z‖² = ‖z‖²).
    compressive: the same with m = p // 2 by default (m < p: under-determined).
    """
    if kind == "identity":
        if m not in (None, p):
            raise ValueError(f"the identity forward model has m = p = {p}, got m = {m}")
        return np.eye(p)
    if kind not in FORWARDS:
        raise ValueError(f"unknown forward model {kind!r}; choose one of {', '.join(FORWARDS)}")
    m = m if m is not None else (p if kind == "gaussian" else max(1, p // 2))
    if kind == "compressive" and m >= p:
        raise ValueError(f"a compressive forward model needs m < p, got m = {m}, p = {p}")
    return rng.normal(0.0, 1.0 / np.sqrt(m), size=(m, p))


@dataclass(frozen=True)
class Problem:
    """A simulated data set and its truth.

    X (n, m) observations; Z (n, p) true signals; A (m, p); precision Λ (p, p);
    ``settings`` records how it was made.
    """

    X: np.ndarray
    Z: np.ndarray
    A: np.ndarray
    precision: np.ndarray
    noise_std: float
    settings: dict

    def save(self, folder: str | Path) -> None:
        """``X.npy``, ``Z.npy``, ``A.npy``, ``precision.npy`` and ``problem.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("X", "Z", "A"):
            np.save(folder / f"{name}.npy", getattr(self, name))
        np.save(folder / "precision.npy", self.precision)
        (folder / "problem.json").write_text(json.dumps(
            {"noise_std": self.noise_std, **self.settings}, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> Problem:
        folder = Path(folder)
        meta = json.loads((folder / "problem.json").read_text())
        arrays = {name: np.load(folder / f"{name}.npy") for name in ("X", "Z", "A", "precision")}
        return cls(noise_std=meta.pop("noise_std"), settings=meta, **arrays)


def simulate_problem(*, p: int = 20, n: int = 10_000, graph: str = "chain", forward: str = "identity",
                     m: int | None = None, noise_std: float = 1.0, condition_number: float = 10.0,
                     seed: int = 0) -> Problem:
    """Draw Λ, A, then ``z_i ~ N(0, Λ⁻¹)`` and ``x_i = A z_i + σ ε_i`` for i = 1..n."""
    if p < 2 or n < 2:
        raise ValueError(f"need p >= 2 and n >= 2, got p = {p}, n = {n}")
    if not noise_std > 0:
        raise ValueError(f"noise_std must be > 0, got {noise_std}")
    rng = np.random.default_rng(seed)
    precision = sparse_precision(graph, p, rng, condition_number=condition_number)
    a = forward_matrix(forward, p, rng, m=m)
    chol = np.linalg.cholesky(precision)
    z = np.linalg.solve(chol.T, rng.standard_normal((p, n))).T  # Cov = (L Lᵀ)⁻¹ = Λ⁻¹
    x = z @ a.T + noise_std * rng.standard_normal((n, a.shape[0]))
    settings = {"p": p, "n": n, "m": a.shape[0], "graph": graph, "forward": forward,
                "condition_number": condition_number, "seed": seed}
    return Problem(X=x, Z=z, A=a, precision=precision, noise_std=noise_std, settings=settings)
