"""Posterior families ``q_φ(z | x)``: modules whose ``forward(x, index)`` returns a distribution.

``x`` is a batch of observations (B, m) and ``index`` (B,) their row numbers in the data;
an amortized encoder reads ``x`` only, per-observation (mean-field) factors read ``index``
only. The distribution has batch shape (B,), event shape (p,), and supports ``rsample`` and
``log_prob``; Gaussian families also give ``mean``, ``stddev`` and ``entropy`` in closed
form, flows through :func:`moments` by Monte Carlo.

=====================  =====================================  ===============================
family                 q(z | x)                               module
=====================  =====================================  ===============================
``diagonal``           N(μ(x), diag σ(x)²)                    :class:`GaussianEncoder`
``full-covariance``    N(μ(x), L(x) L(x)ᵀ), L lower-triang.   :class:`FullCovarianceEncoder`
``low-rank``           N(μ(x), diag d(x)² + U(x) U(x)ᵀ)       :class:`LowRankEncoder`
``iaf``                diagonal base + T IAF steps (§2.3)     :class:`IAFEncoder`
``mean-field``         N(μ_i, diag σ_i²), free per row        :class:`MeanFieldFactors`
``mixture``            Σ_c w_c(x) N(μ_c(x), L_c(x)L_c(x)ᵀ)    :class:`MixtureEncoder`
=====================  =====================================  ===============================
"""

from __future__ import annotations

import math

import torch
from pyro.distributions.transforms import ConditionalAffineAutoregressive
from pyro.nn import ConditionalAutoRegressiveNN
from torch import Tensor, nn
from torch.distributions import (Categorical, Distribution, Independent, LowRankMultivariateNormal, MixtureSameFamily,
                                 MultivariateNormal, Normal, TransformedDistribution)

from ..model.ggm import GaussianGraphicalModel
from ..model.likelihoods import GaussianLikelihood
from ..model.rows import RowMoments
from ..references.exact import exact_posterior, has_exact_evidence, mean_field_optimum
from .parallel import Shard

__all__ = ["GaussianEncoder", "FullCovarianceEncoder", "LowRankEncoder", "IAFEncoder", "MixtureEncoder", "MeanFieldFactors",
           "moments"]

_INIT_LOG_STD = -1.0  # q starts narrower than a unit prior, so early z draws are not all noise


def _start_spread_at(linear: nn.Linear, outputs: Tensor | slice) -> None:
    """Make the trunk's linear map start every x at the spread e^{_INIT_LOG_STD}: zero weights
    and bias _INIT_LOG_STD on ``outputs``. A random linear start would give an outlying x
    (10 sds out) a log-scale of ±5: draws ~150 sds wide, which overflow exp(η) in a Poisson
    likelihood in float32 (measured: a fit of counts then diverged at its second iteration)."""
    with torch.no_grad():
        linear.weight[outputs] = 0.0
        linear.bias[outputs] = _INIT_LOG_STD


def _diagonal_normal(mean: Tensor, log_std: Tensor) -> Distribution:
    return Independent(Normal(mean, log_std.exp(), validate_args=False), 1, validate_args=False)


def _one_gaussian_posterior(prior, likelihood) -> bool:
    """Whether every row's exact posterior is one Gaussian ``N(m_i, P_i⁻¹)``: a Gaussian graphical
    prior and a linear-Gaussian likelihood."""
    return isinstance(prior, GaussianGraphicalModel) and has_exact_evidence(prior, likelihood)


def _sees_every_direction(likelihood, p: int) -> bool:
    """rank A = p. With m < p the likelihood is flat along A's null space: a diagonal family's
    optimum runs away there (EM with a diagonal E-step diverges) and exact EM crawls (not
    converged after 1000 iterations), where Adam's steps on a full q stop short with a better Λ̂
    (docs/benchmarks.md, bench_vae's compressive rows). So closed-form q-steps need rank A = p."""
    return likelihood.forward.rank == p


