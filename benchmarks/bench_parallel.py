"""Benchmark of issue 22: one fit over 2 processes against 1 (``invae fit --workers 2``).

A GGM of p variables (chain graph, σ = 1, A = I) and n rows, saved as one ``.npy`` and fitted
by ``invae fit --data X.npy --noise-std 1 --penalty 0.02 --method METHOD --max-iter K`` in one
process and with ``--workers 2``, one after the other, for each method (a fixed number of outer
iterations: the same work on both sides). Per run: the command's wall time (start-up,
reading, fitting, answering, writing), the fit's own seconds (``summary.json``'s
``fit_seconds``: for 2 processes, rank 0's), the speed-up of the fit, and the largest
|Λ̂₂ − Λ̂₁| entry (the command line fits in float32).

    .venv/bin/python benchmarks/bench_parallel.py [--n 100000] [--p 50] [--methods vae,iaf]
        [--max-iter 30] [--out benchmarks/results/parallel.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from invae.evaluation.simulate import simulate_problem

ALPHA = 0.02


def run(method: str, data: Path, out: Path, max_iter: int, workers: int) -> dict:
    """``invae fit`` of one method with ``workers`` processes: wall and fit seconds, Λ̂."""
    command = [sys.executable, "-m", "invae", "fit", "--data", str(data), "--noise-std", "1", "--penalty",
               str(ALPHA), "--method", method, "--max-iter", str(max_iter), "--out", str(out), "--quiet",
               "--workers", str(workers)]
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if finished.returncode != 0:
        raise RuntimeError(f"{method} with {workers} worker(s) failed: {finished.stderr.strip()}")
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": wall, "fit_s": summary["fit_seconds"], "iterations": summary["n_iter"],
            "precision": np.load(out / "precision.npy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--p", type=int, default=50)
    parser.add_argument("--methods", default="vae,iaf")
    parser.add_argument("--max-iter", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "parallel.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        problem = simulate_problem(p=args.p, n=args.n, graph="chain", noise_std=1.0, seed=0)
        np.save(folder / "X.npy", problem.X)
        print(f"n = {args.n}, p = {args.p}, {args.max_iter} outer iterations; 1 process, then 2 (--workers 2)")
        print(f"{'method':<8} {'wall 1':>8} {'wall 2':>8} {'fit 1':>8} {'fit 2':>8} {'speed-up':>9} {'max |ΔΛ|':>10}")
        for method in args.methods.split(","):
            one = run(method, folder / "X.npy", folder / f"{method}-1", args.max_iter, 1)
            two = run(method, folder / "X.npy", folder / f"{method}-2", args.max_iter, 2)
            difference = float(np.abs(two.pop("precision") - one.pop("precision")).max())
            row = {"method": method, "n": args.n, "p": args.p, "max_iter": args.max_iter, "one": one, "two": two,
                   "fit_speedup": one["fit_s"] / two["fit_s"], "max_abs_precision_difference": difference}
            rows.append(row)
            print(f"{method:<8} {one['wall_s']:8.1f} {two['wall_s']:8.1f} {one['fit_s']:8.1f} {two['fit_s']:8.1f} "
                  f"{row['fit_speedup']:9.2f} {difference:10.2e}", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
