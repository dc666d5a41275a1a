"""Benchmark of issue #20: the Poisson log-normal network with a mean, a covariate and offsets,
invae against pyPLNmodels' ``PlnNetwork``, side by side.

Simulated data (p ∈ {20, 50}, n ∈ {1 000, 10 000}, seeds 0..S−1):

    z_i ~ N(μ + B c_i, Λ⁻¹),    x_ij ~ Poisson(exp(o_i + z_ij)),

Λ a chain plus a hub with unit marginal variances (``bench_speed.chain_hub_precision``),
μ_j ~ U(0.5, 1.5), one binary covariate c_i ~ Bernoulli(½) (a treatment) with effects
B_j ~ N(0, 0.5²), and per-row offsets o_i ~ N(0, 0.5²) (log sequencing depths). 20% of the
rows are held out. On the other 80%:

- invae ``iaf`` and ``vae``: ``GaussianGraphicalModel(fit_intercept=True, covariates=1)``,
  ``PoissonLikelihood(offsets=True)``, α = 0.02 per sample;
- ``PlnNetwork(counts, exog=c, offsets=o, add_const=True, penalty=nα/2)`` with ``fit()``'s
  defaults (its objective sums the ELBO over rows: λ = nα/2 is the same penalised model).

Each fit's (μ̂, B̂, Λ̂) is scored by the Λ error ``‖Λ̂ − Λ‖_F / ‖Λ‖_F``, edge F1, and the
held-out ``(1/n_test) Σ log p(x_i; θ̂)`` estimated by one estimator for all fits:
:func:`invae.references.importance.importance_posterior` (a Student-t Laplace proposal with a
defensive prior component, 1 024 draws per row, on at most 1 000 held-out rows), with its
median effective sample size. Every
method runs on one torch thread in one process after a warm-up fit of each kind.

    bash benchmarks/setup_bench_env.sh       # once: pyPLNmodels 1.0.10 in benchmarks/.venv-bench
    benchmarks/.venv-bench/bin/python benchmarks/bench_pln.py [--seeds 3] [--sizes 20x1000,50x10000]

Prints the medians over seeds and writes every row to benchmarks/results/pln.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, str(Path(__file__).parent))
from baselines_speed import _silenced, plnnetwork_penalty  # noqa: E402
from bench_speed import chain_hub_precision, scores  # noqa: E402
from pln_common import IS_DRAWS, data_rows, has_pyplnmodels, held_out, pln_prior, poisson_likelihood  # noqa: E402

from invae import GaussianGraphicalModel, VariationalEB  # noqa: E402

ALPHA = 0.02
FAMILIES = {"iaf": "iaf", "vae": "diagonal"}
HELD_OUT = 0.2
IS_ROWS = 1000  # held-out rows scored (the first of the random 20%), to bound the sampler's time
LEAD = 0.85  # the target: invae iaf's Λ error ≤ 0.85 × PlnNetwork's


def simulate(p: int, n: int, seed: int) -> dict:
    """Counts (n, p), offsets (n,), covariate (n, 1) and the truth (module docstring)."""
    rng = np.random.default_rng(seed)
    precision = chain_hub_precision(p)
    location, effects = rng.uniform(0.5, 1.5, p), rng.normal(0.0, 0.5, (p, 1))
    covariate = rng.binomial(1, 0.5, (n, 1)).astype(np.float64)
    offsets = rng.normal(0.0, 0.5, n)
    z = location + covariate @ effects.T + rng.multivariate_normal(np.zeros(p), np.linalg.inv(precision), size=n)
    counts = rng.poisson(np.exp(offsets[:, None] + z)).astype(np.float64)
    return {"counts": counts, "offsets": offsets, "covariate": covariate, "precision": precision,
            "location": location, "effects": effects, "test": rng.permutation(n)[: int(HELD_OUT * n)]}


def rows_of(data: dict, index: np.ndarray) -> np.ndarray:
    """invae's data rows (x, offsets, covariate) of the rows ``index``: (len, 2p + 1)."""
    return data_rows(data["counts"][index], data["offsets"][index], data["covariate"][index])


def fit_invae(family: str, data: dict, train: np.ndarray, seed: int) -> tuple[GaussianGraphicalModel, dict]:
    p = data["counts"].shape[1]
    estimator = VariationalEB(GaussianGraphicalModel(dim=p, alpha=ALPHA, covariates=1, fit_intercept=True),
                              poisson_likelihood(p), family=FAMILIES[family], random_state=seed, n_threads=1)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            estimator.fit(rows_of(data, train))
        except FloatingPointError as error:  # diverged even after its rollbacks: a row that says so
            return None, {"method": family, "seconds": time.perf_counter() - start, "failed": str(error)}
    seconds = time.perf_counter() - start
    return estimator.prior_, {"method": family, "seconds": seconds, "n_iter": estimator.n_iter_,
                              "converged": estimator.converged_}


