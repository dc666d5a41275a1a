import json
import subprocess
import sys

import numpy as np
import pytest

from invae.app.cli import main
from invae.app.methods import methods
from invae.evaluation.metrics import relative_frobenius_error
from invae.evaluation.simulate import Problem

from ..references.test_em import numpy_em
from .test_report import check_report


@pytest.fixture
def problem_dir(tmp_path):
    assert main(["simulate", "--p", "6", "--n", "300", "--forward", "gaussian", "--m", "12", "--noise-std", "0.5",
                 "--out", str(tmp_path / "pb")]) == 0
    return tmp_path / "pb"


def _fit(problem_dir, out, *extra):
    return main(["fit", "--data", str(problem_dir / "X.npy"), "--forward", str(problem_dir / "A.npy"),
                 "--noise-std", "0.5", "--out", str(out), "--quiet", *extra])


@pytest.mark.parametrize("method", ["em", "naive", "vae", "iaf", "full-covariance", "low-rank", "mean-field"])
def test_fit_writes_the_contracted_files(problem_dir, tmp_path, method):
    model = tmp_path / "model.pt"
    assert _fit(problem_dir, tmp_path / "fit", "--method", method, "--penalty", "0.05", "--save", str(model)) == 0
    out = tmp_path / "fit"
    assert np.load(out / "precision.npy").shape == (6, 6)
    assert np.load(out / "posterior_mean.npy").shape == (300, 6)
    assert np.load(out / "posterior_std.npy").shape == (300, 6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["method"] == method and summary["settings"]["penalty"] == 0.05
    assert summary["n"] == 300 and summary["p"] == 6 and summary["converged"]
    if methods()[method].variational:  # a lower bound on the exact evidence (3 standard errors)
        assert summary["elbo_per_obs"] <= summary["log_likelihood_per_obs"] + 3 * summary["elbo_standard_error"]
        assert ("importance_ess" in summary) == (summary["posterior"] != "q") == (method == "iaf")
    assert not list(tmp_path.glob(".fit.partial-*"))
    # predict with the saved model, on the same rows: the fit's answers (mean-field refits
    # its per-row factors for data given anew, so only shapes are comparable there)
    assert main(["predict", "--model", str(model), "--data", str(problem_dir / "X.npy"),
                 "--out", str(tmp_path / "pred")]) == 0
    for name in ("posterior_mean", "posterior_std"):
        predicted, fitted = np.load(tmp_path / "pred" / f"{name}.npy"), np.load(out / f"{name}.npy")
        assert predicted.shape == fitted.shape == (300, 6)
        if method != "mean-field":
            np.testing.assert_array_equal(predicted, fitted)
    predicted = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert predicted.get("importance_ess") == summary.get("importance_ess")  # the same draws, the same weights
    fit_figures = {"precision", "network", "signals"} | ({"convergence"} if method != "naive" else set())
    for folder, figures in ((out, fit_figures), (tmp_path / "pred", {"signals"})):
        assert main(["report", str(folder)]) == 0
        check_report(folder, figures)


def test_csv_data_and_identity_forward(tmp_path):
    rng = np.random.default_rng(0)
    np.savetxt(tmp_path / "x.csv", rng.standard_normal((50, 3)) * 2, delimiter=",")
    assert main(["fit", "--data", str(tmp_path / "x.csv"), "--noise-std", "1", "--out",
                 str(tmp_path / "fit"), "--quiet"]) == 0
    assert np.load(tmp_path / "fit" / "posterior_mean.npy").shape == (50, 3)


def test_config_file_with_flags_overriding(problem_dir, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'data = "{problem_dir / "X.npy"}"\nforward = "{problem_dir / "A.npy"}"\n'
                      'noise-std = 0.5\npenalty = 0.3\nmethod = "naive"\nout = "from-config"\n')
    assert main(["fit", "--config", str(config), "--penalty", "0.1", "--quiet"]) == 0
    summary = json.loads((tmp_path / "from-config" / "summary.json").read_text())  # relative to config
    assert summary["settings"]["penalty"] == 0.1 and summary["settings"]["method"] == "naive"


def test_unknown_config_key_is_named(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text('data = "x.npy"\nnoise_sd = 1.0\n')
    assert main(["fit", "--config", str(tmp_path / "bad.toml")]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s)" in err and ": noise_sd;" in err


def _write(tmp_path, name, array):
    path = tmp_path / name
    path.write_text(array) if isinstance(array, str) else np.save(path, array)
    return str(path)


def _pickled(tmp_path, name):
    np.save(tmp_path / name, np.array([[1, "a"], [2, "b"]], dtype=object), allow_pickle=True)
    return str(tmp_path / name)


def _renamed_npz(tmp_path, name):
    np.savez(tmp_path / "archive.npz", x=np.ones((3, 12)))
    (tmp_path / "archive.npz").rename(tmp_path / name)
    return str(tmp_path / name)


@pytest.mark.parametrize("make_args, message", [
    (lambda d, t: ["--data", _write(t, "nan.npy", np.array([[1.0, np.nan]] * 3))],
     "column 1 of the data is never observed"),
    (lambda d, t: ["--data", _write(t, "inf.npy", np.array([[1.0, np.inf]] * 3))], "holds 3 inf value(s)"),
    (lambda d, t: ["--data", str(d / "X.npy"), "--forward", _write(t, "a.npy", np.eye(4))], "columns"),
    (lambda d, t: ["--data", str(d / "X.npy"), "--noise-std", "0"], "noise standard deviation"),
    (lambda d, t: ["--data", str(d / "X.npy"), "--noise-std", "-1"], "noise standard deviation"),
    (lambda d, t: ["--data", _write(t, "empty.csv", "")], "no data"),
    (lambda d, t: ["--data", _write(t, "one.csv", "1,2,3\n")], "at least 2"),
    (lambda d, t: ["--data", str(d / "X.npy"), "--penalty", "-0.1"], "penalty"),
    (lambda d, t: ["--data", str(t / "missing.npy")], "no such file"),
    (lambda d, t: ["--data", _write(t, "junk.npy", "not an array")], "cannot read"),
    (lambda d, t: ["--data", _write(t, "text.npy", np.array([["a", "b"]] * 3))], "must hold numbers"),
    (lambda d, t: ["--data", _write(t, "words.csv", "a,b\nc,d\n")], "cannot read"),
    (lambda d, t: ["--data", _write(t, "ragged.csv", "1,2,3\n4,5\n6,7,8\n")], "number of columns changed"),
    (lambda d, t: ["--data", _pickled(t, "objects.npy")], "holds Python objects"),
    (lambda d, t: ["--data", _renamed_npz(t, "archive.npy")], "not a NumPy .npy array file"),
    (lambda d, t: ["--data", _write(t, "huge.npy", np.full((5, 12), 1e30))], "too large"),
])
def test_bad_input_is_one_line_status_2_and_writes_nothing(problem_dir, tmp_path, capsys, make_args, message):
    args = ["fit", "--noise-std", "0.5", "--out", str(tmp_path / "never"), *make_args(problem_dir, tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("extra, message", [
    (["--noise", "poisson", "--noise-std", "1"], "has no scale: leave out --noise-std"),
    (["--noise", "student-t"], "needs --noise-std"),
    (["--noise", "student-t", "--noise-std", "1", "--noise-df", "0"], "--noise-df must be"),
    (["--noise-std", "1", "--noise-df", "3"], "--noise-df is the degrees of freedom of --noise student-t"),
    (["--noise", "bernoulli", "--method", "em"], "--method em needs Gaussian noise"),
    (["--noise", "poisson", "--method", "naive"], "--method naive needs Gaussian noise"),
    (["--noise-std", "1", "--components", "3"], "--components is the number of mixture components"),
    (["--noise-std", "1", "--prior", "gmm", "--components", "0"], "--components must be"),
    (["--noise-std", "1", "--prior", "gmm", "--penalty", "auto"], "--penalty auto chooses α for the ggm"),
    (["--noise-std", "1", "--prior", "gmm", "--fit-mean"], "--fit-mean estimates a prior mean that is otherwise 0: "
                                                           "--prior ggm, not gmm (whose means are always estimated)"),
    (["--noise-std", "1", "--covariate-columns", "a"], "--covariate-columns picks columns of --covariates FILE"),
    (["--noise-std", "1", "--stability", "4", "--jobs", "0"], "--jobs must be an integer >= 1"),
    (["--noise-std", "1", "--covariate-ridge", "2"], "--covariate-ridge shrinks the effects of --covariates FILE"),
    (["--noise-std", "1", "--covariate-ridge", "-1"], "--covariate-ridge must be a finite number >= 0"),
    (["--noise-std", "1", "--offsets", "log-total"], "--offsets move the linear predictor of --noise poisson, "
                                                     "bernoulli, not of gaussian"),
])
def test_noise_and_prior_options_are_checked_before_any_work(problem_dir, tmp_path, capsys, extra, message):
    assert main(["fit", "--data", str(problem_dir / "X.npy"), "--out", str(tmp_path / "never"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "never").exists()


def test_mixture_prior_writes_its_parameters(problem_dir, tmp_path):
    assert _fit(problem_dir, tmp_path / "fit", "--method", "em", "--prior", "gmm", "--components", "3",
                "--penalty", "0.05") == 0
    out = tmp_path / "fit"
    weights, means, precisions = (np.load(out / f"{name}.npy") for name in ("weights", "means", "precisions"))
    assert weights.shape == (3,) and means.shape == (3, 6) and precisions.shape == (3, 6, 6)
    assert not (out / "precision.npy").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["edges"] == int(np.count_nonzero(np.triu(precisions, k=1)))
    assert summary["settings"]["components"] == 3 and "log_likelihood_per_obs" in summary


def test_poisson_counts_through_the_command_line(tmp_path):
    counts = np.random.default_rng(0).poisson(2.0, size=(200, 3)).astype(float)
    np.save(tmp_path / "counts.npy", counts)
    assert main(["fit", "--data", str(tmp_path / "counts.npy"), "--noise", "poisson", "--method", "vae",
                 "--max-iter", "20", "--out", str(tmp_path / "fit"), "--quiet", "--save", str(tmp_path / "m.pt")]) == 0
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert summary["settings"]["noise"] == "poisson" and "log_likelihood_per_obs" not in summary
    assert np.isfinite(np.load(tmp_path / "fit" / "posterior_mean.npy")).all()
    # a saved model of counts answers for the same rows as the fit did
    assert main(["predict", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "counts.npy"),
                 "--out", str(tmp_path / "pred")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "pred" / "posterior_mean.npy"),
                                  np.load(tmp_path / "fit" / "posterior_mean.npy"))


def test_missing_noise_level_is_named(problem_dir, capsys):
    assert main(["fit", "--data", str(problem_dir / "X.npy")]) == 2
    assert "--noise-std" in capsys.readouterr().err


def test_console_script_exit_status_and_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "invae.app.cli", "fit", "--data", str(tmp_path / "none.npy"),
                             "--noise-std", "1"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no such file" in result.stderr
    usage = subprocess.run([sys.executable, "-m", "invae.app.cli", "fit", "--method", "magic"],
                           capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1


def test_failed_fit_leaves_an_existing_results_folder_as_it_was(problem_dir, tmp_path):
    out = tmp_path / "fit"
    assert _fit(problem_dir, out, "--method", "em") == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    assert main(["fit", "--data", str(problem_dir / "X.npy"), "--forward", str(problem_dir / "A.npy"),
                 "--noise-std", "0.5", "--penalty", "-1", "--out", str(out)]) == 2
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before


def test_numerical_breakdown_is_one_line_and_writes_nothing(problem_dir, tmp_path, monkeypatch, capsys):
    # A diverging fit (measured: the diagonal family with m < p) raises FloatingPointError from
    # the Λ-step; the CLI reports it in one line with exit status 1 and leaves no results.
    def diverge(settings, staged):
        raise FloatingPointError("the Λ-step failed even with a ridge")
    monkeypatch.setattr("invae.app.pipeline.run_fit", diverge)  # _fit imports it when it runs
    out = tmp_path / "fit"
    assert _fit(problem_dir, out, "--method", "vae") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "failed numerically" in err and "Λ-step" in err
    assert not out.exists() and not list(tmp_path.glob(".fit.partial-*"))  # nor a staging folder


def test_em_fit_agrees_with_an_independent_em_within_two_percent(tmp_path):
    # The acceptance check: p = 20, n = 10 000, σ = 0.5, through the CLI, against a
    # NumPy/scikit-learn EM run for 300 iterations from the same start.
    assert main(["simulate", "--p", "20", "--n", "10000", "--noise-std", "0.5", "--seed", "3",
                 "--out", str(tmp_path / "pb")]) == 0
    problem = Problem.load(tmp_path / "pb")
    assert main(["fit", "--data", str(tmp_path / "pb" / "X.npy"), "--forward", str(tmp_path / "pb" / "A.npy"),
                 "--noise-std", "0.5", "--penalty", "0.02", "--method", "em", "--out", str(tmp_path / "fit"),
                 "--quiet"]) == 0
    ours = relative_frobenius_error(np.load(tmp_path / "fit" / "precision.npy"), problem.precision)
    theirs = relative_frobenius_error(numpy_em(problem.X, problem.A, 0.5, 0.02, 300), problem.precision)
    assert abs(ours - theirs) / theirs < 0.02


def test_warnings_print_as_one_line(problem_dir, tmp_path, capsys):
    assert _fit(problem_dir, tmp_path / "fit", "--method", "em", "--max-iter", "2") == 0
    err = capsys.readouterr().err
    assert err.startswith("invae fit: warning: EM stopped at max_iter=2") and err.count("\n") == 1


def test_auto_penalty_lands_in_the_summary(problem_dir, tmp_path):
    assert _fit(problem_dir, tmp_path / "fit", "--method", "em", "--penalty", "auto") == 0
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    path = summary["penalty_path"]
    assert summary["settings"]["penalty"] == "auto" and path["criterion"] == "held-out"
    assert summary["penalty"] == path["alpha"] in path["alphas"]
    assert len(path["alphas"]) == len(path["score"]) == len(path["ebic"]) == len(path["edges"]) == 8
    assert path["alphas"] == sorted(path["alphas"], reverse=True)
    assert path["score"][path["alphas"].index(path["alpha"])] == max(path["score"])


def test_auto_penalty_by_ebic(problem_dir, tmp_path):
    assert _fit(problem_dir, tmp_path / "fit", "--method", "em", "--penalty", "auto",
                "--penalty-criterion", "ebic") == 0
    path = json.loads((tmp_path / "fit" / "summary.json").read_text())["penalty_path"]
    assert path["score"] == [None] * 8  # no held-out rows under EBIC: null in JSON, not NaN
    assert path["ebic"][path["alphas"].index(path["alpha"])] == min(path["ebic"])


def test_predict_with_a_missing_model_is_one_line_status_2(problem_dir, tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "none.pt"), "--data", str(problem_dir / "X.npy"),
                 "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("command", ["demo", "simulate", "fit", "predict", "report"])
def test_every_command_help_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "example:\n  invae " in capsys.readouterr().out


def test_progress_shows_on_a_non_terminal_only_when_asked(problem_dir, tmp_path, capsys):
    args = ["fit", "--data", str(problem_dir / "X.npy"), "--forward", str(problem_dir / "A.npy"), "--noise-std",
            "0.5", "--method", "em", "--penalty", "0.05"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal
    assert main([*args, "--out", str(tmp_path / "b"), "--progress"]) == 0
    assert "EM:" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "c"), "--progress", "--quiet"]) == 2


def test_csv_with_a_header_line_and_integer_data_are_read(tmp_path):
    rows = "\n".join(",".join(str((3 * i + j) % 7) for j in range(3)) for i in range(40))
    (tmp_path / "x.csv").write_text("a,b,c\n" + rows + "\n")
    assert main(["fit", "--data", str(tmp_path / "x.csv"), "--noise-std", "1", "--method", "naive",
                 "--out", str(tmp_path / "fit"), "--quiet"]) == 0
    assert np.load(tmp_path / "fit" / "posterior_mean.npy").shape == (40, 3)


def test_fewer_observations_than_dimensions_still_fit(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 6))  # n = 4 < p = 6
    np.save(tmp_path / "x.npy", x)
    assert main(["fit", "--data", str(tmp_path / "x.npy"), "--noise-std", "1", "--method", "vae", "--penalty", "0.1",
                 "--max-iter", "30", "--out", str(tmp_path / "fit"), "--quiet"]) == 0
    for name in ("precision", "posterior_mean", "posterior_std"):
        assert np.all(np.isfinite(np.load(tmp_path / "fit" / f"{name}.npy")))


def test_a_rank_deficient_forward_matrix_warns_and_fits(tmp_path, capsys):
    a = np.ones((3, 3))  # rank 1
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((50, 3)))
    assert main(["fit", "--data", str(tmp_path / "x.npy"), "--forward", str(tmp_path / "a.npy"), "--noise-std", "1",
                 "--method", "em", "--penalty", "0.1", "--max-iter", "50", "--out", str(tmp_path / "fit")]) == 0
    assert "has rank 1 < 3" in capsys.readouterr().err
    assert np.all(np.isfinite(np.load(tmp_path / "fit" / "precision.npy")))


_SENSOR = """import torch

A = torch.linspace(-1, 1, 15, dtype=torch.float64).reshape(5, 3)


def sensor(z):
    return torch.tanh(z @ A.to(z).mT)
"""


def test_a_forward_function_from_a_file(tmp_path):
    (tmp_path / "sensor.py").write_text(_SENSOR)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(-0.9, 0.9, (60, 5)))
    args = ["fit", "--data", str(tmp_path / "x.npy"), "--forward", f"{tmp_path / 'sensor.py'}:sensor",
            "--noise-std", "0.3", "--quiet"]
    assert main([*args, "--latent-dim", "3", "--max-iter", "5", "--out", str(tmp_path / "fit")]) == 0
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert np.load(tmp_path / "fit" / "posterior_mean.npy").shape == (60, 3)
    assert "elbo_per_obs" in summary and "log_likelihood_per_obs" not in summary  # no exact evidence here


def test_a_model_with_a_forward_function_given_by_a_relative_path_predicts_from_elsewhere(tmp_path, monkeypatch,
                                                                                         capsys):
    (tmp_path / "sensor.py").write_text(_SENSOR)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(-0.9, 0.9, (60, 5)))
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--data", "x.npy", "--forward", "sensor.py:sensor", "--latent-dim", "3", "--noise-std", "0.3",
                 "--max-iter", "5", "--quiet", "--out", "fit", "--save", "m.pt"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["predict", "--model", "../m.pt", "--data", "../x.npy", "--out", "pred"]) == 0
    assert f"imported from '{tmp_path / 'sensor.py'}:sensor': that file is run" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load("pred/posterior_mean.npy"), np.load("../fit/posterior_mean.npy"))


