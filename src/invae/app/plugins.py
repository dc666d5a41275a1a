"""A user's own code named on the command line: ``--forward FILE.py:FUNCTION``.

The file is imported as a plugin would be (so it is run); a model file records the same
``FILE.py:FUNCTION`` and :func:`load_function` imports it again when the model is loaded.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

__all__ = ["FUNCTION_SPEC", "load_function"]

FUNCTION_SPEC = re.compile(r"(.+\.py):([A-Za-z_]\w*)")


def load_function(spec: str):
    """The attribute FUNCTION of the Python file FILE for ``spec`` = ``FILE.py:FUNCTION``."""
    match = FUNCTION_SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(f"expected FILE.py:FUNCTION, got {spec!r}")
    file, name = match.groups()
    path = Path(file)
    if not path.is_file():
        raise ValueError(f"cannot read the forward function: no such file {file!r}")
    module_spec = importlib.util.spec_from_file_location(f"invae_forward_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise ValueError(f"{file!r} defines no {name!r} (--forward FILE.py:FUNCTION)")
    return getattr(module, name)
