"""A user's own code named on the command line: ``--forward FILE.py:FUNCTION`` and
``--prior FILE.py:CLASS`` (a drift module, :mod:`invae.paths.module_drift`).

The file is imported as a plugin would be (so it is run); a model file records the same
``FILE.py:NAME`` and :func:`load_function` imports it again when the model is loaded. A drift
module becomes a path prior registered under its ``FILE.py:CLASS`` (:func:`register_drift`), so
that the settings, the start, the fit and model files name it as they name a built-in SDE.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from ..model.priors import PRIORS, path_kind
from ..paths.module_drift import module_sde
from ..paths.sde import SDE_PRIORS

__all__ = ["FUNCTION_SPEC", "load_function", "register_drift"]

FUNCTION_SPEC = re.compile(r"(.+\.py):([A-Za-z_]\w*)")


def load_function(spec: str, option: str = "--forward FILE.py:FUNCTION"):
    """The attribute NAME of the Python file FILE for ``spec`` = ``FILE.py:NAME``, given as ``option``."""
    match = FUNCTION_SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(f"expected FILE.py:NAME ({option}), got {spec!r}")
    file, name = match.groups()
    path = Path(file)
    if not path.is_file():
        raise ValueError(f"cannot read {option}: no such file {file!r}")
    module_spec = importlib.util.spec_from_file_location(f"invae_plugin_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise ValueError(f"{file!r} defines no {name!r} ({option})")
    return getattr(module, name)


def register_drift(spec: str) -> None:
    """The drift module class of ``spec`` = ``FILE.py:CLASS`` registered as the path prior ``spec``
    (an SDE of :data:`~invae.paths.sde.SDE_PRIORS` and a prior of :data:`~invae.model.priors.PRIORS`);
    nothing where it is registered already (a second fit in one process reads the file once)."""
    if spec in PRIORS:
        return
    SDE_PRIORS.register(spec, module_sde(spec, load_function(spec, "--prior FILE.py:CLASS")))
    PRIORS.register(spec, path_kind(spec))
