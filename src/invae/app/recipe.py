"""How data rows are made from the user's files, and the recipe a model keeps to make new
rows alike (``invae predict``).

A data row (:mod:`invae.model.rows`) is the measurements, what the likelihood knows of each
row (its σ_i with ``--noise-std-file``, its offsets with ``--offsets``), the indicators of
its observed entries where some are missing (NaN, :mod:`invae.model.missing`), then the
prior's covariates (``--covariates``). The recipe holds what new rows must share with the fit's:
the covariates' coding (:class:`~invae.app.covariates.CovariateCoding`) and, for
``--offsets log-total``, the fit's mean row total (an offset is a row's log total over it,
so the same count gets the same offset in the fit and in ``predict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model.likelihoods import Likelihood, NoisePerRowGaussianLikelihood
from ..model.missing import MissingEntries
from .covariates import CovariateCoding, read_covariates
from .io import load_array

__all__ = ["LOG_TOTAL", "RowSources", "RowRecipe", "make_rows", "check_sources"]

#: ``--offsets log-total``: o_ij = log(Σ_j x_ij / mean total), as PLN users normalise depth.
LOG_TOTAL = "log-total"


@dataclass(frozen=True)
class RowSources:
    """The files (or ``log-total``) that rows are made of besides the measurements."""

    offsets: str | Path | None = None
    noise_std_file: str | Path | None = None
    covariates: str | Path | None = None
    covariate_columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RowRecipe:
    """What a fit's rows and new rows share (module docstring)."""

    covariates: CovariateCoding | None = None
    mean_total: float | None = None

    def to_record(self) -> dict:
        """Plain values for ``summary.json`` and model files."""
        return {"covariates": None if self.covariates is None else self.covariates.to_record(),
                "mean_total": self.mean_total}

    @classmethod
    def from_record(cls, record: dict | None) -> RowRecipe:
        record = record or {}
        coding = record.get("covariates")
        return cls(None if coding is None else CovariateCoding.from_record(coding), record.get("mean_total"))


def make_rows(x: np.ndarray, likelihood: Likelihood, sources: RowSources,
              recipe: RowRecipe | None = None) -> tuple[np.ndarray, RowRecipe]:
    """The data rows of measurements x (n, m) and ``sources``, and their recipe: a fit's own
    (``recipe`` None), or a saved model's, which new rows must follow."""
    fitting = recipe is None
    recipe = recipe or RowRecipe()
    base = likelihood.base if isinstance(likelihood, MissingEntries) else likelihood
    if getattr(base, "offsets", False):
        offsets, mean_total = _offsets(x, sources.offsets, recipe.mean_total)
        x, recipe = base.rows(x, offsets), RowRecipe(recipe.covariates, mean_total)
    if isinstance(base, NoisePerRowGaussianLikelihood):
        x = _rows_with_noise(x, sources.noise_std_file)
    if isinstance(likelihood, MissingEntries):
        x = likelihood.rows(x, fitting)
    elif np.isnan(x).any():
        raise ValueError("the data hold missing entries (NaN), which this model was not fitted with: its "
                         "encoder reads no mask; refit on data with missing entries")
    if sources.covariates is not None:
        columns = sources.covariate_columns if fitting else list(recipe.covariates.levels)
        covariates, coding = read_covariates(sources.covariates, len(x), columns, recipe.covariates)
        x, recipe = np.hstack([x, covariates]), RowRecipe(coding, recipe.mean_total)
    return x, recipe


def check_sources(likelihood: Likelihood, recipe: RowRecipe, sources: RowSources) -> None:
    """A ``ValueError`` where new rows' ``sources`` lack what a saved model's rows had, or bring what they had not."""
    base = likelihood.base if isinstance(likelihood, MissingEntries) else likelihood
    needs = {"--noise-std-file": isinstance(base, NoisePerRowGaussianLikelihood),
             "--offsets": bool(getattr(base, "offsets", False)), "--covariates": recipe.covariates is not None}
    given = {"--noise-std-file": sources.noise_std_file, "--offsets": sources.offsets,
             "--covariates": sources.covariates}
    for flag, needed in needs.items():
        if needed and given[flag] is None:
            raise ValueError(f"this model's rows had {flag}: give the new rows' with {flag}")
        if not needed and given[flag] is not None:
            raise ValueError(f"this model's rows had no {flag}: leave it out")


def _offsets(x: np.ndarray, source, mean_total: float | None) -> tuple[np.ndarray, float | None]:
    """(offsets (n, m) or (n, 1), the mean total for log-total offsets) from ``--offsets``."""
    if str(source) != LOG_TOTAL:
        return load_array(source, name="the offsets (--offsets)"), mean_total
    if np.isnan(x).any():
        raise ValueError(f"--offsets {LOG_TOTAL} needs every count of a row (its total): with missing entries, "
                         "give the offsets (e.g. the sequencing depths' logs) in a file")
    totals = x.sum(1)
    if not (totals > 0).all():
        raise ValueError(f"--offsets {LOG_TOTAL} needs every row to have counts: row {int(np.argmin(totals > 0))} "
                         "sums to 0")
    mean_total = float(totals.mean()) if mean_total is None else mean_total
    return np.log(totals / mean_total), mean_total


def _rows_with_noise(x: np.ndarray, path) -> np.ndarray:
    """Rows (x_i, σ_i) (n, m + 1) for :class:`NoisePerRowGaussianLikelihood`, σ from ``path`` (n,)."""
    sigma = np.ravel(load_array(path, name="the noise sds (--noise-std-file)"))
    if len(sigma) != len(x):
        raise ValueError(f"--noise-std-file has {len(sigma)} values for {len(x)} rows of data: one σ_i per row")
    return NoisePerRowGaussianLikelihood.rows(x, sigma)
