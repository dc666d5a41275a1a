"""A sanity bound for a fitted prior where the exact likelihood and exact EM exist (docs/methods.md §2.5).

A variational fit chases the maximum of the marginal likelihood ``ℓ(θ) = Σ_i log p(x_i; θ)``
(penalised: ``n ((1/n) ℓ − penalty)``). Exact EM cannot lower ℓ, so ``steps`` EM iterations
from the fitted θ̂ give a lower bound on how far θ̂ falls short of the maximum:

    gain = ℓ(EM^steps(θ̂)) − ℓ(θ̂)  ≤  ℓ(θ_ML) − ℓ(θ̂)

Where the model is regular, ``2 (ℓ(θ_ML) − ℓ(θ))`` at the true θ is about χ²_d (Wilks), so a
θ̂ with ``gain > ½ χ²_{d, 1 − level}`` lies outside the likelihood-ratio confidence region of
level 1 − ``level`` around θ_ML: no sampling noise explains it — the family's bias, an
unfinished fit, or a fit that ran away. d counts the free parameters of the law of x that θ
moves (:func:`degrees_of_freedom`).

It costs ``steps`` E- and M-steps of EM, once, after the fit. The bound is one-sided: a
small gain does not prove θ̂ good (EM crawls where the likelihood is flat), a large one
proves it short.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch
from scipy.stats import chi2
from sklearn.exceptions import ConvergenceWarning

from ..model.ggm import count_edges
from ..model.mixture import GaussianMixture
from .em import EM
from .exact import has_exact_em

__all__ = ["LikelihoodCheck", "likelihood_check", "degrees_of_freedom"]

STEPS = 50
LEVEL = 1e-3


@dataclass(frozen=True)
class LikelihoodCheck:
    """``gain``: how much ``steps`` exact EM iterations from θ̂ raise the penalised log-likelihood
    (nats, summed over rows); ``threshold``: ½ χ²_{d, 1 − level}; ``degrees_of_freedom``: d;
    ``seconds``: the check's wall time."""

    gain: float
    threshold: float
    degrees_of_freedom: int
    steps: int
    level: float
    seconds: float

    @property
    def passed(self) -> bool:
        return self.gain <= self.threshold

    def message(self, method: str) -> str:
        """One line for a failed check."""
        return (f"{method}'s fitted prior is short of the maximum likelihood: {self.steps} exact EM steps from it "
                f"raise the log-likelihood by {self.gain:.4g} nats, more than the {self.threshold:.4g} "
                f"(½ χ² with {self.degrees_of_freedom} degrees of freedom at level {self.level:g}) that sampling "
                "noise explains (its family's bias, or a fit unfinished or run away); compare with --method em")


def likelihood_check(x, prior, likelihood, *, steps: int = STEPS,
                     level: float = LEVEL) -> LikelihoodCheck | None:
    """The check of the module docstring for a fitted ``prior`` on the data rows x (n, m): an
    array (a memory map, which EM reads block by block) or a tensor; None where there is no
    exact EM (:func:`~invae.references.exact.has_exact_em`)."""
    if not has_exact_em(prior, likelihood):
        return None
    begin = time.perf_counter()
    x = x.detach().to("cpu", torch.float64) if isinstance(x, torch.Tensor) else x
    prior, likelihood = prior.to("cpu", torch.float64), likelihood.to("cpu", torch.float64)
    with warnings.catch_warnings():  # EM is meant to stop after ``steps``: its max_iter warning is no news
        warnings.simplefilter("ignore", ConvergenceWarning)
        objective = EM(prior, likelihood, max_iter=steps, tol=0.0).fit(x).history_["objective"]
    gain = len(x) * (objective[-1] - objective[0])  # EM's objective per row: the start's first
    d = degrees_of_freedom(prior, likelihood.forward.out_dim)
    return LikelihoodCheck(gain, 0.5 * float(chi2.isf(level, d)), d, steps, level, time.perf_counter() - begin)


def degrees_of_freedom(prior, observed: int) -> int:
    """d: the free parameters of x's law (m = ``observed`` dimensions) that the prior moves.
    A Gaussian graphical prior: Λ's p diagonal entries and its off-diagonal ones — all
    p(p − 1)/2 without a penalty, the |E| edges with one (the lasso's effective degrees of
    freedom, as EBIC counts them) — at most m(m + 1)/2, the entries of x's covariance
    ``A Λ⁻¹ Aᵀ + D`` (with m < p, Λ is only seen through it) — and with a fitted location,
    each of its q design columns (the intercept and k covariates) moves x's mean by at most m;
    a mixture: its K − 1 free weights, and each component's mean (at most m), the effects of its
    k covariates (at most m each) and its precision alike."""
    p, covariances = prior.dim, observed * (observed + 1) // 2
    precisions = prior.precisions if isinstance(prior, GaussianMixture) else prior.precision[None]
    penalised = prior.summary()["penalty"] > 0
    entries = sum(min(p + (count_edges(precision) if penalised else p * (p - 1) // 2), covariances)
                  for precision in precisions)
    if not isinstance(prior, GaussianMixture):
        return entries + (int(prior.fit_intercept) + prior.covariate_dim) * min(p, observed)
    return prior.components - 1 + prior.components * (1 + prior.covariate_dim) * min(p, observed) + entries
