"""Saving a fitted estimator and loading it back (``invae fit --save``, ``invae predict``).

A model file holds plain data only (numbers, strings, lists and tensors). It is written by
``torch.save`` and read with ``torch.load(weights_only=True)``, which refuses arbitrary
Python objects, so loading a model file cannot run code. It keeps what posterior questions
on new data need: the method and the options ``make_estimator`` takes, the prior's kind,
parameters (Λ̂; or the mixture's weights, means and precisions) and settings (α), the
likelihood (A, and σ or "one σ_i per row": new rows then come with theirs), and an amortized family's trained weights. A ``mean-field`` model keeps no per-row factors: new
data get factors fitted afresh under Λ̂, as they do in memory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .._version import __version__
from ..inference.base import EmpiricalBayesEstimator
from ..inference.estimator import VariationalEB
from ..inference.families import FAMILIES
from ..model.forward import LinearOperator
from ..model.ggm import GaussianGraphicalModel
from ..model.likelihoods import NoisePerRowGaussianLikelihood, linear_gaussian
from ..model.prior import Prior
from ..model.priors import PRIORS, prior_name
from ..references.exact import has_exact_evidence
from .methods import make_estimator, method_name

__all__ = ["save_model", "load_model"]

FORMAT = "invae-model"
VERSION = 4  # 4: the prior's config(); 3 added "noise_per_row"; 2 the prior's kind; 1 held a ggm's "precision"


def save_model(estimator: EmpiricalBayesEstimator, path: str | Path, *, settings: dict | None = None,
               data_shape: tuple[int, int] | None = None) -> Path:
    """Write the fitted ``estimator`` (one that :func:`invae.app.methods.make_estimator` builds)
    to ``path``, atomically: a failure leaves an existing file as it was. ``settings`` (plain
    values) and the (n, m) ``data_shape`` of the fit are recorded with it."""
    estimator._check_fitted()
    method = method_name(estimator)
    prior, likelihood = estimator.prior_, estimator.likelihood_
    if not has_exact_evidence(prior, likelihood):
        raise ValueError("only a Gaussian graphical or mixture prior with a linear-Gaussian likelihood can be "
                         "saved so far")
    amortized = isinstance(estimator, VariationalEB) and FAMILIES[estimator.family].amortized
    per_row = isinstance(likelihood, NoisePerRowGaussianLikelihood)
    record = {
        "format": FORMAT, "version": VERSION, "invae_version": __version__,
        "settings": settings or {}, "data_shape": list(data_shape) if data_shape else None,
        "method": method, "preset": getattr(estimator, "preset", "default"),
        "seed": getattr(estimator, "random_state", 0),
        "max_iter": getattr(estimator, "max_iter", None), "tol": getattr(estimator, "tol", None),
        "prior": prior_name(prior), "prior_config": prior.config(),
        "parameters": {key: value.detach().cpu() for key, value in prior.state().items()},
        "forward": likelihood.forward.matrix.detach().cpu(), "noise_per_row": per_row,
        "noise_std": None if per_row else likelihood.noise_std.detach().cpu(),
        "posterior": ({k: v.detach().cpu() for k, v in estimator.posterior_.state_dict().items()}
                      if amortized else None),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
    os.close(handle)
    try:
        torch.save(record, staging)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return path


def load_model(path: str | Path, *, device: str = "cpu") -> EmpiricalBayesEstimator:
    """The estimator saved by :func:`save_model`, ready for ``posterior``/``transform``.

    Raises ``ValueError`` for a missing file, a file that is not an invae model, or a
    format version this invae does not read.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"cannot read the model {str(path)!r}: no such file")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not its own
        raise ValueError(f"cannot read the model {str(path)!r}: not an invae model file ({type(error).__name__})") \
            from None
    if not (isinstance(record, dict) and record.get("format") == FORMAT):
        raise ValueError(f"cannot read the model {str(path)!r}: not an invae model file")
    if record["version"] not in range(1, VERSION + 1):
        raise ValueError(f"the model {str(path)!r} has format version {record['version']}; "
                         f"this invae reads versions 1 to {VERSION}")
    prior = _prior(record)
    likelihood = (NoisePerRowGaussianLikelihood(LinearOperator(record["forward"])) if record.get("noise_per_row")
                  else linear_gaussian(record["forward"], record["noise_std"]))
    estimator = make_estimator(record["method"], prior, likelihood, preset=record["preset"], seed=record["seed"],
                               max_iter=record["max_iter"], tol=record["tol"], device=device)
    try:
        return estimator.restore(record["posterior"])
    except RuntimeError as error:  # the weights' keys or shapes differ from the family's
        reason = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise ValueError(f"the model {str(path)!r} does not fit its own settings: {reason}") from None


def _prior(record: dict) -> Prior:
    """The fitted prior a model record holds (versions 1–3 kept the config in named keys;
    version 1 always a ggm, its Λ̂ under "precision")."""
    if record["version"] == 1:
        return GaussianGraphicalModel(record["precision"], alpha=record["alpha"], solver=record["solver"])
    config = record.get("prior_config") or {"alpha": record["alpha"], "solver": record["solver"],
                                            **({"reg_covar": record["reg_covar"]} if record["prior"] == "gmm" else {})}
    return PRIORS[record["prior"]].cls.from_state(record["parameters"], **config)
