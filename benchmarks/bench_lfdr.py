"""Benchmark of issue 19: local false discovery rates, calibrated against the truth.

Simulation: n = 5 000 z-values, σ = 1, π₀ = 0.9 nulls at 0 and non-null effects from
N(0, 2.5²) (``two-groups``) or from the asymmetric "skew" mixture of Stephens (2017)
(``two-groups-skew``); per seed and method it measures the mean |lfdr − true lfdr| (the true
lfdr is the Bayes rule under the true prior), π̂₀, the number of rows with lfdr ≤ 0.2 and
their realised false discovery proportion (FDP: the share whose z is 0). Targets: mean
|lfdr error| ≤ 0.03, FDP ≤ 0.2, π̂₀ within 0.02 of 0.9 (means over seeds, with their
standard errors).

Methods: ``invae eb``'s npmle, log-spline and vae (the VAE-like prior by EM), with the theoretical null N(0, 1) and with
the empirical null (``--null empirical``); and the reference two-groups local fdr of Efron's
``locfdr`` (written here: the density f̂ of the z-values by Poisson regression on a histogram
of 120 breaks, the null's π₀ by matching the centre, ``lfdr = π̂₀ f₀(z) / f̂(z)`` capped at 1),
with the theoretical and the empirical null.

Prostate (``--prostate FILE``, a table with a column ``z``: ``docs/data/prostz.csv``, Efron's
6 033 prostate-cancer genes, Singh et al. 2002): π̂₀, the numbers of genes with lfdr ≤ 0.2 and ≤ 0.1, δ̂₀ and σ̂₀ for
the same methods side by side, and the two-groups figure of each invae fit
(``--figures DIR``).

    .venv/bin/python benchmarks/bench_lfdr.py [--seeds 10] [--prostate docs/data/prostz.csv] [--figures docs]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

from invae.app.plotting import two_groups_plot
from invae.normal_means import fit_normal_means, grid_posterior, simulate_normal_means
from invae.normal_means.null import central_bins, empirical_null, histogram_density
from invae.normal_means.table import column, load_table

PRIORS = ("two-groups", "two-groups-skew")
INVAE = tuple((method, null) for null in (0.0, "empirical") for method in ("npmle", "log-spline", "vae"))


def reference_locfdr(z: np.ndarray, null: str) -> tuple[np.ndarray, float, float, float]:
    """Efron's two-groups lfdr of z-values ``z`` (N,): (lfdr (N,), π̂₀, δ₀, σ₀)."""
    density = histogram_density(z)
    if null == "empirical":
        fitted = empirical_null(z)
        proportion, delta, sd = fitted.proportion, fitted.delta, fitted.sd
    else:
        inside = central_bins(z, density.midpoints)
        null_counts = len(z) * density.width * norm.pdf(density.midpoints)
        proportion, delta, sd = density.fitted[inside].sum() / null_counts[inside].sum(), 0.0, 1.0
    lfdr = np.minimum(1.0, proportion * norm.pdf(z, delta, sd) / density.density(z))
    return lfdr, float(proportion), delta, sd


def methods_on(z: np.ndarray):
    """Yield (name, lfdr, π̂₀, δ₀, σ₀, seconds, fit or None) for every method on z-values z."""
    for method, null in INVAE:
        fit = fit_normal_means(z, 1.0, method, null=null)
        yield (f"{method} ({'empirical' if null == 'empirical' else 'theoretical'})", fit.lfdr, fit.null.proportion,
               fit.null.value, fit.null.scale, fit.seconds, fit)
    for null in ("theoretical", "empirical"):
        start = time.perf_counter()
        lfdr, proportion, delta, sd = reference_locfdr(z, null)
        yield f"locfdr ({null})", lfdr, proportion, delta, sd, time.perf_counter() - start, None


