"""Benchmark of issue 21: a stochastic double well seen through noise — invae's ``markov`` and ``iaf``
against the particle-based MLE.

n series of ``dz = θ₁ z (θ₂ − z²) dt + s dW`` (d = 1), T times 0.25 apart, seen through x_t = z_t + σ ε,
σ = 0.5. The truth θ₁ = 2, θ₂ = 1.5 (wells at ±1.22, a barrier θ₁θ₂²/4 = 1.125), s = 0.7 and a
N(0, 1) start; the paths are simulated by Euler–Maruyama on the times refined 20-fold, the
model of every fit refines them k = 2-fold (Δ = 0.125; stable: 1 + f'(well) Δ = 0.25). Every fit
starts where ``invae fit --prior double-well`` starts (the double well's defaults, θ₁ = θ₂ = 1,
s = 0.5, start N(0, 1)). Reported per seed:

- θ's relative error ‖θ̂ − θ‖/‖θ‖ over (θ₁, θ₂, s), for ``markov`` and ``iaf`` (as ``make_estimator``
  builds them: the CLI's settings) and for the reference, the particle MLE: the bootstrap particle
  filter's log p̂(x; θ) summed over series, maximised by Nelder–Mead over (log θ₁, θ₂, log s, the
  start's mean and log sd) with common random numbers (one seed for every evaluation, so p̂ is a
  fixed function of θ); target: invae ≤ 1.1 × the particle MLE's;
- log p̂(x; θ̂) per series at each θ̂ (``--check-particles`` particles, 10 filters averaged; one
  filter's per-series standard error printed): the MLE's should be the highest; each fit's ELBO
  gap to it at its own θ̂; and times.

    .venv/bin/python benchmarks/bench_double_well.py [--seeds 3] [--n 200] [--T 100]
        [--methods markov,iaf] [--lambda-draws K] [--out benchmarks/results/double_well.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize

from invae import GaussianLikelihood, LinearOperator
from invae.app.methods import make_estimator
from invae.paths.observation import PathOperator, series_rows
from invae.paths.particles import particle_filter, repeated_log_likelihood
from invae.paths.prior import PathPrior
from invae.paths.sde import DoubleWell
from invae.paths.start import path_start

STEP, NOISE_STD, SUBSTEPS = 0.25, 0.5, 2
TRUTH = {"theta1": 2.0, "theta2": 1.5, "diffusion": 0.7, "start_mean": 0.0, "start_scale": 1.0}
COMPARED = ("theta1", "theta2", "diffusion")


def simulate(n: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the observations x (n, T, 1), their times (T,))."""
    generator = torch.Generator().manual_seed(seed)
    times = STEP * torch.arange(steps, dtype=torch.float64)
    z = DoubleWell(**TRUTH).double().simulate(n, times, 20, generator)
    return z + NOISE_STD * torch.randn(z.shape, generator=generator, dtype=z.dtype), times


def relative_error(parameters: dict) -> float:
    fitted, truth = (np.array([values[key] for key in COMPARED]) for values in (parameters, TRUTH))
    return float(np.linalg.norm(fitted - truth) / np.linalg.norm(truth))


def per_time(m: int = 1) -> GaussianLikelihood:
    return GaussianLikelihood(LinearOperator.identity(m), NOISE_STD)


def _well(u: np.ndarray) -> DoubleWell:
    """The double well at u = (log θ₁, θ₂, log s, start mean, log start sd)."""
    return DoubleWell(theta1=math.exp(u[0]), theta2=u[1], diffusion=math.exp(u[2]), start_mean=u[3],
                      start_scale=math.exp(u[4])).double()


def particle_mle(x: torch.Tensor, times: torch.Tensor, start: dict, particles: int, seed: int) -> dict:
    """The maximiser of Σ_i log p̂(x_i; θ) (module docstring), from ``start`` (θ by name)."""
    def negative(u: np.ndarray) -> float:
        generator = torch.Generator().manual_seed(seed)  # common random numbers
        with torch.no_grad():
            return -float(particle_filter(x, times, _well(u), per_time(), n_particles=particles, substeps=SUBSTEPS,
                                          keep_particles=False, generator=generator).log_likelihood.sum())

    u0 = np.array([math.log(start["theta1"]), start["theta2"], math.log(start["diffusion"]), start["start_mean"],
                   math.log(start["start_scale"])])
    # scipy's default simplex steps 5% of each coordinate, 0.00025 where it is 0 (log θ₁ = 0 at the start):
    # a simplex of 0.3 in every coordinate lets each of them move
    simplex = np.vstack([u0, u0 + 0.3 * np.eye(len(u0))])
    began = time.perf_counter()
    result = minimize(negative, u0, method="Nelder-Mead",
                      options={"xatol": 1e-3, "fatol": 1e-2, "maxfev": 2000, "initial_simplex": simplex})
    return {**PathPrior(_well(result.x), times).summary(), "evaluations": int(result.nfev),
            "seconds": time.perf_counter() - began}


