import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import invae.inference.training
from invae import GaussianGraphicalModel, VariationalEB, linear_gaussian, simulate_problem
from invae.inference.checkpoints import Checkpointer, FitInterrupted
from invae.inference.lambda_steps import ExpectedStep

# Fits here stop on max_iter on purpose (tol=1e-12 keeps them running).
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def problem():
    return simulate_problem(p=5, n=400, graph="chain", forward="identity", noise_std=0.5, seed=1)


def _vae(problem, **options):
    # Adam's loop, whose state these tests save, restore and roll back (a closed-form q-step
    # would replace it on this linear-Gaussian model: docs/methods.md §2.2)
    options = {"tol": 1e-12, "closed_form": False, **options}
    return VariationalEB(GaussianGraphicalModel(dim=5, alpha=0.02), linear_gaussian(problem.A, 0.5),
                         max_iter=40, hidden=(16,), **options)


@pytest.mark.parametrize("options", [{}, {"lambda_rows": 100, "tol": None}])  # the second averages its Λ-steps
def test_a_resumed_fit_is_bit_for_bit_the_uninterrupted_one(problem, tmp_path, options):
    whole = _vae(problem, **options).fit(problem.X)

    def stop_at_17(iteration, prior):  # a real SIGTERM, delivered mid-fit
        if iteration == 17:
            os.kill(os.getpid(), signal.SIGTERM)

    interrupted = _vae(problem, checkpoint_dir=tmp_path, checkpoint_every=5, callback=stop_at_17, **options)
    with pytest.raises(FitInterrupted, match="after iteration 17"):
        interrupted.fit(problem.X)
    resumed = _vae(problem, checkpoint_dir=tmp_path, checkpoint_every=5, resume=True, **options).fit(problem.X)
    assert resumed.n_iter_ == whole.n_iter_ == 40
    np.testing.assert_array_equal(resumed.precision_, whole.precision_)
    for got, expected in zip(resumed.posterior(problem.X), whole.posterior(problem.X)):
        np.testing.assert_array_equal(got, expected)
    assert resumed.history_["elbo"] == whole.history_["elbo"]
    assert resumed.history_["monte_carlo_error"] == whole.history_["monte_carlo_error"]


