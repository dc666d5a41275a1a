"""From settings to results: what ``invae fit`` and ``invae predict`` do, callable from Python."""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._version import __version__
from ..inference.base import EmpiricalBayesEstimator
from ..inference.estimator import VariationalEB
from ..inference.parallel import Shard
from ..inference.penalty import penalty_grid, select_penalty
from ..inference.stability import selection_frequencies, stars
from ..model.forward import ForwardOperator, FunctionOperator, LinearOperator
from ..model.likelihoods import GaussianLikelihood, Likelihood, NoisePerRowGaussianLikelihood
from ..model.missing import MissingEntries
from ..model.noise import NOISE_MODELS
from ..model.prior import Prior
from ..model.priors import PRIORS, StartOptions
from ..paths.observation import PathOperator, series_rows
from ..paths.prior import PathPrior
from ..paths.start import noise_start
from ..references.em import EM
from ..references.exact import has_exact_em, has_exact_evidence, mean_log_likelihood
from ..references.kalman import KalmanEM, has_kalman, kalman_log_likelihood
from ..references.sanity import likelihood_check
from ..validation import check_data
from .io import StagedResults, csv_header, load_array, read_names
from .methods import make_estimator, method_name
from .network import edge_rows, edges_csv, variable_names
from .persistence import load_model, load_recipe
from .plugins import FUNCTION_SPEC, load_function
from .recipe import RowRecipe, RowSources, check_sources, make_rows
from .forecasts import forecast_outputs
from .series import as_series, at_times, load_series_and_times
from .settings import LEARN, FitSettings

__all__ = ["Problem", "load_problem", "run_fit", "run_predict", "STARS_SUBSAMPLES"]

#: Halves of the rows that ``--penalty stars`` refits on when ``--stability`` does not say.
STARS_SUBSAMPLES = 20


@dataclass(frozen=True)
class Problem:
    """What ``settings`` describe: the data rows x (n, row columns: the measurements, σ_i or
    offsets, then the prior's covariates; :mod:`invae.app.recipe`), the prior to start from,
    the likelihood, the rows' recipe, and the p signal coordinates' names; for a path prior
    also the ``series`` (n, T, m) that the rows flatten, NaN where not observed, and their names
    where the data name them (a long CSV)."""

    x: np.ndarray
    prior: Prior
    likelihood: Likelihood
    recipe: RowRecipe
    names: list[str]
    series: np.ndarray | None = None
    series_names: list[str] | None = None


def load_problem(settings: FitSettings) -> Problem:
    """The problem ``settings`` describe (:class:`Problem`). The variables' names are
    ``--names``, else a ``.csv`` data file's header where the signals are the data (no
    ``--forward``), else z0 … z(p−1). A path prior's data are series (:func:`_path_problem`)."""
    operator = _operator(settings)
    if PRIORS[settings.prior].paths:
        return _path_problem(settings, operator)
    x = load_array(settings.data, name="the data (--data)", mapped=True)
    if operator is None:
        operator = LinearOperator.identity(x.shape[1] if x.ndim == 2 else 1)
    _check_latent_dim(operator, settings)
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


def _operator(settings: FitSettings) -> ForwardOperator | None:
    """The forward operator ``--forward`` names (per time point for a path prior); None for the
    identity, whose size the data give."""
    function = FUNCTION_SPEC.fullmatch(str(settings.forward)) if settings.forward is not None else None
    if function is not None:
        if settings.latent_dim is None:
            raise ValueError("a forward function (--forward module.py:function) needs --latent-dim p")
        file, name = function.groups()  # the model file records the absolute path: predict may run elsewhere
        return FunctionOperator(load_function(str(settings.forward)), settings.latent_dim,
                                name=str(settings.forward), source=f"{Path(file).resolve()}:{name}")
    if settings.forward is not None:
        a = load_array(settings.forward, name="the forward matrix (--forward)")
        if a.ndim != 2:
            raise ValueError(f"the forward matrix (--forward) must be 2-D (m, p), got shape {a.shape}")
        return LinearOperator(check_data(a, name="the forward matrix (--forward)"))
    return None