def _affine_posterior(prior, likelihood) -> bool:
    """Whether the exact posterior is ``N(K x, Σ)``, ``K = Σ Aᵀ D⁻¹``, with K and Σ the same for
    every row, so that an encoder's linear map holds it, and rank A = p
    (:func:`_sees_every_direction`): one Gaussian posterior and one noise level for all rows (a
    :class:`~invae.model.likelihoods.GaussianLikelihood`, not one σ_i per row)."""
    return (_one_gaussian_posterior(prior, likelihood) and isinstance(likelihood, GaussianLikelihood)
            and _sees_every_direction(likelihood, prior.dim))


def _basis_rows(like: Tensor) -> Tensor:
    """The data rows 0, e_1, …, e_r (1 + r, r) of ``like`` (n, r)'s row space, in its dtype and
    device. The exact posterior mean of an affine posterior (:func:`_affine_posterior`) is
    affine in the row (x_i, c_i) (``K x_i + Σ Λ η_i``, η_i = μ + B c_i), so its value at 0 is
    the offset and its values at the e_j, less that, are the map's columns (:func:`_affine_map`)."""
    return torch.cat([like.new_zeros(1, like.shape[1]), torch.eye(like.shape[1], dtype=like.dtype,
                                                                   device=like.device)])


def _affine_map(means: Tensor) -> tuple[Tensor, Tensor]:
    """(W (p, r), b (p,)) of the affine map whose values at :func:`_basis_rows` are ``means`` (1 + r, p)."""
    return (means[1:] - means[0]).mT, means[0]


class _Trunk(nn.Module):
    """The shared encoder body: ``x ↦ L(x̃) + MLP(x̃)`` with ``x̃ = (u(x) − shift)/scale``, (B, m) → (B, k).

    A linear map plus an MLP correction, because for linear-Gaussian models the exact
    posterior mean is linear in x and its (co)variance constant. The MLP's last layer
    starts at zero, so the trunk starts as the linear map alone. ``shift`` and ``scale``
    standardise u(x) by the training data (:meth:`standardize_with`); u is the identity,
    or ``log(1 + x)`` with ``log1p=True`` (counts: see ``Likelihood.encoder_log1p``) on all but
    the last ``raw_columns`` columns (read as they are: a count likelihood's offsets, a prior's
    covariates, :mod:`invae.model.rows`).
    """

    def __init__(self, m: int, k: int, hidden: tuple[int, ...], log1p: bool = False, raw_columns: int = 0):
        super().__init__()
        self.log1p, self.counts = log1p, m - raw_columns
        self.register_buffer("shift", torch.zeros(m))
        self.register_buffer("scale", torch.ones(m))
        self.linear = nn.Linear(m, k)
        layers: list[nn.Module] = []
        width = m
        for size in hidden:
            layers += [nn.Linear(width, size), nn.SiLU()]
            width = size
        last = nn.Linear(width, k)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(*layers, last)

    def standardize_with(self, x: Tensor, shard: Shard | None = None) -> None:
        """Shift and scale u(x) by its columns' means and sds over the training rows x (n, m), in
        float64, block by block (:class:`~invae.model.rows.RowMoments`: bounded memory for any n);
        x: ``shard``'s rows of a parallel fit (:mod:`invae.inference.parallel`), where given."""
        moments = RowMoments.of(x, read=self._read, diagonal=True)
        if shard is not None:
            moments = shard.merge(moments)
        self.shift.copy_(moments.mean)
        spread = (moments.scatter / max(moments.count - 1, 1)).sqrt()  # torch.std's n − 1
        # a column constant in the training data (a mask never 0, one offset for all) gets scale 1:
        # every training row reads 0 there either way, and a new row's other value stays finite
        self.scale.copy_(torch.where(spread > 1e-12, spread, torch.ones_like(spread)))

    def forward(self, x: Tensor) -> Tensor:
        h = (self._read(x) - self.shift) / self.scale
        return self.linear(h) + self.mlp(h)

    def _read(self, x: Tensor) -> Tensor:
        """u(x) (class docstring)."""
        if not self.log1p:
            return x
        return torch.cat([torch.log1p(x[..., : self.counts]), x[..., self.counts :]], dim=-1)

    @torch.no_grad()
    def set_affine(self, weight: Tensor, bias: Tensor) -> None:
        """Make the trunk the affine map ``x ↦ W x + b`` of raw inputs (u the identity), W (k, m),
        b (k,): its linear map in standardised inputs, ``W diag(scale) h + W shift + b``, and the
        MLP's last layer zero."""
        if self.log1p:
            raise ValueError("an encoder that reads log(1 + x) holds no affine map of x")
        self.linear.weight.copy_(weight * self.scale)
        self.linear.bias.copy_(bias + weight @ self.shift)
        self.mlp[-1].weight.zero_()
        self.mlp[-1].bias.zero_()


