"""Exact filtering and smoothing of linear-Gaussian state-space models: the reference for
latent paths whose prior is a linear SDE seen on a time grid (issue 21).

Model, for each of n independent series observed at T times,

    z_0 ~ N(m0, P0),    z_{k+1} = F_k z_k + c_k + w_k,   w_k ~ N(0, Q_k)    (k = 0, …, T−2),
    x_k = H z_k + v_k,  v_k ~ N(0, diag(r)),

where any entry of x may be missing (NaN). The Kalman filter gives p(z_k | x_{0:k}) and the
evidence log p(x_{0:T−1}) by the prediction-error decomposition; the Rauch–Tung–Striebel
smoother gives p(z_k | x_{0:T−1}) and the lag-one covariances of EM's M-step (Särkkä,
*Bayesian Filtering and Smoothing*, 2013, Theorems 4.3 and 8.2, and ch. 12 for the lag-one
term).

Missing entries. With o the indicators of the entries observed at a (series, time) and
O = diag(o), the update uses the masked innovation covariance and residual

    S̃ = O (H P Hᵀ + diag(r)) O + (I − O),        ỹ = O (x − H m)    (0 where missing).

S̃ is block-diagonal, the observed block S_OO and the identity, so the gain K = P Hᵀ O S̃⁻¹
has zero columns at the missing entries and equals the gain from the observed rows of H
and r alone, and ỹᵀ S̃⁻¹ ỹ, log det S̃ are those of the observed block. Every missingness
pattern then shares one batched Cholesky factorisation: no loop over series.

A diffuse start. When the start z_0 is unknown without a law (a flat, improper prior, the limit
of N(0, κ I) as κ → ∞), the evidence is ``∫ p(x | z_0) dz_0``. The filter starts from N(0, κ I)
with a finite κ and adds (d/2) log(2π κ), the normaliser of that start:

    log p_κ(x) + (d/2) log(2π κ) = log ∫ p(x | z_0) exp(−|z_0|² / 2κ) dz_0,

whose gap to the flat evidence is at most (|a|² + tr B⁻¹) / 2κ nats for p(x | z_0) ∝
N(z_0; a, B⁻¹). κ is 10⁷ × (1 + the series' mean square observation + the largest noise
variance) / λ_min(Hᵀ H), so the gap is O(10⁻⁷) nats while S stays within float64's reach
(a condition number near 10⁷, where a larger κ would cost digits in the gain). H must have
full column rank: otherwise some direction of z_0 is never determined and the evidence is infinite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

__all__ = ["LinearGaussianSSM", "FilterResult", "SmootherResult", "kalman_filter", "rts_smoother"]

_PER_SERIES_RANK = {"m0": 1, "P0": 2, "F": 3, "c": 2, "Q": 3}  # rank of each parameter without its series axis


@dataclass(frozen=True)
class LinearGaussianSSM:
    """The linear-Gaussian state-space model of the module docstring, d latent and m observed
    coordinates, T times.

    ``m0`` (d,) or (n, d); ``P0`` (d, d) or (n, d, d); ``F`` (T−1, d, d) or (n, T−1, d, d);
    ``c`` (T−1, d) or (n, T−1, d); ``Q`` (T−1, d, d) or (n, T−1, d, d); ``H`` (m, d);
    ``r`` (m,), the noise variances. A parameter without the leading n is shared by every
    series; :meth:`batched` expands them all. P0 and every Q_k must be positive definite.
    ``diffuse``: z_0 has the flat start of the module docstring, and m0, P0 are not read.
    """

    m0: Tensor
    P0: Tensor
    F: Tensor
    c: Tensor
    Q: Tensor
    H: Tensor
    r: Tensor
    diffuse: bool = False

    def __post_init__(self) -> None:
        _check_shapes(self)

    @property
    def state_dim(self) -> int:
        """d."""
        return self.H.shape[1]

    @property
    def obs_dim(self) -> int:
        """m."""
        return self.H.shape[0]

    @property
    def steps(self) -> int:
        """T, the number of times."""
        return self.F.shape[-3] + 1

    @property
    def series(self) -> int | None:
        """n when some parameter is given per series, else None."""
        sizes = {getattr(self, k).shape[0] for k, rank in _PER_SERIES_RANK.items() if getattr(self, k).ndim > rank}
        return sizes.pop() if sizes else None

    def batched(self, x: Tensor) -> LinearGaussianSSM:
        """This model for the data x (n, T, m): m0 (n, d), P0 (n, d, d), F and Q (n, T−1, d, d),
        c (n, T−1, d), and every parameter in x's dtype and device."""
        _check_data(x, self)
        n = x.shape[0]
        expanded = {k: getattr(self, k).to(x).expand(n, *getattr(self, k).shape[-rank:])
                    for k, rank in _PER_SERIES_RANK.items()}
        return replace(self, H=self.H.to(x), r=self.r.to(x), **expanded)


