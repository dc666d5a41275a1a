"""How sure is each edge: stability selection and StARS (``--stability B``, ``--penalty stars``;
docs/methods.md §3.15).

Refit on B random halves of the rows (subsamples without replacement) and count, for each
pair (a, b), the share of fits whose Λ̂ has the edge, ``θ̂_ab = (1/B) Σ_k 1[Λ̂^(k)_ab ≠ 0]``:
its selection frequency (Meinshausen & Bühlmann 2010). An edge that every half finds scores
1; one that the fit on all rows found by chance scores low. Each half's fits walk the
penalties from large to small, warm-started from the previous one (or, for one penalty,
from the fit on all rows).

The B refits are independent: ``n_jobs`` runs them in that many processes (joblib's loky
pool), each a copy of the same seeded fit, so the frequencies do not depend on ``n_jobs``.

StARS (Liu, Roeder & Wasserman 2010) chooses the penalty from the same fits: an edge's
instability across halves is ``ξ_ab = 2 θ̂_ab (1 − θ̂_ab)`` (the chance that two halves
disagree on it), the graph's is its mean over the p(p − 1)/2 pairs, ``D(α)``, made monotone
from the sparse end, ``D̄(α) = max_{α' ≥ α} D(α')``; StARS takes the smallest α (the
densest graph) with ``D̄(α) ≤ β``, β = 0.05 by default. The halves are the same for
every α (common random numbers), so D(α) changes only with α.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from ..validation import check_data
from .base import EmpiricalBayesEstimator, progress_disabled

__all__ = ["selection_frequencies", "StabilityPath", "stars"]


def selection_frequencies(estimator: EmpiricalBayesEstimator, X, alphas, *, subsamples: int = 20, seed: int = 0,
                          verbose: bool | int = False, n_jobs: int = 1) -> np.ndarray:
    """θ̂ (len(alphas), p, p): the share of ``subsamples`` fits on random halves of the rows of X
    whose Λ̂ has each edge, at each penalty of ``alphas`` (walked from large to small, each
    warm-started from the previous one, the first from ``estimator``'s fit where it has one).
    ``estimator`` is a template, left unchanged; ``alphas`` must be sorted large to small;
    ``n_jobs`` processes refit the halves (1: in this process)."""
    x = np.asarray(X)
    if subsamples < 1:
        raise ValueError(f"stability selection needs at least one subsample, got {subsamples}")
    if not (isinstance(n_jobs, int) and n_jobs >= 1):
        raise ValueError(f"n_jobs must be an integer >= 1, got {n_jobs!r}")
    if len(x) < 4:
        raise ValueError(f"{len(x)} rows are too few to refit on halves of them")
    rng = np.random.default_rng(seed)
    halves = [rng.choice(len(x), len(x) // 2, replace=False) for _ in range(subsamples)]
    refits = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_edges_along)(estimator, x[np.sort(rows)], alphas) for rows in halves)
    counts = sum(tqdm(refits, total=subsamples, desc="stability", disable=progress_disabled(verbose), leave=False))
    frequencies = counts / subsamples
    return frequencies + np.swapaxes(frequencies, 1, 2)


def _edges_along(template: EmpiricalBayesEstimator, x: np.ndarray, alphas) -> np.ndarray:
    """(len(alphas), p, p) indicators of the edges (above the diagonal) of fits on x along ``alphas``."""
    walker = copy.deepcopy(template)
    walker.warm_start, walker.verbose, walker.callback = True, 0, None
    if hasattr(walker, "checkpoint_dir"):  # a refit must not write over, or resume, the main fit's checkpoint
        walker.checkpoint_dir, walker.resume = None, False
    found = []
    for alpha in alphas:
        walker.prior = template.prior.with_penalty(alpha)
        walker.fit(x)
        found.append(np.triu(walker.precision_ != 0, k=1))
    return np.asarray(found, dtype=float)


@dataclass(frozen=True)
class StabilityPath:
    """StARS along a path: ``alphas`` large to small, each one's graph instability D(α) and
    its monotone envelope D̄(α) (module docstring), β, and the chosen α."""

    alphas: tuple[float, ...]
    instability: tuple[float, ...]
    envelope: tuple[float, ...]
    beta: float
    subsamples: int
    alpha: float

    def to_dict(self) -> dict:
        return {"alphas": list(self.alphas), "instability": list(self.instability), "envelope": list(self.envelope),
                "beta": self.beta, "subsamples": self.subsamples, "alpha": self.alpha}


def stars(estimator: EmpiricalBayesEstimator, X, alphas, *, subsamples: int = 20, beta: float = 0.05,
          seed: int = 0, verbose: bool | int = False, n_jobs: int = 1) -> tuple[StabilityPath, np.ndarray]:
    """StARS (module docstring) with ``estimator`` (a template, left unchanged) refitted on the
    halves along ``alphas`` by ``n_jobs`` processes: (the :class:`StabilityPath` with the chosen α,
    and the selection frequencies (p, p) at that α). Fit the method of your choice at ``path.alpha`` next."""
    if not 0 < beta < 0.5:
        raise ValueError(f"StARS's β must lie in (0, 0.5), got {beta}")
    x = check_data(X)
    alphas = np.sort(np.asarray(alphas, dtype=float))[::-1]
    frequencies = selection_frequencies(estimator, x, alphas, subsamples=subsamples, seed=seed, verbose=verbose,
                                        n_jobs=n_jobs)
    pairs = np.triu_indices(estimator.prior.dim, k=1)
    instability = np.array([np.mean(2 * theta[pairs] * (1 - theta[pairs])) for theta in frequencies])
    envelope = np.maximum.accumulate(instability)
    stable = np.flatnonzero(envelope <= beta)
    chosen = int(stable[-1]) if len(stable) else 0  # the densest stable graph; else the sparsest tried
    path = StabilityPath(tuple(alphas.tolist()), tuple(instability.tolist()), tuple(envelope.tolist()), beta,
                         subsamples, float(alphas[chosen]))
    return path, frequencies[chosen]
