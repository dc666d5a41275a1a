"""Where a path fit starts: θ of an SDE prior from the naive signals of the data
(``invae fit --prior ou|brownian|double-well``; docs/methods.md §3.16). Only a start: the fit
moves θ from there, but a start near the data's scale spares it a long walk (the Nile's level
is near 900, its spread near 120).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..model.forward import LinearOperator
from ..model.likelihoods import GaussianLikelihood, Likelihood
from ..model.missing import MissingEntries
from ..model.rows import split_rows
from .prior import PathPrior
from .sde import SDE_PRIORS

__all__ = ["noise_start", "path_start"]


def path_start(sde: str, x: np.ndarray, likelihood: Likelihood, times: np.ndarray | None = None,
               substeps: int = 1) -> PathPrior:
    """The start of a path fit (:class:`~invae.paths.prior.PathPrior` of the SDE ``sde``) on the
    data rows x (series flattened time-major, :mod:`invae.paths.observation`), seen through
    ``likelihood`` (its forward operator a :class:`~invae.paths.observation.PathOperator`), at the
    observation ``times`` (T,) (None: 0, 1, …, T − 1) refined ``substeps``-fold.

    Where the noise is Gaussian and the per-time operator a matrix H, from the naive signals
    ẑ_t = H⁺ x_t (NaN where an entry they read is missing), their noise variances v = σ² diag(H⁺H⁺ᵀ)
    and the median step Δ between the observation times:

    - ``ou``: μ = the mean of ẑ; each coordinate's signal variance s² = its variance less v
      (at least a tenth of it); Θ = diag(−log ρ / Δ), ρ the lag-one autocorrelation of ẑ
      over s², clipped to [0.05, 0.95]; S = diag(√(2 Θ s²)), so that the stationary variance is s²;
    - ``brownian``: S² = the mean of ((ẑ_{t+1} − ẑ_t)² − 2v) / Δ_t (at least a hundredth of the
      same without v); the start's mean the mean of ẑ at the first time point each series
      has, its variance their variance less v (at least S² Δ);
    - ``double-well``: its defaults (:class:`~invae.paths.sde.DoubleWell`);
    - a user's drift module (:mod:`invae.paths.module_drift`): the module's own parameters, and
      S and the start as ``brownian``'s (the increments of a path over short steps are
      dominated by the noise S dW whatever the drift).

    Otherwise (another noise model, a nonlinear sensor) the OU start is Θ = I / (5 Δ), μ = 0,
    S = √(2/(5 Δ)) I (stationary variance 1) and the Brownian S likewise, with a N(0, I) start.
    Each is only a start: the fit moves θ from there.
    """
    operator = likelihood.forward
    d, steps = operator.per_time.in_dim, operator.steps
    times = np.arange(steps, dtype=np.float64) if times is None else np.asarray(times, np.float64)
    step = float(np.median(np.diff(times))) if steps > 1 else 1.0
    naive = _naive_paths(x, likelihood)
    if sde == "double-well":
        settings = {}
    elif naive is None:
        rate = 1 / (5 * step)
        settings = ({"drift": rate, "diffusion": math.sqrt(2 * rate)} if sde == "ou" else
                    {"diffusion": math.sqrt(2 * rate)})
    else:
        signals, noise_var = naive
        with np.errstate(divide="ignore", invalid="ignore"):  # a constant or unseen coordinate: its fallback
            settings = (_ou_start(signals, noise_var, step) if sde == "ou" else
                        _brownian_start(signals, noise_var, np.diff(times)))
    return PathPrior(SDE_PRIORS[sde](d, **settings).double(), times, substeps)


def noise_start(series: np.ndarray) -> np.ndarray:
    """Where a learned Gaussian noise level starts (``--noise-std learn``), one σ₀ per measured
    coordinate (m,), from the series (n, T, m) (NaN where not observed).

    For ``x_t = G(z_t) + σ ε_t``, ``E (x_{t+1} − x_t)² = 2σ² + E (G(z_{t+1}) − G(z_t))²``: the root
    mean square r of the first differences (over the pairs of consecutive time points where
    both are observed) over √2 bounds σ from above, reached where the path does not move. The
    start splits the differences' variance evenly between the noise and the path: σ₀² = r²/4,
    σ₀ = r/2 (the Nile: r/√2 ≈ 126, the MLE σ̂ ≈ 123, the start 89). A coordinate without two
    consecutive observations takes half its spread; one that has neither, or is constant, 1.
    Only a start: the fit learns σ from there.
    """
    differences = np.diff(series, axis=1)
    with np.errstate(invalid="ignore"):  # a coordinate with no pair: its fallback
        start = np.sqrt(_nanmean(differences**2, (0, 1))) / 2
        spread = np.sqrt(_nanmean((series - _nanmean(series, (0, 1))) ** 2, (0, 1))) / 2
    start = np.where(np.isfinite(start) & (start > 0), start, spread)
    return np.where(np.isfinite(start) & (start > 0), start, 1.0)


def _naive_paths(x: np.ndarray, likelihood: Likelihood) -> tuple[np.ndarray, np.ndarray] | None:
    """(ẑ (n, T, d), NaN where an entry it reads is missing; their noise variances v (d,)) for
    Gaussian noise through a per-time matrix H, else None."""
    base = likelihood.base if isinstance(likelihood, MissingEntries) else likelihood
    per_time = likelihood.forward.per_time
    if not (type(base) is GaussianLikelihood and isinstance(per_time, LinearOperator)):
        return None
    rows = split_rows(torch.as_tensor(x, dtype=torch.float64), likelihood)[0]
    if isinstance(likelihood, MissingEntries):
        measured, observed = likelihood.split(rows)
        rows = torch.where(observed > 0, measured, torch.nan)
    series = rows.numpy().reshape(len(x), likelihood.forward.steps, per_time.out_dim)
    pinv = np.linalg.pinv(per_time.matrix.to(torch.float64).numpy())  # (d, m)
    terms = np.where(pinv == 0, 0.0, pinv * series[..., None, :])  # an entry that ẑ_j does not read: not NaN
    noise_var = float(np.mean(base.noise_std.detach().numpy() ** 2)) * (pinv**2).sum(1)
    return terms.sum(-1), noise_var


def _nanmean(values: np.ndarray, axis) -> np.ndarray:
    """The mean over ``axis`` of the finite entries; NaN where there are none."""
    finite = np.isfinite(values)
    count = finite.sum(axis)
    return np.where(finite, values, 0.0).sum(axis) / np.where(count > 0, count, np.nan)


def _ou_start(signals: np.ndarray, noise_var: np.ndarray, step: float) -> dict:
    """μ, Θ and S of :func:`path_start`'s Ornstein–Uhlenbeck start."""
    mean = _nanmean(signals, (0, 1))
    centred = signals - mean
    total = _nanmean(centred**2, (0, 1))
    signal_var = np.maximum(total - noise_var, 0.1 * total)
    rho = np.clip(np.nan_to_num(_nanmean(centred[:, 1:] * centred[:, :-1], (0, 1)) / signal_var, nan=0.5), 0.05, 0.95)
    rate = -np.log(rho) / step
    usable = signal_var > 0  # else (a constant or unseen coordinate) the fallback's rate and variance 1
    fallback = 1 / (5 * step)
    rate, signal_var = np.where(usable, rate, fallback), np.where(usable, signal_var, 1.0)
    return {"drift": np.diag(rate), "mean": np.nan_to_num(mean),
            "diffusion": np.diag(np.sqrt(2 * rate * signal_var))}


def _brownian_start(signals: np.ndarray, noise_var: np.ndarray, steps: np.ndarray) -> dict:
    """S and the start's mean and scale of :func:`path_start`'s Brownian start."""
    squared = (signals[:, 1:] - signals[:, :-1]) ** 2 / steps[:, None]  # (n, T − 1, d)
    raw = _nanmean(squared, (0, 1))
    diffusion_var = np.maximum(_nanmean(squared - 2 * noise_var / steps[:, None], (0, 1)), 0.01 * raw)
    diffusion_var = np.where(np.isfinite(diffusion_var) & (diffusion_var > 0), diffusion_var, 1.0)
    first = np.argmax(np.isfinite(signals), axis=1)  # (n, d): each series' first time point with ẑ_j
    start = np.take_along_axis(signals, first[:, None, :], axis=1)[:, 0]  # (n, d), NaN for a series without ẑ_j
    start_mean = np.nan_to_num(_nanmean(start, 0))
    floor = diffusion_var * np.median(steps)
    start_var = np.maximum(np.nan_to_num(_nanmean((start - start_mean) ** 2, 0) - noise_var), floor)
    return {"diffusion": np.diag(np.sqrt(diffusion_var)), "start_mean": start_mean, "start_scale": np.sqrt(start_var)}
