"""Series for the path priors (docs/methods.md §3.16): reading ``--data`` (n, T, m) and
``--times`` (T,) or (n, T), and the path fit's answers at the observation times. Forecasts are
:mod:`invae.app.forecasts`', simulated series :mod:`invae.app.simulated_series`'.

n series share their T observation times; a series is one data row, its T × m measurements
flattened time-major (:func:`invae.paths.observation.series_rows`), NaN where not observed. A
time point missing in every series is allowed (the path runs through it unseen), a measured
coordinate never observed at any time is not (nothing would tie it to the path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..paths.prior import PathPrior
from ..validation import check_data
from .io import load_array
from .long_series import read_long_series

__all__ = ["load_series_and_times", "load_series", "load_times", "read_times", "on_union_of_times",
           "check_observed", "at_times", "as_series"]

def load_series_and_times(data: str | Path, times: str | Path | None = None, *, fitting: bool = True
                          ) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """The series (n, T, m), their times (T,) and names of ``--data`` and ``--times``: a ``.npy``
    array (:func:`load_series`) at the times of ``--times`` (:func:`load_times`; per series: on
    their union, :func:`on_union_of_times`; no names), or a
    long CSV, which carries the times and the series' names (:mod:`invae.app.long_series`; then
    ``--times`` is refused). Checked as :func:`load_series` checks."""
    if Path(data).suffix.lower() != ".csv":
        x = load_series(data, fitting=fitting)
        times = load_times(times, x.shape)
        return (*on_union_of_times(x, times), None) if times.ndim == 2 else (x, times, None)
    if times is not None:
        raise ValueError("--times is for series in a .npy file: a long CSV (--data) carries its own times")
    long = read_long_series(data)
    return _checked(long.x, "the data (--data)", fitting), long.times, long.series


def load_series(path: str | Path, *, name: str = "the data (--data)", fitting: bool = True) -> np.ndarray:
    """The series (n, T, m) in ``path`` (a ``.npy`` file), checked: numbers (NaN where missing),
    T ≥ 2 time points, every series with an observed entry and (when ``fitting``: θ needs it)
    every measured coordinate observed somewhere."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise ValueError(f"a path prior reads series (n, T, m) from a .npy file or a long .csv (series,time,…): "
                         f"{name} is {str(path)!r}")
    if _holds_objects(path):
        raise ValueError(f"{name} hold Python objects, not numbers: for series of unequal length, pad the shorter "
                         "ones with NaN to one array (n, T, m)")
    x = load_array(path, name=name)
    if x.ndim != 3:
        hint = "; one measurement per time is x[..., None]" if x.ndim == 2 else ""
        raise ValueError(f"a path prior reads series: {name} must be an array (n series, T times, m measurements), "
                         f"got shape {x.shape}{hint}")
    return _checked(x, name, fitting)


def _checked(x: np.ndarray, name: str, fitting: bool) -> np.ndarray:
    """The series (n, T, m) in float64, or a ``ValueError``: T < 2, an entry neither a finite
    number nor NaN, or what :func:`check_observed` refuses."""
    n, steps, m = x.shape
    if steps < 2:
        raise ValueError(f"too few time points: a path prior needs T >= 2 times per series, got T = {steps}")
    check_data(x.reshape(n, steps * m), name=name, allow_missing=True, min_rows=1)
    x = x.astype(np.float64)
    check_observed(x, name=name, fitting=fitting)
    return x


def check_observed(x: np.ndarray, *, name: str = "the data (--data)", fitting: bool = True) -> None:
    """A ``ValueError`` where a series (n, T, m) has nothing observed, or (when ``fitting``) a
    measured coordinate is observed in no series at no time."""
    observed = ~np.isnan(x)
    if not observed.any((1, 2)).all():
        raise ValueError(f"series {int(np.argmin(observed.any((1, 2))))} of {name} has no observed entry: drop it")
    if fitting and not observed.any((0, 1)).all():
        raise ValueError(f"measurement {int(np.argmin(observed.any((0, 1))))} of {name} is never observed: drop it")


def load_times(path: str | Path | None, shape: tuple[int, ...]) -> np.ndarray:
    """The observation times in ``path`` (``.npy``/``.csv``) of series of ``shape`` (n, T, m):
    shared (T,) (one row or column), or one row per series (n, T); finite, strictly increasing
    along each row; 0, 1, …, T − 1 without a file."""
    n, steps = shape[:2]
    if path is None:
        return np.arange(steps, dtype=np.float64)
    table = load_array(path, name="the times (--times)")
    if table.ndim == 2 and min(table.shape) > 1:
        if table.shape != (n, steps):
            raise ValueError(f"--times per series must be (n, T) = ({n}, {steps}) for the data, got {table.shape}")
        rows = check_data(table, name="the times (--times)", min_rows=1)
        return np.stack([_increasing(row, f"row {i} of --times") for i, row in enumerate(rows)])
    times = read_times(path)
    if len(times) != steps:
        raise ValueError(f"--times has {len(times)} values for the T = {steps} time points of the data")
    return times


def read_times(path: str | Path) -> np.ndarray:
    """The times (T,) in ``path`` (``.npy``/``.csv``; one row or column), finite and strictly increasing."""
    times = load_array(path, name="the times (--times)")
    if times.ndim == 2 and 1 in times.shape:
        times = times.ravel()
    if times.ndim != 1:
        raise ValueError(f"--times must be one time per time point (T,), or one row per series (n, T), "
                         f"got shape {times.shape}")
    return _increasing(check_data(times[:, None], name="the times (--times)", min_rows=1)[:, 0], "--times")


def _increasing(times: np.ndarray, label: str) -> np.ndarray:
    """``times`` (T,), or a ``ValueError`` naming the first step that does not increase."""
    step = np.diff(times)
    if not (step > 0).all():
        k = int(np.argmin(step > 0)) + 1
        raise ValueError(f"{label} must be strictly increasing: times[{k}] = {times[k]:g} follows "
                         f"times[{k - 1}] = {times[k - 1]:g}")
    return times


def on_union_of_times(x: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Series x (n, T, m) seen at their own ``times`` (n, T) as series on the sorted union of those
    times, (n, T', m) with NaN where a series was not seen, and that union (T',)."""
    union, index = np.unique(times, return_inverse=True)
    shared = np.full((len(x), len(union), x.shape[2]), np.nan)
    shared[np.arange(len(x))[:, None], index.reshape(times.shape)] = x
    return shared, union


def at_times(prior: PathPrior, values: np.ndarray) -> np.ndarray:
    """Grid paths flattened (n, G d) as the values at the observation times, (n, T, d)."""
    paths = values.reshape(len(values), len(prior.grid), prior.sde_dim)
    return paths[:, prior.observed_index.numpy()]


def as_series(rows: np.ndarray, steps: int) -> np.ndarray:
    """Measurements (n, T m) flattened time-major as series (n, T, m)."""
    return rows.reshape(len(rows), steps, -1)


def _holds_objects(path: Path) -> bool:
    """Whether the ``.npy`` file at ``path`` holds an object array (its header says so; nothing is unpickled)."""
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return reader(file)[2].hasobject
    except (OSError, ValueError):
        return False  # not a .npy file: load_array says so
