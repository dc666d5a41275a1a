"""Choosing the penalty α from the data (``--penalty auto``).

A path of penalties ``α_1 > α_2 > … > α_K``, geometric from ``α_max`` down to
``ratio · α_max``. ``α_max = max_{i≠j} |S_ij|``, the smallest α that makes the graphical
lasso on ``S`` return a diagonal Λ̂ (scikit-learn's ``GraphicalLassoCV`` starts its grid
the same way), for ``S`` the signals' second moment at the start prior: one exact E-step
(``S = Σ_post + (1/n) Σ_i μ_i μ_iᵀ``) where the model is linear-Gaussian, else the second
moment of the naive reconstructions ``A⁺ g(x)``, g the likelihood's
:meth:`~invae.model.likelihoods.Likelihood.link_scale` (counts: ``log(x + ½) − o``; raw
counts put ``α_max`` in the hundreds on the 8 most abundant oak taxa), about the fitted
location where there is one. (``A⁺x`` alone is no anchor where A is
ill-conditioned: for a square Gaussian A at p = 50 it put ``α_max`` near 2·10⁶.) The fits
walk the path from large to small α, each warm-started from the previous one
(``warm_start=True``: its Λ̂, and for ``VariationalEB`` its posterior network too).

Two criteria:

- ``"held-out"`` (default): fit on a random ``1 − holdout`` of the rows and score the rest
  by the mean exact marginal log-likelihood ``log p(x; Λ̂)`` where the model is
  linear-Gaussian (:func:`invae.references.exact.marginal_log_likelihood`), else by importance
  sampling (:func:`invae.references.importance.importance_posterior`: a Laplace proposal per
  row, the same seeded draws for every α, at most ``_SCORED_ROWS`` held-out rows). Not by the
  held-out ELBO: q's amortisation gap on rows the encoder never saw is part of that, and on a
  few dozen rows it swamps the penalty's effect (docs/methods.md §3.3).
  The best α is refitted on all rows, started from its Λ̂.
- ``"ebic"``: fit on all rows and minimise the extended BIC of Foygel & Drton (2010),
  ``EBIC_γ = −2 ℓ(Λ̂) + |E| log n + 4 γ |E| log p``, with ``ℓ`` the total log-likelihood
  (or the ELBO where it is not exact) and ``|E|`` the number of edges of Λ̂.

Both criteria's values are recorded along the path (EBIC on the rows each fit saw).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..model.forward import LinearOperator
from ..model.likelihoods import Likelihood
from ..model.prior import Prior
from ..model.rows import row_dim, split_rows
from ..references.exact import exact_posterior, has_exact_evidence, mean_log_likelihood
from ..references.importance import importance_posterior
from ..validation import check_data
from .base import EmpiricalBayesEstimator, progress_disabled

__all__ = ["PenaltyPath", "penalty_grid", "select_penalty", "CRITERIA"]

CRITERIA = ("held-out", "ebic")
_SCORED_ROWS = 1000  # held-out rows scored by importance sampling: every α is scored on the same ones
_SCORE_DRAWS = 256  # its draws per row; log p's bias is about −1/(2 ESS) per row, alike for every α


@dataclass(frozen=True)
class PenaltyPath:
    """The penalties tried, large to small, and what each scored.

    ``score``: mean held-out log-likelihood ``log p(x; θ̂)`` per row, NaN
    under ``"ebic"``; ``ebic``: EBIC_γ of the fit on the rows it saw; ``edges``: |E| of Λ̂.
    """

    alphas: tuple[float, ...]
    score: tuple[float, ...]
    ebic: tuple[float, ...]
    edges: tuple[int, ...]
    criterion: str
    alpha: float

    def to_dict(self) -> dict:
        """Plain lists and numbers for JSON (NaN scores become None)."""
        def plain(value):
            return None if isinstance(value, float) and math.isnan(value) else value
        return {key: [plain(v) for v in value] if isinstance(value, tuple) else plain(value)
                for key, value in asdict(self).items()}


def penalty_grid(X, prior: Prior, likelihood: Likelihood, n_alphas: int = 8, ratio: float = 0.01) -> np.ndarray:
    """``n_alphas`` penalties from ``α_max`` down to ``ratio · α_max``, geometric, shape (n_alphas,).

    ``α_max = max_{i≠j} |S_ij|`` for S (p, p) the second moment of the signals under
    ``prior`` (the start values), see the module docstring; X is (n, m).
    """
    x = torch.as_tensor(check_data(X, columns=row_dim(prior, likelihood)), dtype=torch.float64)
    prior, likelihood = prior.to("cpu", torch.float64), likelihood.to("cpu", torch.float64)
    measured, covariates = split_rows(x, likelihood)
    if has_exact_evidence(prior, likelihood):
        mean, cov = exact_posterior(x, prior, likelihood)  # cov (p, p), or (n, p, p) with one σ_i per row
        statistics = prior.gaussian_statistics(mean, cov, covariates=covariates)
    elif isinstance(likelihood.forward, LinearOperator):
        # the measurements on G(z)'s scale (counts: log(x + ½) less the offsets; a missing entry
        # counts as 0 here, which only moves the grid's anchor)
        statistics = prior.statistics(likelihood.forward.pinv(likelihood.link_scale(measured)), covariates=covariates)
    else:
        raise ValueError("the default penalty grid needs a linear forward matrix; give the penalties (alphas) "
                         "or a fixed --penalty")
    s = prior.location_fit(statistics)[1].numpy()  # about the fitted location, where there is one
    largest = np.abs(s - np.diag(np.diag(s))).max()
    if not largest > 0:
        raise ValueError("the data show no dependence between coordinates: every penalty gives a diagonal Λ̂")
    return largest * np.geomspace(1.0, ratio, n_alphas)


def select_penalty(estimator: EmpiricalBayesEstimator, X, *, criterion: str = "held-out",
                   alphas=None, holdout: float = 0.2, gamma: float = 0.5, seed: int = 0,
                   verbose: bool = False) -> tuple[EmpiricalBayesEstimator, PenaltyPath]:
    """Fit ``estimator`` along a penalty path and return it fitted at the chosen α.

    Parameters
    ----------
    estimator : EmpiricalBayesEstimator
        A template (left unchanged); its prior's own α is ignored.
    X : array (n, m)
    criterion : {"held-out", "ebic"}
        See the module docstring.
    alphas : sequence of float, optional
        The path, sorted here from large to small; default :func:`penalty_grid`.
    holdout : float
        Share of rows held out under ``"held-out"``, in (0, 1).
    gamma : float
        EBIC's γ in [0, 1] (0 is BIC; 0.5 is Foygel & Drton's default).
    seed : int
        Seeds the held-out split.
    verbose : bool or int
        A progress bar over the path (see :func:`invae.inference.base.progress_disabled`).

    Returns
    -------
    (estimator, path): a copy of ``estimator`` fitted on all rows at ``path.alpha``, and the
    :class:`PenaltyPath` (every α tried, its scores, the chosen α).
    """
    _check_options(criterion, holdout, gamma)
    x = check_data(X, columns=row_dim(estimator.prior, estimator.likelihood))
    alphas = np.sort(np.asarray(penalty_grid(x, estimator.prior, estimator.likelihood) if alphas is None else alphas,
                                dtype=float))[::-1]
    if len(alphas) == 0 or not np.all(alphas >= 0):
        raise ValueError("alphas must be a non-empty sequence of penalties >= 0")
    train, test = _split(x, holdout, seed) if criterion == "held-out" else (x, None)
    walker = copy.deepcopy(estimator)
    walker.warm_start = True
    scores, ebics, edges = [], [], []
    best, chosen, best_value = 0, None, -math.inf
    for k, alpha in enumerate(tqdm(alphas, desc="penalty path", disable=progress_disabled(verbose), leave=False)):
        walker.prior = estimator.prior.with_penalty(alpha)
        walker.fit(train)
        edges.append(walker.prior_.summary()["edges"])
        ebics.append(_ebic(walker, train, edges[-1], gamma))
        scores.append(_mean_log_likelihood(walker, test) if test is not None else math.nan)
        value = scores[-1] if criterion == "held-out" else -ebics[-1]
        if chosen is None or value > best_value:
            best, chosen, best_value = k, copy.deepcopy(walker), value
    if criterion == "held-out":
        chosen.fit(x)  # refit on all rows, warm-started from its Λ̂ (and posterior network)
    chosen.warm_start = estimator.warm_start
    return chosen, PenaltyPath(alphas=tuple(float(a) for a in alphas), score=tuple(scores), ebic=tuple(ebics),
                               edges=tuple(edges), criterion=criterion, alpha=float(alphas[best]))


def _check_options(criterion: str, holdout: float, gamma: float) -> None:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown penalty criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must lie in (0, 1), got {holdout}")
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")


def _ebic(fitted: EmpiricalBayesEstimator, x: np.ndarray, edges: int, gamma: float) -> float:
    """``EBIC_γ = −2 ℓ + |E| log n + 4 γ |E| log p`` of a fit on the rows x."""
    total = len(x) * _mean_log_likelihood(fitted, x)
    return -2 * total + edges * (math.log(len(x)) + 4 * gamma * math.log(fitted.prior.dim))


def _split(x: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows): a random ``holdout`` share of x held out."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, round(holdout * len(x)))
    if len(x) - n_test < 2:
        raise ValueError(f"{len(x)} rows are too few to hold {holdout:.0%} out")
    return x[order[n_test:]], x[order[:n_test]]


def _mean_log_likelihood(estimator: EmpiricalBayesEstimator, x: np.ndarray) -> float:
    """Mean ``log p(x_i; θ̂)`` over the held-out rows x (n, m): exact where linear-Gaussian, else
    by importance sampling over the first ``_SCORED_ROWS`` of them (module docstring)."""
    if has_exact_evidence(estimator.prior_, estimator.likelihood_):
        return mean_log_likelihood(x, estimator.prior_, estimator.likelihood_)
    estimate = importance_posterior(x[:_SCORED_ROWS], estimator.prior_, estimator.likelihood_,
                                    n_draws=_SCORE_DRAWS, seed=0)
    return float(estimate.log_evidence.mean())
