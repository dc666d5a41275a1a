"""Benchmark of issues #3 and #4: the VAE-like estimators against exact EM, the Bayes oracle and baselines.

For p ∈ {20, 50}, σ ∈ {0.5, 1}, A ∈ {identity, compressive m = p/2} and several seeds
(n = 10 000, chain graph, penalty α = 0.02): Λ relative error and its ratio to EM's, edge F1,
signal MSE over the Bayes oracle's, the ELBO gap log p(x; Λ̂) − ELBO (exact evidence at the
method's own Λ̂), and wall time as a ratio to EM's measured in the same run, for the posterior
families diagonal (``vae``), ``iaf`` and ``full-covariance`` (exact for these models) and
the baselines. "em (diagonal E-step)" is the exact optimum of the diagonal family: the
floor for vae and mean-field.

The ``vae`` and ``full-covariance`` rows train q by Adam (``closed_form=False``): this
benchmark measures how close amortized training comes to each family's optimum. By default
invae sets those encoders to their closed-form optimum on linear-Gaussian models
(docs/methods.md §2.2) where rank A = p, which makes them the "em (diagonal E-step)" and
"em" rows of identity A; ``mean-field`` runs with its defaults. The diagonal families run
with compressive A too (``allow_unidentified=True``): the benchmark shows what invae refuses
by default (docs/methods.md §2.2).

    .venv/bin/python benchmarks/bench_vae.py [--seeds 2] [--quick] [--resume] [--out benchmarks/results/vae.json]

Prints one table of medians over seeds and writes every row as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
from sklearn.exceptions import ConvergenceWarning

from invae import EM, GaussianGraphicalModel, VariationalEB, linear_gaussian, simulate_problem
from invae.app.methods import make_estimator
from invae.evaluation.tables import evaluate, reference_rows

METHODS = {  # label: a function (prior, likelihood, seed) -> estimator
    "vae": lambda prior, lik, seed: VariationalEB(prior, lik, random_state=seed, closed_form=False,
                                                  allow_unidentified=True),
    "vae (paper preset, capped)": lambda prior, lik, seed: make_estimator("vae", prior, lik, preset="paper",
                                                                          max_iter=300, seed=seed,
                                                                          allow_unidentified=True),
    "iaf": lambda prior, lik, seed: make_estimator("iaf", prior, lik, seed=seed),
    "full-covariance": lambda prior, lik, seed: VariationalEB(prior, lik, family="full-covariance",
                                                              random_state=seed, closed_form=False),
    "mean-field": lambda prior, lik, seed: make_estimator("mean-field", prior, lik, seed=seed,
                                                          allow_unidentified=True),
    "em (diagonal E-step)": lambda prior, lik, seed: EM(prior, lik, mean_field=True),
    "em": lambda prior, lik, seed: make_estimator("em", prior, lik),
    "naive": lambda prior, lik, seed: make_estimator("naive", prior, lik),
}


def run_case(p: int, sigma: float, forward: str, seed: int, alpha: float, n: int) -> list[dict]:
    problem = simulate_problem(p=p, n=n, graph="chain", forward=forward, noise_std=sigma, seed=seed)
    likelihood = linear_gaussian(problem.A, sigma)
    _, oracle_mse = reference_rows(problem, alpha)
    rows = []
    for label, build in METHODS.items():
        estimator = build(GaussianGraphicalModel(dim=p, alpha=alpha), likelihood, seed)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                estimator.fit(problem.X)
        except (FloatingPointError, ValueError) as error:  # e.g. Λ diverging when m < p
            rows.append({"method": label, "p": p, "sigma": sigma, "forward": forward, "seed": seed,
                         "failed": f"{type(error).__name__}: {error}", "seconds": time.perf_counter() - start})
            continue
        row = evaluate(label, estimator, problem, oracle_mse, time.perf_counter() - start)
        row.update(p=p, sigma=sigma, forward=forward, seed=seed, n_iter=estimator.n_iter_,
                   converged=estimator.converged_ and not caught)
        rows.append(row)
    em = next(r for r in rows if r["method"] == "em")
    for row in rows:
        row["time_ratio_to_em"] = row["seconds"] / em["seconds"]
        if "failed" not in row:
            row["error_ratio_to_em"] = row["precision_error"] / em["precision_error"]
    return rows


COLUMNS = (  # (row key, header)
    ("precision_error", "Λ err"), ("error_ratio_to_em", "Λ err/EM"), ("edge_f1", "edge F1"),
    ("mse_ratio", "MSE/oracle"), ("elbo_gap", "ELBO gap"), ("seconds", "time s"), ("time_ratio_to_em", "time/EM"))


def summarize(rows: list[dict]) -> str:
    header = f"{'p':>3} {'σ':>4} {'A':<11} {'method':<27}" + "".join(f"{h:>11}" for _, h in COLUMNS) + "  converged"
    lines = [header, "-" * len(header)]
    order = {"identity": 0, "compressive": 1}
    cases = sorted({(r["p"], r["sigma"], r["forward"]) for r in rows}, key=lambda c: (c[0], order[c[2]], c[1]))
    for case in cases:
        for label in METHODS:
            group = [r for r in rows if (r["p"], r["sigma"], r["forward"]) == case and r["method"] == label]
            ok = [r for r in group if "failed" not in r]
            values = [statistics.median(r[k] for r in ok) if ok and k in ok[0] else float("nan") for k, _ in COLUMNS]
            conv = sum(r["converged"] for r in ok)
            lines.append(f"{case[0]:>3} {case[1]:>4} {case[2]:<11} {label:<27}"
                         + "".join(f"{v:>11.3f}" if v == v else f"{'—':>11}" for v in values)
                         + f"  {conv}/{len(group)}" + (f", {len(group) - len(ok)} failed" if len(ok) < len(group) else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.02)
    parser.add_argument("--quick", action="store_true", help="p = 20, σ = 1, identity only")
    parser.add_argument("--out", default="benchmarks/results/vae.json")
    parser.add_argument("--resume", action="store_true", help="keep the rows in --out, run only missing cases")
    args = parser.parse_args()
    torch.set_num_threads(2)
    grid = [(20, 1.0, "identity")] if args.quick else [
        (p, s, f) for p in (20, 50) for s in (0.5, 1.0) for f in ("identity", "compressive")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out.read_text())["rows"] if args.resume and out.exists() else []
    done = {(r["p"], r["sigma"], r["forward"], r["seed"]) for r in rows}
    for seed in range(args.seeds):
        for p, sigma, forward in grid:
            if (p, sigma, forward, seed) in done:
                continue
            rows += run_case(p, sigma, forward, seed, args.alpha, args.n)
            out.write_text(json.dumps({"settings": vars(args), "rows": rows, "table": summarize(rows)}, indent=1))
            print(f"done p={p} σ={sigma} {forward} seed={seed}", flush=True)
    print(f"\nmedians over {args.seeds} seed(s); n = {args.n}, chain graph, α = {args.alpha}; "
          "ELBO gap = log p(x; Λ̂) − ELBO per observation\n" + summarize(rows))
    print(f"\nrows: {out}")


if __name__ == "__main__":
    main()