def invae_fit(method: str, x: torch.Tensor, times: torch.Tensor, seed: int, lambda_draws: int | None):
    """``invae fit --prior double-well --method METHOD --substeps 2`` as the CLI builds it; ``lambda_draws``
    (None: the method's default) draws per series in each Λ-step."""
    likelihood = GaussianLikelihood(PathOperator(LinearOperator.identity(1), len(times), SUBSTEPS), NOISE_STD)
    rows = series_rows(x.numpy())
    estimator = make_estimator(method, path_start("double-well", rows, likelihood, times.numpy(), SUBSTEPS),
                               likelihood, seed=seed)
    estimator.lambda_draws = lambda_draws
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(rows)
    return estimator, rows, time.perf_counter() - began


def evidence(x, times, parameters: dict, particles: int, seed: int) -> tuple[float, float]:
    """The mean over series of log p̂(x_i; θ) (10 filters averaged) and the median over series of one
    filter's standard error."""
    sde = DoubleWell(**{key: parameters[key] for key in TRUTH}).double()
    with torch.no_grad():
        mean, se = repeated_log_likelihood(x, times, sde, per_time(), repeats=10, n_particles=particles,
                                           substeps=SUBSTEPS, generator=torch.Generator().manual_seed(seed))
    return float(mean.mean()), float(se.median())


def case(n: int, steps: int, seed: int, particles: int, check_particles: int, fits: tuple[str, ...],
         lambda_draws: int | None) -> dict:
    x, times = simulate(n, steps, seed)
    start = PathPrior(DoubleWell().double(), times).summary()  # where the CLI's fit starts
    row = {"seed": seed, "n": n, "T": steps, "start": start,
           "particle_mle": particle_mle(x, times, start, particles, seed)}
    mle = row["particle_mle"]
    mle["error"] = relative_error(mle)
    mle["particle_log_likelihood"], mle["particle_sd_per_series"] = evidence(x, times, mle, check_particles, seed)
    for method in fits:
        estimator, rows, seconds = invae_fit(method, x, times, seed, lambda_draws)
        parameters = estimator.prior_.summary()
        log_p, sd = evidence(x, times, parameters, check_particles, seed)
        elbo = estimator.elbo(rows)[0]
        row[method] = {**parameters, "error": relative_error(parameters), "seconds": seconds,
                       "iterations": estimator.n_iter_, "converged": estimator.converged_, "elbo": elbo,
                       "particle_log_likelihood": log_p, "particle_sd_per_series": sd, "elbo_gap": log_p - elbo}
    return row


def _print(row: dict, fits: tuple[str, ...]) -> None:
    mle = row["particle_mle"]
    print(f"seed {row['seed']}: particle MLE θ̂ ({mle['theta1']:.3f}, {mle['theta2']:.3f}, {mle['diffusion']:.3f}) "
          f"error {mle['error']:.4f}, log p̂ {mle['particle_log_likelihood']:.3f} per series, {mle['seconds']:.0f} s "
          f"({mle['evaluations']} filters)")
    for method in fits:
        fit = row[method]
        print(f"  {method:<6} θ̂ ({fit['theta1']:.3f}, {fit['theta2']:.3f}, {fit['diffusion']:.3f}) error "
              f"{fit['error']:.4f} ({fit['error'] / mle['error']:.3f} × the MLE's)  log p̂ "
              f"{fit['particle_log_likelihood']:.3f}  ELBO gap {fit['elbo_gap']:.3f} "
              f"nats/series (log p̂ sd {fit['particle_sd_per_series']:.3f})  {fit['seconds']:.0f} s, "
              f"{fit['iterations']} it", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--particles", type=int, default=500, help="particles per series in the MLE's filter")
    parser.add_argument("--check-particles", type=int, default=2000, help="particles for log p̂ at each θ̂")
    parser.add_argument("--methods", default="markov,iaf", help="the invae fits, comma-separated")
    parser.add_argument("--lambda-draws", type=int, default=None, help="draws per series in each Λ-step "
                        "(default: the method's own)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "double_well.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    fits = tuple(args.methods.split(","))
    rows = []
    for seed in range(args.seeds):
        rows.append(case(args.n, args.T, seed, args.particles, args.check_particles, fits, args.lambda_draws))
        _print(rows[-1], fits)
    print("\nmedians over seeds: θ error over the particle MLE's — "
          + ", ".join(f"{method} {statistics.median(row[method]['error'] / row['particle_mle']['error'] for row in rows):.3f}"
                      for method in fits))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": vars(args), "truth": TRUTH, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