def test_sigterm_to_the_command_line_then_resume_matches_an_uninterrupted_run(tmp_path):
    cli = [sys.executable, "-m", "invae.app.cli"]
    subprocess.run([*cli, "simulate", "--p", "5", "--n", "400", "--out", str(tmp_path / "pb")], check=True,
                   capture_output=True)
    fit = [*cli, "fit", "--data", str(tmp_path / "pb" / "X.npy"), "--noise-std", "1", "--method", "vae",
           "--penalty", "0.02", "--tol", "1e-12", "--max-iter", "150", "--quiet"]
    subprocess.run([*fit, "--out", str(tmp_path / "whole")], check=True, capture_output=True)
    checkpoint = tmp_path / "ck" / "checkpoint.pt"
    run = subprocess.Popen([*fit, "--out", str(tmp_path / "parts"), "--checkpoint-dir", str(tmp_path / "ck"),
                            "--checkpoint-every", "5"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGTERM, err
    assert "rerun with --resume" in err and not (tmp_path / "parts").exists()
    subprocess.run([*fit, "--out", str(tmp_path / "parts"), "--checkpoint-dir", str(tmp_path / "ck"),
                    "--checkpoint-every", "5", "--resume"], check=True, capture_output=True)
    for name in ("precision", "posterior_mean", "posterior_std"):
        np.testing.assert_array_equal(np.load(tmp_path / "parts" / f"{name}.npy"),
                                      np.load(tmp_path / "whole" / f"{name}.npy"))


def test_a_checkpoint_of_another_fit_is_refused(problem, tmp_path):
    _vae(problem, checkpoint_dir=tmp_path, checkpoint_every=5).fit(problem.X)
    with pytest.raises(ValueError, match="belongs to another fit: its data_shape"):
        _vae(problem, checkpoint_dir=tmp_path, resume=True).fit(problem.X[:300])
    with pytest.raises(ValueError, match="no checkpoint"):
        _vae(problem, checkpoint_dir=tmp_path / "empty", resume=True).fit(problem.X)


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save({"iteration": 1}, {})
    before = (tmp_path / "checkpoint.pt").read_bytes()

    def crash(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpointer.save({"iteration": 2}, {})
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["checkpoint.pt"]


class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_checkpoint_with_a_pickle_payload_is_refused_unrun(problem, tmp_path, capsys):
    torch.save({"format": "invae-checkpoint", "payload": _Payload()}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="cannot read the checkpoint"):
        _vae(problem, checkpoint_dir=tmp_path, resume=True).fit(problem.X)
    assert "this ran" not in capsys.readouterr().out


def _poisoned_elbo(monkeypatch, poisoned_calls):
    """Make the training ELBO NaN on the calls whose number is in ``poisoned_calls``."""
    original, calls = invae.inference.training.elbo, [0]

    def elbo(*args, **kwargs):
        calls[0] += 1
        value = original(*args, **kwargs)
        return value * float("nan") if calls[0] in poisoned_calls else value

    monkeypatch.setattr(invae.inference.training, "elbo", elbo)


def test_one_nan_is_rolled_back_and_the_fit_goes_on(problem, monkeypatch):
    # calls 1-20 are iteration 1's Adam steps, 21 its evaluation ELBO; poison iteration 3's steps
    clean = _vae(problem).fit(problem.X)
    _poisoned_elbo(monkeypatch, {45})
    fitted = _vae(problem).fit(problem.X)
    assert fitted.n_iter_ == 40 and np.all(np.isfinite(fitted.precision_))
    assert all(np.isfinite(fitted.history_["elbo"]))
    # the rollback halved the step size from iteration 3 on: same start, different path
    assert fitted.history_["elbo"][:2] == clean.history_["elbo"][:2]
    assert not np.array_equal(fitted.precision_, clean.precision_)


def test_a_collapsed_evaluation_elbo_is_rolled_back(problem, monkeypatch):
    # A finite but collapsed ELBO (a step that sent q where exp(z) overflows) is divergence too:
    # iteration 3's evaluation falls far below the best, so it is redone with half the step.
    clean = _vae(problem).fit(problem.X)
    original, calls = invae.inference.training._Run._fixed_noise_elbo, [0]

    def collapsed_at_third(run):
        calls[0] += 1
        return original(run) - (1e6 if calls[0] == 3 else 0.0)

    monkeypatch.setattr(invae.inference.training._Run, "_fixed_noise_elbo", collapsed_at_third)
    fitted = _vae(problem).fit(problem.X)
    assert min(fitted.history_["elbo"]) > -1e5
    assert fitted.history_["elbo"][:2] == clean.history_["elbo"][:2]
    assert fitted.history_["elbo"][2] != clean.history_["elbo"][2]


def test_each_rollback_halves_the_step_size_again(problem, monkeypatch):
    # Iteration 3 collapses on its first two tries: the retries take 1/2, then 1/4 of the step
    # size (a retry at the same step size would redo the same collapse: its RNG is restored too).
    original_elbo, original_steps, calls, sizes = (invae.inference.training._Run._fixed_noise_elbo,
                                                   invae.inference.training._Run._adam_steps, [0], [])

    def collapsed_twice(run):
        calls[0] += 1
        return original_elbo(run) - (1e6 if calls[0] in (3, 4) else 0.0)

    def recorded_steps(run):
        sizes.append(run.optimizer.param_groups[0]["lr"])
        return original_steps(run)

    monkeypatch.setattr(invae.inference.training._Run, "_fixed_noise_elbo", collapsed_twice)
    monkeypatch.setattr(invae.inference.training._Run, "_adam_steps", recorded_steps)
    fitted = _vae(problem).fit(problem.X)
    assert sizes[2:5] == [sizes[2], sizes[2] / 2, sizes[2] / 4] and min(fitted.history_["elbo"]) > -1e5


def test_persistent_divergence_ends_in_a_clear_error(problem, monkeypatch, tmp_path):
    _poisoned_elbo(monkeypatch, set(range(60, 10_000)))
    with pytest.raises(FloatingPointError, match=r"diverged at outer iteration 3 \(the training ELBO is not "
                                                 r"finite\) after 3 rollbacks.*checkpoint: .*checkpoint.pt"):
        _vae(problem, checkpoint_dir=tmp_path, checkpoint_every=1, n_critic=20).fit(problem.X)


def test_an_invalid_lambda_is_rolled_back(problem, monkeypatch):
    # The prior refuses a Λ that is not positive definite: the third Λ-step's statistics give one.
    original, calls = ExpectedStep.statistics, [0]

    def statistics(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            return {"second_moment": -torch.eye(5)}  # the M-step raises ValueError on it
        return original(*args, **kwargs)

    monkeypatch.setattr(ExpectedStep, "statistics", statistics)
    fitted = _vae(problem).fit(problem.X)
    assert calls[0] == 41 and np.all(np.linalg.eigvalsh(fitted.precision_) > 0)  # 40 + the retried one


def test_the_data_checksum_is_compared_to_round_off(tmp_path):
    """Σ x and Σ x² of the same rows summed in other blocks (or processes) differ by round-off,
    at most ε √(N Σx²) and ε Σx² (ε = 1e-8); another data set differs by far more."""
    identity = {"data_shape": [1000, 10], "data_checksum": [3.0, 10_000.0]}
    Checkpointer(tmp_path).save({}, identity)
    resumed = Checkpointer(tmp_path, resume=True)
    for checksum in ([3.0 + 1e-9, 10_000.0 * (1 + 1e-12)], [3.0, 10_000.0]):
        assert resumed.load({**identity, "data_checksum": checksum}) is not None
    for checksum in ([3.0 + 1e-3, 10_000.0], [3.0, 10_000.0 * (1 + 1e-6)]):  # bounds: 1e-8 · √(N Σx²) = 1e-4, 1e-8 · Σx² = 1e-4
        with pytest.raises(ValueError, match="belongs to another fit: its data_checksum"):
            resumed.load({**identity, "data_checksum": checksum})
