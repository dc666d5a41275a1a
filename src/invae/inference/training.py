"""Algorithm 1 of the source (docs/methods.md §2.2): alternate Adam steps on φ with an exact Λ-step.

    repeat until converged (or max_iter):
        n_critic times:  batch of B observations, z = reparameterised draws of q_φ(z|x),
                         one Adam step on  −(1/B) Σ_b ELBO_b(φ; Λ)
                         (a q whose optimum given Λ is closed form — a Gaussian family where
                         the exact posterior is Gaussian — is set there instead, once per
                         iteration: ``has_closed_form`` / ``set_to_optimum`` of
                         :mod:`invae.inference.posteriors`; ``closed_form=False`` keeps Adam)
        Λ-step:          ŝ ← the prior's expected statistics under q (the strategy passed in,
                         :mod:`invae.inference.lambda_steps`); s̄ ← their stochastic-approximation
                         average (:mod:`invae.inference.averaging`); Λ ← the M-step on s̄

Λ̂ is noisy from one iteration to the next (fresh draws, a subset of rows, Adam's noise in φ),
so no fixed tolerance on its change can be met reliably; by default (``tol=None``) the
stopping rule compares Λ's statistics with their own noise. Converged, checked after each
outer iteration, when

* the ELBO on a fixed evaluation set with fixed noise (common random numbers: no Monte Carlo
  jitter between checks) has not beaten its best by more than 1e-4 relative for ``window``
  iterations (the encoder has stopped improving);
* the Λ-step statistics have stopped drifting while the ELBO stalls for ``window // 2``
  iterations (the burn-in is over: :mod:`invae.inference.averaging`), and they are precise
  enough. A step over m < n random rows (or fresh draws) is averaged after the burn-in; it
  estimates the mean over all n rows with variance σ²/m (σ² the rows' variance), so the
  average s̄ = Σ_j c_j ŝ_j has variance σ² V/m with V = Σ_j c_j², against the statistical
  variance σ²/n of the mean over the data: converged once ``V ≤ c² m/n`` with c = 0.5,
  where the Monte Carlo error adds at most c² = 25% to the statistical variance (12% to its
  standard error). A step over all rows is a function of φ alone and is not averaged
  (statistics of a q that is still learning would be stale); nor are the parameters of a
  prior trained by gradient. Their noise is Adam's, which a smaller step size reduces:
  their relative step-to-step noise (:meth:`~invae.inference.averaging.StatisticsAverage.relative_error`)
  must fall below c·√(2/n) (√(2/n): the relative standard error of a variance from n rows;
  n counts the prior's independent terms, ``n × prior.terms_per_row``: a path's grid steps).

A number ``tol`` replaces 1e-4 for the ELBO, and the statistics' criteria by a Monte Carlo
error (averaged or not) below ``tol``, relative.

Both are needed: Λ can sit still while the encoder is still improving, and the reverse.
Adam's step size is cut by ``lr_decay`` whenever the ELBO has not beaten its best by that
margin for ``window // 2`` outer iterations. (torch's ``ReduceLROnPlateau`` does this with a
relative threshold ``best·(1 ± tol)`` that points the wrong way for a negative ELBO.) With
``lr_warmup = W`` the steps of outer iteration t ≤ W take ``t / W`` of that step size; with
``gradient_clip = K`` a gradient above K × the running mean of recent gradient norms is
scaled down to it (both on for ``iaf``: docs/benchmarks.md, "The flow's warm-up").

Draws that are compared between iterations — the evaluation ELBO, and the Λ-step draws over
all rows — reuse the same random numbers at every iteration (:func:`~invae.inference.seeding.seeded`),
so they change only as φ and Λ change.

Given a :class:`~invae.inference.parallel.Shard`, x holds one process's rows of a fit over
several (``torch.distributed``): the same iterations over all the rows, split by rows
(:mod:`invae.inference.parallel`). Only decisions taken from gathered values (the ELBOs, the
Λ-step, the weights) roll back; an error in one process's own rows ends the fit, and the
others then stop with :class:`~invae.inference.checkpoints.ProcessLost`, rank 0 writing the last
good state to the checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..model.likelihoods import Likelihood
from ..model.prior import Prior
from .base import progress_disabled
from .averaging import StatisticsAverage
from .checkpoints import Checkpointer, FitInterrupted, ProcessLost
from .lambda_steps import LAMBDA_STEPS, LambdaStep
from .objectives import elbo, importance_weighted_bound
from .parallel import Noise, Shard
from .seeding import fresh_seed, seeded

__all__ = ["TrainingSettings", "train"]

_EVAL_SIZE = 2048
_PRECISION = 0.5  # c of the module's docstring: Monte Carlo over statistical standard error
_ELBO_TOL = 1e-4  # the ELBO's relative margin when tol is None
_MAX_ROLLBACKS = 3  # divergence: roll back and halve the step size at most this many times
# An evaluation ELBO this far (relative) below its best is a collapse, not noise: a step that
# sent q's spread or Λ where exp(z) of a count model overflows; a healthy fit's fixed-noise
# ELBO moves far less between iterations (docs/benchmarks.md, "Stable fits of counts").
_COLLAPSE = 0.25


@dataclass(frozen=True)
class TrainingSettings:
    """The optimiser's settings (see :class:`~invae.inference.estimator.VariationalEB`)."""

    learning_rate: float
    batch_size: int
    n_critic: int
    lambda_step: str
    max_iter: int
    tol: float | None
    window: int
    n_samples: int = 1
    lr_decay: float = 0.3
    lr_warmup: int = 0
    gradient_clip: float = 0.0
    lambda_draws: int = 8
    lambda_rows: int | None = None
    averaging_exponent: float = 1.0
    closed_form: bool = True

    def __post_init__(self):
        if self.lambda_step not in LAMBDA_STEPS:
            raise ValueError(f"lambda_step must be one of {', '.join(map(repr, LAMBDA_STEPS))}, "
                             f"got {self.lambda_step!r}")
        for name in ("batch_size", "n_critic", "max_iter", "window", "n_samples", "lambda_draws", "lambda_rows"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1) and not (name == "lambda_rows" and value is None):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.averaging_exponent, (int, float)) and 0.5 < self.averaging_exponent <= 1):
            raise ValueError(f"averaging_exponent must be in (0.5, 1], got {self.averaging_exponent!r}")
        if not (isinstance(self.lr_decay, (int, float)) and 0 < self.lr_decay <= 1):
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay!r}")
        if not (isinstance(self.lr_warmup, int) and self.lr_warmup >= 0):
            raise ValueError(f"lr_warmup must be an integer >= 0, got {self.lr_warmup!r}")
        if not (isinstance(self.gradient_clip, (int, float)) and (self.gradient_clip == 0 or self.gradient_clip >= 1)):
            raise ValueError(f"gradient_clip must be 0 (off) or a number >= 1, got {self.gradient_clip!r}")
        for name in ("learning_rate", "tol"):
            value = getattr(self, name)
            if name == "tol" and value is None:
                continue
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    def new_lambda_step(self) -> LambdaStep:
        """The Λ-step strategy these settings name, with ``lambda_draws`` draws per row over
        ``lambda_rows`` random rows (None: all rows)."""
        return LAMBDA_STEPS[self.lambda_step](self.lambda_draws, self.lambda_rows)


