"""The method registry: a method name (``invae fit --method``) builds an estimator."""

from __future__ import annotations

from ..inference.base import EmpiricalBayesEstimator
from ..inference.estimator import VariationalEB
from ..model.likelihoods import Likelihood
from ..model.priors import Prior
from ..references.baselines import Naive
from ..references.em import EM

__all__ = ["make_estimator", "method_name", "FAMILY_OF_METHOD"]

#: The variational methods and their posterior family (:data:`invae.inference.estimator.FAMILIES`).
FAMILY_OF_METHOD = {"vae": "diagonal", "iaf": "iaf", "full-covariance": "full-covariance", "mixture": "mixture",
                    "mean-field": "mean-field"}


def make_estimator(method: str, prior: Prior, likelihood: Likelihood, *, preset: str = "default",
                   max_iter: int | None = None, tol: float | None = None, seed: int = 0,
                   verbose: bool = False, callback=None, checkpoint: dict | None = None,
                   device: str = "cpu") -> EmpiricalBayesEstimator:
    """The estimator named ``method`` (see :data:`invae.app.settings.METHODS`).

    ``max_iter`` / ``tol`` left as None take each estimator's own default; ``callback``
    (iterative methods only) is called as ``callback(iteration, prior)``; ``checkpoint``
    (variational methods only) holds ``checkpoint_dir``, ``checkpoint_every`` and ``resume``.
    """
    limits = {key: value for key, value in (("max_iter", max_iter), ("tol", tol)) if value is not None}
    if method in FAMILY_OF_METHOD:
        return VariationalEB(prior, likelihood, family=FAMILY_OF_METHOD[method], preset=preset,
                             random_state=seed, verbose=verbose, callback=callback, device=device,
                             **(checkpoint or {}), **limits)
    if checkpoint:
        raise ValueError(f"checkpoints apply to the variational methods ({', '.join(FAMILY_OF_METHOD)}), "
                         f"not to {method!r}")
    if method == "em":
        return EM(prior, likelihood, verbose=verbose, callback=callback, device=device, **limits)
    if method == "naive":
        return Naive(prior, likelihood, device=device)
    raise ValueError(f"unknown method {method!r}")


def method_name(estimator: EmpiricalBayesEstimator) -> str:
    """The method name that :func:`make_estimator` builds ``estimator`` from."""
    if isinstance(estimator, VariationalEB):
        return next(method for method, family in FAMILY_OF_METHOD.items() if family == estimator.family)
    if isinstance(estimator, EM) and not estimator.mean_field:
        return "em"
    if isinstance(estimator, Naive):
        return "naive"
    raise ValueError(f"no invae method builds {estimator!r}")
