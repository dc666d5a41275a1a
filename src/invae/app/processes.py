"""Several processes for one fit (:mod:`invae.inference.parallel`): join the process group that
``torchrun`` describes, or start one on this machine (``invae fit --workers K``).

``torchrun`` (torch's elastic agent) starts the processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each: the same command then runs on one
machine (``--standalone``) or many (a rendezvous endpoint; docs/cli.md, "Several processes").
``--workers K`` runs that agent in-process rather than rewriting it, and reports a process
that dies in one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LAUNCHED", "WorkersFailed", "world_size", "process_label", "joined", "launch"]

#: Set in the processes that ``--workers`` starts: their parent reports a lost process.
LAUNCHED = "INVAE_WORKERS"


class WorkersFailed(Exception):
    """A process of a ``--workers`` fit failed: the exit status to return, and the line to print
    (None where the process printed its own error)."""

    def __init__(self, exit_code: int, message: str | None):
        self.exit_code, self.message = exit_code, message
        super().__init__(message or f"exit status {exit_code}")


def world_size() -> int:
    """The processes of this run: ``$WORLD_SIZE`` (torchrun's), else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_label() -> str:
    """" (process r of W)" in a process of rank r > 0 of a run of W, else "": its messages say who speaks."""
    rank = int(os.environ.get("RANK", "0"))
    return f" (process {rank} of {world_size()})" if world_size() > 1 and rank > 0 else ""


@contextlib.contextmanager
def joined(device: str) -> Iterator[int]:
    """Inside: this process in the process group of torchrun's environment (gloo for tensors on
    the CPU; with a CUDA device, nccl for those on the GPU ``$LOCAL_RANK``); yields its rank (0
    for one process)."""
    if world_size() == 1:
        yield 0
        return
    import torch
    import torch.distributed as dist

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    try:
        yield dist.get_rank()
    finally:
        dist.destroy_process_group()


def launch(workers: int, argv: list[str], checkpoint: Path | None) -> None:
    """Run ``python -m invae`` with ``argv`` in ``workers`` processes on this machine, as
    ``torchrun --standalone --nproc-per-node workers`` would; raise :class:`WorkersFailed` if
    one fails. ``checkpoint``: the file a lost process's fit can resume from."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its failures table: ours is one line
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=workers, run_id=f"invae-{os.getpid()}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    os.environ[LAUNCHED] = "1"
    try:
        elastic_launch(config, sys.executable)("-m", "invae", *argv)
    except ChildFailedError as failed:
        raise _failure(failed, workers, checkpoint) from None
    except SignalException as interrupted:  # Ctrl-C: the processes, signalled too, said what they saved
        raise WorkersFailed(128 + interrupted.sigval, None) from None
    finally:
        del os.environ[LAUNCHED]


def _failure(failed, workers: int, checkpoint: Path | None) -> WorkersFailed:
    """What to report of the failed processes: one stopped by a signal, with where to resume
    (SIGTERM last: the agent sends it to the others once one has failed); else the first to
    fail, which printed its own error."""
    stopped = {rank: failure for rank, failure in failed.failures.items() if failure.exitcode < 0}
    if not stopped:
        _, first = failed.get_first_failure()
        return WorkersFailed(first.exitcode, None)
    rank, failure = min(stopped.items(), key=lambda item: (item[1].exitcode == -signal.SIGTERM, item[0]))
    name = signal.Signals(-failure.exitcode).name
    if checkpoint is None:
        where = "nothing was written (--checkpoint-dir keeps a fit's state)"
    elif checkpoint.is_file():
        where = f"the last good state is in {checkpoint}: rerun with --resume"
    else:
        where = f"no checkpoint was written yet in {checkpoint.parent}"
    return WorkersFailed(1, f"process {rank} of {workers} was stopped by {name}; {where}")
