"""Benchmark of issue 21: Ornstein–Uhlenbeck paths seen through noise — the markov family against
Kalman EM, the Kalman smoother at the true θ and the complete-data floor.

n = 200 series, T = 100 unit-spaced times, d = 1 and d = 3 (a non-symmetric drift), x_t = z_t + σ ε,
σ = 0.5, 10% of the times of each series missing (every coordinate). Every fit starts from the
same θ (Θ = I, μ the data's mean, a stationary spread equal to the data's). Reported, per seed:

- θ's relative error ‖θ̂ − θ‖/‖θ‖ over (vec Θ, μ, vec S Sᵀ), for invae ``markov`` (a Gauss–Markov q
  from a bidirectional GRU, θ by the exact M-step of its path moments), Kalman EM (the MLE), and
  the complete-data MLE from the true paths (the floor); target: markov ≤ 1.05 × Kalman EM's;
- the path MSE of the posterior mean over all times (observed or not), over the Kalman
  smoother's at the true θ (target ≤ 1.02), and the coverage of q's 90% bands (target 0.88–0.92);
- the ELBO per series (100 draws per series) against the exact log p(x; θ̂) at markov's θ̂
  (q's gap), and times.

    .venv/bin/python benchmarks/bench_paths.py [--seeds 3] [--dims 1,3] [--out benchmarks/results/paths.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

from invae import GaussianLikelihood, LinearOperator, VariationalEB
from invae.model.missing import MissingEntries
from invae.paths.kalman import rts_smoother
from invae.paths.kalman_em import complete_data_mle, kalman_em, state_space
from invae.paths.observation import PathOperator, series_rows
from invae.paths.prior import PathPrior
from invae.paths.sde import OrnsteinUhlenbeck

N, T, NOISE_STD, MISSING = 200, 100, 0.5, 0.1
TIMES = torch.arange(T, dtype=torch.float64)
TRUTH = {1: dict(drift=0.3, mean=1.0, diffusion=0.6),
         3: dict(drift=[[0.5, 0.2, 0.0], [-0.1, 0.4, 0.1], [0.0, -0.2, 0.6]], mean=[1.0, 0.0, -1.0],
                 diffusion=[[0.6, 0.0, 0.0], [0.2, 0.5, 0.0], [0.0, 0.1, 0.7]])}
Z90 = 1.6448536269514722


def simulate(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(true paths (n, T, d), data (n, T, d) with NaN at 10% of each series' times)."""
    generator = torch.Generator().manual_seed(seed)
    z = PathPrior(OrnsteinUhlenbeck(d, **TRUTH[d]).double(), TIMES).sample(N, generator).reshape(N, T, d)
    x = z + NOISE_STD * torch.randn(z.shape, generator=generator, dtype=torch.float64)
    missing = torch.rand(N, T, generator=generator, dtype=torch.float64) < MISSING
    return z, torch.where(missing[..., None], torch.nan, x)


def parameter_vector(sde: OrnsteinUhlenbeck) -> torch.Tensor:
    """(vec Θ, μ, vec S Sᵀ) in float64."""
    scale = sde.diffusion().detach().double()
    return torch.cat([sde.drift_matrix.detach().double().reshape(-1), sde.mean.detach().double(),
                      (scale @ scale.T).reshape(-1)])


def start(x: torch.Tensor, d: int) -> OrnsteinUhlenbeck:
    """Θ = I, μ the data's mean, S diagonal with the stationary spread of the data less the noise."""
    mean = torch.nanmean(x, dim=(0, 1))
    spread = (torch.nanmean((x - mean) ** 2, dim=(0, 1)) - NOISE_STD**2).clamp_min(0.05).sqrt()
    return OrnsteinUhlenbeck(d, drift=1.0, mean=mean, diffusion=torch.diag(spread * 2**0.5)).double()


@torch.no_grad()
def smoother_answers(x: torch.Tensor, sde: OrnsteinUhlenbeck, d: int):
    return rts_smoother(x, state_space(sde, TIMES, torch.eye(d, dtype=torch.float64),
                                       torch.full((d,), NOISE_STD**2, dtype=torch.float64)))


