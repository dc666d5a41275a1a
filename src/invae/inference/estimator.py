"""``VariationalEB``: amortized variational empirical Bayes as a scikit-learn-style estimator.

It learns the prior's parameters Λ and a posterior family q_φ(z|x) jointly by the source's
Algorithm 1 (:mod:`invae.inference.training`), then answers posterior questions for any x.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor

from ..model.forward import LinearOperator
from ..model.rows import row_blocks, row_dim, split_rows
from ..threads import using_threads
from .base import EmpiricalBayesEstimator, _numpy
from .checkpoints import Checkpointer
from .families import FAMILIES, parallel_methods, posterior_components
from .lambda_steps import LAMBDA_STEPS
from .objectives import elbo as elbo_values
from .parallel import Shard
from .posteriors import marginal_cdf, moments
from .reweighting import importance_draws, resample, weighted_cdf, weighted_moments
from .seeding import seeded
from .training import TrainingSettings, train

__all__ = ["VariationalEB", "PRESETS"]

#: Optimiser settings. "paper" is the source's (α = 1e-6, B = 128, n_critic = 30, a Λ-step
#: on one sampled batch); "default" is the measured best (docs/benchmarks.md, "Presets").
PRESETS = {
    "default": {"learning_rate": 3e-3, "batch_size": 256, "n_critic": 10, "lambda_step": "expected",
                "lr_decay": 0.3, "lr_warmup": 0, "gradient_clip": 0.0, "closed_form": True},
    "paper": {"learning_rate": 1e-6, "batch_size": 128, "n_critic": 30, "lambda_step": "batch",
              "lr_decay": 1.0, "lr_warmup": 0, "gradient_clip": 0.0, "closed_form": False},
}
_ROWS_PER_CHUNK = 1024  # posterior questions are answered this many rows at a time (memory)
_DRAWS_PER_CHUNK = 2**18  # reweighted answers: at most this many draws (rows × n_moment_draws) at a time


class VariationalEB(EmpiricalBayesEstimator):
    """Estimate a prior's parameters and every signal's posterior by maximising the ELBO.

    Parameters
    ----------
    prior : Prior
        The prior family with its start values and penalty (e.g. ``GaussianGraphicalModel``).
    likelihood : Likelihood
        The known measurement model ``p(x | z)``.
    family : {"diagonal", "full-covariance", "low-rank", "iaf", "mixture", "mean-field"}
        ``diagonal``: an amortized encoder x ↦ N(μ(x), diag σ(x)²); ``full-covariance``:
        x ↦ N(μ(x), L(x)L(x)ᵀ); ``iaf``: a diagonal encoder followed by ``flow_steps``
        inverse autoregressive flow steps (docs/methods.md §2.3); ``mixture``: x ↦ a mixture of
        ``posterior_components`` full-covariance Gaussians (multimodal posteriors); ``mean-field``: free
        per-observation factors (non-amortized; new data need a new optimisation).
        See :mod:`invae.inference.posteriors`.
    preset : {"default", "paper"}
        Start values for the optimiser settings below; explicit values override them.
    learning_rate, batch_size, n_critic, lambda_step, lr_decay
        Adam step size α, batch size B, Adam steps per Λ-step, the Λ-step mode
        (``"batch"``: M-step on one sampled batch; ``"expected"``: on expected statistics
        under q; ``"importance"``: on draws of q and q widened, reweighted to the exact posterior, see
        :class:`invae.inference.lambda_steps.ImportanceStep`; ``"gradient"``: Adam steps on
        the prior's parameters with φ's, on the ELBO, and ``"importance-gradient"``: on the
        importance-weighted bound, the two modes for a prior without an M-step, the second its
        default where the family's own is ``"importance"``), and the factor applied to α when
        the ELBO stalls (1 = constant α, as the source). The default preset takes
        ``"importance"`` for ``iaf`` and ``mixture``, whose Λ-step needs draws anyway, and
        ``"expected"`` (noise-free, closed form) for the Gaussian families.
    lr_warmup : int or None
        Outer iterations over which Adam's step size rises linearly to its value (Goyal et
        al. 2017): Adam's first steps move every weight by about the step size at once, which
        at the flow's larger step sent q's spread where exp(z) of a count model overflows.
        The default preset takes 3 for ``iaf``, 0 (none) otherwise.
    gradient_clip : float or None
        K ≥ 1: a gradient whose norm exceeds K × the running mean of recent norms is scaled
        down to that (0: never). One draw in q's tail gives a count model's gradient a spike
        that Adam turns into a large step in every weight. The default preset takes 3 for
        ``iaf``, 0 otherwise.
    closed_form : bool or None
        Where q's optimum given Λ is closed form — the exact posterior is Gaussian, ``N(K x_i, Σ)``
        or ``N(m_i, P_i⁻¹)`` with rank A = p, and the family holds it (``full-covariance``) or
        its best diagonal approximation (``diagonal``, ``mean-field``) — set q there at each
        outer iteration instead of taking Adam steps (docs/methods.md §2.2): the fit is then
        EM, with a diagonal E-step for the diagonal families. None: yes, except under the
        ``"paper"`` preset (the source's Algorithm 1, Adam throughout).
    max_iter : int
        Cap on outer iterations (Λ-steps).
    tol, window : float or None, int
        Converged when, for ``window`` outer iterations, the fixed-noise ELBO has not beaten its
        best by more than 1e-4 relative, and the Λ-step's statistics have settled with a
        Monte Carlo variance below a quarter of their statistical variance
        (:mod:`invae.inference.training`); a number ``tol`` replaces 1e-4 for the ELBO and
        the statistics' criteria by a relative Monte Carlo error below ``tol``. A shorter
        ``window`` stops sooner with a less trained q (docs/benchmarks.md, "Patience").
    hidden : tuple of int
        Hidden widths of the encoder's MLP.
    n_samples : int
        Monte Carlo draws per observation in the training ELBO, for the terms that have no
        closed form (:mod:`invae.inference.objectives`).
    flow_steps : int
        Number of IAF steps T (``family="iaf"`` only).
    posterior_components : int or None
        Components of q (``family="mixture"`` only); None: the prior's K for a mixture
        prior, else 2.
    lambda_draws : int or None
        Draws per observation in a Λ-step on draws (``"importance"``, or ``"expected"``
        where it has no closed form: ``iaf``, or a mixture prior); over all rows the same
        draws' noise is reused at every Λ-step (see ``lambda_rows``). None: 32 under
        a mixture prior, whose responsibilities make the draws' M-step noisier
        (docs/benchmarks.md, "Λ-step draws under a mixture prior"), else 8.
    lambda_rows : int or None
        Random rows per Λ-step, each step with fresh draws; their statistics are averaged over
        steps (stochastic-approximation EM, :mod:`invae.inference.averaging`). None: 1024 for
        ``"importance"``, whose draws cost most, else all rows (the same draws' noise at
        every step).
    n_moment_draws : int
        Monte Carlo draws per row for posterior answers that q has in no closed form: the
        means and sds of ``iaf`` (:func:`invae.inference.posteriors.moments`), and every answer when
        ``reweight``.
    reweight : bool or None
        Answer the posterior questions (``transform``, ``posterior``, ``posterior_cdf``,
        ``sample_posterior``) for the exact posterior ``p(z | x; Λ̂)``, from ``n_moment_draws``
        draws of q (and of q widened) reweighted by importance sampling
        (:mod:`invae.inference.reweighting`), rather than from q itself. None: where the Λ-step is
        ``"importance"`` (by default ``iaf`` and ``mixture``), so that Λ̂ and the signals
        answer to the same posterior (docs/benchmarks.md, "Reweighted posterior answers").
    warm_start : bool
        Start the next ``fit`` from the last fit's Λ̂ and posterior network (with ``prior``'s
        penalty): how :func:`invae.inference.penalty.select_penalty` walks its path.
    callback : callable, optional
        ``callback(iteration, prior)`` after each outer iteration (Λ-step).
    checkpoint_dir : path, optional
        Write the whole training state to ``checkpoint_dir/checkpoint.pt`` every
        ``checkpoint_every`` outer iterations and on SIGINT/SIGTERM (:mod:`invae.inference.checkpoints`);
        ``resume=True`` continues from it, bit for bit on CPU.
    random_state : int
        Seeds every draw (initialisation, batches, noise): a CPU fit is bit-for-bit repeatable.
    n_threads : int or None
        torch's CPU threads while training (:mod:`invae.threads`); None: ``$INVAE_NUM_THREADS``,
        else 1, the fastest for models of this size (docs/benchmarks.md, "Threads").
    verbose : bool or int
        A progress bar (iterations, ELBO, Λ change, time left) on stderr: 1 (True) when
        stderr is a terminal, 2 always, 0 never.
    allow_unidentified : bool
        A diagonal family (``diagonal``, ``mean-field``) with a forward matrix of rank < p
        cannot identify the prior (its optimum runs away: see
        :class:`~invae.inference.families.PosteriorFamily`), and ``fit`` refuses it with a
        ``ValueError`` before any work; True runs it anyway, with a ``UserWarning`` kept in
        ``warnings_``.

    Attributes
    ----------
    prior_, likelihood_, posterior_ : the fitted prior, likelihood and posterior module
    warnings_ : list of str
        What the fit warned of that a reader of its results should know (e.g. an
        unidentified family run with ``allow_unidentified``).
    history_ : dict of lists per outer iteration: ``elbo`` (fixed-noise, per observation),
        ``train_elbo`` (mean of the batch ELBOs), ``precision_change``, ``monte_carlo_error`` (the
        Λ-step statistics' relative error, :mod:`invae.inference.averaging`), ``time`` (s)
    n_iter_, converged_
    """

    def __init__(self, prior, likelihood, *, family: str = "diagonal", preset: str = "default",
                 learning_rate: float | None = None, batch_size: int | None = None,
                 n_critic: int | None = None, lambda_step: str | None = None,
                 lr_decay: float | None = None, lr_warmup: int | None = None, gradient_clip: float | None = None,
                 closed_form: bool | None = None, max_iter: int = 2000,
                 tol: float | None = None, window: int = 20, hidden: tuple[int, ...] = (128, 128),
                 n_samples: int = 1, flow_steps: int = 2, posterior_components: int | None = None,
                 lambda_draws: int | None = None, lambda_rows: int | None = None,
                 n_moment_draws: int = 256, reweight: bool | None = None, warm_start: bool = False, callback=None,
                 checkpoint_dir: str | None = None, checkpoint_every: int = 50, resume: bool = False,
                 random_state: int = 0, verbose: bool = False, n_threads: int | None = None, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, allow_unidentified: bool = False):
        super().__init__(prior, likelihood, warm_start=warm_start, callback=callback, device=device, dtype=dtype)
        self.family = family
        self.preset = preset
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_critic = n_critic
        self.lambda_step = lambda_step
        self.lr_decay = lr_decay
        self.lr_warmup = lr_warmup
        self.gradient_clip = gradient_clip
        self.closed_form = closed_form
        self.max_iter = max_iter
        self.tol = tol
        self.window = window
        self.hidden = hidden
        self.n_samples = n_samples
        self.flow_steps = flow_steps
        self.posterior_components = posterior_components
        self.lambda_draws = lambda_draws
        self.lambda_rows = lambda_rows
        self.n_moment_draws = n_moment_draws
        self.reweight = reweight
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.random_state = random_state
        self.verbose = verbose
        self.n_threads = n_threads
        self.allow_unidentified = allow_unidentified

    def _settings(self) -> TrainingSettings:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        chosen = dict(PRESETS[self.preset])
        if self.preset == "default":
            chosen.update(FAMILIES[self.family].defaults)
        if self.lambda_step is None and not self.prior.has_m_step:
            # θ by gradient: importance-weighted where the family's step is
            weighted = LAMBDA_STEPS[chosen["lambda_step"]].targets_exact_posterior
            chosen["lambda_step"] = "importance-gradient" if weighted else "gradient"
        for key in chosen:
            if getattr(self, key) is not None:
                chosen[key] = getattr(self, key)
        step = LAMBDA_STEPS[chosen["lambda_step"]]
        if step.by_gradient == self.prior.has_m_step:
            suited = [name for name, kind in LAMBDA_STEPS.items() if kind.by_gradient != self.prior.has_m_step]
            raise ValueError(f"lambda_step={chosen['lambda_step']!r} does not suit {type(self.prior).__name__}, "
                             f"which has {'an' if self.prior.has_m_step else 'no'} M-step: use "
                             + " or ".join(map(repr, suited)))
        draws = step.default_draws(self.prior) if self.lambda_draws is None else self.lambda_draws
        rows = step.default_rows if self.lambda_rows is None else self.lambda_rows
        return TrainingSettings(max_iter=self.max_iter, tol=self.tol, window=self.window, n_samples=self.n_samples,
                                lambda_draws=draws, lambda_rows=rows, **chosen)

    def _new_posterior(self, x: Tensor, shard: Shard) -> torch.nn.Module:
        """A fresh posterior module for the rows x (n, m), ``shard``'s of a parallel fit: encoders
        standardised by all the rows."""
        module = self.build_posterior(n=len(x), m=x.shape[1])
        if shard.parallel:
            module.standardize_with(x, shard)
        elif self._amortized:
            module.standardize_with(x)
        return module.to(self.device, self.dtype)

    def _check_parallel(self, shard: Shard) -> None:
        """Refuse a parallel fit that this family cannot make (ValueError)."""
        if not shard.parallel:
            return
        if not FAMILIES[self.family].parallel:
            raise ValueError(f"{FAMILIES[self.family].method} does not fit over several processes; "
                             f"{', '.join(parallel_methods())} do")

    @property
    def _amortized(self) -> bool:
        return FAMILIES[self.family].amortized

    def build_posterior(self, n: int, m: int) -> torch.nn.Module:
        """The untrained module of this family for n rows of m data columns (see
        :data:`invae.inference.families.FAMILIES`); a model file's weights are loaded into it."""
        return FAMILIES[self.family].build(self, n, m)

    def _unidentified(self) -> str | None:
        """Why this family cannot identify the prior through this likelihood, or None."""
        forward, p = self.likelihood.forward, self.prior.dim
        if not (FAMILIES[self.family].diagonal and isinstance(forward, LinearOperator)):
            return None
        rank = forward.rank
        if rank == p:
            return None
        return (f"the {FAMILIES[self.family].method} family (a diagonal q) cannot identify the prior through a "
                f"forward matrix of rank {rank} < p = {p}: its optimum runs away "
                "(docs/benchmarks.md, bench_vae's compressive rows); use iaf, full-covariance or mixture")

    def _check_identified(self) -> list[str]:
        """Refuse an unidentified fit (ValueError), or with ``allow_unidentified`` warn; the warnings."""
        reason = self._unidentified()
        if reason is None:
            return []
        if not self.allow_unidentified:
            raise ValueError(f"{reason}, or allow it anyway (allow_unidentified=True, --allow-unidentified)")
        warnings.warn(reason, UserWarning, stacklevel=3)
        return [reason]

    def fit(self, X) -> VariationalEB:
        """Fit to the rows X (n, m); under an initialised ``torch.distributed`` process group,
        X is this process's shard of them, the ranks' shards in order of rows
        (:mod:`invae.inference.parallel`)."""
        self.warnings_ = self._check_identified()
        settings = self._settings()
        x = self._tensor(X)
        shard = Shard.of(len(x), x.device)
        self._check_parallel(shard)
        prior, likelihood = self._models()
        with seeded(self.random_state, x.device), using_threads(self.n_threads):
            reuse = self._warm() and (self._amortized or len(x) == len(self._fitted_data))
            posterior = self.posterior_ if reuse else self._new_posterior(x, shard)
            prior, likelihood, history, n_iter, converged = train(
                x, posterior, prior, likelihood, settings, settings.new_lambda_step(), verbose=self.verbose,
                callback=self.callback, checkpoint=self._checkpointer(), identity=self._identity(x, settings, shard),
                shard=shard)
        if not converged:
            method = FAMILIES[self.family].method  # the user's name for it: iaf, not path-iaf
            warnings.warn(f"{method} fit stopped at max_iter={self.max_iter} before the prior's parameters "
                          "and the ELBO settled; raise max_iter or tol", ConvergenceWarning)
        self.prior_, self.likelihood_, self.posterior_ = prior, likelihood, posterior
        self.history_, self.n_iter_, self.converged_ = history, n_iter, converged
        self._fitted_data = x
        return self

    def posterior_state(self) -> dict | None:
        """An amortized family's trained weights on the CPU (``restore``'s argument); None for
        free per-row factors, which new data fit afresh."""
        self.check_fitted()
        if not self._amortized:
            return None
        return {key: value.detach().cpu() for key, value in self.posterior_.state_dict().items()}

    def restore(self, posterior_state: dict | None = None) -> VariationalEB:
        """Fitted at ``prior``'s parameters, with an amortized family's trained weights
        ``posterior_state`` (a ``state_dict``; a ``ValueError`` says why it does not fit the
        family's module); a non-amortized family keeps no per-row factors: every
        ``transform`` fits them afresh under Λ̂. Returns ``self``."""
        super().restore()
        m = row_dim(self.prior, self.likelihood)
        self._fitted_data = torch.empty(0, m, dtype=self.dtype, device=self.device)
        if posterior_state is not None:
            module = self.build_posterior(n=0, m=m)
            try:
                module.load_state_dict(posterior_state)
            except RuntimeError as error:  # missing keys or mismatched shapes: torch's second line says which
                raise ValueError(str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)) from None
            self.posterior_ = module.to(self.device, self.dtype)
        return self

    def _checkpointer(self) -> Checkpointer | None:
        if self.checkpoint_dir is None:
            if self.resume:
                raise ValueError("resume needs a checkpoint folder (checkpoint_dir, --checkpoint-dir)")
            return None
        return Checkpointer(self.checkpoint_dir, every=self.checkpoint_every, resume=self.resume)

    def _identity(self, x: Tensor, settings: TrainingSettings, shard: Shard) -> dict:
        """What a checkpoint must match to be resumed: the model, the settings and the data (all
        the processes' rows; the checksum is compared to round-off, :class:`~invae.inference.checkpoints.Checkpointer`)."""
        sums = [(float(block.sum()), float(block.square().sum())) for _, block in row_blocks(x)]  # bounded memory
        local = torch.tensor([math.fsum(s for s, _ in sums), math.fsum(q for _, q in sums)], dtype=torch.float64)
        checksum = shard.total(local).tolist()
        return {"family": self.family, "hidden": list(self.hidden), "flow_steps": self.flow_steps,
                "posterior_components": posterior_components(self),
                "random_state": self.random_state, "settings": _settings_identity(settings),
                "prior": [type(self.prior).__name__, self.prior.dim, self.prior.config()],
                "data_shape": [shard.n, x.shape[1]], "data_checksum": checksum}

    def _posterior_module(self, x: Tensor) -> torch.nn.Module:
        """The posterior for rows x: the fitted one, or for new data and mean-field factors,
        factors fitted afresh under Λ̂ (non-amortized)."""
        if self._amortized or (x.shape == self._fitted_data.shape and torch.equal(x, self._fitted_data)):
            return self.posterior_
        factors = self.build_posterior(n=len(x), m=x.shape[1]).to(self.device, self.dtype)
        with seeded(self.random_state, x.device), torch.enable_grad(), using_threads(self.n_threads):
            train(x, factors, self.prior_, self.likelihood_, self._settings(), None)  # no Λ-step: Λ̂ stays
        return factors

    def _chunks(self, x: Tensor, rows_per_chunk: int = _ROWS_PER_CHUNK):
        """(rows, q(z | x[rows])) in chunks of rows: bounded memory for any n."""
        module = self._posterior_module(x)
        index = torch.arange(len(x), device=x.device)
        for start in range(0, len(x), rows_per_chunk):
            rows = slice(start, start + rows_per_chunk)
            yield rows, module(x[rows], index[rows])

    @property
    def reweighted(self) -> bool:
        """Whether the posterior answers are the exact posterior's at Λ̂ (q's draws reweighted),
        rather than q's own: ``reweight``, or by default whether the Λ-step is ``"importance"``."""
        if self.reweight is not None:
            return bool(self.reweight)
        return LAMBDA_STEPS[self._settings().lambda_step].targets_exact_posterior

    def _weighted_chunks(self, x: Tensor, n_draws: int | None = None):
        """(rows, draws (S, r, p), weights (S, r)) of the exact posterior under Λ̂, chunk by chunk;
        S = ``n_draws``, by default ``n_moment_draws``."""
        n_draws = n_draws or self.n_moment_draws
        for rows, q in self._chunks(x, max(1, _DRAWS_PER_CHUNK // n_draws)):
            yield rows, *importance_draws(q, x[rows], self.prior_, self.likelihood_, n_draws)

    @torch.no_grad()
    def _posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        parts = ([weighted_moments(z, w) for _, z, w in self._weighted_chunks(x)] if self.reweighted
                 else [moments(q, self.n_moment_draws) for _, q in self._chunks(x)])
        return torch.cat([m for m, _ in parts]), torch.cat([s for _, s in parts])

    def _answering(self):
        """One stream of draws, seeded by ``random_state``, for the answers of all blocks of rows."""
        return seeded(self.random_state, self.device)

    def _answer_blocks(self, rows: np.ndarray):
        """Blocks of rows, but free factors (non-amortized) answer all the rows they were fitted on at once."""
        if not self._amortized:
            return [(slice(None), self._tensor(rows))]
        return super()._answer_blocks(rows)

    @torch.no_grad()
    def posterior_cdf(self, X, threshold=0.0) -> np.ndarray:
        """``P(z_ij ≤ t_i | x_i)``, shape (n, p), for a threshold t that is one number or one per
        row (n,): under q, exact for the Gaussian and mixture families and from
        ``n_moment_draws`` draws for ``iaf``; with ``reweight``, under the exact posterior from
        the weighted draws. (The local false sign rate is ``min(P(z ≤ 0), P(z ≥ 0))``.)"""
        self.check_fitted()
        x = self._tensor(X)
        t = torch.as_tensor(np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(x),)).copy(),
                            dtype=x.dtype, device=x.device)[:, None]
        with seeded(self.random_state, x.device):
            if self.reweighted:
                return _numpy(torch.cat([weighted_cdf(z, w, t[rows]) for rows, z, w in self._weighted_chunks(x)]))
            return _numpy(torch.cat([marginal_cdf(q, t[rows], self.n_moment_draws) for rows, q in self._chunks(x)]))

    @torch.no_grad()
    def importance_ess(self, X) -> np.ndarray:
        """Effective sample size ``1 / Σ_s w̃_s²`` of each row's reweighted draws, shape (n,), out
        of ``n_moment_draws``: the draws behind ``transform`` and ``posterior`` (the same
        seed). A small one flags a row whose exact posterior q misses; the Monte Carlo
        error of its mean is about sd/√ESS."""
        self.check_fitted()
        x = self._tensor(X)
        with seeded(self.random_state, x.device):
            return _numpy(torch.cat([1 / w.square().sum(0) for _, _, w in self._weighted_chunks(x)]))

    @torch.no_grad()
    def impute(self, X) -> np.ndarray:
        """See :meth:`~invae.inference.base.EmpiricalBayesEstimator.impute`; where E[x | z] is not
        linear in z (a link function, a nonlinear G), its mean over ``n_moment_draws`` posterior
        draws per row (reweighted ones under ``reweight``)."""
        self.check_fitted()
        if self.likelihood_.predictive_mean_is_linear:
            return super().impute(X)
        x = self._tensor(X)
        predicted = self.likelihood_.predictive_mean
        with seeded(self.random_state, x.device):
            parts = ([torch.einsum("sn,snm->nm", w, predicted(split_rows(x[rows], self.likelihood_)[0], z))
                      for rows, z, w in self._weighted_chunks(x)] if self.reweighted
                     else [predicted(split_rows(x[rows], self.likelihood_)[0], q.sample((self.n_moment_draws,))).mean(0)
                           for rows, q in self._chunks(x)])
        return self._completed(X, torch.cat(parts))

    @torch.no_grad()
    def sample_posterior(self, X, n_samples: int = 100) -> np.ndarray:
        """Draws from q(z | x_i) for each row, shape (n_samples, n, p); with ``reweight``, from the
        exact posterior: resampled (with replacement, so some repeat) from max(``n_samples``,
        ``n_moment_draws``) weighted draws."""
        self.check_fitted()
        x = self._tensor(X)
        if self.reweighted:
            pool = max(n_samples, self.n_moment_draws)
            return _numpy(torch.cat([resample(z, w, n_samples) for _, z, w in self._weighted_chunks(x, pool)], dim=1))
        return _numpy(torch.cat([q.sample((n_samples,)) for _, q in self._chunks(x)], dim=1))

    @torch.no_grad()
    def elbo(self, X, n_samples: int = 100) -> tuple[float, float]:
        """The mean ELBO per observation and its standard error.

        Each observation's ELBO is averaged over ``n_samples`` draws where it has no closed
        form (:mod:`invae.inference.objectives`); the standard error is that of the mean over
        observations (sd / √n), which includes any Monte Carlo noise (NaN for one observation).
        The draws are seeded by ``random_state``: the same call gives the same answer.
        """
        self.check_fitted()
        x = self._tensor(X)
        with seeded(self.random_state, x.device):
            values = torch.cat([elbo_values(x[rows], q, self.prior_, self.likelihood_, n_samples)
                                for rows, q in self._chunks(x)]).to(torch.float64)
        spread = float(values.std()) if len(values) > 1 else math.nan
        return float(values.mean()), spread / math.sqrt(len(values))

    def score(self, X) -> float:
        """Mean ELBO per observation (higher is better), a lower bound on mean log p(x; Λ̂)."""
        return self.elbo(X)[0]


# Settings that checkpoints written before them lack: off, they leave the fit as it was, and
# such checkpoints still resume.
_LATER_SETTINGS = ("lr_warmup", "gradient_clip")


def _settings_identity(settings: TrainingSettings) -> dict:
    """The settings a checkpoint must match: all, less the later ones that are off."""
    return {key: value for key, value in dataclasses.asdict(settings).items()
            if not (key in _LATER_SETTINGS and value == 0)}
