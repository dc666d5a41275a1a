"""Series from a long CSV (``invae fit --data series.csv`` with a path prior): one line per
series and time,

    series,time,<measurement 1>,…,<measurement m>
    nile,1871,1120
    nile,1872,1160

the series named by any text, the times numbers, the measurements numbers or empty (``NA``,
``NaN``: not observed). The series share one time axis, the sorted union of every time in the
file; a series not seen at one of those times has NaN there, which the path likelihood leaves
out (docs/methods.md §3.14). So series observed at different times need no padding by hand.
The series keep the order of their first line. Python's ``csv`` module reads the file: the
numeric loader of :mod:`invae.app.io` takes numbers only, and a series' name is text.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import is_number

__all__ = ["LongSeries", "read_long_series"]

_KEYS = ["series", "time"]
_MISSING = {"", "na", "nan"}


@dataclass(frozen=True)
class LongSeries:
    """A long CSV's series as an array ``x`` (n, T, m), NaN where not observed, at ``times`` (T,),
    with the ``series`` names (n) and the ``measurements``' (m) from the header."""

    x: np.ndarray
    times: np.ndarray
    series: list[str]
    measurements: list[str]


def read_long_series(path: str | Path, *, name: str = "the data (--data)") -> LongSeries:
    """The long CSV in ``path`` (module docstring) as n series on the union of their times; a
    ``ValueError`` naming the line for a bad header, a short or long line, a time that is not a
    finite number, a measurement that is not a number, or a series seen twice at one time."""
    header, lines = _lines(Path(path), name)
    names, times, values = [], [], []
    for number, cells in lines:
        if len(cells) != len(header):
            raise ValueError(f"line {number} of {name} has {len(cells)} fields, its header {len(header)}")
        names.append(cells[0].strip())
        times.append(_time(cells[1], number, name))
        values.append([_value(cell, number, name) for cell in cells[2:]])
    return _on_union_of_times(names, np.array(times), np.array(values, dtype=np.float64).reshape(len(lines), -1),
                              header[2:], name)


def _lines(path: Path, name: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header's names and the numbered, non-blank lines after it."""
    if not path.is_file():
        raise ValueError(f"cannot read {name}: no such file {str(path)!r}")
    with open(path, newline="", encoding="utf-8") as file:
        rows = [(number, cells) for number, cells in enumerate(csv.reader(file), start=1) if any(c.strip() for c in cells)]
    header = [cell.strip() for cell in rows[0][1]] if rows else []
    if [cell.lower() for cell in header[:2]] != _KEYS or len(header) < 3:
        raise ValueError(f"{name} is a CSV of series: its header must be series,time,<measurement>… "
                         f"(one line per series and time), got {','.join(header)!r}")
    if len(rows) < 2:
        raise ValueError(f"{name} has a header and no lines")
    return header, rows[1:]


def _time(cell: str, number: int, name: str) -> float:
    if not (is_number(cell) and math.isfinite(float(cell))):
        raise ValueError(f"line {number} of {name}: the time {cell.strip()!r} is not a finite number")
    return float(cell)


def _value(cell: str, number: int, name: str) -> float:
    if cell.strip().lower() in _MISSING:
        return math.nan
    if not is_number(cell):
        raise ValueError(f"line {number} of {name}: the measurement {cell.strip()!r} is not a number")
    return float(cell)


def _on_union_of_times(names: list[str], times: np.ndarray, values: np.ndarray, measurements: list[str],
                       name: str) -> LongSeries:
    """Lines (series name, time, m values) on the sorted union of the times, (n, T, m)."""
    grid, time_index = np.unique(times, return_inverse=True)
    labels, first, series_index = np.unique(names, return_index=True, return_inverse=True)
    order = np.argsort(first)  # the series in the order of their first line
    series_index = np.argsort(order)[series_index]
    seen = series_index * len(grid) + time_index
    unique, counts = np.unique(seen, return_counts=True)
    if (counts > 1).any():
        twice = unique[np.argmax(counts > 1)]
        raise ValueError(f"{name} has two lines for series {str(labels[order][twice // len(grid)])!r} at time "
                         f"{grid[twice % len(grid)]:g}")
    x = np.full((len(labels), len(grid), values.shape[1]), np.nan)
    x[series_index, time_index] = values
    return LongSeries(x, grid, [str(label) for label in labels[order]], measurements)
