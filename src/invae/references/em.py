"""Exact EM for the linear-Gaussian Gaussian-graphical model (docs/methods.md §2.5).

E-step (exact):  μ_i = Σ_post Aᵀ D⁻¹ x_i,   S = Σ_post + (1/n) Σ_i μ_i μ_iᵀ
                 (with one σ_i per row, Σ_post,i differs by row and S averages them;
                 with a prior location η_i, μ_i = Σ_post (Λ η_i + Aᵀ D⁻¹ x_i))
M-step:          Λ ← argmax log det Λ − tr(Λ S) − α ‖Λ‖_{1,off}
                 (with a fitted location, (μ, B) by least squares of the μ_i on (1, c_i)
                 first and S about them: docs/methods.md §3.13)

Under a graphical prior with the same noise for every row, EM depends on the rows only through
their mean and covariance, taken in one pass over them; it then runs on 2r rows with the same
moments (:mod:`invae.references.moments`, docs/methods.md §3.17).

Each iteration cannot decrease the penalised marginal log-likelihood
``(1/n) Σ_i log p(x_i; Λ) − (α/2) ‖Λ‖_{1,off}``: this is the estimate the variational
estimators chase. It stops when that objective rises by less than ``tol`` (relative).

Gaussian-mixture prior (:class:`~invae.model.mixture.GaussianMixture`): the E-step is the exact
mixture posterior (responsibilities and per-component Gaussian posteriors, :mod:`invae.references.exact`)
and the M-step ``m_step_from`` on :meth:`~invae.model.mixture.GaussianMixture.component_statistics`
(with covariates, each component's (μ_k, B_k) by least squares weighted by the responsibilities);
EM over (z, ℓ), ℓ the component labels, ascends the same objective with the penalty
``(α/2) Σ_k ‖Λ_k‖_{1,off}``.

``mean_field=True`` restricts the E-step to diagonal Gaussians, the family of the ``vae``
and ``mean-field`` methods. For a Gaussian posterior N(μ, P⁻¹) the best such q has the
exact means μ and variances 1/P_jj, so this is the exact optimum of the diagonal family
(variational EM by coordinate ascent): what those methods reach at best. Its objective is
the ELBO, the above minus ``KL(q ‖ p(z|x)) = ½ (Σ_j log P_jj − log det P)``.
"""

from __future__ import annotations

import time
import warnings

import torch
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor
from tqdm.auto import tqdm

from ..inference.base import EmpiricalBayesEstimator, progress_disabled
from ..model.mixture import GaussianMixture
from ..model.rows import RowMoments, block_average, row_blocks, split_rows
from ..threads import using_threads
from .exact import exact_posterior, marginal_log_likelihood, mean_field_optimum, mixture_posterior
from .moments import moments_suffice, sigma_rows

__all__ = ["EM"]


