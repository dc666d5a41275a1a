"""An SDE's law over paths as an invae :class:`~invae.model.prior.Prior`: one data row is one
whole series, and z its latent path on the grid, flattened time-major.

The series are seen at times t_0 < … < t_{T−1}, shared by every row; the latent grid refines
them k-fold (:func:`invae.paths.sde.refine`), G = (T − 1) k + 1 points, so z ∈ R^{G d}
with ``z[g d + j]`` coordinate j at grid point g. The density is the SDE's
(:meth:`invae.paths.sde.SDEPrior.log_prob`): its start law and one Gaussian step per grid
interval. θ lives in this prior's buffers, named as the SDE module's parameters; the module
is a template that :func:`torch.func.functional_call` evaluates at θ, so that
:meth:`PathPrior.with_state` stays differentiable in θ.

θ's M-step. Where the SDE's transition is linear-Gaussian (Ornstein–Uhlenbeck, Brownian:
``linear_transition``), ``E_q[log g(z; θ)]`` depends on q through the moments E[z_0],
E[z_0 z_0ᵀ] and, per grid step, E[z_g], E[z_{g+1}], E[z_g z_gᵀ], E[z_{g+1} z_{g+1}ᵀ],
E[z_{g+1} z_gᵀ]: it is Kalman EM's Q(θ) (:func:`invae.paths.kalman_em.expected_log_prior`) of
those moments. They are averages, so the trainer's averaged statistics are valid arguments,
and :meth:`PathPrior.m_step_from` maximises Q by L-BFGS from the current θ. Otherwise (a
nonlinear drift) θ has no such step: ``has_m_step`` is False and the trainer moves θ by
gradient on the ELBO (docs/methods.md §3.12).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from ..model.prior import Prior
from .kalman_em import SmoothedStatistics, expected_log_prior, maximise, state_space
from .sde import SDE_PRIORS, SDEPrior, check_times, refine

__all__ = ["PathPrior"]


class PathPrior(Prior):
    """``g(z; θ)``: the law of ``sde``'s path on the grid of ``times`` (T,) refined ``substeps``-fold.

    Parameters
    ----------
    sde : SDEPrior
        A built-in SDE (:data:`invae.paths.sde.SDE_PRIORS`); its parameters are θ's start.
    times : array (T,)
        The observation times, strictly increasing, shared by every series.
    substeps : int
        k, the grid points per observation interval.
    """

    closed_form_gaussian_m_step = False

    def __init__(self, sde: SDEPrior, times, substeps: int = 1):
        super().__init__()
        times = check_times(times)
        if times.ndim != 1:
            raise ValueError("a path prior's times must be shared by every series, shape (T,), "
                             f"got {tuple(times.shape)}")
        self.grid, self.observed_index = refine(times.to(torch.float64), substeps)
        self.times, self.substeps, self.sde_dim = self.grid[self.observed_index], substeps, sde.dim
        self.dim = len(self.grid) * sde.dim
        self.terms_per_row = len(self.grid)  # the start and each grid step
        object.__setattr__(self, "template", sde)  # not a submodule: θ is in the buffers below
        for name, value in sde.named_parameters():
            self.register_buffer(_buffer_name(name), value.detach().clone())

    def _theta(self) -> dict[str, Tensor]:
        """θ by the SDE module's parameter names (a user's drift module's are dotted: ``field.weight``)."""
        return {name: getattr(self, _buffer_name(name)) for name, _ in self.template.named_parameters()}

    def paths(self, z: Tensor) -> Tensor:
        """z (..., G d) as paths (..., G, d)."""
        return z.reshape(*z.shape[:-1], len(self.grid), self.sde_dim)

    def log_prob(self, z: Tensor, covariates: Tensor | None = None) -> Tensor:
        """``log g(z; θ)`` for z (..., G d); shape (...). A θ outside the SDE's domain (an OU drift
        without a stationary law) raises ``FloatingPointError``: in a fit, a step that left the
        domain is rolled back as a divergence."""
        self.refuse_covariates(covariates)
        paths = self.paths(z)
        flat = paths.reshape(-1, *paths.shape[-2:])
        try:
            log_density = functional_call(self.template, self._theta(), (flat, self.grid.to(z), 1))
        except ValueError as error:
            raise FloatingPointError(f"the SDE's parameters left their domain: {error}") from None
        return log_density.reshape(z.shape[:-1])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, covariates: Tensor | None = None) -> Tensor:
        """``n`` paths drawn by the same steps as :meth:`log_prob` (the start law, then each grid
        step's Gaussian transition), flattened: (n, G d)."""
        self.refuse_covariates(covariates)
        sde, like = self.sde(), next(iter(self._theta().values()))
        mean, cov = sde.initial(like.dtype, like.device)
        z = mean + _normal(n, sde.dim, like, generator) @ torch.linalg.cholesky(cov).mT
        path, grid = [z], self.grid.to(like)
        for g in range(len(grid) - 1):
            mean, cov = sde.transition(z, grid[g + 1] - grid[g], grid[g])
            z = mean + (torch.linalg.cholesky(cov) @ _normal(n, sde.dim, like, generator)[..., None])[..., 0]
            path.append(z)
        return torch.stack(path, dim=1).reshape(n, self.dim)

    def sde(self) -> SDEPrior:
        """The SDE module at θ (a copy in θ's dtype, without gradient to θ): for sampling and outputs."""
        module = copy.deepcopy(self.template).to(dtype=next(iter(self._theta().values())).dtype)
        module.load_state_dict({name: value.detach() for name, value in self._theta().items()})
        return module

    @property
    def has_m_step(self) -> bool:
        """Whether θ has the M-step of the module docstring (a linear-Gaussian transition)."""
        return callable(getattr(self.template, "linear_transition", None))

    def statistics(self, z: Tensor, weights: Tensor | None = None, covariates: Tensor | None = None
                   ) -> dict[str, Tensor]:
        """The moments of the module docstring from draws z (..., n, G d) weighted by ``weights``
        (..., n), averaged over draws and series (``Σ w f(z) / Σ w``)."""
        if not self.has_m_step:
            return super().statistics(z, weights, covariates)
        self.refuse_covariates(covariates)
        paths = self.paths(z).reshape(-1, *z.shape[-2:-1], len(self.grid), self.sde_dim)  # (S, n, G, d)
        w = torch.ones(paths.shape[:2], dtype=z.dtype, device=z.device) if weights is None else weights
        w = w.reshape(paths.shape[:2])
        w = w / w.sum()
        outer = paths[..., :, None] * paths[..., None, :]
        lagged = paths[..., 1:, :, None] * paths[..., :-1, None, :]
        sums = {"start_sum": paths[..., 0, :], "start_outer": outer[..., 0, :, :], "current_sum": paths[..., :-1, :],
                "next_sum": paths[..., 1:, :], "current_outer": outer[..., :-1, :, :],
                "next_outer": outer[..., 1:, :, :], "lagged": lagged}
        return {key: (w.reshape(*w.shape, *[1] * (value.ndim - 2)) * value).sum((0, 1)) for key, value in sums.items()}

    def m_step_from(self, statistics: dict[str, Tensor]) -> PathPrior:
        """θ maximising Q(θ) of the averaged moments ``statistics`` (:meth:`statistics`), by L-BFGS
        from the current θ, in float64; Q's observation term does not depend on θ."""
        if not self.has_m_step:
            return super().m_step_from(statistics)
        like = next(iter(self._theta().values()))
        sde = self.sde().to(torch.float64)
        moments = SmoothedStatistics(1, 1, **{key: value.to(torch.float64) for key, value in statistics.items()})
        eye = torch.eye(self.sde_dim, dtype=torch.float64)
        maximise(lambda: expected_log_prior(moments, state_space(sde, self.grid, eye, eye.diagonal())) / len(self.grid),
                 list(sde.parameters()))
        return PathPrior(sde, self.times, self.substeps).to(like.device, like.dtype)

    def penalty(self) -> float:
        return 0.0

    def relative_change(self, previous: PathPrior) -> float:
        """The largest ``‖θ_k − θ_k,prev‖ / max(‖θ_k‖, ‖θ_k,prev‖)`` over θ's named parts (each in its units)."""
        changes, earlier = [0.0], previous.state()
        for name, now in self.state().items():
            before = earlier[name]
            scale = torch.maximum(torch.linalg.norm(now), torch.linalg.norm(before))
            if scale > 0:
                changes.append(float(torch.linalg.norm(now - before) / scale))
        return max(changes)

    def with_penalty(self, alpha: float) -> PathPrior:
        if alpha != 0:
            raise ValueError(f"an SDE prior takes no penalty, got alpha={alpha!r}")
        return self

    def state(self) -> dict[str, Tensor]:
        return self._theta()

    def with_state(self, state: dict[str, Tensor]) -> PathPrior:
        """This prior at θ = ``state`` (the tensors themselves, so gradients reach them)."""
        prior = PathPrior(self.template, self.times, self.substeps)
        for name, value in state.items():
            setattr(prior, _buffer_name(name), value)  # a registered buffer's slot: keeps the tensor as given
        return prior

    def config(self) -> dict[str, Any]:
        name = SDE_PRIORS.find(lambda cls: type(self.template) is cls, f"a {type(self.template).__name__}")
        return {"sde": name, "sde_dim": self.sde_dim, "times": self.times.tolist(), "substeps": self.substeps}

    @classmethod
    def from_state(cls, state: dict[str, Tensor], *, sde: str, sde_dim: int, times, substeps: int) -> PathPrior:
        return cls(SDE_PRIORS[sde](sde_dim), times, substeps).with_state(state)

    def to(self, device=None, dtype=None) -> PathPrior:
        return self.with_state({name: value.to(device=device, dtype=dtype) for name, value in self._theta().items()})

    def summary(self) -> dict[str, Any]:
        """θ by name (:meth:`~invae.paths.sde.SDEPrior.parameters_by_name`), as plain numbers and lists."""
        return {name: value.tolist() if isinstance(value, Tensor) else value
                for name, value in self.sde().parameters_by_name().items()}


def _buffer_name(parameter: str) -> str:
    """A parameter's name as a buffer's, which cannot hold a dot (``field.weight`` → ``field__weight``)."""
    return parameter.replace(".", "__")


def _normal(n: int, d: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(n, d, dtype=like.dtype, device=like.device, generator=generator)
