"""invae: statistical inverse problems by amortized variational empirical Bayes."""

__version__ = "0.1.0"  # first: modules imported below record it

from .baselines import Naive, complete_data_floor, rank_matching
from .em import EM
from .estimator import VariationalEB
from .forward import ForwardOperator, FunctionOperator, LinearOperator, saturating
from .likelihoods import (BernoulliLikelihood, GaussianLikelihood, Likelihood, PoissonLikelihood,
                          StudentTLikelihood, linear_gaussian)
from .mixture import GaussianMixture
from .priors import GaussianGraphicalModel, Prior
from .simulate import Problem, simulate_problem

__all__ = ["EM", "VariationalEB", "Naive", "complete_data_floor", "rank_matching", "ForwardOperator", "FunctionOperator", "LinearOperator", "saturating",
           "GaussianLikelihood", "PoissonLikelihood", "BernoulliLikelihood", "StudentTLikelihood", "Likelihood", "linear_gaussian", "GaussianGraphicalModel", "GaussianMixture", "Prior",
           "Problem", "simulate_problem"]
