"""Benchmark of issue #22 (GPUs): the same fits on each torch device, side by side in one run.

A GGM (chain graph, σ = 1, A = I, α = 0.02) of p variables and n rows, fitted by exact EM
and by the variational families on every ``--devices`` entry in turn, after one warm-up fit
per device (CUDA's context and kernels load once, billed to nobody). Columns: wall time,
outer iterations, Λ error against the truth and against EM's Λ̂ on the same device.

    python benchmarks/bench_device.py --devices cuda cpu [--p 50] [--n 100000] [--threads 16]

Prints one table and writes every row to ``--out`` (JSON) after each fit, so a run cut
short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import torch

from invae import EM, GaussianGraphicalModel, VariationalEB, linear_gaussian, simulate_problem
from invae.evaluation.metrics import relative_frobenius_error

ALPHA = 0.02
FAMILIES = ("diagonal", "iaf", "full-covariance")


def fit(method: str, x, likelihood, p: int, device: str, threads: int):
    """One fit of ``method`` ("em" or a family) on ``device``: (estimator, seconds)."""
    prior = GaussianGraphicalModel(dim=p, alpha=ALPHA)
    estimator = (EM(prior, likelihood, device=device, n_threads=threads) if method == "em" else
                 VariationalEB(prior, likelihood, family=method, device=device, n_threads=threads))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return estimator, time.perf_counter() - start


def run_device(device: str, problem, likelihood, args):
    """Yield one row per method fitted on ``device``, EM first (the others' reference)."""
    fit("iaf", problem.X[:500], likelihood, args.p, device, args.threads)  # warm-up
    em = None
    for method in ("em", *args.families):
        estimator, seconds = fit(method, problem.X, likelihood, args.p, device, args.threads)
        em = estimator if method == "em" else em
        row = {"device": device, "method": method, "seconds": seconds, "n_iter": estimator.n_iter_,
               "converged": estimator.converged_,
               "precision_error": relative_frobenius_error(estimator.precision_, problem.precision),
               "error_vs_em": relative_frobenius_error(estimator.precision_, em.precision_)}
        print(f"{device:>8}  {method:<16} {seconds:8.2f} s  {row['n_iter']:5d} iters  "
              f"Λ err {row['precision_error']:.4f}  vs EM {row['error_vs_em']:.4f}", flush=True)
        yield row


def machine(threads: int) -> str:
    """The processor, torch's CPU threads and the GPU, in words."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    return f"{platform.machine()}, {torch.get_num_threads()} CPU threads of torch ({threads} in the fits), {gpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", nargs="+", default=["cpu"])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--p", type=int, default=50)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of every fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/device.json")
    args = parser.parse_args()
    problem = simulate_problem(p=args.p, n=args.n, graph="chain", forward="identity", noise_std=1.0, seed=args.seed)
    likelihood = linear_gaussian(problem.A, 1.0)
    results = {"settings": vars(args), "machine": machine(args.threads), "rows": []}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for device in args.devices:
        for row in run_device(device, problem, likelihood, args):
            results["rows"].append(row)
            Path(args.out).write_text(json.dumps(results, indent=1))
    print(results["machine"])


if __name__ == "__main__":
    main()
