"""``invae demo``: the source's Gaussian-graphical-model simulation, end to end.

Simulate a sparse Λ and data ``x = A z + σ ε``, fit every method, score each against the
Bayes oracle and the complete-data floor, and write the figures and an HTML report
(:mod:`invae.app.report`) beside the results.
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
from .report import write_report

__all__ = ["run_demo"]

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
