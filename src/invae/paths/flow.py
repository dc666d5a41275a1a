"""The flow posterior over paths (``--method iaf`` with a path prior): the Gauss–Markov q of
:mod:`invae.paths.encoder` followed by inverse autoregressive flow (IAF) steps, for drifts
whose posterior is not Gaussian (the double well).

    z⁰ ~ GaussMarkov(μ(x), D(x), B(x)),   flattened time-major: z_i, i = g d + j
    for t = 1..K:  (m_t, s_t) = AR_t(z^{t−1}; c),   z^t = m_t + exp(s_t) ⊙ z^{t−1}
    log q(z^K | x) = log q_GM(z⁰ | x) − Σ_{t, i} s_{t,i}

with (m_{t,i}, s_{t,i}) reading only the z^{t−1}_k before i in step t's order (Kingma et al.
2016, eq. 10), so each step's Jacobian is triangular with diagonal exp(s_t). Each step is
Pyro's ``ConditionalAffineAutoregressive`` as in the row family's flow
(:class:`~invae.inference.posteriors.IAFEncoder`); its conditioner here is
:class:`PointwiseAutoregressive`: the order is time-major (point by point, coordinates
within a point in turn), reversed on every other step, and point g's shift and scale read
its earlier coordinates (a MADE over its d coordinates) with the context (z_{g−1}, c_g):
the previous point in the step's order and the series' encoding there,
``c_g = W h_g``, h_g the base encoder's bidirectional GRU state (z_{−1} = 0).

Why that order. Given x the exact posterior of a path is Markov in time (the SDE's path is,
and each measurement reads one point), so what a step adds to the base is local: a point's
correction needs its neighbour and the data around it, which h_g summarises. So a step reads
one neighbour, costs O(G) in parallel over the grid, with weights that do not grow with G;
a MADE over the whole flattened path would need O((G d)²) weights and see the data through
one vector. Alternate steps run the other way, so two steps correct each point from both
sides; the long-range, linear dependence is the base's.

Why the exp-scaled step and not the row family's sigmoid gate: with the conditioner's last
layer and skip at zero, m = s = 0 and each step is the identity, so the family starts at
exactly ``markov``'s q (a gate starts at σ = sigmoid(2) ≈ 0.88, which would shrink q per
step). Pyro clips s to [−5, 3] and takes the log-determinant from the clipped values, so
log q stays exact. It is so at q's own draws (each step caches its scales) and, through
Pyro's sequential inversion (G d passes), anywhere.

Reference: D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling
(2016), "Improving variational inference with inverse autoregressive flow", NeurIPS.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from pyro.distributions.transforms import ConditionalAffineAutoregressive
from pyro.nn import ConditionalAutoRegressiveNN
from torch import Tensor, nn
from torch.distributions import TransformedDistribution

from .encoder import PathEncoder

__all__ = ["PathIAFEncoder", "PointwiseAutoregressive"]


class PointwiseAutoregressive(nn.Module):
    """Step t's conditioner ``(z (..., G d), c (B, G, k)) ↦ (m, s)``, each (..., G d), with the
    interface Pyro's ``AffineAutoregressive`` takes (module docstring).

    In the step's order, time-major or (``reverse``) its reverse, point g's (m, s) come from a
    MADE over its d coordinates (Pyro's ``ConditionalAutoRegressiveNN``, linear skip
    connection) with the context (z_{g−1}, c_g), z_{−1} = 0. ``permutation`` is that order
    over the flattened path, by which Pyro inverts a step. The MADE's last layer and skip
    start at zero, so the step starts as the identity.
    """

    def __init__(self, points: int, d: int, context: int, hidden: tuple[int, ...], reverse: bool):
        super().__init__()
        self.d, self.reverse = d, reverse
        with warnings.catch_warnings():
            # Pyro's warning that a 1-D MADE is a mere affine map: its context makes this one nonlinear
            warnings.filterwarnings("ignore", message="ConditionalAutoRegressiveNN input_dim = 1")
            self.made = ConditionalAutoRegressiveNN(d, d + context, list(hidden), skip_connections=True,
                                                    permutation=torch.arange(d))
        for start in (self.made.layers[-1].weight, self.made.layers[-1].bias, self.made.skip_layer.weight):
            nn.init.zeros_(start)
        order = torch.arange(points * d)
        self.register_buffer("permutation", order.flip(0) if reverse else order, persistent=False)

    def get_permutation(self) -> Tensor:
        """The order of the flattened path's coordinates, (G d,)."""
        return self.permutation

    def forward(self, inputs: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        z = self._ordered(inputs).unflatten(-1, (-1, self.d))  # (..., G, d), points in the step's order
        encoding = context.flip(-2) if self.reverse else context
        previous = F.pad(z[..., :-1, :], (0, 0, 1, 0))  # z_{g−1}; 0 before the first point
        mean, log_scale = self.made(z, torch.cat([previous, encoding.expand(*z.shape[:-1], -1)], dim=-1))
        return self._ordered(mean.flatten(-2)), self._ordered(log_scale.flatten(-2))

    def _ordered(self, flat: Tensor) -> Tensor:
        """A flattened path (..., G d) in the step's order, or back: reversing the flat vector
        reverses the time and, within a point, the coordinates; it is its own inverse."""
        return flat.flip(-1) if self.reverse else flat


class PathIAFEncoder(nn.Module):
    """``x (B, T m [+ T m indicators]) ↦ q(z | x)`` over the grid path: the Gauss–Markov q of a
    :class:`~invae.paths.encoder.PathEncoder` followed by ``n_steps`` IAF steps (module docstring).

    Parameters
    ----------
    grid, substeps, m, d, start, hidden, layers, log1p, masked
        As :class:`~invae.paths.encoder.PathEncoder`'s, for the base q.
    n_steps : int
        K, the flow steps.
    context : int
        k, the width of the encoding c_g = W h_g each step reads.
    made_hidden : tuple of int or None
        Hidden widths of each point's MADE; None means (4 (2d + k),): four units per number it
        reads, as the row family's (4p,).
    """

    def __init__(self, grid: Tensor, substeps: int, m: int, d: int, start: tuple[Tensor, Tensor], *,
                 hidden: int = 64, layers: int = 1, log1p: bool = False, masked: bool = False, n_steps: int = 2,
                 context: int = 8, made_hidden: tuple[int, ...] | None = None):
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        super().__init__()
        self.base = PathEncoder(grid, substeps, m, d, start, hidden=hidden, layers=layers, log1p=log1p,
                                masked=masked)
        self.context = nn.Linear(2 * hidden, context)
        widths = tuple(made_hidden or (4 * (2 * d + context),))
        self.steps = nn.ModuleList(
            ConditionalAffineAutoregressive(PointwiseAutoregressive(len(grid), d, context, widths, reverse=t % 2 == 1))
            for t in range(n_steps))

    def standardize_with(self, x: Tensor) -> None:
        """The base encoder's input standardisation from the training rows x (n, row columns)."""
        self.base.standardize_with(x)

    def forward(self, x: Tensor, index: Tensor | None = None) -> TransformedDistribution:
        base, states = self.base.encode(x)
        encoding = self.context(states)  # c (B, G, k)
        return TransformedDistribution(base, [step.condition(encoding) for step in self.steps], validate_args=False)
