"""The registry of posterior families: how :class:`~invae.inference.estimator.VariationalEB`
builds each ``q_φ(z | x)`` of :mod:`invae.inference.posteriors`, and what sets it apart.

Each family is also an ``invae fit --method`` (its ``method`` name); a family over rows and
one over paths may share a name, and the prior picks between them (``iaf``:
:mod:`invae.app.methods`). A new family is one module (an ``nn.Module`` whose
``forward(x, index)`` returns a distribution with batch shape (B,) and event shape (p,)) plus
one ``FAMILIES.register`` line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from ..model.missing import MissingEntries
from ..paths.encoder import PathEncoder
from ..paths.flow import PathIAFEncoder
from ..paths.prior import PathPrior
from ..registry import Registry
from .posteriors import (FullCovarianceEncoder, GaussianEncoder, IAFEncoder, LowRankEncoder, MeanFieldFactors,
                         MixtureEncoder)

__all__ = ["PosteriorFamily", "FAMILIES", "parallel_methods", "posterior_components"]


@dataclass(frozen=True)
class PosteriorFamily:
    """One posterior family.

    build : callable ``(estimator, n, m) -> nn.Module``
        The untrained module for n rows of m data columns; it reads the estimator's public
        settings (``prior``, ``likelihood``, ``hidden``, ``flow_steps``, …).
    method : str
        Its name as an ``invae fit --method``; at most one family over rows and one over paths
        (``paths``) per name.
    amortized : bool
        One network for every x (new rows need no training; inputs standardised by the
        training data through the module's ``standardize_with(x)``), rather than free
        factors per row.
    defaults : mapping
        Optimiser settings of the ``"default"`` preset that differ for this family
        (:data:`invae.inference.estimator.PRESETS`).
    paths : bool
        q is a law over latent paths (:mod:`invae.paths`): it needs a path prior.
    parallel : bool
        It fits over several processes (:mod:`invae.inference.parallel`): q draws from given
        noise (:func:`~invae.inference.parallel.reparameterised`) and its module's
        ``standardize_with(x, shard)`` standardises by every process's rows.
    diagonal : bool
        q factorises over the coordinates of z. Such a family cannot identify the prior
        through a forward matrix of rank < p: its optimum runs away (EM with a diagonal
        E-step diverges; docs/benchmarks.md, bench_vae's compressive rows), so
        :class:`~invae.inference.estimator.VariationalEB` refuses that case unless told.
    """

    build: Callable[[Any, int, int], nn.Module]
    method: str
    amortized: bool = True
    defaults: Mapping[str, Any] = field(default_factory=dict)
    diagonal: bool = False
    paths: bool = False
    parallel: bool = False

    def __post_init__(self):
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


def _encoder(cls, **options: Callable[[Any], Any]):
    """A builder for an amortized encoder class; ``options`` read further arguments off the estimator."""
    def build(estimator, n: int, m: int) -> nn.Module:
        extra = {key: read(estimator) for key, read in options.items()}
        return cls(m, estimator.prior.dim, tuple(estimator.hidden), log1p=estimator.likelihood.encoder_log1p,
                   raw_columns=m - estimator.likelihood.forward.out_dim, **extra)
    return build


def _path_encoder(cls, **options: Callable[[Any], Any]):
    """A builder for a posterior over a path prior's series (``cls`` takes PathEncoder's
    arguments), in units of its start law; ``options`` read further arguments off the estimator."""
    def build(estimator, n: int, m: int) -> nn.Module:
        prior, likelihood = estimator.prior, estimator.likelihood
        if not isinstance(prior, PathPrior):
            raise ValueError(f"the {estimator.family} family is a posterior over paths: it needs a path prior, "
                             f"got {type(prior).__name__}")
        extra = {key: read(estimator) for key, read in options.items()}
        return cls(prior.grid, prior.substeps, likelihood.forward.per_time.out_dim, prior.sde_dim,
                   prior.sde().start_units(torch.float64), hidden=estimator.hidden[0], layers=len(estimator.hidden),
                   log1p=likelihood.encoder_log1p, masked=isinstance(likelihood, MissingEntries), **extra)
    return build


def parallel_methods() -> list[str]:
    """The methods whose family over rows fits over several processes, sorted."""
    return sorted({family.method for _, family in FAMILIES.items() if family.parallel})


def posterior_components(estimator) -> int:
    """q's components: as asked, else the prior's K for a mixture prior, else 2."""
    if estimator.posterior_components is not None:
        return estimator.posterior_components
    return getattr(estimator.prior, "components", 2)


# Families whose Λ-step needs draws of q take the importance-weighted step: it removes the
# bias of q's family from Λ̂ (benchmarks/bench_general.py, the "iaf, ELBO Λ-step" rows).
_DRAWN = {"lambda_step": "importance"}
# The flow learns faster with a larger step: a better q (ELBO gap) in less time, Λ̂ as good
# (docs/benchmarks.md, "The flow's step size"); with a warm-up and clipped gradient spikes,
# without which counts with a nonzero mean diverged (docs/benchmarks.md, "The flow's warm-up").
_FLOW = {**_DRAWN, "learning_rate": 1e-2, "lr_warmup": 3, "gradient_clip": 3.0}
# Non-amortized factors see each observation only when it is in a batch: full batches with a
# larger step (measured in docs/benchmarks.md, "mean-field settings").
_FREE_FACTORS = {"learning_rate": 3e-2, "batch_size": 65_536, "n_critic": 10}

FAMILIES: Registry[PosteriorFamily] = Registry("posterior family")
FAMILIES.register("diagonal", PosteriorFamily(_encoder(GaussianEncoder), method="vae", diagonal=True, parallel=True))
FAMILIES.register("iaf", PosteriorFamily(_encoder(IAFEncoder, n_steps=lambda e: e.flow_steps), method="iaf",
                                         defaults=_FLOW, parallel=True))
FAMILIES.register("full-covariance", PosteriorFamily(_encoder(FullCovarianceEncoder), method="full-covariance",
                                                     parallel=True))
# k = 8 columns of U, at most p: a first choice, not tuned (its time at p = 1000: docs/benchmarks.md,
# "A thousand variables")
FAMILIES.register("low-rank", PosteriorFamily(_encoder(LowRankEncoder, rank=lambda e: min(e.prior.dim, 8)),
                                              method="low-rank", parallel=True))
FAMILIES.register("mixture", PosteriorFamily(_encoder(MixtureEncoder, components=posterior_components),
                                             method="mixture", defaults=_DRAWN))
FAMILIES.register("markov", PosteriorFamily(_path_encoder(PathEncoder), method="markov", paths=True,
                                             defaults=_DRAWN))
# markov's settings, not the row flow's (_FLOW, measured on rows): this flow starts as markov's q, on
# markov's encoder (invae.paths.flow)
FAMILIES.register("path-iaf", PosteriorFamily(_path_encoder(PathIAFEncoder, n_steps=lambda e: e.flow_steps),
                                              method="iaf", paths=True, defaults=_DRAWN))
FAMILIES.register("mean-field", PosteriorFamily(lambda estimator, n, m: MeanFieldFactors(n, estimator.prior.dim),
                                                method="mean-field", amortized=False, defaults=_FREE_FACTORS,
                                                diagonal=True))
