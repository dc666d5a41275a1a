"""``invae demo``: the source's Gaussian-graphical-model simulation, end to end; with ``--sde``
the latent-path one.

Simulate a sparse Λ and data ``x = A z + σ ε``, fit every method, score each against the
Bayes oracle and the complete-data floor, and write the figures and an HTML report
(:mod:`invae.app.report`) beside the results. ``--sde`` (:func:`run_path_demo`): simulate
Ornstein–Uhlenbeck series seen through noise, fit θ by ``markov`` and ``kalman`` (the exact MLE),
print θ̂ against the truth, and write each fit's folder with its forecast and its report.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..evaluation.metrics import relative_frobenius_error
from ..evaluation.simulate import Problem, simulate_problem
from ..evaluation.tables import evaluate, format_table, log_likelihood, rank_matching_row, reference_rows
from ..model.ggm import GaussianGraphicalModel
from ..model.likelihoods import linear_gaussian
from ..references.exact import mean_log_likelihood
from .io import write_results
from .methods import make_estimator, methods
from .pipeline import run_fit
from .report import write_report
from .simulated_series import simulate_series
from .settings import FitSettings

__all__ = ["run_demo", "run_path_demo"]

_SHOWN_ROWS = 200  # observations whose posteriors the demo keeps for the signal figure


# The demo's posteriors are Gaussian (a GGM seen through A z + σε): a mixture q adds nothing
# that full-covariance lacks, only time; a posterior over paths needs a path prior.
_DEMO_METHODS = tuple(name for name, method in methods().items() if name != "mixture" and not method.paths)


def run_demo(out: str | Path = "invae-demo", *, p: int = 20, n: int = 10_000, graph: str = "chain",
             forward: str = "identity", noise_std: float = 1.0, penalty: float = 0.02, seed: int = 0,
             verbose: bool | int = True, device: str = "cpu") -> list[dict]:
    """Run the simulation, print the table, write the results and the report; return the rows.

    ``device``: the torch device of every fit (e.g. ``"cuda"``).

    The folder gets ``summary.json`` (the table's rows and each fit's convergence curve),
    ``precision_true.npy``, ``precision_<method>.npy``, and for the first 200 observations
    ``signals_true.npy`` and ``posterior_mean_<method>.npy`` / ``posterior_std_<method>.npy``;
    then the figures and ``report.html``.
    """
    problem = simulate_problem(p=p, n=n, graph=graph, forward=forward, noise_std=noise_std, seed=seed)
    likelihood = linear_gaussian(problem.A, noise_std)
    rows, oracle_mse = reference_rows(problem, penalty)
    arrays = {"precision_true": problem.precision, "signals_true": problem.Z[:_SHOWN_ROWS]}
    fitted, curves = {}, {}
    for method in _DEMO_METHODS:
        monitor = _Monitor(problem, likelihood)
        estimator = make_estimator(method, GaussianGraphicalModel(dim=p, alpha=penalty), likelihood,
                                   verbose=verbose, callback=monitor, device=device)
        monitor.start()
        estimator.fit(problem.X)
        seconds = monitor.elapsed()
        mean, std = estimator.posterior(problem.X)
        rows.append(evaluate(method, estimator, problem, oracle_mse, seconds, posterior=(mean, std)))
        arrays[f"precision_{method}"] = estimator.precision_
        arrays[f"posterior_mean_{method}"] = mean[:_SHOWN_ROWS]
        arrays[f"posterior_std_{method}"] = std[:_SHOWN_ROWS]
        fitted[method] = estimator
        if monitor.curve["time"]:  # iterative methods only
            curves[method] = monitor.curve
    rows.append(rank_matching_row(fitted["em"], fitted["naive"].transform(problem.X), problem, oracle_mse))
    print(f"invae demo: p = {p}, n = {n}, graph = {graph}, forward = {forward} (m = {problem.A.shape[0]}), "
          f"σ = {noise_std}, penalty α = {penalty}, seed = {seed}, device = {device}")
    print(format_table(rows))
    print("Λ rel.err = ‖Λ̂ − Λ‖_F/‖Λ‖_F; Δ log p(x)/n = mean marginal log-likelihood of Λ̂ minus that of "
          "the true Λ; ELBO gap = log p(x; Λ̂) − ELBO per observation; MSE/oracle = signal MSE over the "
          "Bayes oracle's.")
    folder = write_results(out, arrays, {"problem": problem.settings | {"noise_std": noise_std},
                                         "penalty": penalty, "rows": rows, "curves": curves})
    report = write_report(folder)
    print(f"results: {folder}/ (summary.json, arrays, figures); report: {report}")
    return rows


class _Monitor:
    """A fit's callback: the time, Λ error and log-likelihood gap after each outer iteration.

    Its own work (an exact log-likelihood per iteration) is timed and left out of ``elapsed``.
    """

    def __init__(self, problem: Problem, likelihood):
        self.problem, self.likelihood = problem, likelihood
        self.reference = log_likelihood(problem, problem.precision)
        self.curve = {"time": [], "precision_error": [], "log_lik_gap": []}
        self._start = self._overhead = 0.0

    def start(self) -> None:
        self._start, self._overhead = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self._start - self._overhead

    def __call__(self, iteration: int, prior) -> None:
        entered = time.perf_counter()
        precision = prior.precision.detach().to("cpu", torch.float64).numpy()
        self.curve["time"].append(entered - self._start - self._overhead)
        self.curve["precision_error"].append(relative_frobenius_error(precision, self.problem.precision))
        fitted = mean_log_likelihood(self.problem.X, GaussianGraphicalModel(precision), self.likelihood)
        self.curve["log_lik_gap"].append(fitted - self.reference)
        self._overhead += time.perf_counter() - entered


#: The path demo's truth: an Ornstein–Uhlenbeck path, d = 1, of stationary sd s/√(2θ) = 0.5 and
#: correlation time 1/θ = 2 time steps, seen at T times and forecast K times ahead.
_PATH_TRUTH = {"drift": 0.5, "mean": 1.0, "diffusion": 0.5}
_PATH_TIMES, _PATH_AHEAD = 25, 8
#: Each method's --tol: markov stops at a 1% relative change, 33 iterations on the default problem
#: where the statistical rule takes 51 for θ̂ equal to 2–3 digits (measured): the demo stays short.
_PATH_METHODS = {"markov": 1e-2, "kalman": None}


def run_path_demo(out: str | Path = "invae-demo", *, n: int = 20, noise_std: float = 0.3, seed: int = 0,
                  verbose: bool | int = True, device: str = "cpu") -> dict[str, dict]:
    """``invae demo --sde``: n Ornstein–Uhlenbeck series (:data:`_PATH_TRUTH`) at the times
    0, …, T − 1 seen through ``x = z + σ ε``, fitted by ``markov`` and ``kalman`` with the known σ;
    θ̂ printed against the truth. ``out`` gets ``problem/`` (:func:`~invae.app.simulated_series.simulate_series`'s
    files) and one ``invae fit`` folder per method, with a forecast K times ahead and its report
    (the paths against the true ones). Returns each method's summary."""
    problem = simulate_series("ou", n=n, steps=_PATH_TIMES, noise_std=noise_std, seed=seed, parameters=_PATH_TRUTH)
    data = problem.save(Path(out) / "problem")
    options = {"noise_std": noise_std, "seed": seed, "verbose": verbose, "device": device}
    summaries = {method: _path_fit(data, method, **options) for method in _PATH_METHODS}
    print(f"invae demo --sde: {n} Ornstein–Uhlenbeck series (d = 1) at T = {_PATH_TIMES} times, x = z + σε with "
          f"σ = {noise_std}, seed = {seed}, device = {device}")
    print(_path_table(problem.record["parameters"], summaries))
    print("kalman: Kalman EM, the exact MLE; markov: the Gauss–Markov posterior, θ by its M-step on importance-"
          f"weighted draws. Each forecasts {_PATH_AHEAD} times ahead.")
    print(f"results: {Path(out)}/ (problem/, {'/, '.join(_PATH_METHODS)}/); reports: "
          + ", ".join(str(Path(out) / method / "report.html") for method in _PATH_METHODS))
    return summaries


