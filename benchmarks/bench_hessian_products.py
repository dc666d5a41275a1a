"""Benchmark of issue 22: the Newton graphical lasso's Hessian products, dense against sparse.

Each conjugate-gradient step of the Newton Λ-step (``invae.model.graphical_lasso``) multiplies
``(W D W)_ij`` on the free set F, for a symmetric D supported on F. Dense: D as a (p, p) array,
two matrix products, O(p³). Sparse: D as a CSR matrix, ``D W`` in O(|F| p), then one dot
product of length p per entry of F, O(|F| p). Timed side by side (median of ``--repeats``) for
each p and each F: the diagonal plus a chain (a sparse answer), plus a band of half-width
``p/20`` and ``p/5`` (denser ones); W is a random SPD matrix. The largest |dense − sparse|
entry is printed too (round-off).

    .venv/bin/python benchmarks/bench_hessian_products.py [--sizes 200 500 1000] [--repeats 5]
        [--out benchmarks/results/hessian_products.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from invae.model.graphical_lasso import hessian_product


def free_set(p: int, half_width: int) -> tuple[np.ndarray, np.ndarray]:
    """The upper triangle's entries (i, j), j − i ≤ half_width."""
    rows, cols = np.triu_indices(p)
    keep = cols - rows <= half_width
    return rows[keep], cols[keep]


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 500, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hessian_products.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows_out = []
    print(f"{'p':>5} {'|F|':>8} {'|F|/p²':>7} {'dense ms':>9} {'sparse ms':>10} {'dense/sparse':>12} {'max diff':>9}")
    for p in args.sizes:
        q, _ = np.linalg.qr(rng.standard_normal((p, p)))
        w = (q * np.linspace(1.0, 10.0, p)) @ q.T
        for half_width in (1, max(2, p // 20), max(3, p // 5)):
            rows, cols = free_set(p, half_width)
            values = rng.standard_normal(len(rows))
            dense = median_seconds(lambda: hessian_product(w, values, rows, cols, sparse=False), args.repeats)
            sparse = median_seconds(lambda: hessian_product(w, values, rows, cols, sparse=True), args.repeats)
            difference = float(np.abs(hessian_product(w, values, rows, cols, sparse=False)
                                      - hessian_product(w, values, rows, cols, sparse=True)).max())
            row = {"p": p, "free": len(rows), "free_fraction": len(rows) / p**2, "dense_s": dense, "sparse_s": sparse,
                   "dense_over_sparse": dense / sparse, "max_abs_difference": difference}
            rows_out.append(row)
            print(f"{p:5d} {len(rows):8d} {row['free_fraction']:7.4f} {1e3 * dense:9.2f} {1e3 * sparse:10.2f} "
                  f"{row['dense_over_sparse']:12.2f} {difference:9.1e}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows_out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
