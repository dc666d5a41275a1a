"""A prior on a grid of atoms, and the exact posterior it gives under normal noise.

Model (the normal-means problem): ``z_i ~ g``, ``x_i | z_i ~ N(z_i, σ_i²)``, σ_i known.
With ``g = Σ_k π_k δ(a_k)`` (atoms a_k, masses π_k), everything is a finite sum:

    L_ik = φ((x_i − a_k) / σ_i) / σ_i              likelihood of atom k for observation i
    f(x_i) = Σ_k π_k L_ik                           marginal density of x_i
    w_ik = π_k L_ik / f(x_i)                        posterior masses (Bayes' rule)
    E[z_i | x_i] = Σ_k w_ik a_k,   Var = Σ_k w_ik a_k² − E²
    lfsr_i = min(P(z_i ≤ 0 | x_i), P(z_i ≥ 0 | x_i))   local false sign rate
    lfdr_i = P(z_i = ν | x_i) = π_ν L_iν / f(x_i)      local false discovery rate, the null
                                                       value ν an atom (its mass π₀ = π_ν)

Continuous priors (a normal prior, a Gaussian mixture) are put on a grid by
:func:`discretize`: each atom takes the prior mass of its grid cell, so narrow components
keep their mass however fine they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, logsumexp

__all__ = ["GridPrior", "NormalMeansPosterior", "default_grid", "discretize", "grid_posterior",
           "log_likelihood_matrix", "scaled_likelihood", "log_marginal", "normal_cdf", "with_null_atom"]

_ROWS_PER_CHUNK = 8192  # posteriors are computed this many rows at a time (memory: rows × K)


@dataclass(frozen=True)
class GridPrior:
    """``g = Σ_k π_k δ(a_k)``: ``atoms`` (K,) increasing, ``masses`` (K,) ≥ 0 summing to 1."""

    atoms: np.ndarray
    masses: np.ndarray

    def __post_init__(self):
        atoms, masses = np.asarray(self.atoms, dtype=np.float64), np.asarray(self.masses, dtype=np.float64)
        if atoms.ndim != 1 or atoms.shape != masses.shape or len(atoms) == 0:
            raise ValueError(f"atoms and masses must be two 1-D arrays of one length, got {atoms.shape}, {masses.shape}")
        if np.any(np.diff(atoms) <= 0) or not np.isfinite(atoms).all():
            raise ValueError("the atoms must be finite and strictly increasing")
        if np.any(masses < 0) or not np.isclose(masses.sum(), 1.0, rtol=0, atol=1e-8):
            raise ValueError(f"the masses must be >= 0 and sum to 1, got sum {masses.sum():.6g}")
        object.__setattr__(self, "atoms", atoms)
        object.__setattr__(self, "masses", masses / masses.sum())

    @property
    def mean(self) -> float:
        return float(self.masses @ self.atoms)

    @property
    def variance(self) -> float:
        return float(self.masses @ (self.atoms - self.mean) ** 2)

    def quantile(self, u: np.ndarray) -> np.ndarray:
        """The smallest atom whose cumulative mass reaches u, for u in (0, 1): shape of u."""
        cumulative = np.cumsum(self.masses)
        index = np.searchsorted(cumulative, np.asarray(u) - 1e-12, side="left")
        return self.atoms[np.minimum(index, len(self.atoms) - 1)]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(self.atoms, size=n, p=self.masses)


@dataclass(frozen=True)
class NormalMeansPosterior:
    """Per-observation posterior summaries, each (n,); ``lfdr`` is None without a null atom."""

    mean: np.ndarray
    std: np.ndarray
    lfsr: np.ndarray
    lfdr: np.ndarray | None


def default_grid(x: np.ndarray, size: int = 300) -> np.ndarray:
    """``size`` equally spaced atoms over [min x, max x] (a null atom is added by
    :func:`with_null_atom`)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    return np.linspace(lo, hi, size)


def with_null_atom(atoms: np.ndarray, value: float, margin: float = 0.0) -> np.ndarray:
    """``atoms`` (K,) with the null value ν among them, and without the atoms closer to ν than
    ``margin`` (those non-null effects then count as null): the support of π₀ δ(ν) + (1 − π₀) g₁."""
    atoms = np.asarray(atoms, dtype=np.float64)
    return np.sort(np.append(atoms[np.abs(atoms - value) >= max(margin, 1e-12)], value))


