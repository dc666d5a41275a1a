"""Benchmark of issue 21: the Nile river, a local level seen through noise, against statsmodels.

The annual flow of the Nile at Aswan, 1871–1970 (T = 100, ``statsmodels.datasets.nile``, shipped
with statsmodels), is the textbook local-level model (Durbin & Koopman 2012, ch. 2):

    y_t = z_t + ε_t,  ε_t ~ N(0, σ²_ε);     z_{t+1} = z_t + η_t,  η_t ~ N(0, σ²_η),

both variances unknown; their MLE is published (σ²_ε ≈ 15 099, σ²_η ≈ 1 469). Side by side in one
run, on times 0, …, 99:

- statsmodels' ``UnobservedComponents(y, "llevel").fit()``: its default start is approximately
  diffuse (z_0 ~ N(0, 10⁶)) and its log-likelihood leaves out the first observation;
- invae's ``--prior brownian --noise-std learn`` (the CLI's settings and start, through
  :func:`invae.app.pipeline.load_problem` and :func:`invae.app.methods.make_estimator`), by
  ``kalman`` (at the CLI's 200 iterations, and run to its fixed point) and by ``markov``. invae's
  ``brownian`` prior has a diffuse start (the flat limit of N(0, κ), docs/methods.md §3.16);
  ``brownian-learned-start`` (a learned Gaussian N(m, s²)) is run by ``kalman`` to its fixed point
  for comparison.

Reported, per row: σ²_ε = noise_std², σ²_η = diffusion² and their ratios to statsmodels' (target
within 5%); the diffuse log-likelihood at the row's variances (target within 0.5 nats of
statsmodels' maximum), computed exactly with invae's Kalman filter started at the first
observation — z_0 | y_0 ~ N(y_0, σ²_ε), so z_1 | y_0 ~ N(y_0, σ²_ε + σ²_η), then the filter over
y_1 … y_99 (:func:`diffuse_log_likelihood`) — and checked against statsmodels' exact diffuse
``loglike`` at the same variances (which adds −½ log 2π for the first observation); invae's own
log p(y; θ̂) under its own start (for the diffuse start: the flat-start evidence, which equals the
diffuse log-likelihood); iterations and seconds. A reference row, the MLE of the diffuse
log-likelihood computed with invae's filter started at the first observation, checks the κ start.

    bash benchmarks/setup_bench_env.sh
    benchmarks/.venv-bench/bin/python benchmarks/bench_nile.py [--out benchmarks/results/nile.json]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import statsmodels
import statsmodels.api as sm
import torch
from statsmodels.datasets import nile

import invae
from invae.app.methods import make_estimator
from invae.app.pipeline import load_problem
from invae.app.settings import FitSettings
from invae.paths.kalman import kalman_filter
from invae.paths.kalman_em import maximise, state_space
from invae.references.kalman import KalmanEM

T = 100
TIMES = torch.arange(T, dtype=torch.float64)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
PUBLISHED = {"noise_var": 15099.0, "level_var": 1469.0, "log_likelihood": -632.54}  # Durbin & Koopman; statsmodels


def flow() -> np.ndarray:
    """The annual flow (T,), 10⁸ m³."""
    return nile.load().data["volume"].to_numpy(np.float64).copy()


class DiffuseLocalLevel(torch.nn.Module):
    """The local level from time 1 on, given y_0: z_1 ~ N(y_0, σ²_ε + σ²_η) (z_0 | y_0 ~ N(y_0, σ²_ε) under
    a diffuse start), z_{t+1} | z_t ~ N(z_t, σ²_η); its parameters the two log variances. It has
    what :func:`~invae.paths.kalman_em.state_space` reads of an SDE prior (``dim``, ``initial``,
    ``linear_transition``)."""

    dim = 1

    def __init__(self, first: float, noise_var: float, level_var: float):
        super().__init__()
        self.first = float(first)
        self.log_noise_var = torch.nn.Parameter(torch.tensor(math.log(noise_var), dtype=torch.float64))
        self.log_level_var = torch.nn.Parameter(torch.tensor(math.log(level_var), dtype=torch.float64))

    def initial(self, dtype=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        variance = self.log_noise_var.exp() + self.log_level_var.exp()
        return torch.full((1,), self.first, dtype=torch.float64), variance.reshape(1, 1)

    def linear_transition(self, dt) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dt = torch.as_tensor(dt, dtype=torch.float64)[..., None, None]
        return torch.ones_like(dt), torch.zeros_like(dt[..., 0]), self.log_level_var.exp() * dt

    def log_likelihood(self, y: np.ndarray) -> torch.Tensor:
        """log p(y_1, …, y_{T−1} | y_0) by invae's Kalman filter."""
        model = state_space(self, TIMES[1:], torch.eye(1, dtype=torch.float64), self.log_noise_var.exp().reshape(1))
        return kalman_filter(torch.as_tensor(y[1:], dtype=torch.float64)[None, :, None], model).log_likelihood.sum()