def _check_latent_dim(operator: ForwardOperator, settings: FitSettings) -> None:
    if not isinstance(operator, FunctionOperator) and settings.latent_dim not in (None, operator.in_dim):
        raise ValueError(f"--latent-dim {settings.latent_dim} disagrees with the forward matrix's "
                         f"{operator.in_dim} columns (it is for a forward function)")


def _path_problem(settings: FitSettings, per_time: ForwardOperator | None) -> Problem:
    """A path prior's problem: the series (n, T, m) of ``--data`` as rows (n, T m) (with their
    observed indicators where entries are missing), measured at ``--times`` through the per-time
    operator (``--forward``, else the identity) at each time point; names for the d coordinates.
    With ``--noise-std learn`` the Gaussian noise level, one per measurement, is learned from a
    start the series give (:func:`~invae.paths.start.noise_start`)."""
    x, times, series_names = load_series_and_times(settings.data, settings.times)
    n, steps, m = x.shape
    per_time = LinearOperator.identity(m) if per_time is None else per_time
    _check_latent_dim(per_time, settings)
    if per_time.out_dim != m:
        raise ValueError(f"the data have m = {m} measurements per time point, the forward operator gives "
                         f"{per_time.out_dim}; check --forward / the data file")
    operator = PathOperator(per_time, steps, settings.substeps)
    likelihood = (GaussianLikelihood(operator, noise_start(x), learn_noise=True) if settings.noise_std == LEARN
                  else _likelihood(operator, settings))
    rows = series_rows(x)
    if np.isnan(rows).any():  # missing entries; a time point missing in every series is allowed (load_series)
        likelihood = MissingEntries(likelihood)
        rows = likelihood.rows(rows, fitting=False)
    options = StartOptions(seed=settings.seed, times=times, substeps=settings.substeps)
    names = variable_names(per_time.in_dim, read_names(settings.names) if settings.names is not None else None)
    return Problem(rows, PRIORS[settings.prior].start(rows, likelihood, options), likelihood, RowRecipe(), names, x,
                   series_names)


def _likelihood(operator: ForwardOperator, settings: FitSettings) -> Likelihood:
    """The noise model ``settings.noise`` on ``operator`` (σ_i in each row with --noise-std-file)."""
    if settings.noise_std_file is not None:
        return NoisePerRowGaussianLikelihood(operator)
    return NOISE_MODELS[settings.noise].build(operator, settings.noise_std, settings.noise_df,
                                              settings.offsets is not None)


def fit_problem(settings: FitSettings) -> tuple[Problem, EmpiricalBayesEstimator, dict, float]:
    """The problem ``settings`` describe, its estimator fitted, what a penalty's choice recorded
    (:func:`_fit_with_penalty`) and the fit's seconds. In a process of a parallel fit
    (:mod:`invae.app.processes`) the estimator fits this process's rows."""
    problem = load_problem(settings)
    estimator = make_estimator(settings.method, problem.prior, problem.likelihood, preset=settings.preset,
                               max_iter=settings.max_iter, tol=settings.tol, seed=settings.seed,
                               verbose=settings.verbosity, checkpoint=settings.checkpoint, device=settings.device,
                               allow_unidentified=settings.allow_unidentified)
    start = time.perf_counter()
    estimator, chosen = _fit_with_penalty(estimator, problem.x[Shard.rows(len(problem.x))], settings)
    return problem, estimator, chosen, time.perf_counter() - start