class _Encoder(nn.Module):
    """An amortized family: a :class:`_Trunk` whose k outputs parameterise q(z|x)."""

    def __init__(self, m: int, p: int, k: int, hidden: tuple[int, ...], log1p: bool = False, raw_columns: int = 0):
        super().__init__()
        self.p = p
        self.trunk = _Trunk(m, k, hidden, log1p, raw_columns)

    def standardize_with(self, x: Tensor, shard: Shard | None = None) -> None:
        """Set the input standardisation from training data x (n, m) (``shard``'s rows: :meth:`_Trunk.standardize_with`)."""
        self.trunk.standardize_with(x, shard)


class GaussianEncoder(_Encoder):
    """Amortized diagonal Gaussian ``q(z|x) = N(μ(x), diag σ(x)²)`` (docs/methods.md §2.2).

    The trunk emits ``(μ, log σ)``, 2p numbers per observation.

    Parameters
    ----------
    m, p : int
        Observed and latent dimensions.
    hidden : tuple of int
        Widths of the trunk MLP's hidden layers (SiLU activations).
    log1p : bool
        Read the data as ``log(1 + x)`` (counts); every encoder takes this option.
    raw_columns : int
        The last columns of a row, never read as counts (offsets, a prior's covariates); every
        encoder takes this option.
    """

    def __init__(self, m: int, p: int, hidden: tuple[int, ...] = (128, 128), *, log1p: bool = False,
                 raw_columns: int = 0):
        super().__init__(m, p, 2 * p, hidden, log1p, raw_columns)
        _start_spread_at(self.trunk.linear, slice(p, 2 * p))

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        out = self.trunk(x)
        return _diagonal_normal(out[..., : self.p], out[..., self.p :])

    #: Whether :meth:`set_to_optimum` applies (:func:`_affine_posterior`).
    has_closed_form = staticmethod(_affine_posterior)

    @torch.no_grad()
    def set_to_optimum(self, x: Tensor, prior, likelihood) -> None:
        """The encoder at its optimum given the prior, for every x: the best diagonal Gaussian
        for ``N(K x, Σ)`` is ``μ(x) = K x``, ``σ_j² = 1/(Σ⁻¹)_jj``
        (:func:`~invae.references.exact.mean_field_optimum`), an affine map that the trunk's
        linear map holds (:func:`_basis_rows`). x (n, r): the data rows (dtype, device)."""
        means, variance, _ = mean_field_optimum(_basis_rows(x), prior, likelihood)
        (gain, offset), log_std = _affine_map(means), 0.5 * variance.log()
        self.trunk.set_affine(torch.cat([gain, torch.zeros_like(gain)]), torch.cat([offset, log_std]))


def _start_cholesky_at(linear: nn.Linear, first: int, rows: Tensor, cols: Tensor) -> None:
    """Start the Cholesky entries ``first : first + p(p+1)/2`` of the trunk's linear map at
    L = e^{_INIT_LOG_STD} I for every x: zero weights, diagonal raw entries _INIT_LOG_STD,
    off-diagonal 0 (see :func:`_start_spread_at`)."""
    entries = slice(first, first + len(rows))
    _start_spread_at(linear, entries)
    with torch.no_grad():
        linear.bias[entries][rows != cols] = 0.0


