"""Score fitted estimators on a simulated problem against its truth and the exact references.

One row per method, the same columns for all, so that every claim is read against the
Bayes oracle (posterior with the true Λ) and the complete-data floor (M-step on true z).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm

from ..inference.base import EmpiricalBayesEstimator
from ..model.ggm import GaussianGraphicalModel
from ..model.likelihoods import linear_gaussian
from ..references.baselines import complete_data_floor, rank_matching
from ..references.exact import exact_posterior, mean_log_likelihood
from .metrics import coverage, edge_scores, relative_frobenius_error, signal_mse, stein_loss
from .simulate import Problem

__all__ = ["COLUMNS", "reference_rows", "evaluate", "rank_matching_row", "format_table", "format_cell", "log_likelihood"]

# (key, header, format)
COLUMNS = (
    ("method", "method", "{}"),
    ("precision_error", "Λ rel.err", "{:.3f}"),
    ("stein_loss", "Stein", "{:.3f}"),
    ("edge_f1", "edge F1", "{:.3f}"),
    ("edge_auroc", "AUROC", "{:.3f}"),
    ("mse_ratio", "MSE/oracle", "{:.3f}"),
    ("coverage90", "90% cover", "{:.3f}"),
    ("log_lik_gap", "Δ log p(x)/n", "{:+.4f}"),
    ("elbo_gap", "ELBO gap", "{:.4f}"),
    ("seconds", "time s", "{:.2f}"),
)


def _precision_metrics(estimate: np.ndarray, problem: Problem) -> dict:
    edges = edge_scores(estimate, problem.precision)
    return {"precision_error": relative_frobenius_error(estimate, problem.precision),
            "stein_loss": stein_loss(estimate, problem.precision),
            "edge_f1": edges["f1"], "edge_auroc": edges["auroc"]}


def log_likelihood(problem: Problem, precision: np.ndarray) -> float:
    """Mean exact ``log p(x_i; Λ)`` over the problem's observations, for Λ (p, p)."""
    return mean_log_likelihood(problem.X, GaussianGraphicalModel(precision),
                               linear_gaussian(problem.A, problem.noise_std))


def reference_rows(problem: Problem, alpha: float) -> tuple[list[dict], float]:
    """Rows for the Bayes oracle and the complete-data floor, and the oracle's signal MSE."""
    likelihood = linear_gaussian(problem.A, problem.noise_std)
    mean, cov = exact_posterior(torch.as_tensor(problem.X), GaussianGraphicalModel(problem.precision),
                                likelihood)
    mean = mean.numpy()
    std = np.broadcast_to(np.sqrt(np.diag(cov.numpy())), mean.shape)
    oracle_mse = signal_mse(mean, problem.Z)
    oracle = {"method": "oracle (true Λ)", **_precision_metrics(problem.precision, problem),
              "mse": oracle_mse, "mse_ratio": 1.0, "coverage90": coverage(mean, std, problem.Z),
              "log_lik_gap": 0.0}
    floor = complete_data_floor(problem.Z, GaussianGraphicalModel(dim=problem.Z.shape[1], alpha=alpha))
    floor_precision = floor.precision.numpy()
    floor_row = {"method": "complete-data floor", **_precision_metrics(floor_precision, problem),
                 "log_lik_gap": log_likelihood(problem, floor_precision) - log_likelihood(problem, problem.precision)}
    return [oracle, floor_row], oracle_mse


def evaluate(name: str, estimator: EmpiricalBayesEstimator, problem: Problem, oracle_mse: float,
             seconds: float, posterior: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Metrics of a fitted ``estimator`` on ``problem``: Λ̂, edges, signals, evidence.

    ``posterior``: the (means, sds) of ``problem.X``, each (n, p), if already computed.
    For a variational estimator, ``elbo_gap`` is the exact ``log p(x; Λ̂)`` minus its ELBO
    (closed form for Gaussian q, else 20 draws per row), per observation: how far its posterior
    family is from the exact one.
    """
    mean, std = estimator.posterior(problem.X) if posterior is None else posterior
    precision = estimator.precision_
    mse = signal_mse(mean, problem.Z)
    fitted_log_lik = log_likelihood(problem, precision)
    row = {"method": name, **_precision_metrics(precision, problem), "mse": mse,
           "mse_ratio": mse / oracle_mse, "coverage90": coverage(mean, std, problem.Z),
           "log_lik_gap": fitted_log_lik - log_likelihood(problem, problem.precision), "seconds": seconds}
    if hasattr(estimator, "elbo"):
        row["elbo"], row["elbo_se"] = estimator.elbo(problem.X, n_samples=20)
        row["elbo_gap"] = fitted_log_lik - row["elbo"]
    return row


def rank_matching_row(prior_from: EmpiricalBayesEstimator, naive_mean: np.ndarray, problem: Problem,
                      oracle_mse: float) -> dict:
    """The order-statistics estimator: naive estimates' ranks, the fitted prior's quantiles."""
    marginal_std = np.sqrt(np.diag(np.linalg.inv(prior_from.precision_)))
    mse = signal_mse(rank_matching(naive_mean, lambda u: marginal_std * norm.ppf(u)), problem.Z)
    return {"method": "rank matching (EM prior)", "mse": mse, "mse_ratio": mse / oracle_mse}


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of ``rows`` over :data:`COLUMNS`; missing values print as —."""
    cells = [[header for _, header, _ in COLUMNS]]
    for row in rows:
        cells.append([format_cell(row.get(key), fmt) for key, _, fmt in COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_cell(value, fmt: str) -> str:
    """``value`` formatted by ``fmt``; a missing value (None or NaN) as —."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return fmt.format(value)
