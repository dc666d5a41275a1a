"""One-dimensional empirical Bayes: the normal-means problem ``x_i ~ N(z_i, σ_i²)``, ``z_i ~ g``.

The source's opening problem, with the g-modelling references statisticians use
(Kiefer–Wolfowitz NPMLE, Efron's log-spline, the normal prior / James–Stein), the source's
rank matching, and the VAE-like estimator (``VariationalEB``) on the same data:
:func:`fit_normal_means` runs any of them.
"""

from .estimate import NORMAL_MEANS_METHODS, NormalMeansFit, fit_normal_means
from .grid import GridPrior, NormalMeansPosterior, grid_posterior
from .log_spline import log_spline
from .normal_prior import NormalPrior, fit_normal_prior
from .npmle import npmle
from .simulate import simulate_normal_means, true_prior

__all__ = ["NORMAL_MEANS_METHODS", "NormalMeansFit", "fit_normal_means", "GridPrior", "NormalMeansPosterior",
           "grid_posterior", "log_spline", "NormalPrior", "fit_normal_prior", "npmle",
           "simulate_normal_means", "true_prior"]
