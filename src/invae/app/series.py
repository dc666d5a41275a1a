"""Series for the path priors (docs/methods.md §3.16): reading ``--data`` (n, T, m) and
``--times`` (T,), the path fit's answers at the observation times and its forecasts beyond them
(``--forecast K``), and simulated series of a built-in SDE (``invae simulate --sde``).

n series share their T observation times; a series is one data row, its T × m measurements
flattened time-major (:func:`invae.paths.observation.series_rows`), NaN where not observed. A
time point missing in every series is allowed (the path runs through it unseen), a measured
coordinate never observed at any time is not (nothing would tie it to the path).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..inference.base import EmpiricalBayesEstimator
from ..inference.seeding import seeded
from ..paths.forecast import FORECAST_DRAWS, QUANTILES, Forecast, forecast_times, kalman_forecast, monte_carlo_forecast
from ..paths.prior import PathPrior
from ..paths.sde import SDE_PRIORS, SDEPrior
from ..references.kalman import KalmanEM, measurement_model
from ..validation import check_data, check_noise_std
from .io import load_array
from .long_series import read_long_series

__all__ = ["load_series_and_times", "load_series", "load_times", "read_times", "on_union_of_times", "check_observed", "at_times", "as_series", "forecast_outputs",
           "SimulatedSeries", "simulate_series"]

#: Numbers a Monte Carlo forecast holds at once (S draws of a group of series' paths), 128 MiB in float64.
_FORECAST_BUDGET = 2**24


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


def forecast_outputs(estimator: EmpiricalBayesEstimator, x: np.ndarray, series: np.ndarray, steps: int, seed: int
                     ) -> tuple[dict[str, np.ndarray], dict]:
    """A path fit's forecast at K = ``steps`` times after the last observation time, spaced by the
    median step (:mod:`invae.paths.forecast`), of the data rows x and their series (n, T, m): the
    arrays ``forecast``, ``forecast_lower`` and ``forecast_upper`` (n, K, d), the posterior
    predictive mean and its 5% and 95% quantiles, and the summary's record of them (the times,
    the files, how they were computed). Exact for ``kalman``; else by Monte Carlo from the
    posterior's draws (reweighted to the exact posterior where the fit's answers are), seeded by ``seed``."""
    ahead = forecast_times(estimator.prior_.times, steps)
    if isinstance(estimator, KalmanEM):
        result, how = _exact_forecast(estimator, series, ahead), "exact: the Kalman filter at the estimate"
    else:
        result = _sampled_forecast(estimator, x, ahead, seed)
        how = f"Monte Carlo: {FORECAST_DRAWS} posterior draws of each series' last state, propagated"
        if result.diverged():
            warnings.warn(f"the forecast's paths diverged: {result.diverged()} of its {result.mean.numel()} means "
                          "are not finite or lie outside their 90% band (Euler–Maruyama on too coarse a grid for "
                          "the drift); refine the grid (--substeps)", UserWarning, stacklevel=2)
    arrays = {"forecast": result.mean, "forecast_lower": result.lower, "forecast_upper": result.upper}
    record = {"times": ahead.tolist(), "files": [f"{name}.npy" for name in arrays], "quantiles": list(QUANTILES),
              "method": how}
    return {name: value.numpy() for name, value in arrays.items()}, record


def _exact_forecast(estimator: KalmanEM, series: np.ndarray, ahead: torch.Tensor) -> Forecast:
    """:func:`~invae.paths.forecast.kalman_forecast` at θ̂ (and σ̂ where it was learned), in float64 on the CPU."""
    prior = estimator.prior_.to("cpu", torch.float64)
    H, noise_var = measurement_model(prior, estimator.likelihood_.to("cpu", torch.float64))
    return kalman_forecast(torch.as_tensor(series, dtype=torch.float64), prior.sde(), prior.times, H, noise_var,
                           ahead, prior.substeps)


def _sampled_forecast(estimator: EmpiricalBayesEstimator, x: np.ndarray, ahead: torch.Tensor, seed: int) -> Forecast:
    """:func:`~invae.paths.forecast.monte_carlo_forecast` from ``estimator.sample_posterior``'s draws
    of the last grid point, a group of series at a time (:data:`_FORECAST_BUDGET`)."""
    prior = estimator.prior_.to("cpu", torch.float64)
    sde, d, generator = prior.sde(), prior.sde_dim, torch.Generator().manual_seed(seed)
    rows = max(1, _FORECAST_BUDGET // (FORECAST_DRAWS * max(prior.dim, len(ahead) * d)))
    parts = []
    with seeded(seed, estimator.device):  # sample_posterior draws from torch's global generator
        for first in range(0, len(x), rows):
            last = estimator.sample_posterior(x[first:first + rows], FORECAST_DRAWS)[..., -d:]  # z flattened time-major
            parts.append(monte_carlo_forecast(sde, torch.as_tensor(last), float(prior.times[-1]), ahead,
                                              prior.substeps, generator))
    return Forecast.concatenate(parts)


@dataclass(frozen=True)
class SimulatedSeries:
    """n series of an SDE's paths seen through Gaussian noise with A = I, ``x = z + σ ε``: the
    observations ``x`` and the true paths ``z`` (n, T, d), the ``times`` (T,), and the ``record``
    of problem.json (the SDE, θ by name as a fit's parameters.json names it, σ, the seed)."""

    x: np.ndarray
    z: np.ndarray
    times: np.ndarray
    record: dict

    def save(self, folder: str | Path) -> Path:
        """``Y.npy`` (x), ``Z.npy`` (z), ``times.npy`` and ``problem.json`` into ``folder`` (made if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in (("Y", self.x), ("Z", self.z), ("times", self.times)):
            np.save(folder / f"{name}.npy", value)
        (folder / "problem.json").write_text(json.dumps(self.record, indent=2) + "\n")
        return folder


def simulate_series(sde: str, *, n: int = 100, steps: int | None = None, times=None, dim: int = 1,
                    noise_std: float = 1.0, seed: int = 0, substeps: int = 10,
                    parameters: dict[str, float] | None = None) -> SimulatedSeries:
    """n paths of the built-in SDE ``sde`` (:data:`~invae.paths.sde.SDE_PRIORS`) in d = ``dim``
    dimensions at ``times`` (T,), or at 0, 1, …, T − 1 for T = ``steps`` (default 50), seen
    through ``x = z + σ ε``, σ = ``noise_std``. θ is the SDE's default but for ``parameters`` (by
    name, numbers; a matrix's number s means s I). The paths start from the SDE's start law, or
    at 0 where the start is diffuse (no law), and move by Euler–Maruyama on the times refined
    ``substeps``-fold (:meth:`~invae.paths.sde.SDEPrior.simulate`: fine sub-steps make its
    discretisation error small against the exact transitions a fit uses). Seeded: same seed, same series."""
    if times is not None and steps is not None:
        raise ValueError("give the number of times (--T) or the times (--times), not both")
    times = np.arange(50 if steps is None else steps, dtype=np.float64) if times is None else np.asarray(times, float)
    if len(times) < 2:
        raise ValueError(f"simulated series need T >= 2 times (a fit needs them), got T = {len(times)}")
    noise_std, process = check_noise_std(noise_std), _sde(sde, dim, parameters or {})
    generator = torch.Generator().manual_seed(seed)
    start = torch.zeros(dim, dtype=torch.float64) if process.diffuse else None
    z = process.simulate(n, torch.as_tensor(times), substeps, generator, start=start)
    x = z + noise_std * torch.randn(z.shape, generator=generator, dtype=z.dtype)
    record = {"sde": sde, "dim": dim, "parameters": PathPrior(process, times, substeps).summary(),
              **({} if start is None else {"start": start.tolist()}), "noise_std": noise_std, "seed": seed,
              "n": n, "T": len(times), "substeps": substeps}
    return SimulatedSeries(x.numpy(), z.numpy(), times, record)


def _sde(name: str, dim: int, parameters: dict[str, float]) -> SDEPrior:
    """The SDE ``name`` in ``dim`` dimensions at its default θ but ``parameters`` (named as its
    ``parameters_by_name``, which are its constructor's), in float64."""
    known = list(SDE_PRIORS[name](dim).parameters_by_name())
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ValueError(f"--sde {name} has no parameter {unknown[0]!r}; its parameters: {', '.join(known)}")
    return SDE_PRIORS[name](dim, **parameters).double()


def _holds_objects(path: Path) -> bool:
    """Whether the ``.npy`` file at ``path`` holds an object array (its header says so; nothing is unpickled)."""
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return reader(file)[2].hasobject
    except (OSError, ValueError):
        return False  # not a .npy file: load_array says so