def fit_markov(x: torch.Tensor, d: int, seed: int) -> tuple[VariationalEB, float]:
    likelihood = MissingEntries(GaussianLikelihood(PathOperator(LinearOperator.identity(d), T), NOISE_STD))
    rows = likelihood.rows(series_rows(x.numpy()))
    estimator = VariationalEB(PathPrior(start(x, d), TIMES), likelihood, family="markov", hidden=(32,),
                              random_state=seed, n_threads=1)
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(rows)
    return estimator, time.perf_counter() - began


def case(d: int, seed: int) -> dict:
    z, x = simulate(d, seed)
    truth = parameter_vector(OrnsteinUhlenbeck(d, **TRUTH[d]))
    error = lambda sde: float(torch.linalg.norm(parameter_vector(sde) - truth) / torch.linalg.norm(truth))  # noqa: E731
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        em = kalman_em(x, start(x, d), TIMES, torch.eye(d, dtype=torch.float64),
                       torch.full((d,), NOISE_STD**2, dtype=torch.float64), max_iter=1000)
    em_seconds = time.perf_counter() - began
    markov, seconds = fit_markov(x, d, seed)
    fitted = markov.prior_.sde().double()
    rows = markov.likelihood_.rows(series_rows(x.numpy()))
    with torch.no_grad():
        q = markov.posterior_(torch.as_tensor(rows, dtype=torch.float32), None)
    mean, sd = q.mean.double().reshape(N, T, d), q.stddev.double().reshape(N, T, d)
    oracle = smoother_answers(x, OrnsteinUhlenbeck(d, **TRUTH[d]).double(), d).mean
    exact = smoother_answers(x, fitted, d).log_likelihood
    floor = complete_data_mle(z, start(x, d), TIMES)
    return {"d": d, "seed": seed, "markov_error": error(fitted), "em_error": error(em.prior),
            "floor_error": error(floor),
            "path_mse_over_oracle": float(((mean - z) ** 2).mean() / ((oracle - z) ** 2).mean()),
            "coverage_90": float(((mean - z).abs() <= Z90 * sd).double().mean()),
            "elbo_gap": float(exact.mean()) - markov.elbo(rows)[0],
            "markov_seconds": seconds, "em_seconds": em_seconds, "markov_iterations": markov.n_iter_,
            "em_iterations": em.n_iter, "markov_converged": markov.converged_}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dims", default="1,3")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "paths.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for d in (int(value) for value in args.dims.split(",")):
        for seed in range(args.seeds):
            row = case(d, seed)
            rows.append(row)
            print(f"d {d} seed {seed}: θ err markov {row['markov_error']:.4f} em {row['em_error']:.4f} "
                  f"({row['markov_error'] / row['em_error']:.3f} ×) floor {row['floor_error']:.4f}  path MSE/oracle "
                  f"{row['path_mse_over_oracle']:.4f}  coverage {row['coverage_90']:.3f}  ELBO gap "
                  f"{row['elbo_gap']:.3f}  {row['markov_seconds']:.0f} s ({row['markov_iterations']} it) vs EM "
                  f"{row['em_seconds']:.1f} s ({row['em_iterations']} it)", flush=True)
    print("\nmedians over seeds")
    for d in sorted({row["d"] for row in rows}):
        mine = [row for row in rows if row["d"] == d]
        ratios = {"θ_ratio": [row["markov_error"] / row["em_error"] for row in mine]}
        median = {key: statistics.median(row[key] for row in mine) for key in
                  ("path_mse_over_oracle", "coverage_90", "elbo_gap", "markov_seconds", "em_seconds")}
        print(f"d {d}: θ err markov/em {statistics.median(ratios['θ_ratio']):.3f}  path MSE/oracle "
              f"{median['path_mse_over_oracle']:.4f}  coverage {median['coverage_90']:.3f}  ELBO gap "
              f"{median['elbo_gap']:.3f}  time {median['markov_seconds']:.0f} s vs EM {median['em_seconds']:.1f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