def calibration_rows(seeds: int, n: int) -> list[dict]:
    rows = []
    for prior in PRIORS:
        for seed in range(seeds):
            problem = simulate_normal_means(prior, n, seed=seed)
            truth = grid_posterior(problem.x, problem.sigma, problem.prior, null=0.0).lfdr
            for name, lfdr, proportion, delta, sd, seconds, _ in methods_on(problem.x):
                found = lfdr <= 0.2
                rows.append({"prior": prior, "seed": seed, "n": n, "method": name, "pi0": proportion,
                             "lfdr_error": float(np.abs(lfdr - truth).mean()), "discoveries": int(found.sum()),
                             "fdp": float((problem.z[found] == 0).mean()) if found.any() else 0.0,
                             "delta0": delta, "sigma0": sd, "seconds": seconds})
                print(f"{prior:16s} seed {seed} {name:24s} π̂₀ {proportion:.3f}  |lfdr err| "
                      f"{rows[-1]['lfdr_error']:.4f}  FDP {rows[-1]['fdp']:.3f} of {found.sum()}", flush=True)
    return rows


def summarize(rows: list[dict]) -> dict:
    """Mean and standard error over seeds of each measure, by prior and method."""
    table = {}
    for row in rows:
        entry = table.setdefault(row["prior"], {}).setdefault(row["method"], {})
        for key in ("pi0", "lfdr_error", "fdp", "discoveries", "sigma0", "seconds"):
            entry.setdefault(key, []).append(row[key])
    return {prior: {method: {key: {"mean": float(np.mean(v)), "se": float(np.std(v, ddof=1) / np.sqrt(len(v)))}
                             for key, v in measures.items()} for method, measures in methods.items()}
            for prior, methods in table.items()}


def print_table(table: dict) -> None:
    print("\nmeans over seeds ± standard error; targets: |lfdr err| ≤ 0.03, FDP ≤ 0.2, |π̂₀ − 0.9| ≤ 0.02")
    print(f"{'prior':16s} {'method':24s} {'|lfdr err|':>16s} {'FDP (lfdr≤0.2)':>16s} {'discoveries':>12s} "
          f"{'π̂₀':>16s} {'σ̂₀':>7s} {'s':>6s}")
    for prior, methods in table.items():
        for method, m in methods.items():
            print(f"{prior:16s} {method:24s} {m['lfdr_error']['mean']:>8.4f} ± {m['lfdr_error']['se']:.4f} "
                  f"{m['fdp']['mean']:>8.3f} ± {m['fdp']['se']:.3f} {m['discoveries']['mean']:>12.0f} "
                  f"{m['pi0']['mean']:>8.3f} ± {m['pi0']['se']:.3f} {m['sigma0']['mean']:>7.3f} "
                  f"{m['seconds']['mean']:>6.2f}")


def prostate_rows(path: Path, figures: Path | None) -> list[dict]:
    z = column(load_table(str(path)), "z", "--prostate")
    rows = []
    print(f"\nprostate: {len(z)} z-values from {path}")
    print(f"{'method':24s} {'π̂₀':>7s} {'lfdr≤0.2':>9s} {'lfdr≤0.1':>9s} {'δ̂₀':>8s} {'σ̂₀':>7s}")
    for name, lfdr, proportion, delta, sd, seconds, fit in methods_on(z):
        rows.append({"method": name, "pi0": proportion, "lfdr_0.2": int((lfdr <= 0.2).sum()),
                     "lfdr_0.1": int((lfdr <= 0.1).sum()), "delta0": delta, "sigma0": sd, "seconds": seconds})
        print(f"{name:24s} {proportion:>7.3f} {rows[-1]['lfdr_0.2']:>9d} {rows[-1]['lfdr_0.1']:>9d} "
              f"{delta:>8.3f} {sd:>7.3f}")
        if figures is not None and fit is not None:
            figure = two_groups_plot(z, np.full(len(z), fit.null.scale), fit.prior, fit.null.value, fit.lfdr, name)
            figure.savefig(figures / f"prostate-{name.replace(' (', '-').rstrip(')')}.png", dpi=100)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--prostate", type=Path, help="a table with a column z (docs/data/prostz.csv)")
    parser.add_argument("--figures", type=Path, help="a folder for the prostate fits' two-groups figures")
    parser.add_argument("--out", default="benchmarks/results/lfdr.json")
    args = parser.parse_args()
    table = summarize(calibration_rows(args.seeds, args.n)) if args.seeds else {}
    print_table(table)
    prostate = prostate_rows(args.prostate, args.figures) if args.prostate else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count(),
                               "table": table, "prostate": prostate}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