_LOG_SCALE_BOUND = 7.0
_LOW_RANK_START = 0.1  # U's start, relative to the diagonal's e^{_INIT_LOG_STD}
_NEAREST_LOG_SCALE = _LOG_SCALE_BOUND * (1 - 1e-6)  # atanh(±1) is infinite: stay just inside the bound


def _scale_tril(entries: Tensor, rows: Tensor, cols: Tensor, p: int) -> Tensor:
    """Lower-triangular (..., p, p) from its p(p+1)/2 raw entries (..., p(p+1)/2); the
    diagonal is ``exp(B tanh(r / B))`` of its raw entries r, B = 7: L is invertible, and
    its diagonal stays within e^{±7} (≈ r itself for |r| ≤ 2). The bound keeps an
    outlying x, on which the trunk's linear map extrapolates, from a collapsed or exploded
    factor (docs/benchmarks.md, "Stable fits of counts")."""
    batch = entries.shape[:-1]
    # index_copy_ into the flattened matrix: 3–7 × faster on CPU than scattering by (row, col)
    raw = entries.new_zeros(*batch, p * p).index_copy_(-1, rows * p + cols, entries).view(*batch, p, p)
    log_diagonal = _LOG_SCALE_BOUND * torch.tanh(raw.diagonal(dim1=-2, dim2=-1) / _LOG_SCALE_BOUND)
    return torch.diagonal_scatter(raw, log_diagonal.exp(), dim1=-2, dim2=-1)