def discretize(cdf: Callable[[np.ndarray], np.ndarray], atoms: np.ndarray) -> GridPrior:
    """The grid prior whose atom a_k holds the mass of the cell around it,
    ``F(b_{k+1}) − F(b_k)`` with b the midpoints between atoms (the tails go to the end atoms)."""
    edges = np.concatenate([[-np.inf], (atoms[1:] + atoms[:-1]) / 2, [np.inf]])
    masses = np.clip(np.diff(cdf(edges)), 0.0, None)
    return GridPrior(atoms, masses / masses.sum())


def log_likelihood_matrix(x: np.ndarray, sigma: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """``log L_ik = log φ((x_i − a_k)/σ_i) − log σ_i``, shape (n, K)."""
    x, sigma = np.asarray(x, dtype=np.float64)[:, None], np.asarray(sigma, dtype=np.float64)[:, None]
    return -0.5 * ((x - atoms[None, :]) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)


def scaled_likelihood(x: np.ndarray, sigma, atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``L_ik / max_k L_ik`` (n, K), ``log max_k L_ik`` (n,)): each row scaled to a maximum of
    1, so no observation underflows, however far out; ``log f(x_i) = log (scaled π)_i + row
    log-max``, and maximising over π is unchanged."""
    x = np.asarray(x, dtype=np.float64)
    log_l = log_likelihood_matrix(x, np.broadcast_to(sigma, x.shape), atoms)
    row_max = log_l.max(axis=1)
    log_l -= row_max[:, None]
    return np.exp(log_l, out=log_l), row_max


def log_marginal(x: np.ndarray, sigma: np.ndarray, prior: GridPrior) -> np.ndarray:
    """``log f(x_i) = log Σ_k π_k L_ik``, shape (n,)."""
    sigma = np.broadcast_to(sigma, np.shape(x))
    with np.errstate(divide="ignore"):
        log_masses = np.log(prior.masses)
    return np.concatenate([logsumexp(log_likelihood_matrix(x[rows], sigma[rows], prior.atoms) + log_masses, axis=1)
                           for rows in _chunks(len(x))])


def grid_posterior(x: np.ndarray, sigma: np.ndarray, prior: GridPrior, location: np.ndarray | None = None,
                   null: float | None = None) -> NormalMeansPosterior:
    """Posterior mean, sd, lfsr and lfdr of every z_i under the grid prior (Bayes' rule, exact).

    ``location`` (n,), if given, shifts the prior row by row: ``z_i = ℓ_i + θ_i``, θ_i ~ g
    (covariates); the summaries are then those of z_i. ``null``: the null value ν, an atom
    of the prior (:func:`with_null_atom`); lfdr is its posterior mass, None without a null.
    """
    x = np.asarray(x, dtype=np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), x.shape)
    shift = np.zeros_like(x) if location is None else np.asarray(location, dtype=np.float64)
    atoms = prior.atoms
    with np.errstate(divide="ignore"):
        log_masses = np.log(prior.masses)
    if null is not None and location is not None:
        raise ValueError("a null atom needs a prior without covariates (ν is an atom of z_i's prior only then)")
    null_atom = np.flatnonzero(atoms == null)
    if null is not None and len(null_atom) != 1:
        raise ValueError(f"the null value {null!r} is not an atom of the prior")
    parts = []
    for rows in _chunks(len(x)):
        log_w = log_likelihood_matrix(x[rows] - shift[rows], sigma[rows], atoms) + log_masses
        w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        mean = w @ atoms
        var = (w * (atoms[None, :] - mean[:, None]) ** 2).sum(axis=1)  # centred: no cancellation
        signed = atoms[None, :] + shift[rows, None]  # the atoms of z_i
        below, above = (w * (signed <= 0)).sum(axis=1), (w * (signed >= 0)).sum(axis=1)
        parts.append((mean + shift[rows], np.sqrt(var), np.minimum(below, above), w[:, null_atom].sum(axis=1)))
    mean, std, lfsr, lfdr = (np.concatenate(column) for column in zip(*parts))
    return NormalMeansPosterior(mean, std, lfsr, None if null is None else lfdr)


def normal_cdf(mean: float, std: float) -> Callable[[np.ndarray], np.ndarray]:
    """The cdf of N(mean, std²) (a point mass when std = 0), for :func:`discretize`."""
    if std == 0:
        return lambda t: (np.asarray(t) >= mean).astype(np.float64)
    return lambda t: np.exp(log_ndtr((np.asarray(t) - mean) / std))


def _chunks(n: int):
    for start in range(0, n, _ROWS_PER_CHUNK):
        yield slice(start, start + _ROWS_PER_CHUNK)
