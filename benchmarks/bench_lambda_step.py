"""Benchmark of issue #5: how expensive is the Λ-step, and what does a warm start buy?

1. One graphical-lasso solve at p ∈ {50, 100, 200, 500} (chain-graph truth, S from n = 10 p
   draws, α = 0.05), per solver: time as a ratio to scikit-learn's from scratch in the same
   run, the objective difference and the optimality (KKT) violation.
2. A sequence of 50 solves along a slowly drifting S (S_t = (1 − t/500) S_a + (t/500) S_b),
   each solver warm-started from its previous answer where it can be.
3. The share of a whole `vae` fit spent in Λ-steps (p = 100, n = 10 000, identity A, σ = 1,
   α = 0.02), with the Newton solver and with scikit-learn's.

    .venv/bin/python benchmarks/bench_lambda_step.py [--sizes 50 100 200 500] [--max-sequence-p 200] [--skip-fit]

Solvers: "sklearn" is scikit-learn's coordinate descent from scratch (tol = enet_tol = 1e-8,
200 sweeps at most), the reference; "sklearn cov_init" is scikit-learn's private
``_graphical_lasso(cov_init=...)``, the warm start its public API no longer offers (it
shrinks the start's off-diagonal by 0.95); "invae sklearn" is scikit-learn as invae calls it
(stopped by a KKT test after 16 sweeps when that is met, see invae.model.graphical_lasso); "newton" is invae's default
(:func:`invae.model.graphical_lasso.solve_precision`), warm-started from the previous answer; "gglasso
ADMM" (tol = rtol = 1e-8, warm-started) joins when the gglasso package is installed. Prints
tables (medians of 3 repeats) and writes JSON to benchmarks/results/lambda_step.json.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.covariance import graphical_lasso
from sklearn.covariance._graph_lasso import _graphical_lasso
from sklearn.exceptions import ConvergenceWarning

import invae.model.ggm
from invae import GaussianGraphicalModel, linear_gaussian, simulate_problem
from invae.app.methods import make_estimator
from invae.evaluation.simulate import sparse_precision
from invae.model.graphical_lasso import glasso_objective, optimality_violation, solve_precision

ALPHA = 0.05


def _sklearn_warm(s: np.ndarray, alpha: float, previous: np.ndarray | None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _, precision, _, _ = _graphical_lasso(s, alpha, cov_init=None if previous is None else np.linalg.inv(previous),
                                              mode="cd", tol=1e-8, enet_tol=1e-8, max_iter=200)
    return precision


def _sklearn(s: np.ndarray, alpha: float, previous: np.ndarray | None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return graphical_lasso(s, alpha, mode="cd", tol=1e-8, enet_tol=1e-8, max_iter=200)[1]


def _gglasso(s: np.ndarray, alpha: float, previous: np.ndarray | None) -> np.ndarray:
    from gglasso.solver.single_admm_solver import ADMM_SGL

    start = np.eye(len(s)) if previous is None else previous
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per solve
        solution, _ = ADMM_SGL(s, alpha, start, max_iter=5000, tol=1e-8, rtol=1e-8)
    return solution["Theta"]


SOLVERS = {  # name: (S, α, previous Λ or None) -> Λ; "sklearn" is the reference
    "sklearn": _sklearn,
    "sklearn cov_init": _sklearn_warm,
    "invae sklearn": lambda s, alpha, previous: solve_precision(s, alpha, solver="sklearn"),
    "newton": lambda s, alpha, previous: solve_precision(s, alpha, initial=previous, solver="newton"),
}
if importlib.util.find_spec("gglasso") is not None:  # optional: pip install gglasso
    SOLVERS["gglasso ADMM"] = _gglasso


def _second_moment(p: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    covariance = np.linalg.inv(sparse_precision("chain", p, rng))
    z = rng.multivariate_normal(np.zeros(p), covariance, size=10 * p)
    return z.T @ z / len(z)


def _timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = function(*args, **kwargs)
    return time.perf_counter() - start, out


def single_solves(sizes: list[int]) -> list[dict]:
    rows = []
    for p in sizes:
        s = _second_moment(p, seed=0)
        results = {name: [_timed(solver, s, ALPHA, None) for _ in range(3)] for name, solver in SOLVERS.items()}
        reference_time = statistics.median(t for t, _ in results["sklearn"])
        reference_objective = glasso_objective(results["sklearn"][0][1], s, ALPHA)
        for name, runs in results.items():
            seconds = statistics.median(t for t, _ in runs)
            objective = glasso_objective(runs[0][1], s, ALPHA)
            rows.append({"p": p, "solver": name, "seconds": seconds, "time_ratio": seconds / reference_time,
                         "relative_objective_gap": (reference_objective - objective) / abs(reference_objective),
                         "kkt_violation": optimality_violation(runs[0][1], s, ALPHA)})
    return rows


def warm_sequences(sizes: list[int], steps: int = 50) -> list[dict]:
    rows = []
    for p in sizes:
        s_a, s_b = _second_moment(p, seed=1), _second_moment(p, seed=2)
        sequence = [(1 - t / 500) * s_a + (t / 500) * s_b for t in range(steps)]
        totals, answers = {}, {}
        for name, solver in SOLVERS.items():
            previous, seconds, found = None, 0.0, []
            for s in sequence:
                elapsed, previous = _timed(solver, s, ALPHA, previous)
                seconds += elapsed
                found.append(previous)
            totals[name], answers[name] = seconds, found
        for name in SOLVERS:
            gaps = [(glasso_objective(ref, s, ALPHA) - glasso_objective(got, s, ALPHA)) / abs(glasso_objective(ref, s, ALPHA))
                    for ref, got, s in zip(answers["sklearn"], answers[name], sequence)]
            rows.append({"p": p, "solver": name, "seconds": totals[name], "time_ratio": totals[name] / totals["sklearn"],
                         "max_relative_objective_gap": max(gaps),
                         "max_kkt_violation": max(optimality_violation(got, s, ALPHA)
                                                  for got, s in zip(answers[name], sequence))})
    return rows


def lambda_step_share(solver: str, p: int = 100) -> dict:
    problem = simulate_problem(p=p, n=10_000, graph="chain", forward="identity", noise_std=1.0, seed=0)
    spent = []

    def timed_solve(*args, **kwargs):
        elapsed, out = _timed(solve_precision, *args, **kwargs)
        spent.append(elapsed)
        return out

    invae.model.ggm.solve_precision = timed_solve  # count every Λ-step the fit makes
    try:
        prior = GaussianGraphicalModel(dim=p, alpha=0.02, solver=solver)
        estimator = make_estimator("vae", prior, linear_gaussian(problem.A, 1.0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            elapsed, _ = _timed(estimator.fit, problem.X)
    finally:
        invae.model.ggm.solve_precision = solve_precision
    return {"p": p, "solver": solver, "fit_seconds": elapsed, "lambda_step_seconds": sum(spent), "n_solves": len(spent),
            "share": sum(spent) / elapsed, "n_iter": estimator.n_iter_}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500])
    parser.add_argument("--max-sequence-p", type=int, default=200,
                        help="largest p of the 50-solve sequences (scikit-learn takes ~20 s a solve at p = 500)")
    parser.add_argument("--skip-fit", action="store_true", help="leave out the Λ-step share of a vae fit")
    parser.add_argument("--out", default="benchmarks/results/lambda_step.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    single = single_solves(args.sizes)
    print(f"one solve (α = {ALPHA}); time ratio = solver / sklearn from scratch, same run")
    for r in single:
        print(f"  p={r['p']:>4} {r['solver']:<18} {r['seconds']:9.4f} s  ratio {r['time_ratio']:6.2f}"
              f"  objective gap {r['relative_objective_gap']:+.1e}  KKT {r['kkt_violation']:.1e}")
    sequences = warm_sequences([p for p in args.sizes if p <= args.max_sequence_p])
    print("50 solves along a drifting S, warm-started where the solver can")
    for r in sequences:
        print(f"  p={r['p']:>4} {r['solver']:<18} {r['seconds']:9.3f} s  ratio {r['time_ratio']:6.2f}"
              f"  max objective gap {r['max_relative_objective_gap']:+.1e}  max KKT {r['max_kkt_violation']:.1e}")
    shares = [] if args.skip_fit else [lambda_step_share(solver) for solver in ("newton", "sklearn")]
    for share in shares:
        print(f"vae fit at p = {share['p']} with {share['solver']}: {share['fit_seconds']:.1f} s, of which Λ-steps "
              f"{share['lambda_step_seconds']:.1f} s ({100 * share['share']:.0f}%, {share['n_solves']} solves)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"single": single, "sequences": sequences, "vae_share": shares}, indent=1))
    print(f"rows: {out}")


if __name__ == "__main__":
    main()