def _raw_entries(scale_tril: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """The raw entries (p(p+1)/2,) that :func:`_scale_tril` maps to this lower-triangular factor
    (p, p): ``r = B atanh(log L_jj / B)`` on the diagonal. A diagonal beyond e^{±B} (which
    ``_scale_tril`` cannot reach) is taken at the family's nearest member, just inside."""
    log_diagonal = scale_tril.diagonal().log().clamp(-_NEAREST_LOG_SCALE, _NEAREST_LOG_SCALE)
    diagonal = _LOG_SCALE_BOUND * torch.atanh(log_diagonal / _LOG_SCALE_BOUND)
    return torch.diagonal_scatter(scale_tril, diagonal)[rows, cols]


class FullCovarianceEncoder(_Encoder):
    """Amortized Gaussian with a full covariance, ``q(z|x) = N(μ(x), L(x) L(x)ᵀ)``.

    The trunk emits μ (p) and the p(p+1)/2 lower-triangular entries of the Cholesky factor
    L, whose diagonal is ``exp`` of its raw entries (so L is invertible). For a
    linear-Gaussian model this family holds the exact posterior: by default it is set there
    (:meth:`set_to_optimum`, where rank A = p); trained by Adam (``closed_form=False``), its
    ELBO gap measures optimisation alone — the yardstick for the diagonal and IAF families.
    """

    def __init__(self, m: int, p: int, hidden: tuple[int, ...] = (128, 128), *, log1p: bool = False,
                 raw_columns: int = 0):
        rows, cols = torch.tril_indices(p, p)
        super().__init__(m, p, p + len(rows), hidden, log1p, raw_columns)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        _start_cholesky_at(self.trunk.linear, p, rows, cols)

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        out = self.trunk(x)
        scale_tril = _scale_tril(out[..., self.p :], self.rows, self.cols, self.p)
        return MultivariateNormal(out[..., : self.p], scale_tril=scale_tril, validate_args=False)

    #: Whether :meth:`set_to_optimum` applies (:func:`_affine_posterior`); this family holds the posterior.
    has_closed_form = staticmethod(_affine_posterior)

    @torch.no_grad()
    def set_to_optimum(self, x: Tensor, prior, likelihood) -> None:
        """The encoder at the exact posterior ``N(K x + Σ Λ η, Σ)`` for every row (KL zero): an
        affine μ (:func:`_basis_rows`) and L = chol Σ, constant. x (n, r): the data rows (dtype, device)."""
        means, cov = exact_posterior(_basis_rows(x), prior, likelihood)
        (gain, offset), entries = _affine_map(means), _raw_entries(torch.linalg.cholesky(cov), self.rows, self.cols)
        self.trunk.set_affine(torch.cat([gain, gain.new_zeros(len(entries), gain.shape[1])]),
                              torch.cat([offset, entries]))


class LowRankEncoder(_Encoder):
    """Amortized Gaussian with a low-rank-plus-diagonal covariance,
    ``q(z|x) = N(μ(x), diag d(x)² + U(x) U(x)ᵀ)``, U (p, k).

    The trunk emits μ (p), log d (p; bounded to ±7 as the Cholesky diagonal of
    :func:`_scale_tril`) and U's p·k entries: p(k + 2) numbers per row, against the full
    covariance's p + p(p+1)/2 (at p = 1 000 and k = 8: 10⁴ against 5 · 10⁵). It holds every
    posterior whose covariance is a diagonal plus rank k (k ≥ p: every Gaussian). Its ELBO takes
    draws (torch's ``LowRankMultivariateNormal``: entropy and log-density through the k × k
    capacitance matrix, O(p k²) per row); its Λ-step statistics are closed form
    (:func:`~invae.inference.lambda_steps.expected_statistics`). U starts small and random, the
    same for every x: at U = 0 the ELBO's gradient in U vanishes (U enters through U Uᵀ).
    """

    def __init__(self, m: int, p: int, hidden: tuple[int, ...] = (128, 128), rank: int = 8, *,
                 log1p: bool = False, raw_columns: int = 0):
        if rank < 1:
            raise ValueError(f"the low-rank family needs a rank >= 1, got {rank}")
        super().__init__(m, p, p * (rank + 2), hidden, log1p, raw_columns)
        self.rank = rank
        _start_spread_at(self.trunk.linear, slice(p, 2 * p))
        with torch.no_grad():
            factor = self.trunk.linear.bias[2 * p :]
            self.trunk.linear.weight[2 * p :] = 0.0
            factor.copy_(_LOW_RANK_START * math.exp(_INIT_LOG_STD) * torch.randn_like(factor))

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        out = self.trunk(x)
        p = self.p
        log_d = _LOG_SCALE_BOUND * torch.tanh(out[..., p : 2 * p] / _LOG_SCALE_BOUND)
        factor = out[..., 2 * p :].unflatten(-1, (p, self.rank))
        return LowRankMultivariateNormal(out[..., :p], factor, (2 * log_d).exp(), validate_args=False)


class MixtureEncoder(_Encoder):
    """A mixture of full-covariance Gaussians, ``q(z|x) = Σ_c w_c(x) N(μ_c(x), L_c(x) L_c(x)ᵀ)``.

    It holds multimodal posteriors, e.g. under a Gaussian-mixture prior where x does not
    tell which component z came from: there the exact posterior of a linear-Gaussian model
    is a K-component mixture of Gaussians, which this family contains. The trunk emits K
    logits and, per component, μ_c (p) and L_c's p(p+1)/2 entries. The ELBO sums over c
    exactly (:func:`invae.inference.objectives.elbo`), so no discrete draw needs a gradient. Components
    start at means spread by the trunk's random linear map, so they do not coincide.

    Parameters
    ----------
    m, p : int
        Observed and latent dimensions.
    components : int
        The number of mixture components of q.
    hidden : tuple of int
        Widths of the trunk MLP's hidden layers.
    """

    def __init__(self, m: int, p: int, hidden: tuple[int, ...] = (128, 128), components: int = 2, *,
                 log1p: bool = False, raw_columns: int = 0):
        if components < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        rows, cols = torch.tril_indices(p, p)
        self.components, self.per_component = components, p + len(rows)
        super().__init__(m, p, components * (1 + self.per_component), hidden, log1p, raw_columns)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        for c in range(components):
            _start_cholesky_at(self.trunk.linear, components + c * self.per_component + p, rows, cols)
        with torch.no_grad():
            self.trunk.linear.weight[:components] = 0.0  # equal weights w_c at the start, for every x
            self.trunk.linear.bias[:components] = 0.0

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        out = self.trunk(x)
        logits = out[..., : self.components]
        parts = out[..., self.components :].unflatten(-1, (self.components, self.per_component))
        scale_tril = _scale_tril(parts[..., self.p :], self.rows, self.cols, self.p)
        component = MultivariateNormal(parts[..., : self.p], scale_tril=scale_tril, validate_args=False)
        return MixtureSameFamily(Categorical(logits=logits, validate_args=False), component, validate_args=False)


class IAFEncoder(_Encoder):
    """Inverse autoregressive flow posterior (docs/methods.md §2.3).

        (μ_0, log σ_0, h) = trunk(x),   z_0 = μ_0 + σ_0 ∘ ε_0,   ε_0 ~ N(0, I)
        for t = 1..T:  (m_t, s_t) = MADE_t(z_{t−1}, h),  σ_t = sigmoid(s_t + 2),
                       z_t = σ_t ∘ z_{t−1} + (1 − σ_t) ∘ m_t
        log q(z_T | x) = − Σ_j [ ½ ε_{0,j}² + ½ log 2π + Σ_{t=0..T} log σ_{t,j} ]

    Each step is Pyro's ``ConditionalAffineAutoregressive(stable=True)``, which is exactly
    this sigmoid-gated update (the +2 is its ``sigmoid_bias``: each step starts close to the
    identity, σ_t ≈ 0.88); Pyro is maintained and zuko has no gated IAF, so we use it
    rather than rewrite a MADE. The autoregressive order is reversed between steps, and each
    MADE has a linear skip connection, so one step already holds every Gaussian q.
    ``log_prob`` is exact (change of variables) for draws from ``rsample``, whose
    per-step scales Pyro caches; the test suite checks it against an autograd Jacobian.
    Any other point would need Pyro's sequential inversion (p passes per step, and
    numerically fragile when gates are small): invae only ever scores q's own draws.

    Parameters
    ----------
    m, p : int
        Observed and latent dimensions (p ≥ 2: a 1-D flow step is a mere affine map).
    hidden : tuple of int
        Hidden widths of the trunk MLP.
    n_steps : int
        T, the number of flow steps.
    context : int
        Size of the context h fed to every MADE.
    made_hidden : tuple of int or None
        Hidden widths of each MADE (each ≥ p); ``None`` means ``(4p,)``.
    """

    def __init__(self, m: int, p: int, hidden: tuple[int, ...] = (128, 128), n_steps: int = 2,
                 context: int = 16, made_hidden: tuple[int, ...] | None = None, log1p: bool = False,
                 raw_columns: int = 0):
        if p < 2:
            raise ValueError(f"the IAF family needs p >= 2 latent dimensions, got p = {p}")
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        super().__init__(m, p, 2 * p + context, hidden, log1p, raw_columns)
        made_hidden = list(made_hidden or (4 * p,))
        order = torch.arange(p)
        self.steps = nn.ModuleList(
            ConditionalAffineAutoregressive(
                ConditionalAutoRegressiveNN(p, context, made_hidden, skip_connections=True,
                                            permutation=order if t % 2 == 0 else order.flip(0)),
                stable=True)
            for t in range(n_steps))
        _start_spread_at(self.trunk.linear, slice(p, 2 * p))

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        out = self.trunk(x)
        base = _diagonal_normal(out[..., : self.p], out[..., self.p : 2 * self.p])
        context = out[..., 2 * self.p :]
        return TransformedDistribution(base, [step.condition(context) for step in self.steps],
                                       validate_args=False)


class MeanFieldFactors(nn.Module):
    """Non-amortized mean-field VI: one free ``N(μ_i, diag σ_i²)`` per observation, (n, p) each.

    Where the exact posterior is Gaussian, ``N(m_i, P_i⁻¹)`` (a Gaussian graphical prior and
    a linear-Gaussian likelihood), the factors' optimum given Λ is closed form: minimising
    ``KL(q_i ‖ p(z | x_i))`` over diagonal Gaussians gives the exact means μ_i = m_i and
    variances σ_ij² = 1 / (P_i)_jj (:func:`~invae.references.exact.mean_field_optimum`). The
    trainer then sets them there (:meth:`set_to_optimum`) instead of taking Adam steps.
    """

    def __init__(self, n: int, p: int):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(n, p))
        self.log_std = nn.Parameter(torch.full((n, p), _INIT_LOG_STD))

    def forward(self, x: Tensor, index: Tensor) -> Distribution:
        return _diagonal_normal(self.mean[index], self.log_std[index])

    @staticmethod
    def has_closed_form(prior, likelihood) -> bool:
        """Whether :meth:`set_to_optimum` applies: the exact posterior is one Gaussian and the
        measurement sees every direction of z (rank A = p: :func:`_sees_every_direction`)."""
        return _one_gaussian_posterior(prior, likelihood) and _sees_every_direction(likelihood, prior.dim)

    @torch.no_grad()
    def set_to_optimum(self, x: Tensor, prior, likelihood) -> None:
        """Every factor at its optimum given the prior (class docstring); x (n, m) all rows, in order."""
        mean, variance, _ = mean_field_optimum(x, prior, likelihood)
        self.mean.copy_(mean)
        self.log_std.copy_((0.5 * variance.log()).expand_as(mean))


