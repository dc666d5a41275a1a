"""Priors ``g(z; Λ)`` over the latent signal ``z ∈ R^p`` whose parameters are unknown.

A prior knows its log-density, how to sample, and its M-step: given draws of ``z`` (or
the moments of a Gaussian posterior over ``z``) it returns the prior that maximises the
expected complete-data log-density minus its penalty,

    Λ̂ = argmax_Λ  (1/n) Σ_i E_q[log g(z_i; Λ)] − penalty(Λ).

The M-step goes through the expected sufficient statistics of the complete data (a second
moment; a mixture's responsibilities and their first and second moments): ``m_step(z) =
m_step_from(statistics(z))``. They are averages over draws, so a weighted average of the
statistics of several Λ-steps is itself a valid argument of :meth:`Prior.m_step_from` — the
stochastic-approximation EM that the trainer runs (docs/methods.md §2.2).

A prior is a ``torch.nn.Module`` whose parameters θ are its registered tensors (buffers,
so ``state_dict()`` holds them and ``state()`` returns them). Priors are immutable all the
same: an M-step returns a new prior, and :meth:`Prior.to` returns a moved copy (unlike
``nn.Module.to``, which moves a module in place). A prior whose maximiser has no closed
form sets ``has_m_step = False``; the trainer then moves θ by gradient on the ELBO instead.

A prior may depend on k known covariates per row, ``g(z_i; θ, c_i)`` (``covariate_dim = k``,
e.g. the location ``μ + B c_i`` of :mod:`invae.model.location`): every method that reads the
rows of z then takes their ``covariates`` (..., n, k). A data row carries them after the
likelihood's columns (:func:`invae.model.rows.split_rows`), so they follow every minibatch.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Prior"]


class Prior(nn.Module, abc.ABC):
    """A parametric prior ``g(z; θ)`` on ``R^p`` with an M-step for θ. Subclasses call
    ``super().__init__()`` first and register θ with ``register_buffer``."""

    dim: int
    #: k, the known covariates per row that the prior reads (0: none).
    covariate_dim: int = 0
    #: The independent terms one row adds to θ's statistics: 1 for a vector z; a path's grid
    #: steps for a path prior. θ's standard error falls as 1/√(n × this), which sets how
    #: precise the fit's statistics must be before it stops (invae.inference.training).
    terms_per_row: int = 1

    def forward(self, z: Tensor, covariates: Tensor | None = None) -> Tensor:
        """``log g(z; θ)``: a prior called on z is its log-density (e.g. in ``torch.func.functional_call``)."""
        return self.log_prob(z, covariates)

    @abc.abstractmethod
    def log_prob(self, z: Tensor, covariates: Tensor | None = None) -> Tensor:
        """``log g(z; θ)`` for ``z`` of shape (..., p) (covariates (..., k) broadcasting against
        it); returns shape (...)."""

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None, covariates: Tensor | None = None) -> Tensor:
        """``n`` independent draws, shape (n, p); one per row of ``covariates`` (n, k)."""

    def expected_log_prob(self, mean: Tensor, cov: Tensor, covariates: Tensor | None = None) -> Tensor | None:
        """``E[log g(z; θ)]`` for ``z ~ N(mean, cov)``, mean (..., p), cov (..., p, p) or the
        variances (..., p) of a diagonal Gaussian; shape (...). None where it has no closed
        form (the ELBO then averages ``log g`` over draws)."""
        return None

    #: Whether :meth:`m_step` exists. A prior without one has its parameters (:meth:`state`,
    #: which :meth:`with_state` must map to the prior differentiably) trained by gradient on
    #: the ELBO, together with the posterior (:class:`~invae.inference.lambda_steps.GradientStep`).
    has_m_step: bool = True

    def m_step(self, z: Tensor, weights: Tensor | None = None, covariates: Tensor | None = None) -> Prior:
        """The maximiser given draws ``z`` of shape (..., n, p) with ``weights`` of shape
        (..., n) (None: all equal): the expectation above is ``Σ w log g(z) / Σ w``."""
        return self.m_step_from(self.statistics(z, weights, covariates))

    def statistics(self, z: Tensor, weights: Tensor | None = None, covariates: Tensor | None = None
                   ) -> dict[str, Tensor]:
        """The expected sufficient statistics of draws ``z`` (..., n, p) weighted by ``weights``
        (..., n), as averages over the draws: what :meth:`m_step_from` maximises."""
        raise NotImplementedError(f"{type(self).__name__} has no M-step: its parameters are trained by "
                                  "gradient (lambda_step='gradient')")

    def m_step_from(self, statistics: dict[str, Tensor]) -> Prior:
        """The maximiser given expected sufficient statistics (:meth:`statistics`, or any
        weighted average of them)."""
        raise NotImplementedError(f"{type(self).__name__} has no M-step: its parameters are trained by "
                                  "gradient (lambda_step='gradient')")

    #: Whether :meth:`gaussian_statistics` exists: the expected log-density under a Gaussian q
    #: depends on q's first two moments alone (true of a Gaussian prior, not of a mixture).
    closed_form_gaussian_m_step: bool = True

    def m_step_gaussian(self, mean: Tensor, cov: Tensor | None = None, *,
                        var: Tensor | None = None, covariates: Tensor | None = None) -> Prior:
        """The maximiser of the exact expectation under ``q(z_i) = N(mean_i, cov_i)`` (see
        :meth:`gaussian_statistics`)."""
        return self.m_step_from(self.gaussian_statistics(mean, cov, var=var, covariates=covariates))

    def gaussian_statistics(self, mean: Tensor, cov: Tensor | None = None, *,
                            var: Tensor | None = None, covariates: Tensor | None = None) -> dict[str, Tensor]:
        """The exact expected sufficient statistics under ``q(z_i) = N(mean_i, cov_i)``.

        ``mean`` is (n, p). Give exactly one of ``cov``, (p, p) shared or (n, p, p) per
        observation, and ``var``, the (n, p) variances of a diagonal Gaussian; ``covariates``
        (n, k) where the prior reads them.
        """
        raise NotImplementedError(f"{type(self).__name__} has no closed-form M-step under a Gaussian q; "
                                  "use m_step on draws")

    @abc.abstractmethod
    def penalty(self) -> float:
        """The penalty on θ, in the per-observation scale of the objective above."""

    @abc.abstractmethod
    def relative_change(self, previous: Prior) -> float:
        """How far θ moved from ``previous``'s parameters, relative to their size."""

    @abc.abstractmethod
    def with_penalty(self, alpha: float) -> Prior:
        """The same prior (parameters, solver) with penalty strength ``alpha``."""

    def state(self) -> dict[str, Tensor]:
        """The parameters θ as named tensors (checkpoints, model files): the registered buffers."""
        return dict(self.state_dict())

    @abc.abstractmethod
    def with_state(self, state: dict[str, Tensor]) -> Prior:
        """This prior's settings (penalty, solver) with the parameters ``state``."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """The settings that are not parameters (penalty, solver, …), as plain values: with
        :meth:`state` they rebuild the prior, ``type(self).from_state(self.state(), **self.config())``."""

    @classmethod
    @abc.abstractmethod
    def from_state(cls, state: dict[str, Tensor], **config) -> Prior:
        """The prior with parameters ``state`` and settings ``config`` (see :meth:`config`)."""

    def refuse_covariates(self, covariates: Tensor | None) -> None:
        """A ``ValueError`` if rows bring covariates to a prior that reads none (``covariate_dim = 0``)."""
        if covariates is not None and covariates.shape[-1] > 0:
            raise ValueError(f"{type(self).__name__} takes no covariates, got {covariates.shape[-1]} per row")

    def _check_covariates(self, covariates: Tensor | None) -> None:
        """A ValueError unless rows bring exactly this prior's k covariates (none where k = 0)."""
        if self.covariate_dim == 0:
            self.refuse_covariates(covariates)
        elif covariates is None or covariates.shape[-1] != self.covariate_dim:
            got = "none" if covariates is None else covariates.shape[-1]
            raise ValueError(f"this prior needs {self.covariate_dim} covariates per row, got {got}")

    def summary(self) -> dict[str, Any]:
        """Plain numbers for a fit's ``summary.json`` (e.g. the penalty, a graph's edge count)."""
        return {}

    def with_parameters_from(self, other: Prior) -> Prior:
        """This prior's settings with ``other``'s parameters θ: a warm start."""
        return self.with_state(other.state())

    @abc.abstractmethod
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Prior:
        """The same prior with its parameters on ``device`` / in ``dtype``."""
