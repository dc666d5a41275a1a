"""Algorithm 1 of the source (DESIGN §2.2): alternate Adam steps on φ with an exact Λ-step.

    repeat until converged (or max_iter):
        n_critic times:  batch of B observations, z = reparameterised draws of q_φ(z|x),
                         one Adam step on  −(1/B) Σ_b ELBO_b(φ; Λ)
        Λ-step:          "batch":    Λ ← M-step on one sampled batch of z (the source)
                         "expected": Λ ← M-step on expected statistics over all data:
                                      closed form for Gaussian q (variational EM), else
                                      ``lambda_draws`` draws per observation

Convergence, checked after each Λ-step over the last ``window`` outer iterations: the
largest relative change of Λ, ‖ΔΛ‖_F/‖Λ‖_F, is below ``tol`` and the ELBO on a fixed
evaluation set with fixed noise (common random numbers: no Monte Carlo jitter between
checks) has not beaten its best by more than ``tol`` relative. (Comparing against the best,
not the value ``window`` steps ago, keeps a fluctuating ELBO from passing for a flat one.) Both are needed: Λ can sit still while the
encoder is still improving, and the reverse. With a constant step size, Adam's gradient
noise keeps Λ moving by more than any small ``tol``; so the step size is cut by
``lr_decay`` whenever that ELBO has not beaten its best by ``tol`` (relative) for
``window // 2`` outer iterations. (torch's ``ReduceLROnPlateau`` does this with a relative
threshold ``best·(1 ± tol)`` that points the wrong way for a negative ELBO.)

Draws that are compared between iterations — the evaluation ELBO, and the Λ-step draws of
a family without closed-form moments (flows) — reuse the same random numbers at every
iteration (:func:`seeded`), so they change only as φ and Λ change.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal
from tqdm.auto import tqdm

from .base import progress_disabled
from .likelihoods import Likelihood
from .objectives import elbo
from .priors import Prior

__all__ = ["TrainingSettings", "train", "lambda_step", "seeded"]

_EVAL_SIZE = 2048


@dataclass(frozen=True)
class TrainingSettings:
    learning_rate: float
    batch_size: int
    n_critic: int
    lambda_step: str
    max_iter: int
    tol: float
    window: int
    n_samples: int = 1
    lr_decay: float = 0.3
    lambda_draws: int = 8

    def __post_init__(self):
        if self.lambda_step not in ("batch", "expected"):
            raise ValueError(f"lambda_step must be 'batch' or 'expected', got {self.lambda_step!r}")
        for name in ("batch_size", "n_critic", "max_iter", "window", "n_samples", "lambda_draws"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.lr_decay, (int, float)) and 0 < self.lr_decay <= 1):
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay!r}")
        for name in ("learning_rate", "tol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def posterior_all(posterior: nn.Module, x: Tensor) -> Distribution:
    """q(z | x_i) for every row of x (n, m)."""
    return posterior(x, torch.arange(len(x), device=x.device))


def lambda_step(prior: Prior, q: Distribution, n_draws: int = 8) -> Prior:
    """M-step on the expected statistics of q (batch (n,), event (p,)) over all rows.

    Closed form for Gaussian q: ``E[z zᵀ] = μμᵀ + Σ_q`` (diagonal Σ_q, or the average of
    full ones); otherwise the M-step on ``n_draws`` draws per observation, (n_draws, n, p).
    """
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        return prior.m_step_gaussian(q.mean, var=q.variance)
    if isinstance(q, MultivariateNormal):
        tril = q.scale_tril
        return prior.m_step_gaussian(q.mean, torch.einsum("nij,nkj->ik", tril, tril) / len(tril))
    return prior.m_step(q.rsample((n_draws,)))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str) -> Iterator[None]:
    """Run the block with torch's generator (CPU, and ``device``'s if CUDA) seeded, then restore it."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def train(x: Tensor, posterior: nn.Module, prior: Prior, likelihood: Likelihood, settings: TrainingSettings,
          *, update_prior: bool = True, verbose: bool = False,
          callback: Callable[[int, Prior], None] | None = None) -> tuple[Prior, dict, int, bool]:
    """Run Algorithm 1 on data x (n, m); return (prior, history, n_iter, converged).

    ``update_prior=False`` keeps Λ fixed and trains q alone (inference on new data for a
    non-amortized family). ``callback(iteration, prior)`` runs after each outer iteration.
    Randomness comes from torch's global generator: seed it.
    """
    n = len(x)
    batch = min(settings.batch_size, n)
    optimizer = torch.optim.Adam(posterior.parameters(), lr=settings.learning_rate)
    plateau = _Plateau(optimizer, settings.lr_decay, patience=max(1, settings.window // 2), tol=settings.tol)
    eval_index = torch.randperm(n, device=x.device)[: min(n, _EVAL_SIZE)]
    eval_seed, lambda_seed = torch.randint(2**62, (2,)).tolist()
    history: dict[str, list[float]] = {"elbo": [], "train_elbo": [], "precision_change": [], "time": []}
    start = time.perf_counter()
    converged = False
    with tqdm(total=settings.max_iter, desc="fit", disable=progress_disabled(verbose),
              leave=False) as bar:
        for iteration in range(1, settings.max_iter + 1):
            train_elbo = 0.0
            for _ in range(settings.n_critic):
                index = torch.randint(n, (batch,), device=x.device)
                q = posterior(x[index], index)
                loss = -elbo(x[index], q, prior, likelihood, settings.n_samples).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                train_elbo -= loss.item() / settings.n_critic
            change = 0.0
            if update_prior:
                with torch.no_grad():
                    new = _lambda_step(prior, posterior, x, batch, settings, lambda_seed)
                change = new.relative_change(prior)
                prior = new
            history["train_elbo"].append(train_elbo)
            history["elbo"].append(_fixed_noise_elbo(x, eval_index, eval_seed, posterior, prior, likelihood))
            history["precision_change"].append(change)
            history["time"].append(time.perf_counter() - start)
            if callback is not None:
                callback(iteration, prior)
            plateau.step(history["elbo"][-1])
            bar.update()
            bar.set_postfix(elbo=f"{history['elbo'][-1]:.4f}", dLambda=f"{change:.1e}")
            recent_change = max(history["precision_change"][-settings.window:])
            if plateau.since_best >= settings.window and recent_change < settings.tol:
                converged = True
                break
    return prior, history, iteration, converged


class _Plateau:
    """Multiply Adam's step size by ``decay`` after ``patience`` checks without a gain > tol."""

    def __init__(self, optimizer: torch.optim.Optimizer, decay: float, patience: int, tol: float):
        self.optimizer, self.decay, self.patience, self.tol = optimizer, decay, patience, tol
        self.best, self.waited, self.since_best = -math.inf, 0, 0

    def step(self, value: float) -> None:
        if value > self.best + self.tol * max(1.0, abs(value)):
            self.best, self.waited, self.since_best = value, 0, 0
            return
        self.waited += 1
        self.since_best += 1
        if self.waited >= self.patience and self.decay < 1:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.decay
            self.waited = 0


def _lambda_step(prior: Prior, posterior: nn.Module, x: Tensor, batch: int, settings: TrainingSettings,
                 seed: int) -> Prior:
    if settings.lambda_step == "batch":
        index = torch.randint(len(x), (batch,), device=x.device)
        return prior.m_step(posterior(x[index], index).rsample())
    with seeded(seed, x.device):
        return lambda_step(prior, posterior_all(posterior, x), settings.lambda_draws)


@torch.no_grad()
def _fixed_noise_elbo(x, index, seed, posterior, prior, likelihood) -> float:
    """Mean ELBO over a fixed subset, with the same random numbers at every call."""
    with seeded(seed, x.device):
        return float(elbo(x[index], posterior(x[index], index), prior, likelihood).mean())
