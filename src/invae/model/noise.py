"""The noise-model registry: ``invae fit --noise NAME`` builds a likelihood on a forward operator.

An entry builds :class:`~invae.model.likelihoods.Likelihood` from the operator ``G`` and the
noise's known constants, and says which constants it takes. A new noise model is one
``Likelihood`` subclass plus one ``NOISE_MODELS.register`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..registry import Registry
from .forward import ForwardOperator, LinearOperator
from .likelihoods import (BernoulliLikelihood, GaussianLikelihood, Likelihood, PoissonLikelihood, StudentTLikelihood,
                          linear_gaussian)

__all__ = ["NoiseModel", "NOISE_MODELS", "noise_name"]


@dataclass(frozen=True)
class NoiseModel:
    """One noise model.

    cls : the :class:`Likelihood` class it builds (model files find the name by it)
    build : callable ``(operator, noise_std, df, offsets) -> Likelihood``
        ``noise_std`` is σ where the model has a scale, ``df`` ν where it has degrees of
        freedom, ``offsets`` whether rows carry known offsets of η where it takes them: the
        likelihood's own :meth:`~invae.model.likelihoods.Likelihood.constants`.
    scale : bool
        Has a known scale σ > 0 (``--noise-std``, required).
    default_df : float or None
        Has degrees of freedom ν (``--noise-df``), with this default; None: takes none.
    exact : bool
        The exact references (``em``, ``naive``) hold for it (linear-Gaussian formulas).
    offsets : bool
        Takes known offsets of its linear predictor (``--offsets``): a link likelihood.
    """

    cls: type[Likelihood]
    build: Callable[[ForwardOperator, float | None, float | None, bool], Likelihood]
    scale: bool = False
    default_df: float | None = None
    exact: bool = False
    offsets: bool = False


def _gaussian(operator: ForwardOperator, noise_std: float, df: None, offsets: bool) -> GaussianLikelihood:
    """``x = G(z) + σε``; for a matrix, :func:`linear_gaussian` (it warns on a rank-deficient A)."""
    if isinstance(operator, LinearOperator):
        return linear_gaussian(operator.matrix, noise_std)
    return GaussianLikelihood(operator, noise_std)


NOISE_MODELS: Registry[NoiseModel] = Registry("noise model")
NOISE_MODELS.register("gaussian", NoiseModel(GaussianLikelihood, _gaussian, scale=True, exact=True))
NOISE_MODELS.register("poisson", NoiseModel(
    PoissonLikelihood, lambda operator, noise_std, df, offsets: PoissonLikelihood(operator, offsets), offsets=True))
NOISE_MODELS.register("bernoulli", NoiseModel(
    BernoulliLikelihood, lambda operator, noise_std, df, offsets: BernoulliLikelihood(operator, offsets), offsets=True))
NOISE_MODELS.register("student-t", NoiseModel(
    StudentTLikelihood, lambda operator, noise_std, df, offsets: StudentTLikelihood(operator, df, noise_std),
    scale=True, default_df=4.0))


def noise_name(likelihood: Likelihood) -> str:
    """The registered name of ``likelihood``'s noise model."""
    return NOISE_MODELS.find(lambda model: type(likelihood) is model.cls,
                             f"a {type(likelihood).__name__} (invae.model.noise.NOISE_MODELS)")