@torch.no_grad()
def moments(q: Distribution, n_draws: int = 256, chunk: int = 16) -> tuple[Tensor, Tensor]:
    """Means and marginal standard deviations of q, each of batch shape + (p,).

    Exact where q has them in closed form; otherwise Monte Carlo over ``n_draws`` draws,
    taken ``chunk`` at a time to bound memory (standard error of a mean: sd/√n_draws).
    """
    try:
        return q.mean, q.stddev
    except NotImplementedError:
        pass
    shift = q.sample()  # sums of squares about one draw: no cancellation in float32
    total = total_sq = 0.0
    for start in range(0, n_draws, chunk):
        z = q.sample((min(chunk, n_draws - start),)) - shift
        total = total + z.sum(0)
        total_sq = total_sq + z.square().sum(0)
    mean = total / n_draws
    var = (total_sq / n_draws - mean.square()) * n_draws / (n_draws - 1)
    return shift + mean, var.clamp_min(0).sqrt()


@torch.no_grad()
def marginal_cdf(q: Distribution, threshold: float | Tensor = 0.0, n_draws: int = 1024, chunk: int = 16) -> Tensor:
    """``P(z_j ≤ t)`` under q for every coordinate j, batch shape + (p,); ``threshold`` t is a
    number or a tensor that broadcasts against batch shape + (p,) (e.g. (n, 1): one per row).

    Exact for the Gaussian families (``Φ((t − μ_j)/σ_j)``) and for a mixture of Gaussians
    (``Σ_c w_c Φ((t − μ_cj)/σ_cj)``); otherwise the fraction of ``n_draws`` draws at or
    below t (Monte Carlo sd ≤ 0.5/√n_draws).
    """
    if isinstance(q, MixtureSameFamily):
        component = q.component_distribution
        weights = q.mixture_distribution.probs.unsqueeze(-1)  # (..., K, 1)
        per_component = torch.as_tensor(threshold, dtype=weights.dtype, device=weights.device)
        per_component = per_component.unsqueeze(-2) if per_component.ndim else per_component
        return (weights * _gaussian_cdf(component, per_component)).sum(-2)
    try:
        return _gaussian_cdf(q, threshold)
    except NotImplementedError:
        pass
    below = 0.0
    for start in range(0, n_draws, chunk):
        z = q.sample((min(chunk, n_draws - start),))
        below = below + (z <= threshold).to(z.dtype).sum(0)
    return below / n_draws


def _gaussian_cdf(q: Distribution, threshold: float | Tensor) -> Tensor:
    """Φ((t − μ)/σ) per coordinate for a Gaussian q (diagonal, full or low-rank); NotImplementedError otherwise."""
    if isinstance(q, (MultivariateNormal, LowRankMultivariateNormal)) or (
            isinstance(q, Independent) and isinstance(q.base_dist, Normal)):
        return Normal(q.mean, q.stddev).cdf(torch.as_tensor(threshold, dtype=q.mean.dtype, device=q.mean.device))
    raise NotImplementedError