def _check_shapes(model: LinearGaussianSSM) -> None:
    """ValueError unless the parameters have the shapes of :class:`LinearGaussianSSM`."""
    if model.H.ndim != 2 or model.F.ndim not in (3, 4):
        raise ValueError(f"H must be (m, d) and F (T-1, d, d) or (n, T-1, d, d), got {tuple(model.H.shape)} "
                         f"and {tuple(model.F.shape)}")
    (m, d), steps = model.H.shape, model.F.shape[-3]
    cores = {"m0": (d,), "P0": (d, d), "F": (steps, d, d), "c": (steps, d), "Q": (steps, d, d)}
    for name, core in cores.items():
        shape = tuple(getattr(model, name).shape)
        if shape != core and shape[1:] != core:
            raise ValueError(f"{name} must have shape {core} or (n, {', '.join(map(str, core))}), got {shape}")
    if tuple(model.r.shape) != (m,):
        raise ValueError(f"r must have shape ({m},), one noise variance per row of H, got {tuple(model.r.shape)}")
    sizes = {getattr(model, k).shape[0] for k, rank in _PER_SERIES_RANK.items() if getattr(model, k).ndim > rank}
    if len(sizes) > 1:
        raise ValueError(f"the per-series parameters disagree on the number of series n: {sorted(sizes)}")


def _check_data(x: Tensor, model: LinearGaussianSSM) -> None:
    """ValueError unless x is (n, T, m) for this model (n its number of series, if it has one)."""
    expected = (model.series or "n", model.steps, model.obs_dim)
    if x.ndim != 3 or tuple(x.shape[1:]) != expected[1:] or model.series not in (None, x.shape[0]):
        raise ValueError(f"x must have shape {expected} (series, times, observed coordinates), got {tuple(x.shape)}")


@dataclass(frozen=True)
class FilterResult:
    """The Kalman filter's output for x (n, T, m).

    ``mean``, ``cov``: m_k, P_k of p(z_k | x_{0:k}), (n, T, d) and (n, T, d, d);
    ``predicted_mean``, ``predicted_cov``: m⁻_k, P⁻_k of p(z_k | x_{0:k−1}), same shapes, with
    m⁻_0 = m0, P⁻_0 = P0; ``log_likelihood``: log p(x_{0:T−1}) of each series' observed
    entries, (n,).
    """

    mean: Tensor
    cov: Tensor
    predicted_mean: Tensor
    predicted_cov: Tensor
    log_likelihood: Tensor


@dataclass(frozen=True)
class SmootherResult:
    """The RTS smoother's output for x (n, T, m).

    ``mean``, ``cov``: m^s_k, P^s_k of p(z_k | x_{0:T−1}), (n, T, d) and (n, T, d, d);
    ``cross_cov``: Cov(z_{k+1}, z_k | x_{0:T−1}) for k = 0, …, T−2, (n, T−1, d, d);
    ``log_likelihood``: log p(x_{0:T−1}), (n,).
    """

    mean: Tensor
    cov: Tensor
    cross_cov: Tensor
    log_likelihood: Tensor


def _symmetrise(cov: Tensor) -> Tensor:
    """(P + Pᵀ) / 2, removing the rounding asymmetry of a product."""
    return 0.5 * (cov + cov.mT)


def _predict(mean: Tensor, cov: Tensor, f: Tensor, c: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """``m⁻ = F m + c``, ``P⁻ = F P Fᵀ + Q`` for mean (n, d), cov, f, q (n, d, d), c (n, d)."""
    return (f @ mean[..., None])[..., 0] + c, _symmetrise(f @ cov @ f.mT + q)


def _update(mean: Tensor, cov: Tensor, x: Tensor, observed: Tensor, model: LinearGaussianSSM
            ) -> tuple[Tensor, Tensor, Tensor]:
    """One masked update (module docstring) of m⁻ (n, d), P⁻ (n, d, d) by x (n, m), 0 where
    ``observed`` (n, m) is False:

        K = P⁻ Hᵀ O S̃⁻¹,   m = m⁻ + K ỹ,
        P = (I − K H) P⁻ (I − K H)ᵀ + K diag(r) Kᵀ    (Joseph form),
        log p(x_k | x_{0:k−1}) = −½ (ỹᵀ S̃⁻¹ ỹ + log det S̃ + |O| log 2π).

    Returns (m, P, the log predictive density (n,))."""
    o = observed.to(mean.dtype)
    residual = o * (x - mean @ model.H.mT)  # ỹ
    cross = cov @ model.H.mT  # P⁻ Hᵀ, (n, d, m)
    masked = (model.H @ cross + torch.diag(model.r)) * (o[:, :, None] * o[:, None, :]) + torch.diag_embed(1 - o)
    chol = torch.linalg.cholesky(masked)  # of S̃
    gain = torch.cholesky_solve((cross * o[:, None, :]).mT, chol).mT  # K = P⁻ Hᵀ O S̃⁻¹
    joseph = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device) - gain @ model.H
    new_cov = joseph @ cov @ joseph.mT + (gain * model.r) @ gain.mT
    white = torch.linalg.solve_triangular(chol, residual[..., None], upper=False)[..., 0]  # L⁻¹ ỹ
    log_det = 2 * torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)
    log_density = -0.5 * (white.square().sum(-1) + log_det + o.sum(-1) * math.log(2 * math.pi))
    return mean + (gain @ residual[..., None])[..., 0], _symmetrise(new_cov), log_density


