"""Checkpoints of a variational fit: the complete training state, written atomically.

A checkpoint holds the posterior's weights, Adam's state, the prior's parameters, the
step-size schedule, the fixed evaluation rows and seeds, torch's RNG state, the iteration
and the history: everything :func:`invae.inference.training.train` carries from one outer iteration
to the next, so that a resumed fit repeats, bit for bit on CPU, what an uninterrupted one
computes. It also records the invae version, the settings and the data's shape and a
checksum, and refuses to resume a different fit.

The file is plain data (tensors, numbers, strings, lists), written to a temporary file,
flushed to disk (fsync) and renamed over the previous one, so a crash mid-write leaves
the previous checkpoint whole; it is read with ``torch.load(weights_only=True)``. torch is
imported where a checkpoint is read or written, so that the command line can catch
:class:`FitInterrupted` and :class:`ProcessLost` without importing it.
"""

from __future__ import annotations

import math
import os
import signal
import tempfile
from pathlib import Path

from .._version import __version__

__all__ = ["Checkpointer", "FitInterrupted", "ProcessLost"]

FORMAT = "invae-checkpoint"
VERSION = 3  # 2: the Λ-step statistics' running average (2026-11-30); 3: parallel fits, data checksum to round-off


class FitInterrupted(Exception):
    """SIGINT or SIGTERM arrived during a fit; the state was checkpointed first."""

    def __init__(self, signal_number: int, iteration: int, path: Path):
        self.signal_number, self.iteration, self.path = signal_number, iteration, path
        super().__init__(f"interrupted by {signal.Signals(signal_number).name} after iteration {iteration}; "
                         f"the state is in {str(path)!r}: rerun with --resume to continue")


class ProcessLost(RuntimeError):
    """Another process of a parallel fit stopped: a collective operation failed
    (:mod:`invae.inference.parallel`); rank 0 wrote the last good state to the checkpoint."""


def _same(key: str, saved, value, identity: dict) -> bool:
    """Whether a saved identity entry is this fit's. The data's checksum [Σ x, Σ x²] is a sum of
    the same numbers in another order where the rows were cut into other blocks or processes: it
    may differ by round-off, at most about ε Σ|x| ≤ ε √(N Σ x²) for Σ x and ε Σ x² for Σ x² (N
    entries), here with ε = 1e-8."""
    if key != "data_checksum" or not (isinstance(saved, list) and len(saved) == len(value) == 2):
        return saved == value
    entries = math.prod(identity.get("data_shape", [1]))
    (total, squares), (saved_total, saved_squares) = value, saved
    return (abs(total - saved_total) <= 1e-8 * math.sqrt(entries * squares)
            and abs(squares - saved_squares) <= 1e-8 * squares)


class Checkpointer:
    """Writes ``DIR/checkpoint.pt`` every ``every`` outer iterations and when interrupted.

    Parameters
    ----------
    folder : path
        Where the checkpoint lives (created if needed).
    every : int
        Outer iterations between checkpoints.
    resume : bool
        Start from the checkpoint in ``folder`` (an error if there is none).
    """

    def __init__(self, folder: str | Path, *, every: int = 50, resume: bool = False):
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"the checkpoint interval must be an integer >= 1, got {every!r}")
        self.folder, self.every, self.resume = Path(folder), every, resume
        self.path = self.folder / "checkpoint.pt"
        self.received: int | None = None  # the signal that asked us to stop
        self._previous_handlers: dict[int, object] = {}

    def load(self, identity: dict) -> dict | None:
        """The saved state if resuming (checked against ``identity``: settings and data), else None."""
        if not self.resume:
            return None
        if not self.path.is_file():
            raise ValueError(f"--resume: there is no checkpoint {str(self.path)!r}")
        import torch

        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for a file that is not its own
            raise ValueError(f"cannot read the checkpoint {str(self.path)!r} ({type(error).__name__})") from None
        if not (isinstance(state, dict) and state.get("format") == FORMAT and state.get("version") == VERSION):
            raise ValueError(f"{str(self.path)!r} is not an invae checkpoint of format version {VERSION}")
        for key, value in identity.items():
            if not _same(key, state["identity"].get(key), value, identity):
                raise ValueError(f"the checkpoint {str(self.path)!r} belongs to another fit: its {key} is "
                                 f"{state['identity'].get(key)!r}, this fit's is {value!r}")
        return state

    def due(self, iteration: int, received: int | None) -> bool:
        """Whether to write after ``iteration``: every ``every`` iterations, and after the signal ``received``."""
        return iteration % self.every == 0 or received is not None

    def save(self, state: dict, identity: dict) -> None:
        """Write ``state`` atomically: temporary file, fsync, rename, fsync of the folder."""
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"format": FORMAT, "version": VERSION, "invae_version": __version__, "identity": identity, **state}
        handle, staging = tempfile.mkstemp(prefix=".checkpoint.partial-", dir=self.folder)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(record, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(staging, self.path)
        finally:
            if os.path.exists(staging):
                os.remove(staging)
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def __enter__(self) -> Checkpointer:
        """Catch SIGINT and SIGTERM (main thread only): the loop checkpoints, then stops."""
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous_handlers[number] = signal.signal(number, self._note)
            except ValueError:  # not the main thread: signals stay as they were
                pass
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)
        self._previous_handlers.clear()

    def _note(self, number, frame) -> None:
        self.received = number
