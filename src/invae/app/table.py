"""The data of ``invae eb``: a table whose columns are picked by name or position.

``.csv``: comma-separated, a header row of names when the first row is not all numbers
(else the columns are named 0, 1, …); a column is numeric when every entry parses as a
number, otherwise text (e.g. a group label). ``.npy``: a 2-D numeric array, columns 0, 1, ….
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .io import is_number, load_array

__all__ = ["load_table", "column"]


def load_table(path: str | Path, name: str = "the data (--data)") -> dict[str, np.ndarray]:
    """{column name: values (n,)}, float64 for numeric columns and str otherwise; ``name`` is
    what errors call the file."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        array = load_array(path, name=name)
        if array.ndim == 1:
            array = array[:, None]
        return {str(j): np.asarray(array[:, j], dtype=np.float64) for j in range(array.shape[1])}
    if not path.is_file():
        raise ValueError(f"cannot read {name}: {str(path)!r} does not exist")
    with open(path, newline="", encoding="utf-8") as file:
        rows = [row for row in csv.reader(file) if row]
    if not rows:
        raise ValueError(f"{name} {str(path)!r} is empty")
    header = None if all(is_number(cell) for cell in rows[0]) else [cell.strip() for cell in rows[0]]
    body = rows if header is None else rows[1:]
    width = len(header) if header is not None else len(rows[0])
    for number, row in enumerate(body, start=1 if header is None else 2):
        if len(row) != width:
            raise ValueError(f"line {number} of {str(path)!r} has {len(row)} fields, expected {width}")
    names = header if header is not None else [str(j) for j in range(width)]
    columns = list(zip(*body)) if body else [()] * width
    return {name: _typed(values) for name, values in zip(names, columns)}


def column(table: dict[str, np.ndarray], key: str, option: str) -> np.ndarray:
    """The column called ``key`` (a name, or a 0-based position); ``option`` names the flag in errors."""
    if key in table:
        return table[key]
    if key.isdigit() and int(key) < len(table):
        return list(table.values())[int(key)]
    raise ValueError(f"{option} {key!r} is not a column of the data; it has {', '.join(table)}")


def _typed(values: tuple[str, ...]) -> np.ndarray:
    cells = [value.strip() for value in values]
    if all(is_number(cell) for cell in cells):
        return np.array([float(cell) for cell in cells], dtype=np.float64)
    return np.array(cells, dtype=str)
