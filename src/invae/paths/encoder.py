"""The posterior family over paths, amortized over series (``--method markov``).

``q(z | x) = GaussMarkov(μ(x), D(x), B(x))`` (:mod:`invae.paths.gauss_markov`): a Gaussian
over the whole grid path whose precision is block-tridiagonal in time. It holds the exact
posterior of every linear-Gaussian state-space model (a Gauss–Markov prior observed through
independent Gaussian noise has a block-tridiagonal posterior precision), so on an
Ornstein–Uhlenbeck prior it can reach the Kalman smoother's answer.

A bidirectional GRU reads the series along the grid; its input at grid point g is
``(u_t ⊙ o_t, o_t, 1, Δ_g)`` where g is observation time t (u the standardised
measurements, o their observed indicators), and ``(0, 0, 0, Δ_g)`` at a sub-step, Δ_g the
step to the previous grid point over the median step. A linear map of the same inputs
adds to the mean (the exact posterior mean of a linear-Gaussian model is linear in x). The
heads give, per grid point, the mean, the lower-triangular D_t (softplus on its diagonal)
and B_t in units of the start prior's law, ``z = m₀ + s₀ ⊙ z̃``:

    μ_g = m₀ + s₀ ⊙ μ̃_g,    D_g = diag(1/s₀) D̃_g,    B_g = diag(1/s₀) B̃_g,

the precision of z̃ mapped to z's. q starts with the spread e^{−1} s₀ at every point and no
coupling in time (B̃ = 0), as the other encoders start narrower than the prior.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from .gauss_markov import GaussMarkov

__all__ = ["FlatPath", "PathEncoder"]

_INIT_PRECISION = math.e  # D̃'s diagonal at the start: a spread of e^{-1} in the prior's units


class FlatPath(Distribution):
    """A path law (batch (n,), event (G, d)) with its event flattened time-major to (G d,), as
    invae's data rows and priors see z."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, path: GaussMarkov):
        self.path = path
        n, points, d = path.mean.shape
        super().__init__(torch.Size([n]), torch.Size([points * d]), validate_args=False)

    @property
    def mean(self) -> Tensor:
        return self.path.mean.flatten(-2)

    @property
    def variance(self) -> Tensor:
        return self.path.variance.flatten(-2)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        return self.path.rsample(sample_shape).flatten(-2)

    def log_prob(self, value: Tensor) -> Tensor:
        return self.path.log_prob(value.unflatten(-1, self.path.mean.shape[-2:]))

    def entropy(self) -> Tensor:
        return self.path.entropy()


