"""Λ-step strategies: how the trainer updates the prior's parameters from the posterior q.

A strategy is an object passed to :func:`invae.inference.training.train`, as Pyro passes an
ELBO object to ``SVI``; the loop calls ``step.statistics(prior, posterior, x, likelihood,
batch_size, seed)`` and does not know which one it holds. :data:`LAMBDA_STEPS` names them (the estimator's
``lambda_step`` setting):

=============  ==================================================================  ===================
name           Λ ←                                                                  class
=============  ==================================================================  ===================
``batch``      M-step on one sampled batch of z (the source's Algorithm 1)          :class:`BatchStep`
``expected``   M-step on expected statistics over all rows (65 536 random ones      :class:`ExpectedStep`
               beyond that): closed form for a Gaussian q (variational EM,
               docs/methods.md §2.2), else draws
``importance`` M-step on draws of q and q widened, reweighted to the exact          :class:`ImportanceStep`
               posterior (Monte Carlo EM, docs/methods.md §3.1)
``gradient``   for a prior without an M-step: Adam steps on the ELBO, with φ's      :class:`GradientStep`
``importance-  for a prior without an M-step: Adam steps on the importance-         :class:`ImportanceGradientStep`
gradient``     weighted bound (:func:`~invae.inference.objectives.importance_weighted_bound`)
=============  ==================================================================  ===================

A step returns the prior's expected sufficient statistics (:meth:`LambdaStep.statistics`,
whose kernels are :func:`expected_statistics` and :func:`importance_statistics`); the trainer
averages them over steps before the M-step (:mod:`invae.inference.averaging`). A step over
all rows draws with the same random numbers at every iteration (``seed``), so its statistics
change only as φ and Λ change; a step over ``rows`` random rows draws afresh. Each block of
rows draws from its own seed, and a process of a parallel fit takes its rows' part of the
block's draws (:mod:`invae.inference.parallel`): its statistics are the same whichever
processes hold the rows.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, LowRankMultivariateNormal, MultivariateNormal, Normal

from ..model.likelihoods import Likelihood
from ..model.prior import Prior
from ..model.rows import split_rows
from ..registry import Registry
from .parallel import Noise, Shard, draw
from .reweighting import WIDTHS, importance_draws
from .seeding import fresh_seed, seeded

__all__ = ["LambdaStep", "BatchStep", "ExpectedStep", "ImportanceStep", "GradientStep", "ImportanceGradientStep",
           "LAMBDA_STEPS", "expected_statistics", "importance_statistics"]

_ROWS_PER_BLOCK = 8192  # rows whose statistics are taken at once (memory: q's parameters and draws for them)


class LambdaStep(abc.ABC):
    """Updates the prior from the posterior module; ``n_draws`` draws of q per row where it draws,
    over ``rows`` random rows of the data per step (None: all of them)."""

    #: The prior's parameters take the trainer's Adam steps on the ELBO together with φ (in a
    #: parameter group of their own), rather than an M-step after them.
    by_gradient: bool = False
    #: Λ̂ chases the exact posterior's M-step (not the ELBO's): the estimator's posterior
    #: answers then default to the exact posterior at Λ̂ too (reweighted q).
    targets_exact_posterior: bool = False
    #: Rows per step when none are asked for (None: all rows).
    default_rows: int | None = None

    def __init__(self, n_draws: int, rows: int | None = None):
        self.n_draws, self.rows = n_draws, rows

    @staticmethod
    def default_draws(prior: Prior) -> int:
        """Draws per row when none are asked for: more under a prior whose M-step on draws is
        noisier, e.g. a mixture's responsibilities (docs/benchmarks.md, "Λ-step draws")."""
        return 8 if prior.closed_form_gaussian_m_step else 32

    def rows_per_step(self, n: int, batch_size: int) -> int:
        """How many of the n data rows one step looks at."""
        return n if self.rows is None else min(self.rows, n)

    def averages(self, n: int, batch_size: int) -> bool:
        """Whether its statistics carry fresh randomness at every step, to be averaged: a
        subset of the rows (draws over all rows repeat the same random numbers)."""
        return self.rows_per_step(n, batch_size) < n

    @abc.abstractmethod
    def statistics(self, prior: Prior, posterior: nn.Module, x: Tensor, likelihood: Likelihood,
                   batch_size: int, seed: int, shard: Shard | None = None) -> dict[str, Tensor]:
        """The prior's expected sufficient statistics under q = posterior(x) over the data rows
        (n, row columns, :mod:`invae.model.rows`) of which x holds ``shard``'s (None: x holds
        all); ``seed`` seeds the draws of a step over all rows (the same at every iteration)."""

    @staticmethod
    def _row_average(index: Tensor, shard: Shard, seed: int,
                     statistics_of: Callable[[Tensor, Noise | None], dict[str, Tensor]]) -> dict[str, Tensor]:
        """The statistics over the rows ``index`` (of all n) from ``statistics_of(rows of the
        shard, noise)``, block by block of rows (bounded memory for any n: an encoder's activations
        for a block only), block j's draws seeded by ``seed + j``, combined as the row averages
        they are (:meth:`~invae.inference.parallel.Shard.average`)."""
        parts = []
        for number, block in enumerate(index.split(_ROWS_PER_BLOCK)):
            positions, rows = shard.local(block)
            if len(rows):
                with seeded(seed + number, index.device):
                    parts.append((len(rows), statistics_of(rows, shard.noise(len(block), positions))))
        return shard.average(parts)

    def _rows(self, n: int, seed: int, device) -> tuple[Tensor, int]:
        """The row indices (of all n) of this step and the seed of its draws: all rows with the
        same random numbers at every step, or ``rows`` random rows with fresh ones."""
        if self.rows is None or self.rows >= n:
            return torch.arange(n, device=device), seed
        return torch.randperm(n, device=device)[: self.rows], fresh_seed()


