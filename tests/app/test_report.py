import base64
import re

import pytest

from invae.app.cli import main
from invae.app.report import write_report

_FIGURE = re.compile(r'<figure id="([\w-]+)"><img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]*" '
                     r'data-file="([\w-]+\.png)">')


def check_report(folder, expected: set[str]) -> None:
    """report.html embeds exactly the figures ``expected``, each identical to its PNG file."""
    page = (folder / "report.html").read_text()
    found = {name: (data, file) for name, data, file in _FIGURE.findall(page)}
    assert set(found) == expected
    for name, (data, file) in found.items():
        assert file == f"{name}.png"
        assert base64.b64decode(data) == (folder / file).read_bytes()
        assert (folder / file).read_bytes().startswith(b"\x89PNG")


def test_demo_writes_table_results_figures_and_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--p", "5", "--n", "300", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    for method in ("oracle (true Λ)", "complete-data floor", "vae", "iaf", "full-covariance", "mean-field", "em",
                   "naive"):
        assert method in printed
    assert f"report: {out / 'report.html'}" in printed
    check_report(out, {"precision", "signals", "convergence"})
    page = (out / "report.html").read_text()
    assert "<table>" in page and "complete-data floor" in page


def test_report_command_rerenders_a_fit_folder(tmp_path, capsys):
    assert main(["simulate", "--p", "5", "--n", "200", "--out", str(tmp_path / "pb")]) == 0
    fit = tmp_path / "fit"
    assert main(["fit", "--data", str(tmp_path / "pb" / "X.npy"), "--noise-std", "1", "--method", "em",
                 "--penalty", "auto", "--out", str(fit), "--quiet"]) == 0
    assert main(["report", str(fit)]) == 0
    assert f"report: {fit / 'report.html'}" in capsys.readouterr().out
    check_report(fit, {"precision", "network", "signals", "penalty_path", "convergence"})


def test_report_of_a_folder_without_results_is_refused(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no summary.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match="summary.json"):
        write_report(tmp_path)


def test_the_network_figure_and_edges_csv_name_the_variables(tmp_path):
    # a chain a - b - c with the .csv header's names: two edges, strongest partial correlation first
    import numpy as np

    rng = np.random.default_rng(0)
    precision = np.array([[1.0, 0.45, 0.0], [0.45, 1.0, -0.2], [0.0, -0.2, 1.0]])
    z = rng.multivariate_normal(np.zeros(3), np.linalg.inv(precision), 4000)
    np.savetxt(tmp_path / "x.csv", z + 0.3 * rng.standard_normal(z.shape), delimiter=",", header="a,b,c",
               comments="")
    fit = tmp_path / "fit"
    assert main(["fit", "--data", str(tmp_path / "x.csv"), "--noise-std", "0.3", "--method", "em", "--penalty", "0.02",
                 "--out", str(fit), "--quiet"]) == 0
    lines = (fit / "edges.csv").read_text().splitlines()
    assert lines[0] == "a,b,precision,partial_correlation"
    assert [line.split(",")[:2] for line in lines[1:3]] == [["a", "b"], ["b", "c"]]
    # ρ_ab = −Λ_ab/√(Λ_aa Λ_bb) = −0.45 and ρ_bc = +0.2, each within 0.05: 4 standard errors
    # (1 − ρ²)/√n ≈ 0.013 at n = 4000, beside the lasso's shrinkage of order α = 0.02; a − c,
    # if kept, is weaker than both
    rho = [float(line.split(",")[3]) for line in lines[1:]]
    assert abs(rho[0] + 0.45) < 0.05 and abs(rho[1] - 0.2) < 0.05 and all(abs(r) < 0.05 for r in rho[2:])
    assert main(["report", str(fit)]) == 0
    check_report(fit, {"precision", "network", "signals", "convergence"})