_DIFFUSE_RATIO = 1e7  # κ over the data's squared scale: the module docstring's trade-off


def _diffuse_start(filled: Tensor, observed: Tensor, model: LinearGaussianSSM) -> tuple[Tensor, Tensor, Tensor]:
    """The module docstring's stand-in for a flat start, per series: (m0 = 0 (n, d), P0 = κ I
    (n, d, d), the log-likelihood's offset (d/2) log(2π κ) (n,)), κ (n,) from the data ``filled``
    (n, T, m), 0 where not ``observed``. A ``ValueError`` when H has not full column rank."""
    gram = torch.linalg.eigvalsh(model.H.mT @ model.H)  # ascending
    if not bool(gram[0] > 1e-12 * gram[-1]):
        raise ValueError("a diffuse start needs H of full column rank: some direction of the start is never seen")
    square = filled.square().sum((1, 2)) / observed.sum((1, 2)).clamp(min=1)
    kappa = _DIFFUSE_RATIO * (1 + square + model.r.max()) / gram[0]  # (n,)
    d = model.state_dim
    eye = torch.eye(d, dtype=filled.dtype, device=filled.device)
    offset = 0.5 * d * torch.log(2 * math.pi * kappa)
    return filled.new_zeros(len(kappa), d), kappa[:, None, None] * eye, offset


def kalman_filter(x: Tensor, model: LinearGaussianSSM) -> FilterResult:
    """The Kalman filter (Särkkä 2013, Theorem 4.3) for x (n, T, m), NaN where missing:

        m⁻_0 = m0,  P⁻_0 = P0;
        m⁻_k = F_{k−1} m_{k−1} + c_{k−1},   P⁻_k = F_{k−1} P_{k−1} F_{k−1}ᵀ + Q_{k−1},

    then the masked update of :func:`_update`, and ``log p(x_{0:T−1}) = Σ_k log p(x_k | x_{0:k−1})``
    (a time with nothing observed adds 0); a ``diffuse`` model starts from :func:`_diffuse_start`.
    Results in x's dtype and device."""
    model = model.batched(x)
    observed = ~torch.isnan(x)
    filled = torch.where(observed, x, 0.0)
    n, steps, d = x.shape[0], model.steps, model.state_dim
    out = {k: x.new_empty(n, steps, *shape) for k, shape in
           [("mean", (d,)), ("cov", (d, d)), ("predicted_mean", (d,)), ("predicted_cov", (d, d))]}
    mean, cov, log_likelihood = _diffuse_start(filled, observed, model) if model.diffuse else (
        model.m0, model.P0, x.new_zeros(n))
    for k in range(steps):
        if k > 0:
            mean, cov = _predict(mean, cov, model.F[:, k - 1], model.c[:, k - 1], model.Q[:, k - 1])
        out["predicted_mean"][:, k], out["predicted_cov"][:, k] = mean, cov
        mean, cov, log_density = _update(mean, cov, filled[:, k], observed[:, k], model)
        out["mean"][:, k], out["cov"][:, k] = mean, cov
        log_likelihood = log_likelihood + log_density
    return FilterResult(log_likelihood=log_likelihood, **out)


def rts_smoother(x: Tensor, model: LinearGaussianSSM) -> SmootherResult:
    """The Rauch–Tung–Striebel smoother (Särkkä 2013, Theorem 8.2) for x (n, T, m), NaN where
    missing: from m^s_{T−1} = m_{T−1}, P^s_{T−1} = P_{T−1} backwards,

        G_k = P_k F_kᵀ (P⁻_{k+1})⁻¹,   m^s_k = m_k + G_k (m^s_{k+1} − m⁻_{k+1}),
        P^s_k = P_k + G_k (P^s_{k+1} − P⁻_{k+1}) G_kᵀ,   Cov(z_{k+1}, z_k | x) = P^s_{k+1} G_kᵀ,

    the last being the lag-one covariance of EM's M-step (Särkkä 2013, ch. 12)."""
    filtered = kalman_filter(x, model)
    transition = model.batched(x).F
    mean, cov = filtered.mean.clone(), filtered.cov.clone()
    cross = x.new_empty(x.shape[0], model.steps - 1, model.state_dim, model.state_dim)
    for k in range(model.steps - 2, -1, -1):
        predicted_cov = filtered.predicted_cov[:, k + 1]
        gain = torch.cholesky_solve(transition[:, k] @ filtered.cov[:, k],
                                    torch.linalg.cholesky(predicted_cov)).mT  # G_k, P⁻ solved by Cholesky
        cross[:, k] = cov[:, k + 1] @ gain.mT
        step = mean[:, k + 1] - filtered.predicted_mean[:, k + 1]
        mean[:, k] = filtered.mean[:, k] + (gain @ step[..., None])[..., 0]
        cov[:, k] = _symmetrise(filtered.cov[:, k] + gain @ (cov[:, k + 1] - predicted_cov) @ gain.mT)
    return SmootherResult(mean, cov, cross, filtered.log_likelihood)
