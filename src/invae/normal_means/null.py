"""The null of the two-groups model, and Efron's empirical null by central matching.

Local false discovery rates need a null that exists in the prior: ``g = π₀ δ(ν) + (1 − π₀) g₁``
(an explicit point mass at the null value ν with its own weight π₀), so that

    lfdr_i = P(z_i = ν | x_i) = π₀ φ_σi(x_i − ν) / f(x_i)

(:func:`~invae.normal_means.grid.grid_posterior` reads it off the posterior mass of the atom ν).

The *theoretical* null is ``x_i ~ N(ν, σ_i²)``. Real z-values' null is rarely exactly N(0, 1)
(correlation between tests, a mis-specified test statistic: Efron 2004, "Large-scale
simultaneous hypothesis testing: the choice of a null hypothesis"), so the *empirical* null
``z ~ N(δ₀, σ₀²)`` is fitted to the centre of the z-values by *central matching* (Efron's
``locfdr``, ``nulltype = 2``), assuming that nearly all z-values there are null:

1. the density f of z: a Poisson regression of the counts of a histogram (120 breaks) on a natural
   cubic spline basis of the bin midpoints (df 7, R's ``ns``), ``log E[y_b] = β₀ + Q_b β``;
2. a quadratic ``log f̂(t) ≈ c₀ + c₁ t + c₂ t²`` fitted by least squares over the bins inside
   the central 50% of z (the quartiles);
3. ``log(π₀ N h φ((t − δ₀)/σ₀)/σ₀)`` is that quadratic, so ``σ₀ = (−2c₂)^-½``,
   ``δ₀ = −c₁ / (2c₂)``, and π₀ = Σ_b f̂₀(t_b) / Σ_b f̂(t_b), f̂₀ the quadratic's exponential.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.interpolate import BSpline
from scipy.linalg import null_space

__all__ = ["EmpiricalNull", "HistogramDensity", "NullFit", "central_bins", "empirical_null", "histogram_density",
           "natural_spline_basis", "specify_null"]

BREAKS = 120  # locfdr's defaults: the histogram's breaks, the spline's df, the central quantile
DF = 7
CENTRAL = 0.25


@dataclass(frozen=True)
class HistogramDensity:
    """``midpoints`` (B,) of equal bins of ``width``, their ``counts`` (B,), and the Poisson
    regression's ``fitted`` counts (B,): the density of z at t_b is fitted_b / (N · width)."""

    midpoints: np.ndarray
    counts: np.ndarray
    fitted: np.ndarray
    width: float

    def density(self, t: np.ndarray) -> np.ndarray:
        """f̂(t), linear between the midpoints (constant beyond them), shape of t."""
        scale = self.counts.sum() * self.width
        return np.interp(t, self.midpoints, self.fitted / scale)


@dataclass(frozen=True)
class EmpiricalNull:
    """``z ~ N(delta, sd²)`` among the nulls, with ``proportion`` π₀ the central matching's
    estimate of the null share (module docstring)."""

    delta: float
    sd: float
    proportion: float


@dataclass(frozen=True)
class NullFit:
    """The null of a two-groups fit: ``z_i = value`` (ν) with prior weight ``proportion`` (π̂₀,
    the spike's fitted mass), under which ``x_i ~ N(ν, (scale · σ_i)²)``. ``kind``:
    "theoretical" (scale 1) or "empirical" (ν = σ δ̂₀ and scale σ̂₀ by central matching on
    z = x/σ, ``central_proportion`` its own π₀)."""

    kind: str
    value: float
    scale: float = 1.0
    proportion: float = float("nan")
    central_proportion: float | None = None

    def with_proportion(self, proportion: float) -> NullFit:
        return replace(self, proportion=float(proportion))


def specify_null(null: float | str, x: np.ndarray, sigma: np.ndarray) -> NullFit:
    """The null asked for: a number ν (the theoretical null N(ν, σ_i²)) or "empirical"
    (central matching on z = x/σ, which needs one σ for every row: z-values)."""
    if null != "empirical":
        try:
            value = float(null)
        except (TypeError, ValueError):
            raise ValueError(f"the null is a number, 'empirical' or 'none', got {null!r}") from None
        if not x.min() < value < x.max():
            raise ValueError(f"the null value {value:g} lies outside the data's range [{x.min():.4g}, {x.max():.4g}]: "
                             "no lfdr can be estimated against it")
        return NullFit("theoretical", value)
    if np.ptp(sigma) > 1e-12 * sigma.max():
        raise ValueError("an empirical null needs one noise sd for every row (z-values); σ_i vary here")
    fitted = empirical_null(x / sigma[0])
    return NullFit("empirical", fitted.delta * sigma[0], fitted.sd, central_proportion=fitted.proportion)