class BatchStep(LambdaStep):
    """The source's Λ-step: the M-step on one draw of q for each of ``batch_size`` random rows."""

    def rows_per_step(self, n, batch_size):
        return min(batch_size, n)

    def averages(self, n, batch_size):
        return True  # rows drawn with replacement and one fresh draw each, even when batch_size ≥ n

    def statistics(self, prior, posterior, x, likelihood, batch_size, seed, shard=None):
        shard = _all_rows_unless(shard, x)
        index = torch.randint(shard.n, (batch_size,), device=x.device)
        return self._row_average(index, shard, fresh_seed(), lambda rows, noise: prior.statistics(
            draw(posterior(x[rows], rows), (), noise), covariates=split_rows(x[rows], likelihood)[1]))


class ExpectedStep(LambdaStep):
    """The M-step on q's expected statistics (:func:`expected_statistics`)."""

    # Over all of 10⁶ rows each step costs an encoder pass over all of them (minutes for the full
    # covariance's p(p+1)/2 outputs); 65 536 random rows per step, averaged over steps
    # (:mod:`invae.inference.averaging`), bound it (docs/benchmarks.md, "A million rows").
    # Fewer rows than that: all of them, as before.
    default_rows = 65_536

    def statistics(self, prior, posterior, x, likelihood, batch_size, seed, shard=None):
        shard = _all_rows_unless(shard, x)
        index, seed = self._rows(shard.n, seed, x.device)
        return self._row_average(index, shard, seed, lambda rows, noise: expected_statistics(
            prior, posterior(x[rows], rows), self.n_draws, split_rows(x[rows], likelihood)[1], noise=noise))


class ImportanceStep(LambdaStep):
    """The M-step on draws of q and q widened, weighted towards the exact posterior (:func:`importance_statistics`)."""

    targets_exact_posterior = True
    # Draws for each of n rows cost far more than φ's Adam steps; a random 1024 rows per
    # step, averaged over steps (:mod:`invae.inference.averaging`), are as precise in the end.
    default_rows = 1024

    def statistics(self, prior, posterior, x, likelihood, batch_size, seed, shard=None):
        shard = _all_rows_unless(shard, x)
        index, seed = self._rows(shard.n, seed, x.device)
        return self._row_average(index, shard, seed, lambda rows, noise: importance_statistics(
            prior, posterior(x[rows], rows), x[rows], likelihood, self.n_draws, noise=noise))


class GradientStep(LambdaStep):
    """For a prior without an M-step (``has_m_step = False``): the trainer moves its parameters
    θ by Adam on the batch ELBO, whose gradient in θ is that of ``E_q[log g(z; θ)]``, with
    their own moments, step-size schedule, checkpoints and rollbacks as φ's. After those
    steps there is nothing left to do: the trainer asks no statistics of it."""

    by_gradient = True

    def statistics(self, prior, posterior, x, likelihood, batch_size, seed, shard=None):
        raise NotImplementedError("a prior trained by gradient has no M-step statistics")


class ImportanceGradientStep(GradientStep):
    """:class:`GradientStep` with θ's Adam steps on the importance-weighted bound over
    ``n_draws`` draws per row of the proposal (q and q widened) rather than on the ELBO
    (:func:`~invae.inference.objectives.importance_weighted_bound`): :class:`ImportanceStep`'s
    M-step for a prior whose M-step has no closed form, taken as gradient steps. φ's and a
    learned noise's steps stay on the ELBO."""

    targets_exact_posterior = True


