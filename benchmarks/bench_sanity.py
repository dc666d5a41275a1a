"""Benchmark of issue 19: does the sanity bound at the end of a variational fit catch the fits that failed?

Cases (Gaussian graphical prior, chain graph, σ = 0.5, no penalty):

- ``compressive``: p = 30, a Gaussian 20 × 30 forward matrix, n = 12 000 (the issue's hidden
  case), where the diagonal families run away (allowed here) and ``iaf`` can end far off;
- ``identity``: p = 20, A = I, n = 10 000, where every family works.

For every method it reports Λ's relative error, the exact log-likelihood's shortfall from
exact EM's maximum (nats), the sanity bound (:func:`invae.references.sanity.likelihood_check`:
the gain of 50 EM steps from Λ̂ against ½ χ²_{d, 0.999}), and the earlier candidate bound
"ℓ(Λ̂) below the naive estimate's" — each flags a fit or not.

    .venv/bin/python benchmarks/bench_sanity.py [--seeds 3] [--out benchmarks/results/sanity.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from invae.app.methods import make_estimator
from invae.evaluation.simulate import simulate_problem
from invae.model.forward import LinearOperator
from invae.model.ggm import GaussianGraphicalModel
from invae.model.likelihoods import GaussianLikelihood
from invae.references.exact import marginal_log_likelihood
from invae.references.sanity import likelihood_check

CASES = {"compressive": {"p": 30, "n": 12_000, "forward": "gaussian", "m": 20},
         "identity": {"p": 20, "n": 10_000, "forward": "identity"}}
METHODS = ("em", "naive", "vae", "mean-field", "iaf", "full-covariance")


def case_rows(case: str, seed: int) -> list[dict]:
    problem = simulate_problem(noise_std=0.5, seed=seed, **CASES[case])
    x = torch.as_tensor(problem.X)
    likelihood = GaussianLikelihood(LinearOperator(torch.as_tensor(problem.A)), noise_std=0.5)
    start = GaussianGraphicalModel(torch.eye(problem.A.shape[1], dtype=torch.float64))
    fitted = {}
    for method in METHODS:
        estimator = make_estimator(method, start, likelihood, seed=seed, allow_unidentified=True)
        begin = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.fit(problem.X)
        fitted[method] = (estimator.prior_.to("cpu", torch.float64), time.perf_counter() - begin)
    total = {method: float(marginal_log_likelihood(x, prior, likelihood).sum()) for method, (prior, _) in fitted.items()}
    rows = []
    for method, (prior, seconds) in fitted.items():
        check = likelihood_check(x, prior, likelihood)
        error = np.linalg.norm(prior.precision.numpy() - problem.precision) / np.linalg.norm(problem.precision)
        rows.append({"case": case, "seed": seed, "method": method, "seconds": seconds, "lambda_error": float(error),
                     "shortfall": total["em"] - total[method], "gain": check.gain, "threshold": check.threshold,
                     "degrees_of_freedom": check.degrees_of_freedom, "flagged": not check.passed,
                     "below_naive": total[method] < total["naive"]})
        print(f"{case:12s} seed {seed} {method:16s} Λ err {error:8.3f}  short {rows[-1]['shortfall']:9.1f}  "
              f"gain {check.gain:9.1f} / {check.threshold:.1f}  flagged {rows[-1]['flagged']!s:5s}  "
              f"below naive {rows[-1]['below_naive']!s:5s} ({seconds:.1f} s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/sanity.json")
    args = parser.parse_args()
    rows = [row for case in CASES for seed in range(args.seeds) for row in case_rows(case, seed)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
