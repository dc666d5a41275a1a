"""``invae simulate --sde``, ``invae fit --forecast``, the report's path figure and ``invae demo --sde``
(docs/methods.md §3.16, issue 21)."""

import json
import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from invae.app.cli import main
from invae.app.plotting import path_bands
from invae.app.report import write_report
from invae.evaluation.simulate import simulate_problem
from invae.paths.forecast import FORECAST_DRAWS, forecast_times, kalman_forecast
from invae.paths.sde import OrnsteinUhlenbeck

from .test_report import check_report

N, T, SIGMA = 30, 12, 0.3
OU = ["--parameter", "drift=0.5", "--parameter", "mean=1", "--parameter", "diffusion=0.5"]

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # short markov fits


@pytest.fixture
def problem(tmp_path):
    """``invae simulate --sde ou``'s folder: N OU series at T times seen through N(0, SIGMA²) noise."""
    assert main(["simulate", "--sde", "ou", "--n", str(N), "--T", str(T), "--noise-std", str(SIGMA), "--seed", "3",
                 *OU, "--out", str(tmp_path / "pb")]) == 0
    return tmp_path / "pb"


def _fail(argv, capsys, message):
    """``argv`` exits with status 2 (returned, or argparse's SystemExit) and one line of stderr holding ``message``."""
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_simulate_sde_writes_series_their_paths_and_times(problem, tmp_path):
    y, z, times = (np.load(problem / f"{name}.npy") for name in ("Y", "Z", "times"))
    assert y.shape == z.shape == (N, T, 1) and np.array_equal(times, np.arange(T))
    record = json.loads((problem / "problem.json").read_text())
    assert (record["sde"], record["noise_std"], record["seed"], record["n"], record["T"]) == ("ou", SIGMA, 3, N, T)
    assert record["parameters"] == pytest.approx({"drift": 0.5, "mean": 1.0, "diffusion": 0.5}, rel=1e-6)  # float32 θ
    # the noise's sd from N T = 360 residuals has a standard error of σ/√(2 · 360) = 0.037 σ: 4 of them
    assert abs(np.std(y - z) - SIGMA) < 4 * 0.037 * SIGMA
    # the paths' stationary sd s/√(2θ) = 0.5, from 360 strongly correlated values: only its scale
    assert 0.3 < np.std(z) < 0.8
    assert main(["simulate", "--sde", "ou", "--n", str(N), "--T", str(T), "--noise-std", str(SIGMA), "--seed", "3",
                 *OU, "--out", str(tmp_path / "again")]) == 0
    assert np.array_equal(np.load(tmp_path / "again" / "Y.npy"), y)  # same seed, same series


def test_simulate_sde_brownian_starts_at_zero_and_takes_times_from_a_file(tmp_path):
    times = np.array([0.0, 0.5, 2.0, 2.5, 4.0])
    np.save(tmp_path / "t.npy", times)
    assert main(["simulate", "--sde", "brownian", "--n", "4", "--times", str(tmp_path / "t.npy"), "--out",
                 str(tmp_path / "bm")]) == 0
    z, record = np.load(tmp_path / "bm" / "Z.npy"), json.loads((tmp_path / "bm" / "problem.json").read_text())
    assert np.array_equal(np.load(tmp_path / "bm" / "times.npy"), times) and z.shape == (4, 5, 1)
    assert np.all(z[:, 0] == 0) and record["start"] == [0.0]  # the diffuse start: no law to draw from
    assert main(["simulate", "--sde", "double-well", "--n", "3", "--T", "6", "--parameter", "theta2=2", "--out",
                 str(tmp_path / "dw")]) == 0
    assert json.loads((tmp_path / "dw" / "problem.json").read_text())["parameters"]["theta2"] == 2.0


def test_simulate_without_sde_is_the_ggm_problem_as_before(tmp_path):
    assert main(["simulate", "--p", "5", "--n", "50", "--out", str(tmp_path / "ggm")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "ggm" / "X.npy"), simulate_problem(p=5, n=50, seed=0).X)


@pytest.mark.parametrize("extra, message", [
    (["--sde", "ou", "--graph", "hub"], "--graph is an option of the GGM simulation, not of --sde"),
    (["--sde", "ou", "--p", "4"], "--p is an option of the GGM simulation"),
    (["--T", "5"], "--T is an option of a simulation of series (--sde)"),
    (["--substeps", "5"], "--substeps is an option of a simulation of series"),
    (["--sde", "ou", "--parameter", "foo=1"],
     "--sde ou has no parameter 'foo'; its parameters: drift, mean, diffusion"),
    (["--sde", "ou", "--parameter", "drift"], "argument --parameter: expected NAME=NUMBER, got 'drift'"),
    (["--sde", "ou", "--parameter", "drift=-1"], "has no stationary law"),
    (["--sde", "ou", "--T", "1"], "simulated series need T >= 2 times"),
    (["--sde", "ou", "--T", "5", "--times", "t.npy"],
     "give the number of times (--T) or the times (--times), not both"),
    (["--sde", "double-well", "--dim", "2"], "the double-well prior is one-dimensional"),
    (["--sde", "ou", "--noise-std", "0"], "the noise standard deviation must be a finite number > 0"),
])
def test_bad_simulate_input_is_one_line_status_2_and_writes_nothing(tmp_path, capsys, extra, message):
    np.save(tmp_path / "t.npy", np.arange(5.0))
    extra = [str(tmp_path / word) if word.endswith(".npy") else word for word in extra]
    _fail(["simulate", *extra, "--out", str(tmp_path / "never")], capsys, message)
    assert not (tmp_path / "never").exists()