class PathEncoder(nn.Module):
    """``x (B, T m [+ T m indicators]) ↦ q(z | x)`` over the grid path (module docstring).

    Parameters
    ----------
    grid : Tensor (G,)
        The latent grid's times; observation t is grid point t k.
    substeps : int
        k.
    m, d : int
        Measurements per time and latent coordinates per grid point.
    start : (Tensor (d,), Tensor (d,))
        m₀ and s₀: the mean and marginal spread of the start prior's law.
    hidden : int
        The GRU's width (each direction); ``layers`` its depth.
    log1p : bool
        Read the measurements as ``log(1 + x)`` (counts).
    masked : bool
        The rows end with the T m observed-entry indicators (missing entries).
    """

    def __init__(self, grid: Tensor, substeps: int, m: int, d: int, start: tuple[Tensor, Tensor], *,
                 hidden: int = 64, layers: int = 1, log1p: bool = False, masked: bool = False):
        super().__init__()
        self.substeps, self.m, self.d, self.log1p, self.masked = substeps, m, d, log1p, masked
        steps = grid.diff()
        spacing = torch.cat([steps.new_zeros(1), steps / steps.median()]) if len(steps) else grid.new_zeros(1)
        self.register_buffer("spacing", spacing.to(torch.get_default_dtype()))
        self.register_buffer("shift", torch.zeros(m))
        self.register_buffer("scale", torch.ones(m))
        self.register_buffer("start_mean", start[0].detach().clone())
        self.register_buffer("start_scale", start[1].detach().clone())
        width = 2 * m + 2
        self.gru = nn.GRU(width, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.skip = nn.Linear(width, d)
        self.head = nn.Linear(2 * hidden, d + d * (d + 1) // 2 + d * d)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def standardize_with(self, x: Tensor) -> None:
        """Shift and scale each measurement coordinate by its mean and sd over the observed
        entries of the training rows x (n, row columns)."""
        values, observed = self._split(x.to(torch.float64))
        weights = observed.to(values.dtype)
        count = weights.sum((0, 1)).clamp_min(1)
        mean = (values * weights).sum((0, 1)) / count
        spread = (((values - mean) ** 2 * weights).sum((0, 1)) / count).sqrt()
        self.shift.copy_(mean)
        self.scale.copy_(torch.where(spread > 1e-12, spread, torch.ones_like(spread)))

    def forward(self, x: Tensor, index: Tensor | None = None) -> FlatPath:
        return self.encode(x)[0]

    def encode(self, x: Tensor) -> tuple[FlatPath, Tensor]:
        """q(z | x) and the GRU's states along the grid, (B, G, 2 hidden): the series' encoding at
        each grid point, which a flow on q reads (:mod:`invae.paths.flow`)."""
        inputs = self._grid_inputs(x)  # (B, G, 2m + 2)
        hidden, _ = self.gru(inputs)
        return self._law(inputs, hidden), hidden

    def _law(self, inputs: Tensor, hidden: Tensor) -> FlatPath:
        """The Gauss–Markov q of the heads on the GRU's states, in z's units (module docstring)."""
        out = self.head(hidden)
        d = self.d
        mean = self.skip(inputs) + out[..., :d]
        diagonal = _lower_triangular(out[..., d : d + d * (d + 1) // 2], d)
        subdiagonal = out[..., d + d * (d + 1) // 2 :].unflatten(-1, (d, d))[:, 1:]
        inverse_scale = (1 / self.start_scale)[:, None]
        return FlatPath(GaussMarkov(self.start_mean + self.start_scale * mean, inverse_scale * diagonal,
                                    inverse_scale * subdiagonal, validate_args=False))

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(u(x) (B, T, m), the observed indicators (B, T, m)) of data rows x: the measurements
        are the first T m columns, the indicators (where ``masked``) the last T m."""
        size = (len(self.spacing) - 1) // self.substeps * self.m + self.m  # T m
        values = x[..., :size].unflatten(-1, (-1, self.m))
        observed = x[..., -size:].unflatten(-1, (-1, self.m)) if self.masked else torch.ones_like(values)
        return (torch.log1p(values) if self.log1p else values), observed

    def _grid_inputs(self, x: Tensor) -> Tensor:
        """The GRU's inputs on the grid (B, G, 2m + 2), zeros but Δ at the sub-steps."""
        values, observed = self._split(x)
        weights = observed.to(values.dtype)
        standard = (values - self.shift) / self.scale * weights
        at_times = torch.cat([standard, weights, torch.ones_like(weights[..., :1])], dim=-1)  # (B, T, 2m + 1)
        grid = at_times.new_zeros(len(x), len(self.spacing), 2 * self.m + 1)
        grid[:, :: self.substeps] = at_times
        return torch.cat([grid, self.spacing.to(grid).expand(len(x), -1)[..., None]], dim=-1)


def _lower_triangular(entries: Tensor, d: int) -> Tensor:
    """(..., d(d+1)/2) → lower-triangular (..., d, d) with softplus(· + c) on the diagonal,
    c such that the start (entries 0) has the diagonal ``_INIT_PRECISION``."""
    rows, cols = torch.tril_indices(d, d, device=entries.device)
    matrix = entries.new_zeros(*entries.shape[:-1], d, d)
    matrix[..., rows, cols] = entries
    offset = math.log(math.expm1(_INIT_PRECISION))
    diagonal = F.softplus(matrix.diagonal(dim1=-2, dim2=-1) + offset)
    return matrix.tril(-1) + torch.diag_embed(diagonal)
