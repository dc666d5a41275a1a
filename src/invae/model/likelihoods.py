"""Known measurement models ``p(x | z)``: a forward operator plus a noise model.

``likelihood.log_prob(x, z)`` takes ``x`` of shape (..., m) and ``z`` of shape (..., p)
(broadcasting over leading dimensions, e.g. (S, n, ·) Monte Carlo draws against (n, ·)
data) and returns (...): the sum over the m entries of ``entry_log_prob`` (..., m), the
x_j being independent given z (so that :class:`MissingEntries` can sum over the observed
ones alone). ``distribution(z)`` returns a ``torch.distributions`` object with event shape (m,).
"""

from __future__ import annotations

import abc
import copy
import math
import warnings

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Bernoulli, Distribution, Independent, Normal, Poisson, StudentT

from .forward import ForwardOperator, LinearOperator

__all__ = ["Likelihood", "GaussianLikelihood", "PoissonLikelihood", "BernoulliLikelihood", "StudentTLikelihood",
           "NoisePerRowGaussianLikelihood", "gaussian_measurements", "linear_gaussian", "linear_moments"]


class Likelihood(abc.ABC):
    """``p(x | z)`` for a known forward operator and noise model.

    A data row is what ``log_prob`` reads: ``data_dim`` numbers, the m = ``forward.out_dim``
    measurements, followed by whatever else is known about that observation
    (:class:`NoisePerRowGaussianLikelihood`: its noise level).
    """

    forward: ForwardOperator
    #: Whether an encoder should read the data as ``log(1 + x)`` (counts, as scVI does):
    #: heavy-tailed counts standardised as they are put outlying rows tens of sds out,
    #: where an encoder's linear extrapolation gives absurd posteriors.
    encoder_log1p: bool = False

    @property
    def data_dim(self) -> int:
        """Columns of a data row."""
        return self.forward.out_dim

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x | z) = Σ_j log p(x_j | z)`` for data rows x (..., data_dim) and signals z (..., p); shape (...)."""
        return self.entry_log_prob(x, z).sum(-1)

    @abc.abstractmethod
    def entry_log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x_j | z)`` of each of the m measurements, shape (..., m)."""

    def expected_log_prob(self, x: Tensor, mean: Tensor, cov: Tensor) -> Tensor | None:
        """``E[log p(x | z)]`` for ``z ~ N(mean, cov)`` (shapes as in
        :meth:`~invae.model.prior.Prior.expected_log_prob`) and data rows x (..., data_dim);
        shape (...). None where it has no closed form (the ELBO then averages over draws)."""
        entries = self.expected_entry_log_prob(x, mean, cov)
        return None if entries is None else entries.sum(-1)

    def expected_entry_log_prob(self, x: Tensor, mean: Tensor, cov: Tensor) -> Tensor | None:
        """``E[log p(x_j | z)]`` of each measurement under ``z ~ N(mean, cov)``, (..., m); None
        where it has no closed form."""
        return None

    def predictive_mean(self, x: Tensor, z: Tensor) -> Tensor:
        """``E[x_j | z]`` (..., m) for signals z (..., p) of data rows x (their offsets, where
        the rows carry them): G(z) for additive noise, the inverse link of η for the others."""
        return self.forward(z)

    def link_scale(self, x: Tensor) -> Tensor:
        """The measurements of data rows x (..., data_dim) on the scale of G(z), (..., m): a
        rough inverse of the noise for a starting point (e.g. the penalty grid's anchor); the
        measurements themselves for additive noise."""
        return x[..., : self.forward.out_dim]

    @property
    def predictive_mean_is_linear(self) -> bool:
        """Whether :meth:`predictive_mean` is linear in z (additive noise through a matrix), so that
        its posterior mean is its value at the posterior mean of z."""
        return isinstance(self.forward, LinearOperator)

    @abc.abstractmethod
    def to(self, device=None, dtype=None) -> Likelihood:
        """The same likelihood on ``device`` / in ``dtype``."""

    def constants(self) -> dict:
        """The noise's known constants, as :class:`~invae.model.noise.NoiseModel` builds take
        them (``noise_std``, ``df``): what a model file keeps besides the forward operator."""
        return {}

    def state(self) -> dict[str, Tensor]:
        """Parameters of the noise learned with the prior's (none: the noise is known). A fit
        moves them by gradient on the ELBO, with the posterior, and :meth:`with_state` maps
        them back differentiably (docs/methods.md §3.12)."""
        return {}

    def with_state(self, state: dict[str, Tensor]) -> Likelihood:
        """This likelihood with the learned parameters ``state`` (:meth:`state`)."""
        return self


