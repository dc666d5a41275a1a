"""Benchmark of issue 20: missing entries — Λ̂ and imputation against exact EM and the oracle.

GGM, chain graph, p = 30, n = 5 000, A = I, σ = 0.5; 20% and 50% of the entries missing
completely at random (a row left without any observed entry keeps one). For each method:
Λ's relative error against the truth, its ratio to exact EM's (target for ``iaf``: ≤ 1.05),
and the imputation MSE of the missing entries against the oracle's (the posterior predictive
mean under the true Λ, :meth:`invae.inference.base.EmpiricalBayesEstimator.impute`), with times.

    .venv/bin/python benchmarks/bench_missing.py [--seeds 3] [--out benchmarks/results/missing.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

from invae.app.methods import make_estimator
from invae.evaluation.metrics import relative_frobenius_error
from invae.evaluation.simulate import simulate_problem
from invae.model.ggm import GaussianGraphicalModel
from invae.model.likelihoods import linear_gaussian
from invae.model.missing import MissingEntries
from invae.references.em import EM

P, N, NOISE_STD = 30, 5_000, 0.5
RATES = (0.2, 0.5)
METHODS = ("em", "iaf", "full-covariance", "vae")


def with_holes(x: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x with NaN at a random ``rate`` of its entries, the missing mask); every row keeps one entry."""
    rng = np.random.default_rng(10_000 + seed)
    missing = rng.random(x.shape) < rate
    empty = missing.all(1)
    missing[empty, rng.integers(0, x.shape[1], empty.sum())] = False
    holed = x.copy()
    holed[missing] = np.nan
    return holed, missing


def case_rows(rate: float, seed: int) -> list[dict]:
    problem = simulate_problem(p=P, n=N, graph="chain", noise_std=NOISE_STD, seed=seed)
    holed, missing = with_holes(problem.X, rate, seed)
    likelihood = MissingEntries(linear_gaussian(np.eye(P), NOISE_STD))
    rows = likelihood.rows(holed)
    oracle = EM(GaussianGraphicalModel(problem.precision), likelihood).restore()
    oracle_mse = float(((oracle.impute(rows) - problem.X)[missing] ** 2).mean())
    results, em_error = [], None
    for method in METHODS:
        estimator = make_estimator(method, GaussianGraphicalModel(dim=P), likelihood, seed=seed)
        begin = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.fit(rows)
        seconds = time.perf_counter() - begin
        error = relative_frobenius_error(estimator.precision_, problem.precision)
        em_error = error if method == "em" else em_error
        mse = float(((estimator.impute(rows) - problem.X)[missing] ** 2).mean())
        results.append({"rate": rate, "seed": seed, "method": method, "seconds": seconds, "lambda_error": error,
                        "error_over_em": error / em_error, "imputation_mse": mse, "oracle_mse": oracle_mse,
                        "mse_over_oracle": mse / oracle_mse, "converged": bool(estimator.converged_)})
        print(f"missing {rate:.0%} seed {seed} {method:16s} Λ err {error:.4f} ({error / em_error:.3f} × em)  "
              f"imputation MSE {mse:.4f} ({mse / oracle_mse:.4f} × oracle)  {seconds:.1f} s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/missing.json")
    args = parser.parse_args()
    rows = [row for rate in RATES for seed in range(args.seeds) for row in case_rows(rate, seed)]
    print("\nmedians over seeds")
    for rate in RATES:
        for method in METHODS:
            chosen = [r for r in rows if r["rate"] == rate and r["method"] == method]
            print(f"missing {rate:.0%} {method:16s} Λ err/em {np.median([r['error_over_em'] for r in chosen]):.3f}  "
                  f"MSE/oracle {np.median([r['mse_over_oracle'] for r in chosen]):.4f}  "
                  f"{np.median([r['seconds'] for r in chosen]):.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
