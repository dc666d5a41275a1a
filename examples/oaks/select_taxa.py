"""Keep the K most abundant taxa of the oak data: ``python examples/oaks/select_taxa.py K OUT``.

Writes ``OUT/counts.csv`` (116 samples × K taxa, with their names) and ``OUT/log_offsets.csv``
(the same columns of ``log_offsets.csv``), ready for ``invae fit`` (see README.md here).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def main(keep: int, out: Path) -> None:
    names = (HERE / "counts.csv").read_text().splitlines()[0].split(",")
    counts = np.loadtxt(HERE / "counts.csv", delimiter=",", skiprows=1)
    offsets = np.loadtxt(HERE / "log_offsets.csv", delimiter=",", skiprows=1)
    kept = np.sort(np.argsort(-counts.sum(0), kind="stable")[:keep])
    header = ",".join(names[j] for j in kept)
    out.mkdir(parents=True, exist_ok=True)
    np.savetxt(out / "counts.csv", counts[:, kept], delimiter=",", header=header, comments="", fmt="%d")
    np.savetxt(out / "log_offsets.csv", offsets[:, kept], delimiter=",", header=header, comments="", fmt="%.7g")
    print(f"wrote {out}/counts.csv and {out}/log_offsets.csv: {len(counts)} samples × {keep} taxa")


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
