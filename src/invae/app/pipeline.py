"""From settings to results: what ``invae fit`` and ``invae predict`` do, callable from Python."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..inference.base import EmpiricalBayesEstimator
from ..inference.estimator import VariationalEB
from ..inference.penalty import penalty_grid, select_penalty
from ..inference.stability import selection_frequencies, stars
from ..model.forward import ForwardOperator, FunctionOperator, LinearOperator
from ..model.likelihoods import Likelihood, NoisePerRowGaussianLikelihood
from ..model.missing import MissingEntries
from ..model.noise import NOISE_MODELS
from ..model.prior import Prior
from ..model.priors import PRIORS, StartOptions
from ..references.em import EM
from ..references.exact import has_exact_em, has_exact_evidence, mean_log_likelihood
from ..references.sanity import likelihood_check
from ..validation import check_data
from .io import csv_header, load_array, read_names
from .methods import make_estimator, method_name
from .network import edge_rows, edges_csv, variable_names
from .persistence import load_model, load_recipe
from .plugins import FUNCTION_SPEC, load_function
from .recipe import RowRecipe, RowSources, check_sources, make_rows
from .settings import FitSettings

__all__ = ["Problem", "load_problem", "run_fit", "run_predict", "STARS_SUBSAMPLES"]

#: Halves of the rows that ``--penalty stars`` refits on when ``--stability`` does not say.
STARS_SUBSAMPLES = 20


@dataclass(frozen=True)
class Problem:
    """What ``settings`` describe: the data rows x (n, row columns: the measurements, σ_i or
    offsets, then the prior's covariates; :mod:`invae.app.recipe`), the prior to start from,
    the likelihood, the rows' recipe, and the p signal coordinates' names."""

    x: np.ndarray
    prior: Prior
    likelihood: Likelihood
    recipe: RowRecipe
    names: list[str]


def load_problem(settings: FitSettings) -> Problem:
    """The problem ``settings`` describe (:class:`Problem`). The variables' names are
    ``--names``, else a ``.csv`` data file's header where the signals are the data (no
    ``--forward``), else z0 … z(p−1)."""
    function = FUNCTION_SPEC.fullmatch(str(settings.forward)) if settings.forward is not None else None
    if function is not None:
        if settings.latent_dim is None:
            raise ValueError("a forward function (--forward module.py:function) needs --latent-dim p")
        file, name = function.groups()  # the model file records the absolute path: predict may run elsewhere
        operator = FunctionOperator(load_function(str(settings.forward)), settings.latent_dim,
                                    name=str(settings.forward), source=f"{Path(file).resolve()}:{name}")
    elif settings.forward is not None:
        a = load_array(settings.forward, name="the forward matrix (--forward)")
        if a.ndim != 2:
            raise ValueError(f"the forward matrix (--forward) must be 2-D (m, p), got shape {a.shape}")
        operator = LinearOperator(check_data(a, name="the forward matrix (--forward)"))
    x = load_array(settings.data, name="the data (--data)")
    if settings.forward is None:
        operator = LinearOperator.identity(x.shape[1] if x.ndim == 2 else 1)
    if function is None and settings.latent_dim not in (None, operator.in_dim):
        raise ValueError(f"--latent-dim {settings.latent_dim} disagrees with the forward matrix's "
                         f"{operator.in_dim} columns (it is for a forward function)")
    x = check_data(x, name="the data (--data)", columns=operator.out_dim, allow_missing=True)
    likelihood = _likelihood(operator, settings)
    if np.isnan(x).any():  # missing entries: the likelihood of the observed ones
        likelihood = MissingEntries(likelihood)
    sources = RowSources(settings.offsets, settings.noise_std_file, settings.covariates, settings.covariate_columns)
    x, recipe = make_rows(x, likelihood, sources)
    options = StartOptions(alpha=0.0 if isinstance(settings.penalty, str) else settings.penalty,  # auto, stars: per fit
                           components=settings.components, seed=settings.seed,
                           covariates=0 if recipe.covariates is None else len(recipe.covariates.names),
                           fit_intercept=settings.fit_mean or recipe.covariates is not None,
                           ridge=settings.covariate_ridge)
    given = read_names(settings.names) if settings.names is not None else \
        csv_header(settings.data) if settings.forward is None else None
    return Problem(x, PRIORS[settings.prior].start(x, likelihood, options), likelihood, recipe,
                   variable_names(operator.in_dim, given))


def _likelihood(operator: ForwardOperator, settings: FitSettings) -> Likelihood:
    """The noise model ``settings.noise`` on ``operator`` (σ_i in each row with --noise-std-file)."""
    if settings.noise_std_file is not None:
        return NoisePerRowGaussianLikelihood(operator)
    return NOISE_MODELS[settings.noise].build(operator, settings.noise_std, settings.noise_df,
                                              settings.offsets is not None)


def run_fit(settings: FitSettings) -> tuple[EmpiricalBayesEstimator, dict[str, np.ndarray], dict, dict[str, bytes]]:
    """Fit as ``settings`` say; return the estimator, the result arrays, the summary and the
    other files (``edges.csv`` for a graphical prior, :mod:`invae.app.network`)."""
    problem = load_problem(settings)
    x, prior, likelihood, recipe = problem.x, problem.prior, problem.likelihood, problem.recipe
    estimator = make_estimator(settings.method, prior, likelihood, preset=settings.preset,
                               max_iter=settings.max_iter, tol=settings.tol, seed=settings.seed,
                               verbose=settings.verbosity, checkpoint=settings.checkpoint, device=settings.device,
                               allow_unidentified=settings.allow_unidentified)
    start = time.perf_counter()
    estimator, chosen = _fit_with_penalty(estimator, x, settings)
    seconds = time.perf_counter() - start
    frequencies = chosen.pop("frequencies", None)
    if settings.stability and frequencies is None:
        frequencies = selection_frequencies(_refitter(estimator, fitted=True), x, [estimator.prior_.alpha],
                                            subsamples=settings.stability, seed=settings.seed,
                                            verbose=settings.verbosity, n_jobs=settings.jobs)[0]
    mean, std = estimator.posterior(x)
    parameters = {name: value.detach().cpu().double().numpy() for name, value in estimator.prior_.state().items()}
    arrays = {**parameters, "posterior_mean": mean, "posterior_std": std, **_imputed(estimator, x)}
    summary = {
        "invae_version": __version__,
        "settings": settings.to_dict(),
        "n": x.shape[0], "m": likelihood.forward.out_dim, "p": prior.dim, "variables": problem.names,
        **estimator.prior_.summary(),
        "row_recipe": recipe.to_record(),
        **({} if recipe.covariates is None else {"covariates": recipe.covariates.names}),
        "n_iter": estimator.n_iter_, "converged": estimator.converged_,
        "fit_seconds": seconds, **chosen,
    }
    if has_exact_evidence(estimator.prior_, estimator.likelihood_):
        log_lik = mean_log_likelihood(x, estimator.prior_, likelihood)
        summary["log_likelihood_per_obs"] = log_lik
        summary["penalized_log_likelihood_per_obs"] = log_lik - estimator.prior_.penalty()
    if estimator.history_:
        summary["history"] = _history(estimator)
    if isinstance(estimator, VariationalEB):
        summary |= _variational_summary(estimator, x, settings.method)
    if frequencies is not None:
        summary["stability"] = {"subsamples": settings.stability or STARS_SUBSAMPLES,
                                "refits": method_name(_refitter(estimator, fitted=True))}
    files = ({"edges.csv": edges_csv(edge_rows(arrays["precision"], problem.names, frequencies), frequencies is not None)}
             if "precision" in arrays else {})
    return estimator, arrays, summary | _posterior_summary(estimator, x), files


def _fit_with_penalty(estimator: EmpiricalBayesEstimator, x: np.ndarray, settings: FitSettings
                      ) -> tuple[EmpiricalBayesEstimator, dict]:
    """The estimator fitted at the penalty ``settings`` give or choose, and what the choice
    recorded: ``penalty_path`` (auto), or ``stars`` and the chosen α's edge ``frequencies`` (stars)."""
    if settings.penalty == "auto":
        estimator, path = select_penalty(estimator, x, criterion=settings.penalty_criterion, seed=settings.seed,
                                         verbose=settings.verbosity)
        return estimator, {"penalty_path": path.to_dict()}
    if settings.penalty == "stars":
        alphas = penalty_grid(x, estimator.prior, estimator.likelihood)
        path, frequencies = stars(_refitter(estimator), x, alphas, subsamples=settings.stability or STARS_SUBSAMPLES,
                                  seed=settings.seed, verbose=settings.verbosity, n_jobs=settings.jobs)
        estimator.prior = estimator.prior.with_penalty(path.alpha)
        return estimator.fit(x), {"stars": path.to_dict(), "frequencies": frequencies}
    return estimator.fit(x), {}


