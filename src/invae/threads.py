"""How many CPU threads torch uses during a fit.

torch's default, one thread per core, makes invae's fits slower: its models are small
(p up to a few hundred, batches of 256), so a matrix product is over before more threads
pay for their start, and on a machine that other jobs share, threads that wait for busy
cores stall every step (docs/benchmarks.md, "Threads"). invae therefore fits on one thread
unless told otherwise: an estimator's ``n_threads``, the command line's ``--threads``, or
the environment variable ``INVAE_NUM_THREADS``.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["fit_threads", "using_threads", "use_threads_in_this_process"]

ENVIRONMENT_VARIABLE = "INVAE_NUM_THREADS"


def fit_threads(n_threads: int | None = None) -> int:
    """``n_threads`` if given, else ``$INVAE_NUM_THREADS``, else 1."""
    chosen = n_threads if n_threads is not None else os.environ.get(ENVIRONMENT_VARIABLE, 1)
    try:
        value = int(chosen)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"the number of threads must be an integer >= 1, got {chosen!r}"
                         + (f" (from ${ENVIRONMENT_VARIABLE})" if n_threads is None else ""))
    return value


@contextlib.contextmanager
def using_threads(n_threads: int | None = None):
    """Run the block with torch on :func:`fit_threads` threads; put the previous count back."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(fit_threads(n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


#: What torch (OpenMP) and numpy's BLAS read, once, when they are imported.
_LIBRARY_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def use_threads_in_this_process(n_threads: int | None = None) -> None:
    """Before torch and numpy are imported (the command line): every fit, torch's own
    default and numpy's BLAS use :func:`fit_threads` threads — the libraries' variables
    only where the user has not set them, unless ``n_threads`` is given. (The small
    eigen-decompositions and least-squares solves of ``invae eb`` wait for busy cores as
    torch does.)"""
    chosen = str(fit_threads(n_threads))
    os.environ[ENVIRONMENT_VARIABLE] = chosen
    for variable in _LIBRARY_VARIABLES:
        if n_threads is not None:
            os.environ[variable] = chosen
        else:
            os.environ.setdefault(variable, chosen)