def run_fit(settings: FitSettings, staged: StagedResults | None = None
            ) -> tuple[EmpiricalBayesEstimator, dict[str, np.ndarray], dict, dict[str, bytes]]:
    """Fit as ``settings`` say; return the estimator, the result arrays, the summary and the
    other files (``edges.csv`` for a graphical prior, :mod:`invae.app.network`). With ``staged``
    the posterior's (n, p) answers are written into its files as they are computed. In a
    parallel fit, rank 0 answers for all the rows."""
    problem, estimator, chosen, seconds = fit_problem(settings)
    x, prior, likelihood, recipe = problem.x, problem.prior, problem.likelihood, problem.recipe
    frequencies = chosen.pop("frequencies", None)
    if settings.stability and frequencies is None:
        frequencies = selection_frequencies(_refitter(estimator, fitted=True), x, [estimator.prior_.alpha],
                                            subsamples=settings.stability, seed=settings.seed,
                                            verbose=settings.verbosity, n_jobs=settings.jobs)[0]
    mean, std = estimator.posterior(x, out=_answer_files(staged, len(x), estimator.prior_))
    if isinstance(estimator.prior_, PathPrior):
        arrays, described = _path_outputs(estimator, x, mean, std)
    else:
        parameters = {name: value.detach().cpu().double().numpy() for name, value in estimator.prior_.state().items()}
        arrays = {**parameters, "posterior_mean": mean, "posterior_std": std, **_imputed(estimator, x)}
        described = {"n": x.shape[0], "m": likelihood.forward.out_dim, "p": prior.dim, **estimator.prior_.summary()}
    summary = {
        "invae_version": __version__,
        "settings": settings.to_dict(),
        **described, "variables": problem.names,
        "row_recipe": recipe.to_record(),
        **({} if recipe.covariates is None else {"covariates": recipe.covariates.names}),
        "n_iter": estimator.n_iter_, "converged": estimator.converged_,
        "fit_seconds": seconds, **chosen,
    }
    if has_exact_evidence(estimator.prior_, estimator.likelihood_):
        log_lik = mean_log_likelihood(x, estimator.prior_, likelihood)
        summary["log_likelihood_per_obs"] = log_lik
        summary["penalized_log_likelihood_per_obs"] = log_lik - estimator.prior_.penalty()
    elif has_kalman(estimator.prior_, estimator.likelihood_):  # a linear SDE through Gaussian noise: exact
        total = (estimator.log_likelihood_ if isinstance(estimator, KalmanEM)
                 else kalman_log_likelihood(x, estimator.prior_, estimator.likelihood_))
        summary["log_likelihood"], summary["log_likelihood_per_obs"] = total, total / len(x)
    if estimator.history_:
        summary["history"] = _history(estimator)
    if isinstance(estimator, VariationalEB):
        summary |= _variational_summary(estimator, x, settings.method)
    if frequencies is not None:
        summary["stability"] = {"subsamples": settings.stability or STARS_SUBSAMPLES,
                                "refits": method_name(_refitter(estimator, fitted=True))}
    files = ({"edges.csv": edges_csv(edge_rows(arrays["precision"], problem.names, frequencies), frequencies is not None)}
             if "precision" in arrays else {})
    if "parameters" in described:  # a path prior's θ by name
        files["parameters.json"] = (json.dumps(described["parameters"], indent=2) + "\n").encode()
    if problem.series_names is not None:
        summary["series"] = problem.series_names
    if settings.forecast is not None:
        forecast, summary["forecast"] = forecast_outputs(estimator, x, problem.series, settings.forecast, settings.seed)
        arrays |= forecast
    return estimator, arrays, summary | _posterior_summary(estimator, x), files


def _answer_files(staged: StagedResults | None, n: int, prior) -> tuple[np.ndarray, np.ndarray] | None:
    """``posterior_mean.npy`` and ``posterior_std.npy`` (n, p) in ``staged``, memory-mapped; None where
    there is none or the answers are reshaped before they are written (a path prior's)."""
    if staged is None or isinstance(prior, PathPrior):
        return None
    return staged.array("posterior_mean", (n, prior.dim)), staged.array("posterior_std", (n, prior.dim))


