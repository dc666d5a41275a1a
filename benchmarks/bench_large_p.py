"""Benchmark of issue 22: a thousand variables, exact EM and what the full covariance would take.

A GGM of p variables (chain graph, σ = 1, A = I, α = 0.02) and n rows, saved as a ``.npy`` and
read memory-mapped, as ``invae fit`` reads it, in a fresh process. Exact EM (``invae.references.em.EM``, float64,
one thread; its rows are the data's 2p sigma rows, docs/methods.md §3.17) is fitted and timed:
the moments' pass over the rows, the outer iterations (median seconds each), the M-step's
share (the graphical lasso, ``solve_precision``, timed around every call), Λ̂'s relative
Frobenius error against the truth, and the process's peak resident memory (``ru_maxrss``).

For the full-covariance family it prints what its encoder holds at this p: the trunk's last
layers emit p + p(p+1)/2 numbers per row; their weights, with Adam's two moments and the
gradient, in float32.

    .venv/bin/python benchmarks/bench_large_p.py [--n 100000] [--p 1000] [--max-iter 200]
        [--out benchmarks/results/large_p.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import invae.model.ggm as ggm_module
from invae import GaussianGraphicalModel, linear_gaussian
from invae.evaluation.metrics import relative_frobenius_error
from invae.evaluation.simulate import simulate_problem
from invae.references.em import EM

ALPHA = 0.02
HIDDEN = 128  # the encoders' default last hidden width


class Timed:
    """A function that adds its calls' seconds to ``seconds``."""

    def __init__(self, function):
        self.function, self.seconds, self.calls = function, 0.0, 0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def full_covariance_size(p: int, m: int) -> dict:
    """The full-covariance encoder's output layers at this p: outputs per row, weights, GiB."""
    outputs = p + p * (p + 1) // 2
    weights = outputs * (HIDDEN + m + 2)  # the MLP's last layer and the linear map, with biases
    return {"outputs_per_row": outputs, "output_weights": weights,
            "float32_gib_weights_adam_gradient": 4 * 4 * weights / 2**30}


def fit(data: str, p: int, max_iter: int) -> dict:
    """EM on the memory-mapped rows in ``data``, timed (module docstring); run in a fresh process."""
    solver = Timed(ggm_module.solve_precision)
    ggm_module.solve_precision = solver  # the M-step's graphical lasso, timed where the GGM calls it
    estimator = EM(GaussianGraphicalModel(dim=p, alpha=ALPHA), linear_gaussian(np.eye(p), 1.0), max_iter=max_iter)
    start = time.perf_counter()
    estimator.fit(np.load(data, mmap_mode="r"))
    total, history = time.perf_counter() - start, estimator.history_["time"]
    return {"fit_s": total, "moments_and_first_objective_s": total - history[-1], "iterations": estimator.n_iter_,
            "converged": estimator.converged_, "median_iteration_s": float(np.median(np.diff(history))),
            "m_step_s": solver.seconds, "m_step_calls": solver.calls, "m_step_share": solver.seconds / history[-1],
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "precision": estimator.precision_.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--p", type=int, default=1000)
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "large_p.json")
    parser.add_argument("--fit", help=argparse.SUPPRESS)  # the child: fit this .npy, print JSON
    args = parser.parse_args()
    if args.fit:
        print(json.dumps(fit(args.fit, args.p, args.max_iter)))
        return
    problem = simulate_problem(p=args.p, n=args.n, graph="chain", noise_std=1.0, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        np.save(f"{folder}/X.npy", problem.X)
        child = subprocess.run([sys.executable, __file__, "--fit", f"{folder}/X.npy", "--p", str(args.p),
                                "--max-iter", str(args.max_iter)], capture_output=True, text=True, check=True)
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    error = relative_frobenius_error(np.array(measured.pop("precision")), problem.precision)
    row = {"date": time.strftime("%Y-%m-%d"), "n": args.n, "p": args.p, "alpha": ALPHA, **measured,
           "precision_error": error, "full_covariance": full_covariance_size(args.p, args.p)}
    print(json.dumps(row, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