class _LawGivenSignal(Likelihood):
    """A likelihood whose rows are the measurements alone: ``x | z`` has a law of its own."""

    @abc.abstractmethod
    def distribution(self, z: Tensor) -> Distribution:
        """The law of ``x`` given ``z`` (..., p): batch shape (...), event shape (m,)."""

    def entry_log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        return self.distribution(z).base_dist.log_prob(x)

    @abc.abstractmethod
    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One observation per signal: (..., p) → (..., m)."""


class GaussianLikelihood(_LawGivenSignal):
    """``x = G(z) + σ ε``, ``ε ~ N(0, I_m)``.

    ``noise_std`` σ > 0 is a scalar, or a tensor that broadcasts against x (..., m): (m,)
    gives one per sensor; (n, 1) one per observation, but only for ``log_prob`` on exactly
    those n rows (a fit draws minibatches this σ does not follow): to fit with a known σ_i
    per observation use :class:`NoisePerRowGaussianLikelihood`. On a path's operator
    (:class:`~invae.paths.observation.PathOperator`) (m,) is one per sensor at every time
    (:meth:`~invae.model.forward.ForwardOperator.per_output`). ``learn_noise``: σ is not
    known; ``noise_std`` is where a fit starts it, and the fit learns ``log σ`` (:meth:`state`).
    """

    def __init__(self, forward: ForwardOperator, noise_std: float | Tensor, *, learn_noise: bool = False):
        noise_std = torch.as_tensor(noise_std).to(torch.float64)  # keeps a learned σ's gradient
        if not (torch.isfinite(noise_std).all() and (noise_std > 0).all()):
            raise ValueError(f"the noise standard deviation must be finite and > 0, got {_short(noise_std)}")
        self.forward = forward
        self.noise_std = noise_std
        self.learn_noise = learn_noise

    def __repr__(self) -> str:
        learned = ", learn_noise=True" if self.learn_noise else ""
        return f"GaussianLikelihood({self.forward!r}, noise_std={_short(self.noise_std.detach())}{learned})"

    @property
    def is_linear(self) -> bool:
        return isinstance(self.forward, LinearOperator)

    def _std(self, like: Tensor) -> Tensor:
        return self.forward.per_output(self.noise_std).to(device=like.device, dtype=like.dtype)

    def distribution(self, z: Tensor) -> Distribution:
        """``N(G(z), σ² I_m)``; its log-density is ``−‖x − G(z)‖²/(2σ²) − Σ_j log σ_j − (m/2) log 2π``."""
        mean = self.forward(z)
        return Independent(Normal(mean, self._std(mean).expand_as(mean), validate_args=False), 1,
                           validate_args=False)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean = self.forward(z)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + self._std(mean) * eps

    def expected_entry_log_prob(self, x: Tensor, mean: Tensor, cov: Tensor) -> Tensor | None:
        """For a linear G (else None): :func:`_expected_gaussian_log_prob`."""
        moments = linear_moments(self.forward, mean, cov)
        return None if moments is None else _expected_gaussian_log_prob(x, self._std(x), *moments)

    def to(self, device=None, dtype=None) -> GaussianLikelihood:
        return GaussianLikelihood(self.forward.to(device, dtype), self.noise_std, learn_noise=self.learn_noise)

    def constants(self) -> dict:
        return {"noise_std": self.noise_std.detach()}

    def state(self) -> dict[str, Tensor]:
        """``{"log_noise_std": log σ}`` where σ is learned, else none."""
        return {"log_noise_std": self.noise_std.log()} if self.learn_noise else {}

    def with_state(self, state: dict[str, Tensor]) -> GaussianLikelihood:
        if not state:
            return self
        return GaussianLikelihood(self.forward, state["log_noise_std"].exp(), learn_noise=True)


class _PointwiseLikelihood(_LawGivenSignal):
    """``x_j`` independent given ``η = G(z)``, each from ``law(η_j)``: batch (...), event (m,)."""

    def __init__(self, forward: ForwardOperator):
        self.forward = forward

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.forward!r})"

    @abc.abstractmethod
    def _law(self, eta: Tensor) -> Distribution:
        """The law of each ``x_j`` given ``η_j``, batch shape of ``eta``."""

    def distribution(self, z: Tensor) -> Distribution:
        return Independent(self._law(self.forward(z)), 1, validate_args=False)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draws with torch's samplers, seeded from ``generator`` when one is given."""
        law = self._law(self.forward(z))
        if generator is None:
            return law.sample()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            return law.sample()

    def to(self, device=None, dtype=None) -> _PointwiseLikelihood:
        moved = copy.copy(self)
        moved.forward = self.forward.to(device, dtype)
        return moved


