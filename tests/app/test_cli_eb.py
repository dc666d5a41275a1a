"""``invae eb``: the one-dimensional empirical-Bayes command."""

import json

import numpy as np
import pytest

from invae.app.cli import main
from invae.normal_means import fit_normal_means, simulate_normal_means


@pytest.fixture
def table(tmp_path):
    problem = simulate_normal_means("spike-slab", 600, "heteroscedastic", seed=5)
    group = np.where(np.arange(600) % 3 == 0, "north", "south")
    x = problem.x + 2.0 * (group == "north")
    path = tmp_path / "scores.csv"
    path.write_text("estimate,se,region\n" + "".join(f"{a:.17g},{b:.17g},{c}\n" for a, b, c in zip(x, problem.sigma, group)))
    return path, x, problem.sigma, group


def test_eb_writes_posteriors_prior_table_and_figure(table, tmp_path):
    path, x, sigma, group = table
    out = tmp_path / "eb"
    assert main(["eb", "--data", str(path), "--x", "estimate", "--sigma", "se", "--covariates", "region",
                 "--out", str(out), "--quiet"]) == 0
    expected = fit_normal_means(x, sigma, "npmle", covariates={"region": group})
    np.testing.assert_allclose(np.load(out / "posterior_mean.npy"), expected.mean)
    np.testing.assert_allclose(np.load(out / "posterior_std.npy"), expected.std)
    masses = np.load(out / "prior_masses.npy")
    assert masses.shape == np.load(out / "prior_atoms.npy").shape == (300,) and masses.sum() == pytest.approx(1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "npmle" and summary["n"] == 600 and summary["details"]["converged"]
    assert set(summary["coefficients"]) == {"intercept", "region=south"}
    rows = np.loadtxt(out / "posterior.csv", delimiter=",", skiprows=1)
    assert (out / "posterior.csv").read_text().splitlines()[0] == "x,sigma,posterior_mean,posterior_std,lfsr"
    np.testing.assert_allclose(rows[:, 0], x, rtol=1e-9)
    assert (out / "prior.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eb_takes_one_noise_level_and_columns_by_position(tmp_path):
    problem = simulate_normal_means("two-point", 300, seed=6)
    np.save(tmp_path / "x.npy", problem.x[:, None])
    out = tmp_path / "eb"
    assert main(["eb", "--data", str(tmp_path / "x.npy"), "--x", "0", "--noise-std", "1", "--method",
                 "rank-matching", "--grid-size", "50", "--out", str(out), "--quiet"]) == 0
    assert not (out / "posterior_std.npy").exists()  # rank matching is a point estimate
    assert np.load(out / "prior_atoms.npy").shape == (50,)
    assert set(np.unique(np.load(out / "posterior_mean.npy"))) <= set(np.load(out / "prior_atoms.npy"))


def test_eb_runs_the_vae_like_estimator(table, tmp_path, capsys):
    path, x, sigma, _ = table
    args = ["eb", "--data", str(path), "--x", "estimate", "--sigma", "se", "--method", "vae", "--components", "2"]
    assert main([*args, "--out", str(tmp_path / "v"), "--quiet"]) == 0
    expected = fit_normal_means(x, sigma, "vae", components=2, null=0.0)
    np.testing.assert_allclose(np.load(tmp_path / "v" / "posterior_mean.npy"), expected.mean)
    np.testing.assert_allclose(np.load(tmp_path / "v" / "lfdr.npy"), expected.lfdr)  # a null spike by default
    assert json.loads((tmp_path / "v" / "summary.json").read_text())["null"]["pi0"] == pytest.approx(
        expected.null.proportion)
    assert main([*args, "--max-iter", "1", "--out", str(tmp_path / "short"), "--quiet"]) == 0
    assert "warning: vae's EM stopped at max_iter=1" in capsys.readouterr().err  # said, not hidden


def test_eb_trains_the_vae_encoder_by_adam_on_request(table, tmp_path, capsys):
    assert main(["eb", "--data", str(table[0]), "--x", "estimate", "--sigma", "se", "--method", "vae", "--adam",
                 "--components", "2", "--max-iter", "3", "--out", str(tmp_path / "v"), "--quiet"]) == 0
    assert np.isfinite(np.load(tmp_path / "v" / "lfsr.npy")).all()
    assert not (tmp_path / "v" / "lfdr.npy").exists()  # no spike by Adam: no default null
    assert "warning: mixture fit stopped at max_iter=3" in capsys.readouterr().err
    assert json.loads((tmp_path / "v" / "summary.json").read_text())["details"]["closed_form"] is False


@pytest.mark.parametrize("extra, message", [
    ([], "--sigma COLUMN"),
    (["--sigma", "se", "--noise-std", "1"], "not both"),
    (["--sigma", "stderr"], "--sigma 'stderr' is not a column of the data; it has estimate, se, region"),
    (["--sigma", "region"], "holds text"),
    (["--sigma", "se", "--grid-size", "1"], "at least 2 atoms"),
    (["--sigma", "se", "--null", "zero"], "the null is a number, 'empirical' or 'none', got 'zero'"),
    (["--sigma", "se", "--null", "nan"], "outside the data's range"),
    (["--sigma", "se", "--null", "1e9"], "outside the data's range"),
    (["--sigma", "se", "--null", "empirical"], "needs one noise sd"),
    (["--sigma", "se", "--null", "0", "--covariates", "region"], "cannot be combined with covariates"),
    (["--sigma", "se", "--null", "0", "--method", "normal-ml"], "needs a prior with a point mass"),
    (["--sigma", "se", "--adam"], "--adam trains vae's encoder; --method npmle has none"),
    (["--sigma", "se", "--method", "vae", "--adam", "--null", "0"], "a null spike needs vae's closed-form fit"),
])
def test_eb_refuses_bad_requests_in_one_line(table, tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    assert main(["eb", "--data", str(table[0]), "--x", "estimate", *extra, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_eb_refuses_a_ragged_table(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("x,se\n1,1\n2\n")
    assert main(["eb", "--data", str(path), "--x", "x", "--sigma", "se", "--out", str(tmp_path / "o")]) == 2
    assert "line 3" in capsys.readouterr().err


def test_eb_speaks_like_fit_progress_flags_and_fit_seconds(tmp_path, capsys):
    table = tmp_path / "t.csv"
    np.savetxt(table, np.column_stack([np.random.default_rng(0).normal(size=50), np.ones(50)]), delimiter=",",
               header="x,s", comments="")
    args = ["eb", "--data", str(table), "--x", "x", "--sigma", "s"]
    assert main([*args, "--quiet", "--progress", "--out", str(tmp_path / "never")]) == 2
    assert "--quiet and --progress" in capsys.readouterr().err and not (tmp_path / "never").exists()
    assert main([*args, "--progress", "--out", str(tmp_path / "eb")]) == 0
    summary = json.loads((tmp_path / "eb" / "summary.json").read_text())
    assert summary["fit_seconds"] >= 0 and "seconds" not in summary


def test_eb_reports_lfdr_against_a_null_spike_by_default(table, tmp_path):
    path, x, sigma, _ = table
    out = tmp_path / "eb"
    assert main(["eb", "--data", str(path), "--x", "estimate", "--sigma", "se", "--method", "log-spline",
                 "--out", str(out), "--quiet"]) == 0
    expected = fit_normal_means(x, sigma, "log-spline", null=0.0)
    np.testing.assert_allclose(np.load(out / "lfdr.npy"), expected.lfdr)
    null = json.loads((out / "summary.json").read_text())["null"]
    assert null["kind"] == "theoretical" and null["delta0"] == 0 and null["sigma0"] == 1
    assert null["pi0"] == pytest.approx(expected.null.proportion)
    assert null["discoveries_lfdr_0.2"] == int((expected.lfdr <= 0.2).sum())
    assert (out / "posterior.csv").read_text().splitlines()[0].endswith(",lfsr,lfdr")
    assert (out / "two_groups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["eb", "--data", str(path), "--x", "estimate", "--sigma", "se", "--method", "log-spline",
                 "--null", "none", "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    assert not (tmp_path / "plain" / "lfdr.npy").exists()
    assert "null" not in json.loads((tmp_path / "plain" / "summary.json").read_text())


def test_eb_fits_an_empirical_null_to_z_values(tmp_path):
    problem = simulate_normal_means("two-groups", 2000, seed=1)
    np.savetxt(tmp_path / "z.csv", 0.2 + 1.3 * problem.x, header="z", comments="")
    out = tmp_path / "eb"
    assert main(["eb", "--data", str(tmp_path / "z.csv"), "--x", "z", "--noise-std", "1", "--null", "empirical",
                 "--out", str(out), "--quiet"]) == 0
    null = json.loads((out / "summary.json").read_text())["null"]
    assert null["kind"] == "empirical" and 0 < null["pi0"] <= 1 and 0 < null["pi0_central_matching"] <= 1
    # The null is N(0.2, 1.3²) by construction; central matching's sd over 30 seeds of this
    # problem is 0.08 for both δ̂₀ and σ̂₀: within 3 of it.
    assert abs(null["delta0"] - 0.2) < 0.24 and abs(null["sigma0"] - 1.3) < 0.24


def test_eb_sets_no_default_null_outside_the_data(tmp_path):
    # Scores around 70: 0 is no null for them, and the default --null leaves the fit alone.
    np.savetxt(tmp_path / "s.csv", 70 + np.random.default_rng(2).normal(0, 5, 300), header="s", comments="")
    out = tmp_path / "eb"
    assert main(["eb", "--data", str(tmp_path / "s.csv"), "--x", "s", "--noise-std", "2", "--method", "log-spline",
                 "--out", str(out), "--quiet"]) == 0
    assert not (out / "lfdr.npy").exists() and "null" not in json.loads((out / "summary.json").read_text())
