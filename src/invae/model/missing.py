"""Entries missing at random: the likelihood of the observed entries of each row
(docs/methods.md §3.14).

Given z the entries of x are independent (every invae likelihood), so the likelihood of
what was observed is ``log p(x_O | z) = Σ_{j ∈ O} log p(x_j | z)``, and under missingness at
random the missing entries' mechanism drops out of the posterior and of θ's likelihood.
A data row is the base likelihood's row with each missing measurement set to 0, followed by
the m indicators of the observed entries (:meth:`MissingEntries.rows` builds them from NaN):
minibatches carry their pattern, and an encoder reads both (x with 0 where missing, and
the mask), so one network answers for any pattern.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from .likelihoods import Likelihood

__all__ = ["MissingEntries"]


class MissingEntries(Likelihood):
    """``log p(x_i | z) = Σ_{j observed} log p(x_ij | z)`` under the likelihood ``base``."""

    def __init__(self, base: Likelihood):
        if isinstance(base, MissingEntries):
            raise ValueError("the likelihood already allows missing entries")
        self.base = base
        self.forward = base.forward
        self.encoder_log1p = base.encoder_log1p

    def __repr__(self) -> str:
        return f"MissingEntries({self.base!r})"

    @property
    def data_dim(self) -> int:
        return self.base.data_dim + self.forward.out_dim

    def rows(self, x, fitting: bool = True) -> np.ndarray:
        """Data rows (n, base columns + m) from the base likelihood's rows (n, base columns) with
        NaN for each missing measurement (one of the first m columns). A row with nothing
        observed, NaN elsewhere, or (when ``fitting``: the prior's parameters need it) a column
        never observed, raises ValueError."""
        x = np.asarray(x, dtype=np.float64)
        m = self.forward.out_dim
        missing = np.isnan(x[:, :m])
        if np.isnan(x[:, m:]).any():
            raise ValueError("only measurements may be missing (NaN): not a row's noise level or offsets")
        if missing.all(1).any():
            raise ValueError(f"row {int(np.argmax(missing.all(1)))} of the data has no observed entry: drop it")
        if fitting and missing.all(0).any():
            raise ValueError(f"column {int(np.argmax(missing.all(0)))} of the data is never observed: drop it")
        filled = x.copy()
        filled[:, :m][missing] = 0.0
        return np.hstack([filled, (~missing).astype(np.float64)])

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(the base likelihood's rows (..., base columns), the observed-entry indicators (..., m))."""
        return x[..., : self.base.data_dim], x[..., self.base.data_dim:]

    def entry_log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """The base's ``log p(x_j | z)``, 0 for a missing entry (computed at x_j = 0, finite, then dropped)."""
        rows, observed = self.split(x)
        return self.base.entry_log_prob(rows, z) * observed

    def expected_entry_log_prob(self, x: Tensor, mean: Tensor, cov: Tensor) -> Tensor | None:
        rows, observed = self.split(x)
        entries = self.base.expected_entry_log_prob(rows, mean, cov)
        return None if entries is None else entries * observed

    def predictive_mean(self, x: Tensor, z: Tensor) -> Tensor:
        return self.base.predictive_mean(self.split(x)[0], z)

    def link_scale(self, x: Tensor) -> Tensor:
        """The base's, with a missing entry read as its 0."""
        return self.base.link_scale(self.split(x)[0])

    @property
    def predictive_mean_is_linear(self) -> bool:
        return self.base.predictive_mean_is_linear

    def state(self) -> dict[str, Tensor]:
        return self.base.state()

    def with_state(self, state: dict[str, Tensor]) -> MissingEntries:
        return MissingEntries(self.base.with_state(state)) if state else self

    def to(self, device=None, dtype=None) -> MissingEntries:
        return MissingEntries(self.base.to(device, dtype))

    def constants(self) -> dict:
        return self.base.constants()
