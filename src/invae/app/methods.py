"""The method registry: a method name (``invae fit --method``) builds an estimator.

Every registered posterior family is a method (:data:`invae.inference.families.FAMILIES`,
under its ``method`` name), followed by the exact references of :data:`REFERENCE_METHODS`. A
name may hold a family over rows and one over paths (``iaf``): a path prior builds the
latter, any other prior the former, and a model file's method name rebuilds either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..inference.base import EmpiricalBayesEstimator
from ..inference.estimator import VariationalEB
from ..inference.families import FAMILIES
from ..model.likelihoods import Likelihood
from ..model.prior import Prior
from ..paths.prior import PathPrior
from ..references.baselines import Naive
from ..references.em import EM
from ..references.kalman import KalmanEM
from ..registry import Registry

__all__ = ["Method", "REFERENCE_METHODS", "methods", "variational_names", "make_estimator", "method_name"]


@dataclass(frozen=True)
class Method:
    """How one method builds its estimator and which estimators it builds.

    build : callable ``(prior, likelihood, options) -> estimator``
        ``options``: the keyword arguments of :func:`make_estimator`, by name.
    builds : callable ``estimator -> bool``
        Whether an estimator is one this method builds (the name a model file records).
    variational : bool
        Trains a posterior network: takes any noise model, and checkpoints.
    paths : bool
        Fits latent paths only (:mod:`invae.paths`): it needs a path prior.
    also_paths : bool
        Fits latent paths with a path prior, and rows with the other priors (``iaf``).
    """

    build: Callable[[Prior, Likelihood, dict], EmpiricalBayesEstimator]
    builds: Callable[[EmpiricalBayesEstimator], bool]
    variational: bool = False
    paths: bool = False
    also_paths: bool = False

    @property
    def takes_paths(self) -> bool:
        """Whether it fits a path prior's latent paths (``paths`` or ``also_paths``)."""
        return self.paths or self.also_paths


def _limits(options: dict) -> dict:
    return {key: options[key] for key in ("max_iter", "tol") if options[key] is not None}


def _variational(families: dict[bool, str]) -> Method:
    """The method of ``families`` (a family name by whether it is over paths, one or both): a
    path prior takes the path family, another prior the other; a method of one family builds it
    for any prior (the family refuses what it cannot fit)."""
    def build(prior, likelihood, options):
        family = families.get(isinstance(prior, PathPrior), next(iter(families.values())))
        return VariationalEB(prior, likelihood, family=family, preset=options["preset"], random_state=options["seed"],
                             verbose=options["verbose"], callback=options["callback"], device=options["device"],
                             allow_unidentified=options["allow_unidentified"], **(options["checkpoint"] or {}),
                             **_limits(options))

    def builds(estimator) -> bool:
        return isinstance(estimator, VariationalEB) and estimator.family in families.values()
    return Method(build, builds, variational=True, paths=set(families) == {True}, also_paths=len(families) == 2)


#: The methods that are not a posterior family: exact EM and the naive baseline (Gaussian noise), and
#: Kalman EM for a linear SDE's latent paths (docs/methods.md §3.16).
REFERENCE_METHODS: Registry[Method] = Registry("method")
REFERENCE_METHODS.register("em", Method(
    lambda prior, likelihood, options: EM(prior, likelihood, verbose=options["verbose"], callback=options["callback"],
                                          device=options["device"], **_limits(options)),
    lambda estimator: isinstance(estimator, EM) and not estimator.mean_field))
REFERENCE_METHODS.register("naive", Method(
    lambda prior, likelihood, options: Naive(prior, likelihood, device=options["device"]),
    lambda estimator: isinstance(estimator, Naive)))
REFERENCE_METHODS.register("kalman", Method(
    lambda prior, likelihood, options: KalmanEM(prior, likelihood, device=options["device"], **_limits(options)),
    lambda estimator: isinstance(estimator, KalmanEM), paths=True))


def methods() -> Registry[Method]:
    """Every method by name: one per ``method`` name of the registered posterior families, then the
    reference methods."""
    everything: Registry[Method] = Registry("method")
    for name, families in _families_by_method().items():
        everything.register(name, _variational(families))
    for name, method in REFERENCE_METHODS.items():
        everything.register(name, method)
    return everything


def _families_by_method() -> dict[str, dict[bool, str]]:
    """Each method name's families, by whether they are over paths, in registration order;
    ValueError for two of one kind under one name (the prior could not choose)."""
    grouped: dict[str, dict[bool, str]] = {}
    for family_name, family in FAMILIES.items():
        kinds = grouped.setdefault(family.method, {})
        if family.paths in kinds:
            raise ValueError(f"the posterior families {kinds[family.paths]!r} and {family_name!r} are both "
                             f"--method {family.method} over {'paths' if family.paths else 'rows'}")
        kinds[family.paths] = family_name
    return grouped


def variational_names() -> str:
    """The variational methods' names, comma-separated (for messages)."""
    return ", ".join(name for name, method in methods().items() if method.variational)


def make_estimator(method: str, prior: Prior, likelihood: Likelihood, *, preset: str = "default",
                   max_iter: int | None = None, tol: float | None = None, seed: int = 0,
                   verbose: bool | int = False, callback=None, checkpoint: dict | None = None,
                   device: str = "cpu", allow_unidentified: bool = False) -> EmpiricalBayesEstimator:
    """The estimator named ``method`` (see :func:`methods`).

    ``max_iter`` / ``tol`` left as None take each estimator's own default; ``callback``
    (iterative methods only) is called as ``callback(iteration, prior)``; ``checkpoint``
    (variational methods only) holds ``checkpoint_dir``, ``checkpoint_every`` and ``resume``;
    ``allow_unidentified``: see :class:`~invae.inference.estimator.VariationalEB`.
    """
    options = {"preset": preset, "max_iter": max_iter, "tol": tol, "seed": seed, "verbose": verbose,
               "callback": callback, "checkpoint": checkpoint, "device": device,
               "allow_unidentified": allow_unidentified}
    chosen = methods()[method]
    if checkpoint and not chosen.variational:
        raise ValueError(f"checkpoints apply to the variational methods ({variational_names()}), not to {method!r}")
    return chosen.build(prior, likelihood, options)


def method_name(estimator: EmpiricalBayesEstimator) -> str:
    """The method name that :func:`make_estimator` builds ``estimator`` from."""
    return methods().find(lambda method: method.builds(estimator), f"built as {estimator!r}")
