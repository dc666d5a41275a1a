"""Benchmark of issue 22: a thousand variables, exact EM and what the full covariance would take.

A GGM of p variables (chain graph, σ = 1, A = I, α = 0.02) and n rows, saved as a ``.npy`` and
read memory-mapped, as ``invae fit`` reads it, in a fresh process. Exact EM (``invae.references.em.EM``, float64,
one thread; its rows are the data's 2p sigma rows, docs/methods.md §3.17) is fitted and timed:
what comes before the iterations (the moments' pass over the rows, the first objective), the
outer iterations (median seconds each), the Λ-step's share (the M-step's graphical lasso,
``solve_precision``, timed around every call), Λ̂'s relative
Frobenius error against the truth, and the process's peak resident memory (``ru_maxrss``).

The low-rank family (``--methods low-rank``; float32, the default preset, rank 8) is fitted
for ``--low-rank-iter`` outer iterations (not to convergence: the time per iteration is what is
measured): the median seconds per outer iteration, the share of the Λ-step (its statistics and
M-step), the peak resident memory, and Λ̂'s error at that point.

For the full-covariance family it prints what its encoder holds at this p: the trunk's last
layers emit p + p(p+1)/2 numbers per row; their weights, with Adam's two moments and the
gradient, in float32.

    .venv/bin/python benchmarks/bench_large_p.py [--n 100000] [--p 1000] [--methods em,low-rank]
        [--max-iter 200] [--low-rank-iter 5] [--lambda-rows R] [--out benchmarks/results/large_p.json]
"""

from __future__ import annotations

import argparse
import json
import warnings
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import invae.model.ggm as ggm_module
from invae import GaussianGraphicalModel, VariationalEB, linear_gaussian
from invae.evaluation.metrics import relative_frobenius_error
from invae.evaluation.simulate import simulate_problem
from invae.inference.lambda_steps import ExpectedStep
from invae.references.em import EM

ALPHA = 0.02
HIDDEN = 128  # the encoders' default last hidden width


def timed(owner, name: str) -> dict:
    """Replace ``owner.name`` (a function or method) by one that adds its calls' seconds to the
    returned counter."""
    function, counter = getattr(owner, name), {"seconds": 0.0, "calls": 0}

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            counter["seconds"] += time.perf_counter() - start
            counter["calls"] += 1
    setattr(owner, name, wrapper)
    return counter


def full_covariance_size(p: int, m: int) -> dict:
    """The full-covariance encoder's output layers at this p: outputs per row, weights, GiB."""
    outputs = p + p * (p + 1) // 2
    weights = outputs * (HIDDEN + m + 2)  # the MLP's last layer and the linear map, with biases
    return {"outputs_per_row": outputs, "output_weights": weights,
            "float32_gib_weights_adam_gradient": 4 * 4 * weights / 2**30}


def fit(method: str, data: str, p: int, max_iter: int, lambda_rows: int | None) -> dict:
    """``method`` on the memory-mapped rows in ``data``, timed (module docstring); run in a fresh process."""
    solver = timed(ggm_module, "solve_precision")  # the M-step's graphical lasso, where the GGM calls it
    statistics = timed(ExpectedStep, "statistics")  # the variational Λ-step's statistics
    prior, likelihood = GaussianGraphicalModel(dim=p, alpha=ALPHA), linear_gaussian(np.eye(p), 1.0)
    estimator = (EM(prior, likelihood, max_iter=max_iter) if method == "em" else
                 VariationalEB(prior, likelihood, family=method, max_iter=max_iter, lambda_rows=lambda_rows))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a variational fit stopped after a few iterations
        estimator.fit(np.load(data, mmap_mode="r"))
    total, history = time.perf_counter() - start, estimator.history_["time"]
    lambda_step = solver["seconds"] + statistics["seconds"]
    return {"method": method, "fit_s": total, "before_iterations_s": total - history[-1],
            "iterations": estimator.n_iter_, "converged": estimator.converged_,
            "median_iteration_s": float(np.median(np.diff([0.0, *history] if method != "em" else history))),
            "lambda_step_s": lambda_step, "m_step_s": solver["seconds"], "lambda_step_share": lambda_step / history[-1],
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "precision": estimator.precision_.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--p", type=int, default=1000)
    parser.add_argument("--methods", default="em,low-rank")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--low-rank-iter", type=int, default=5)
    parser.add_argument("--lambda-rows", type=int, help="the variational Λ-step's rows per step (default: its own)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "large_p.json")
    parser.add_argument("--fit", help=argparse.SUPPRESS)  # the child: fit this .npy with this method, print JSON
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit:
        print(json.dumps(fit(args.fit, args.data, args.p, args.max_iter, args.lambda_rows)))
        return
    problem = simulate_problem(p=args.p, n=args.n, graph="chain", noise_std=1.0, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        np.save(f"{folder}/X.npy", problem.X)
        for method in args.methods.split(","):
            iterations = args.max_iter if method == "em" else args.low_rank_iter
            command = [sys.executable, __file__, "--fit", method, "--data", f"{folder}/X.npy", "--p", str(args.p),
                       "--max-iter", str(iterations)]
            command += ["--lambda-rows", str(args.lambda_rows)] if args.lambda_rows else []
            measured = json.loads(subprocess.run(command, capture_output=True, text=True, check=True
                                                 ).stdout.strip().splitlines()[-1])
            error = relative_frobenius_error(np.array(measured.pop("precision")), problem.precision)
            rows.append({"n": args.n, "p": args.p, "alpha": ALPHA, "lambda_rows": args.lambda_rows, **measured,
                         "precision_error": error})
            print(json.dumps(rows[-1], indent=2), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows,
                                            "full_covariance": full_covariance_size(args.p, args.p)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
