"""Saving a fitted estimator and loading it back (``invae fit --save``, ``invae predict``).

A model file holds plain data only (numbers, strings, lists and tensors). It is written by
``torch.save`` and read with ``torch.load(weights_only=True)``, which refuses arbitrary
Python objects. It keeps what posterior questions on new data need: the method and the
options ``make_estimator`` takes; the prior's registered name (:data:`invae.model.priors.PRIORS`),
its ``state()`` and ``config()``; the likelihood's noise model
(:data:`invae.model.noise.NOISE_MODELS`, or "one σ_i per row": new rows then come with
theirs), its ``constants()`` and its forward operator's ``record()`` (the matrix A, or the
``FILE.py:FUNCTION`` of a user's function, imported again on loading: that runs the file,
and loading says so in a warning; for a path prior the per-time one of these, with T and
the sub-steps); the recipe of its rows (:class:`~invae.app.recipe.RowRecipe`:
the covariates' coding and the offsets' mean total, so that new rows are made as the fit's);
and an amortized family's trained weights. A
``mean-field`` model keeps no per-row factors: new data get factors fitted afresh under Λ̂,
as they do in memory.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch

from .._version import __version__
from ..inference.base import EmpiricalBayesEstimator
from ..model.forward import ForwardOperator, FunctionOperator, LinearOperator
from ..model.ggm import GaussianGraphicalModel
from ..model.likelihoods import Likelihood, NoisePerRowGaussianLikelihood
from ..model.missing import MissingEntries
from ..model.noise import NOISE_MODELS, noise_name
from ..model.prior import Prior
from ..model.priors import PRIORS, prior_name
from ..paths.observation import PathOperator
from .recipe import RowRecipe
from .methods import make_estimator, method_name
from .plugins import FUNCTION_SPEC, load_function, register_drift

__all__ = ["save_model", "load_model", "load_recipe"]

FORMAT = "invae-model"
# 6: a path prior's per-time forward operator nested in its PathOperator's record; 5: a prior's location and
# covariates, the rows' recipe, missing entries; 4: any registered prior and noise model; 3 added "noise_per_row";
# 2 the prior's kind; 1 a ggm's Λ̂
VERSION = 6
_PER_ROW = "gaussian, one σ_i per row"  # the noise of NoisePerRowGaussianLikelihood (--noise-std-file)


def save_model(estimator: EmpiricalBayesEstimator, path: str | Path, *, settings: dict | None = None,
               data_shape: tuple[int, int] | None = None, recipe: RowRecipe | None = None) -> Path:
    """Write the fitted ``estimator`` (one that :func:`invae.app.methods.make_estimator` builds)
    to ``path``, atomically: a failure leaves an existing file as it was. ``settings`` (plain
    values), the (n, m) ``data_shape`` of the fit and the ``recipe`` of its rows are recorded
    with it."""
    estimator.check_fitted()
    method = method_name(estimator)
    prior, likelihood = estimator.prior_, estimator.likelihood_
    record = {
        "format": FORMAT, "version": VERSION, "invae_version": __version__,
        "settings": settings or {}, "data_shape": list(data_shape) if data_shape else None,
        "method": method, "preset": getattr(estimator, "preset", "default"),
        "seed": getattr(estimator, "random_state", 0),
        "max_iter": getattr(estimator, "max_iter", None), "tol": getattr(estimator, "tol", None),
        "prior": prior_name(prior), "prior_config": prior.config(),
        "parameters": {key: value.detach().cpu() for key, value in prior.state().items()},
        "likelihood": _likelihood_record(likelihood),
        "rows": (recipe or RowRecipe()).to_record(),
        "posterior": estimator.posterior_state(),
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
    record = _read(path)
    prior = _prior(record)
    likelihood = _likelihood(record["likelihood"] if record["version"] >= 4 else _likelihood_record_before_4(record))
    estimator = make_estimator(record["method"], prior, likelihood, preset=record["preset"], seed=record["seed"],
                               max_iter=record["max_iter"], tol=record["tol"], device=device)
    try:
        return estimator.restore(record["posterior"])
    except ValueError as error:  # the weights' keys or shapes differ from the family's
        raise ValueError(f"the model {str(path)!r} does not fit its own settings: {error}") from None


def load_recipe(path: str | Path) -> RowRecipe:
    """How the model at ``path`` makes its rows (before version 5: from the measurements and σ_i alone)."""
    return RowRecipe.from_record(_read(path).get("rows"))


def _read(path: str | Path) -> dict:
    """The record of a model file, checked (:func:`load_model`'s errors)."""
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
    return record


def _prior(record: dict) -> Prior:
    """The fitted prior a model record holds (versions 1–3 kept the config in named keys;
    version 1 always a ggm, its Λ̂ under "precision")."""
    if record["version"] == 1:
        return GaussianGraphicalModel(record["precision"], alpha=record["alpha"], solver=record["solver"])
    config = record.get("prior_config") or {"alpha": record["alpha"], "solver": record["solver"],
                                            **({"reg_covar": record["reg_covar"]} if record["prior"] == "gmm" else {})}
    if FUNCTION_SPEC.fullmatch(record["prior"]):  # a user's drift module, read again from its file
        register_drift(record["prior"])
    return PRIORS[record["prior"]].cls.from_state(record["parameters"], **config)


def _likelihood_record(likelihood: Likelihood) -> dict:
    """The noise model's name, its constants, the forward operator's record, and whether
    entries may be missing (:class:`~invae.model.missing.MissingEntries`)."""
    missing = isinstance(likelihood, MissingEntries)
    base = likelihood.base if missing else likelihood
    noise = _PER_ROW if isinstance(base, NoisePerRowGaussianLikelihood) else noise_name(base)
    return {"noise": noise, "constants": _plain(base.constants()), "forward": _plain(base.forward.record()),
            "missing": missing}


def _likelihood_record_before_4(record: dict) -> dict:
    """Versions 1–3 held a linear-Gaussian likelihood: A, and σ or one σ_i per row."""
    if record.get("noise_per_row"):
        return {"noise": _PER_ROW, "constants": {}, "forward": {"matrix": record["forward"]}}
    return {"noise": "gaussian", "constants": {"noise_std": record["noise_std"]},
            "forward": {"matrix": record["forward"]}}


def _operator(record: dict) -> ForwardOperator:
    """The forward operator of its ``record()``: a matrix, a user's function (imported again: a
    warning says so), or a path's per-time operator (version 6) with its T and sub-steps."""
    if "per_time" in record:
        return PathOperator(_operator(record["per_time"]), record["steps"], record["substeps"])
    if "matrix" in record:
        return LinearOperator(record["matrix"])
    warnings.warn(f"the model's forward function is imported from {record['function']!r}: that file is run",
                  UserWarning, stacklevel=4)
    return FunctionOperator(load_function(record["function"]), record["latent_dim"], name=record["function"],
                            source=record["function"])


def _likelihood(record: dict) -> Likelihood:
    operator = _operator(record["forward"])
    if record["noise"] == _PER_ROW:
        likelihood = NoisePerRowGaussianLikelihood(operator)
    else:
        constants = record["constants"]
        likelihood = NOISE_MODELS[record["noise"]].build(operator, constants.get("noise_std"), constants.get("df"),
                                                         constants.get("offsets", False))
    return MissingEntries(likelihood) if record.get("missing") else likelihood


def _plain(values: dict) -> dict:
    """Tensors detached on the CPU, everything else as it is."""
    return {key: value.detach().cpu() if isinstance(value, torch.Tensor) else value for key, value in values.items()}