def train(x: Tensor, posterior: nn.Module, prior: Prior, likelihood: Likelihood, settings: TrainingSettings,
          lambda_step: LambdaStep | None, *, verbose: bool = False,
          callback: Callable[[int, Prior], None] | None = None, checkpoint: Checkpointer | None = None,
          identity: dict | None = None, shard: Shard | None = None) -> tuple[Prior, Likelihood, dict, int, bool]:
    """Run Algorithm 1 on data x (n, m); return (prior, likelihood, history, n_iter, converged):
    the likelihood with its learned noise where it has some (``Likelihood.state``).
    ``shard``: x holds this process's rows of a parallel fit (module docstring; None: all rows).

    ``lambda_step`` updates the prior after each round of Adam steps (e.g.
    ``settings.new_lambda_step()``); None keeps it fixed and trains q alone (inference on
    new data for a non-amortized family).
    ``callback(iteration, prior)`` runs after each outer iteration. ``checkpoint`` saves the
    whole state every so many iterations and on SIGINT/SIGTERM (then raises
    :class:`~invae.inference.checkpoints.FitInterrupted`), and resumes from it; ``identity``
    (settings, data fingerprint) guards against resuming another fit. Randomness comes
    from torch's global generator: seed it.

    Divergence (a non-finite ELBO or weight, an evaluation ELBO that collapses far below its
    best, a Λ-step that fails, or a covariance that is no longer positive definite: a failed
    factorisation) rolls the state back to the end of the last good iteration and halves
    Adam's step size, at most
    ``_MAX_ROLLBACKS`` times; then a ``FloatingPointError`` says what diverged.
    """
    run = _Run(x, posterior, prior, likelihood, settings, lambda_step, shard or Shard.whole(len(x), x.device))
    saved = checkpoint.load(identity or {}) if checkpoint is not None else None
    if saved is not None:
        run.resume(saved)
    good = run.capture()
    start = time.perf_counter() - (run.history["time"][-1] if run.history["time"] else 0.0)
    converged, rollbacks = False, 0
    with (tqdm(total=settings.max_iter, initial=run.iteration, desc="fit", disable=progress_disabled(verbose),
               leave=False) as bar, checkpoint if checkpoint is not None else contextlib.nullcontext()):
        try:
            while run.iteration < settings.max_iter:
                run.iteration += 1
                try:
                    train_elbo, change, value = run.outer_iteration()
                except (_Diverged, FloatingPointError, torch.linalg.LinAlgError) as error:
                    if run.shard.parallel and not isinstance(error, _Diverged):
                        raise  # this process's rows alone: the others cannot roll back with it
                    rollbacks += 1
                    _stop_if_hopeless(rollbacks, run.iteration, error, checkpoint)
                    run.roll_back(good)
                    continue
                run.record(train_elbo, change, value, time.perf_counter() - start)
                if callback is not None:
                    callback(run.iteration, run.prior)
                run.plateau.step(value, margin=(settings.tol or _ELBO_TOL) * max(1.0, abs(value)))
                good = run.capture()
                bar.update()
                bar.set_postfix(elbo=f"{value:.4f}", dLambda=f"{change:.1e}")
                converged = run.converged()
                received = _agreed_signal(checkpoint, run.shard)
                if checkpoint is not None and checkpoint.due(run.iteration, received):
                    _save(checkpoint, run, good, identity or {}, converged, received)
                if converged:
                    break
        except ProcessLost as error:  # another process stopped: its collective failed in this one
            _stop_lost(error, run, good, identity or {}, checkpoint)
    return run.prior, run.likelihood, run.history, run.iteration, converged