def fit_pln(data: dict, train: np.ndarray) -> tuple[GaussianGraphicalModel, dict]:
    """PlnNetwork on the training rows; its (μ̂, B̂, Λ̂) as an invae prior."""
    counts, p = data["counts"][train], data["counts"].shape[1]
    offsets = np.repeat(data["offsets"][train, None], p, axis=1)
    with _silenced(True):
        from pyPLNmodels import PlnNetwork
    start = time.perf_counter()
    with _silenced(True):
        net = PlnNetwork(counts, penalty=plnnetwork_penalty(ALPHA, len(train)), exog=data["covariate"][train],
                         offsets=offsets, add_const=True)
        net.fit()
    seconds = time.perf_counter() - start
    return pln_prior(net), {"method": "pyPLNmodels PlnNetwork", "seconds": seconds}


def scored(prior: GaussianGraphicalModel | None, row: dict, data: dict) -> dict:
    if prior is None:
        return row
    precision = prior.precision.double().numpy()
    location_error = float(np.linalg.norm(prior.location.double().numpy() - data["location"])
                           / np.linalg.norm(data["location"]))
    test = rows_of(data, data["test"][:IS_ROWS])
    return {**row, **scores(precision, data["precision"]), "location_error": location_error,
            **held_out(prior, test, data["counts"].shape[1])}


def case(p: int, n: int, seed: int, families: list[str], with_pln: bool) -> list[dict]:
    data = simulate(p, n, seed)
    train = np.setdiff1d(np.arange(n), data["test"])
    rows = [scored(*fit_invae(family, data, train, seed), data) for family in families]
    if with_pln:
        rows.append(scored(*fit_pln(data, train), data))
        for row in (row for row in rows if "failed" not in row):
            row["error_vs_pln"] = row["precision_error"] / rows[-1]["precision_error"]
            row["time_vs_pln"] = row["seconds"] / rows[-1]["seconds"]
            row["log_lik_vs_pln"] = row["held_out_log_lik"] - rows[-1]["held_out_log_lik"]
    for row in rows:
        row.update(p=p, n=n, seed=seed)
    return rows


def warm_up(families: list[str], with_pln: bool) -> None:
    """One small fit of each kind, so that no method pays the process's first-use costs."""
    data = simulate(5, 200, 99)
    train = np.setdiff1d(np.arange(200), data["test"])
    for family in families:
        fit_invae(family, data, train, 0)
    if with_pln:
        fit_pln(data, train)


def _brief(row: dict) -> str:
    if "failed" in row:
        return f"{row['method']} FAILED after {row['seconds']:.1f}s"
    return f"{row['method']} err {row['precision_error']:.3f} ll {row['held_out_log_lik']:.3f} {row['seconds']:.1f}s"


def median_table(rows: list[dict]) -> str:
    """Medians over the seeds whose fit ended; ``failed`` counts the fits that diverged."""
    keys = ("precision_error", "edge_f1", "location_error", "held_out_log_lik", "median_ess", "seconds",
            "error_vs_pln", "log_lik_vs_pln", "time_vs_pln")
    lines = [f"{'p':>4} {'n':>6}  {'method':<24}{'failed':>7}" + "".join(f"{key:>17}" for key in keys)]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["p"], row["n"], row["method"]), []).append(row)
    for (p, n, method), group in groups.items():
        cells = []
        for key in keys:
            values = [row[key] for row in group if row.get(key) is not None]
            cells.append(f"{statistics.median(values):>17.3f}" if values else f"{'—':>17}")
        failed = sum("failed" in row for row in group)
        lines.append(f"{p:>4} {n:>6}  {method:<24}{failed:>7}" + "".join(cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sizes", default="20x1000,20x10000,50x1000,50x10000", help="comma-separated pxn")
    parser.add_argument("--families", default="iaf,vae")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pln.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    families = [name for name in args.families.split(",") if name]
    with_pln = has_pyplnmodels()
    warm_up(families, with_pln)
    rows = []
    for size in args.sizes.split(","):
        p, n = (int(part) for part in size.split("x"))
        for seed in range(args.seeds):
            rows += case(p, n, seed, families, with_pln)
            print(f"p={p} n={n} seed={seed}: " + ", ".join(_brief(row) for row in rows[-len(families) - with_pln:]),
                  flush=True)
    print(median_table(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": platform.platform(), "alpha": ALPHA, "lead": LEAD,
                                          "is_draws": IS_DRAWS, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
