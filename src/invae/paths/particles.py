"""Particle references for latent paths with nonlinear drifts (issue 21): the bootstrap filter's
estimate of the evidence p(x) and a particle smoother's posterior over the path, where no
Kalman filter (:mod:`invae.paths.kalman`) is exact.

Model, for each of n independent series observed at T times t_0 < … < t_{T−1}: the path z of
an :class:`~invae.paths.sde.SDEPrior` (d coordinates) on the latent grid refined
``substeps = k``-fold, and data rows x_k (one per time) with ``p(x_k | z(t_k))`` of a
:class:`~invae.model.likelihoods.Likelihood` over its observed entries (NaN = missing).

The bootstrap filter (Doucet & Johansen 2009, §4.1) moves P particles by the prior's one-step
laws and weighs them by the likelihood; with W_{k−1} the normalised weights before time k,

    p̂(x_k | x_{0:k−1}) = Σ_i W^i_{k−1} g_k(z^i_k),   g_k(z) = p(x_k | z),
    W^i_k ∝ W^i_{k−1} g_k(z^i_k),    log p̂(x) = Σ_k log p̂(x_k | x_{0:k−1}).

Resampling is adaptive (ibid., §3.5): systematic, per series, after a time whose effective
sample size ESS = 1 / Σ_i (W^i)² falls below P/2, after which W = 1/P; resampling always
would add variance where the weights have not degenerated. The product p̂(x) is an unbiased
estimate of p(x) (ibid., §3.5; Del Moral 2004), so log p̂(x) is biased low, by about half its
variance: :func:`repeated_log_likelihood` measures that variance from independent runs.

References: A. Doucet and A. M. Johansen, "A tutorial on particle filtering and smoothing:
fifteen years later" (2009), in *The Oxford Handbook of Nonlinear Filtering*; S. J. Godsill,
A. Doucet and M. West, "Monte Carlo smoothing for nonlinear time series", JASA 99 (2004).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.likelihoods import Likelihood
from ..threads import using_threads
from .sde import SDEPrior, check_times, refine

__all__ = ["ParticleFilterResult", "ParticleSmootherResult", "particle_filter", "particle_smoother",
           "repeated_log_likelihood", "systematic_resampling"]


@dataclass(frozen=True)
class ParticleFilterResult:
    """The bootstrap filter's output for x (n, T, ·) with P particles, d latent coordinates.

    ``log_likelihood``: log p̂(x) of each series, (n,); ``mean``: Σ_i W^i_k z^i_k, the filtered
    mean E[z(t_k) | x_{0:k}], (n, T, d); ``ess``: 1 / Σ_i (W^i_k)² after weighing at t_k, (n, T);
    ``particles``: z^i_k at the observation times before any resampling, (n, T, P, d);
    ``log_weights``: their normalised log W^i_k, (n, T, P); ``ancestors``: the index, among the
    particles at t_k, of the parent of each particle at t_{k+1} (the identity where the filter
    did not resample), (n, T − 1, P). The last three are None with ``keep_particles=False``.
    """

    log_likelihood: Tensor
    mean: Tensor
    ess: Tensor
    particles: Tensor | None
    log_weights: Tensor | None
    ancestors: Tensor | None


@dataclass(frozen=True)
class ParticleSmootherResult:
    """A particle smoother's output for x (n, T, ·): ``mean`` and ``std`` of p(z(t_k) | x) over
    the sampled paths, (n, T, d); ``paths``: the S paths, (S, n, T, d); ``log_likelihood`` and
    ``ess``: the filter's log p̂(x), (n,), and effective sample sizes, (n, T), whose smallest
    bounds how many distinct draws the paths stand for."""

    mean: Tensor
    std: Tensor
    paths: Tensor
    log_likelihood: Tensor
    ess: Tensor


def systematic_resampling(weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """P indices per series from normalised weights (n, P), shape (n, P): with one U ~ U[0, 1)
    per series, u_i = (U + i) / P, and C the cumulative weights, index i is the j with
    C_{j−1} ≤ u_i < C_j. The u_i are 1/P apart, so particle j is drawn ⌊P w_j⌋ or ⌈P w_j⌉
    times (Doucet & Johansen 2009, §3.4)."""
    n, p = weights.shape
    start = torch.rand(n, 1, generator=generator, dtype=weights.dtype, device=weights.device)
    points = (start + torch.arange(p, dtype=weights.dtype, device=weights.device)) / p
    return torch.searchsorted(weights.cumsum(-1), points, right=True).clamp_max(p - 1)  # C_{P−1} may round below 1


@torch.no_grad()
@using_threads()  # one thread unless $INVAE_NUM_THREADS says otherwise: small tensors, shared machines (threads.py)
def particle_filter(x: Tensor, times, prior: SDEPrior, likelihood: Likelihood, *, n_particles: int = 1000,
                    substeps: int = 1, keep_particles: bool = True,
                    generator: torch.Generator | None = None) -> ParticleFilterResult:
    """The bootstrap particle filter (module docstring) for n series at once.

    x (n, T, data_dim): the likelihood's data rows, NaN where a measurement (one of the first
    m = ``likelihood.forward.out_dim`` columns) is missing: the weight at a time reads its
    observed entries alone, and a time with none leaves the weights and log p̂(x) unchanged.
    ``times`` (T,) or (n, T). The particles start from ``prior.initial()`` and make
    ``substeps`` Gaussian steps ``prior.transition`` between two observation times (the grid
    of :func:`~invae.paths.sde.refine`). Vectorised over series and particles; a loop over the
    grid. ``keep_particles=False`` keeps only log p̂(x), the means and the ESS (the particles
    take n T P d numbers). Results in x's dtype and device.
    """
    states = _bootstrap(x, _grid(x, times, likelihood, substeps), prior, likelihood, n_particles, substeps,
                        generator)
    log_likelihood, means, ess, kept = x.new_zeros(x.shape[0]), [], [], []
    for state in states:
        z, log_w, _, increment = state
        log_likelihood = log_likelihood + increment
        means.append((log_w.exp()[..., None] * z).sum(-2))
        ess.append(_effective_sample_size(log_w))
        if keep_particles:
            kept.append(state)
    particles, log_weights, ancestors = _history(kept, x) if keep_particles else (None, None, None)
    return ParticleFilterResult(log_likelihood, torch.stack(means, 1), torch.stack(ess, 1), particles,
                                log_weights, ancestors)


def _bootstrap(x: Tensor, grid: Tensor, prior: SDEPrior, likelihood: Likelihood, n_particles: int, substeps: int,
               generator: torch.Generator | None) -> Iterator[tuple[Tensor, Tensor, Tensor | None, Tensor]]:
    """The filter's state at each observation time t_k: (particles z_k (n, P, d), log W_k (n, P),
    the parents of z_k among z_{k−1} (n, P), None at k = 0, and log p̂(x_k | x_{0:k−1}) (n,))."""
    _check_count(n_particles, "n_particles", 2)
    observed = ~torch.isnan(x[..., : likelihood.forward.out_dim])
    filled = torch.where(torch.isnan(x), 0.0, x)
    z = _initial_particles(prior, x, n_particles, generator)
    log_w, parents = x.new_full(z.shape[:2], -math.log(n_particles)), None
    lost = torch.zeros(z.shape[:2], dtype=torch.bool, device=z.device)
    for k in range(x.shape[1]):
        if k > 0:
            z, log_w, parents = _resample_degenerate(z, log_w, generator)
            lost = _pick(lost[..., None], parents)[..., 0]
            z = _advance(prior, z, grid[:, (k - 1) * substeps: k * substeps + 1], generator)
        z, lost = _drop_overflowed(z, lost)
        gain = torch.where(observed[:, k, None], likelihood.entry_log_prob(filled[:, k, None], z), 0.0).sum(-1)
        log_w, increment = _reweigh(log_w, gain.masked_fill(lost & observed[:, k].any(-1, keepdim=True), -math.inf))
        yield z, log_w, parents, increment


def _drop_overflowed(z: Tensor, lost: Tensor) -> tuple[Tensor, Tensor]:
    """(the particles z (n, P, d), 0 where ``lost`` (n, P) or not finite, and the new ``lost``).

    Euler–Maruyama with a superlinear drift (the double well's cubic one) sends a particle past a
    threshold to ±inf in a few steps: such a path stays lost, and the density of any observation
    at it tends to 0, so from the first observed entry on its weight is 0 (the caller sets
    log g = −inf there; where nothing is observed the weights stay). Its value is kept finite so
    that weighted sums (0 × inf) stay defined."""
    lost = lost | ~torch.isfinite(z).all(-1)
    return z.masked_fill(lost[..., None], 0.0), lost


def _history(states: list[tuple], x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(particles (n, T, P, d), log-weights (n, T, P), ancestors (n, T − 1, P)) from the
    per-time states of :func:`_bootstrap`."""
    particles, log_weights, parents, _ = zip(*states)
    ancestors = torch.stack(parents[1:], 1) if len(parents) > 1 else \
        torch.empty(x.shape[0], 0, log_weights[0].shape[-1], dtype=torch.long, device=x.device)
    return torch.stack(particles, 1), torch.stack(log_weights, 1), ancestors


def _grid(x: Tensor, times, likelihood: Likelihood, substeps: int) -> Tensor:
    """The latent grid (n, (T − 1) k + 1) in x's dtype, after checking x (n, T, data_dim) against
    ``times`` (T,) or (n, T) and the likelihood's data rows."""
    if not isinstance(x, Tensor) or x.ndim != 3 or not torch.is_floating_point(x):
        raise ValueError(f"x must be a floating-point tensor (n, T, data_dim), got {getattr(x, 'shape', type(x))}")
    if x.shape[-1] != likelihood.data_dim:
        raise ValueError(f"x must have {likelihood.data_dim} columns, the likelihood's data rows, got {x.shape[-1]}")
    times = check_times(times)
    if times.shape[-1] != x.shape[1] or (times.ndim == 2 and times.shape[0] != x.shape[0]):
        raise ValueError(f"times must have shape ({x.shape[1]},) or ({x.shape[0]}, {x.shape[1]}) for x of shape "
                         f"{tuple(x.shape)}, got {tuple(times.shape)}")
    grid, _ = refine(times, substeps)
    return grid.to(x).expand(x.shape[0], grid.shape[-1])


def _check_count(value: int, name: str, least: int) -> None:
    """ValueError unless ``value`` is an integer ≥ ``least``."""
    if not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def _initial_particles(prior: SDEPrior, x: Tensor, n_particles: int, generator: torch.Generator | None) -> Tensor:
    """z^i_0 ~ N(m0, P0) of ``prior.initial()``, (n, P, d)."""
    mean, cov = prior.initial(x.dtype, x.device)
    noise = torch.randn(x.shape[0], n_particles, prior.dim, generator=generator, dtype=x.dtype, device=x.device)
    return mean + noise @ torch.linalg.cholesky(cov).mT


def _advance(prior: SDEPrior, z: Tensor, grid: Tensor, generator: torch.Generator | None) -> Tensor:
    """Particles z (n, P, d) moved along the grid (n, k + 1), one draw of ``prior.transition``
    per step: ``z ← m(z, Δ) + L ε``, Q(Δ) = L Lᵀ, ε ~ N(0, I)."""
    for j in range(grid.shape[-1] - 1):
        mean, cov = prior.transition(z, (grid[:, j + 1] - grid[:, j])[:, None], grid[:, j, None])
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        z = mean + (torch.linalg.cholesky(cov) @ noise[..., None])[..., 0]
    return z


def _reweigh(log_w: Tensor, gain: Tensor) -> tuple[Tensor, Tensor]:
    """(log W_k, log p̂(x_k | x_{0:k−1})) from log W_{k−1} and log g_k (n, P):
    ``ℓ = logsumexp(log W_{k−1} + log g_k)``, ``log W_k = log W_{k−1} + log g_k − ℓ``. Where
    nothing is observed, log g_k = 0: the weights stay and ℓ = 0 (to rounding)."""
    total = log_w + gain
    increment = torch.logsumexp(total, -1)
    return total - increment[:, None], increment


def _effective_sample_size(log_w: Tensor) -> Tensor:
    """ESS = 1 / Σ_i (W^i)² of normalised log-weights (…, P); shape (…)."""
    return torch.exp(-torch.logsumexp(2 * log_w, -1))


def _resample_degenerate(z: Tensor, log_w: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """Systematic resampling of the series whose ESS < P/2, W reset to 1/P there: (particles
    (n, P, d), log-weights (n, P), parents (n, P), the identity for the others)."""
    p = log_w.shape[-1]
    drawn = systematic_resampling(log_w.exp(), generator)
    degenerate = (_effective_sample_size(log_w) < p / 2)[:, None]
    parents = torch.where(degenerate, drawn, torch.arange(p, device=z.device))
    log_w = torch.where(degenerate, torch.full_like(log_w, -math.log(p)), log_w)
    return _pick(z, parents), log_w, parents


def _pick(z: Tensor, index: Tensor) -> Tensor:
    """The particles z (n, P, d) at ``index`` (n, S) of each series, (n, S, d)."""
    return torch.take_along_dim(z, index[..., None], dim=1)


@torch.no_grad()
@using_threads()
def particle_smoother(x: Tensor, times, prior: SDEPrior, likelihood: Likelihood, *, n_particles: int = 1000,
                      n_paths: int = 100, substeps: int = 1,
                      generator: torch.Generator | None = None) -> ParticleSmootherResult:
    """S = ``n_paths`` draws of the path z(t_0), …, z(t_{T−1}) given x, from
    :func:`particle_filter` (arguments as there) and then:

    * ``substeps = 1``: forward filtering–backward simulation (Godsill, Doucet & West 2004;
      Doucet & Johansen 2009, §5.3): z_{T−1} drawn from the final weights, then backwards

          P(z_k = z^i_k | z_{k+1}) ∝ W^i_k p(z_{k+1} | z^i_k),

      p the Gaussian one-step law ``prior.transition``. Cost O(S P) per time and series.
    * ``substeps > 1``: the law of z(t_{k+1}) given z(t_k) is then k Gaussian steps, with no
      closed-form density, so genealogy tracing instead: the ancestral paths of final
      particles drawn by weight (Doucet & Johansen 2009, §4.2). Resampling makes them share
      few ancestors at early times: their spread there understates the posterior's.

    ``mean``, ``std`` are over the S paths (std with S − 1 degrees of freedom), so S ≥ 2.
    """
    _check_count(n_paths, "n_paths", 2)
    filtered = particle_filter(x, times, prior, likelihood, n_particles=n_particles, substeps=substeps,
                               generator=generator)
    if substeps == 1:
        paths = _backward_simulation(filtered, prior, _grid(x, times, likelihood, 1), n_paths, generator)
    else:
        paths = _ancestral_paths(filtered, n_paths, generator)
    return ParticleSmootherResult(paths.mean(0), paths.std(0), paths, filtered.log_likelihood, filtered.ess)


def _draw(log_w: Tensor, count: int, generator: torch.Generator | None) -> Tensor:
    """``count`` indices (…, count) drawn with replacement from normalised log-weights (…, P)."""
    probs = log_w.exp().reshape(-1, log_w.shape[-1])
    return torch.multinomial(probs, count, replacement=True, generator=generator).reshape(*log_w.shape[:-1], count)


def _backward_simulation(filtered: ParticleFilterResult, prior: SDEPrior, times: Tensor, n_paths: int,
                         generator: torch.Generator | None) -> Tensor:
    """FFBSi paths (S, n, T, d) for observation times (n, T), one Gaussian step between them."""
    index = _draw(filtered.log_weights[:, -1], n_paths, generator)  # (n, S)
    path = [_pick(filtered.particles[:, -1], index)]
    for k in range(times.shape[-1] - 2, -1, -1):
        density = _transition_log_density(prior, filtered.particles[:, k], path[-1], times[:, k], times[:, k + 1])
        index = _draw(filtered.log_weights[:, k, None] + density, 1, generator)[..., 0]
        path.append(_pick(filtered.particles[:, k], index))
    return torch.stack(path[::-1], dim=2).movedim(1, 0)


def _transition_log_density(prior: SDEPrior, z: Tensor, following: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """``log N(z'_s; m(z^i, Δ), Q(Δ))`` up to a constant, (n, S, P), for particles z (n, P, d),
    next states z' (n, S, d), t from start to end (n,): ``−½ |L⁻¹ z'_s − L⁻¹ m(z^i)|²``,
    Q = L Lᵀ. The noise is additive, so Q does not depend on z and log det Q is a constant."""
    mean, cov = prior.transition(z, (end - start)[:, None], start[:, None])
    chol = torch.linalg.cholesky(cov)
    white_mean = torch.linalg.solve_triangular(chol, mean[..., None], upper=False)[..., 0]
    white_next = torch.linalg.solve_triangular(chol, following[..., None], upper=False)[..., 0]
    return -0.5 * torch.cdist(white_next, white_mean, compute_mode="donot_use_mm_for_euclid_dist").square()


def _ancestral_paths(filtered: ParticleFilterResult, n_paths: int, generator: torch.Generator | None) -> Tensor:
    """Genealogy-traced paths (S, n, T, d): final particles drawn by weight, then their parents."""
    index = _draw(filtered.log_weights[:, -1], n_paths, generator)  # (n, S)
    path = [_pick(filtered.particles[:, -1], index)]
    for k in range(filtered.ancestors.shape[1] - 1, -1, -1):
        index = torch.gather(filtered.ancestors[:, k], 1, index)
        path.append(_pick(filtered.particles[:, k], index))
    return torch.stack(path[::-1], dim=2).movedim(1, 0)


def repeated_log_likelihood(x: Tensor, times, prior: SDEPrior, likelihood: Likelihood, *, repeats: int = 20,
                            n_particles: int = 1000, substeps: int = 1,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(mean, se), each (n,), of log p̂(x) over R = ``repeats`` independent runs of
    :func:`particle_filter` (arguments as there), run as one filter over R n series.

    ``se`` is the standard error of ONE run's estimate, the sample sd over the runs (R − 1
    degrees of freedom): choose ``n_particles`` so that it is below 0.1 nats. The mean of the
    R runs has standard error se / √R, and both are biased low by about se² / 2 (the log of
    an unbiased estimate of p(x), by Jensen's inequality and the delta method).
    """
    _check_count(repeats, "repeats", 2)
    times = check_times(times)
    tiled_times = times if times.ndim == 1 else times.repeat(repeats, 1)
    runs = particle_filter(x.repeat(repeats, 1, 1), tiled_times, prior, likelihood, n_particles=n_particles,
                           substeps=substeps, keep_particles=False, generator=generator)
    estimates = runs.log_likelihood.reshape(repeats, x.shape[0])
    return estimates.mean(0), estimates.std(0)