class _Diverged(Exception):
    """A non-finite quantity in an outer iteration (the message says which), the same in every
    process of a parallel fit."""


class _Run:
    """What one outer iteration carries to the next: the modules, Adam and its schedule, the
    fixed evaluation rows and seeds, the history; and the steps of an iteration."""

    def __init__(self, x, posterior, prior, likelihood, settings: TrainingSettings, lambda_step: LambdaStep | None,
                 shard: Shard):
        self.x, self.posterior, self.prior, self.likelihood = x, posterior, prior, likelihood
        self.settings, self.lambda_step, self.shard = settings, lambda_step, shard
        self.batch = min(settings.batch_size, shard.n)
        # the module that takes Adam's steps: φ's gradient averaged over the processes by DDP
        self.trainable = DistributedDataParallel(posterior) if shard.parallel else posterior
        # A prior trained by gradient: its parameters θ as leaves, Adam's second parameter group.
        by_gradient = lambda_step is not None and lambda_step.by_gradient
        self.theta = {key: value.detach().clone().requires_grad_() for key, value in prior.state().items()
                      if by_gradient}
        # Noise parameters learned with the prior (Likelihood.state; not when only q is trained),
        # in x's dtype: Adam's third group.
        self.psi = {key: value.detach().to(x.dtype).clone().requires_grad_()
                    for key, value in likelihood.state().items() if lambda_step is not None}
        # θ by the importance-weighted bound (_batch_loss)
        self.weighted = bool(self.theta) and lambda_step.targets_exact_posterior
        groups = [{"params": list(posterior.parameters())}]
        groups += [{"params": list(leaves.values())} for leaves in (self.theta, self.psi) if leaves]
        # fused: one kernel per step instead of a dozen (2–5 × faster on CPU, the same update)
        self.optimizer = torch.optim.Adam(groups, lr=settings.learning_rate, fused=True)
        self.plateau = _Plateau(self.optimizer, settings.lr_decay, patience=max(1, settings.window // 2))
        self.average, self.enough_averaging = self._stopping_targets(by_gradient)
        # a q whose optimum given Λ is closed form (a Gaussian exact posterior) is set there
        closed_form = getattr(posterior, "has_closed_form", None)
        self.closed_form_q = settings.closed_form and closed_form is not None and closed_form(prior, likelihood)
        self.eval_index = torch.randperm(shard.n, device=x.device)[: min(shard.n, _EVAL_SIZE)]
        self.eval_seed, self.lambda_seed = torch.randint(2**62, (2,)).tolist()
        self.history: dict[str, list[float]] = {"elbo": [], "train_elbo": [], "precision_change": [],
                                                "monte_carlo_error": [], "time": []}
        self.iteration = 0
        self.gradient_norm: float | None = None  # the running mean of _clip_gradient

    def _stopping_targets(self, by_gradient: bool) -> tuple[StatisticsAverage | None, float | None]:
        """The statistics' average (its ``tolerance``: the relative Monte Carlo error they may
        keep) and the Σ c² that an average needs (None: not averaged, or a fixed ``tol``);
        module docstring."""
        n, settings, step = self.shard.n, self.settings, self.lambda_step
        if step is None:
            return None, None
        terms = n * self.prior.terms_per_row
        target = _PRECISION * math.sqrt(2 / terms) if settings.tol is None else settings.tol
        averaging = not by_gradient and step.averages(n, self.batch)
        enough = _PRECISION**2 * step.rows_per_step(n, self.batch) / n if averaging and settings.tol is None else None
        return StatisticsAverage(settings.window, settings.averaging_exponent, target, averaging), enough

    def outer_iteration(self) -> tuple[float, float, float]:
        """Adam steps, the Λ-step, the evaluation ELBO: (train ELBO, Λ's relative change, ELBO)."""
        previous = self.prior
        train_elbo = self._closed_form_q_step() if self.closed_form_q else self._adam_steps()
        change = 0.0
        if self.lambda_step is not None:
            with torch.no_grad():
                self.prior = self._checked_lambda_step()
            change = self.prior.relative_change(previous)
        value = self._fixed_noise_elbo()
        if not math.isfinite(value):
            raise _Diverged("the evaluation ELBO is not finite")
        best = self.plateau.best
        if value < best - _COLLAPSE * max(1.0, abs(best)):
            raise _Diverged(f"the evaluation ELBO fell from {best:.4g} to {value:.4g}")
        return train_elbo, change, value

    def _adam_steps(self) -> float:
        """``n_critic`` Adam steps on the batch ELBO; their mean ELBO. Raises _Diverged if a loss
        or a weight stops being finite."""
        settings, elbo_sum = self.settings, torch.zeros((), dtype=torch.float64, device=self.x.device)
        with _scaled_steps(self.optimizer, self._warmup_factor()):
            for _ in range(settings.n_critic):
                rows, noise, weight = self._batch_rows()
                loss, batch_elbo = self._batch_loss(self.x[rows], rows, noise, weight)
                self.optimizer.zero_grad(set_to_none=True)
                with self.shard.exchanging():  # DDP's all-reduce
                    loss.backward()
                self._average_own_gradients()
                self._clip_gradient()
                self.optimizer.step()
                elbo_sum += batch_elbo
        train_elbo = float(self.shard.total(elbo_sum)) / (self.batch * settings.n_critic)
        if self.theta:
            self.prior = self._prior_with_theta(detached=True)
        if self.psi:
            self.likelihood = self._likelihood_with_psi(detached=True)
        if not math.isfinite(train_elbo):
            raise _Diverged("the training ELBO is not finite")
        self._check_weights()
        return train_elbo

    def _batch_rows(self) -> tuple[Tensor, Noise | None, float]:
        """A batch of B random rows of all n: (this process's rows of it, their draws' noise, the
        weight W/B of each row's ELBO in the loss: DDP averages the W processes' gradients). A
        process holding none of the batch still joins DDP's gradient average, with one of its rows
        weighted 0."""
        index = torch.randint(self.shard.n, (self.batch,), device=self.x.device)
        positions, rows = self.shard.local(index)
        weight = self.shard.world / self.batch
        if len(rows) == 0:
            positions, rows, weight = positions.new_zeros(1), rows.new_zeros(1), 0.0
        return rows, self.shard.noise(self.batch, positions), weight

    def _batch_loss(self, rows: Tensor, index: Tensor, noise: Noise | None, weight: float) -> tuple[Tensor, Tensor]:
        """The loss of one Adam step on the data rows x[index], whose draws take ``noise``, and
        the sum of their ELBOs times ``weight > 0`` (detached). The loss is −weight Σ ELBO (the
        batch's mean: weight 1/B in one process), whose gradient moves φ, ψ and a θ trained by
        gradient; where the Λ-step
        targets the exact posterior, θ moves by the importance-weighted bound's gradient instead
        (:func:`~invae.inference.objectives.importance_weighted_bound`: the ELBO's would keep q's
        bias in θ̂). ψ stays on the ELBO: on the bound it came no closer to the MLE on OU paths and
        went further on the Nile (docs/benchmarks.md, "The defensive proposal in the
        importance-weighted steps")."""
        q = self.trainable(rows, index)
        if not self.weighted:
            values = elbo(rows, q, self._prior_with_theta(), self._likelihood_with_psi(), self.settings.n_samples,
                          noise=noise)
            return -weight * values.sum(), values.detach().sum() * (weight > 0)
        fixed = elbo(rows, q, self._prior_with_theta(detached=True), self._likelihood_with_psi(),
                     self.settings.n_samples, noise=noise)
        bound = importance_weighted_bound(rows, q, self._prior_with_theta(), self._likelihood_with_psi(detached=True),
                                          self.lambda_step.n_draws, noise=noise)
        return -weight * (fixed.sum() + bound.sum()), fixed.detach().sum() * (weight > 0)

    def _average_own_gradients(self) -> None:
        """θ's and ψ's gradients averaged over the processes, as DDP averages φ's."""
        if not self.shard.parallel:
            return
        for leaf in (*self.theta.values(), *self.psi.values()):
            if leaf.grad is not None:
                leaf.grad.copy_(self.shard.total(leaf.grad) / self.shard.world)

    def _clip_gradient(self) -> None:
        """Scale this step's gradient to at most ``gradient_clip`` × the running mean of recent
        gradient norms (weight 0.1 on the newest). One draw in q's tail, where exp(z) of a
        count model is huge, gives a gradient far above the others; Adam would turn it into a
        step of about 3 × its step size in every weight at once."""
        limit = self.settings.gradient_clip
        if limit == 0:
            return
        grads = [leaf.grad for group in self.optimizer.param_groups for leaf in group["params"] if leaf.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        if not math.isfinite(norm):
            return  # the step's non-finite weights end the iteration (_check_weights)
        if self.gradient_norm and norm > limit * self.gradient_norm:
            torch._foreach_mul_(grads, limit * self.gradient_norm / norm)
            norm = limit * self.gradient_norm
        self.gradient_norm = norm if self.gradient_norm is None else 0.9 * self.gradient_norm + 0.1 * norm

    def _warmup_factor(self) -> float:
        """``min(1, t / lr_warmup)`` at outer iteration t: the share of Adam's step size taken."""
        warmup = self.settings.lr_warmup
        return 1.0 if warmup == 0 else min(1.0, self.iteration / warmup)

    def _check_weights(self) -> None:
        if not all(bool(torch.isfinite(weight).all()) for weight in self.posterior.parameters()):
            raise _Diverged("a posterior weight is not finite")

    @torch.no_grad()
    def _closed_form_q_step(self) -> float:
        """q at its optimum given the prior, for all rows; the ELBO of one random batch. Raises
        _Diverged if a weight is not finite."""
        try:  # from Λ alone: the same outcome in every process
            self.posterior.set_to_optimum(self.x, self.prior, self.likelihood)
        except (ValueError, FloatingPointError, torch.linalg.LinAlgError) as error:
            raise _Diverged(f"q's optimum given Λ failed: {error}") from None
        self._check_weights()
        index = torch.randint(self.shard.n, (self.batch,), device=self.x.device)
        positions, rows = self.shard.local(index)
        with seeded(fresh_seed(), self.x.device):  # a process without rows of the batch skips its draws
            total = self._elbo_sum(rows, self.shard.noise(self.batch, positions), self.settings.n_samples)
        return float(self.shard.total(total)) / self.batch

    def _prior_with_theta(self, detached: bool = False) -> Prior:
        """The prior at the leaves θ where it is trained by gradient (differentiable in θ), else as it is."""
        if not self.theta:
            return self.prior
        try:
            return self.prior.with_state({key: leaf.detach().clone() if detached else leaf
                                          for key, leaf in self.theta.items()})
        except ValueError as error:  # the prior refuses the parameters a gradient step gave it
            raise _Diverged(f"a gradient step gave the prior invalid parameters: {error}") from None

    def _likelihood_with_psi(self, detached: bool = False) -> Likelihood:
        """The likelihood at the leaves ψ of its learned noise (differentiable in ψ), else as it is."""
        if not self.psi:
            return self.likelihood
        return self.likelihood.with_state({key: leaf.detach().clone() if detached else leaf
                                           for key, leaf in self.psi.items()})

    def _checked_lambda_step(self) -> Prior:
        """The M-step on the averaged statistics (a prior trained by gradient: itself, its
        parameters averaged for their error only); an invalid Λ (not finite, not positive
        definite) raises _Diverged."""
        stalled = self.plateau.since_best >= self.plateau.patience  # q has stopped learning fast
        if self.lambda_step.by_gradient:
            self.average.update(self.prior.state(), stalled)
            return self.prior
        try:
            statistics = self.lambda_step.statistics(self.prior, self.posterior, self.x, self.likelihood, self.batch,
                                                     self.lambda_seed, self.shard)
        except ValueError as error:  # q invalid on some rows: this process's own (module docstring)
            if self.shard.parallel:
                raise FloatingPointError(f"q is invalid on rows of this process: {error}") from None
            raise _Diverged(f"the Λ-step gave an invalid Λ: {error}") from None
        try:  # on statistics gathered from every process: the same outcome in each
            return self.prior.m_step_from(self.average.update(statistics, stalled))
        except (ValueError, FloatingPointError, torch.linalg.LinAlgError) as error:
            raise _Diverged(f"the Λ-step gave an invalid Λ: {error}") from None

    @torch.no_grad()
    def _fixed_noise_elbo(self) -> float:
        """Mean ELBO over a fixed subset, with the same random numbers at every call."""
        positions, rows = self.shard.local(self.eval_index)
        with seeded(self.eval_seed, self.x.device):
            total = self._elbo_sum(rows, self.shard.noise(len(self.eval_index), positions))
        return float(self.shard.total(total)) / len(self.eval_index)

    def _elbo_sum(self, rows: Tensor, noise: Noise | None, n_samples: int = 1) -> Tensor:
        """Σ ELBO over this process's rows x[rows] (0 for none), float64."""
        if len(rows) == 0:
            return torch.zeros((), dtype=torch.float64, device=self.x.device)
        values = elbo(self.x[rows], self.posterior(self.x[rows], rows), self.prior, self.likelihood, n_samples,
                      noise=noise)
        return values.sum().to(torch.float64)

    def record(self, train_elbo: float, change: float, value: float, elapsed: float) -> None:
        error = self.average.relative_error() if self.average is not None else 0.0
        for key, entry in (("train_elbo", train_elbo), ("elbo", value), ("precision_change", change),
                           ("monte_carlo_error", error), ("time", elapsed)):
            self.history[key].append(entry)

    def converged(self) -> bool:
        """The ELBO has not beaten its best for ``window`` iterations, and the Λ-step's average
        has settled and is precise enough (module docstring)."""
        if self.plateau.since_best < self.settings.window:
            return False
        if self.average is None:
            return True
        if self.enough_averaging is None:
            return self.average.settled and self.average.relative_error() <= self.average.tolerance
        return self.average.settled and self.average.weight_squares <= self.enough_averaging

    def capture(self) -> dict:
        """A copy of the state at the end of an outer iteration (also a checkpoint's body)."""
        return {"posterior": {key: value.detach().clone() for key, value in self.posterior.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "plateau": [self.plateau.best, self.plateau.waited, self.plateau.since_best],
                "average": self.average.state_dict() if self.average is not None else None,
                "prior": {key: value.detach().clone() for key, value in (self.theta or self.prior.state()).items()},
                "likelihood": {key: value.detach().clone() for key, value in self.psi.items()},
                "history": {key: list(values) for key, values in self.history.items()},
                "iteration": self.iteration, "gradient_norm": self.gradient_norm, "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def restore(self, state: dict) -> None:
        """Put a :meth:`capture` back."""
        self.posterior.load_state_dict(state["posterior"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.plateau.best, self.plateau.waited, self.plateau.since_best = state["plateau"]
        if self.average is not None:
            self.average.load_state_dict(state["average"], self.x.device)
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.history = {key: list(values) for key, values in state["history"].items()}
        self.prior, self.iteration = self.prior.with_state(state["prior"]), state["iteration"]
        self.gradient_norm = state.get("gradient_norm")  # checkpoints from before clipping have none
        with torch.no_grad():  # in place: Adam holds the leaves
            for key, leaf in self.theta.items():
                leaf.copy_(state["prior"][key])
            for key, leaf in self.psi.items():  # checkpoints from before learned noise have none
                leaf.copy_(state["likelihood"][key])
        if self.psi:
            self.likelihood = self._likelihood_with_psi(detached=True)

    def roll_back(self, good: dict) -> None:
        """Back to the last good iteration, with half the step size the failed one took (so that
        each rollback halves it again: ``good`` holds the step size before any of them)."""
        halved = [0.5 * group["lr"] for group in self.optimizer.param_groups]
        self.restore(good)
        for group, lr in zip(self.optimizer.param_groups, halved):
            group["lr"] = lr

    def resume(self, saved: dict) -> None:
        """Continue from a checkpoint: its state, evaluation rows and seeds."""
        self.eval_index, (self.eval_seed, self.lambda_seed) = saved["eval_index"].to(self.x.device), saved["seeds"]
        self.restore(saved)

    def checkpoint_body(self, good: dict) -> dict:
        return {**good, "eval_index": self.eval_index.cpu(), "seeds": [self.eval_seed, self.lambda_seed]}


@contextlib.contextmanager
def _scaled_steps(optimizer: torch.optim.Optimizer, factor: float):
    """Adam's step size times ``factor`` for the steps inside; the schedule's own value after
    (the plateau's decays and the rollbacks' halvings act on it, not on the warm-up)."""
    scheduled = [group["lr"] for group in optimizer.param_groups]
    for group, rate in zip(optimizer.param_groups, scheduled):
        group["lr"] = rate * factor
    try:
        yield
    finally:
        for group, rate in zip(optimizer.param_groups, scheduled):
            group["lr"] = rate


def _stop_if_hopeless(rollbacks: int, iteration: int, error: Exception, checkpoint: Checkpointer | None) -> None:
    """Raise the final ``FloatingPointError`` once the rollbacks are spent."""
    if rollbacks <= _MAX_ROLLBACKS:
        return
    where = checkpoint.path if checkpoint is not None and checkpoint.path.is_file() else None
    raise FloatingPointError(
        f"the fit diverged at outer iteration {iteration} ({error}) after {_MAX_ROLLBACKS} "
        f"rollbacks with a halved step size each; last good checkpoint: "
        f"{str(where) if where else 'none (see --checkpoint-dir)'}") from None


def _agreed_signal(checkpoint: Checkpointer | None, shard: Shard) -> int | None:
    """The signal that asked the fit to stop (SIGINT, SIGTERM), if any process received one:
    one value for all, taken once per iteration (a signal to one process stops them all)."""
    if checkpoint is None:
        return None
    return shard.largest(checkpoint.received or 0) or None


def _save(checkpoint: Checkpointer, run: _Run, good: dict, identity: dict, converged: bool,
          received: int | None) -> None:
    """Write the checkpoint (rank 0 of a parallel fit); after the signal ``received``, stop (a
    finished fit just finishes)."""
    if run.shard.writes:
        checkpoint.save(run.checkpoint_body(good), identity)
    if received is not None and not converged:
        raise FitInterrupted(received, run.iteration, checkpoint.path)


def _stop_lost(error: ProcessLost, run: _Run, good: dict, identity: dict, checkpoint: Checkpointer | None
               ) -> NoReturn:
    """Another process stopped: rank 0 writes the last good state to the checkpoint; raise
    ``ProcessLost`` saying where to resume from."""
    if checkpoint is None:
        raise ProcessLost(f"{error} during outer iteration {run.iteration}; no checkpoint (see --checkpoint-dir)") from None
    if run.shard.writes:
        checkpoint.save(run.checkpoint_body(good), identity)
    raise ProcessLost(f"{error}; the state after outer iteration {good['iteration']} is in {checkpoint.path}: "
                      "resume with --resume") from None


class _Plateau:
    """Multiply Adam's step size by ``decay`` after ``patience`` checks without a gain > margin."""

    def __init__(self, optimizer: torch.optim.Optimizer, decay: float, patience: int):
        self.optimizer, self.decay, self.patience = optimizer, decay, patience
        self.best, self.waited, self.since_best = -math.inf, 0, 0

    def step(self, value: float, margin: float) -> None:
        if value > self.best + margin:
            self.best, self.waited, self.since_best = value, 0, 0
            return
        self.waited += 1
        self.since_best += 1
        if self.waited >= self.patience and self.decay < 1:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.decay
            self.waited = 0