LAMBDA_STEPS: Registry[type[LambdaStep]] = Registry("lambda_step")
LAMBDA_STEPS.register("batch", BatchStep)
LAMBDA_STEPS.register("expected", ExpectedStep)
LAMBDA_STEPS.register("importance", ImportanceStep)
LAMBDA_STEPS.register("gradient", GradientStep)
LAMBDA_STEPS.register("importance-gradient", ImportanceGradientStep)


def expected_statistics(prior: Prior, q: Distribution, n_draws: int = 8,
                        covariates: Tensor | None = None, *, noise: Noise | None = None) -> dict[str, Tensor]:
    """The prior's expected sufficient statistics under q (batch (n,), event (p,)), for rows
    with ``covariates`` (n, k) where the prior reads them; draws from ``noise`` where given
    (:mod:`invae.inference.parallel`).

    Closed form for Gaussian q and a prior whose M-step needs only q's moments
    (``E[z zᵀ] = μμᵀ + Σ_q``, diagonal Σ_q or the average of full ones); otherwise the
    statistics of ``n_draws`` draws per observation, (n_draws, n, p).
    """
    if not prior.closed_form_gaussian_m_step:
        return prior.statistics(draw(q, (n_draws,), noise), covariates=covariates)
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        return prior.gaussian_statistics(q.mean, var=q.variance, covariates=covariates)
    if isinstance(q, MultivariateNormal):
        tril = q.scale_tril
        # Σ_n L_n L_nᵀ as one matrix product over the stacked columns of every L_n (an einsum
        # over (n, p, p) takes 3 × longer on CPU)
        columns = tril.mT.reshape(-1, tril.shape[-1])
        return prior.gaussian_statistics(q.mean, columns.T @ columns / len(tril), covariates=covariates)
    if isinstance(q, LowRankMultivariateNormal):  # Σ_n (diag d_n² + U_n U_nᵀ), U's columns stacked
        columns = q.cov_factor.mT.reshape(-1, q.cov_factor.shape[-2])
        return prior.gaussian_statistics(q.mean, columns.T @ columns / len(q.loc) + torch.diag(q.cov_diag.mean(0)),
                                         covariates=covariates)
    return prior.statistics(draw(q, (n_draws,), noise), covariates=covariates)


def importance_statistics(prior: Prior, q: Distribution, x: Tensor, likelihood: Likelihood,
                          n_draws: int = 32, *, noise: Noise | None = None) -> dict[str, Tensor]:
    """The statistics of draws of the proposal r — q mixed with q widened 2-fold
    (:func:`~invae.inference.reweighting.defensive_draws`), ``n_draws`` of each per observation —
    each weighted towards the exact posterior by self-normalised importance sampling:

        log w_si = log g(z_si; Λ) + log p(x_i | z_si) − log r(z_si | x_i),   w̃_si = w_si / Σ_t w_ti
        Λ ← argmax_Λ  (1/n) Σ_i Σ_s w̃_si log g(z_si; Λ) − penalty(Λ)

    This is a Monte Carlo EM step whose E-step is importance sampling. q fitted by the reverse
    KL is narrower than the posterior; with q alone as proposal the weights of its tails are
    rare and large, and Λ̂ kept part of q's bias (docs/benchmarks.md, "The defensive proposal
    in the importance-weighted steps").
    The ELBO's own M-step (:func:`expected_statistics`) maximises a bound whose gap depends on Λ, so
    a q family that misses the exact posterior biases Λ̂. Here the weights correct q towards
    the posterior. Their M-step is the stationary point in Λ of the importance-weighted
    bound ``Σ_i log (1/S) Σ_s w_si`` (Burda et al., 2016) at these draws; that bound tends to
    log p(x; Λ) as S grows. So Λ̂ tends to the penalised maximum marginal likelihood, as
    with exact EM. The self-normalised weights have a bias of order 1/(S·ESS fraction).
    q is (batch (n,), event (p,)) over the data rows x (n, row columns). A draw with log w = −∞ (e.g. an
    impossible one) gets weight 0; a NaN or +∞, or a row without a positive weight, raises
    ``FloatingPointError``.
    """
    # n_draws of q itself and as many of q widened: where the widened draws weigh nothing (a path of
    # many dimensions) q's own still number n_draws
    z, weights = importance_draws(q, x, prior, likelihood, n_draws * len(WIDTHS), noise=noise)  # (2S, n, p), (2S, n)
    return prior.statistics(z, weights, covariates=split_rows(x, likelihood)[1])


def _all_rows_unless(shard: Shard | None, x: Tensor) -> Shard:
    """``shard``, or all of x's rows in one process where none is given."""
    return shard if shard is not None else Shard.whole(len(x), x.device)
