"""What ``bench_pln.py`` and ``bench_oaks.py`` share: invae's data rows of a Poisson log-normal
table, PlnNetwork's fit as an invae prior, and the one held-out estimator of both benchmarks."""

from __future__ import annotations

import numpy as np

from baselines_speed import _silenced

from invae import GaussianGraphicalModel
from invae.model.forward import LinearOperator
from invae.model.likelihoods import PoissonLikelihood
from invae.references.importance import importance_posterior

IS_DRAWS = 1024  # importance draws per held-out row


def poisson_likelihood(p: int) -> PoissonLikelihood:
    """``x_ij ~ Poisson(exp(o_ij + z_ij))``: data rows carry their offsets."""
    return PoissonLikelihood(LinearOperator.identity(p), offsets=True)


def data_rows(counts: np.ndarray, offsets: np.ndarray, design: np.ndarray) -> np.ndarray:
    """invae's data rows (x, offsets, covariates): counts (n, p), offsets (n,) or (n, p), design (n, k)."""
    return np.hstack([PoissonLikelihood.rows(counts, offsets), design])


def pln_prior(net) -> GaussianGraphicalModel:
    """A fitted PlnNetwork's (μ̂, B̂, Λ̂) as an invae prior; its ``coef`` (1 + k, p) has the
    constant's row first (``add_const=True``)."""
    coef = net.coef.detach().numpy().astype(np.float64)
    return GaussianGraphicalModel(net.precision.numpy().astype(np.float64), location=coef[0],
                                  coefficients=coef[1:].T, fit_intercept=True)


def held_out(prior: GaussianGraphicalModel, rows: np.ndarray, p: int) -> dict:
    """The mean ``log p(x_i; θ̂)`` over data rows by :func:`invae.references.importance.importance_posterior`
    (a Student-t Laplace proposal with a defensive prior component), and its median ESS."""
    post = importance_posterior(rows, prior, poisson_likelihood(p), n_draws=IS_DRAWS, seed=0)
    return {"held_out_log_lik": float(post.log_evidence.mean()), "median_ess": float(post.ess.median())}


def has_pyplnmodels() -> bool:
    try:
        with _silenced(True):
            import pyPLNmodels  # noqa: F401
        return True
    except ImportError:
        print("pyPLNmodels is not installed (bash benchmarks/setup_bench_env.sh): PlnNetwork rows skipped")
        return False
