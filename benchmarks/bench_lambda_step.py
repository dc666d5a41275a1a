"""Benchmark of issue #5 (groundwork): how expensive is the Λ-step, and what does a warm start buy?

1. One graphical-lasso solve at p ∈ {50, 100, 200, 500} (chain-graph truth, S from n = 10 p
   draws, α = 0.05), per solver: time as a ratio to scikit-learn's from scratch in the same
   run, the objective difference and the optimality (KKT) violation.
2. A sequence of 50 solves along a slowly drifting S (S_t = (1 − t/500) S_a + (t/500) S_b),
   each solver warm-started from its previous answer where it can be.
3. The share of a whole `vae` fit spent in Λ-steps (p = 100, n = 10 000, identity A, σ = 1).

    .venv/bin/python benchmarks/bench_lambda_step.py [--sizes 50 100 200] [--skip-fit]

Solvers: "sklearn" is scikit-learn's coordinate descent from scratch (tol = enet_tol = 1e-8,
200 sweeps at most), the reference; "sklearn cov_init" is scikit-learn's private
``_graphical_lasso(cov_init=...)``, the warm start its public API no longer offers (it
shrinks the start's off-diagonal by 0.95); "invae" is :func:`invae.graphical_lasso.solve_precision`;
"newton (candidate)" is an active-set Newton method, warm-started, not yet in the library. Prints tables (medians of
3 repeats) and writes JSON to benchmarks/results/lambda_step.json.
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
from scipy.linalg import cho_factor, cho_solve
from sklearn.covariance import graphical_lasso
from sklearn.covariance._graph_lasso import _graphical_lasso
from sklearn.exceptions import ConvergenceWarning

import invae.priors
from invae import GaussianGraphicalModel, linear_gaussian, simulate_problem
from invae.graphical_lasso import glasso_objective, optimality_violation, solve_precision
from invae.pipeline import make_estimator
from invae.simulate import sparse_precision

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


def _active_set_newton(s, alpha, theta0=None, tol=1e-6, max_outer=100):
    """Candidate fast solver (issue #5), measured here before it earns a place in the library.

    Orthant-wise Newton on the free set (diagonal, nonzero entries, and zero entries whose
    gradient exceeds α), signs fixed per step, variables x_ij = Λ_ij (i ≤ j): gradient
    c (S − W)_ij + c α sign, Hessian ½ c_a c_b (W_ik W_jl + W_il W_jk), c = 1 on the diagonal
    and 2 off it; backtracking keeps Λ positive definite and projects sign changes to zero.
    Stops when the KKT residual is ≤ tol. Warm-starts from theta0.
    """
    p = len(s)
    theta = np.diag(1 / np.diag(s)) if theta0 is None else theta0.copy()
    iu = np.triu_indices(p)
    f = -glasso_objective(theta, s, alpha)
    for outer in range(max_outer):
        w = np.linalg.inv(theta)
        g = s - w
        off = ~np.eye(p, dtype=bool)
        sign = np.sign(theta)
        new = off & (theta == 0) & (np.abs(g) > alpha)
        sign[new] = -np.sign(g[new])
        # KKT residual
        viol = np.abs(np.diag(g)).max()
        act = off & (theta != 0)
        if act.any():
            viol = max(viol, np.abs(g[act] + alpha * sign[act]).max())
        ina = off & (theta == 0)
        if ina.any():
            viol = max(viol, (np.abs(g[ina]) - alpha).max())
        if viol <= tol:
            return theta
        free = (theta != 0) | new
        free_u = free[iu]
        I, J = iu[0][free_u], iu[1][free_u]
        c = np.where(I == J, 1.0, 2.0)
        grad = c * (g[I, J] + alpha * np.where(I == J, 0.0, sign[I, J]))
        H = 0.5 * np.outer(c, c) * (w[np.ix_(I, I)] * w[np.ix_(J, J)] + w[np.ix_(I, J)] * w[np.ix_(J, I)])
        d = -cho_solve(cho_factor(H), grad)
        x = theta[I, J]
        sgn = np.where(I == J, 1.0, sign[I, J])
        t = 1.0
        while t > 1e-10:
            xn = x + t * d
            offd = I != J
            xn[offd & (np.sign(xn) != sgn)] = 0.0  # orthant projection
            cand = theta.copy()
            cand[I, J] = xn
            cand[J, I] = xn
            fn = -glasso_objective(cand, s, alpha)
            if fn <= f + 1e-4 * t * grad @ d or (fn < f and t < 1e-3):
                break
            t *= 0.5
        if not fn < np.inf or fn > f:
            return theta  # no progress possible
        theta, f = cand, fn
    return theta


SOLVERS = {  # name: (S, α, previous Λ or None) -> Λ; "sklearn" is the reference
    "sklearn": _sklearn,
    "sklearn cov_init": _sklearn_warm,
    "invae": lambda s, alpha, previous: solve_precision(s, alpha),
    "newton (candidate)": lambda s, alpha, previous: _active_set_newton(s, alpha, previous),
}


def _second_moment(p: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    covariance = np.linalg.inv(sparse_precision("chain", p, rng))
    z = rng.multivariate_normal(np.zeros(p), covariance, size=10 * p)
    return z.T @ z / len(z)


def _timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = function(*args)
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


def lambda_step_share(p: int = 100) -> dict:
    problem = simulate_problem(p=p, n=10_000, graph="chain", forward="identity", noise_std=1.0, seed=0)
    spent = []

    def timed_solve(s, alpha):
        elapsed, out = _timed(solve_precision, s, alpha)
        spent.append(elapsed)
        return out

    invae.priors.solve_precision = timed_solve  # count every Λ-step the fit makes
    try:
        estimator = make_estimator("vae", GaussianGraphicalModel(dim=p, alpha=0.02), linear_gaussian(problem.A, 1.0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            elapsed, _ = _timed(estimator.fit, problem.X)
    finally:
        invae.priors.solve_precision = solve_precision
    return {"p": p, "fit_seconds": elapsed, "lambda_step_seconds": sum(spent), "n_solves": len(spent),
            "share": sum(spent) / elapsed, "n_iter": estimator.n_iter_}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500])
    parser.add_argument("--skip-fit", action="store_true", help="leave out the Λ-step share of a vae fit")
    parser.add_argument("--out", default="benchmarks/results/lambda_step.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    single = single_solves(args.sizes)
    print(f"one solve (α = {ALPHA}); time ratio = solver / sklearn from scratch, same run")
    for r in single:
        print(f"  p={r['p']:>4} {r['solver']:<18} {r['seconds']:9.4f} s  ratio {r['time_ratio']:6.2f}"
              f"  objective gap {r['relative_objective_gap']:+.1e}  KKT {r['kkt_violation']:.1e}")
    sequences = warm_sequences(args.sizes)
    print("50 solves along a drifting S, warm-started where the solver can")
    for r in sequences:
        print(f"  p={r['p']:>4} {r['solver']:<18} {r['seconds']:9.3f} s  ratio {r['time_ratio']:6.2f}"
              f"  max objective gap {r['max_relative_objective_gap']:+.1e}  max KKT {r['max_kkt_violation']:.1e}")
    share = None if args.skip_fit else lambda_step_share()
    if share:
        print(f"vae fit at p = {share['p']}: {share['fit_seconds']:.1f} s, of which Λ-steps "
              f"{share['lambda_step_seconds']:.1f} s ({100 * share['share']:.0f}%, {share['n_solves']} solves)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"single": single, "sequences": sequences, "vae_share": share}, indent=1))
    print(f"rows: {out}")


if __name__ == "__main__":
    main()
