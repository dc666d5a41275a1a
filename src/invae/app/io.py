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

__all__ = ["load_array", "csv_header", "read_names", "is_number", "write_results", "StagedResults"]


def load_array(path: str | Path, *, name: str | None = None, mapped: bool = False) -> np.ndarray:
    """A numeric array from ``.npy`` (no pickles) or ``.csv`` (comma-separated numbers, with
    or without one header line of column names). ``mapped``: a ``.npy`` file is memory-mapped
    copy-on-write (``np.memmap``: read only where it is used; writes stay in memory, never reach
    the file; writable, so torch shares a float64 one without a copy or a warning).

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
            return _load_npy(path, mapped)
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


def _load_npy(path: Path, mapped: bool) -> np.ndarray:
    with open(path, "rb") as file:
        if file.read(6) != b"\x93NUMPY":  # the .npy magic: without it np.load would try a pickle
            raise _Unreadable("is not a NumPy .npy array file")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="c" if mapped else None)
    except ValueError as error:
        if "allow_pickle" in str(error) or "Python objects" in str(error):  # mapped: the latter
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
    contents, e.g. a table or a figure) into the folder ``out``, all or nothing (:class:`StagedResults`)."""
    with StagedResults(out) as staged:
        return staged.commit(arrays, summary, files)


class StagedResults:
    """New results for the folder ``out``, written into a temporary folder next to it and moved
    into place only when all are complete (:meth:`commit`): an error leaves ``out`` as it was.
    Files of ``out`` that we do not write are left alone. Arrays too large to hold in memory are
    written in place as they are computed (:meth:`array`). A context manager: on leaving it the
    temporary folder goes, with whatever was not committed."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {str(self.out)!r} exists and is not a folder")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        self.mapped: dict[str, np.memmap] = {}

    def __enter__(self) -> StagedResults:
        return self

    def __exit__(self, *exc) -> None:
        self.mapped.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def array(self, name: str, shape: tuple[int, ...]) -> np.memmap:
        """A float64 ``NAME.npy`` of this shape, memory-mapped for writing; committed with the rest."""
        self.mapped[name] = np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", shape=shape)
        return self.mapped[name]

    def commit(self, arrays: dict[str, np.ndarray], summary: dict, files: dict[str, bytes] | None = None) -> Path:
        """Write the arrays (those of :meth:`array` are written already), ``summary.json`` and
        ``files``, then move them all into ``out``; returns ``out``."""
        for key, value in arrays.items():
            if self.mapped.get(key) is not value:
                np.save(self.folder / f"{key}.npy", value)
        for mapped in self.mapped.values():
            mapped.flush()
        (self.folder / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable) + "\n")
        for name, contents in (files or {}).items():
            (self.folder / name).write_bytes(contents)
        if not self.out.exists():
            os.replace(self.folder, self.out)
            return self.out
        for file in self.folder.iterdir():
            os.replace(file, self.out / file.name)
        return self.out


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path,)):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
