"""The evidence lower bound (DESIGN §2.1), one value per observation.

    ELBO_i = E_{q(z|x_i)} [ log g(z; Λ) + log p(x_i | z) − log q(z | x_i) ]  ≤  log p(x_i; Λ)

estimated with ``S`` reparameterised draws. Where ``q`` has a closed-form entropy (Gaussian
families) it replaces the Monte Carlo ``−log q`` term: same expectation, less variance.
For a diagonal Gaussian ``H(q) = Σ_j log σ_j + (p/2) log(2πe)``, so the φ-step loss is
DESIGN §2.4's ``Σ_b [−log g(z_b) − log p(x_b|z_b) − Σ_j log σ_bj]`` up to a constant.
"""

from __future__ import annotations

from torch import Tensor
from torch.distributions import Distribution

from .likelihoods import Likelihood
from .priors import Prior

__all__ = ["elbo"]


def elbo(x: Tensor, q: Distribution, prior: Prior, likelihood: Likelihood, n_samples: int = 1, *,
         z: Tensor | None = None) -> Tensor:
    """ELBO estimates for observations x (n, m) under q (batch (n,), event (p,)); returns (n,).

    ``z`` (S, n, p), if given, are the draws of q to use (e.g. fixed noise pushed through
    q); otherwise ``n_samples`` fresh reparameterised draws.
    """
    z = q.rsample((n_samples,)) if z is None else z  # (S, n, p)
    log_joint = prior.log_prob(z) + likelihood.log_prob(x, z)  # (S, n)
    try:
        return log_joint.mean(0) + q.entropy()
    except NotImplementedError:
        return (log_joint - q.log_prob(z)).mean(0)
