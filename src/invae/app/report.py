"""A results folder's figures and one self-contained HTML report (``invae report DIR``).

Works on the folders ``invae demo`` writes (the truth is known: Λ_true beside each Λ̂,
signals against the true z, convergence curves), those ``invae fit`` writes (Λ̂ and its
network, the posterior bands, the penalty path where ``--penalty auto`` chose α; for a path
prior the series' latent paths with their bands, the observations and the forecast) and those
``invae predict`` writes (the posterior bands). The true signals of a fit or predict folder, when
known, come from a file (``truth``). The figures are saved as PNG files beside the results and
embedded in ``report.html``, which needs no other file.
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
from .io import load_array
from .plotting import (convergence_curves, network_plot, path_bands, penalty_path_plot, precision_heatmaps,
                       signal_bands, stars_plot)

__all__ = ["write_report", "REPORT_NAME"]

REPORT_NAME = "report.html"
#: Methods whose posterior bands the demo's signal figure shows, when they were fitted.
BAND_METHODS = ("em", "vae", "iaf")


def write_report(folder: str | Path, truth: str | Path | None = None) -> Path:
    """Render the figures of a results folder and write ``report.html`` there; return its path.
    ``truth``: a file of the true signals, the shape of the folder's ``posterior_mean.npy``
    (a fit or predict folder; a demo's holds its own)."""
    folder = Path(folder)
    summary_file = folder / "summary.json"
    if not summary_file.is_file():
        raise ValueError(f"{str(folder)!r} is not an invae results folder: it has no summary.json")
    summary = json.loads(summary_file.read_text())
    demo = "rows" in summary
    if demo and truth is not None:
        raise ValueError("--truth is for a folder of invae fit or predict: a demo's folder holds its own truth")
    figures = _demo_figures(folder, summary) if demo else _fit_figures(folder, summary, truth)
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


def _fit_figures(folder: Path, summary: dict, truth: str | Path | None) -> dict[str, tuple[Figure, str]]:
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
    figures |= _posterior_figures(folder, summary, truth)
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


def _posterior_figures(folder: Path, summary: dict, truth: str | Path | None) -> dict[str, tuple[Figure, str]]:
    """The posterior bands: of a path prior's series (``paths``), else of the signals (``signals``),
    against the true signals in the file ``truth`` when given."""
    mean_file, std_file = folder / "posterior_mean.npy", folder / "posterior_std.npy"
    if not (mean_file.is_file() and std_file.is_file()):
        if truth is not None:
            raise ValueError(f"--truth is compared with the posterior (posterior_mean.npy), which {str(folder)!r} "
                             "lacks")
        return {}
    mean, std = np.load(mean_file), np.load(std_file)
    true = None if truth is None else _true_signals(truth, mean.shape)
    if "T" in summary:
        return {"paths": _path_figure(folder, summary, mean, std, true)}
    sorted_by = ("against the true signals (dots), sorted by them" if true is not None
                 else "sorted by the posterior mean")
    return {"signals": (signal_bands({_method(summary): mean}, {_method(summary): std}, true),
                        f"Posterior means and 90% credible bands for three coordinates of the first 60 observations, "
                        f"{sorted_by}.")}


def _true_signals(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """The true signals in the file ``path``, which must have the posterior's ``shape``."""
    truth = load_array(path, name="the true signals (--truth)")
    if truth.shape != shape:
        raise ValueError(f"the true signals (--truth) have shape {truth.shape}; the posterior (posterior_mean.npy) "
                         f"has {shape}")
    return truth


def _path_figure(folder: Path, summary: dict, mean: np.ndarray, std: np.ndarray, truth: np.ndarray | None
                 ) -> tuple[Figure, str]:
    """The first three series' latent paths (:func:`~invae.app.plotting.path_bands`): the posterior
    at the observation times, the observations where the fit read the paths themselves, the truth
    when given, and the forecast where the fit made one (``forecast.npy``)."""
    forecast, observations = _forecast(folder, summary, mean.shape), _observations(summary, mean.shape)
    figure = path_bands(np.asarray(summary["times"]), mean, std, observations=observations, truth=truth,
                        forecast=forecast)
    parts = ["The first series' latent paths: the posterior mean and its 90% band (mean ± 1.645 sd)"]
    if observations is not None:
        parts.append("dots: the observations")
    if truth is not None:
        parts.append("black: the true path")
    if forecast is not None:
        parts.append(f"orange: the forecast at {len(forecast[0])} times ahead, its mean and 5%–95% band")
    return figure, "; ".join(parts) + "."


def _forecast(folder: Path, summary: dict, shape: tuple[int, ...]) -> tuple[np.ndarray, ...] | None:
    """(times (K,), mean, lower, upper (n, K, d)) of a fit's ``--forecast``, checked; None without one."""
    if not (folder / "forecast.npy").is_file():
        return None
    times = summary.get("forecast", {}).get("times")
    if times is None:
        raise ValueError(f"{str(folder)!r} has forecast.npy but summary.json gives no forecast times")
    names, expected = ("forecast", "forecast_lower", "forecast_upper"), (shape[0], len(times), shape[2])
    arrays = [load_array(folder / f"{name}.npy", name=f"the forecast ({name}.npy)") for name in names]
    wrong = [f"{name}.npy {array.shape}" for name, array in zip(names, arrays) if array.shape != expected]
    if wrong:
        raise ValueError(f"the forecast of {str(folder)!r} must be (n, K, d) = {expected} (K: the forecast times "
                         f"in summary.json), got {', '.join(wrong)}")
    return (np.asarray(times), *arrays)


def _observations(summary: dict, shape: tuple[int, ...]) -> np.ndarray | None:
    """A fit's series (``--data``), where they are the paths seen through noise (no ``--forward``) and
    their file is still there with the posterior's ``shape`` (n, T, d); else None."""
    settings = summary.get("settings") or {}
    data = Path(settings["data"]) if settings.get("data") else None
    if data is None or settings.get("forward") is not None or data.suffix.lower() != ".npy" or not data.is_file():
        return None
    observations = load_array(data, name="the data (--data)")
    return observations if observations.shape == shape else None


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
