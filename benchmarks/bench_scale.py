"""Benchmark of issue 22: a million rows through ``invae fit``, memory and time.

A GGM of p variables (chain graph, σ = 1, A = I) and n rows, saved as one ``.npy`` (n p · 8
bytes) and fitted by ``invae fit --data X.npy --noise-std 1 --penalty 0.02 --method METHOD``,
each method in a fresh process, one after another. Per method: wall time of the whole command
(reading, fitting, answering, writing), the fit's own seconds and iterations, the process's
peak resident memory (``ru_maxrss``) and the peaks of its two parts sampled every 0.1 s from
``/proc/self/status`` — ``RssAnon`` (the process's own memory) and ``RssFile`` (pages of the
memory-mapped data and answer files, which the kernel may drop or write back at any time) —,
and Λ̂'s relative Frobenius error against the truth and against EM's Λ̂.

    .venv/bin/python benchmarks/bench_scale.py [--n 1000000] [--p 100] [--methods em,vae,full-covariance]
        [--max-iter K] [--out benchmarks/results/scale.json]

``--max-iter`` caps the variational fits (the CLI's default otherwise). Rows go to ``--out``
(JSON) after each method, so a run cut short keeps what it measured.
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

from invae.evaluation.metrics import relative_frobenius_error
from invae.evaluation.simulate import simulate_problem

ALPHA = 0.02

# Run in the child: the CLI in-process, a thread sampling its memory, the peaks printed as JSON.
CHILD = """
import json, resource, sys, threading, time
from invae.app.cli import main
peaks = {"RssAnon": 0, "RssFile": 0}
def sample():
    while True:
        for line in open("/proc/self/status"):
            key = line.split(":")[0]
            if key in peaks:
                peaks[key] = max(peaks[key], int(line.split()[1]))
        time.sleep(0.1)
threading.Thread(target=sample, daemon=True).start()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "peak_anon_kb": peaks["RssAnon"], "peak_file_kb": peaks["RssFile"]}))
"""


def run_method(method: str, data: Path, out: Path, max_iter: int | None) -> dict:
    """``invae fit`` of one method in a fresh process: its measurements and summary."""
    command = ["fit", "--data", str(data), "--noise-std", "1", "--penalty", str(ALPHA), "--method", method,
               "--out", str(out), "--quiet"]
    if max_iter is not None and method != "em":
        command += ["--max-iter", str(max_iter)]
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *command], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed: {done.stderr.strip().splitlines()[-1:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    return {"method": method, "wall_seconds": wall, "fit_seconds": summary["fit_seconds"],
            "n_iter": summary["n_iter"], "converged": summary["converged"], **measured,
            "precision": np.load(out / "precision.npy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--p", type=int, default=100)
    parser.add_argument("--methods", default="em,vae,full-covariance")
    parser.add_argument("--max-iter", type=int, default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "scale.json"))
    args = parser.parse_args()
    rows, em = [], None
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "X.npy"
        truth = _simulate(args.n, args.p, data)
        for method in args.methods.split(","):
            row = run_method(method, data, Path(folder) / method, args.max_iter)
            precision = row.pop("precision")
            em = precision if method == "em" else em
            row["precision_error"] = relative_frobenius_error(precision, truth)
            row["error_vs_em"] = None if em is None else relative_frobenius_error(precision, em)
            rows.append(row)
            _print(row)
            _write(args, rows)


def _simulate(n: int, p: int, data: Path) -> np.ndarray:
    """Save the problem's rows (n, p) to ``data``; return its true Λ (this process keeps nothing else:
    the children read the file)."""
    problem = simulate_problem(p=p, n=n, graph="chain", noise_std=1.0, seed=0)
    np.save(data, problem.X)
    return problem.precision


def _print(row: dict) -> None:
    versus = "" if row["error_vs_em"] is None else f"  vs EM {row['error_vs_em']:.4f}"
    print(f"{row['method']:<16} wall {row['wall_seconds']:7.1f} s  fit {row['fit_seconds']:7.1f} s  "
          f"{row['n_iter']:4d} iters{'' if row['converged'] else ' (not converged)'}  peak RSS "
          f"{row['max_rss_kb'] / 2**20:.2f} GiB (anon {row['peak_anon_kb'] / 2**20:.2f}, file "
          f"{row['peak_file_kb'] / 2**20:.2f})  Λ err {row['precision_error']:.4f}{versus}", flush=True)


def _write(args: argparse.Namespace, rows: list[dict]) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n": args.n, "p": args.p, "alpha": ALPHA, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