class EM(EmpiricalBayesEstimator):
    """Penalised maximum marginal likelihood by exact EM.

    Parameters
    ----------
    prior : GaussianGraphicalModel or GaussianMixture
        Start value of the parameters and the penalty α.
    likelihood : GaussianLikelihood or NoisePerRowGaussianLikelihood
        Linear-Gaussian measurement ``x = A z + σ ε``; the latter with a known σ_i in each
        row (Gaussian graphical prior only).
    max_iter : int
        Iteration cap; a :class:`~sklearn.exceptions.ConvergenceWarning` if reached.
    tol : float
        Stop when the objective rises by at most ``tol · max(1, |objective|)``.
    verbose : bool or int
        A progress bar on stderr: 1 (True) when stderr is a terminal, 2 always, 0 never.
    mean_field : bool
        Diagonal-Gaussian E-step (the diagonal family's optimum) instead of the exact one.
    warm_start : bool
        Start the next ``fit`` from the last fit's Λ̂ (with ``prior``'s penalty).
    callback : callable, optional
        ``callback(iteration, prior)`` after each iteration.
    n_threads : int or None
        torch threads during ``fit`` (:mod:`invae.threads`: None means ``$INVAE_NUM_THREADS``, else 1).

    Attributes
    ----------
    prior_ : GaussianGraphicalModel
        The fitted prior; ``precision_`` is its Λ̂ as a NumPy array.
    history_ : dict
        ``objective`` (the penalised log-likelihood after each iteration, the start
        first) and ``time`` (seconds since the start of ``fit``).
    n_iter_ : int
    converged_ : bool
    """

    def __init__(self, prior, likelihood, *, max_iter: int = 1000, tol: float = 1e-9,
                 verbose: bool = False, mean_field: bool = False, warm_start: bool = False,
                 callback=None, n_threads: int | None = None, device: str = "cpu",
                 dtype: torch.dtype = torch.float64):
        super().__init__(prior, likelihood, warm_start=warm_start, callback=callback, device=device, dtype=dtype)
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.mean_field = mean_field
        self.n_threads = n_threads

    def _e_step(self, x: Tensor, prior, likelihood) -> tuple[Tensor, Tensor, float]:
        """Posterior means (n, p), variances ((p, p) covariance, or (p,) if mean-field), KL per row."""
        if self.mean_field:
            return mean_field_optimum(x, prior, likelihood)
        mean, cov = exact_posterior(x, prior, likelihood)
        return mean, cov, 0.0

    def _m_step(self, x: Tensor, prior, likelihood):
        """One EM iteration: the prior that maximises the expected complete-data objective, on
        the E-step's statistics taken block by block of rows (:meth:`_blocks`)."""
        if isinstance(prior, GaussianMixture) and self.mean_field:
            raise ValueError("mean_field applies to the Gaussian graphical prior, not to a mixture")
        return prior.m_step_from(block_average((len(block), self._statistics(block, prior, likelihood))
                                               for block in self._blocks(x)))

    def _statistics(self, x: Tensor, prior, likelihood) -> dict[str, Tensor]:
        """The E-step's expected sufficient statistics of the rows x (averages over them)."""
        covariates = split_rows(x, likelihood)[1]
        if isinstance(prior, GaussianMixture):
            post = mixture_posterior(x, prior, likelihood)
            return prior.component_statistics(post.responsibilities, post.means, post.cov, covariates=covariates)
        mean, cov, _ = self._e_step(x, prior, likelihood)
        if self.mean_field:
            return prior.gaussian_statistics(mean, var=cov.expand_as(mean), covariates=covariates)
        return prior.gaussian_statistics(mean, cov, covariates=covariates)

    def _objective(self, x: Tensor, prior, likelihood) -> float:
        """``(1/n) Σ_i log p(x_i; Λ) − penalty(Λ)`` (less the mean-field KL per row), block by block."""
        total = 0.0
        for block in self._blocks(x):
            kl = self._e_step(block, prior, likelihood)[2] if self.mean_field else 0.0
            total += float(marginal_log_likelihood(block, prior, likelihood).sum()) - kl * len(block)
        return total / len(x) - prior.penalty()

    def _blocks(self, x: Tensor):
        """x's rows in blocks (:meth:`_answer_blocks`), as tensors."""
        return (block for _, block in self._answer_blocks(x))

    def _answer_blocks(self, rows):
        """Blocks of rows small enough for a p × p matrix per row where each row has its own
        posterior covariance (one σ_i per row, missing entries, a mixture); a posterior mean per
        row where all share one (:func:`~invae.references.moments.moments_suffice`: each block
        then costs one p × p factorisation, whatever its rows). Bounded memory for any n."""
        shared = moments_suffice(self.prior, self.likelihood)
        per_row = self.prior.dim if shared else self.prior.dim**2
        return row_blocks(rows, dtype=self.dtype, device=self.device, entries_per_row=rows.shape[1] + per_row)

    def fit(self, X) -> EM:
        with using_threads(self.n_threads):
            return self._fit(X)

    def _fit(self, X) -> EM:
        prior, likelihood = self._models()
        x = self._fit_rows(X, prior, likelihood)
        start = time.perf_counter()
        objective = [self._objective(x, prior, likelihood)]
        elapsed = [0.0]
        converged = False
        with tqdm(total=self.max_iter, desc="EM", disable=progress_disabled(self.verbose),
                  leave=False) as bar:
            for _ in range(self.max_iter):
                prior = self._m_step(x, prior, likelihood)
                objective.append(self._objective(x, prior, likelihood))
                elapsed.append(time.perf_counter() - start)
                if self.callback is not None:
                    self.callback(len(objective) - 1, prior)
                change = objective[-1] - objective[-2]
                bar.update()
                bar.set_postfix(objective=f"{objective[-1]:.6g}", change=f"{change:.2e}")
                if abs(change) <= self.tol * max(1.0, abs(objective[-1])):
                    converged = True
                    break
        if not converged:
            warnings.warn(f"EM stopped at max_iter={self.max_iter} before the objective settled "
                          f"(last change {change:.3g}); raise max_iter or tol", ConvergenceWarning)
        self.prior_, self.likelihood_ = prior, likelihood
        self.history_ = {"objective": objective, "time": elapsed}
        self.n_iter_ = len(objective) - 1
        self.converged_ = converged
        return self

    def _fit_rows(self, X, prior, likelihood) -> Tensor:
        """The rows EM runs on: X's sigma rows where its moments suffice (:mod:`invae.references.moments`:
        the same Λ̂ from one pass over X), else X itself."""
        if not moments_suffice(prior, likelihood):
            return self._tensor(X)
        return sigma_rows(RowMoments.of(self._rows(X))).to(self.device, self.dtype)

    def _posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if isinstance(self.prior_, GaussianMixture):
            post = mixture_posterior(x, self.prior_, self.likelihood_)
            return post.mean, post.variance.sqrt()
        mean, cov, _ = self._e_step(x, self.prior_, self.likelihood_)
        variance = cov if self.mean_field else torch.diagonal(cov, dim1=-2, dim2=-1)
        return mean, variance.sqrt().expand_as(mean)
