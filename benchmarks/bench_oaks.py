"""Benchmark of issue #20: the oak powdery-mildew microbiome (examples/oaks), 5-fold.

The Poisson log-normal network ``x_ij ~ Poisson(exp(o_ij + z_ij))``, ``z_i ~ N(μ + B c_i, Λ⁻¹)``
with the log sequencing depths o and the tree's status c (two indicators, susceptible the
reference), on the K most abundant taxa (``--taxa``, default all 114). The 116 samples are cut
into 5 folds (a seeded permutation); on each, the other 4 folds are fitted by

- invae ``iaf`` and ``vae``, at the penalty each selects: :func:`invae.inference.penalty.select_penalty`
  (``--penalty auto``: held-out ELBO on 20% of the training rows, then a refit on all of them);
- pyPLNmodels' ``PlnNetworkCollection`` (``add_const=True``, the same exog and offsets) over the
  same α path (λ = nα/2, see benchmarks/baselines_speed.py), at the penalty its own
  ``best_model("BIC")`` selects;

and each fit's (μ̂, B̂, Λ̂) scores the held-out fold by its mean ``log p(x_i; θ̂)`` per sample,
with one estimator for all: :func:`invae.references.importance.importance_posterior` (a
Student-t Laplace proposal with a defensive prior component, 1 024 draws per row), and its median ESS. Times are
whole selections (the path and the refit), one torch thread, after a warm-up fit of each kind.

    benchmarks/.venv-bench/bin/python benchmarks/bench_oaks.py [--taxa 30] [--folds 5]

Prints a table per fold and the medians, and writes benchmarks/results/oaks.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, str(Path(__file__).parent))
from baselines_speed import _silenced, plnnetwork_penalty  # noqa: E402
from pln_common import IS_DRAWS, data_rows, has_pyplnmodels, held_out, pln_prior, poisson_likelihood  # noqa: E402

from invae import GaussianGraphicalModel, VariationalEB  # noqa: E402
from invae.inference.penalty import penalty_grid, select_penalty  # noqa: E402

OAKS = Path(__file__).parent.parent / "examples" / "oaks"
FAMILIES = {"iaf": "iaf", "vae": "diagonal"}
LEVELS = ("intermediate", "resistant")  # indicators; susceptible is the reference


def load(taxa: int | None) -> dict:
    """Counts and log offsets (116, K) of the K most abundant taxa, the tree indicators (116, 2)."""
    counts = np.loadtxt(OAKS / "counts.csv", delimiter=",", skiprows=1)
    offsets = np.loadtxt(OAKS / "log_offsets.csv", delimiter=",", skiprows=1)
    kept = np.sort(np.argsort(-counts.sum(0), kind="stable")[:taxa or counts.shape[1]])
    tree = [line.split(",")[0] for line in (OAKS / "covariates.csv").read_text().splitlines()[1:]]
    design = np.array([[float(status == level) for level in LEVELS] for status in tree])
    return {"counts": counts[:, kept], "offsets": offsets[:, kept], "design": design}


def rows_of(data: dict, index: np.ndarray) -> np.ndarray:
    """invae's data rows (x, offsets, tree indicators) of the samples ``index``: (len, 2K + 2)."""
    return data_rows(data["counts"][index], data["offsets"][index], data["design"][index])


def template(p: int, family: str) -> VariationalEB:
    return VariationalEB(GaussianGraphicalModel(dim=p, covariates=len(LEVELS), fit_intercept=True),
                         poisson_likelihood(p), family=FAMILIES[family],
                         random_state=0, n_threads=1)


def fit_invae(family: str, data: dict, train: np.ndarray, alphas: np.ndarray
              ) -> tuple[GaussianGraphicalModel | None, dict]:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            fitted, path = select_penalty(template(data["counts"].shape[1], family), rows_of(data, train),
                                          alphas=alphas)
        except FloatingPointError as error:  # a fit on the path diverged even after its rollbacks
            return None, {"method": family, "seconds": time.perf_counter() - start, "failed": str(error)}
    return fitted.prior_, {"method": family, "seconds": time.perf_counter() - start, "alpha": path.alpha}