def _refitter(estimator: EmpiricalBayesEstimator, fitted: bool = False) -> EmpiricalBayesEstimator:
    """What stability selection refits on halves of the rows: exact EM where it exists (fast
    and exact), else the estimator's own method; started from the fit on all rows if ``fitted``."""
    prior = estimator.prior_ if fitted else estimator.prior
    if has_exact_em(prior, estimator.likelihood) and not isinstance(estimator, EM):
        return EM(prior, estimator.likelihood, device=estimator.device)
    return estimator


def _variational_summary(estimator: VariationalEB, x: np.ndarray, method: str) -> dict:
    """The ELBO, the sanity bound where exact EM exists (:mod:`invae.references.sanity`: a
    failed one warns) and the fit's warnings."""
    summary = dict(zip(("elbo_per_obs", "elbo_standard_error"), estimator.elbo(x)))
    said = list(estimator.warnings_)
    check = likelihood_check(x, estimator.prior_, estimator.likelihood_)
    if check is not None:
        summary["likelihood_check"] = {"em_steps": check.steps, "gain": check.gain, "threshold": check.threshold,
                                       "degrees_of_freedom": check.degrees_of_freedom, "passed": check.passed,
                                       "seconds": check.seconds}
        if not check.passed:
            said.append(check.message(method))
            warnings.warn(said[-1], UserWarning, stacklevel=2)
    return {**summary, "warnings": said} if said else summary


