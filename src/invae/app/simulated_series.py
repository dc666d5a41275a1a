"""Simulated series of a built-in SDE seen through Gaussian noise (``invae simulate --sde``,
``invae demo --sde``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..paths.prior import PathPrior
from ..paths.sde import SDE_PRIORS, SDEPrior
from ..validation import check_noise_std

__all__ = ["SimulatedSeries", "simulate_series"]


@dataclass(frozen=True)
class SimulatedSeries:
    """n series of an SDE's paths seen through Gaussian noise with A = I, ``x = z + σ ε``: the
    observations ``x`` and the true paths ``z`` (n, T, d), the ``times`` (T,), and the ``record``
    of problem.json (the SDE, θ by name as a fit's parameters.json names it, σ, the seed)."""

    x: np.ndarray
    z: np.ndarray
    times: np.ndarray
    record: dict

    def save(self, folder: str | Path) -> Path:
        """``Y.npy`` (x), ``Z.npy`` (z), ``times.npy`` and ``problem.json`` into ``folder`` (made if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in (("Y", self.x), ("Z", self.z), ("times", self.times)):
            np.save(folder / f"{name}.npy", value)
        (folder / "problem.json").write_text(json.dumps(self.record, indent=2) + "\n")
        return folder


def simulate_series(sde: str, *, n: int = 100, steps: int | None = None, times=None, dim: int = 1,
                    noise_std: float = 1.0, seed: int = 0, substeps: int = 10,
                    parameters: dict[str, float] | None = None) -> SimulatedSeries:
    """n paths of the built-in SDE ``sde`` (:data:`~invae.paths.sde.SDE_PRIORS`) in d = ``dim``
    dimensions at ``times`` (T,), or at 0, 1, …, T − 1 for T = ``steps`` (default 50), seen
    through ``x = z + σ ε``, σ = ``noise_std``. θ is the SDE's default but for ``parameters`` (by
    name, numbers; a matrix's number s means s I). The paths start from the SDE's start law, or
    at 0 where the start is diffuse (no law), and move by Euler–Maruyama on the times refined
    ``substeps``-fold (:meth:`~invae.paths.sde.SDEPrior.simulate`: fine sub-steps make its
    discretisation error small against the exact transitions a fit uses). Seeded: same seed, same series."""
    if times is not None and steps is not None:
        raise ValueError("give the number of times (--T) or the times (--times), not both")
    times = np.arange(50 if steps is None else steps, dtype=np.float64) if times is None else np.asarray(times, float)
    if len(times) < 2:
        raise ValueError(f"simulated series need T >= 2 times (a fit needs them), got T = {len(times)}")
    noise_std, process = check_noise_std(noise_std), _sde(sde, dim, parameters or {})
    generator = torch.Generator().manual_seed(seed)
    start = torch.zeros(dim, dtype=torch.float64) if process.diffuse else None
    z = process.simulate(n, torch.as_tensor(times), substeps, generator, start=start)
    x = z + noise_std * torch.randn(z.shape, generator=generator, dtype=z.dtype)
    record = {"sde": sde, "dim": dim, "parameters": PathPrior(process, times, substeps).summary(),
              **({} if start is None else {"start": start.tolist()}), "noise_std": noise_std, "seed": seed,
              "n": n, "T": len(times), "substeps": substeps}
    return SimulatedSeries(x.numpy(), z.numpy(), times, record)


def _sde(name: str, dim: int, parameters: dict[str, float]) -> SDEPrior:
    """The SDE ``name`` in ``dim`` dimensions at its default θ but ``parameters`` (named as its
    ``parameters_by_name``, which are its constructor's), in float64."""
    known = list(SDE_PRIORS[name](dim).parameters_by_name())
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ValueError(f"--sde {name} has no parameter {unknown[0]!r}; its parameters: {', '.join(known)}")
    return SDE_PRIORS[name](dim, **parameters).double()