class _LinkLikelihood(_PointwiseLikelihood):
    """``x_j ~ law(η_j)`` through a link, with known offsets: ``η_i = o_i + G(z_i)``.

    An offset o_ij is known per entry, e.g. the log of a sample's sequencing depth for
    counts: it moves η without a parameter. With ``offsets=True`` a data row is
    ``(x_i1, …, x_im, o_i1, …, o_im)`` (:meth:`rows` builds them), so minibatches, the
    encoder and new rows carry their own; without, o = 0 and a row is x_i alone.
    """

    def __init__(self, forward: ForwardOperator, offsets: bool = False):
        super().__init__(forward)
        self.offsets = bool(offsets)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.forward!r}{', offsets=True' if self.offsets else ''})"

    @property
    def data_dim(self) -> int:
        return self.forward.out_dim * (2 if self.offsets else 1)

    @staticmethod
    def rows(x, offsets) -> np.ndarray:
        """Data rows (n, 2m) from observations x (n, m) and offsets (n, m), (n, 1) or (n,) (one per row)."""
        x = np.asarray(x, dtype=np.float64)
        offsets = np.asarray(offsets, dtype=np.float64)
        offsets = offsets[:, None] if offsets.ndim == 1 else offsets
        if offsets.shape not in ((len(x), 1), x.shape):
            raise ValueError(f"offsets must be one per row (n,) or (n, 1), or one per entry {x.shape}; "
                             f"got shape {offsets.shape}")
        if not np.isfinite(offsets).all():
            raise ValueError("the offsets hold NaN or inf values")
        return np.hstack([x, np.broadcast_to(offsets, x.shape)])

    def distribution(self, z: Tensor) -> Distribution:
        if self.offsets:
            raise ValueError("with offsets the law of x depends on each row's offsets: use log_prob or predictive_mean")
        return super().distribution(z)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.offsets:
            raise ValueError("with offsets the law of x depends on each row's offsets: draw at o + G(z) yourself")
        return super().sample(z, generator)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor | float]:
        """(the observations (..., m), the offsets (..., m), or 0 without them) of data rows x."""
        m = self.forward.out_dim
        return (x[..., :m], x[..., m:]) if self.offsets else (x, 0.0)

    def entry_log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        measured, offset = self.split(x)
        return self._law(offset + self.forward(z)).log_prob(measured)

    def predictive_mean(self, x: Tensor, z: Tensor) -> Tensor:
        """The law's mean at η = o + G(z)."""
        return self._law(self.split(x)[1] + self.forward(z)).mean

    predictive_mean_is_linear = False  # a link function

    def link_scale(self, x: Tensor) -> Tensor:
        """The empirical link of the measurements less the offsets, ``g(x) − o`` (g: :meth:`_empirical_link`)."""
        measured, offset = self.split(x)
        return self._empirical_link(measured) - offset

    @abc.abstractmethod
    def _empirical_link(self, measured: Tensor) -> Tensor:
        """The link of each measurement, kept finite at the edges of its range (x = 0, 1)."""

    def constants(self) -> dict:
        return {"offsets": True} if self.offsets else {}


