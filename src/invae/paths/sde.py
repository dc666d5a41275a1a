"""SDE priors over latent paths: ``dz = f_θ(z, t) dt + S_θ dW`` in d dimensions, θ unknown.

The noise is additive: the diffusion matrix S (d, d) does not depend on z. A prior is a
``torch.nn.Module`` whose θ are ``nn.Parameter``\\ s, learned by gradient. A path is seen on a
latent grid: the observation times t_0 < … < t_{T−1} refined k-fold (``substeps = k``,
:func:`refine`), so the path has (T − 1) k + 1 points and the observations read every k-th
of them. Its log-density is the initial law's plus the sum of the one-step Gaussian laws
``z_{j+1} | z_j ~ N(m(z_j, Δ_j), Q(Δ_j))``: Euler–Maruyama's

    m = z + f(z, t) Δ,   Q = S Sᵀ Δ

by default, the exact transition where there is one (:class:`OrnsteinUhlenbeck`,
:class:`Brownian`). Built in: ``"ou"``, ``"brownian"`` and ``"double-well"`` (:data:`SDE_PRIORS`).

Reference: P. E. Kloeden and E. Platen, *Numerical Solution of Stochastic Differential
Equations* (1992), §9.1 (Euler–Maruyama) and §4.4 (linear SDEs).
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor, nn

from ..registry import Registry

__all__ = ["SDE_PRIORS", "Brownian", "BrownianLearnedStart", "DoubleWell", "LearnedStart", "OrnsteinUhlenbeck", "SDEPrior",
           "check_times", "gaussian_log_prob", "lyapunov", "refine"]


def check_times(times) -> Tensor:
    """``times`` as a tensor (T,) or (n, T), T ≥ 1, checked strictly increasing along its last axis."""
    times = torch.as_tensor(times)
    if times.ndim not in (1, 2) or times.shape[-1] == 0:
        raise ValueError(f"times must have shape (T,) or (n, T) with T >= 1, got {tuple(times.shape)}")
    if not torch.is_floating_point(times):
        times = times.to(torch.get_default_dtype())
    if not bool(torch.isfinite(times).all()) or not bool((times.diff(dim=-1) > 0).all()):
        raise ValueError("times must be finite and strictly increasing along their last axis")
    return times


def refine(times, substeps: int = 1) -> tuple[Tensor, Tensor]:
    """The latent grid: each interval [t_j, t_{j+1}] of ``times`` (T,) or (n, T) cut into
    ``substeps = k`` equal steps. Returns (grid (…, (T − 1) k + 1), observed_index (T,)) with
    ``grid[..., observed_index] == times``."""
    times = check_times(times)
    if not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"substeps must be an integer >= 1, got {substeps!r}")
    fraction = torch.arange(substeps, dtype=times.dtype, device=times.device) / substeps  # (k,)
    start, step = times[..., :-1, None], times.diff(dim=-1)[..., None]
    grid = torch.cat([(start + step * fraction).flatten(-2), times[..., -1:]], dim=-1)
    return grid, torch.arange(times.shape[-1], device=times.device) * substeps


def lyapunov(theta: Tensor, q: Tensor) -> Tensor:
    """Σ (d, d) solving ``Θ Σ + Σ Θᵀ = Q``, by vectorisation: ``(Θ ⊗ I + I ⊗ Θ) vec Σ = vec Q``
    (row-major vec). Differentiable; unique when no two eigenvalues of Θ sum to 0. For d ≤ 10."""
    eye = torch.eye(theta.shape[-1], dtype=theta.dtype, device=theta.device)
    kron = torch.kron(theta, eye) + torch.kron(eye, theta)
    sigma = torch.linalg.solve(kron, q.reshape(-1)).reshape(q.shape)
    return 0.5 * (sigma + sigma.mT)


def gaussian_log_prob(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """``log N(x; m, C) = −½ |L⁻¹(x − m)|² − Σ log L_ii − (d/2) log 2π``, C = L Lᵀ, for x and m
    (…, d) and C (…, d, d) broadcasting; shape (…)."""
    chol = torch.linalg.cholesky(cov)
    white = torch.linalg.solve_triangular(chol, (x - mean).unsqueeze(-1), upper=False).squeeze(-1)
    half_logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (white**2).sum(-1) - half_logdet - 0.5 * x.shape[-1] * math.log(2 * math.pi)


class SDEPrior(nn.Module, abc.ABC):
    """A prior over paths of ``dz = f_θ(z, t) dt + S dW``, z ∈ R^d, with S (d, d) lower-triangular
    with a positive diagonal, stored unconstrained (its log-diagonal and its entries below it).

    Subclasses call ``super().__init__(dim, diffusion)`` and define :meth:`drift`,
    :meth:`initial` and :meth:`parameters_by_name`; one with an exact Gaussian transition
    overrides :meth:`transition`. One whose start is ``diffuse`` has no start law: the density of
    its paths is flat in z(t_0) (Lebesgue measure), an improper prior whose posterior is proper
    once the data determine the start.
    """

    diffuse = False

    def __init__(self, dim: int, diffusion=1.0):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"the dimension d must be an integer >= 1, got {dim!r}")
        self.dim = dim
        scale = _matrix(diffusion, dim, "diffusion")
        rows, cols = torch.tril_indices(dim, dim, -1)
        if bool((scale.triu(1) != 0).any()) or not bool((scale.diagonal() > 0).all()):
            raise ValueError("the diffusion S must be lower-triangular with a positive diagonal")
        self.diffusion_log_diag = nn.Parameter(scale.diagonal().log())
        self.diffusion_lower = nn.Parameter(scale[rows, cols])

    def forward(self, z: Tensor, times, substeps: int = 1) -> Tensor:
        """:meth:`log_prob`: a prior called on paths is their log-density (e.g. in ``torch.func.functional_call``)."""
        return self.log_prob(z, times, substeps)

    @abc.abstractmethod
    def drift(self, z: Tensor, t: Tensor | float = 0.0) -> Tensor:
        """``f_θ(z, t)`` for z (…, d) and t broadcasting against z's batch (…); shape (…, d)."""

    @abc.abstractmethod
    def initial(self, dtype: torch.dtype | None = None, device=None) -> tuple[Tensor, Tensor]:
        """The law of z(t_0), N(mean (d,), cov (d, d)), in ``dtype`` on ``device``."""

    @abc.abstractmethod
    def parameters_by_name(self) -> dict[str, Tensor | float]:
        """θ for outputs, by name: detached tensors, numbers where they have one entry."""

    def diffusion(self) -> Tensor:
        """S (d, d): ``exp`` of the log-diagonal on the diagonal, the free entries below it."""
        rows, cols = torch.tril_indices(self.dim, self.dim, -1, device=self.diffusion_lower.device)
        return torch.diag_embed(self.diffusion_log_diag.exp()).index_put((rows, cols), self.diffusion_lower)

    def euler_maruyama(self, z: Tensor, dt, t: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
        """One Euler–Maruyama step: mean ``z + f(z, t) Δ`` (…, d) and cov ``S Sᵀ Δ`` (Δ.shape, d, d)
        for Δ = ``dt`` broadcasting against z's batch (…); (d, d) for a number Δ."""
        dt = torch.as_tensor(dt, dtype=z.dtype, device=z.device)
        scale = self.diffusion().to(z)
        return z + self.drift(z, t) * dt.unsqueeze(-1), scale @ scale.mT * dt[..., None, None]

    def transition(self, z: Tensor, dt, t: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
        """The Gaussian law of z(t + Δ) given z(t) = z: (mean (…, d), cov (…, d, d) or (d, d)),
        Δ = ``dt`` broadcasting against z's batch; Euler–Maruyama (:meth:`euler_maruyama`) here."""
        return self.euler_maruyama(z, dt, t)

    def start_units(self, dtype: torch.dtype | None = None, device=None) -> tuple[Tensor, Tensor]:
        """Where paths start and how far they spread there, (mean (d,), spread (d,)): the start law's
        mean and marginal standard deviations. An encoder expresses its paths in these units."""
        mean, cov = self.initial(dtype, device)
        return mean, cov.diagonal().sqrt()

    def log_prob(self, z: Tensor, times, substeps: int = 1) -> Tensor:
        """``log p(z(t_0)) + Σ_j log N(z_{j+1}; m(z_j, Δ_j), Q(Δ_j))`` for paths z (n, G, d) on the
        latent grid of ``times`` (T,) or (n, T) refined ``substeps = k``-fold, G = (T − 1) k + 1
        (:func:`refine`); shape (n,). A ``diffuse`` start adds log p(z(t_0)) = 0."""
        grid, _ = refine(times, substeps)
        self._check_path(z, grid)
        grid = grid.to(z)
        log_density = z.new_zeros(z.shape[0]) if self.diffuse else gaussian_log_prob(z[:, 0], *self.initial(z.dtype, z.device))
        if z.shape[1] == 1:
            return log_density
        step_mean, step_cov = self.transition(z[:, :-1], grid.diff(dim=-1), grid[..., :-1])
        return log_density + gaussian_log_prob(z[:, 1:], step_mean, step_cov).sum(-1)

    @torch.no_grad()
    def simulate(self, n: int, times, substeps: int = 1, generator: torch.Generator | None = None,
                 start: Tensor | None = None) -> Tensor:
        """``n`` independent paths at ``times`` (T,) or (n, T), shape (n, T, d): z(t_0) = ``start``
        (n, d) or (d,) when given, else drawn from :meth:`initial` (a diffuse start needs one), then
        Euler–Maruyama ``z ← z + f(z, t) Δ + S √Δ ε``, ε ~ N(0, I), on the grid refined
        ``substeps``-fold. A sample: no gradient flows to θ."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"the number of paths n must be an integer >= 1, got {n!r}")
        grid, index = refine(times, substeps)
        if grid.ndim == 2 and grid.shape[0] != n:
            raise ValueError(f"times (n, T) must have n = {n} rows, got {grid.shape[0]}")
        scale = self.diffusion()
        grid = grid.to(scale)
        z = self._start(n, generator) if start is None else torch.as_tensor(start).to(scale).expand(n, self.dim)
        path = [z]
        for j in range(grid.shape[-1] - 1):
            dt = (grid[..., j + 1] - grid[..., j]).unsqueeze(-1)
            z = z + self.drift(z, grid[..., j]) * dt + dt.sqrt() * self._noise(n, generator) @ scale.mT
            path.append(z)
        return torch.stack(path, dim=1)[:, index]

    def _start(self, n: int, generator: torch.Generator | None) -> Tensor:
        """z(t_0) ~ :meth:`initial`, shape (n, d)."""
        like = self.diffusion_log_diag
        mean, cov = self.initial(like.dtype, like.device)
        return mean + self._noise(n, generator) @ torch.linalg.cholesky(cov).mT

    def _noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        """ε ~ N(0, I), shape (n, d), in θ's dtype and device."""
        like = self.diffusion_log_diag
        return torch.randn(n, self.dim, generator=generator, dtype=like.dtype, device=like.device)

    def _check_path(self, z: Tensor, grid: Tensor) -> None:
        """z must be (n, G, d) on the latent grid (G,) or (n, G)."""
        if z.ndim != 3 or z.shape[1:] != (grid.shape[-1], self.dim):
            raise ValueError(f"paths must have shape (n, {grid.shape[-1]}, {self.dim}) on the latent grid, "
                             f"got {tuple(z.shape)}")
        if grid.ndim == 2 and grid.shape[0] != z.shape[0]:
            raise ValueError(f"times (n, T) must have n = {z.shape[0]} rows, got {grid.shape[0]}")


class LearnedStart(SDEPrior):
    """An SDE prior without a stationary law: z(t_0) ~ N(m, diag(exp(2 ℓ))) with the start's mean
    m (d,) and log-spread ℓ (d,) learned with θ — a choice: a fixed start would bias θ whenever
    the data do not start there, and a diffuse one leaves the start's scale unidentified."""

    def __init__(self, dim: int, diffusion=1.0, start_mean=0.0, start_scale=1.0):
        super().__init__(dim, diffusion)
        spread = _vector(start_scale, dim, "start_scale")
        if not bool((spread > 0).all()):
            raise ValueError(f"start_scale must be positive, got {spread.tolist()}")
        self.start_mean = nn.Parameter(_vector(start_mean, dim, "start_mean"))
        self.start_log_scale = nn.Parameter(spread.log())

    def initial(self, dtype: torch.dtype | None = None, device=None) -> tuple[Tensor, Tensor]:
        """N(m, diag(exp(2 ℓ)))."""
        cov = torch.diag_embed(torch.exp(2 * self.start_log_scale))
        return self.start_mean.to(dtype=dtype, device=device), cov.to(dtype=dtype, device=device)

    def _start_by_name(self) -> dict[str, Tensor | float]:
        return {"start_mean": _output(self.start_mean), "start_scale": _output(self.start_log_scale.exp())}


class OrnsteinUhlenbeck(SDEPrior):
    """``dz = −Θ (z − μ) dt + S dW`` with Θ (d, d) a full matrix, μ (d,), S (d, d).

    Exact transition over Δ: ``A = expm(−Θ Δ)``, ``z(t + Δ) | z ~ N(μ + A (z − μ), Q)`` with
    ``Q = ∫_0^Δ e^{−Θu} S Sᵀ e^{−Θᵀu} du``, which is ``Σ∞ − A Σ∞ Aᵀ`` when Θ is stable; here
    Q comes from one matrix exponential (Van Loan, 1978): ``expm([[Θ, S Sᵀ], [0, −Θᵀ]] Δ)`` has
    upper-right block G and Q = A G. That holds for every Θ (Θ → 0 gives the Brownian S Sᵀ Δ)
    and does not subtract two O(1) matrices to get an O(Δ) one.

    The initial law is the stationary one, N(μ, Σ∞), Σ∞ solving the Lyapunov equation
    ``Θ Σ + Σ Θᵀ = S Sᵀ`` (:func:`lyapunov`). It exists only when every eigenvalue of Θ has a
    positive real part; otherwise :meth:`initial` (and so :meth:`log_prob`, :meth:`simulate`)
    raises a ``ValueError``, while the transitions stay defined.

    Parameters
    ----------
    dim : int
        d.
    drift : number or (d, d)
        Θ; a number θ means θ I.
    mean : number or (d,)
        μ.
    diffusion : number or (d, d)
        S, lower-triangular with a positive diagonal; a number s means s I.
    """

    def __init__(self, dim: int, drift=1.0, mean=0.0, diffusion=1.0):
        super().__init__(dim, diffusion)
        self.drift_matrix = nn.Parameter(_matrix(drift, dim, "drift"))
        self.mean = nn.Parameter(_vector(mean, dim, "mean"))

    def drift(self, z: Tensor, t: Tensor | float = 0.0) -> Tensor:
        """``−Θ (z − μ)`` for z (…, d); shape (…, d)."""
        return -(z - self.mean.to(z)) @ self.drift_matrix.to(z).mT

    def stationary_covariance(self) -> Tensor:
        """Σ∞ (d, d) solving ``Θ Σ + Σ Θᵀ = S Sᵀ`` (meaningful for a stable Θ only)."""
        scale = self.diffusion()
        return lyapunov(self.drift_matrix, scale @ scale.mT)

    def initial(self, dtype: torch.dtype | None = None, device=None) -> tuple[Tensor, Tensor]:
        """The stationary law N(μ, Σ∞); a ``ValueError`` when Θ is not finite or not stable (no such law)."""
        if not bool(torch.isfinite(self.drift_matrix).all()):  # eigvals of NaN crashes LAPACK, and the process
            raise ValueError("this Ornstein–Uhlenbeck prior's drift Θ is not finite")
        if not bool((torch.linalg.eigvals(self.drift_matrix.detach()).real > 0).all()):
            raise ValueError("this Ornstein–Uhlenbeck prior has no stationary law: "
                             "Θ has an eigenvalue with real part <= 0")
        return self.mean.to(dtype=dtype, device=device), self.stationary_covariance().to(dtype=dtype, device=device)

    def linear_transition(self, dt) -> tuple[Tensor, Tensor, Tensor]:
        """(A, b, Q) of the exact transition ``z(t + Δ) | z ~ N(A z + b, Q)`` for Δ = ``dt`` (…):
        A = expm(−Θ Δ) (…, d, d), b = μ − A μ (…, d), Q (…, d, d) by Van Loan (class docstring)."""
        theta, scale = self.drift_matrix, self.diffusion()
        dt = torch.as_tensor(dt, dtype=theta.dtype, device=theta.device)[..., None, None]
        block = torch.cat([torch.cat([theta, scale @ scale.mT], 1),
                           torch.cat([torch.zeros_like(theta), -theta.mT], 1)], 0)  # (2d, 2d)
        exponential = torch.linalg.matrix_exp(block * dt)
        a = exponential[..., self.dim:, self.dim:].mT  # expm(−Θᵀ Δ)ᵀ = expm(−Θ Δ)
        q = a @ exponential[..., :self.dim, self.dim:]
        return a, self.mean - (a @ self.mean.unsqueeze(-1)).squeeze(-1), 0.5 * (q + q.mT)

    def transition(self, z: Tensor, dt, t: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
        """The exact transition: (A z + b (…, d), Q (…, d, d)) of :meth:`linear_transition`."""
        a, b, q = self.linear_transition(torch.as_tensor(dt).to(self.drift_matrix))
        return (a.to(z) @ z.unsqueeze(-1)).squeeze(-1) + b.to(z), q.to(z)

    def parameters_by_name(self) -> dict[str, Tensor | float]:
        return {"drift": _output(self.drift_matrix), "mean": _output(self.mean),
                "diffusion": _output(self.diffusion())}


class _RandomWalk:
    """The local level's dynamics ``dz = S dW`` (Θ = 0): ``z(t + Δ) | z ~ N(z, S Sᵀ Δ)``, exactly."""

    def drift(self, z: Tensor, t: Tensor | float = 0.0) -> Tensor:
        """0, shape of z."""
        return torch.zeros_like(z)

    def linear_transition(self, dt) -> tuple[Tensor, Tensor, Tensor]:
        """(A = I (…, d, d), b = 0 (…, d), Q = S Sᵀ Δ (…, d, d)) for Δ = ``dt`` (…)."""
        scale = self.diffusion()
        dt = torch.as_tensor(dt, dtype=scale.dtype, device=scale.device)[..., None, None]
        eye = torch.eye(self.dim, dtype=scale.dtype, device=scale.device).expand(dt.shape[:-2] + (self.dim, self.dim))
        return eye, eye.new_zeros(eye.shape[:-1]), scale @ scale.mT * dt


class Brownian(_RandomWalk, SDEPrior):
    """The local level ``dz = S dW`` with a diffuse start: z(t_0) has the flat (improper) law, the
    limit of N(m, κ I) as κ → ∞, so the fit conditions on the data's own start as statsmodels'
    diffuse local level does (Durbin & Koopman 2012, §2.9). θ = S alone.

    ``start_mean`` and ``start_scale`` (d,) are not parameters: they only place the units in which
    an encoder expresses the paths (:meth:`start_units`), e.g. the data's first values and spread.
    """

    diffuse = True

    def __init__(self, dim: int, diffusion=1.0, start_mean=0.0, start_scale=1.0):
        super().__init__(dim, diffusion)
        self.units = (_vector(start_mean, dim, "start_mean"), _vector(start_scale, dim, "start_scale"))
        if not bool((self.units[1] > 0).all()):
            raise ValueError(f"start_scale must be positive, got {self.units[1].tolist()}")

    def initial(self, dtype: torch.dtype | None = None, device=None) -> tuple[Tensor, Tensor]:
        """None exists: a ``ValueError`` (a diffuse start is not a probability law)."""
        raise ValueError("a Brownian prior with a diffuse start has no start law to draw from: give the start")

    def start_units(self, dtype: torch.dtype | None = None, device=None) -> tuple[Tensor, Tensor]:
        """(``start_mean``, ``start_scale``) of the constructor."""
        return tuple(value.to(dtype=dtype, device=device) for value in self.units)

    def parameters_by_name(self) -> dict[str, Tensor | float]:
        return {"diffusion": _output(self.diffusion())}


class BrownianLearnedStart(_RandomWalk, LearnedStart):
    """The local level ``dz = S dW`` whose start is a learned Gaussian (:class:`LearnedStart`): the
    choice for many series whose starts share one law, which it then estimates."""

    def parameters_by_name(self) -> dict[str, Tensor | float]:
        return {"diffusion": _output(self.diffusion()), **self._start_by_name()}


class DoubleWell(LearnedStart):
    """``dz = θ₁ z (θ₂ − z²) dt + s dW`` (d = 1): wells at ±√θ₂ for θ₁ > 0, θ₂ > 0 (a single one at
    0 for θ₂ ≤ 0), a barrier of height θ₁ θ₂² / 4 between them. θ₁ > 0 is stored as its log.
    Euler–Maruyama transitions; no Gaussian stationary law, so a learned Gaussian start
    (:class:`LearnedStart`). ``dim`` exists for the registry's uniform call and must be 1."""

    def __init__(self, dim: int = 1, theta1: float = 1.0, theta2: float = 1.0, diffusion: float = 0.5,
                 start_mean: float = 0.0, start_scale: float = 1.0):
        if dim != 1:
            raise ValueError(f"the double-well prior is one-dimensional, got dim = {dim!r}")
        if not theta1 > 0:
            raise ValueError(f"theta1 must be positive, got {theta1}")
        super().__init__(1, diffusion, start_mean, start_scale)
        self.log_theta1 = nn.Parameter(torch.tensor(math.log(theta1)))
        self.theta2 = nn.Parameter(torch.tensor(float(theta2)))

    @property
    def theta1(self) -> Tensor:
        """θ₁ = exp(log θ₁) > 0."""
        return self.log_theta1.exp()

    def drift(self, z: Tensor, t: Tensor | float = 0.0) -> Tensor:
        """``θ₁ z (θ₂ − z²)`` for z (…, 1); shape (…, 1)."""
        return self.theta1.to(z) * z * (self.theta2.to(z) - z**2)

    def parameters_by_name(self) -> dict[str, Tensor | float]:
        return {"theta1": _output(self.theta1), "theta2": _output(self.theta2),
                "diffusion": _output(self.diffusion()), **self._start_by_name()}


def _matrix(value, dim: int, name: str) -> Tensor:
    """A (d, d) tensor from a number (times I) or a (d, d) array."""
    value = torch.as_tensor(value, dtype=torch.get_default_dtype())
    if value.ndim == 0:
        return value * torch.eye(dim)
    if value.shape != (dim, dim):
        raise ValueError(f"{name} must be a number or a ({dim}, {dim}) matrix, got shape {tuple(value.shape)}")
    return value.clone()


def _vector(value, dim: int, name: str) -> Tensor:
    """A (d,) tensor from a number (repeated) or a (d,) array."""
    value = torch.as_tensor(value, dtype=torch.get_default_dtype())
    if value.ndim == 0:
        return value * torch.ones(dim)
    if value.shape != (dim,):
        raise ValueError(f"{name} must be a number or a ({dim},) vector, got shape {tuple(value.shape)}")
    return value.clone()


def _output(value: Tensor) -> Tensor | float:
    """A detached copy of ``value``; a number when it has one entry."""
    return value.item() if value.numel() == 1 else value.detach().clone()


SDE_PRIORS: Registry[type[SDEPrior]] = Registry("path prior")
SDE_PRIORS.register("ou", OrnsteinUhlenbeck)
SDE_PRIORS.register("brownian", Brownian)
SDE_PRIORS.register("brownian-learned-start", BrownianLearnedStart)
SDE_PRIORS.register("double-well", DoubleWell)
