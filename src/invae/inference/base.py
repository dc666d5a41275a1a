"""What every invae estimator shares (scikit-learn conventions).

``__init__`` stores settings only; ``fit(X)`` returns ``self``; fitted state ends in ``_``
(``prior_``, ``likelihood_``, ``history_``, ``n_iter_``, ``converged_``); NumPy in and out.
``warm_start=True`` makes the next ``fit`` start from the last fit's parameters (with the
settings, e.g. the penalty, of ``prior``), as in scikit-learn. ``callback(iteration, prior)``,
when given, is called after each outer iteration of an iterative ``fit`` (to monitor it).
Subclasses implement ``fit`` and ``_posterior(x) -> (mean, std)`` on tensors.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..model.likelihoods import Likelihood
from ..model.prior import Prior
from ..model.missing import MissingEntries
from ..model.rows import row_blocks, row_dim, split_rows
from ..validation import check_data

__all__ = ["EmpiricalBayesEstimator", "progress_disabled"]


def progress_disabled(verbose: bool | int) -> bool | None:
    """tqdm's ``disable`` for a ``verbose`` level: 0 or False hides the progress bar, 1 or
    True shows it when stderr is a terminal (None: tqdm decides), 2 shows it always."""
    if not verbose:
        return True
    return None if verbose == 1 else False


class EmpiricalBayesEstimator(abc.ABC):
    """Estimates a prior's parameters from ``X`` (n, m) and each signal's posterior (n, p).

    A row of X is what the likelihood reads (m = its ``data_dim`` columns), followed by the
    prior's covariates where it has any (:mod:`invae.model.rows`)."""

    def __init__(self, prior: Prior, likelihood: Likelihood, *, warm_start: bool = False,
                 callback: Callable[[int, Prior], None] | None = None, device: str = "cpu",
                 dtype: torch.dtype = torch.float64):
        self.prior = prior
        self.likelihood = likelihood
        self.warm_start = warm_start
        self.callback = callback
        self.device = device
        self.dtype = dtype

    @abc.abstractmethod
    def fit(self, X) -> EmpiricalBayesEstimator:
        """Estimate the prior from observations ``X`` of shape (n, m); returns ``self``."""

    @abc.abstractmethod
    def _posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior means and marginal standard deviations, each (n, p), for x (n, m)."""

    def transform(self, X) -> np.ndarray:
        """Posterior means ``E[z_i | x_i]``, shape (n, p)."""
        return self.posterior(X)[0]

    def posterior_std(self, X) -> np.ndarray:
        """Marginal posterior standard deviations ``sd(z_ij | x_i)``, shape (n, p)."""
        return self.posterior(X)[1]

    def posterior(self, X, out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(means, standard deviations), each of shape (n, p), computed block by block of rows
        (:func:`~invae.model.rows.row_blocks`: a memory-mapped X is never read whole) and written
        into ``out`` where given (two (n, p) arrays, e.g. memory-mapped ``.npy`` files)."""
        self.check_fitted()
        rows, answers = self._rows(X), out
        with self._answering():
            for block, x in self._answer_blocks(rows):
                parts = [_numpy(part) for part in self._posterior(x)]
                if answers is None:
                    answers = tuple(np.empty((len(rows), *part.shape[1:])) for part in parts)
                for answer, part in zip(answers, parts):
                    answer[block] = part
        return answers

    def _answer_blocks(self, rows: np.ndarray):
        """(slice, tensor of those rows) for the blocks of the checked rows (n, r) that
        :meth:`_posterior` answers at once (:func:`~invae.model.rows.row_blocks`: bounded memory)."""
        return row_blocks(rows, dtype=self.dtype, device=self.device)

    def _answering(self) -> contextlib.AbstractContextManager:
        """The context every block's answers are computed in (e.g. one seeded stream of draws for all)."""
        return contextlib.nullcontext()

    def impute(self, X) -> np.ndarray:
        """The measurements (n, m) of the data rows X, each missing entry (:class:`~invae.model.missing.MissingEntries`)
        replaced by its posterior predictive mean ``E[x_ij | x_iO] = E[E[x_ij | z] | x_iO]``.

        Here from the posterior mean, exact where E[x | z] is linear in z (additive noise through
        a matrix A: ``A E[z | x_iO]``); :class:`~invae.inference.estimator.VariationalEB` averages
        ``E[x | z]`` over posterior draws otherwise."""
        self.check_fitted()
        x = self._tensor(X)
        rows = split_rows(x, self.likelihood_)[0]
        with self._answering():
            mean = self._posterior(x)[0]
        return self._completed(X, self.likelihood_.predictive_mean(rows, mean))

    def _completed(self, X, predicted: Tensor) -> np.ndarray:
        """The measurements (n, m) of the data rows X as given (float64), the missing ones from ``predicted`` (n, m)."""
        if not isinstance(self.likelihood_, MissingEntries):
            raise ValueError("impute needs a likelihood with missing entries (MissingEntries)")
        rows = torch.as_tensor(self._rows(X))
        base_rows, observed = self.likelihood_.split(split_rows(rows, self.likelihood_)[0])
        measured = base_rows[:, : self.likelihood_.forward.out_dim].numpy()
        return np.where(observed.numpy() > 0, measured, _numpy(predicted))

    def posterior_state(self) -> dict | None:
        """The trained weights a model file keeps (the argument of :meth:`restore`); None here."""
        return None

    def restore(self, posterior_state: dict | None = None) -> EmpiricalBayesEstimator:
        """Mark this estimator fitted at its ``prior``'s parameters without fitting (a model file's
        estimate); ``posterior_state``: the trained weights of a posterior network, where the
        estimator has one. Returns ``self``."""
        self.prior_ = self.prior.to(self.device, self.dtype)  # not _models(): no warm start from a previous fit
        self.likelihood_ = self.likelihood.to(self.device, self.dtype)
        self.n_iter_, self.converged_, self.history_ = 0, True, {}
        return self

    @property
    def precision_(self) -> np.ndarray:
        """The estimated precision matrix Λ̂ (p, p), for priors that have one."""
        self.check_fitted()
        return _numpy(self.prior_.precision)

    def _rows(self, X) -> np.ndarray:
        """The data rows X (n, row columns) checked, float64 (a float64 memory map stays one)."""
        return check_data(X, columns=row_dim(self.prior, self.likelihood), min_rows=self._min_rows)

    def _tensor(self, X) -> Tensor:
        return torch.as_tensor(self._rows(X), dtype=self.dtype, device=self.device)

    @property
    def _min_rows(self) -> int:
        """The rows a fit needs: 2, or 1 where a row holds several independent terms of the
        prior (``terms_per_row``: a series, whose every time step informs θ)."""
        return 1 if self.prior.terms_per_row > 1 else 2

    def _models(self) -> tuple[Prior, Likelihood]:
        """The prior to start from (warm-started if asked and fitted) and the likelihood, on device."""
        prior = self.prior.to(self.device, self.dtype)
        if self._warm():
            prior = prior.with_parameters_from(self.prior_)
        return prior, self.likelihood.to(self.device, self.dtype)

    def _warm(self) -> bool:
        return self.warm_start and hasattr(self, "prior_")

    def check_fitted(self) -> None:
        """A ``RuntimeError`` unless ``fit`` (or :meth:`restore`) has run."""
        if not hasattr(self, "prior_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit(X) first")


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()
