import pytest
import torch

from invae.threads import fit_threads, using_threads


def test_one_thread_unless_told(monkeypatch):
    monkeypatch.delenv("INVAE_NUM_THREADS", raising=False)
    assert fit_threads() == 1
    assert fit_threads(3) == 3
    monkeypatch.setenv("INVAE_NUM_THREADS", "2")
    assert fit_threads() == 2
    assert fit_threads(1) == 1


@pytest.mark.parametrize("given, env, message", [(0, None, "got 0"), (None, "many", "INVAE_NUM_THREADS")])
def test_a_bad_count_is_refused_in_one_line(monkeypatch, given, env, message):
    monkeypatch.setenv("INVAE_NUM_THREADS", env or "1")
    with pytest.raises(ValueError, match=message):
        fit_threads(given)


def test_the_previous_count_comes_back():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with using_threads(3):
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_command_line_sets_the_threads_before_torch_is_imported(tmp_path):
    # A fresh interpreter: torch reads OMP_NUM_THREADS when it is first imported.
    import os
    import subprocess
    import sys

    code = ("from invae.threads import use_threads_in_this_process; use_threads_in_this_process(None); "
            "import torch; print(torch.get_num_threads())")
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "INVAE_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_a_bad_threads_flag_is_one_line_and_exit_2(capsys):
    from invae.app.cli import main

    assert main(["eb", "--data", "missing.csv", "--x", "0", "--threads", "0"]) == 2
    assert "threads must be an integer >= 1, got 0" in capsys.readouterr().err


def test_the_thread_counts_are_set_before_numpy_is_imported(tmp_path):
    # numpy's BLAS and torch read their thread counts once, when imported: the command line
    # must set them before building the options of a command (which import numpy).
    import subprocess
    import sys

    code = ("import sys, invae.threads as t; original = t.use_threads_in_this_process\\n"
            "def spy(n):\\n    assert 'numpy' not in sys.modules and 'torch' not in sys.modules; original(n)\\n"
            "t.use_threads_in_this_process = spy\\n"
            "import invae.app.cli as cli; cli.use_threads_in_this_process = spy\\n"
            "try:\\n    cli.main(['eb', '--help'])\\nexcept SystemExit:\\n    pass\\n"
            "import os; print(os.environ['OPENBLAS_NUM_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code.replace("\\n", "\n")], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "1"


@pytest.mark.parametrize("estimator", ["em", "vae"])
def test_fits_run_on_the_chosen_thread_count(estimator):
    from invae import EM, GaussianGraphicalModel, VariationalEB, linear_gaussian, simulate_problem
    problem = simulate_problem(p=3, n=50, seed=0)
    seen = []
    options = dict(callback=lambda iteration, prior: seen.append(torch.get_num_threads()), n_threads=3, max_iter=2)
    prior, likelihood = GaussianGraphicalModel(dim=3), linear_gaussian(problem.A, 1.0)
    before = torch.get_num_threads()
    with pytest.warns(Warning):  # two iterations do not converge
        (EM(prior, likelihood, **options) if estimator == "em" else VariationalEB(prior, likelihood, **options)).fit(problem.X)
    assert seen == [3, 3] and torch.get_num_threads() == before