def _posterior_summary(estimator: EmpiricalBayesEstimator, x) -> dict:
    """What a variational fit's posterior answers are, and for reweighted ones the importance
    weights' effective sample size per row (median, smallest, out of how many draws)."""
    if not isinstance(estimator, VariationalEB):
        return {}
    if not estimator.reweighted:
        return {"posterior": "q"}
    ess = estimator.importance_ess(x)
    return {"posterior": "exact at the estimate, q reweighted",
            "importance_ess": {"median": float(np.median(ess)), "min": float(ess.min()), "of": estimator.n_moment_draws}}


def _history(estimator: EmpiricalBayesEstimator) -> dict:
    """The objective per outer iteration against time, for the report's convergence figure."""
    if isinstance(estimator, VariationalEB):
        return {"time": estimator.history_["time"], "objective": estimator.history_["elbo"],
                "objective_name": "ELBO per observation (fixed noise)"}
    return {"time": estimator.history_["time"], "objective": estimator.history_["objective"],
            "objective_name": "penalised log-likelihood per observation"}


def run_predict(model: str | Path, data: str | Path, sources: RowSources = RowSources(), *,
                device: str = "cpu") -> tuple[dict[str, np.ndarray], dict]:
    """Posterior means and sds of the observations in ``data`` under a saved model, and a
    summary; ``sources`` are the new rows' σ_i, offsets or covariates, where the model's rows
    had them (made by the model's recipe, :mod:`invae.app.recipe`)."""
    estimator, recipe = load_model(model, device=device), load_recipe(model)
    check_sources(estimator.likelihood, recipe, sources)
    m = estimator.likelihood.forward.out_dim
    x = check_data(load_array(data, name="the data (--data)"), name="the data (--data)", columns=m, allow_missing=True)
    x = make_rows(x, estimator.likelihood, sources, recipe)[0]
    mean, std = estimator.posterior(x)
    summary = {"invae_version": __version__, "model": str(model), "data": str(data),
               "method": method_name(estimator), "n": x.shape[0], "m": m, "p": mean.shape[1]}
    return {"posterior_mean": mean, "posterior_std": std, **_imputed(estimator, x)}, \
        summary | _posterior_summary(estimator, x)


def _imputed(estimator: EmpiricalBayesEstimator, x: np.ndarray) -> dict[str, np.ndarray]:
    """``{"imputed": the data with each missing entry's posterior predictive mean}`` where entries are missing."""
    return {"imputed": estimator.impute(x)} if isinstance(estimator.likelihood_, MissingEntries) else {}
