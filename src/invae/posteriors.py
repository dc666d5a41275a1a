"""Posterior families ``q_φ(z | x)``: modules whose ``forward(x, index)`` returns a distribution.

``x`` is a batch of observations (B, m) and ``index`` (B,) their row numbers in the data;
an amortized encoder reads ``x`` only, per-observation (mean-field) factors read ``index``
only. The distribution has batch shape (B,), event shape (p,), and supports ``rsample``,
``log_prob``, ``mean`` and ``stddev``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

__all__ = ["GaussianEncoder", "MeanFieldFactors"]

_INIT_LOG_STD = -1.0  # q starts narrower than a unit prior, so early z draws are not all noise


def _diagonal_normal(mean: Tensor, log_std: Tensor) -> Distribution:
    return Independent(Normal(mean, log_std.exp(), validate_args=False), 1, validate_args=False)


class GaussianEncoder(nn.Module):
    """Amortized diagonal Gaussian ``q(z|x) = N(μ(x), diag σ(x)²)`` (DESIGN §2.2).

    ``(μ, log σ) = L(x̃) + MLP(x̃)`` with ``x̃ = (x − shift)/scale`` standardised by the
    training data: a linear map plus an MLP correction, because for linear-Gaussian models
    the exact posterior mean is linear in x and its variance constant.

    Parameters
    ----------
    m, p : int
        Observed and latent dimensions.
    hidden : tuple of int
        Widths of the MLP's hidden layers (SiLU activations).
    """

    def __init__(self, m: int, p: int, hidden: tuple[int, ...] = (128, 128)):
        super().__init__()
        self.p = p
        self.register_buffer("shift", torch.zeros(m))
        self.register_buffer("scale", torch.ones(m))
        self.linear = nn.Linear(m, 2 * p)
        layers: list[nn.Module] = []
        width = m
        for size in hidden:
            layers += [nn.Linear(width, size), nn.SiLU()]
            width = size
        last = nn.Linear(width, 2 * p)
        nn.init.zeros_(last.weight)  # start as the linear map alone
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(*layers, last)
        with torch.no_grad():
            self.linear.bias[p:] = _INIT_LOG_STD

    def standardize_with(self, x: Tensor) -> None:
        """Set the input standardisation from training data x (n, m)."""
        self.shift.copy_(x.mean(0))
        self.scale.copy_(x.std(0).clamp_min(1e-12))

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        h = (x - self.shift) / self.scale
        out = self.linear(h) + self.mlp(h)
        return _diagonal_normal(out[..., : self.p], out[..., self.p :])


class MeanFieldFactors(nn.Module):
    """Non-amortized mean-field VI: one free ``N(μ_i, diag σ_i²)`` per observation, (n, p) each."""

    def __init__(self, n: int, p: int):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(n, p))
        self.log_std = nn.Parameter(torch.full((n, p), _INIT_LOG_STD))

    def forward(self, x: Tensor, index: Tensor) -> Distribution:
        return _diagonal_normal(self.mean[index], self.log_std[index])