def diffuse_log_likelihood(y: np.ndarray, noise_var: float, level_var: float) -> float:
    """log p(y_1, …, y_{T−1} | y_0) of the local level at (σ²_ε, σ²_η), exact (:class:`DiffuseLocalLevel`):
    the diffuse log-likelihood of Durbin & Koopman (2012, §2.10.1) for the local level, whose
    exact-diffuse form in statsmodels adds −½ log 2π (the first observation's)."""
    with torch.no_grad():
        return float(DiffuseLocalLevel(y[0], noise_var, level_var).log_likelihood(y))


def diffuse_mle(y: np.ndarray) -> dict:
    """The maximiser of :func:`diffuse_log_likelihood` by L-BFGS over the log variances."""
    model = DiffuseLocalLevel(y[0], 10_000.0, 1_000.0)
    began = time.perf_counter()
    maximise(lambda: model.log_likelihood(y) / (T - 1), list(model.parameters()))
    with torch.no_grad():
        return {"noise_var": float(model.log_noise_var.exp()), "level_var": float(model.log_level_var.exp()),
                "seconds": time.perf_counter() - began}


def statsmodels_fit(y: np.ndarray) -> dict:
    """statsmodels' local level, its defaults: the approximately diffuse start, the first observation burnt."""
    model = sm.tsa.UnobservedComponents(y, "llevel")
    began = time.perf_counter()
    result = model.fit(disp=False)
    seconds = time.perf_counter() - began
    noise_var, level_var = (float(v) for v in result.params)
    return {"noise_var": noise_var, "level_var": level_var, "log_likelihood": float(result.llf), "seconds": seconds,
            "initialization": model.ssm.initialization.initialization_type,
            "diffuse_variance": model.ssm.initialization.approximate_diffuse_variance}


def statsmodels_log_likelihoods(y: np.ndarray, noise_var: float, level_var: float) -> dict:
    """statsmodels' ``loglike`` at (σ²_ε, σ²_η): its exact diffuse one plus ½ log 2π (comparable with
    :func:`diffuse_log_likelihood`), and its default approximately diffuse one."""
    params = [noise_var, level_var]
    exact = sm.tsa.UnobservedComponents(y, "llevel", use_exact_diffuse=True).loglike(params)
    return {"exact_diffuse_plus_half_log_2pi": float(exact) + HALF_LOG_2PI,
            "approximate_diffuse": float(sm.tsa.UnobservedComponents(y, "llevel").loglike(params))}


