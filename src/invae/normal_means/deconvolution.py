"""The VAE-like estimator with its closed-form q-step: a Gaussian mixture deconvolved by exact EM.

Model: ``z_i ~ g = Σ_c π_c N(m_c, v_c)``, ``x_i | z_i ~ N(z_i, σ_i²)``. The exact posterior of
z_i is a mixture of as many Gaussians, a member of ``VariationalEB``'s ``mixture`` family, so
the VAE-like estimator's q-step has a closed form, and with it the fit is EM (docs/methods.md
§2.2 and §3.10.8; Bovy, Hogg & Roweis 2011, "extreme deconvolution", in one dimension):

    E-step:  r_ic = π_c N(x_i; m_c, v_c + σ_i²) / f(x_i),   f(x_i) = Σ_c π_c N(x_i; m_c, v_c + σ_i²)
             z_i | x_i, c ~ N(b_ic, B_ic),   b_ic = m_c + v_c (x_i − m_c)/(v_c + σ_i²),
                                             B_ic = v_c σ_i² / (v_c + σ_i²)
    M-step:  π_c = (1/n) Σ_i r_ic,   m_c = Σ_i r_ic b_ic / Σ_i r_ic,
             v_c = Σ_i r_ic ((b_ic − m_c)² + B_ic) / Σ_i r_ic

Each iteration cannot lower ``Σ_i log f(x_i)``. A component may shrink towards a point
(v_c → 0): f stays bounded by the noise, unlike a Gaussian mixture fitted to x itself. A
component at v_c = 0 exactly would be a fixed point of EM (b_ic = m_c, B_ic = 0: it could never
move again), so the start has v_c > 0 and no accelerated step may reach 0; an empty component
(Σ_i r_ic = 0) stays at rest, with weight 0 to float precision.

Two-groups prior (``null`` ν, docs/methods.md §3.10.7): component 0 is the spike δ(ν)
(m_0 = ν and v_0 = 0 fixed, π₀ free); its posterior is the point ν, so lfdr_i = r_i0. A
component narrower than the noise at ν could not be told from the spike, and π₀ would be
shared between them at random (as the NPMLE's atoms beside ν, ``NPMLE_NULL_MARGIN``), so
the others keep out of the band ``|m_c − ν| < w, v_c < w²`` with w = ``NULL_WIDTH`` median
noise sds: a component within w of ν is at least w wide, a narrower one at least w from ν.
Given the responsibilities, a component's M-step objective is ``−½ N_c log v − (S_c + N_c (m −
m̄_c)²)/(2v)`` (m̄_c, S_c/N_c = v̄_c the unconstrained m_c, v_c). Where (m̄_c, v̄_c) falls in the
band, the constrained maximum is the better of (m̄_c, w²) and (ν ± w, v̄_c + (ν ± w − m̄_c)²)
(the edge of the band on m̄_c's side), so the M-step stays exact and EM monotone.

NumPy rather than :class:`~invae.model.mixture.GaussianMixture` and exact EM: the normal-means
methods run without torch, every row has its own posterior variance B_ic (σ_i varies), and a
spike has no precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from .grid import GridPrior, NormalMeansPosterior, discretize

__all__ = ["NULL_WIDTH", "MixturePrior", "DeconvolutionFit", "deconvolve", "posterior_summaries", "narrow_start"]

NULL_WIDTH = 1.0  # with a null, the band the other components keep out of, in median σ_i (docstring)
_EMPTY = 10 * np.finfo(np.float64).eps  # a component's total responsibility kept off zero, as scikit-learn


@dataclass(frozen=True)
class MixturePrior:
    """``g = Σ_c π_c N(m_c, v_c)``: ``weights`` π (K,), ``means`` m (K,), ``variances`` v (K,) ≥ 0
    (0: a point mass); ``null``: the index of the spike δ(ν) of a two-groups prior, or None."""

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    null: int | None = None

    def cdf(self, t: np.ndarray) -> np.ndarray:
        """G(t) = Σ_c π_c Φ((t − m_c)/√v_c) (a step at m_c where v_c = 0), shape of t."""
        return _component_cdf(np.asarray(t, dtype=np.float64)[..., None], self.means, self.variances) @ self.weights

    def on_grid(self, atoms: np.ndarray) -> GridPrior:
        """g on the grid ``atoms`` (K,), each atom holding its cell's mass; with a null, the
        spike's mass π₀ at the atom ν (which ``atoms`` must hold) and the rest spread over the
        other atoms."""
        if self.null is None:
            return discretize(self.cdf, atoms)
        spike = np.flatnonzero(atoms == self.means[self.null])
        if len(spike) != 1:
            raise ValueError(f"the null value {self.means[self.null]!r} is not an atom of the grid")
        rest = np.delete(np.arange(len(self.weights)), self.null)
        others = MixturePrior(self.weights[rest] / self.weights[rest].sum(), self.means[rest], self.variances[rest])
        masses = np.insert((1 - self.weights[self.null]) * discretize(others.cdf, np.delete(atoms, spike)).masses,
                           spike[0], self.weights[self.null])
        return GridPrior(atoms, masses)


@dataclass(frozen=True)
class DeconvolutionFit:
    """``prior``: the fitted g; ``log_likelihood``: Σ_i log f(x_i) after each cycle (the start
    first); ``n_iter``: the cycles; ``converged``."""

    prior: MixturePrior
    log_likelihood: list[float]
    n_iter: int
    converged: bool


def narrow_start(x: np.ndarray, components: int) -> MixturePrior:
    """Equal weights, means at the quantiles (k + ½)/K of x, sds half the spacing (q95 − q5)/K."""
    means = np.quantile(x, (np.arange(components) + 0.5) / components)
    spacing = max((np.quantile(x, 0.95) - np.quantile(x, 0.05)) / components, 1e-6)
    return MixturePrior(np.full(components, 1.0 / components), means, np.full(components, (0.5 * spacing) ** 2))


def deconvolve(x: np.ndarray, sigma: np.ndarray, *, components: int = 10, null: float | None = None,
               max_iter: int = 10_000, tol: float = 1e-8) -> DeconvolutionFit:
    """Fit g to ``x`` (n,) with noise sds ``sigma`` (n,) by EM (module docstring), from
    :func:`narrow_start` (with a null, the spike ν first, holding half the mass), until
    the log-likelihood rises by at most ``tol · |Σ log f|`` in a cycle (one EM iteration
    accelerated by SQUAREM, :func:`_squarem`)."""
    prior, band = narrow_start(x, components), None
    if null is not None:
        band = _Band(null, NULL_WIDTH * float(np.median(sigma)))
        means, variances = np.r_[null, prior.means], np.r_[0.0, prior.variances]
        prior = MixturePrior(np.r_[0.5, 0.5 * prior.weights], means, band.widened(means, variances, 0), 0)
    history: list[float] = []
    for cycle in range(max_iter + 1):
        first, value = _em_map(x, sigma, prior, band)
        history.append(value)
        if cycle and history[-1] - history[-2] <= tol * abs(history[-1]):
            return DeconvolutionFit(prior, history, cycle, True)
        if cycle < max_iter:
            prior = _squarem(x, sigma, band, prior, first, value)
    return DeconvolutionFit(prior, history, max_iter, False)


@dataclass(frozen=True)
class _Band:
    """The region ``|m − ν| < w, v < w²`` that a two-groups prior's other components keep out of
    (module docstring): ``value`` ν, ``width`` w."""

    value: float
    width: float

    def inside(self, means: np.ndarray, variances: np.ndarray, null: int) -> np.ndarray:
        """Which components (K,) but the spike (index ``null``) lie in the band (with a margin of
        float round-off at its edge)."""
        inside = (np.abs(means - self.value) < self.width * (1 - 1e-12)) & (variances < self.width**2 * (1 - 1e-12))
        inside[null] = False
        return inside

    def widened(self, means: np.ndarray, variances: np.ndarray, null: int) -> np.ndarray:
        """The variances with every component in the band but the spike widened to w²: a start."""
        return np.where(self.inside(means, variances, null), self.width**2, variances)

    def maximise(self, means: np.ndarray, variances: np.ndarray, null: int) -> tuple[np.ndarray, np.ndarray]:
        """The M-step's (m, v) out of the band: for a component whose unconstrained (m̄, v̄) lies in
        it, the better of (m̄, w²) and (ν ± w, v̄ + (ν ± w − m̄)²) (module docstring); the spike as it is."""
        inside = self.inside(means, variances, null)
        edge = self.value + np.where(means >= self.value, self.width, -self.width)
        spread = variances + (edge - means) ** 2
        wide = -0.5 * np.log(self.width**2) - 0.5 * variances / self.width**2  # objective per unit N_c
        apart = -0.5 * np.log(np.where(inside, spread, 1.0)) - 0.5
        to_edge = inside & (apart > wide)
        return np.where(to_edge, edge, means), np.where(to_edge, spread, np.where(inside, self.width**2, variances))


def _em_map(x: np.ndarray, sigma: np.ndarray, prior: MixturePrior, band: _Band | None) -> tuple[MixturePrior, float]:
    """(one EM iteration from ``prior``, Σ_i log f(x_i) at ``prior``)."""
    resp, mean, var, log_f = _components(x, sigma, prior)
    return _m_step(resp, mean, var, prior, band), float(log_f.sum())


def _squarem(x: np.ndarray, sigma: np.ndarray, band: _Band | None, start: MixturePrior, first: MixturePrior,
             value: float) -> MixturePrior:
    """One SQUAREM cycle (Varadhan & Roland 2008, scheme S3) from θ₀ = ``start`` with θ₁ = F(θ₀)
    (``first``) and Σ log f(θ₀) = ``value``: θ₂ = F(θ₁), r = θ₁ − θ₀, v = θ₂ − 2θ₁ + θ₀,
    α = min(−1, −‖r‖/‖v‖), and F(θ₀ − 2αr + α²v); α is halved towards −1 (where the point is θ₂)
    until that point is a valid prior (:func:`_valid`) whose likelihood is no lower than θ₀'s, so
    every cycle keeps EM's ascent. Plain EM crawls where components shrink to points
    (docs/methods.md §3.10.8)."""
    second, _ = _em_map(x, sigma, first, band)
    theta = [np.stack([p.weights, p.means, p.variances]) for p in (start, first, second)]
    r, v = theta[1] - theta[0], theta[2] - 2 * theta[1] + theta[0]
    alpha = -np.linalg.norm(r) / max(np.linalg.norm(v), np.finfo(np.float64).tiny)
    while alpha < -1 - 1e-3:
        candidate = MixturePrior(*(theta[0] - 2 * alpha * r + alpha**2 * v), start.null)
        if _valid(candidate, band):
            candidate = MixturePrior(candidate.weights / candidate.weights.sum(), candidate.means,
                                     candidate.variances, start.null)
            stabilised, reached = _em_map(x, sigma, candidate, band)
            if reached >= value:
                return stabilised
        alpha = (alpha - 1) / 2
    return second


def _valid(prior: MixturePrior, band: _Band | None) -> bool:
    """Positive weights, and every component but the spike of positive variance (v = 0 is
    absorbing: module docstring) and out of the band."""
    others = np.ones(len(prior.weights), dtype=bool)
    if prior.null is not None:
        others[prior.null] = False
    if not ((prior.weights > 0).all() and (prior.variances[others] > 0).all()):
        return False
    return band is None or not band.inside(prior.means, prior.variances, prior.null).any()


def _components(x: np.ndarray, sigma: np.ndarray,
                prior: MixturePrior) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(r_ic, b_ic, B_ic), each (K, n), the exact posterior (module docstring), and log f(x_i) (n,).
    Components run along the first axis: reductions over K few components are then elementwise
    operations on rows of n, which NumPy does far faster than reductions along a short last axis."""
    m, v = prior.means[:, None], prior.variances[:, None]
    total = v + sigma**2
    with np.errstate(divide="ignore"):
        joint = np.log(prior.weights)[:, None] - 0.5 * ((x - m) ** 2 / total + np.log(2 * np.pi * total))
    top = joint.max(axis=0)
    resp = np.exp(joint - top)  # logsumexp by hand, sharing the exp with r_ic: scipy's is far slower here
    norm = resp.sum(axis=0)
    resp /= norm
    gain = v / total
    return resp, m + gain * (x - m), gain * sigma**2, top + np.log(norm)


