"""A results folder's figures and one self-contained HTML report (``invae report DIR``).

Works on the folders ``invae demo`` writes (the truth is known: Λ_true beside each Λ̂,
signals against the true z, convergence curves), those ``invae fit`` writes (Λ̂ and its
network, the posterior bands, the penalty path where ``--penalty auto`` chose α) and those
``invae predict`` writes (the posterior bands; not yet for a path prior's series). The figures
are saved as PNG files beside the results and embedded in ``report.html``, which needs no other
file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..evaluation.tables import COLUMNS, format_cell
from .plotting import (convergence_curves, network_plot, penalty_path_plot, precision_heatmaps, signal_bands,
                       stars_plot)

__all__ = ["write_report", "REPORT_NAME"]

REPORT_NAME = "report.html"
#: Methods whose posterior bands the demo's signal figure shows, when they were fitted.
BAND_METHODS = ("em", "vae", "iaf")


def write_report(folder: str | Path) -> Path:
    """Render the figures of a results folder and write ``report.html`` there; return its path."""
    folder = Path(folder)
    summary_file = folder / "summary.json"
    if not summary_file.is_file():
        raise ValueError(f"{str(folder)!r} is not an invae results folder: it has no summary.json")
    summary = json.loads(summary_file.read_text())
    demo = "rows" in summary
    figures = _demo_figures(folder, summary) if demo else _fit_figures(folder, summary)
    sections = []
    for name, (figure, caption) in figures.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        (folder / f"{name}.png").write_bytes(buffer.getvalue())
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        sections.append(f'<figure id="{name}"><img src="data:image/png;base64,{encoded}" alt="{html.escape(caption)}" '
                        f'data-file="{name}.png"><figcaption>{html.escape(caption)}</figcaption></figure>')
    table = _demo_table(summary["rows"]) if demo else _fit_table(summary)
    title = "invae demo" if demo else f"invae {'fit' if 'settings' in summary else 'predict'} ({_method(summary)})"
    page = _PAGE.format(title=html.escape(title), settings=html.escape(json.dumps(_settings(summary))),
                        table=table, figures="\n".join(sections))
    out = folder / REPORT_NAME
    out.write_text(page, encoding="utf-8")
    return out


def _demo_figures(folder: Path, summary: dict) -> dict[str, tuple[Figure, str]]:
    methods = [row["method"] for row in summary["rows"] if (folder / f"precision_{row['method']}.npy").is_file()]
    precisions = {"true Λ": np.load(folder / "precision_true.npy"),
                  **{m: np.load(folder / f"precision_{m}.npy") for m in methods}}
    figures = {"precision": (precision_heatmaps(precisions),
                             "The true precision matrix beside each estimate, on one colour scale.")}
    banded = [m for m in BAND_METHODS if (folder / f"posterior_mean_{m}.npy").is_file()]
    if banded and (folder / "signals_true.npy").is_file():
        means = {m: np.load(folder / f"posterior_mean_{m}.npy") for m in banded}
        stds = {m: np.load(folder / f"posterior_std_{m}.npy") for m in banded}
        figures["signals"] = (signal_bands(means, stds, np.load(folder / "signals_true.npy")),
                              "True signals (dots), posterior means and 90% credible bands, for three "
                              "coordinates of 60 observations sorted by their true value.")
    if summary.get("curves"):
        figures["convergence"] = (convergence_curves(summary["curves"]),
                                  "Convergence: exact log-likelihood of Λ̂ relative to the true Λ's, and "
                                  "the error of Λ̂, against the time each fit had run.")
    return figures


def _fit_figures(folder: Path, summary: dict) -> dict[str, tuple[Figure, str]]:
    method = _method(summary)
    figures = {}
    if (folder / "precision.npy").is_file():
        precision = np.load(folder / "precision.npy")
        figures["precision"] = (precision_heatmaps({f"Λ̂ ({method})": precision}),
                                "The estimated precision matrix (the graph: nonzero off-diagonal entries).")
        names = summary.get("variables") or [f"z{j}" for j in range(len(precision))]
        figures["network"] = (network_plot(precision, names),
                              "The estimated graph: an edge per nonzero Λ̂_ab, its width by the partial correlation "
                              "|ρ_ab| = |Λ̂_ab| / √(Λ̂_aa Λ̂_bb), blue where ρ_ab > 0 and red where ρ_ab < 0 "
                              "(edges.csv lists them).")
    mean, std = folder / "posterior_mean.npy", folder / "posterior_std.npy"
    if mean.is_file() and std.is_file() and "T" not in summary:  # paths (n, T, d): a figure of their own, later
        figures["signals"] = (signal_bands({method: np.load(mean)}, {method: np.load(std)}),
                              "Posterior means and 90% credible bands for three coordinates of the "
                              "first 60 observations, sorted by the posterior mean.")
    if summary.get("history"):
        history = summary["history"]
        figures["convergence"] = (convergence_curves({method: history}, (("objective", history["objective_name"]),)),
                                  "Convergence: the fit's objective against the time it had run.")
    if summary.get("stars"):
        figures["stars"] = (stars_plot(summary["stars"]),
                            "How --penalty stars chose α: the densest graph whose edges halves of the rows agree on "
                            "(instability below β).")
    if summary.get("penalty_path"):
        figures["penalty_path"] = (penalty_path_plot(summary["penalty_path"]),
                                   "How --penalty auto chose α: the held-out score and EBIC along the path.")
    return figures


def _demo_table(rows: list[dict]) -> str:
    head = "".join(f"<th>{html.escape(header)}</th>" for _, header, _ in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_cell(row.get(key), fmt))}</td>" for key, _, fmt in COLUMNS)
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fit_table(summary: dict) -> str:
    keys = ("n", "T", "m", "d", "p", "penalty", "n_iter", "converged", "edges", "log_likelihood_per_obs",
            "elbo_per_obs", "fit_seconds")
    body = "".join(f"<tr><th>{key}</th><td>{html.escape(str(summary[key]))}</td></tr>" for key in keys if key in summary)
    return f"<table><tbody>{body}</tbody></table>"


def _method(summary: dict) -> str:
    return summary["settings"]["method"] if "settings" in summary else summary["method"]


def _settings(summary: dict) -> dict:
    if "rows" in summary:
        return {"problem": summary.get("problem"), "penalty": summary.get("penalty")}
    return summary.get("settings") or {key: summary[key] for key in ("model", "data") if key in summary}


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ margin: 2em 0; }}
img {{ max-width: 100%; }}
code {{ font-size: 0.85em; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>Settings: <code>{settings}</code></p>
{table}
{figures}
</body>
</html>
"""
