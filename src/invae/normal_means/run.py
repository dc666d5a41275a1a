"""``invae eb``: read a table, fit one normal-means method, return what the CLI writes."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

from .._version import __version__
from ..app.plotting import normal_means_prior_plot, two_groups_plot
from .estimate import NULL_METHODS, NormalMeansFit, fit_normal_means
from ..app.table import column, load_table

__all__ = ["run_eb"]


def run_eb(data: str, x: str, *, sigma: str | None = None, noise_std: float | None = None,
           covariates: list[str] | None = None, method: str = "npmle", grid_size: int = 300,
           null: str | None = None, components: int = 10, adam: bool = False, max_iter: int | None = None,
           seed: int = 0, device: str = "cpu", verbose: int = 0) -> tuple[dict[str, np.ndarray], dict, dict[str, bytes]]:
    """(arrays to write as .npy, the summary, other files: ``posterior.csv``, ``prior.png`` and,
    with lfdr, ``two_groups.png``).

    ``null``: "none", a number ν or "empirical" (``--null``); None: 0 for the methods with a
    null spike when there are no covariates and 0 lies inside the data, else none. ``adam``:
    vae by ``VariationalEB``'s encoder trained by Adam (on ``device``), not by EM."""
    if (sigma is None) == (noise_std is None):
        raise ValueError("give the noise as --sigma COLUMN (one σ_i per row) or --noise-std VALUE (one σ), not both")
    if adam and method != "vae":
        raise ValueError(f"--adam trains vae's encoder; --method {method} has none")
    table = load_table(data)
    values = column(table, x, "--x")
    if values.dtype.kind != "f":
        raise ValueError(f"--x {x!r} holds text, not numbers")
    noise = column(table, sigma, "--sigma") if sigma is not None else np.full(len(values), float(noise_std))
    if noise.dtype.kind != "f":
        raise ValueError(f"--sigma {sigma!r} holds text, not numbers")
    chosen = {key: column(table, key, "--covariates") for key in covariates or []}
    options = {}
    if method == "vae":
        options = {"components": components, **({} if max_iter is None else {"max_iter": max_iter}),
                   **({"closed_form": False, "device": device, "verbose": verbose} if adam else {})}
    spiked = method in NULL_METHODS and not adam
    fit = fit_normal_means(values, noise, method, covariates=chosen, grid=grid_size,
                           null=_null(null, spiked, chosen, values), seed=seed, **options)
    arrays = {"posterior_mean": fit.mean}
    arrays.update({f"posterior_{name}" if name == "std" else name: getattr(fit, name)
                   for name in ("std", "lfsr", "lfdr") if getattr(fit, name) is not None})
    if fit.prior is not None:
        arrays.update(prior_atoms=fit.prior.atoms, prior_masses=fit.prior.masses)
    summary = _summary(fit, data, x, sigma, noise_std, covariates, len(values))
    files = {"posterior.csv": _table(values, noise, arrays)}
    if fit.prior is not None:
        label = "data x − c'β̂ (density)" if chosen else "data x (density)"
        files["prior.png"] = _png(normal_means_prior_plot(values - fit.location, fit.prior, method, label))
    if fit.null is not None:
        files["two_groups.png"] = _png(two_groups_plot(values, fit.null.scale * noise, fit.prior, fit.null.value,
                                                       fit.lfdr, method))
    return arrays, summary, files


def _null(text: str | None, spiked: bool, covariates: dict, values: np.ndarray) -> str | float | None:
    """``--null`` as :func:`fit_normal_means` takes it: None (not given) is 0 for a fit with a
    null spike (``spiked``), without covariates, when 0 lies inside the data's range."""
    if text is None:
        return 0.0 if spiked and not covariates and values.min() < 0 < values.max() else None
    return None if text == "none" else text


def _summary(fit: NormalMeansFit, data, x, sigma, noise_std, covariates, n) -> dict:
    summary = {"invae_version": __version__, "command": "eb", "method": fit.method, "data": str(data), "x": x,
               "sigma": sigma, "noise_std": noise_std, "covariates": covariates or [], "n": n,
               "fit_seconds": fit.seconds, "details": fit.details}
    if fit.log_likelihood is not None:
        summary["log_likelihood"] = fit.log_likelihood
        summary["prior_mean"], summary["prior_sd"] = fit.prior.mean, fit.prior.variance ** 0.5
    if fit.coefficients is not None:
        summary["coefficients"] = fit.coefficients
    if fit.null is not None:  # x_i ~ N(delta0, (sigma0 σ_i)²) under the null, z_i = delta0 with weight pi0
        summary["null"] = {"kind": fit.null.kind, "delta0": fit.null.value, "sigma0": fit.null.scale,
                           "pi0": fit.null.proportion, "pi0_central_matching": fit.null.central_proportion,
                           "discoveries_lfdr_0.2": int((fit.lfdr <= 0.2).sum()),
                           "discoveries_lfdr_0.1": int((fit.lfdr <= 0.1).sum())}
    return summary


def _table(values, noise, arrays) -> bytes:
    names = ["x", "sigma"] + [name for name in ("posterior_mean", "posterior_std", "lfsr", "lfdr") if name in arrays]
    columns = np.column_stack([values, noise] + [arrays[name] for name in names[2:]])
    buffer = io.StringIO()
    np.savetxt(buffer, columns, delimiter=",", header=",".join(names), comments="", fmt="%.10g")
    return buffer.getvalue().encode()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
