"""Reading data from disk and writing results so that a failure leaves nothing half-written."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

__all__ = ["load_array", "csv_header", "read_names", "is_number", "write_results"]


def load_array(path: str | Path, *, name: str | None = None) -> np.ndarray:
    """A numeric array from ``.npy`` (no pickles) or ``.csv`` (comma-separated numbers, with
    or without one header line of column names).

    Raises ``ValueError`` naming the file and the problem; it does not check shapes or
    values (see :mod:`invae.validation`).
    """
    path = Path(path)
    label = name or str(path)
    if not path.is_file():
        raise ValueError(f"cannot read {label}: no such file {str(path)!r}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return _load_npy(path)
        if suffix == ".csv":
            return _load_csv(path)
    except _Unreadable as problem:
        raise ValueError(f"cannot read {label}: {str(path)!r} {problem}") from None
    except UserWarning:
        raise ValueError(f"cannot read {label}: the file {str(path)!r} holds no data") from None
    except (OSError, ValueError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot read {label} ({str(path)!r}) as a numeric array: {reason}") from None
    raise ValueError(f"cannot read {label}: {str(path)!r} is neither .npy nor .csv")


def csv_header(path: str | Path) -> list[str] | None:
    """The column names of a ``.csv`` file whose first line is not all numbers; None otherwise
    (or for a ``.npy`` file)."""
    path = Path(path)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return None
    with open(path, encoding="utf-8") as file:
        cells = [cell.strip() for cell in file.readline().split(",")]
    return None if all(is_number(cell) or cell.lower() in _MISSING for cell in cells) else cells


def read_names(path: str | Path) -> list[str]:
    """Names from a text file: one per line, or separated by commas (``--names``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"cannot read the variable names (--names): no such file {str(path)!r}")
    text = path.read_text(encoding="utf-8")
    return [name.strip() for line in text.splitlines() for name in line.split(",") if name.strip()]


def is_number(text: str) -> bool:
    """Whether ``text`` parses as a number."""
    try:
        float(text)
    except ValueError:
        return False
    return True


class _Unreadable(Exception):
    """A file invae will not read; the message completes "cannot read LABEL: 'PATH' ..."."""


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as file:
        if file.read(6) != b"\x93NUMPY":  # the .npy magic: without it np.load would try a pickle
            raise _Unreadable("is not a NumPy .npy array file")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise _Unreadable("holds Python objects (a pickle), which invae does not load; save plain numbers") \
                from None
        raise


def _load_csv(path: Path) -> np.ndarray:
    """Comma-separated numbers; a first line that does not parse as numbers (an empty field,
    ``NA`` or ``NaN`` counting as a number: a missing entry) is a header. A missing entry is
    read by a slower parser only when the fast one meets one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (not raises) on an empty file
        skip = int(csv_header(path) is not None)
        failure = None
        for options in ({}, {"converters": _cell}):
            try:
                return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=skip, **options)
            except ValueError as error:
                failure = failure or error
        raise failure


_MISSING = {"", "na", "nan"}


def _cell(text: str) -> float:
    """A number, or NaN for a missing entry (module docstring of :func:`_load_csv`)."""
    return math.nan if text.strip().lower() in _MISSING else float(text)


def write_results(out: str | Path, arrays: dict[str, np.ndarray], summary: dict,
                  files: dict[str, bytes] | None = None) -> Path:
    """Write ``NAME.npy`` for each array, ``summary.json`` and the other ``files`` (name →
    contents, e.g. a table or a figure) into the folder ``out``.

    Everything is written into a temporary folder next to ``out`` first and moved into
    place only when all files are complete: an error leaves ``out`` as it was. Files of
    ``out`` that we do not write are left alone.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        for key, value in arrays.items():
            np.save(staging / f"{key}.npy", value)
        (staging / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable) + "\n")
        for name, contents in (files or {}).items():
            (staging / name).write_bytes(contents)
        if not out.exists():
            os.replace(staging, out)
            return out
        for file in staging.iterdir():
            os.replace(file, out / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path,)):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