def _fit(problem, out, *extra):
    return main(["fit", "--data", str(problem / "Y.npy"), "--times", str(problem / "times.npy"), "--prior", "ou",
                 "--noise-std", str(SIGMA), "--out", str(out), "--quiet", *extra])


def _forecast(out):
    return [np.load(out / f"{name}.npy") for name in ("forecast", "forecast_lower", "forecast_upper")]


def test_kalman_forecasts_reach_the_stationary_law_far_ahead(problem, tmp_path):
    # 30 steps ahead under θ̂ ≈ 0.5 the last state is forgotten (e^{−θ̂ 30} < 1e-5): every series'
    # forecast is the stationary law N(μ̂, s²/(2θ̂)), its 5% and 95% quantiles μ̂ ∓ 1.645 s/√(2θ̂)
    out = tmp_path / "fit"
    assert _fit(problem, out, "--method", "kalman", "--forecast", "30") == 0
    summary, theta = json.loads((out / "summary.json").read_text()), json.loads((out / "parameters.json").read_text())
    assert summary["forecast"]["times"] == list(range(T, T + 30))
    assert summary["forecast"]["files"] == ["forecast.npy", "forecast_lower.npy", "forecast_upper.npy"]
    assert summary["forecast"]["method"].startswith("exact")
    mean, lower, upper = _forecast(out)
    assert mean.shape == lower.shape == upper.shape == (N, 30, 1)
    assert np.exp(-theta["drift"] * 30) < 1e-5
    half = NormalDist().inv_cdf(0.95) * theta["diffusion"] / math.sqrt(2 * theta["drift"])
    np.testing.assert_allclose(mean[:, -1], theta["mean"], atol=1e-5 * half)
    np.testing.assert_allclose(upper[:, -1] - mean[:, -1], half, rtol=1e-5)
    np.testing.assert_allclose(mean[:, -1] - lower[:, -1], half, rtol=1e-5)
    assert (upper[:, 0] - lower[:, 0] < 2 * half).all()  # one step ahead the last state still narrows it


def test_markov_forecasts_the_exact_posterior_predictive_at_its_estimate(problem, tmp_path):
    # markov's forecast propagates draws of its reweighted posterior's last grid point; at its θ̂ the
    # exact forecast is the Kalman filter's. Its draws are resampled from FORECAST_DRAWS weighted ones,
    # whose effective number is about the summary's ESS (of 256 draws) × FORECAST_DRAWS / 256 (the
    # smallest, here 440): the mean's Monte Carlo error is sd/√ESS and a quantile's
    # √(0.05 · 0.95/ESS)/φ(1.645) sd. 4.5 of them bound 90 comparisons each (measured: at most 1.5).
    # A forecast from the wrong grid point (the first) fails, and an unseeded one is not the same twice.
    out = tmp_path / "fit"
    assert _fit(problem, out, "--max-iter", "3", "--forecast", "3") == 0
    summary, theta = json.loads((out / "summary.json").read_text()), json.loads((out / "parameters.json").read_text())
    assert summary["forecast"]["method"].startswith("Monte Carlo")
    sde = OrnsteinUhlenbeck(1, drift=theta["drift"], mean=theta["mean"], diffusion=theta["diffusion"]).double()
    times = torch.arange(float(T), dtype=torch.float64)
    exact = kalman_forecast(torch.as_tensor(np.load(problem / "Y.npy")), sde, times, torch.eye(1, dtype=torch.float64),
                            torch.tensor([SIGMA**2]), forecast_times(times, 3))
    sd = ((exact.upper - exact.mean) / NormalDist().inv_cdf(0.95)).numpy()
    ess = summary["importance_ess"]["min"] * FORECAST_DRAWS / summary["importance_ess"]["of"]
    quantile_se = math.sqrt(0.05 * 0.95 / ess) / (math.exp(-0.5 * 1.6448536**2) / math.sqrt(2 * math.pi))
    mean, lower, upper = _forecast(out)
    assert (np.abs(mean - exact.mean.numpy()) < 4.5 * sd / math.sqrt(ess)).all()
    assert (np.abs(lower - exact.lower.numpy()) < 4.5 * quantile_se * sd).all()
    assert (np.abs(upper - exact.upper.numpy()) < 4.5 * quantile_se * sd).all()
    assert _fit(problem, tmp_path / "again", "--max-iter", "3", "--forecast", "3") == 0
    assert np.array_equal(np.load(tmp_path / "again" / "forecast.npy"), mean)


