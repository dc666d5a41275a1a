"""Benchmark of issue #5 (penalty selection): how good is the α that ``--penalty auto`` picks?

For each case (GGM simulation, n = 2000, identity A unless stated) it fits EM on all rows at
every α of the default grid (:func:`invae.inference.penalty.penalty_grid`, 8 values) to find the grid's
best Λ error (an oracle choice: it needs the true Λ), then lets each criterion choose:
"held-out" (80/20 split, exact held-out log p(x)) and "ebic" (γ = 0.5). Reports the chosen α,
its Λ error as a ratio to the grid's best, edge F1, and the fixed α = 0.02 for comparison.
``--vae`` adds the ``vae`` method (diagonal encoder, held-out criterion) on the first case.

    .venv/bin/python benchmarks/bench_penalty.py [--seeds 2] [--vae]

Prints a table (medians over seeds) and writes rows to benchmarks/results/penalty.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from invae import GaussianGraphicalModel, linear_gaussian, simulate_problem
from invae.app.methods import make_estimator
from invae.evaluation.metrics import edge_scores, relative_frobenius_error
from invae.inference.penalty import penalty_grid, select_penalty

CASES = [  # (p, graph, forward, σ)
    (20, "chain", "identity", 1.0),
    (20, "erdos-renyi", "identity", 0.5),
    (50, "hub", "identity", 1.0),
    (50, "chain", "gaussian", 0.5),
]
FIXED_ALPHA = 0.02


def _fit(method, problem, sigma, alpha, seed):
    prior = GaussianGraphicalModel(dim=problem.precision.shape[0], alpha=alpha)
    return make_estimator(method, prior, linear_gaussian(problem.A, sigma), seed=seed)


def run_case(p, graph, forward, sigma, seed, methods) -> list[dict]:
    problem = simulate_problem(p=p, n=2000, graph=graph, forward=forward, noise_std=sigma, seed=seed)
    grid = penalty_grid(problem.X, GaussianGraphicalModel(dim=p), linear_gaussian(problem.A, sigma))
    errors = [relative_frobenius_error(_fit("em", problem, sigma, a, seed).fit(problem.X).precision_,
                                       problem.precision) for a in grid]
    best = min(errors)
    case = {"p": p, "graph": graph, "forward": forward, "sigma": sigma, "seed": seed,
            "grid_best_alpha": float(grid[int(np.argmin(errors))]), "grid_best_error": best}
    rows = []

    def row(method, rule, estimator, alpha, seconds):
        error = relative_frobenius_error(estimator.precision_, problem.precision)
        rows.append({**case, "method": method, "rule": rule, "alpha": float(alpha), "error": error,
                     "error_over_grid_best": error / best, "seconds": seconds,
                     "f1": edge_scores(estimator.precision_, problem.precision)["f1"]})

    for method in methods:
        start = time.perf_counter()
        fixed = _fit(method, problem, sigma, FIXED_ALPHA, seed).fit(problem.X)
        row(method, f"fixed {FIXED_ALPHA}", fixed, FIXED_ALPHA, time.perf_counter() - start)
        for criterion in ("held-out", "ebic") if method == "em" else ("held-out",):
            start = time.perf_counter()
            chosen, path = select_penalty(_fit(method, problem, sigma, 0.0, seed), problem.X,
                                          criterion=criterion, seed=seed)
            row(method, criterion, chosen, path.alpha, time.perf_counter() - start)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--vae", action="store_true", help="add the vae method on the first case")
    parser.add_argument("--out", default="benchmarks/results/penalty.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for index, case in enumerate(CASES):
            methods = ["em", "vae"] if args.vae and index == 0 else ["em"]
            for seed in range(args.seeds):
                rows += run_case(*case, seed, methods)
    print(f"medians over {args.seeds} seed(s); error = relative Frobenius error of Λ̂; "
          "ratio = error / the best error on the grid (an oracle choice)")
    groups = {}
    for r in rows:
        groups.setdefault((r["p"], r["graph"], r["forward"], r["sigma"], r["method"], r["rule"]), []).append(r)
    for (p, graph, forward, sigma, method, rule), group in groups.items():
        med = {key: statistics.median(r[key] for r in group)
               for key in ("alpha", "error", "error_over_grid_best", "f1", "seconds", "grid_best_alpha")}
        print(f"  p={p:<3} {graph:<12} {forward:<9} σ={sigma:<4} {method:<4} {rule:<11} α {med['alpha']:.4f} "
              f"(grid best {med['grid_best_alpha']:.4f})  error {med['error']:.3f}  ratio {med['error_over_grid_best']:.2f}"
              f"  F1 {med['f1']:.2f}  {med['seconds']:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"rows: {out}")


if __name__ == "__main__":
    main()
