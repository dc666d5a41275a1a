"""A reference posterior where there is no closed form: self-normalised importance sampling.

For any prior and likelihood (nonlinear forward operators, Poisson counts, mixtures) and
given parameters — the truth, for the Bayes oracle — each observation's posterior
``p(z | x) ∝ g(z) p(x | z)`` is estimated from ``S`` weighted draws of a proposal:

    proposal  r(z) = (1 − δ) t_ν(z; ẑ, C) + δ g(z)         (defensive mixture, Hesterberg 1995)
    weights   w_s = g(z_s) p(x | z_s) / r(z_s),   w̃_s = w_s / Σ_t w_t
    E[f(z) | x] ≈ Σ_s w̃_s f(z_s),   log p(x) ≈ log (1/S) Σ_s w_s,   ESS = 1 / Σ_s w̃_s²

``ẑ`` is the posterior mode (L-BFGS on all rows at once: the objective is a sum over rows)
and ``C`` the inverse Hessian of ``−log g(z) − log p(x | z)`` there (eigenvalues clipped to
stay positive): a Laplace approximation with heavier (Student-t, ν = 5) tails. The prior
component ``δ g`` bounds the weights by ``p(x | z)/δ``, so a missed mode costs efficiency,
not correctness. The estimates are consistent as S → ∞; their Monte Carlo standard error is
about sd(z | x)/√ESS. Why by hand: the posterior of every row is needed, vectorised over
thousands of rows with a few dimensions each; Pyro's NUTS and importance classes run one
model at a time, and a per-row sampler would be far slower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.likelihoods import Likelihood
from ..model.prior import Prior
from ..model.rows import log_joint, split_rows

__all__ = ["ImportancePosterior", "importance_posterior", "importance_em"]

_ROWS_PER_CHUNK = 256  # rows weighted at a time: S × rows × p draws in memory


@dataclass(frozen=True)
class ImportancePosterior:
    """Per-row estimates: ``mean`` (n, p), ``cov`` (n, p, p), ``log_evidence`` and ``ess`` (n,)."""

    mean: Tensor
    cov: Tensor
    log_evidence: Tensor
    ess: Tensor

    @property
    def std(self) -> Tensor:
        """Marginal posterior standard deviations, (n, p)."""
        return torch.diagonal(self.cov, dim1=-2, dim2=-1).sqrt()


def importance_posterior(x, prior: Prior, likelihood: Likelihood, *, n_draws: int = 4096, df: float = 5.0,
                         defensive: float = 0.1, seed: int = 0) -> ImportancePosterior:
    """The importance-sampling posterior (module docstring) of every data row of x (n, row
    columns, :mod:`invae.model.rows`), in float64.

    ``n_draws`` S per row, ``df`` ν of the Student-t proposal, ``defensive`` δ ∈ (0, 1) the
    prior's share of the proposal; ``seed`` makes the draws repeatable.
    """
    if not 0 < defensive < 1:
        raise ValueError(f"defensive must be in (0, 1), got {defensive}")
    x = torch.as_tensor(x, dtype=torch.float64)
    prior, likelihood = prior.to("cpu", torch.float64), likelihood.to("cpu", torch.float64)
    generator = torch.Generator().manual_seed(seed)
    mode = _posterior_mode(x, prior, likelihood)
    scale_tril = _laplace_scale(x, mode, prior, likelihood)
    parts = [_weighted(x[rows], mode[rows], scale_tril[rows], prior, likelihood, n_draws, df, defensive, generator)
             for rows in (slice(i, i + _ROWS_PER_CHUNK) for i in range(0, len(x), _ROWS_PER_CHUNK))]
    return ImportancePosterior(*(torch.cat(field) for field in zip(*parts)))


def importance_em(x, prior: Prior, likelihood: Likelihood, *, max_iter: int = 100, tol: float = 1e-3,
                  n_draws: int = 1024, seed: int = 0) -> tuple[Prior, int]:
    """Monte Carlo EM with the importance-sampling E-step: a reference for the (penalised)
    maximum marginal likelihood where it has no closed form. Returns (prior, iterations).

        E-step:  μ_i, Σ_i = posterior mean and covariance of z_i under the current prior
        M-step:  prior ← prior.m_step_gaussian(μ, Σ)   (Λ ← glasso on S = (1/n) Σ_i Σ_i + μ_i μ_iᵀ)

    Every E-step reuses ``seed`` (common random numbers). It stops when the parameters move
    by less than ``tol`` (relative): below that the Monte Carlo error of the E-step, about
    1/√(n·ESS), dominates the moves. Needs a prior with a closed-form Gaussian M-step.
    """
    if not prior.closed_form_gaussian_m_step:
        raise ValueError(f"importance_em needs a prior with a closed-form Gaussian M-step, not {prior!r}")
    prior = prior.to("cpu", torch.float64)
    for iteration in range(1, max_iter + 1):
        post = importance_posterior(x, prior, likelihood, n_draws=n_draws, seed=seed)
        covariates = split_rows(torch.as_tensor(x, dtype=torch.float64), likelihood)[1]
        previous, prior = prior, prior.m_step_gaussian(post.mean, post.cov, covariates=covariates)
        if prior.relative_change(previous) < tol:
            break
    return prior, iteration


def _negative_log_joint(z: Tensor, x: Tensor, prior: Prior, likelihood: Likelihood) -> Tensor:
    """``−log g(z_i) − log p(x_i | z_i)`` per row, (n,)."""
    return -log_joint(x, z, prior, likelihood)


def _posterior_mode(x: Tensor, prior: Prior, likelihood: Likelihood) -> Tensor:
    """argmax_z of each row's log joint, (n, p), by L-BFGS on the sum over rows."""
    z = torch.zeros(len(x), prior.dim, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([z], max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = _negative_log_joint(z, x, prior, likelihood).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return z.detach()


def _laplace_scale(x: Tensor, mode: Tensor, prior: Prior, likelihood: Likelihood) -> Tensor:
    """Cholesky factors (n, p, p) of each row's inverse Hessian at the mode, eigenvalues clipped."""
    z = mode.clone().requires_grad_(True)
    with torch.enable_grad():
        gradient, = torch.autograd.grad(_negative_log_joint(z, x, prior, likelihood).sum(), z, create_graph=True)
        # Rows are independent, so the gradient of Σ_i ∂_j f_i is row i's Hessian row j.
        hessian = torch.stack([torch.autograd.grad(gradient[:, j].sum(), z, retain_graph=True)[0]
                               for j in range(prior.dim)], dim=1)
    values, vectors = torch.linalg.eigh(0.5 * (hessian + hessian.mT).detach())
    values = values.clamp_min(1e-6 * values.abs().amax(-1, keepdim=True).clamp_min(1e-12))
    return torch.linalg.cholesky((vectors / values[:, None, :]) @ vectors.mT)


def _student_t_log_density(z: Tensor, loc: Tensor, scale_tril: Tensor, df: float) -> Tensor:
    """log t_ν(z; loc, L Lᵀ) for z (S, n, p), loc (n, p), L (n, p, p); returns (S, n)."""
    p = loc.shape[-1]
    white = torch.linalg.solve_triangular(scale_tril, (z - loc)[..., None], upper=False)[..., 0]
    half_logdet = torch.log(torch.diagonal(scale_tril, dim1=-2, dim2=-1)).sum(-1)
    return (math.lgamma((df + p) / 2) - math.lgamma(df / 2) - 0.5 * p * math.log(df * math.pi) - half_logdet
            - 0.5 * (df + p) * torch.log1p((white**2).sum(-1) / df))


def _weighted(x, mode, scale_tril, prior, likelihood, n_draws, df, defensive, generator):
    """(mean, cov, log evidence, ESS) for one chunk of rows."""
    n, p = mode.shape
    n_prior = int(round(defensive * n_draws))  # stratified: exactly δS draws from the prior
    eps = torch.randn(n_draws - n_prior, n, p, 1, generator=generator, dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):  # torch's χ² sampler takes no generator: seed one from it
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        chi2 = torch.distributions.Chi2(torch.tensor(df, dtype=torch.float64)).sample((n_draws - n_prior, n, 1))
    laplace = mode + (scale_tril @ eps)[..., 0] * torch.sqrt(df / chi2)
    covariates = split_rows(x, likelihood)[1]
    repeated = None if covariates is None else covariates.repeat(n_prior, 1)  # row i of every block of n
    from_prior = prior.sample(n_prior * n, generator=generator, covariates=repeated).reshape(n_prior, n, p)
    z = torch.cat([laplace, from_prior])
    log_proposal = torch.logaddexp(math.log1p(-defensive) + _student_t_log_density(z, mode, scale_tril, df),
                                   math.log(defensive) + prior.log_prob(z, covariates))
    log_w = log_joint(x, z, prior, likelihood) - log_proposal  # (S, n)
    weights = torch.softmax(log_w, dim=0)  # (S, n)
    mean = torch.einsum("sn,snp->np", weights, z)
    centred = z - mean
    cov = torch.einsum("sn,sni,snj->nij", weights, centred, centred)
    log_evidence = torch.logsumexp(log_w, dim=0) - math.log(n_draws)
    return mean, cov, log_evidence, 1 / (weights**2).sum(0)