class PoissonLikelihood(_LinkLikelihood):
    """Counts ``x_j ~ Poisson(exp(η_j))``, ``η = o + G(z)`` (log link, offsets o: :class:`_LinkLikelihood`):
    ``log p(x | z) = Σ_j (x_j η_j − exp(η_j) − log x_j!)``.

    Above η = 40 (a rate of 2.4e17, beyond any count) the rate continues as exp(40)'s
    second-order Taylor polynomial in η − 40 (:func:`_overflow_safe_exp`). A wild draw
    of q then gets a finite, very low log-likelihood whose gradient points back, instead
    of exp(η) overflowing float32 (at η ≈ 88.7) into a NaN training loss (as a mixture
    posterior's negligible component did on an outlying row of counts: docs/benchmarks.md,
    "Stable fits of counts").
    """

    encoder_log1p = True

    def _law(self, eta: Tensor) -> Distribution:
        return Poisson(rate=_overflow_safe_exp(eta), validate_args=False)

    def _empirical_link(self, measured: Tensor) -> Tensor:
        return torch.log(measured + 0.5)  # log(x + ½): the usual start for log-linear counts

    def entry_log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """From η itself, not from the rate: a rate that underflows to 0 (η < −104 in
        float32) would give x log 0 = −∞ for x > 0."""
        x, offset = self.split(x)
        eta = offset + self.forward(z)
        return x * eta - _overflow_safe_exp(eta) - torch.lgamma(x + 1)

    def expected_entry_log_prob(self, x: Tensor, mean: Tensor, cov: Tensor) -> Tensor | None:
        """For a linear G (else None), with η = o + A z ~ N(η̄, V): ``E[exp η_j] = exp(η̄_j + V_jj/2)``
        (the log-normal mean), so ``Σ_j [x_j η̄_j − exp(η̄_j + V_jj/2) − log x_j!]``, the
        Poisson log-normal ELBO of Chiquet et al. (2018)."""
        moments = linear_moments(self.forward, mean, cov)
        if moments is None:
            return None
        (x, offset), (eta, eta_var) = self.split(x), moments
        eta = offset + eta
        return x * eta - _overflow_safe_exp(eta + 0.5 * eta_var) - torch.lgamma(x + 1)


_SAFE_EXP_KNOT = 40.0


def _overflow_safe_exp(eta: Tensor) -> Tensor:
    """``exp(η)`` for η ≤ 40; ``exp(40) (1 + d + d²/2)``, d = η − 40, above (C² at the knot)."""
    excess = (eta - _SAFE_EXP_KNOT).clamp_min(0)
    return eta.clamp_max(_SAFE_EXP_KNOT).exp() * (1 + excess + 0.5 * excess.square())


class BernoulliLikelihood(_LinkLikelihood):
    """Binary ``x_j ~ Bernoulli(sigmoid(η_j))``, ``η = o + G(z)`` (logistic link, offsets o: :class:`_LinkLikelihood`):
    ``log p(x | z) = Σ_j (x_j η_j − log(1 + exp(η_j)))``."""

    def _law(self, eta: Tensor) -> Distribution:
        return Bernoulli(logits=eta, validate_args=False)

    def _empirical_link(self, measured: Tensor) -> Tensor:
        return torch.logit((measured + 0.5) / 2)  # ±log 3 for 0 and 1: finite where logit(x) is not


class StudentTLikelihood(_PointwiseLikelihood):
    """Heavy-tailed noise ``x = G(z) + s·t_ν``: ``x_j ~ StudentT(ν, loc=η_j, scale=s)``."""

    def __init__(self, forward: ForwardOperator, df: float, scale: float):
        if not (df > 0 and scale > 0 and np.isfinite(df) and np.isfinite(scale)):
            raise ValueError(f"Student-t noise needs df > 0 and scale > 0, got df={df!r}, scale={scale!r}")
        super().__init__(forward)
        self.df, self.scale = float(df), float(scale)

    def _law(self, eta: Tensor) -> Distribution:
        return StudentT(self.df, loc=eta, scale=self.scale, validate_args=False)

    def constants(self) -> dict:
        return {"noise_std": self.scale, "df": self.df}


