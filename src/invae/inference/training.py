"""Algorithm 1 of the source (DESIGN §2.2): alternate Adam steps on φ with an exact Λ-step.

    repeat until converged (or max_iter):
        n_critic times:  batch of B observations, z = reparameterised draws of q_φ(z|x),
                         one Adam step on  −(1/B) Σ_b ELBO_b(φ; Λ)
        Λ-step:          "batch":      Λ ← M-step on one sampled batch of z (the source)
                         "expected":   Λ ← M-step on expected statistics over all data:
                                        closed form for Gaussian q (variational EM), else
                                        ``lambda_draws`` draws per observation
                         "importance": Λ ← M-step on ``lambda_draws`` draws of q per
                                        observation, reweighted to the exact posterior
                                        (:func:`importance_lambda_step`)

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
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal
from tqdm.auto import tqdm

from ..model.likelihoods import Likelihood
from ..model.priors import Prior
from .base import progress_disabled
from .checkpoints import Checkpointer, FitInterrupted
from .objectives import elbo
from .reweighting import normalised_weights

__all__ = ["TrainingSettings", "train", "lambda_step", "importance_lambda_step", "seeded"]

LAMBDA_STEPS = ("batch", "expected", "importance")
_EVAL_SIZE = 2048
_MAX_ROLLBACKS = 3  # divergence: roll back and halve the step size at most this many times


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
        if self.lambda_step not in LAMBDA_STEPS:
            raise ValueError(f"lambda_step must be one of {', '.join(map(repr, LAMBDA_STEPS))}, "
                             f"got {self.lambda_step!r}")
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

    Closed form for Gaussian q and a prior whose M-step needs only q's moments
    (``E[z zᵀ] = μμᵀ + Σ_q``, diagonal Σ_q or the average of full ones); otherwise the
    M-step on ``n_draws`` draws per observation, (n_draws, n, p).
    """
    if not prior.closed_form_gaussian_m_step:
        return prior.m_step(_draw(q, n_draws))
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        return prior.m_step_gaussian(q.mean, var=q.variance)
    if isinstance(q, MultivariateNormal):
        tril = q.scale_tril
        return prior.m_step_gaussian(q.mean, torch.einsum("nij,nkj->ik", tril, tril) / len(tril))
    return prior.m_step(_draw(q, n_draws))


def importance_lambda_step(prior: Prior, q: Distribution, x: Tensor, likelihood: Likelihood,
                           n_draws: int = 32) -> Prior:
    """M-step on S = ``n_draws`` draws of q per observation, each weighted towards the exact
    posterior by self-normalised importance sampling (q is the proposal):

        log w_si = log g(z_si; Λ) + log p(x_i | z_si) − log q(z_si | x_i),   w̃_si = w_si / Σ_t w_ti
        Λ ← argmax_Λ  (1/n) Σ_i Σ_s w̃_si log g(z_si; Λ) − penalty(Λ)

    This is a Monte Carlo EM step whose E-step is importance sampling with q as proposal.
    The ELBO's own M-step (:func:`lambda_step`) maximises a bound whose gap depends on Λ, so
    a q family that misses the exact posterior biases Λ̂. Here the weights correct q towards
    the posterior. Their M-step is the stationary point in Λ of the importance-weighted
    bound ``Σ_i log (1/S) Σ_s w_si`` (Burda et al., 2016) at these draws; that bound tends to
    log p(x; Λ) as S grows. So Λ̂ tends to the penalised maximum marginal likelihood, as
    with exact EM. The self-normalised weights have a bias of order 1/(S·ESS fraction).
    q is (batch (n,), event (p,)) over the rows x (n, m). A draw with log w = −∞ (e.g. an
    impossible one) gets weight 0; a NaN or +∞, or a row without a positive weight, raises
    ``FloatingPointError``.
    """
    z = _draw(q, n_draws)  # (S, n, p)
    return prior.m_step(z, normalised_weights(prior.log_prob(z) + likelihood.log_prob(x, z) - q.log_prob(z)))


