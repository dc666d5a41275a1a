"""Rank matching, the source's order-statistics estimator (DESIGN §2.6).

Estimates whose empirical distribution is the estimated prior Ĝ while keeping the order
of the data: the observation of rank r (of n) gets Ĝ's quantile at (r − ½)/n,

    ẑ_(r) = Ĝ⁻¹((r − ½) / n).

The order is that of the scores given (the posterior means: with one σ they are
increasing in x, so this is the data's order; with σ_i varying they rank a noisy x_i
where it belongs, which x alone does not). A point estimate: it has no posterior spread.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

__all__ = ["rank_match"]


def rank_match(scores: np.ndarray, quantile) -> np.ndarray:
    """``ẑ_i = quantile((rank_i − ½)/n)`` with ranks of ``scores`` (n,) (ties by position);
    ``quantile`` is the prior's quantile function (e.g. ``GridPrior.quantile``). Returns (n,)."""
    scores = np.asarray(scores, dtype=np.float64)
    ranks = rankdata(scores, method="ordinal")
    return np.asarray(quantile((ranks - 0.5) / len(scores)), dtype=np.float64)