def natural_spline_basis(t: np.ndarray, df: int) -> np.ndarray:
    """R's ``ns(t, df)`` up to a linear map: (T, df) natural cubic splines (linear beyond the
    boundary knots) with df − 1 interior knots at quantiles of t, orthonormal columns of mean 0.

    The cubic B-splines on those knots (scipy), restricted to the combinations whose second
    derivative vanishes at both ends, less the constant. By hand because scikit-learn's
    ``SplineTransformer`` has no natural splines; they matter: locfdr's central matching on
    the prostate data moves from σ̂₀ = 1.03 with plain B-splines to Efron's 1.09 with them.
    """
    low, high = float(t.min()), float(t.max())
    knots = np.r_[[low] * 4, np.quantile(t, np.linspace(0, 1, df + 1)[1:-1]), [high] * 4]
    count = len(knots) - 4
    curvature = np.array([[BSpline(knots, unit, 3).derivative(2)(end) for unit in np.eye(count)]
                          for end in (low, high)])
    basis = BSpline.design_matrix(t, knots, 3).toarray() @ null_space(curvature)
    left, values, _ = np.linalg.svd(basis - basis.mean(axis=0), full_matrices=False)
    return left[:, values > 1e-8 * values[0]]


def histogram_density(z: np.ndarray, breaks: int = BREAKS, df: int = DF) -> HistogramDensity:
    """Efron's density estimate of z-values ``z`` (N,): counts in ``breaks − 1`` equal bins over
    their range, smoothed by a Poisson regression on ``df`` natural cubic splines
    (scikit-learn's ``PoissonRegressor``, unpenalised)."""
    from sklearn.linear_model import PoissonRegressor

    z = np.asarray(z, dtype=np.float64)
    edges = np.linspace(z.min(), z.max(), breaks)
    counts, _ = np.histogram(z, edges)
    midpoints = (edges[1:] + edges[:-1]) / 2
    basis = natural_spline_basis(midpoints, df)
    regression = PoissonRegressor(alpha=0.0, solver="newton-cholesky", max_iter=1000).fit(basis, counts)
    return HistogramDensity(midpoints, counts.astype(np.float64), regression.predict(basis), float(edges[1] - edges[0]))


def central_bins(z: np.ndarray, midpoints: np.ndarray, central: float = CENTRAL) -> np.ndarray:
    """Which bins (B,) have their midpoint between the ``central`` and ``1 − central``
    quantiles of z: the centre where nearly all z-values are null."""
    low, high = np.quantile(z, [central, 1 - central])
    return (midpoints > low) & (midpoints < high)


def empirical_null(z: np.ndarray, central: float = CENTRAL) -> EmpiricalNull:
    """The null ``N(δ₀, σ₀²)`` of z-values ``z`` (N,) by central matching (module docstring),
    over the bins between the ``central`` and ``1 − central`` quantiles of z."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 1 or len(z) < 50:
        raise ValueError(f"an empirical null needs at least 50 z-values, got shape {z.shape}")
    estimate = histogram_density(z)
    inside = central_bins(z, estimate.midpoints, central)
    if inside.sum() < 3:
        raise ValueError("too few histogram bins in the centre of the z-values to fit the empirical null")
    centre = estimate.midpoints[np.argmax(estimate.fitted)]  # centred, as locfdr, for a well-posed fit
    t = estimate.midpoints - centre
    c0, c1, c2 = np.polynomial.polynomial.polyfit(t[inside], np.log(estimate.fitted[inside]), 2)
    if not c2 < 0:
        raise ValueError("the centre of the z-values is not peaked (log-density convex there): "
                         "central matching finds no null; use a theoretical null (--null VALUE)")
    null_counts = np.exp(c0 + c1 * t + c2 * t**2)
    return EmpiricalNull(float(centre - c1 / (2 * c2)), float((-2 * c2) ** -0.5),
                         float(null_counts.sum() / estimate.fitted.sum()))
