"""Covariate columns as the numbers a model reads: a numeric column enters as it is, a text
column (a group label) as one indicator per label but the first, its reference level.

The coding remembers each text column's labels, so new rows (``invae predict``) are coded
as the fit's rows were, and a label the fit never saw is an error rather than a silent
reference level.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .table import column, load_table

__all__ = ["CovariateCoding", "design_matrix", "read_covariates", "ROWS_PER_PARAMETER"]

#: Rows per location parameter below which a warning is given: each group's effect is then
#: the mean of a handful of rows, noise included, and the shrinkage towards it all but
#: vanishes (one label per row — a name column — removes it: every residual is 0).
ROWS_PER_PARAMETER = 5


@dataclass(frozen=True)
class CovariateCoding:
    """How columns become covariates: ``levels[name]`` is a text column's labels, sorted, the
    first the reference; None for a numeric column."""

    levels: dict[str, tuple[str, ...] | None]

    @classmethod
    def of(cls, columns: dict[str, np.ndarray]) -> CovariateCoding:
        """The coding of ``columns`` (name → values (n,), numbers or text labels)."""
        return cls({name: None if np.asarray(values).dtype.kind in "biuf" else tuple(np.unique(values).tolist())
                    for name, values in columns.items()})

    @property
    def names(self) -> list[str]:
        """The k covariates' names: a numeric column's own, ``column=label`` for an indicator."""
        return [name if labels is None else f"{name}={label}" for name, labels in self.levels.items()
                for label in ([None] if labels is None else labels[1:])]

    def encode(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """The covariates (n, k) of ``columns``, which must hold this coding's columns with the
        same kinds (and no label it has not seen)."""
        n = len(next(iter(columns.values()))) if columns else 0
        parts = [np.empty((n, 0))]
        for name, labels in self.levels.items():
            if name not in columns:
                raise ValueError(f"the covariates have no column {name!r}; they need {', '.join(self.levels)}")
            parts.append(_encoded(name, np.asarray(columns[name]), labels, n))
        return np.hstack(parts)

    def to_record(self) -> dict:
        """Plain values for a model file."""
        return {name: None if labels is None else list(labels) for name, labels in self.levels.items()}

    @classmethod
    def from_record(cls, record: dict) -> CovariateCoding:
        return cls({name: None if labels is None else tuple(labels) for name, labels in record.items()})


def _encoded(name: str, column: np.ndarray, labels: tuple[str, ...] | None, n: int) -> np.ndarray:
    """One column's covariates (n, 1) or its indicators (n, labels − 1)."""
    if len(column) != n:
        raise ValueError(f"covariate column {name} has {len(column)} rows, the first has {n}")
    if labels is None:
        if column.dtype.kind not in "biuf":
            raise ValueError(f"covariate column {name} was numeric in the fit but holds text now")
        values = column.astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"covariate column {name} holds a non-finite number")
        return values[:, None]
    unseen = sorted(set(column.astype(str).tolist()) - set(labels))
    if unseen:
        raise ValueError(f"covariate column {name} holds label(s) {', '.join(unseen)} that the fit did not have "
                         f"({', '.join(labels)})")
    return (column.astype(str)[:, None] == np.asarray(labels[1:])[None, :]).astype(np.float64)


def design_matrix(columns: dict[str, np.ndarray] | list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """The design (n, 1 + k) with an intercept, and its column names, from covariate
    columns (each (n,), numbers or text labels), named by the dict's keys (or c0, c1, …).
    Collinear columns (with each other or the intercept) are refused."""
    if not isinstance(columns, dict):
        columns = {f"c{index}": column for index, column in enumerate(columns)}
    coding = CovariateCoding.of(columns)
    names = ["intercept", *coding.names]
    return _checked_design(coding.encode(columns), names), names


def _checked_design(covariates: np.ndarray, names: list[str]) -> np.ndarray:
    """The design (n, 1 + k) of an intercept and ``covariates`` (n, k), named ``names``: refused
    where collinear (with each other or the intercept), warned of where its rows are few."""
    design = np.hstack([np.ones((len(covariates), 1)), covariates])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError("the covariates are collinear (with each other or a constant): drop one")
    _warn_if_few_rows_per_parameter(len(design), names)
    return design


def _warn_if_few_rows_per_parameter(n: int, names: list[str]) -> None:
    """A UserWarning when the n rows give fewer than ``ROWS_PER_PARAMETER`` per column of the design."""
    if n < ROWS_PER_PARAMETER * len(names):
        warnings.warn(f"the covariates make {len(names)} location parameters for {n} rows "
                      f"({n / len(names):.1f} per parameter, fewer than {ROWS_PER_PARAMETER}): the prior's location "
                      "then follows the data and removes most of the shrinkage (a text column with one label "
                      "per row removes all of it)", UserWarning, stacklevel=3)


def read_covariates(path, n: int, columns=None, coding: CovariateCoding | None = None
                    ) -> tuple[np.ndarray, CovariateCoding]:
    """The covariates (n, k) of the n data rows from the table at ``path`` (``--covariates``:
    ``.csv`` with a header of names, or ``.npy``), its ``columns`` (names or 0-based
    positions; None: all), coded by ``coding`` (new rows) or by a coding of their own (a fit),
    and that coding. Collinear covariates (with each other or the intercept) are refused."""
    table = load_table(path, name="the covariates (--covariates)")
    chosen = {key: column(table, key, "--covariate-columns") for key in columns} if columns else table
    for name, values in chosen.items():
        _check_complete(name, values)
    fitting = coding is None
    coding = CovariateCoding.of(chosen) if fitting else coding
    covariates = coding.encode(chosen)
    if len(covariates) != n:
        raise ValueError(f"--covariates has {len(covariates)} rows for {n} rows of data: one row of covariates per row")
    if fitting:
        _checked_design(covariates, ["intercept", *coding.names])
    return covariates, coding


def _check_complete(name: str, values: np.ndarray) -> None:
    """A ValueError for a covariate column with a missing value (an empty field, NA or NaN), which
    a table reads as text (a numeric column with gaps) or as NaN."""
    cells = np.char.lower(np.char.strip(values.astype(str)))
    blank = np.isin(cells, ["", "na", "nan"])
    if blank.any():
        raise ValueError(f"covariate column {name} has a missing value (row {int(np.argmax(blank))}): "
                         "covariates must be known for every row")
