"""Figures: precision heatmaps, the network, signals with credible bands, latent paths with their
bands and forecasts, convergence, the penalty path.

Each function takes plain arrays and returns a matplotlib ``Figure`` (drawn with the
non-interactive Agg canvas, so no display is needed); :mod:`invae.app.report` saves them.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from ..normal_means.grid import log_likelihood_matrix

__all__ = ["precision_heatmaps", "signal_bands", "path_bands", "convergence_curves", "penalty_path_plot",
           "normal_means_prior_plot", "two_groups_plot", "network_plot", "stars_plot"]

_Z90 = 1.6448536269514722  # the standard normal's 95% quantile: a central 90% band is mean ± _Z90·sd


def precision_heatmaps(precisions: dict[str, np.ndarray]) -> Figure:
    """One heatmap per (p, p) matrix, side by side, on one symmetric colour scale.

    The source's figure: the true Λ beside each estimate. The scale is shared and clipped
    at the largest off-diagonal magnitude, so the diagonal saturates and the graph shows.
    """
    names = list(precisions)
    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(3.2 * columns + 0.8, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    limit = max(np.abs(m - np.diag(np.diag(m))).max() for m in precisions.values()) or 1.0
    for ax, name in zip(axes.flat, names):
        image = ax.imshow(precisions[name], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(names):]:
        ax.set_axis_off()
    figure.colorbar(image, ax=axes, shrink=0.8, label="Λ_ij (clipped at the largest off-diagonal |Λ_ij|)")
    return figure


def signal_bands(means: dict[str, np.ndarray], stds: dict[str, np.ndarray], truth: np.ndarray | None = None,
                 coordinates: tuple[int, ...] = (0, 1, 2), n_rows: int = 60) -> Figure:
    """Posterior means with 90% credible bands (mean ± 1.645 sd) for a few coordinates.

    ``means`` and ``stds`` map a method to (n, p) arrays; ``truth`` (n, p), when known, is
    drawn as dots and orders the rows. One panel per (coordinate, method).
    """
    names = list(means)
    coordinates = tuple(j for j in coordinates if j < next(iter(means.values())).shape[1])
    figure = Figure(figsize=(3.6 * len(names), 2.4 * len(coordinates)), layout="constrained")
    axes = figure.subplots(len(coordinates), len(names), squeeze=False, sharey="row")
    for row, j in enumerate(coordinates):
        key = truth[:n_rows, j] if truth is not None else means[names[0]][:n_rows, j]
        order = np.argsort(key)
        position = np.arange(len(order))
        for column, name in enumerate(names):
            ax = axes[row, column]
            mean, std = means[name][:n_rows, j][order], stds[name][:n_rows, j][order]
            finite = np.isfinite(std)
            ax.fill_between(position[finite], (mean - _Z90 * std)[finite], (mean + _Z90 * std)[finite],
                            color="tab:blue", alpha=0.25, linewidth=0, label="90% band")
            ax.plot(position, mean, color="tab:blue", linewidth=1.2, label="posterior mean")
            if truth is not None:
                ax.plot(position, truth[:n_rows, j][order], ".", color="black", markersize=3, label="true z")
            ax.set_title(f"{name}: z_{j}", fontsize=9)
            if row == len(coordinates) - 1:
                ax.set_xlabel("observation (sorted by the true value)" if truth is not None else "observation")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    return figure


def path_bands(times: np.ndarray, mean: np.ndarray, std: np.ndarray, *, observations: np.ndarray | None = None,
               truth: np.ndarray | None = None, forecast: tuple[np.ndarray, ...] | None = None, n_series: int = 3,
               n_coordinates: int = 3) -> Figure:
    """Latent paths, one panel per (series, coordinate) of the first ``n_series`` series and
    ``n_coordinates`` coordinates: the posterior mean and its 90% band (mean ± 1.645 sd) from
    ``mean`` and ``std`` (n, T, d) at ``times`` (T,); when given, the ``observations`` (n, T, d) as
    dots (NaN: not observed), the true paths ``truth`` (n, T, d) as a black line, and the
    ``forecast`` = (times (K,), mean, lower, upper (n, K, d)) with its band, in orange."""
    shown = (min(n_series, len(mean)), min(n_coordinates, mean.shape[2]))
    figure = Figure(figsize=(4.4 * shown[1] + 0.6, 2.4 * shown[0] + 0.4), layout="constrained")
    axes = figure.subplots(*shown, squeeze=False, sharex=True)
    for (i, j), ax in np.ndenumerate(axes):
        centre, spread = mean[i, :, j], _Z90 * std[i, :, j]
        _band(ax, times, centre, centre - spread, centre + spread, "tab:blue", "posterior mean, 90% band")
        if observations is not None:
            ax.plot(times, observations[i, :, j], ".", color="0.35", markersize=4, label="observations")
        if truth is not None:
            ax.plot(times, truth[i, :, j], color="black", linewidth=1, label="true path")
        if forecast is not None:  # drawn from the last time's posterior on, where the forecast starts
            ahead, *values = forecast
            start = (centre[-1], centre[-1] - spread[-1], centre[-1] + spread[-1])
            _band(ax, np.r_[times[-1], ahead], *(np.r_[first, value[i, :, j]] for first, value in zip(start, values)),
                  "tab:orange", "forecast, 90% band")
        ax.set_title(f"series {i}: z_{j}", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("time")
    axes[0, 0].legend(fontsize=7, loc="best")
    return figure


def _band(ax, times: np.ndarray, centre: np.ndarray, lower: np.ndarray, upper: np.ndarray, colour: str,
          label: str) -> None:
    """The line ``centre`` (T,) at ``times`` (T,) in a band shaded from ``lower`` to ``upper`` (T,)."""
    ax.fill_between(times, lower, upper, color=colour, alpha=0.25, linewidth=0)
    ax.plot(times, centre, color=colour, linewidth=1.2, label=label)


#: The demo's panels: (key of a curve, y-axis label); the truth is known there.
DEMO_PANELS = (("log_lik_gap", "log p(x; Λ̂) − log p(x; Λ), per observation"),
               ("precision_error", "‖Λ̂ − Λ‖_F / ‖Λ‖_F"))


def convergence_curves(curves: dict[str, dict[str, list[float]]],
                       panels: tuple[tuple[str, str], ...] = DEMO_PANELS) -> Figure:
    """One panel per ``(key, label)`` of ``panels``: each method's ``curve[key]`` against
    ``curve["time"]`` (seconds since the fit began, log scale).

    ``curves[method]`` holds equal-length lists: ``time`` and one per panel key, e.g. the
    demo's ``log_lik_gap`` (mean log p(x; Λ̂_t) minus that at the true Λ) and
    ``precision_error`` (‖Λ̂_t − Λ‖_F / ‖Λ‖_F).
    """
    figure = Figure(figsize=(5 * len(panels), 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, label) in zip(axes, panels):
        for name, curve in curves.items():
            ax.plot(np.maximum(np.asarray(curve["time"]), 1e-3), curve[key], label=name, linewidth=1.2)
        ax.set_ylabel(label)
        ax.set_xscale("log")
        ax.set_xlabel("seconds")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    return figure


def penalty_path_plot(path: dict) -> Figure:
    """Held-out score and EBIC against α (log scale), the chosen α marked; ``path`` as in summary.json."""
    figure = Figure(figsize=(10, 3.4), layout="constrained")
    left, right = figure.subplots(1, 2)
    alphas = np.asarray(path["alphas"])
    scores = np.array([np.nan if s is None else s for s in path["score"]], dtype=float)
    for ax, values, label in ((left, scores, "held-out log p(x) per observation"),
                              (right, np.asarray(path["ebic"]), "EBIC")):
        ax.plot(alphas, values, "o-", linewidth=1.2)
        ax.axvline(path["alpha"], color="tab:red", linewidth=1, label=f"chosen α = {path['alpha']:.3g}")
        ax.set_xscale("log")
        ax.set_xlabel("α")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    return figure


def stars_plot(path: dict) -> Figure:
    """StARS: the graph's instability D(α) and its monotone envelope against α (log scale), β
    and the chosen α marked; ``path`` as in summary.json (:mod:`invae.inference.stability`)."""
    figure = Figure(figsize=(6, 3.4), layout="constrained")
    ax = figure.subplots()
    alphas = np.asarray(path["alphas"])
    ax.plot(alphas, path["instability"], "o-", linewidth=1.2, label="instability D(α)")
    ax.plot(alphas, path["envelope"], "--", linewidth=1.2, label="envelope max over larger α")
    ax.axhline(path["beta"], color="0.4", linewidth=1, label=f"β = {path['beta']:g}")
    ax.axvline(path["alpha"], color="tab:red", linewidth=1, label=f"chosen α = {path['alpha']:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("α")
    ax.set_ylabel(f"mean 2θ(1 − θ) over pairs, {path['subsamples']} halves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def normal_means_prior_plot(x: np.ndarray, prior, method: str, label: str = "data x (density)") -> Figure:
    """The estimated prior over a histogram of the data ``x`` (n,) (one-dimensional EB).

    ``prior`` is a grid prior (``atoms``, ``masses``). A prior with few atoms (an NPMLE) is
    drawn as stems of its masses on the right axis; a smooth one as the density
    mass/spacing on the histogram's axis. The data are the signals plus noise, so the
    histogram is wider than the prior: the gap is what deconvolution removed.
    """
    figure = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = figure.subplots()
    ax.hist(x, bins=min(100, max(10, len(x) // 20)), density=True, color="0.8", label=label)
    atoms, masses = prior.atoms, prior.masses
    if (masses > 1e-4).sum() <= 40:
        right = ax.twinx()
        shown = masses > 1e-4
        right.vlines(atoms[shown], 0, masses[shown], color="tab:red", linewidth=2)
        right.plot(atoms[shown], masses[shown], "o", color="tab:red", markersize=4, label=f"{method} prior (mass)")
        right.set_ylim(0, 1.05 * masses.max())
        right.set_ylabel("prior mass")
        right.legend(fontsize=8, loc="upper right")
    else:
        spacing = np.gradient(atoms)
        ax.plot(atoms, masses / spacing, color="tab:red", linewidth=1.5, label=f"{method} prior (density)")
    ax.set_xlabel("z (signal) / x (data)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, loc="upper left")
    return figure


def two_groups_plot(x: np.ndarray, sigma: np.ndarray, prior, null: float, lfdr: np.ndarray, method: str) -> Figure:
    """The two-groups fit over a histogram of ``x`` (n,): the null part π₀ φ_σ(t − ν), the
    non-null part Σ_{a_k ≠ ν} π_k φ_σ(t − a_k) and their sum f, and every row's lfdr (right axis).

    ``sigma`` (n,): the rows' noise sds under the null (the curves average over 50 of their
    quantiles, which is exact for one σ); ``prior``: the grid prior with its atom at ``null``.
    """
    figure = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = figure.subplots()
    ax.hist(x, bins=min(100, max(10, len(x) // 20)), density=True, color="0.8", label="data x (density)")
    t = np.linspace(x.min(), x.max(), 400)
    sds = np.quantile(sigma, np.linspace(0, 1, min(len(sigma), 50)))
    kernel = np.mean([np.exp(log_likelihood_matrix(t, np.full_like(t, sd), prior.atoms)) for sd in sds], axis=0)
    parts = kernel * prior.masses  # (T, K): each atom's share of f(t)
    at_null = prior.atoms == null
    proportion = prior.masses[at_null].sum()
    ax.plot(t, parts[:, at_null].sum(axis=1), color="tab:blue", label=f"null, π₀ = {proportion:.3f}")
    ax.plot(t, parts[:, ~at_null].sum(axis=1), color="tab:red", label="non-null")
    ax.plot(t, parts.sum(axis=1), color="black", linewidth=0.8, label="f = their sum")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, loc="upper left")
    right = ax.twinx()
    right.plot(x, lfdr, ".", color="tab:green", markersize=2, alpha=0.5)
    right.axhline(0.2, color="tab:green", linestyle=":", linewidth=1)
    right.set_ylim(0, 1.02)
    right.set_ylabel(f"lfdr ({method}; dotted: 0.2)", color="tab:green")
    return figure


def network_plot(precision: np.ndarray, names: list[str]) -> Figure:
    """The graph of a (p, p) precision matrix: nodes labelled with ``names``, an edge for each
    nonzero Λ_ab, its width by the partial correlation |ρ_ab| and its colour by ρ's sign.

    The layout is networkx's spring layout (Fruchterman–Reingold, seeded: the same figure every
    time) weighted by |ρ|, so strongly linked variables sit together.
    """
    import networkx as nx

    from .network import partial_correlations

    rho = partial_correlations(precision)
    graph = nx.Graph()
    graph.add_nodes_from(names)
    rows, cols = np.nonzero(np.triu(precision, k=1))
    graph.add_edges_from((names[i], names[j], {"weight": abs(rho[i, j]), "rho": rho[i, j]}) for i, j in zip(rows, cols))
    position = nx.spring_layout(graph, weight="weight", seed=0)
    size = min(12.0, 4.0 + 0.08 * len(names))
    figure = Figure(figsize=(size, size), layout="constrained")
    ax = figure.subplots()
    edges = list(graph.edges(data=True))
    nx.draw_networkx_edges(graph, position, ax=ax, edgelist=[(a, b) for a, b, _ in edges],
                           width=[0.5 + 6 * data["weight"] for *_, data in edges],
                           edge_color=["tab:blue" if data["rho"] > 0 else "tab:red" for *_, data in edges], alpha=0.8)
    nx.draw_networkx_nodes(graph, position, ax=ax, node_size=120, node_color="0.85", edgecolors="0.3")
    nx.draw_networkx_labels(graph, position, ax=ax, font_size=8 if len(names) <= 40 else 6)
    ax.set_title(f"{len(edges)} edges: width |partial correlation|, blue positive, red negative", fontsize=10)
    ax.set_axis_off()
    return figure
