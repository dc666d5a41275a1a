"""Kalman EM as an invae estimator (``invae fit --method kalman``): the exact reference for a
linear SDE prior (Ornstein–Uhlenbeck, Brownian) seen through Gaussian noise by a per-time
matrix H (docs/methods.md §3.16).

The model of :mod:`invae.paths.kalman_em`: n series, each a data row (its T × m measurements
flattened time-major, :mod:`invae.paths.observation`; missing entries as
:class:`~invae.model.missing.MissingEntries` marks them), ``x_t = H z(t_t) + v_t``,
``v_t ~ N(0, diag(r))`` with r = σ² known, or learned with θ (a likelihood with ``learn_noise``:
one r_j per sensor). :class:`KalmanEM` fits θ (and r) by
:func:`~invae.paths.kalman_em.kalman_em` (the MLE: its log-likelihood never falls), and answers
posterior questions by the RTS smoother at θ̂ on the prior's latent grid (the observation
times refined k-fold; the sub-steps are times where nothing is observed), flattened as the
path prior flattens z, so that it stands in for the ``markov`` family wherever that does.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from ..inference.base import EmpiricalBayesEstimator
from ..model.forward import LinearOperator
from ..model.likelihoods import GaussianLikelihood, Likelihood
from ..model.missing import MissingEntries
from ..model.rows import split_rows
from ..paths.kalman import kalman_filter, rts_smoother
from ..paths.kalman_em import kalman_em, state_space
from ..paths.observation import PathOperator
from ..paths.prior import PathPrior

__all__ = ["KalmanEM", "has_kalman", "kalman_log_likelihood", "measurement_model"]


class KalmanEM(EmpiricalBayesEstimator):
    """θ's maximum likelihood by Kalman EM, and the exact posterior paths at θ̂.

    Parameters
    ----------
    prior : PathPrior
        A linear SDE's path prior (``ou``, ``brownian``): θ's start, the times and sub-steps.
    likelihood : GaussianLikelihood or MissingEntries of one
        ``x = PathOperator(H)(z) + σ ε``, σ one number (or one per sensor, the same at every time);
        with ``learn_noise`` σ is learned too (EM's closed-form update), one per sensor, from there.
    max_iter, tol : int, float
        EM's iteration cap and relative change of the log-likelihood at which it stops
        (:func:`~invae.paths.kalman_em.kalman_em`); a ``ConvergenceWarning`` at the cap.
    n_threads : int or None
        torch threads during ``fit`` (:mod:`invae.threads`).

    Attributes
    ----------
    prior_ : PathPrior
        θ̂, on the prior's times and grid.
    likelihood_ : GaussianLikelihood or MissingEntries of one
        The likelihood at σ̂ where σ was learned (one per sensor), else the one given.
    log_likelihood_ : float
        ``Σ_series log p(x; θ̂)``, exact (the Kalman filter's).
    history_ : dict
        ``objective``: the log-likelihood per series at the start and after each iteration;
        ``time``: seconds since the start of ``fit`` (kalman_em keeps no clock per iteration:
        the fit's time is spread evenly over them).
    n_iter_ : int
    converged_ : bool
    """

    def __init__(self, prior: PathPrior, likelihood: Likelihood, *, max_iter: int = 200, tol: float = 1e-8,
                 warm_start: bool = False, n_threads: int | None = None, device: str = "cpu",
                 dtype: torch.dtype = torch.float64):
        super().__init__(prior, likelihood, warm_start=warm_start, device=device, dtype=dtype)
        self.max_iter = max_iter
        self.tol = tol
        self.n_threads = n_threads

    def fit(self, X) -> KalmanEM:
        """θ̂ from the data rows X (n series, T m columns, and T m observed indicators with missing entries)."""
        H, noise_var = measurement_model(self.prior, self.likelihood)
        x = self._tensor(X)
        prior, likelihood = self._models()
        series = _series(x, likelihood)
        start = time.perf_counter()
        learn_noise = _base(likelihood).learn_noise
        result = kalman_em(series, prior.sde(), prior.times, H.to(x), noise_var.to(x), learn_noise=learn_noise,
                           max_iter=self.max_iter, tol=self.tol, n_threads=self.n_threads)
        seconds = time.perf_counter() - start
        self.prior_ = PathPrior(result.prior, prior.times, prior.substeps).to(self.device, self.dtype)
        self.likelihood_ = _at_noise(likelihood, result.noise_var.sqrt()) if learn_noise else likelihood
        self.log_likelihood_ = result.log_likelihood
        self.history_ = {"objective": [value / len(series) for value in result.history],
                         "time": np.linspace(0.0, seconds, len(result.history)).tolist()}
        self.n_iter_, self.converged_ = result.n_iter, result.converged
        return self

    @torch.no_grad()
    def _posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The RTS smoother's means and marginal sds at θ̂ on the grid, (n, G d) each."""
        smoothed = _smoothed(x, self.prior_, self.likelihood_)
        return smoothed.mean.flatten(1), smoothed.cov.diagonal(dim1=-2, dim2=-1).sqrt().flatten(1)


def measurement_model(prior, likelihood: Likelihood) -> tuple[Tensor, Tensor]:
    """(H (m, d), the noise variances r (m,)) of a path prior seen through ``likelihood`` (a
    learned σ at its current value), float64; a one-line ``ValueError`` where Kalman's formulas
    do not hold (a nonlinear drift, non-Gaussian noise, a sensor that is not a matrix)."""
    if not isinstance(prior, PathPrior):
        raise ValueError(f"kalman fits a path prior (--prior ou, brownian), got {type(prior).__name__}")
    if not prior.has_m_step:
        raise ValueError(f"kalman needs a linear SDE (--prior ou, brownian); the {prior.config()['sde']} drift is "
                         "nonlinear: use --method markov")
    base = _base(likelihood)
    if type(base) is not GaussianLikelihood:
        raise ValueError(f"kalman needs Gaussian noise (its exact formulas), got {type(base).__name__}: "
                         "use --method markov")
    operator = base.forward
    if not (isinstance(operator, PathOperator) and isinstance(operator.per_time, LinearOperator)):
        raise ValueError(f"kalman needs a per-time forward matrix H (a PathOperator of a LinearOperator), got "
                         f"{operator!r}: use --method markov")
    if operator.grid_points * operator.per_time.in_dim != prior.dim:
        raise ValueError(f"the forward operator reads paths of {operator.in_dim} values, the prior has {prior.dim}")
    m, steps = operator.per_time.out_dim, operator.steps
    std = base.noise_std.detach().to(torch.float64).reshape(-1)
    if std.numel() == steps * m:
        per_time = std.reshape(steps, m)
        if not bool((per_time == per_time[0]).all()):
            raise ValueError("kalman takes one noise level per sensor, the same at every time")
        std = per_time[0]
    if std.numel() not in (1, m):
        raise ValueError(f"kalman takes one noise level, or one per sensor ({m},); got {std.numel()} values")
    return operator.per_time.matrix.to(torch.float64), (std**2).expand(m).clone()


def has_kalman(prior, likelihood: Likelihood) -> bool:
    """Whether :func:`measurement_model` holds: Kalman's exact evidence and posterior exist."""
    try:
        measurement_model(prior, likelihood)
    except ValueError:
        return False
    return True


def kalman_log_likelihood(X, prior: PathPrior, likelihood: Likelihood) -> float:
    """``Σ_series log p(x; θ)`` of the data rows X under ``prior``'s θ, exact (the Kalman filter),
    in float64 on the CPU; where :func:`has_kalman` holds."""
    H, noise_var = measurement_model(prior, likelihood)
    prior, likelihood = prior.to("cpu", torch.float64), likelihood.to("cpu", torch.float64)
    series = _series(torch.as_tensor(np.asarray(X), dtype=torch.float64), likelihood)
    model = state_space(prior.sde(), prior.times, H, noise_var)
    with torch.no_grad():
        return float(kalman_filter(series, model).log_likelihood.sum())


def _base(likelihood: Likelihood) -> Likelihood:
    """The noise model of ``likelihood`` (itself, or what :class:`MissingEntries` wraps)."""
    return likelihood.base if isinstance(likelihood, MissingEntries) else likelihood


def _at_noise(likelihood: Likelihood, noise_std: Tensor) -> Likelihood:
    """``likelihood`` (a Gaussian one, or missing entries of one) at the noise levels ``noise_std``
    (m,), still marked as learned."""
    base = _base(likelihood)
    fitted = GaussianLikelihood(base.forward, noise_std.detach().to(torch.float64), learn_noise=True)
    return MissingEntries(fitted) if isinstance(likelihood, MissingEntries) else fitted


def _series(x: Tensor, likelihood: Likelihood) -> Tensor:
    """The data rows x (n, row columns) as series (n, T, m), NaN where an entry is missing."""
    rows = split_rows(x, likelihood)[0]
    if isinstance(likelihood, MissingEntries):
        measured, observed = likelihood.split(rows)
        rows = torch.where(observed > 0, measured, torch.nan)
    operator = likelihood.forward
    return rows.reshape(len(rows), operator.steps, operator.per_time.out_dim)


def _smoothed(x: Tensor, prior: PathPrior, likelihood: Likelihood):
    """The RTS smoother of the data rows x on the prior's grid (the sub-steps observe nothing)."""
    H, noise_var = measurement_model(prior, likelihood)
    series = _series(x, likelihood)
    on_grid = series.new_full((len(series), len(prior.grid), series.shape[-1]), torch.nan)
    on_grid[:, prior.observed_index] = series
    model = state_space(prior.sde(), prior.grid, H.to(x), noise_var.to(x))
    return rts_smoother(on_grid, model)
