"""One entry point for every normal-means method: ``fit_normal_means(x, sigma, method)``.

``z_i ~ g``, ``x_i | z_i ~ N(z_i, σ_i²)`` with σ_i known; with covariates, g is shifted to
c_iᵀβ (:mod:`~invae.normal_means.covariates`). The methods:

- ``naive``: ẑ_i = x_i (the posterior under a flat prior: sd σ_i, lfsr Φ(−|x_i|/σ_i));
- ``james-stein`` / ``normal-ml``: a normal prior by moments / marginal ML
  (:mod:`~invae.normal_means.normal_prior`);
- ``npmle``: the Kiefer–Wolfowitz NPMLE (:mod:`~invae.normal_means.npmle`);
- ``log-spline``: Efron's g-model (:mod:`~invae.normal_means.log_spline`);
- ``rank-matching``: the source's order-statistics estimator on the NPMLE prior
  (:func:`invae.references.baselines.rank_matching`), ranking the NPMLE's posterior means
  (with one σ, the data's order; with σ_i varying, they put a noisy x_i where it belongs);
- ``vae``: the VAE-like estimator, a Gaussian-mixture prior with a mixture posterior: q set to
  the exact posterior at each iteration, which makes the fit EM
  (:mod:`~invae.normal_means.deconvolution`), or with ``closed_form=False`` ``VariationalEB``'s
  encoder trained by Adam (:mod:`~invae.normal_means.variational`).

With ``null`` (a value ν, or "empirical"), ``npmle``, ``log-spline`` and ``vae`` estimate the
two-groups prior ``π₀ δ(ν) + (1 − π₀) g₁`` and report lfdr (:mod:`~invae.normal_means.null`).

The torch-based modules (``vae``'s with ``closed_form=False``, and :mod:`invae.references.baselines` for rank matching)
are imported by the methods that use them, so that the others (``invae eb``) run without torch.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import ndtr

from ..app.covariates import design_matrix
from .covariates import location_fit
from .deconvolution import deconvolve, posterior_summaries
from .grid import (GridPrior, NormalMeansPosterior, default_grid, discretize, grid_posterior, log_marginal, normal_cdf,
                   with_null_atom)
from .log_spline import log_spline
from .normal_prior import fit_normal_prior
from .npmle import npmle
from .null import NullFit, specify_null

__all__ = ["NORMAL_MEANS_METHODS", "NULL_METHODS", "NPMLE_NULL_MARGIN", "NormalMeansFit", "fit_normal_means"]

NORMAL_MEANS_METHODS = ("naive", "james-stein", "normal-ml", "npmle", "log-spline", "rank-matching", "vae")
NULL_METHODS = ("npmle", "log-spline", "vae")  # the methods whose prior takes a null spike (lfdr)
# The NPMLE's non-null atoms keep this many noise sds (the median σ_i) from the null value:
# the NPMLE alone cannot tell a point mass from atoms a fraction of σ beside it, so its π₀
# would move with the grid (docs/methods.md §3.10.7); effects this close count as null.
NPMLE_NULL_MARGIN = 1.0


@dataclass(frozen=True)
class NormalMeansFit:
    """What a method gives, for n observations.

    ``mean`` (n,): the estimates of z_i (posterior means, or rank-matched values);
    ``std``, ``lfsr``, ``lfdr`` (n,) or None where the method has none (rank matching
    is a point estimate; lfdr needs a null); ``prior``: the
    estimated g on a grid (continuous priors put on it cell by cell), None for naive;
    ``location`` (n,): c_iᵀβ̂ (zeros without covariates); ``coefficients``: β̂ by design
    column name (``intercept``, ``c0``, ``c0=label``, …) or None;
    ``log_likelihood``: the marginal Σ_i log f(x_i) under the estimated prior on its grid
    (None for naive); ``seconds``: the method's wall time; ``details``: solver facts;
    ``null``: the two-groups null (ν, its scale and π̂₀) when one was asked for.
    """

    method: str
    mean: np.ndarray
    std: np.ndarray | None
    lfsr: np.ndarray | None
    lfdr: np.ndarray | None
    prior: GridPrior | None
    location: np.ndarray
    coefficients: dict[str, float] | None
    log_likelihood: float | None
    seconds: float
    details: dict
    null: NullFit | None = None


def fit_normal_means(x, sigma, method: str = "npmle", *, covariates: dict[str, np.ndarray] | list | None = None,
                     grid: np.ndarray | int = 300, null: float | Literal["empirical"] | None = None, seed: int = 0,
                     **options) -> NormalMeansFit:
    """Estimate g and every z_i from ``x`` (n,) and known noise sds ``sigma`` (n,) or a scalar.

    ``covariates``: columns (each (n,), numbers or text labels; a dict names them) on which
    g's location depends; ``grid``: the atoms for the grid priors, or their number (equally spaced over
    the range of x − c_iᵀβ̂; :func:`~invae.normal_means.grid.default_grid`); ``null``: the null
    value ν of a two-groups prior with a spike at ν, or "empirical" (Efron's central matching),
    for lfdr (``npmle``, ``log-spline``, ``vae``; no covariates); ``options`` go to the method's
    solver (e.g. ``solver="em"`` for npmle, ``df`` for log-spline, ``components``, ``max_iter`` and
    ``tol`` for vae; with ``closed_form=False``, vae by Adam takes any ``VariationalEB`` setting).
    """
    if method not in NORMAL_MEANS_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(NORMAL_MEANS_METHODS)}")
    x, sigma = _checked(x, sigma)
    start = time.perf_counter()
    null_fit = None if null is None else _null_for(method, null, x, sigma, covariates)
    if null_fit is not None:
        sigma = null_fit.scale * sigma
    coefficients, location = _location(x, covariates)
    residual = x - location
    null_value = None if null_fit is None else null_fit.value
    atoms = _atoms(residual, grid, null_value, NPMLE_NULL_MARGIN * float(np.median(sigma)) if method == "npmle" else 0)
    shift = location if coefficients is not None else None
    prior, posterior, details = _fit(method, x, sigma, shift, atoms, seed, options, null_value)
    if null_fit is not None:
        null_fit = null_fit.with_proportion(prior.masses[prior.atoms == null_value].sum())
    mean, std, lfsr, lfdr = posterior.mean, posterior.std, posterior.lfsr, posterior.lfdr
    if method == "rank-matching":
        from ..references.baselines import rank_matching

        mean, std, lfsr, lfdr = location + rank_matching(mean - location, prior.quantile), None, None, None
    log_likelihood = None if prior is None else float(log_marginal(residual, sigma, prior).sum())
    return NormalMeansFit(method, mean, std, lfsr, lfdr, prior, location, coefficients, log_likelihood,
                          time.perf_counter() - start, details, null_fit)


def _location(x: np.ndarray, covariates) -> tuple[dict[str, float] | None, np.ndarray]:
    """(β̂ by design column name, c_iᵀβ̂ (n,)), or (None, zeros) without covariates."""
    if covariates is None or not len(covariates):
        return None, np.zeros_like(x)
    design, names = design_matrix(covariates)
    beta, location = location_fit(x, design)
    return dict(zip(names, beta.tolist())), location


def _null_for(method: str, null, x: np.ndarray, sigma: np.ndarray, covariates) -> NullFit:
    if method not in NULL_METHODS:
        raise ValueError(f"a null (lfdr) needs a prior with a point mass: method {' or '.join(NULL_METHODS)}, "
                         f"not {method}")
    if covariates is not None and len(covariates):
        raise ValueError("a null (lfdr) cannot be combined with covariates: the null value is an atom "
                         "of z_i's prior only without them")
    return specify_null(null, x, sigma)


def _fit(method, x, sigma, location, atoms, seed, options, null) -> tuple[GridPrior | None, NormalMeansPosterior, dict]:
    """(the estimated prior of θ = z − ℓ on the grid, z's posterior, solver facts); ``null``:
    the null value ν of the prior's spike (an atom of npmle's and log-spline's grid), or None."""
    residual = x if location is None else x - location
    if method == "naive":
        return None, NormalMeansPosterior(x.copy(), sigma.copy(), ndtr(-np.abs(x) / sigma), None), {}
    if method in ("james-stein", "normal-ml"):
        normal = fit_normal_prior(residual, sigma, "ml" if method == "normal-ml" else "james-stein")
        mean, std, lfsr = normal.posterior(x, sigma, location)
        prior = discretize(normal_cdf(normal.mean, normal.variance ** 0.5), atoms)
        return prior, NormalMeansPosterior(mean, std, lfsr, None), {"prior_mean": normal.mean,
                                                                     "prior_variance": normal.variance}
    if method in ("npmle", "rank-matching", "log-spline"):
        if method == "log-spline":
            result = log_spline(residual, sigma, atoms, null=null, **options)
            details = {"converged": result.converged}
        else:
            result = npmle(residual, sigma, atoms, **options)
            details = {"solver_iterations": result.n_iter, "optimality_gap": result.gap,
                       "converged": result.converged}
        return result.prior, grid_posterior(x, sigma, result.prior, location, null), details
    return _vae(x, sigma, location, atoms, seed, options, null, residual)


def _vae(x, sigma, location, atoms, seed, options, null, residual) -> tuple[GridPrior, NormalMeansPosterior, dict]:
    """``_fit`` for vae: EM with q the exact posterior, or with ``closed_form=False`` in
    ``options``, ``VariationalEB``'s encoder trained by Adam (no null spike)."""
    if options.pop("closed_form", True):
        return _vae_by_em(x, sigma, location, atoms, options, null, residual)
    if null is not None:
        raise ValueError("a null spike needs vae's closed-form fit (drop closed_form=False, --adam)")
    from .variational import as_mixture_prior, variational_normal_means

    estimator, posterior = variational_normal_means(x, sigma, location=location, seed=seed, **options)
    details = {"iterations": estimator.n_iter_, "converged": estimator.converged_,
               "elbo": estimator.history_["elbo"][-1], "closed_form": False}
    return as_mixture_prior(estimator.prior_).on_grid(atoms), posterior, details


def _vae_by_em(x, sigma, location, atoms, options, null, residual) -> tuple[GridPrior, NormalMeansPosterior, dict]:
    unknown = options.keys() - {"components", "max_iter", "tol"}
    if unknown:
        raise ValueError(f"the closed-form vae takes components, max_iter and tol, not {', '.join(sorted(unknown))}")
    fit = deconvolve(residual, sigma, null=null, **options)
    if not fit.converged:
        from sklearn.exceptions import ConvergenceWarning  # scikit-learn's warning, imported only to warn

        warnings.warn(f"vae's EM stopped at max_iter={fit.n_iter} before its likelihood settled; raise max_iter "
                      "or tol", ConvergenceWarning, stacklevel=5)
    details = {"iterations": fit.n_iter, "converged": fit.converged, "closed_form": True}
    return fit.prior.on_grid(atoms), posterior_summaries(x, sigma, fit.prior, location), details


def _atoms(residual: np.ndarray, grid: np.ndarray | int, null: float | None, margin: float) -> np.ndarray:
    """The grid's atoms; with a null value, ν among them and the atoms within ``margin`` of it
    gone (npmle's margin: docs/methods.md §3.10.7)."""
    if np.ndim(grid) == 0 and int(grid) < 2:
        raise ValueError(f"the grid needs at least 2 atoms, got {grid!r}")
    atoms = default_grid(residual, int(grid)) if np.ndim(grid) == 0 else np.asarray(grid, dtype=np.float64)
    return atoms if null is None else with_null_atom(atoms, null, margin)


def _checked(x, sigma) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or len(x) < 4:
        raise ValueError(f"x must be one number per observation, at least 4; got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ValueError(f"x holds a non-finite value (row {bad})")
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), x.shape).copy()
    if not (np.isfinite(sigma).all() and (sigma > 0).all()):
        bad = int(np.flatnonzero(~(np.isfinite(sigma) & (sigma > 0)))[0])
        raise ValueError(f"every noise sd σ_i must be finite and > 0; row {bad} has {sigma[bad]!r}")
    return x, sigma