def fit_pln(data: dict, train: np.ndarray, alphas: np.ndarray) -> tuple[GaussianGraphicalModel, dict]:
    """PlnNetworkCollection over the α path (λ = nα/2), its BIC's choice as an invae prior."""
    with _silenced(True):
        from pyPLNmodels import PlnNetworkCollection
    start = time.perf_counter()
    with _silenced(True):
        collection = PlnNetworkCollection(data["counts"][train], exog=data["design"][train],
                                          offsets=data["offsets"][train], add_const=True,
                                          penalties=[plnnetwork_penalty(alpha, len(train)) for alpha in alphas])
        collection.fit()
        best = collection.best_model("BIC")
    seconds = time.perf_counter() - start
    return pln_prior(best), {"method": "pyPLNmodels PlnNetwork", "seconds": seconds,
                             "alpha": 2 * best.penalty / len(train)}


def fold(data: dict, k: int, test: np.ndarray, families: list[str], with_pln: bool) -> list[dict]:
    train = np.setdiff1d(np.arange(len(data["counts"])), test)
    p = data["counts"].shape[1]
    alphas = penalty_grid(rows_of(data, train), template(p, "vae").prior, template(p, "vae").likelihood)
    fits = [fit_invae(family, data, train, alphas) for family in families]
    if with_pln:
        fits.append(fit_pln(data, train, alphas))
    rows = [{**row, "fold": k, "taxa": p} if prior is None else
            {**row, **held_out(prior, rows_of(data, test), p), "edges": prior.summary()["edges"], "fold": k, "taxa": p}
            for prior, row in fits]
    for row in (row for row in rows if "failed" in row):
        print(f"fold {k}: {row['method']:<24} FAILED after {row['seconds']:.1f} s: {row['failed'][:90]}", flush=True)
    for row in (row for row in rows if "failed" not in row):
        print(f"fold {k}: {row['method']:<24} α {row['alpha']:.4g}  edges {row['edges']:>5}  held-out log p(x) "
              f"{row['held_out_log_lik']:10.3f}  ESS {row['median_ess']:7.1f}  {row['seconds']:7.1f} s", flush=True)
    return rows


def warm_up(data: dict, families: list[str], with_pln: bool) -> None:
    """Small fits of each kind on 5 taxa, so that no method pays the process's first-use costs."""
    small = {key: value[:, :5] if key != "design" else value for key, value in data.items()}
    train, alphas = np.arange(80), np.array([0.1])
    for family in families:
        fit_invae(family, small, train, alphas)
    if with_pln:
        fit_pln(small, train, alphas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taxa", type=int, default=None, help="the K most abundant taxa (default: all 114)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--families", default="iaf,vae")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "oaks.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    families = [name for name in args.families.split(",") if name]
    with_pln = has_pyplnmodels()
    data = load(args.taxa)
    warm_up(data, families, with_pln)
    folds = np.array_split(np.random.default_rng(0).permutation(len(data["counts"])), args.folds)
    rows = [row for k, test in enumerate(folds) for row in fold(data, k, test, families, with_pln)]
    print(f"medians over {args.folds} folds ({data['counts'].shape[1]} taxa):")
    for method in dict.fromkeys(row["method"] for row in rows):
        mine = [row for row in rows if row["method"] == method and "failed" not in row]
        print(f"  {method:<24} ({len(mine)} fits ended) held-out log p(x) per sample "
              f"{statistics.median(row['held_out_log_lik'] for row in mine):10.3f}  edges "
              f"{statistics.median(row['edges'] for row in mine):6.0f}  time "
              f"{statistics.median(row['seconds'] for row in mine):7.1f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": platform.platform(), "taxa": data["counts"].shape[1],
                                          "folds": args.folds, "is_draws": IS_DRAWS, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