class NoisePerRowGaussianLikelihood(Likelihood):
    """``x_i = G(z_i) + σ_i ε_i``, ``ε_i ~ N(0, I_m)``, with a known noise level σ_i per observation.

    σ_i travels in the data: a row is ``(x_i1, …, x_im, σ_i)``, shape (..., m + 1)
    (:meth:`rows` builds them). So every minibatch carries its own σ_i, an encoder sees σ_i
    among its inputs (its posterior depends on it), and new data come with theirs, with
    no change to the trainer or the estimators:

        log p(x_i | z) = −‖x_i − G(z)‖² / (2σ_i²) − m log σ_i − (m/2) log 2π
    """

    def __init__(self, forward: ForwardOperator):
        self.forward = forward

    def __repr__(self) -> str:
        return f"NoisePerRowGaussianLikelihood({self.forward!r})"

    @property
    def data_dim(self) -> int:
        return self.forward.out_dim + 1

    @staticmethod
    def rows(x, noise_std) -> np.ndarray:
        """Data rows (n, m + 1) from measurements x (n, m) or (n,) and σ (n,) or a scalar."""
        x = np.asarray(x, dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x
        noise_std = np.broadcast_to(np.asarray(noise_std, dtype=np.float64), (len(x),))
        if not (np.isfinite(noise_std).all() and (noise_std > 0).all()):
            raise ValueError("every noise standard deviation σ_i must be finite and > 0")
        return np.column_stack([x, noise_std])

    def entry_log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        measured, noise_std = x[..., :-1], x[..., -1:]
        mean = self.forward(z)
        return Normal(mean, noise_std.expand_as(mean), validate_args=False).log_prob(measured)

    def expected_entry_log_prob(self, x: Tensor, mean: Tensor, cov: Tensor) -> Tensor | None:
        """For a linear G (else None): :func:`_expected_gaussian_log_prob` with each row's σ_i."""
        moments = linear_moments(self.forward, mean, cov)
        return None if moments is None else _expected_gaussian_log_prob(x[..., :-1], x[..., -1:], *moments)

    def to(self, device=None, dtype=None) -> NoisePerRowGaussianLikelihood:
        return NoisePerRowGaussianLikelihood(self.forward.to(device, dtype))


def _expected_gaussian_log_prob(measured: Tensor, std: Tensor, eta: Tensor, eta_var: Tensor) -> Tensor:
    """``E[log N(x_j; η_j, σ_j²)] = −((x_j − η̄_j)² + V_j)/(2σ_j²) − log σ_j − ½ log 2π`` for
    η ~ N(η̄, diag V): measured, η̄, V (..., m), σ broadcasting against them; shape (..., m)."""
    squared = (measured - eta).square() + eta_var
    return -squared / (2 * std.square()) - std.log() - 0.5 * math.log(2 * math.pi)


def linear_moments(forward: ForwardOperator, mean: Tensor, cov: Tensor) -> tuple[Tensor, Tensor] | None:
    """The mean ``A μ`` and variances ``diag(A Σ Aᵀ)`` (each (..., m)) of η = A z for
    z ~ N(μ, Σ), Σ (..., p, p) or diagonal variances (..., p); None for a nonlinear G."""
    if not isinstance(forward, LinearOperator):
        return None
    a = forward.matrix.to(mean)
    if cov.ndim == mean.ndim:
        return mean @ a.mT, cov @ a.square().mT
    return mean @ a.mT, ((cov @ a.mT) * a.mT).sum(-2)


def gaussian_measurements(likelihood: GaussianLikelihood | NoisePerRowGaussianLikelihood,
                          x: Tensor) -> tuple[Tensor, Tensor]:
    """The measurements (..., m) in data rows x (which may carry a prior's covariates after the
    likelihood's columns, :mod:`invae.model.rows`) and their noise variances σ², in x's dtype:
    (m,) for one σ or one per sensor, (..., m) for one σ_i per row."""
    m = likelihood.forward.out_dim
    x = x[..., : likelihood.data_dim]
    if isinstance(likelihood, NoisePerRowGaussianLikelihood):
        return x[..., :-1], x[..., -1:].square().expand(*x.shape[:-1], m)
    std = likelihood.noise_std.to(x)
    if std.numel() not in (1, m):
        raise ValueError(f"expected one noise level, one per sensor (m,) = ({m},), or one per row "
                         f"(NoisePerRowGaussianLikelihood); got noise_std of shape {tuple(std.shape)}")
    return x, (std.reshape(-1) ** 2).expand(m)


def linear_gaussian(matrix: Tensor | np.ndarray, noise_std: float | Tensor) -> GaussianLikelihood:
    """``x = A z + σ ε`` with A of shape (m, p) and σ a scalar or (m,) per sensor.

    Warns when A's rank is below min(m, p): the data then pin z down only in a subspace
    and the prior alone decides the rest. The model stays proper, so the fit goes on.
    """
    operator = LinearOperator(matrix)
    rank = operator.rank
    if rank < min(operator.out_dim, operator.in_dim):
        warnings.warn(f"the forward matrix A ({operator.out_dim} × {operator.in_dim}) has rank {rank} < "
                      f"{min(operator.out_dim, operator.in_dim)}: the data determine z only in a {rank}-dimensional "
                      "subspace, the prior the rest", UserWarning, stacklevel=2)
    return GaussianLikelihood(operator, noise_std)


def _short(t: Tensor) -> str:
    return f"{t.item():g}" if t.numel() == 1 else f"tensor of shape {tuple(t.shape)}"
