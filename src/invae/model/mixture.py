"""The Gaussian-mixture prior (docs/methods.md §2.7): ``z ~ Σ_k π_k N(μ_k, Λ_k⁻¹)``, k = 1..K;
with k known covariates c_i per row, ``z_i ~ Σ_k π_k N(μ_k + B_k c_i, Λ_k⁻¹)`` (§3.13).

The M-step maximises the expected complete-data log-density over (z, ℓ), ℓ the component
label, given responsibilities ``r_ik = q(ℓ_i = k)`` and the moments of z in each component:

    N_k = Σ_i r_ik,    π_k = N_k / n,    μ_k = (1/N_k) Σ_i r_ik E[z_i | ℓ_i = k],
    C_k = (1/N_k) Σ_i r_ik E[(z_i − μ_k)(z_i − μ_k)ᵀ | ℓ_i = k] + ε I,
    Λ_k = argmax  log det Λ − tr(Λ C_k) − (α n / N_k) ‖Λ‖_{1,off}

— the maximiser of ``(1/n) Σ_i E[log π_ℓ + log N(z_i; μ_ℓ, Λ_ℓ⁻¹)] − (α/2) Σ_k ‖Λ_k‖_{1,off}``
(component k's terms carry the weight N_k/n, hence its penalty α n/N_k). ``ε`` (``reg_covar``)
keeps a component that holds few points invertible, as in scikit-learn's GaussianMixture.

With covariates, each component's location μ_k + B_k c_i is the least-squares fit of
E[z_i | ℓ_i = k] on the design d_i = (1, c_i) (q = 1 + ``covariate_dim`` entries), row i
weighted by r_ik (:mod:`invae.model.location`):

    D_k = (1/n) Σ_i r_ik d_i d_iᵀ (q, q),   X_k = (1/n) Σ_i r_ik d_i E[z_i | k]ᵀ (q, p),
    S_k = (1/n) Σ_i r_ik E[z_i z_iᵀ | k],   [μ_k, B_k]ᵀ = D_k⁻¹ X_k,
    C_k = (S_k − X_kᵀ D_k⁻¹ X_k) / π_k + ε I      (the residual scatter; then Λ_k as above)

— for each fixed Λ_k the exact maximiser, as for one Gaussian (:mod:`invae.model.location`,
whose C is X_k here).
Without covariates D_k = π_k and X_k = π_k μ_k: the means and scatter above.

From draws of z (:meth:`GaussianMixture.statistics`, then :meth:`GaussianMixture.m_step_from`)
the responsibilities are the current prior's ``r_k(z) ∝ π_k N(z; μ_k + B_k c, Λ_k⁻¹)``: one EM step
on the draws, which cannot lower their mean log-density (a generalised M-step; the exact
maximiser has no closed form). Exact EM for a linear-Gaussian likelihood
(:mod:`invae.references.em`) passes the exact per-component posterior moments
(:mod:`invae.references.exact`) to :meth:`GaussianMixture.component_statistics`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from torch import Tensor

from .ggm import count_edges
from .graphical_lasso import SOLVERS, solve_precision
from .location import component_location_statistics, covariate_effects, design_rows, least_squares
from .prior import Prior

__all__ = ["GaussianMixture", "match_components"]

_REG_COVAR = 1e-6  # scikit-learn's GaussianMixture default
_OFF_ZERO = 10 * torch.finfo(torch.float64).eps  # keeps N_k off zero, as scikit-learn


class GaussianMixture(Prior):
    """``z ~ Σ_k π_k N(μ_k + B_k c, Λ_k⁻¹)`` with weights π (K,), means μ (K, p), precisions
    Λ (K, p, p) and, for k known covariates c per row, each component's effects B_k (K, p, k).

    Parameters
    ----------
    weights, means, precisions : arrays or tensors of shapes (K,), (K, p), (K, p, p)
    alpha : float
        Off-diagonal ℓ1 penalty on each Λ_k (0: the closed-form M-step Λ_k = C_k⁻¹).
    reg_covar : float
        ε ≥ 0 added to the diagonal of each component's covariance in the M-step.
    solver : {"newton", "sklearn"}
        The graphical-lasso solver when ``alpha > 0``.
    coefficients : array or tensor (K, p, k), or None
        The B_k, which every row's k covariates then enter (``covariate_dim = k``) and the
        M-step estimates; None: ``covariates`` columns of zeros.
    covariates : int
        k, when ``coefficients`` is None.
    """

    closed_form_gaussian_m_step = False

    def __init__(self, weights, means, precisions, *, alpha: float = 0.0, reg_covar: float = _REG_COVAR,
                 solver: str = "newton", coefficients=None, covariates: int = 0):
        super().__init__()
        precisions = torch.as_tensor(precisions)
        weights = torch.as_tensor(weights).to(precisions)
        means = torch.as_tensor(means).to(precisions)
        k, p = means.shape if means.ndim == 2 else (None, None)
        if k is None or weights.shape != (k,) or precisions.shape != (k, p, p):
            raise ValueError("a Gaussian mixture needs weights (K,), means (K, p) and precisions (K, p, p); got "
                             f"{tuple(weights.shape)}, {tuple(means.shape)}, {tuple(precisions.shape)}")
        if not (torch.isfinite(weights).all() and (weights > 0).all() and abs(float(weights.sum()) - 1) < 1e-6):
            raise ValueError(f"the mixture weights must be positive and sum to 1, got {weights.tolist()}")
        if not (alpha >= 0 and math.isfinite(alpha)) or not (reg_covar >= 0 and math.isfinite(reg_covar)):
            raise ValueError(f"alpha and reg_covar must be finite numbers >= 0, got {alpha}, {reg_covar}")
        if solver not in SOLVERS:
            raise ValueError(f"unknown graphical-lasso solver {solver!r}; choose one of {', '.join(SOLVERS)}")
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("means", means)
        self.register_buffer("precisions", 0.5 * (precisions + precisions.mT))
        self.register_buffer("coefficients", covariate_effects(coefficients, (k, p), covariates, precisions))
        self.alpha, self.reg_covar, self.solver = float(alpha), float(reg_covar), solver
        self.components, self.dim, self.covariate_dim = k, p, self.coefficients.shape[-1]
        chol, info = torch.linalg.cholesky_ex(self.precisions)
        self.register_buffer("_chol", chol, persistent=False)  # derived from the Λ_k: not a parameter
        if (info != 0).any() or not torch.isfinite(means).all():
            raise ValueError("each component needs a symmetric positive-definite precision and finite mean")

    @classmethod
    def standard(cls, dim: int, components: int, *, spread: float = 1.0, seed: int = 0, **options) -> GaussianMixture:
        """Equal weights, unit precisions and means drawn from N(0, spread² I): a start that
        breaks the symmetry between components (equal components would stay equal)."""
        generator = torch.Generator().manual_seed(seed)
        means = spread * torch.randn(components, dim, generator=generator, dtype=torch.float64)
        eye = torch.eye(dim, dtype=torch.float64).expand(components, dim, dim)
        return cls(torch.full((components,), 1.0 / components, dtype=torch.float64), means, eye, **options)

    @classmethod
    def from_signals(cls, z, components: int, *, seed: int = 0, **options) -> GaussianMixture:
        """The mixture scikit-learn's EM fits to signals z (n, p) (k-means start): a start for
        an estimator, e.g. from the naive reconstructions A⁺x. Its components are wider than
        the prior's by the noise in z, which the estimator then removes."""
        z = np.asarray(torch.as_tensor(z, dtype=torch.float64).cpu())
        if len(z) < components:
            raise ValueError(f"a mixture of {components} components needs at least {components} rows, got {len(z)}")
        fitted = SkGaussianMixture(components, reg_covar=options.get("reg_covar", _REG_COVAR), random_state=seed).fit(z)
        return cls(fitted.weights_, fitted.means_, fitted.precisions_, **options)

    def __repr__(self) -> str:
        extra = f", covariates={self.covariate_dim}" if self.covariate_dim else ""
        return f"GaussianMixture(dim={self.dim}, components={self.components}, alpha={self.alpha:g}{extra})"

    @property
    def covariances(self) -> Tensor:
        """Λ_k⁻¹, shape (K, p, p)."""
        return torch.cholesky_inverse(self._chol)

    @property
    def mean(self) -> Tensor:
        """E z = Σ_k π_k μ_k, shape (p,) (at c = 0 where there are covariates)."""
        return self.weights @ self.means

    @property
    def covariance(self) -> Tensor:
        """Cov z = Σ_k π_k (Λ_k⁻¹ + μ_k μ_kᵀ) − E z E zᵀ, shape (p, p) (at c = 0 where there are
        covariates)."""
        second = torch.einsum("k,kij->ij", self.weights, self.covariances + self.means[:, :, None] * self.means[:, None])
        return second - torch.outer(self.mean, self.mean)

    def component_means(self, covariates: Tensor | None = None) -> Tensor:
        """E[z | ℓ = k] = μ_k + B_k c: the μ_k (K, p) without covariates, (..., K, p) for covariates c (..., k)."""
        self._check_covariates(covariates)
        if self.covariate_dim == 0:
            return self.means
        return self.means + torch.einsum("...j,kpj->...kp", covariates.to(self.coefficients), self.coefficients)

    def component_log_prob(self, z: Tensor, covariates: Tensor | None = None) -> Tensor:
        """``log π_k + log N(z; μ_k + B_k c, Λ_k⁻¹)`` for z (..., p), covariates (..., k); returns (..., K)."""
        diff = z[..., None, :] - self.component_means(covariates)  # (..., K, p)
        white = torch.einsum("...ki,kij->...kj", diff, self._chol)  # (z−μ_k)ᵀ L_k, Λ_k = L_k L_kᵀ
        half_logdet = torch.log(torch.diagonal(self._chol, dim1=-2, dim2=-1)).sum(-1)
        return (torch.log(self.weights) + half_logdet - 0.5 * (white**2).sum(-1)
                - 0.5 * self.dim * math.log(2 * math.pi))

    def log_prob(self, z: Tensor, covariates: Tensor | None = None) -> Tensor:
        """``log Σ_k π_k N(z; μ_k + B_k c, Λ_k⁻¹)`` for z (..., p), covariates (..., k); returns (...)."""
        return torch.logsumexp(self.component_log_prob(z, covariates), dim=-1)

    def responsibilities(self, z: Tensor, covariates: Tensor | None = None) -> Tensor:
        """``r_k(z) = π_k N(z; μ_k + B_k c, Λ_k⁻¹) / g(z)`` for z (..., p), covariates c (..., k);
        returns (..., K)."""
        return torch.softmax(self.component_log_prob(z, covariates), dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None, covariates: Tensor | None = None) -> Tensor:
        """Labels ℓ_i ~ Categorical(π), then ``z_i = μ_ℓ + B_ℓ c_i + L_ℓ⁻ᵀ ε``; shape (n, p),
        covariates c (n, k)."""
        centres = self.component_means(covariates).expand(n, self.components, self.dim)
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, 1, generator=generator, dtype=self.means.dtype, device=self.means.device)
        offset = torch.linalg.solve_triangular(self._chol[labels].mT, eps, upper=True)[..., 0]
        return centres[torch.arange(n, device=labels.device), labels] + offset

    def statistics(self, z: Tensor, weights: Tensor | None = None, covariates: Tensor | None = None
                   ) -> dict[str, Tensor]:
        """The statistics of draws z (..., n, p) weighted by ``weights`` (..., n) (None: equally;
        see the module's docstring) of rows with ``covariates`` (n, k): responsibilities
        ``r_k(z) · w``, w rescaled to mean 1."""
        self._check_covariates(covariates)
        flat = z.reshape(-1, self.dim)
        rows = None if covariates is None else covariates.expand(*z.shape[:-1], -1).reshape(len(flat), -1)
        resp = self.responsibilities(flat, rows)
        if weights is not None:
            w = weights.reshape(-1, 1).to(resp)
            resp = resp * (w * len(w) / w.sum())
        return self.component_statistics(resp, flat, covariates=rows)

    def component_statistics(self, resp: Tensor, mean: Tensor, cov: Tensor | None = None,
                             covariates: Tensor | None = None) -> dict[str, Tensor]:
        """``weights`` N_k/n (K,), ``first`` (1/n) Σ_i r_ik E[z_i | k] (K, p) and ``second``
        (1/n) Σ_i r_ik E[z_i z_iᵀ | k] (K, p, p), in float64 (the scatter is their difference);
        with covariates also X_k (K, 1 + k, p) and D_k (K, 1 + k, 1 + k) of the module's docstring
        (``cross_moment``, ``design_moment``).

        ``resp`` (n, K) are r_ik; ``mean`` is E[z_i | ℓ_i = k], (n, K, p), or (n, p) when z_i
        is known (a draw); ``cov`` the within-component posterior covariance Cov[z_i | ℓ_i = k],
        (K, p, p) shared by all rows, or None when z_i is known; ``covariates`` the rows' c_i (n, k).
        """
        self._check_covariates(covariates)
        resp, mean = resp.to(torch.float64), mean.to(torch.float64)
        n = resp.shape[0]
        mean = (mean if mean.ndim == 3 else mean[:, None, :]).expand(n, self.components, self.dim)
        weights = resp.sum(0) / n
        second = torch.einsum("nk,nki,nkj->kij", resp, mean, mean) / n
        if cov is not None:
            second = second + weights[:, None, None] * cov.to(second)
        statistics = {"weights": weights, "first": torch.einsum("nk,nkp->kp", resp, mean) / n, "second": second}
        if self.covariate_dim:
            statistics |= component_location_statistics(design_rows(covariates, n, True, mean), resp, mean)
        return statistics

    def m_step_from(self, statistics: dict[str, Tensor]) -> GaussianMixture:
        """π_k, μ_k (and B_k), C_k and Λ_k of the module's docstring from :meth:`component_statistics`."""
        totals = statistics["weights"] + _OFF_ZERO
        theta, scatter = self.location_fit(statistics)
        scatter = scatter + self.reg_covar * torch.eye(self.dim, dtype=scatter.dtype, device=scatter.device)
        precisions = torch.stack([self._solve(scatter[k], self.alpha / float(totals[k]), k)
                                  for k in range(self.components)])
        return self._with(*(t.to(self.means) for t in (totals / totals.sum(), theta[:, 0], precisions,
                                                         theta[:, 1:].mT)))

    def location_fit(self, statistics: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(Θ̂_k = D_k⁻¹ X_k, stacked (K, 1 + k, p): rows μ_k, then B_kᵀ; the scatter
        (S_k − X_kᵀ D_k⁻¹ X_k) / π_k (K, p, p)) from :meth:`component_statistics` (module
        docstring), by :func:`~invae.model.location.least_squares` on the moments divided by π_k:
        without covariates (D_k = π_k, X_k = ``first``) exactly ``first/π_k`` and
        ``second/π_k − μ_k μ_kᵀ``. π_k + ε' and D_k + ε' I (ε' = 10 machine epsilons) keep an
        empty component's fit defined (μ_k = 0, B_k = 0), as scikit-learn keeps N_k off zero;
        covariates collinear on one component's rows leave its fitted locations unique
        (:mod:`invae.model.location`)."""
        totals = (statistics["weights"] + _OFF_ZERO)[:, None, None]
        design = statistics.get("design_moment", statistics["weights"][:, None, None])
        ridge = _OFF_ZERO * torch.eye(design.shape[-1], dtype=design.dtype, device=design.device)
        cross = statistics.get("cross_moment", statistics["first"][:, None, :])
        return least_squares({"second_moment": statistics["second"] / totals, "cross_moment": cross / totals,
                              "design_moment": (design + ridge) / totals})

    def penalty(self) -> float:
        """``(α/2) Σ_k ‖Λ_k‖_{1,off}``."""
        off = self.precisions.abs().sum() - torch.diagonal(self.precisions, dim1=-2, dim2=-1).abs().sum()
        return 0.5 * self.alpha * float(off)

    def relative_change(self, previous: GaussianMixture) -> float:
        """The largest ``‖θ − θ_prev‖_F / ‖θ_prev‖_F`` over θ = π, the Λ's, and the means and the
        covariates' effects B_k where they were not all 0."""
        pairs = [(self.weights, previous.weights), (self.precisions, previous.precisions)]
        pairs += [(new, old) for new, old in ((self.means, previous.means), (self.coefficients, previous.coefficients))
                  if bool(old.any())]
        return max(float(torch.linalg.norm(new - old) / torch.linalg.norm(old)) for new, old in pairs)

    def with_penalty(self, alpha: float) -> GaussianMixture:
        return GaussianMixture(self.weights, self.means, self.precisions, alpha=alpha, reg_covar=self.reg_covar,
                               solver=self.solver, coefficients=self.coefficients)

    def config(self) -> dict:
        return {"alpha": self.alpha, "reg_covar": self.reg_covar, "solver": self.solver}

    @classmethod
    def from_state(cls, state: dict[str, Tensor], **config) -> GaussianMixture:
        """Model files of a mixture without covariates hold no ``coefficients``."""
        return cls(state["weights"], state["means"], state["precisions"], coefficients=state.get("coefficients"),
                   **config)

    def summary(self) -> dict:
        """The penalty α and the edges of the K components' graphs, summed."""
        return {"penalty": self.alpha, "edges": count_edges(self.precisions)}

    def state(self) -> dict[str, Tensor]:
        """π, the μ_k and the Λ_k, and the B_k where rows bring covariates: a mixture without
        them has the parameters its model files and outputs have always had."""
        state = {"weights": self.weights, "means": self.means, "precisions": self.precisions}
        if self.covariate_dim:
            state["coefficients"] = self.coefficients
        return state

    def with_state(self, state: dict[str, Tensor]) -> GaussianMixture:
        return self._with(*(state[key].to(self.precisions) for key in ("weights", "means", "precisions")),
                          state.get("coefficients", self.coefficients).to(self.precisions))

    def to(self, device=None, dtype=None) -> GaussianMixture:
        return self._with(*(t.to(device=device, dtype=dtype) for t in (self.weights, self.means, self.precisions,
                                                                         self.coefficients)))

    def _solve(self, scatter: Tensor, alpha: float, k: int) -> Tensor:
        """Λ_k from its covariance C_k: C_k⁻¹ for α = 0, else the graphical lasso warm-started at Λ_k."""
        s = scatter.detach().to("cpu", torch.float64).numpy()
        start = self.precisions[k].detach().to("cpu", torch.float64).numpy()
        return torch.from_numpy(solve_precision(s, alpha, initial=start, solver=self.solver)).to(scatter)

    def _with(self, weights: Tensor, means: Tensor, precisions: Tensor, coefficients: Tensor) -> GaussianMixture:
        """This prior's settings with other parameters."""
        return GaussianMixture(weights, means, precisions, alpha=self.alpha, reg_covar=self.reg_covar,
                               solver=self.solver, coefficients=coefficients)


def match_components(estimate: GaussianMixture, truth: GaussianMixture) -> np.ndarray:
    """The permutation of ``estimate``'s components that best matches ``truth``'s (labels are
    arbitrary): ``order[k]`` is the estimated component paired with true component k,
    minimising the summed squared distance between means (Hungarian algorithm)."""
    cost = torch.cdist(truth.means.double().cpu(), estimate.means.double().cpu()).square().numpy()
    return linear_sum_assignment(cost)[1]
