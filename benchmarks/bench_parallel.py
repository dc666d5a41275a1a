"""Benchmark of issue 22: one fit over 2 processes against 1 (``invae.inference.parallel``).

A GGM of p variables (chain graph, σ = 1, A = I, α = 0.02) and n rows. Each method's
``VariationalEB`` (float32, one thread per process, the CLI's settings) is fitted for a fixed
number of outer iterations — the same work on both sides — in one process, then in 2
processes (torch.multiprocessing, gloo over localhost, each holding half of the rows), one
after the other, ``--repeats`` times. Per method: the fit's seconds (``fit`` only: rank 0's,
after the process group is up; medians over the repeats), the speed-up of the medians, and the
largest |Λ̂₂ − Λ̂₁| entry (float32 round-off, amplified by the Adam steps).

The posterior answers after the fit are left out: ``invae fit`` has rank 0 answer for all
rows, the same work as one process.

    .venv/bin/python benchmarks/bench_parallel.py [--n 100000] [--p 50] [--methods vae,iaf]
        [--max-iter 30] [--repeats 3] [--out benchmarks/results/parallel.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from invae import GaussianGraphicalModel, VariationalEB, linear_gaussian
from invae.evaluation.simulate import simulate_problem

ALPHA = 0.02


def fitted(method: str, x: np.ndarray, max_iter: int) -> tuple[float, np.ndarray]:
    """(seconds, Λ̂) of ``method``'s fit to the rows x (this process's shard under a process group)."""
    torch.set_num_threads(1)
    p = x.shape[1]
    estimator = VariationalEB(GaussianGraphicalModel(dim=p, alpha=ALPHA), linear_gaussian(np.eye(p), 1.0),
                              family={"vae": "diagonal"}.get(method, method), max_iter=max_iter)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fixed number of iterations: not converged
        estimator.fit(x)
    return time.perf_counter() - start, estimator.prior_.precision.double().numpy()


def rank_main(rank: int, world: int, method: str, data: str, max_iter: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store-{method}", rank=rank, world_size=world)
    x = np.load(data, mmap_mode="r")
    seconds, precision = fitted(method, np.asarray(x[np.array_split(np.arange(len(x)), world)[rank]]), max_iter)
    if rank == 0:
        np.save(f"{folder}/{method}-two.npy", precision)
        Path(f"{folder}/{method}-two.json").write_text(json.dumps({"fit_s": seconds}))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--p", type=int, default=50)
    parser.add_argument("--methods", default="vae,iaf")
    parser.add_argument("--max-iter", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "parallel.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        problem = simulate_problem(p=args.p, n=args.n, graph="chain", noise_std=1.0, seed=0)
        np.save(f"{folder}/X.npy", problem.X)
        print(f"n = {args.n}, p = {args.p}, {args.max_iter} outer iterations; 1 process, then 2", flush=True)
        print(f"{'method':<8} {'fit 1 s':>8} {'fit 2 s':>8} {'speed-up':>9} {'max |ΔΛ|':>10}", flush=True)
        for method in args.methods.split(","):
            ones, twos = [], []
            for _ in range(args.repeats):
                seconds, precision_one = fitted(method, problem.X, args.max_iter)
                ones.append(seconds)
                mp.spawn(rank_main, args=(2, method, f"{folder}/X.npy", args.max_iter, folder), nprocs=2)
                twos.append(json.loads(Path(f"{folder}/{method}-two.json").read_text())["fit_s"])
                Path(f"{folder}/store-{method}").unlink(missing_ok=True)
            one, two = float(np.median(ones)), float(np.median(twos))
            difference = float(np.abs(np.load(f"{folder}/{method}-two.npy") - precision_one).max())
            rows.append({"method": method, "n": args.n, "p": args.p, "max_iter": args.max_iter, "fit_one_s": ones,
                         "fit_two_s": twos, "speedup": one / two, "max_abs_precision_difference": difference})
            print(f"{method:<8} {one:8.1f} {two:8.1f} {one / two:9.2f} {difference:10.2e}", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