def _path_outputs(estimator: EmpiricalBayesEstimator, x: np.ndarray, mean: np.ndarray, std: np.ndarray
                  ) -> tuple[dict[str, np.ndarray], dict]:
    """A path fit's arrays (the posterior's means and sds at the observation times (n, T, d), the
    series imputed (n, T, m) where entries are missing) and what the summary says of its shapes
    and θ (``parameters``, by name: :meth:`~invae.paths.prior.PathPrior.summary`)."""
    prior, operator = estimator.prior_, estimator.likelihood_.forward
    arrays = {"posterior_mean": at_times(prior, mean), "posterior_std": at_times(prior, std)}
    arrays |= {key: as_series(value, operator.steps) for key, value in _imputed(estimator, x).items()}
    described = {"n": x.shape[0], "T": operator.steps, "m": operator.per_time.out_dim, "d": prior.sde_dim,
                 "substeps": prior.substeps, "times": prior.times.tolist(),
                 "parameters": prior.summary() | _learned_noise(estimator.likelihood_)}
    return arrays, described


def _learned_noise(likelihood: Likelihood) -> dict:
    """``{"noise_std": σ̂}`` where the fit learned the noise level (a number for one measurement
    per time, else one per measurement), else nothing."""
    base = likelihood.base if isinstance(likelihood, MissingEntries) else likelihood
    if not getattr(base, "learn_noise", False):
        return {}
    std = base.noise_std.detach().cpu().double().reshape(-1)
    return {"noise_std": std.item() if std.numel() == 1 else std.tolist()}


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
    elbo, error = estimator.elbo(x)
    summary = {"elbo_per_obs": elbo, "elbo_standard_error": None if math.isnan(error) else error}  # None: one row
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
    name = ("log-likelihood per series" if isinstance(estimator, KalmanEM)
            else "penalised log-likelihood per observation")
    return {"time": estimator.history_["time"], "objective": estimator.history_["objective"], "objective_name": name}


def run_predict(model: str | Path, data: str | Path, sources: RowSources = RowSources(), *,
                device: str = "cpu") -> tuple[dict[str, np.ndarray], dict]:
    """Posterior means and sds of the observations in ``data`` under a saved model, and a
    summary; ``sources`` are the new rows' σ_i, offsets or covariates, where the model's rows
    had them (made by the model's recipe, :mod:`invae.app.recipe`)."""
    estimator, recipe = load_model(model, device=device), load_recipe(model)
    check_sources(estimator.likelihood, recipe, sources)
    operator, names = estimator.likelihood.forward, None
    if isinstance(estimator.prior, PathPrior):
        x, times, names = load_series_and_times(data, fitting=False)
        if x.shape[1:] != (operator.steps, operator.per_time.out_dim):
            raise ValueError(f"the model reads series of T = {operator.steps} times and m = "
                             f"{operator.per_time.out_dim} measurements, the data (--data) have shape {x.shape}")
        if names is not None and not np.allclose(times, estimator.prior.times.cpu().numpy(), rtol=1e-12, atol=0):
            model_times = estimator.prior.times
            raise ValueError(f"the long CSV's times (--data) are not the model's: it reads series at its T = "
                             f"{len(model_times)} times from {float(model_times[0]):g} to {float(model_times[-1]):g}")
        x = make_rows(series_rows(x), estimator.likelihood, sources, recipe)[0]
    else:
        x = check_data(load_array(data, name="the data (--data)"), name="the data (--data)", columns=operator.out_dim,
                       allow_missing=True)
        x = make_rows(x, estimator.likelihood, sources, recipe)[0]
    mean, std = estimator.posterior(x)
    summary = {"invae_version": __version__, "model": str(model), "data": str(data), "method": method_name(estimator)}
    if isinstance(estimator.prior_, PathPrior):
        arrays, described = _path_outputs(estimator, x, mean, std)
        described.pop("parameters")
        if names is not None:
            described["series"] = names
    else:
        arrays = {"posterior_mean": mean, "posterior_std": std, **_imputed(estimator, x)}
        described = {"n": x.shape[0], "m": operator.out_dim, "p": mean.shape[1]}
    return arrays, summary | described | _posterior_summary(estimator, x)


def _imputed(estimator: EmpiricalBayesEstimator, x: np.ndarray) -> dict[str, np.ndarray]:
    """``{"imputed": the data with each missing entry's posterior predictive mean}`` where entries are missing."""
    return {"imputed": estimator.impute(x)} if isinstance(estimator.likelihood_, MissingEntries) else {}
