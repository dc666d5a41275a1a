"""Benchmark of issue #9: one-dimensional empirical Bayes (normal means) against the Bayes oracle.

Accuracy: for each simulated prior (``two-point`` 0.7 δ0 + 0.3 δ3, ``uniform`` U(−3, 3),
``spike-slab`` 0.8 δ0 + 0.2 N(0, 3²)) and noise (``homoscedastic`` σ = 1,
``heteroscedastic`` σ_i ~ U(0.5, 2)), at n = 10⁴, it reports each method's total squared
error Σ_i (ẑ_i − z_i)² over the Bayes oracle's (the posterior mean under the true prior,
exact on a grid), and its wall time: naive, James–Stein, the normal prior by marginal ML,
the NPMLE (SQP), Efron's log-spline, rank matching on the NPMLE, and the VAE-like estimator
(a 10-component Gaussian-mixture prior and a mixture posterior) twice: ``vae`` with q set to
the exact posterior (EM, the default) and ``vae-adam``, ``VariationalEB``'s encoder trained
by Adam (``closed_form=False``, ``invae eb --adam``).

Speed: the NPMLE at n = 10⁴ and 10⁵ (spike-slab, heteroscedastic, 300 atoms) by the SQP
solver and by EM run side by side in one process: wall time, iterations, the optimality
gap max_k D_k/n − 1 reached, and EM's log-likelihood shortfall (EM is capped at
``--em-seconds`` of work, or 100 000 iterations at n = 10⁴).

    .venv/bin/python benchmarks/bench_normal_means.py [--seeds 2] [--n 10000] [--out benchmarks/results/normal_means.json]

Prints two tables (medians over seeds) and writes every row as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from invae.normal_means import NORMAL_MEANS_METHODS, fit_normal_means, grid_posterior, npmle, simulate_normal_means
from invae.normal_means.simulate import NOISE_MODELS

PRIORS = ("two-point", "uniform", "spike-slab")  # the two-groups priors are bench_lfdr's
METHODS = {**{method: (method, {}) for method in NORMAL_MEANS_METHODS}, "vae-adam": ("vae", {"closed_form": False})}


def accuracy_rows(seeds: int, n: int) -> list[dict]:
    rows = []
    for prior in PRIORS:
        for noise in NOISE_MODELS:
            for seed in range(seeds):
                problem = simulate_normal_means(prior, n, noise, seed=seed)
                oracle = grid_posterior(problem.x, problem.sigma, problem.prior).mean
                floor = float(((oracle - problem.z) ** 2).sum())
                for method, (name, options) in METHODS.items():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        fit = fit_normal_means(problem.x, problem.sigma, name, seed=seed, **options)
                    row = {"prior": prior, "noise": noise, "seed": seed, "n": n, "method": method,
                           "ratio": float(((fit.mean - problem.z) ** 2).sum()) / floor,
                           "oracle_mse": floor / n, "seconds": fit.seconds, "details": fit.details}
                    rows.append(row)
                    print(f"{prior:10s} {noise:15s} seed {seed} {method:14s} {row['ratio']:.4f} "
                          f"({fit.seconds:.1f} s)", flush=True)
    return rows


def speed_rows(sizes: tuple[int, ...], em_seconds: float) -> list[dict]:
    rows = []
    for n in sizes:
        problem = simulate_normal_means("spike-slab", n, "heteroscedastic", seed=0)
        start = time.perf_counter()
        sqp = npmle(problem.x, problem.sigma, solver="sqp")
        sqp_seconds = time.perf_counter() - start
        # EM at the same grid: a few iterations to time one, then as many as fit em_seconds.
        start = time.perf_counter()
        npmle(problem.x, problem.sigma, solver="em", max_iter=20)
        per_iteration = (time.perf_counter() - start) / 20
        budget = int(min(100_000, max(20, em_seconds / per_iteration)))
        start = time.perf_counter()
        em = npmle(problem.x, problem.sigma, solver="em", max_iter=budget)
        em_seconds_used = time.perf_counter() - start
        rows.append({"n": n, "sqp_seconds": sqp_seconds, "sqp_iterations": sqp.n_iter, "sqp_gap": sqp.gap,
                     "em_seconds": em_seconds_used, "em_iterations": em.n_iter, "em_gap": em.gap,
                     "em_loglik_shortfall": sqp.log_likelihood - em.log_likelihood})
        print(f"n = {n}: sqp {sqp_seconds:.2f} s ({sqp.n_iter} it, gap {sqp.gap:.1e}); "
              f"em {em_seconds_used:.1f} s ({em.n_iter} it, gap {em.gap:.1e}, "
              f"log-lik short by {sqp.log_likelihood - em.log_likelihood:.3f})", flush=True)
    return rows


def summarize(rows: list[dict]) -> dict:
    table = {}
    for row in rows:
        key = f"{row['prior']}/{row['noise']}"
        table.setdefault(key, {}).setdefault(row["method"], {"ratio": [], "seconds": []})
        table[key][row["method"]]["ratio"].append(row["ratio"])
        table[key][row["method"]]["seconds"].append(row["seconds"])
    return {key: {method: {"ratio": statistics.median(v["ratio"]), "max_ratio": max(v["ratio"]),
                           "seconds": statistics.median(v["seconds"])} for method, v in methods.items()}
            for key, methods in table.items()}


def print_table(table: dict) -> None:
    methods = tuple(METHODS)
    print("\ntotal squared error / Bayes oracle's (median over seeds; max in brackets)")
    print(f"{'prior/noise':32s}" + "".join(f"{m:>16s}" for m in methods))
    for key, row in table.items():
        print(f"{key:32s}" + "".join(f"{row[m]['ratio']:>8.3f} [{row[m]['max_ratio']:.3f}]" for m in methods))
    print(f"{'median seconds':32s}" + "".join(
        f"{statistics.median(row[m]['seconds'] for row in table.values()):>16.2f}" for m in methods))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--em-seconds", type=float, default=60.0)
    parser.add_argument("--out", default="benchmarks/results/normal_means.json")
    args = parser.parse_args()
    speed = speed_rows(tuple(args.sizes), args.em_seconds)
    rows = accuracy_rows(args.seeds, args.n)
    table = summarize(rows)
    print_table(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "cpus": os.cpu_count(), "speed": speed, "table": table,
                               "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
