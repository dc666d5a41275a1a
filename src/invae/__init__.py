"""invae: statistical inverse problems by amortized variational empirical Bayes.

The package is in concept folders (docs/architecture.md): :mod:`invae.model` (priors,
likelihoods, forward operators), :mod:`invae.inference` (posterior families, the ELBO, the
Λ-steps, training, :class:`VariationalEB`), :mod:`invae.references` (exact posteriors, EM,
importance sampling, baselines), :mod:`invae.evaluation` (simulations, metrics, tables),
:mod:`invae.normal_means` (one-dimensional empirical Bayes) and :mod:`invae.app` (the
command line and what it reads and writes). The names below are the public API.
"""

from ._version import __version__
from .evaluation.simulate import Problem, simulate_problem
from .inference.estimator import VariationalEB
from .model.forward import ForwardOperator, FunctionOperator, LinearOperator, saturating
from .model.ggm import GaussianGraphicalModel
from .model.likelihoods import (BernoulliLikelihood, GaussianLikelihood, Likelihood, PoissonLikelihood,
                                StudentTLikelihood, linear_gaussian)
from .model.mixture import GaussianMixture
from .model.prior import Prior
from .references.baselines import Naive, complete_data_floor, rank_matching
from .references.em import EM

__all__ = ["__version__", "EM", "VariationalEB", "Naive", "complete_data_floor", "rank_matching",
           "ForwardOperator", "FunctionOperator", "LinearOperator", "saturating", "GaussianLikelihood",
           "PoissonLikelihood", "BernoulliLikelihood", "StudentTLikelihood", "Likelihood", "linear_gaussian",
           "GaussianGraphicalModel", "GaussianMixture", "Prior", "Problem", "simulate_problem"]
