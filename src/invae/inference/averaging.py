"""Stochastic-approximation averaging of the Λ-step's statistics, and its Monte Carlo error.

Every outer iteration k yields the prior's expected sufficient statistics ŝ_k (a vector s
once flattened). They are noisy: fresh draws of q, a random subset of rows, and Adam's
noise in φ all move them. The M-step runs on their running average, as in
stochastic-approximation EM (SAEM; Delyon, Lavielle & Moulines, 1999; docs/methods.md §2.2):

    s̄_k = s̄_{k−1} + γ_k (ŝ_k − s̄_{k−1}),   γ_k = 1 during the burn-in,   γ_k = (k − k₀ + 1)^(−a) after

with 0.5 < a ≤ 1 (a = 1: the plain mean of the iterates since k₀, Polyak–Ruppert averaging).

Burn-in ends at the first k ≥ w (w = ``window``) at which the caller allows it (the trainer:
once the ELBO has stalled, for a q still learning makes stale statistics) and the
statistics no longer drift:

    ‖ŝ_k − ŝ_{k−w}‖² ≤ max(4 · mean_{j ∈ (k−w, k]} ‖ŝ_j − ŝ_{j−1}‖²,  (tol · ‖ŝ_k‖)²).

If ŝ_j = s + noise of total variance v (summed over coordinates), both a difference w
steps apart and a successive difference have expected square 2v: the test asks for a
change within two standard deviations of the noise. A drift of δ per step adds w²δ² on
the left and only δ² on the right, so a steady drift fails it — unless the whole change
over the window is below ``tolerance`` relative (a deterministic sequence that converges
has no noise to compare its last steps with).

Monte Carlo error. s̄_k = Σ_j c_kj ŝ_j with weights c_kj that sum to one; for independent
noise of variance v, ``Var s̄_k = v V_k`` with ``V_k = Σ_j c_kj² = (1 − γ_k)² V_{k−1} + γ_k²``,
and v is estimated by half the mean squared successive difference over the last w steps
(which a slow drift barely inflates). :meth:`StatisticsAverage.relative_error` is
``√(v V_k) / ‖s̄_k‖``. Both tests run key by key: a mixture's weights, first and second
moments have their own units.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["StatisticsAverage"]


class StatisticsAverage:
    """The running average s̄ of a sequence of statistics (dicts of tensors) and its error.

    ``window`` is w above; ``exponent`` is a; ``tolerance`` is tol; ``averaging=False`` keeps γ = 1 throughout (the
    error is then that of one step, e.g. for parameters that Adam moves, whose noise only a
    smaller step size reduces).
    """

    def __init__(self, window: int, exponent: float = 1.0, tolerance: float = 0.0, averaging: bool = True):
        if not 0.5 < exponent <= 1:
            raise ValueError(f"the averaging exponent must be in (0.5, 1], got {exponent!r}")
        self.window, self.exponent, self.tolerance, self.averaging = window, exponent, tolerance, averaging
        self.mean: dict[str, Tensor] | None = None
        self.recent: list[Tensor] = []  # the last w + 1 flattened ŝ
        self.steps, self.burn_in_end, self.weight_squares = 0, None, 1.0

    def update(self, statistics: dict[str, Tensor], may_settle: bool = True) -> dict[str, Tensor]:
        """Add ŝ_k; return s̄_k (the same keys and shapes). The burn-in ends only where
        ``may_settle``."""
        self.steps += 1
        flat = {key: value.detach().reshape(-1).to(torch.float64) for key, value in statistics.items()}
        self.recent = [*self.recent, flat][-(self.window + 1):]
        if self.burn_in_end is None and may_settle and self._stationary():
            self.burn_in_end = self.steps
        gamma = self._gamma()
        if self.mean is None or gamma == 1:
            self.mean = {key: value.detach().clone() for key, value in statistics.items()}
        else:
            self.mean = {key: mean + gamma * (statistics[key].detach() - mean) for key, mean in self.mean.items()}
        self.weight_squares = (1 - gamma) ** 2 * self.weight_squares + gamma**2
        return self.mean

    @property
    def settled(self) -> bool:
        """Whether the burn-in is over (the statistics stopped drifting)."""
        return self.burn_in_end is not None

    def relative_error(self) -> float:
        """The Monte Carlo standard error of s̄ relative to its size, ``√(v V_k) / ‖s̄_k‖``, the
        largest over the statistics' keys (which have their own units)."""
        if len(self.recent) < 2:
            return math.inf
        return max(math.sqrt(self._mean_square_step(key) / 2 * self.weight_squares)
                   / max(float(torch.linalg.norm(self.mean[key])), 1e-300) for key in self.recent[-1])

    def _stationary(self) -> bool:
        """The drift test of the module's docstring, for every key."""
        if len(self.recent) <= self.window:
            return False
        return all(self._stationary_key(key) for key in self.recent[-1])

    def _stationary_key(self, key: str) -> bool:
        change = float((self.recent[-1][key] - self.recent[0][key]).square().sum())
        floor = (self.tolerance * float(torch.linalg.norm(self.recent[-1][key]))) ** 2
        return change <= max(4 * self._mean_square_step(key), floor)

    def _mean_square_step(self, key: str) -> float:
        """mean_j ‖ŝ_j − ŝ_{j−1}‖² over the steps kept, for one key."""
        return float(torch.stack([step[key] for step in self.recent]).diff(dim=0).square().sum(-1).mean())

    def _gamma(self) -> float:
        if not self.averaging or self.burn_in_end is None:
            return 1.0
        return (self.steps - self.burn_in_end + 1) ** -self.exponent

    def state_dict(self) -> dict:
        """Everything :meth:`load_state_dict` needs to continue (checkpoints, rollbacks)."""
        return {"mean": None if self.mean is None else {k: v.clone() for k, v in self.mean.items()},
                "recent": [{k: v.clone() for k, v in step.items()} for step in self.recent], "steps": self.steps,
                "burn_in_end": self.burn_in_end, "weight_squares": self.weight_squares}

    def load_state_dict(self, state: dict, device: torch.device | str | None = None) -> None:
        """Put a :meth:`state_dict` back, its tensors on ``device`` (a checkpoint is read on the CPU)."""
        self.mean = None if state["mean"] is None else {k: v.to(device, copy=True) for k, v in state["mean"].items()}
        self.recent = [{k: v.to(device, copy=True) for k, v in step.items()} for step in state["recent"]]
        self.steps, self.burn_in_end = state["steps"], state["burn_in_end"]
        self.weight_squares = state["weight_squares"]
