"""``invae fit --workers K`` (invae.app.processes): K processes on this machine, one fit.

Each test starts the command in a process of its own, which starts 2 more (torch's elastic
agent, gloo on localhost): about 15–30 s each.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from invae.app.cli import main


@pytest.fixture
def problem_dir(tmp_path):
    assert main(["simulate", "--p", "6", "--n", "3000", "--noise-std", "0.5", "--out", str(tmp_path / "pb")]) == 0
    return tmp_path / "pb"


def _command(problem_dir, out, *extra):
    return [sys.executable, "-m", "invae", "fit", "--data", str(problem_dir / "X.npy"), "--noise-std", "0.5",
            "--penalty", "0.02", "--quiet", "--out", str(out), *extra]


def test_two_workers_make_one_process_fit_and_warn_once(problem_dir, tmp_path):
    options = ("--method", "iaf", "--max-iter", "4")
    alone = subprocess.run(_command(problem_dir, tmp_path / "one", *options), capture_output=True, text=True)
    together = subprocess.run(_command(problem_dir, tmp_path / "two", *options, "--workers", "2"),
                              capture_output=True, text=True)
    assert alone.returncode == together.returncode == 0, together.stderr
    assert together.stderr.count("stopped at max_iter=4") == 1  # rank 0 warns, the other is silent
    for name in ("precision", "posterior_mean", "posterior_std"):
        # float32 (the command line's dtype): round-off of sums taken in another order
        np.testing.assert_allclose(np.load(tmp_path / "two" / f"{name}.npy"),
                                   np.load(tmp_path / "one" / f"{name}.npy"), rtol=0, atol=1e-4)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["n"] == 3000 and summary["settings"]["workers"] == 2


def test_bad_data_for_workers_is_one_error_before_any_process_starts(tmp_path):
    (tmp_path / "X.npy").write_bytes(b"not an array")
    result = subprocess.run([sys.executable, "-m", "invae", "fit", "--data", str(tmp_path / "X.npy"), "--noise-std",
                             "1", "--workers", "2", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("invae fit: error:")
    assert not (tmp_path / "out").exists()


def test_workers_refuse_a_method_that_does_not_split(problem_dir, tmp_path):
    assert main(["fit", "--data", str(problem_dir / "X.npy"), "--noise-std", "0.5", "--method", "mixture",
                 "--workers", "2", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def _worker_of_rank(parent: int, rank: int) -> int | None:
    """The pid of the process with ``RANK=rank`` among ``parent``'s descendants (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
            ancestors = _ancestors(int(entry.name))
        except OSError:
            continue
        if f"RANK={rank}".encode() in environment and parent in ancestors:
            return int(entry.name)
    return None


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


@pytest.mark.slow  # about 60 s: three fits, five processes (tests/inference/test_parallel.py kills one too)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker through /proc")
def test_a_killed_worker_is_one_line_and_the_fit_resumes(problem_dir, tmp_path):
    folder = tmp_path / "checkpoints"
    command = _command(problem_dir, tmp_path / "out", "--max-iter", "400", "--tol", "1e-12", "--checkpoint-dir",
                       str(folder), "--checkpoint-every", "2", "--workers", "2")
    parent = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (folder / "checkpoint.pt").is_file() and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.1)
    worker = _worker_of_rank(parent.pid, 1)
    assert worker is not None and parent.poll() is None  # the fit is running: 400 iterations take far longer
    os.kill(worker, signal.SIGKILL)
    _, stderr = parent.communicate(timeout=120)
    assert parent.returncode == 1
    assert stderr.strip().splitlines() == [
        f"invae fit: error: process 1 of 2 was stopped by SIGKILL; the last good state is in "
        f"{folder / 'checkpoint.pt'}: rerun with --resume"]
    assert not (tmp_path / "out").exists()
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = command[: command.index("--checkpoint-dir")]
    uninterrupted[uninterrupted.index("--out") + 1] = str(tmp_path / "whole")
    assert subprocess.run(uninterrupted, capture_output=True).returncode == 0
    np.testing.assert_allclose(np.load(tmp_path / "out" / "precision.npy"),  # float32 round-off
                               np.load(tmp_path / "whole" / "precision.npy"), rtol=0, atol=1e-4)