def _m_step(resp: np.ndarray, mean: np.ndarray, var: np.ndarray, prior: MixturePrior,
            band: _Band | None) -> MixturePrior:
    """π, m and v of the module docstring from the E-step's (r_ic, b_ic, B_ic), each (K, n),
    kept out of the ``band`` of a two-groups prior; the spike stays at ν with v = 0."""
    totals = resp.sum(axis=1) + _EMPTY
    means = (resp * mean).sum(axis=1) / totals
    variances = (resp * ((mean - means[:, None]) ** 2 + var)).sum(axis=1) / totals
    if prior.null is not None:
        means[prior.null], variances[prior.null] = prior.means[prior.null], 0.0
        means, variances = band.maximise(means, variances, prior.null)
    return MixturePrior(totals / totals.sum(), means, variances, prior.null)


def posterior_summaries(x: np.ndarray, sigma: np.ndarray, prior: MixturePrior,
                      location: np.ndarray | None = None) -> NormalMeansPosterior:
    """Every z_i's posterior mean, sd, lfsr and (with a null) lfdr under g, exact: x (n,) and
    σ (n,); ``location`` (n,) shifts the prior row by row (``z_i = ℓ_i + θ_i``, θ_i ~ g)."""
    shift = np.zeros_like(x) if location is None else location
    resp, mean, var, _ = _components(x - shift, sigma, prior)
    total = (resp * mean).sum(axis=0)
    spread = (resp * (var + (mean - total) ** 2)).sum(axis=0)
    threshold = -shift  # z_i ≤ 0  ⟺  θ_i ≤ −ℓ_i
    below = (resp * _component_cdf(threshold, mean, var)).sum(axis=0)
    above = (resp * _component_cdf(-threshold, -mean, var)).sum(axis=0)
    lfdr = None if prior.null is None else resp[prior.null]
    return NormalMeansPosterior(total + shift, np.sqrt(spread), np.minimum(below, above), lfdr)


def _component_cdf(t: np.ndarray, means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """P(z ≤ t) under N(m, v) elementwise (broadcast), and 1[m ≤ t] where v = 0 (a point,
    counted on both sides of t = m, as the grid's lfsr counts an atom at 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        smooth = ndtr((t - means) / np.sqrt(variances))
    return np.where(variances > 0, smooth, (means <= t).astype(np.float64))