def _draw(q: Distribution, n_draws: int | None = None) -> Tensor:
    """Draws of q, (n_draws, n, p) or (n, p), for an M-step (no gradient needed): ``rsample``
    where q has it (the same random numbers as before), else ``sample`` (a mixture)."""
    shape = () if n_draws is None else (n_draws,)
    return q.rsample(shape) if q.has_rsample else q.sample(shape)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str) -> Iterator[None]:
    """Run the block with torch's generator (CPU, and ``device``'s if CUDA) seeded, then restore it."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def train(x: Tensor, posterior: nn.Module, prior: Prior, likelihood: Likelihood, settings: TrainingSettings,
          *, update_prior: bool = True, verbose: bool = False,
          callback: Callable[[int, Prior], None] | None = None, checkpoint: Checkpointer | None = None,
          identity: dict | None = None) -> tuple[Prior, dict, int, bool]:
    """Run Algorithm 1 on data x (n, m); return (prior, history, n_iter, converged).

    ``update_prior=False`` keeps Λ fixed and trains q alone (inference on new data for a
    non-amortized family). ``callback(iteration, prior)`` runs after each outer iteration.
    ``checkpoint`` saves the whole state every so many iterations and on SIGINT/SIGTERM
    (then raises :class:`~invae.inference.checkpoints.FitInterrupted`), and resumes from it;
    ``identity`` (settings, data fingerprint) guards against resuming another fit.
    Randomness comes from torch's global generator: seed it.

    Divergence (a non-finite ELBO or weight, or a Λ-step that fails) rolls the state back
    to the end of the last good iteration and halves Adam's step size, at most
    ``_MAX_ROLLBACKS`` times; then a ``FloatingPointError`` says what diverged.
    """
    n = len(x)
    batch = min(settings.batch_size, n)
    optimizer = torch.optim.Adam(posterior.parameters(), lr=settings.learning_rate)
    plateau = _Plateau(optimizer, settings.lr_decay, patience=max(1, settings.window // 2), tol=settings.tol)
    eval_index = torch.randperm(n, device=x.device)[: min(n, _EVAL_SIZE)]
    eval_seed, lambda_seed = torch.randint(2**62, (2,)).tolist()
    history: dict[str, list[float]] = {"elbo": [], "train_elbo": [], "precision_change": [], "time": []}
    iteration = 0
    saved = checkpoint.load(identity or {}) if checkpoint is not None else None
    if saved is not None:
        eval_index, (eval_seed, lambda_seed) = saved["eval_index"].to(x.device), saved["seeds"]
        prior, history, iteration = _restore(saved, posterior, optimizer, plateau, prior)
    good = _capture(posterior, optimizer, plateau, prior, history, iteration)
    start = time.perf_counter() - (history["time"][-1] if history["time"] else 0.0)
    converged, rollbacks = False, 0
    with (tqdm(total=settings.max_iter, initial=iteration, desc="fit", disable=progress_disabled(verbose),
               leave=False) as bar, checkpoint if checkpoint is not None else contextlib.nullcontext()):
        while iteration < settings.max_iter:
            iteration += 1
            try:
                train_elbo = _adam_steps(x, posterior, prior, likelihood, optimizer, settings, batch)
                change = 0.0
                if update_prior:
                    with torch.no_grad():
                        new = _checked_lambda_step(prior, posterior, x, likelihood, batch, settings, lambda_seed)
                    change = new.relative_change(prior)
                    prior = new
                value = _fixed_noise_elbo(x, eval_index, eval_seed, posterior, prior, likelihood)
                if not math.isfinite(value):
                    raise _Diverged("the evaluation ELBO is not finite")
            except (_Diverged, FloatingPointError) as error:
                rollbacks += 1
                where = checkpoint.path if checkpoint is not None and checkpoint.path.is_file() else None
                if rollbacks > _MAX_ROLLBACKS:
                    raise FloatingPointError(
                        f"the fit diverged at outer iteration {iteration} ({error}) after {_MAX_ROLLBACKS} "
                        f"rollbacks with a halved step size each; last good checkpoint: "
                        f"{str(where) if where else 'none (see --checkpoint-dir)'}") from None
                prior, history, iteration = _restore(good, posterior, optimizer, plateau, prior)
                for group in optimizer.param_groups:
                    group["lr"] *= 0.5
                continue
            history["train_elbo"].append(train_elbo)
            history["elbo"].append(value)
            history["precision_change"].append(change)
            history["time"].append(time.perf_counter() - start)
            if callback is not None:
                callback(iteration, prior)
            plateau.step(history["elbo"][-1])
            good = _capture(posterior, optimizer, plateau, prior, history, iteration)
            bar.update()
            bar.set_postfix(elbo=f"{history['elbo'][-1]:.4f}", dLambda=f"{change:.1e}")
            recent_change = max(history["precision_change"][-settings.window:])
            converged = plateau.since_best >= settings.window and recent_change < settings.tol
            if checkpoint is not None and checkpoint.due(iteration):
                checkpoint.save({**good, "eval_index": eval_index.cpu(), "seeds": [eval_seed, lambda_seed]},
                                identity or {})
                if checkpoint.received is not None and not converged:  # a finished fit just finishes
                    raise FitInterrupted(checkpoint.received, iteration, checkpoint.path)
            if converged:
                break
    return prior, history, iteration, converged


class _Diverged(Exception):
    """A non-finite quantity in an outer iteration (the message says which)."""


def _adam_steps(x, posterior, prior, likelihood, optimizer, settings, batch) -> float:
    """``n_critic`` Adam steps on the batch ELBO; their mean ELBO. Raises _Diverged if a loss
    or a weight stops being finite."""
    train_elbo = 0.0
    for _ in range(settings.n_critic):
        index = torch.randint(len(x), (batch,), device=x.device)
        loss = -elbo(x[index], posterior(x[index], index), prior, likelihood, settings.n_samples).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        train_elbo -= loss.item() / settings.n_critic
    if not math.isfinite(train_elbo):
        raise _Diverged("the training ELBO is not finite")
    if not all(bool(torch.isfinite(weight).all()) for weight in posterior.parameters()):
        raise _Diverged("a posterior weight is not finite")
    return train_elbo


def _checked_lambda_step(prior, posterior, x, likelihood, batch, settings, seed) -> Prior:
    """The Λ-step; an invalid Λ (not finite, not positive definite) raises _Diverged."""
    try:
        return _lambda_step(prior, posterior, x, likelihood, batch, settings, seed)
    except ValueError as error:  # the prior refuses the parameters it was given
        raise _Diverged(f"the Λ-step gave an invalid Λ: {error}") from None


def _capture(posterior, optimizer, plateau, prior, history, iteration) -> dict:
    """A copy of the state at the end of an outer iteration (also a checkpoint's body)."""
    return {"posterior": {key: value.detach().clone() for key, value in posterior.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "plateau": [plateau.best, plateau.waited, plateau.since_best],
            "prior": {key: value.detach().clone() for key, value in prior.state().items()},
            "history": {key: list(values) for key, values in history.items()},
            "iteration": iteration, "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _restore(state, posterior, optimizer, plateau, prior) -> tuple[Prior, dict, int]:
    """Put a :func:`_capture` back; returns (prior, history, iteration)."""
    posterior.load_state_dict(state["posterior"])
    optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
    plateau.best, plateau.waited, plateau.since_best = state["plateau"]
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    history = {key: list(values) for key, values in state["history"].items()}
    return prior.with_state(state["prior"]), history, state["iteration"]


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


def _lambda_step(prior: Prior, posterior: nn.Module, x: Tensor, likelihood: Likelihood, batch: int,
                 settings: TrainingSettings, seed: int) -> Prior:
    if settings.lambda_step == "batch":
        index = torch.randint(len(x), (batch,), device=x.device)
        return prior.m_step(_draw(posterior(x[index], index)))
    with seeded(seed, x.device):
        q = posterior_all(posterior, x)
        if settings.lambda_step == "importance":
            return importance_lambda_step(prior, q, x, likelihood, settings.lambda_draws)
        return lambda_step(prior, q, settings.lambda_draws)


@torch.no_grad()
def _fixed_noise_elbo(x, index, seed, posterior, prior, likelihood) -> float:
    """Mean ELBO over a fixed subset, with the same random numbers at every call."""
    with seeded(seed, x.device):
        return float(elbo(x[index], posterior(x[index], index), prior, likelihood).mean())