def _path_fit(data: Path, method: str, *, noise_std: float, seed: int, verbose: bool | int, device: str) -> dict:
    """``invae fit`` of the simulated series in ``data`` by ``method`` into ``data``'s sibling
    folder ``method``, then its report against the true paths; the fit's summary."""
    settings = FitSettings(data=data / "Y.npy", times=data / "times.npy", prior="ou", method=method,
                           noise_std=noise_std, forecast=_PATH_AHEAD, tol=_PATH_METHODS[method], seed=seed,
                           out=data.parent / method, quiet=not verbose, progress=verbose == 2, device=device)
    _, arrays, summary, files = run_fit(settings)
    write_report(write_results(settings.out, arrays, summary, files), truth=data / "Z.npy")
    return summary


def _path_table(truth: dict, summaries: dict[str, dict]) -> str:
    """θ's true value and each method's estimate, one parameter a line, then log p(x) per series and the time."""
    def row(label: str, true: str, values, fmt: str) -> str:
        return f"{label:<20}{true:>10}" + "".join(f"{value:>10{fmt}}" for value in values)

    fits = list(summaries.values())
    lines = [row("", "true", summaries, "")]
    lines += [row(name, f"{value:.3f}", [fit["parameters"][name] for fit in fits], ".3f")
              for name, value in truth.items()]
    lines.append(row("log p(x) per series", "", [fit["log_likelihood_per_obs"] for fit in fits], ".3f"))
    lines.append(row("fit seconds", "", [fit["fit_seconds"] for fit in fits], ".1f"))
    return "\n".join(lines)
