"""Gauss–Markov distributions over paths: Gaussians whose precision is block-tridiagonal in time.

A path z = (z_0, …, z_{T−1}), z_t ∈ R^d, one per series (n series), has the precision
Λ = L Lᵀ (Td × Td per series) with L lower block-bidiagonal: diagonal blocks D_t (lower
triangular, positive diagonal) and sub-diagonal blocks B_t = L_{t+1, t}, so that

    Λ_{t,t} = D_t D_tᵀ + B_{t−1} B_{t−1}ᵀ (B_{−1} = 0),   Λ_{t+1,t} = B_t D_tᵀ,   Λ_{t+s,t} = 0 (s ≥ 2).

This is the posterior family of Archer et al. (2015): a block-tridiagonal precision held by
its banded Cholesky factor. Then z = μ + L⁻ᵀ ε with ε ~ N(0, I_{Td}); as Lᵀ is upper
block-bidiagonal, the draw runs backwards in time,

    z_{T−1} − μ_{T−1} = D_{T−1}⁻ᵀ ε_{T−1},
    z_t − μ_t = A_t (z_{t+1} − μ_{t+1}) + D_t⁻ᵀ ε_t,    A_t = −D_t⁻ᵀ B_tᵀ,

i.e. q(z) = q(z_{T−1}) Π_t q(z_t | z_{t+1}), q(z_t | z_{t+1}) = N(μ_t + A_t (z_{t+1} − μ_{t+1}), C_t),
C_t = (D_t D_tᵀ)⁻¹. Every quantity below costs O(T d³) per series, never the dense O(T³ d³):

    log q(z) = −½ ‖Lᵀ (z − μ)‖² + Σ_t log det D_t − (T d / 2) log 2π,
    H[q]     = (T d / 2)(1 + log 2π) − Σ_t log det D_t,
    Σ_{T−1}  = C_{T−1},    Σ_t = A_t Σ_{t+1} A_tᵀ + C_t,    Cov(z_{t+1}, z_t) = Σ_{t+1} A_tᵀ,

with Σ_t = Cov(z_t). The last line is the selected inversion of Λ on its band: from
Lᵀ Σ = L⁻¹, lower block-triangular with diagonal blocks D_t⁻¹, the Takahashi recursions
(Takahashi, Fagan & Chen 1973; Rue 2005; Rue & Held 2005, ch. 2) for a block-bidiagonal factor.

References: E. Archer, I. M. Park, L. Buesing, J. Cunningham, L. Paninski (2015), "Black box
variational inference for state space models", arXiv:1511.07367. H. Rue (2005), "Marginal
variances for Gaussian Markov random fields", NTNU Statistics preprint 1/2005. H. Rue and
L. Held (2005), *Gaussian Markov Random Fields: Theory and Applications*, Chapman & Hall.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, MultivariateNormal, constraints

__all__ = ["GaussMarkov"]


def _check_shapes(loc: Tensor, diagonal_blocks: Tensor, subdiagonal_blocks: Tensor) -> None:
    """ValueError unless loc is (n, T, d) with T, d ≥ 1, D (n, T, d, d) and B (n, T − 1, d, d)."""
    if loc.ndim != 3 or loc.shape[1] < 1 or loc.shape[2] < 1:
        raise ValueError(f"loc must have shape (n, T, d) with T, d >= 1, got {tuple(loc.shape)}")
    n, steps, d = loc.shape
    if diagonal_blocks.shape != (n, steps, d, d):
        raise ValueError(f"diagonal_blocks must have shape (n, T, d, d) = {(n, steps, d, d)}, "
                         f"got {tuple(diagonal_blocks.shape)}")
    if subdiagonal_blocks.shape != (n, steps - 1, d, d):
        raise ValueError(f"subdiagonal_blocks must have shape (n, T - 1, d, d) = {(n, steps - 1, d, d)}, "
                         f"got {tuple(subdiagonal_blocks.shape)}")


def _run_backwards(transitions: Tensor, innovations: Tensor) -> Tensor:
    """The backward chain u_{T−1} = e_{T−1}, u_t = A_t u_{t+1} + e_t for t = T−2, …, 0.

    transitions A (n, T−1, d, d), innovations e (*S, n, T, d, k) → u (*S, n, T, d, k).
    """
    path = [innovations[..., -1, :, :]]
    for t in range(transitions.shape[-3] - 1, -1, -1):
        path.append(transitions[..., t, :, :] @ path[-1] + innovations[..., t, :, :])
    return torch.stack(path[::-1], dim=-3)


def _backward_covariances(transitions: Tensor, conditional: Tensor) -> Tensor:
    """Σ_{T−1} = C_{T−1}, Σ_t = A_t Σ_{t+1} A_tᵀ + C_t.

    transitions A (n, T−1, d, d), conditional covariances C (n, T, d, d) → Σ (n, T, d, d).
    """
    blocks = [conditional[..., -1, :, :]]
    for t in range(transitions.shape[-3] - 1, -1, -1):
        step = transitions[..., t, :, :]
        blocks.append(step @ blocks[-1] @ step.mT + conditional[..., t, :, :])
    return torch.stack(blocks[::-1], dim=-3)


class GaussMarkov(Distribution):
    """Gaussian over paths with precision L Lᵀ, L lower block-bidiagonal (module docstring).

    Batch shape (n,), event shape (T, d). Sampling is reparameterised (gradients reach all
    three parameters); ``log_prob``, ``entropy`` and the covariance blocks cost O(T d³).

    Parameters
    ----------
    loc : Tensor
        μ, the mean path, (n, T, d).
    diagonal_blocks : Tensor
        D_t = L_{t,t}, (n, T, d, d), lower triangular with a positive diagonal (the caller maps
        unconstrained values there, e.g. softplus or exp on the diagonal).
    subdiagonal_blocks : Tensor
        B_t = L_{t+1,t}, (n, T − 1, d, d), unconstrained.
    """

    arg_constraints = {"loc": constraints.independent(constraints.real, 2),
                       "diagonal_blocks": constraints.independent(constraints.lower_cholesky, 1),
                       "subdiagonal_blocks": constraints.independent(constraints.real, 3)}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, loc: Tensor, diagonal_blocks: Tensor, subdiagonal_blocks: Tensor,
                 validate_args: bool | None = None):
        _check_shapes(loc, diagonal_blocks, subdiagonal_blocks)
        self.loc, self.diagonal_blocks, self.subdiagonal_blocks = loc, diagonal_blocks, subdiagonal_blocks
        super().__init__(loc.shape[:1], loc.shape[1:], validate_args=validate_args)

    @property
    def mean(self) -> Tensor:
        """μ, (n, T, d)."""
        return self.loc

    @property
    def variance(self) -> Tensor:
        """Var(z_{t,j}), (n, T, d): :meth:`marginal_variances`."""
        return self.marginal_variances()

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """z = μ + L⁻ᵀ ε, ε ~ N(0, I), by one backward block substitution; (*sample_shape, n, T, d)."""
        noise = torch.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device)
        innovations = torch.linalg.solve_triangular(self.diagonal_blocks.mT, noise.unsqueeze(-1), upper=True)
        return self.loc + _run_backwards(self._transitions(), innovations).squeeze(-1)

    def log_prob(self, value: Tensor) -> Tensor:
        """log q(z) = −½ ‖Lᵀ (z − μ)‖² + Σ_t log det D_t − (T d / 2) log 2π: z (*S, n, T, d) → (*S, n)."""
        if self._validate_args:
            self._validate_sample(value)
        white = self._whiten(value - self.loc)
        size = self.loc.shape[1:].numel()
        return -0.5 * white.square().sum((-2, -1)) + self._log_det() - 0.5 * size * math.log(2 * math.pi)

    def entropy(self) -> Tensor:
        """H[q] = (T d / 2)(1 + log 2π) − Σ_t log det D_t, (n,)."""
        return 0.5 * self.loc.shape[1:].numel() * (1 + math.log(2 * math.pi)) - self._log_det()

    def covariance_blocks(self) -> Tensor:
        """Σ_t = Cov(z_t), (n, T, d, d), by the backward recursion Σ_t = A_t Σ_{t+1} A_tᵀ + C_t."""
        return _backward_covariances(self._transitions(), torch.cholesky_inverse(self.diagonal_blocks))

    def marginal_variances(self) -> Tensor:
        """Var(z_{t,j}) = (Σ_t)_{jj}, (n, T, d), from :meth:`covariance_blocks`."""
        return self.covariance_blocks().diagonal(dim1=-2, dim2=-1)

    def lag_one_covariances(self) -> Tensor:
        """Cov(z_{t+1}, z_t) = Σ_{t+1} A_tᵀ, (n, T − 1, d, d): E[(z_{t+1} − μ_{t+1})(z_t − μ_t)ᵀ]."""
        return self.covariance_blocks()[:, 1:] @ self._transitions().mT

    def to_dense(self) -> MultivariateNormal:
        """The same law over the flattened path z.reshape(n, T d) (index t d + j), precision L Lᵀ.

        O(T³ d³): for tests and small cases.
        """
        n, steps, d = self.loc.shape
        time = torch.arange(steps, device=self.loc.device)
        blocks = self.loc.new_zeros(n, steps, steps, d, d)
        blocks[:, time, time] = self.diagonal_blocks
        blocks[:, time[1:], time[:-1]] = self.subdiagonal_blocks
        factor = blocks.transpose(2, 3).reshape(n, steps * d, steps * d)
        return MultivariateNormal(self.loc.reshape(n, steps * d), precision_matrix=factor @ factor.mT,
                                  validate_args=self._validate_args)

    def _transitions(self) -> Tensor:
        """A_t = −D_t⁻ᵀ B_tᵀ, (n, T − 1, d, d)."""
        head = self.diagonal_blocks[:, :-1].mT
        return -torch.linalg.solve_triangular(head, self.subdiagonal_blocks.mT, upper=True)

    def _whiten(self, centred: Tensor) -> Tensor:
        """Lᵀ u, block t: D_tᵀ u_t + B_tᵀ u_{t+1} (no B term at t = T−1); u (*S, n, T, d) → same shape."""
        diagonal = (self.diagonal_blocks.mT @ centred.unsqueeze(-1)).squeeze(-1)
        coupling = (self.subdiagonal_blocks.mT @ centred[..., 1:, :].unsqueeze(-1)).squeeze(-1)
        return diagonal + F.pad(coupling, (0, 0, 0, 1))

    def _log_det(self) -> Tensor:
        """Σ_t log det D_t = Σ_{t,j} log (D_t)_{jj}, (n,)."""
        return self.diagonal_blocks.diagonal(dim1=-2, dim2=-1).log().sum((-2, -1))