@pytest.mark.parametrize("extra, message", [
    ([], "needs --latent-dim"),
    (["--latent-dim", "3", "--method", "naive"], "needs a linear forward matrix"),
    (["--latent-dim", "3", "--method", "em"], "linear-Gaussian"),
    (["--latent-dim", "4"], "fails on z of shape (1, 4)"),  # the function's A has 3 columns
])
def test_forward_function_errors_are_one_line(tmp_path, capsys, extra, message):
    (tmp_path / "sensor.py").write_text(_SENSOR)
    np.save(tmp_path / "x.npy", np.zeros((10, 5)))
    assert main(["fit", "--data", str(tmp_path / "x.npy"), "--forward", f"{tmp_path / 'sensor.py'}:sensor",
                 "--noise-std", "0.3", "--out", str(tmp_path / "never"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_fit_takes_one_noise_level_per_row(problem_dir, tmp_path, capsys):
    sigma = np.random.default_rng(0).uniform(0.3, 0.7, 300)
    np.save(tmp_path / "sigma.npy", sigma)
    out = tmp_path / "fit"
    assert main(["fit", "--data", str(problem_dir / "X.npy"), "--forward", str(problem_dir / "A.npy"),
                 "--noise-std-file", str(tmp_path / "sigma.npy"), "--method", "vae", "--max-iter", "5",
                 "--out", str(out), "--quiet"]) == 0
    assert np.load(out / "posterior_mean.npy").shape == (300, 6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["m"] == 12 and "elbo_per_obs" in summary and "log_likelihood_per_obs" in summary
    assert "warning" in capsys.readouterr().err  # 5 iterations: not converged, and said so
    np.save(tmp_path / "short.npy", sigma[:10])
    for extra, message in ((["--noise-std-file", str(tmp_path / "short.npy")], "10 values for 300 rows"),
                           (["--noise-std-file", str(tmp_path / "sigma.npy"), "--method", "em", "--prior", "gmm"],
                            "variational"),
                           (["--noise-std-file", str(tmp_path / "sigma.npy"), "--noise-std", "0.5"], "instead of")):
        assert main(["fit", "--data", str(problem_dir / "X.npy"), *extra, "--forward", str(problem_dir / "A.npy"),
                     "--out", str(tmp_path / "never"), "--quiet"]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("method", ["em", "naive", "vae"])
def test_a_model_fitted_with_one_noise_level_per_row_predicts_with_the_new_rows_own(problem_dir, tmp_path, capsys,
                                                                                    method):
    sigma = np.random.default_rng(0).uniform(0.3, 0.7, 300)
    np.save(tmp_path / "sigma.npy", sigma)
    sigma_file = ["--noise-std-file", str(tmp_path / "sigma.npy")]
    assert main(["fit", "--data", str(problem_dir / "X.npy"), "--forward", str(problem_dir / "A.npy"), *sigma_file,
                 "--method", method, "--max-iter", "5", "--save", str(tmp_path / "m.pt"), "--out", str(tmp_path / "fit"),
                 "--quiet"]) == 0
    assert main(["predict", "--model", str(tmp_path / "m.pt"), "--data", str(problem_dir / "X.npy"), *sigma_file,
                 "--out", str(tmp_path / "new")]) == 0
    for name in ("posterior_mean", "posterior_std"):  # the same rows with the same σ_i: the fit's answers
        np.testing.assert_allclose(np.load(tmp_path / "new" / f"{name}.npy"),
                                   np.load(tmp_path / "fit" / f"{name}.npy"), rtol=1e-6, atol=1e-9)
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "m.pt"), "--data", str(problem_dir / "X.npy"),
                 "--out", str(tmp_path / "never")]) == 2
    assert "--noise-std-file" in capsys.readouterr().err and not (tmp_path / "never").exists()


@pytest.mark.parametrize("method", ["vae", "mean-field"])
def test_a_diagonal_family_that_cannot_identify_the_prior_is_refused_unless_allowed(tmp_path, capsys, method):
    assert main(["simulate", "--p", "6", "--n", "300", "--forward", "compressive", "--noise-std", "0.5",
                 "--out", str(tmp_path / "pb")]) == 0  # A is 3 × 6: rank 3 < p
    args = ["fit", "--data", str(tmp_path / "pb" / "X.npy"), "--forward", str(tmp_path / "pb" / "A.npy"),
            "--noise-std", "0.5", "--method", method, "--quiet"]
    assert main([*args, "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rank 3 < p = 6" in err and "--allow-unidentified" in err
    assert not (tmp_path / "never").exists()
    assert main([*args, "--max-iter", "3", "--allow-unidentified", "--out", str(tmp_path / "fit")]) == 0
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert "rank 3 < p = 6" in summary["warnings"][0] and summary["settings"]["allow_unidentified"]


def test_a_fit_short_of_the_maximum_likelihood_is_said_in_one_line(tmp_path, capsys):
    # vae with a 6 × 10 forward matrix runs away (allowed here); 50 exact EM steps from its Λ̂
    # gain far more than ½ χ²_{21, 0.999} = 23.4 nats (d = min(55 entries of Λ, 6·7/2 entries of
    # x's covariance) = 21). full-covariance on the same data ends at the maximum and passes.
    assert main(["simulate", "--p", "10", "--m", "6", "--n", "3000", "--forward", "gaussian", "--noise-std", "0.5",
                 "--out", str(tmp_path / "pb")]) == 0
    args = ["fit", "--data", str(tmp_path / "pb" / "X.npy"), "--forward", str(tmp_path / "pb" / "A.npy"),
            "--noise-std", "0.5", "--quiet"]
    assert main([*args, "--method", "vae", "--allow-unidentified", "--out", str(tmp_path / "vae")]) == 0
    assert capsys.readouterr().err.count("short of the maximum likelihood") == 1
    vae = json.loads((tmp_path / "vae" / "summary.json").read_text())
    check = vae["likelihood_check"]
    assert not check["passed"] and check["gain"] > check["threshold"] == pytest.approx(23.398, abs=1e-3)
    assert check["degrees_of_freedom"] == 21 and "short of the maximum likelihood" in vae["warnings"][-1]
    assert main([*args, "--method", "full-covariance", "--out", str(tmp_path / "full")]) == 0
    full = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert full["likelihood_check"]["passed"] and "warnings" not in full


def _covariate_problem(folder, n=600, seed=0):
    """x = z + 0.5 ε with z_i ~ N(μ + B c_i, Λ⁻¹) for c_i = (status indicator, depth): data and
    covariates.csv (a text column, a numeric one and one left unused) in ``folder``; the truth."""
    import torch

    from invae import GaussianGraphicalModel, simulate_problem

    rng = np.random.default_rng(seed)
    status = rng.choice(np.array(["healthy", "infected"]), n)
    depth = rng.normal(size=n)
    truth = GaussianGraphicalModel(simulate_problem(p=4, n=2, graph="chain", seed=1).precision,
                                   location=[5.0, -2.0, 0.0, 1.0], coefficients=[[2.0, 0.5], [0, -1], [1, 0], [0, 0]])
    covariates = torch.as_tensor(np.column_stack([status == "infected", depth]).astype(float))
    z = truth.sample(n, torch.Generator().manual_seed(seed), covariates=covariates).numpy()
    folder.mkdir()
    np.save(folder / "X.npy", z + 0.5 * rng.standard_normal(z.shape))
    lines = ["sample,status,depth"] + [f"s{i},{s},{d:.17g}" for i, (s, d) in enumerate(zip(status, depth))]
    (folder / "covariates.csv").write_text("\n".join(lines) + "\n")
    return truth


@pytest.mark.parametrize("method", ["em", "vae"])
def test_covariates_give_the_prior_a_location_and_predict_codes_new_rows_alike(tmp_path, method):
    truth = _covariate_problem(tmp_path / "pb")
    covariates = str(tmp_path / "pb" / "covariates.csv")
    model, out = tmp_path / "model.pt", tmp_path / "fit"
    assert main(["fit", "--data", str(tmp_path / "pb" / "X.npy"), "--noise-std", "0.5", "--covariates", covariates,
                 "--covariate-columns", "status,depth", "--method", method, "--out", str(out), "--quiet",
                 "--save", str(model)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["covariates"] == ["status=infected", "depth"]
    # μ̂ and B̂ within 5 standard errors: with A = I they are least squares of x on (1, c), and
    # Var x_j = (Λ⁻¹)_jj + σ² = 1.25, so the SE is 1.12 · √(2/300) ≈ 0.091 for the indicator
    # (two groups of ≈ 300 rows), ≈ 0.065 for μ (one group's mean) and ≈ 0.046 for the slope
    np.testing.assert_allclose(np.load(out / "location.npy"), truth.location.numpy(), atol=5 * 0.065)
    np.testing.assert_allclose(np.load(out / "coefficients.npy"), truth.coefficients.numpy(), atol=5 * 0.091)
    assert main(["predict", "--model", str(model), "--data", str(tmp_path / "pb" / "X.npy"), "--covariates",
                 covariates, "--out", str(tmp_path / "pred")]) == 0
    for name in ("posterior_mean", "posterior_std"):
        np.testing.assert_array_equal(np.load(tmp_path / "pred" / f"{name}.npy"), np.load(out / f"{name}.npy"))


def test_a_covariate_ridge_shrinks_the_effects_and_travels_with_the_model(tmp_path):
    # each M-step's B̂ is (D + ρJ)⁻¹ C (exact: tests/model/test_location.py): with the
    # covariates' centred moments ≈ diag(0.25, 1) (an indicator of two halves, a unit normal)
    # ρ = 1 shrinks the indicator's effects to roughly 0.25/1.25 = 0.2 of their size and the
    # slope's to roughly a half (EM's fixed point, where Λ̂ moves too, is not exactly that)
    _covariate_problem(tmp_path / "pb")
    common = ["--data", str(tmp_path / "pb" / "X.npy"), "--noise-std", "0.5", "--covariates",
              str(tmp_path / "pb" / "covariates.csv"), "--covariate-columns", "status,depth", "--method", "em",
              "--quiet"]
    assert main(["fit", *common, "--out", str(tmp_path / "plain")]) == 0
    assert main(["fit", *common, "--covariate-ridge", "1", "--out", str(tmp_path / "ridge"),
                 "--save", str(tmp_path / "model.pt")]) == 0
    plain, ridge = (np.load(tmp_path / name / "coefficients.npy") for name in ("plain", "ridge"))
    big = np.abs(plain) > 0.4  # the effects of the truth that are not 0
    ratio = ridge[big] / plain[big]
    indicator = np.argwhere(big)[:, 1] == 0
    assert np.all((ratio[indicator] > 0.1) & (ratio[indicator] < 0.3))
    assert np.all((ratio[~indicator] > 0.35) & (ratio[~indicator] < 0.65))
    assert main(["predict", "--model", str(tmp_path / "model.pt"), "--data", str(tmp_path / "pb" / "X.npy"),
                 "--covariates", str(tmp_path / "pb" / "covariates.csv"), "--out", str(tmp_path / "pred")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "pred" / "posterior_mean.npy"),
                                  np.load(tmp_path / "ridge" / "posterior_mean.npy"))


@pytest.mark.parametrize("method", ["em", "vae"])
def test_covariates_move_each_mixture_components_mean(tmp_path, method):
    # the one-component truth of _covariate_problem, fitted by a 2-component mixture: each
    # component's effects B_k (p × k) written as coefficients (K, p, k), predict answering alike
    _covariate_problem(tmp_path / "pb", n=400)
    covariates = str(tmp_path / "pb" / "covariates.csv")
    model, out = tmp_path / "model.pt", tmp_path / "fit"
    assert main(["fit", "--data", str(tmp_path / "pb" / "X.npy"), "--noise-std", "0.5", "--covariates", covariates,
                 "--covariate-columns", "status,depth", "--prior", "gmm", "--components", "2", "--method", method,
                 "--max-iter", "30", "--out", str(out), "--quiet", "--save", str(model)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["covariates"] == ["status=infected", "depth"] and "log_likelihood_per_obs" in summary
    assert np.load(out / "coefficients.npy").shape == (2, 4, 2) and np.load(out / "means.npy").shape == (2, 4)
    assert not (out / "location.npy").exists()
    assert main(["predict", "--model", str(model), "--data", str(tmp_path / "pb" / "X.npy"), "--covariates",
                 covariates, "--out", str(tmp_path / "pred")]) == 0
    for name in ("posterior_mean", "posterior_std"):
        np.testing.assert_array_equal(np.load(tmp_path / "pred" / f"{name}.npy"), np.load(out / f"{name}.npy"))


def test_predict_refuses_rows_without_the_models_covariates_or_with_unseen_labels(tmp_path, capsys):
    _covariate_problem(tmp_path / "pb", n=200)
    model = tmp_path / "model.pt"
    data, covariates = str(tmp_path / "pb" / "X.npy"), tmp_path / "pb" / "covariates.csv"
    assert main(["fit", "--data", data, "--noise-std", "0.5", "--covariates", str(covariates), "--covariate-columns",
                 "status,depth", "--method", "em", "--out", str(tmp_path / "fit"), "--quiet", "--save", str(model)]) == 0
    assert main(["predict", "--model", str(model), "--data", data, "--out", str(tmp_path / "a")]) == 2
    assert "this model's rows had --covariates: give the new rows' with --covariates" in capsys.readouterr().err
    covariates.write_text(covariates.read_text().replace("infected", "sick", 1))
    assert main(["predict", "--model", str(model), "--data", data, "--covariates", str(covariates),
                 "--out", str(tmp_path / "b")]) == 2
    assert "label(s) sick that the fit did not have" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_counts_with_log_total_offsets_and_predict_with_the_fits_mean_total(tmp_path, capsys):
    # x_ij ~ Poisson(d_i exp(z_ij)): --offsets log-total gives o_i = log(total_i / mean total), and
    # predict offsets new rows by the fit's mean total, so the fit's rows get the fit's answers
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 2.0, 300)
    x = rng.poisson(depth[:, None] * np.exp(2.0 + 0.5 * rng.standard_normal((300, 4)))).astype(float)
    np.save(tmp_path / "X.npy", x)
    model, out = tmp_path / "model.pt", tmp_path / "fit"
    assert main(["fit", "--data", str(tmp_path / "X.npy"), "--noise", "poisson", "--offsets", "log-total",
                 "--fit-mean", "--max-iter", "30", "--out", str(out), "--quiet", "--save", str(model)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["row_recipe"]["mean_total"] == pytest.approx(x.sum(1).mean())
    assert main(["predict", "--model", str(model), "--data", str(tmp_path / "X.npy"), "--out", str(tmp_path / "a")]) == 2
    assert "this model's rows had --offsets: give the new rows' with --offsets" in capsys.readouterr().err
    assert main(["predict", "--model", str(model), "--data", str(tmp_path / "X.npy"),
                 "--offsets", "log-total", "--out", str(tmp_path / "b")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "posterior_mean.npy"), np.load(out / "posterior_mean.npy"))
    np.save(tmp_path / "X50.npy", x[:50])  # 50 rows alone: their own mean total would shift every offset
    assert main(["predict", "--model", str(model), "--data", str(tmp_path / "X50.npy"), "--offsets", "log-total",
                 "--out", str(tmp_path / "c")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "c" / "posterior_mean.npy"), np.load(out / "posterior_mean.npy")[:50],
                               rtol=1e-5)


@pytest.mark.parametrize("method", ["em", "vae"])
def test_missing_entries_are_read_as_nan_and_imputed(problem_dir, tmp_path, method):
    # NaN marks a missing entry: the fit uses the observed ones, imputed.npy completes the data
    # with each missing entry's posterior predictive mean, and predict takes NaN too
    x = np.load(problem_dir / "X.npy")
    missing = np.random.default_rng(0).random(x.shape) < 0.2
    x[missing] = np.nan
    np.save(tmp_path / "X.npy", x)
    model, out = tmp_path / "model.pt", tmp_path / "fit"
    assert _fit(problem_dir, out, "--method", method, "--save", str(model)) == 0  # complete data: no imputed.npy
    assert not (out / "imputed.npy").exists()
    assert main(["fit", "--data", str(tmp_path / "X.npy"), "--forward", str(problem_dir / "A.npy"), "--noise-std",
                 "0.5", "--method", method, "--out", str(out), "--quiet", "--save", str(model)]) == 0
    imputed = np.load(out / "imputed.npy")
    np.testing.assert_array_equal(imputed[~missing], x[~missing])
    assert np.isfinite(imputed).all()
    assert main(["predict", "--model", str(model), "--data", str(tmp_path / "X.npy"), "--out", str(tmp_path / "p")]) == 0
    for name in ("posterior_mean", "imputed"):
        np.testing.assert_array_equal(np.load(tmp_path / "p" / f"{name}.npy"), np.load(out / f"{name}.npy"))


@pytest.mark.parametrize("hole, message", [("row", "row 3 of the data has no observed entry"),
                                           ("column", "column 2 of the data is never observed")])
def test_a_row_or_a_column_without_observations_is_refused(problem_dir, tmp_path, capsys, hole, message):
    x = np.load(problem_dir / "X.npy")
    if hole == "row":
        x[3] = np.nan
    else:
        x[:, 2] = np.nan
    np.save(tmp_path / "X.npy", x)
    assert main(["fit", "--data", str(tmp_path / "X.npy"), "--forward", str(problem_dir / "A.npy"), "--noise-std",
                 "0.5", "--out", str(tmp_path / "never")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "never").exists()


def test_naive_refuses_missing_entries_and_a_complete_data_model_refuses_them_in_predict(problem_dir, tmp_path, capsys):
    x = np.load(problem_dir / "X.npy")
    x[0, 0] = np.nan
    np.save(tmp_path / "X.npy", x)
    assert main(["fit", "--data", str(tmp_path / "X.npy"), "--forward", str(problem_dir / "A.npy"), "--noise-std",
                 "0.5", "--method", "naive", "--out", str(tmp_path / "never")]) == 2
    assert "needs every entry observed" in capsys.readouterr().err
    assert _fit(problem_dir, tmp_path / "fit", "--method", "em", "--save", str(tmp_path / "m.pt")) == 0
    assert main(["predict", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "X.npy"),
                 "--out", str(tmp_path / "never")]) == 2
    assert "which this model was not fitted with" in capsys.readouterr().err and not (tmp_path / "never").exists()


def test_a_csv_marks_missing_entries_by_an_empty_field_na_or_nan(tmp_path):
    from invae.app.io import load_array

    (tmp_path / "x.csv").write_text("a,b,c\n1,2,3\n4,,6\nNA,8,nan\n")
    np.testing.assert_array_equal(load_array(tmp_path / "x.csv"), [[1, 2, 3], [4, np.nan, 6], [np.nan, 8, np.nan]])


def test_stability_and_stars_give_each_edge_its_frequency(tmp_path):
    # a 12-variable chain seen through noise: StARS keeps the chain, every chain edge found by
    # every half of the rows (partial correlations ≈ 0.5, ~15 standard errors at n/2 = 1500)
    assert main(["simulate", "--p", "12", "--n", "3000", "--noise-std", "0.5", "--out", str(tmp_path / "pb")]) == 0
    out = tmp_path / "fit"
    assert main(["fit", "--data", str(tmp_path / "pb" / "X.npy"), "--noise-std", "0.5", "--method", "vae",
                 "--penalty", "stars", "--stability", "6", "--jobs", "2", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stability"] == {"subsamples": 6, "refits": "em"}
    assert summary["penalty"] == summary["stars"]["alpha"] and summary["stars"]["subsamples"] == 6
    truth = np.load(tmp_path / "pb" / "precision.npy")
    lines = (out / "edges.csv").read_text().splitlines()
    assert lines[0] == "a,b,precision,partial_correlation,stability"
    found = {(a, b): float(freq) for a, b, *_, freq in (line.split(",") for line in lines[1:])}
    for i, j in zip(*np.nonzero(np.triu(truth, k=1))):
        assert found[(f"z{i}", f"z{j}")] == 1.0
    assert main(["report", str(out)]) == 0
    assert (out / "stars.png").is_file()


def test_a_headerless_csv_whose_first_row_misses_an_entry_keeps_that_row(tmp_path):
    from invae.app.io import csv_header, load_array

    (tmp_path / "x.csv").write_text("1,NA,3\n4,5,6\n")
    np.testing.assert_array_equal(load_array(tmp_path / "x.csv"), [[1, np.nan, 3], [4, 5, 6]])
    assert csv_header(tmp_path / "x.csv") is None


def test_a_model_fitted_with_missing_entries_predicts_a_sensor_it_always_saw_missing(problem_dir, tmp_path):
    # the mask column of that sensor was constant (1) in the fit: its encoder input must stay finite
    x = np.load(problem_dir / "X.npy")
    x[np.random.default_rng(1).random(x.shape) < 0.2] = np.nan
    x[:, 0] = np.load(problem_dir / "X.npy")[:, 0]  # sensor 0 always seen in the fit
    np.save(tmp_path / "X.npy", x)
    assert main(["fit", "--data", str(tmp_path / "X.npy"), "--forward", str(problem_dir / "A.npy"), "--noise-std",
                 "0.5", "--method", "vae", "--out", str(tmp_path / "fit"), "--quiet", "--save",
                 str(tmp_path / "m.pt")]) == 0
    new = np.load(problem_dir / "X.npy")[:20]
    new[:, 0] = np.nan
    np.save(tmp_path / "new.npy", new)
    assert main(["predict", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "new.npy"),
                 "--out", str(tmp_path / "p")]) == 0
    mean = np.load(tmp_path / "p" / "posterior_mean.npy")
    fitted = np.load(tmp_path / "fit" / "posterior_mean.npy")
    assert np.isfinite(mean).all() and np.abs(mean).max() < 10 * np.abs(fitted).max()


def test_an_em_fit_reads_the_data_memory_mapped_and_writes_the_answers_of_the_in_memory_fit(problem_dir, tmp_path,
                                                                                           monkeypatch):
    from invae import EM, GaussianGraphicalModel, linear_gaussian
    from invae.model.rows import RowMoments

    seen = []
    original = RowMoments.of.__func__
    monkeypatch.setattr(RowMoments, "of", classmethod(lambda cls, rows, **options: seen.append(rows)
                                                      or original(cls, rows, **options)))
    assert _fit(problem_dir, tmp_path / "fit", "--method", "em", "--penalty", "0.05") == 0
    assert len(seen) == 1 and isinstance(seen[0], np.memmap)  # the file's pages, not a copy
    x, a = np.load(problem_dir / "X.npy"), np.load(problem_dir / "A.npy")
    in_memory = EM(GaussianGraphicalModel(dim=6, alpha=0.05), linear_gaussian(a, 0.5)).fit(x)
    np.testing.assert_allclose(np.load(tmp_path / "fit" / "precision.npy"), in_memory.precision_, atol=1e-12)
    mean, std = in_memory.posterior(x)
    np.testing.assert_allclose(np.load(tmp_path / "fit" / "posterior_mean.npy"), mean, atol=1e-12)
    np.testing.assert_allclose(np.load(tmp_path / "fit" / "posterior_std.npy"), std, atol=1e-12)