@pytest.mark.parametrize("extra, message", [
    (["--prior", "ou", "--forecast", "0"], "--forecast must be an integer >= 1, the times to forecast, got 0"),
    (["--prior", "ou", "--forecast", "-2"], "--forecast must be an integer >= 1"),
    (["--prior", "ou", "--forecast", "2.5"], "argument --forecast: invalid int value: '2.5'"),
    (["--prior", "ggm", "--forecast", "3"], "--forecast belongs to the path priors (--prior ou, brownian"),
])
def test_bad_forecast_is_one_line_status_2_and_writes_nothing(problem, tmp_path, capsys, extra, message):
    _fail(["fit", "--data", str(problem / "Y.npy"), "--noise-std", "0.3", "--out", str(tmp_path / "never"), "--quiet",
           *extra], capsys, message)
    assert not (tmp_path / "never").exists() and not list(tmp_path.glob(".never.partial-*"))


def test_the_report_draws_the_paths_their_truth_observations_and_forecast(problem, tmp_path, capsys):
    out = tmp_path / "fit"
    assert _fit(problem, out, "--method", "kalman", "--forecast", "4") == 0
    assert main(["report", str(out), "--truth", str(problem / "Z.npy")]) == 0
    check_report(out, {"convergence", "paths"})
    page = (out / "report.html").read_text()
    assert "dots: the observations; black: the true path; orange: the forecast at 4 times ahead" in page
    # bad input: one line, status 2, and no figure rewritten
    (out / "paths.png").unlink()
    np.save(tmp_path / "short.npy", np.load(problem / "Z.npy")[:, :-1])
    _fail(["report", str(out), "--truth", str(tmp_path / "short.npy")], capsys,
          f"the true signals (--truth) have shape {(N, T - 1, 1)}; the posterior (posterior_mean.npy) has {(N, T, 1)}")
    _fail(["report", str(out), "--truth", str(tmp_path / "none.npy")], capsys, "cannot read the true signals (--truth)")
    np.save(out / "forecast_upper.npy", np.zeros((N, 3, 1)))
    _fail(["report", str(out)], capsys, "got forecast_upper.npy (30, 3, 1)")
    summary = json.loads((out / "summary.json").read_text())
    del summary["forecast"]
    (out / "summary.json").write_text(json.dumps(summary))
    _fail(["report", str(out)], capsys, "has forecast.npy but summary.json gives no forecast times")
    assert not (out / "paths.png").exists()


def test_truth_is_refused_for_a_demo_folder_and_a_folder_without_posterior(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="a demo's folder holds its own truth"):
        write_report(tmp_path, truth=tmp_path / "z.npy")
    (tmp_path / "summary.json").write_text(json.dumps({"settings": {"method": "em"}}))
    with pytest.raises(ValueError, match="which .* lacks"):
        write_report(tmp_path, truth=tmp_path / "z.npy")


def test_path_bands_draws_each_layer_and_the_forecast_from_the_last_posterior_on():
    rng = np.random.default_rng(0)
    times, mean, std = np.arange(5.0), rng.standard_normal((4, 5, 2)), np.full((4, 5, 2), 0.5)
    forecast = (np.array([5.0, 6.0]), *(rng.standard_normal((4, 2, 2)) for _ in range(3)))
    figure = path_bands(times, mean, std, observations=mean + 1, truth=mean - 1, forecast=forecast)
    assert len(figure.axes) == 3 * 2  # the first 3 series, both coordinates
    posterior, observed, true, ahead = figure.axes[3].lines  # series 1, coordinate 1
    np.testing.assert_array_equal(posterior.get_ydata(), mean[1, :, 1])
    np.testing.assert_array_equal(observed.get_ydata(), mean[1, :, 1] + 1)
    np.testing.assert_array_equal(true.get_ydata(), mean[1, :, 1] - 1)
    np.testing.assert_array_equal(ahead.get_xdata(), [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(ahead.get_ydata(), np.r_[mean[1, -1, 1], forecast[1][1, :, 1]])


def test_demo_sde_prints_theta_against_the_truth_and_writes_both_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--sde", "--n", "4", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    for word in ("drift", "mean", "diffusion", "markov", "kalman", "true", "log p(x) per series"):
        assert word in printed
    for method in ("markov", "kalman"):
        check_report(out / method, {"convergence", "paths"})
        assert np.load(out / method / "forecast.npy").shape == (4, 8, 1)
    assert json.loads((out / "problem" / "problem.json").read_text())["sde"] == "ou"


def test_demo_sde_refuses_the_ggm_options(tmp_path, capsys):
    _fail(["demo", "--sde", "--graph", "hub", "--out", str(tmp_path / "never")], capsys,
          "--graph is an option of the GGM demo, not of --sde")
    assert not (tmp_path / "never").exists()
