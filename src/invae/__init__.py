"""invae: statistical inverse problems by amortized variational empirical Bayes.

The package is in concept folders (docs/architecture.md): :mod:`invae.model` (priors,
likelihoods, forward operators), :mod:`invae.inference` (posterior families, the ELBO, the
Λ-steps, training, :class:`VariationalEB`), :mod:`invae.references` (exact posteriors, EM,
importance sampling, baselines), :mod:`invae.evaluation` (simulations, metrics, tables),
:mod:`invae.normal_means` (one-dimensional empirical Bayes) and :mod:`invae.app` (the
command line and what it reads and writes). The names below are the public API.

They are imported on first use (PEP 562): ``from invae import VariationalEB`` works as
usual, while ``invae.app.cli`` (a subpackage, so it runs this file) starts without torch.
"""

import importlib

from ._version import __version__

#: Each public name, by the submodule that defines it.
_SOURCES = {
    "EM": "references.em", "VariationalEB": "inference.estimator", "Naive": "references.baselines",
    "complete_data_floor": "references.baselines", "rank_matching": "references.baselines",
    "ForwardOperator": "model.forward", "FunctionOperator": "model.forward", "LinearOperator": "model.forward",
    "saturating": "model.forward", "GaussianLikelihood": "model.likelihoods", "PoissonLikelihood": "model.likelihoods",
    "BernoulliLikelihood": "model.likelihoods", "StudentTLikelihood": "model.likelihoods",
    "Likelihood": "model.likelihoods", "linear_gaussian": "model.likelihoods", "GaussianGraphicalModel": "model.ggm",
    "GaussianMixture": "model.mixture", "Prior": "model.prior", "Problem": "evaluation.simulate",
    "simulate_problem": "evaluation.simulate",
}

__all__ = ["__version__", *_SOURCES]


def __getattr__(name: str):
    """The public ``name``, imported from its submodule on first use (then cached here)."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_SOURCES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
