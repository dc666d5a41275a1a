"""The prior registry: ``invae fit --prior NAME`` and the model files read it.

An entry says which :class:`~invae.model.prior.Prior` class a name stands for, how a fit
starts it from the data, and which command-line options it takes. A model file records
the name, the prior's :meth:`~invae.model.prior.Prior.state` and its
:meth:`~invae.model.prior.Prior.config`, and rebuilds it with ``cls.from_state``; a fit's
summary holds the prior's :meth:`~invae.model.prior.Prior.summary`. So a new prior is one
module plus one ``PRIORS.register`` line.

The path priors (one :class:`~invae.paths.prior.PathPrior` per SDE of
:data:`invae.paths.sde.SDE_PRIORS`: ``ou``, ``brownian``, ``brownian-learned-start``,
``double-well``; docs/methods.md §3.16) are listed here too, so that every prior has one
registry. Their names come from :mod:`invae.paths.sde`, a leaf module; their class and start
from :mod:`invae.paths.prior` and :mod:`invae.paths.start`, imported inside the function that
registers them: the imports from above this layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..paths.sde import SDE_PRIORS  # a leaf module: it imports no other part of invae
from ..registry import Registry
from .ggm import GaussianGraphicalModel
from .likelihoods import GaussianLikelihood, Likelihood
from .mixture import GaussianMixture
from .prior import Prior
from .rows import split_rows

__all__ = ["PriorKind", "StartOptions", "PRIORS", "path_kind", "prior_name"]


@dataclass(frozen=True)
class StartOptions:
    """What a fit's start prior may depend on: the penalty α, K components, the seed, the k
    covariates each data row carries for the prior and whether it estimates a location μ;
    for a path prior the observation times (T,) (None: 0, 1, …, T − 1) and k sub-steps."""

    alpha: float = 0.0
    components: int | None = None
    seed: int = 0
    covariates: int = 0
    fit_intercept: bool = False
    ridge: float = 0.0
    times: np.ndarray | None = None
    substeps: int = 1


@dataclass(frozen=True)
class PriorKind:
    """One registered prior.

    cls : the :class:`Prior` subclass (model files rebuild it with ``cls.from_state``).
    start : callable ``(x, likelihood, options) -> Prior``
        The prior a fit on data rows x (n, data_dim) starts from.
    components : bool
        Takes a number of components K (``--components``).
    selects_penalty : bool
        ``--penalty auto`` can choose its α (:mod:`invae.inference.penalty`).
    location : bool
        Estimates a mean μ that is otherwise fixed (``--fit-mean``; docs/methods.md §3.13).
    covariates : bool
        Takes covariates that move its location (``--covariates``; docs/methods.md §3.13).
    paths : bool
        A law over latent paths (:mod:`invae.paths`): its data are series (n, T, m), and it
        takes the path methods only (``markov``, ``kalman``).
    matches : callable ``prior -> bool`` or None
        Whether a prior is this entry (how a model file names it); None: ``type(prior) is cls``.
        Needed where several entries share a class (the path priors, one per SDE).
    """

    cls: type[Prior]
    start: Callable[[np.ndarray, Likelihood, StartOptions], Prior]
    components: bool = False
    selects_penalty: bool = False
    location: bool = False
    covariates: bool = False
    paths: bool = False
    matches: Callable[[Prior], bool] | None = None

    def describes(self, prior: Prior) -> bool:
        """Whether ``prior`` is one of this entry's (``matches``, else its class)."""
        return self.matches(prior) if self.matches is not None else type(prior) is self.cls


def _ggm_start(x: np.ndarray, likelihood: Likelihood, options: StartOptions) -> GaussianGraphicalModel:
    """Λ = I, the uninformed start (μ = 0 and B = 0 where they are fitted)."""
    return GaussianGraphicalModel(dim=likelihood.forward.in_dim, alpha=options.alpha, covariates=options.covariates,
                                  fit_intercept=options.fit_intercept, ridge=options.ridge)


def _mixture_start(x: np.ndarray, likelihood: Likelihood, options: StartOptions) -> GaussianMixture:
    """A mixture fitted to the naive signals A⁺x where the model is linear-Gaussian (components
    placed by k-means, as scikit-learn starts EM), else spread at random; the covariates'
    effects B_k = 0 (the means always fitted, ``fit_intercept`` has nothing to add)."""
    settings = {"alpha": options.alpha, "seed": options.seed, "covariates": options.covariates}
    if isinstance(likelihood, GaussianLikelihood) and likelihood.is_linear:
        measured = split_rows(torch.as_tensor(x, dtype=torch.float64), likelihood)[0]
        return GaussianMixture.from_signals(likelihood.forward.pinv(measured), options.components, **settings)
    return GaussianMixture.standard(likelihood.forward.in_dim, options.components, **settings)


def path_kind(sde: str) -> PriorKind:
    """The entry of the path prior of the SDE registered as ``sde`` (:data:`invae.paths.sde.SDE_PRIORS`),
    started by :func:`invae.paths.start.path_start`."""
    from ..paths.prior import PathPrior  # paths sits beside model: imported where its priors register
    from ..paths.start import path_start

    def start(x: np.ndarray, likelihood: Likelihood, options: StartOptions) -> Prior:
        return path_start(sde, x, likelihood, options.times, options.substeps)

    return PriorKind(PathPrior, start, paths=True,
                     matches=lambda prior: isinstance(prior, PathPrior) and prior.config()["sde"] == sde)


PRIORS: Registry[PriorKind] = Registry("prior")
PRIORS.register("ggm", PriorKind(GaussianGraphicalModel, _ggm_start, selects_penalty=True, location=True,
                                  covariates=True))
PRIORS.register("gmm", PriorKind(GaussianMixture, _mixture_start, components=True, covariates=True))
for _sde in SDE_PRIORS:
    PRIORS.register(_sde, path_kind(_sde))


def prior_name(prior: Prior) -> str:
    """The registered name of ``prior`` (:meth:`PriorKind.describes`)."""
    return PRIORS.find(lambda kind: kind.describes(prior), f"a {type(prior).__name__} (invae.model.priors.PRIORS)")