def invae_fit(data: Path, method: str, max_iter: int | None = None, prior: str = "brownian") -> dict:
    """invae's fit as ``invae fit --data DATA --prior PRIOR --noise-std learn --method METHOD``
    builds it; its θ̂, σ̂, own log-likelihood, iterations, time, and θ after each outer iteration
    (``markov``); the error where it fails."""
    settings = FitSettings(data=data, prior=prior, method=method, noise_std="learn", quiet=True,
                           max_iter=max_iter)
    problem = load_problem(settings)
    trace = []
    estimator = make_estimator(method, problem.prior, problem.likelihood, max_iter=max_iter, seed=settings.seed,
                               callback=lambda iteration, prior: trace.append({"iteration": iteration,
                                                                               **prior.summary()}))
    row = {"method": f"{method}, {prior}", "max_iter": max_iter or (200 if method == "kalman" else 2000),
           "start": {**problem.prior.summary(), "noise_std": float(problem.likelihood.noise_std.reshape(-1)[0])}}
    began = time.perf_counter()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            estimator.fit(problem.x)
        except FloatingPointError as error:
            return {**row, "error": str(error), "seconds": time.perf_counter() - began, "trace": trace}
    seconds = time.perf_counter() - began
    parameters = estimator.prior_.summary()
    noise_std = float(estimator.likelihood_.noise_std.detach().reshape(-1)[0])
    with torch.no_grad():
        own = (estimator.log_likelihood_ if isinstance(estimator, KalmanEM) else
               float(kalman_filter(torch.as_tensor(problem.x)[:, :, None],
                                   state_space(estimator.prior_.sde().double(), TIMES,
                                               torch.eye(1, dtype=torch.float64),
                                               torch.tensor([noise_std**2]))).log_likelihood.sum()))
    return {**row, "noise_var": noise_std**2, "level_var": parameters["diffusion"] ** 2,
            **{key: parameters[key] for key in ("start_mean", "start_scale") if key in parameters},
            "own_log_likelihood": own, "n_iter": estimator.n_iter_, "converged": estimator.converged_,
            "seconds": seconds, "warnings": [str(w.message) for w in said], "trace": trace}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/nile.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    y = flow()
    reference = statsmodels_fit(y)
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "nile.npy"
        np.save(data, y[None, :, None])
        rows = [invae_fit(data, "kalman"), invae_fit(data, "kalman", max_iter=5000), invae_fit(data, "markov"),
                invae_fit(data, "kalman", max_iter=5000, prior="brownian-learned-start")]
    rows.append({"method": "diffuse MLE (invae's filter, L-BFGS)", **diffuse_mle(y)})
    rows.insert(0, {"method": "statsmodels llevel", **reference})
    for row in rows:
        if "noise_var" in row:
            row["noise_var_ratio"] = row["noise_var"] / reference["noise_var"]
            row["level_var_ratio"] = row["level_var"] / reference["level_var"]
            row["diffuse_log_likelihood"] = diffuse_log_likelihood(y, row["noise_var"], row["level_var"])
            row["statsmodels_loglike"] = statsmodels_log_likelihoods(y, row["noise_var"], row["level_var"])
            row["log_likelihood_gap"] = reference["log_likelihood"] - row["diffuse_log_likelihood"]
            row["targets_met"] = {"variances_within_5%": max(abs(row["noise_var_ratio"] - 1),
                                                             abs(row["level_var_ratio"] - 1)) <= 0.05,
                                  "log_likelihood_within_0.5": abs(row["log_likelihood_gap"]) <= 0.5}
    agreement = max(abs(row["diffuse_log_likelihood"] - row["statsmodels_loglike"]["exact_diffuse_plus_half_log_2pi"])
                    for row in rows if "noise_var" in row)
    _print(rows, agreement)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"published": PUBLISHED, "T": T, "rows": rows,
                               "diffuse_check_max_abs_difference": agreement,
                               "versions": {"invae": invae.__version__, "statsmodels": statsmodels.__version__,
                                            "torch": torch.__version__}}, indent=2) + "\n")
    print(f"wrote {out}")


def _print(rows: list[dict], agreement: float) -> None:
    header = (f"{'method':<52}{'σ²_ε':>10}{'ratio':>8}{'σ²_η':>9}{'ratio':>8}{'diffuse logL':>14}{'gap':>8}"
              f"{'own logL':>11}{'start s':>10}{'iters':>7}{'s':>8}")
    print(header + "\n" + "-" * len(header))
    for row in rows:
        name = row["method"] + (f" (max_iter {row['max_iter']})" if "max_iter" in row else "")
        if "error" in row:
            print(f"{name:<52}failed: {row['error'][:90]}")
            continue
        own = f"{row['own_log_likelihood']:11.3f}" if "own_log_likelihood" in row else f"{'':>11}"
        scale = f"{row['start_scale']:10.3g}" if "start_scale" in row else f"{'':>10}"
        iters = f"{row['n_iter']:7d}" if "n_iter" in row else f"{'':>7}"
        print(f"{name:<52}{row['noise_var']:10.1f}{row['noise_var_ratio']:8.4f}{row['level_var']:9.1f}"
              f"{row['level_var_ratio']:8.4f}{row['diffuse_log_likelihood']:14.4f}{row['log_likelihood_gap']:8.4f}"
              f"{own}{scale}{iters}{row['seconds']:8.2f}")
    print(f"the diffuse log-likelihood by invae's filter against statsmodels' exact diffuse loglike + ½ log 2π: "
          f"largest difference {agreement:.2e}")


if __name__ == "__main__":
    main()
