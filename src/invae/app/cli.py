"""The ``invae`` command line: it only builds settings and calls the library.

Each subcommand is one entry of :data:`COMMANDS` (its options and the function it runs), so
a new command is a function plus one ``COMMANDS.register`` line. Errors the user can fix
print one line on stderr and exit with status 2.

Start-up is kept short: this module imports only light modules at the top (no numpy, no
torch), a command's functions import what they use (its choices' registries, torch,
matplotlib, …), and the parser holds the options of the command named on the command line
only; so ``invae --help`` imports none of them and ``invae eb`` no torch. ``--threads``
(demo, fit, predict, eb) is applied in :func:`main` before a command imports torch, which
reads ``OMP_NUM_THREADS`` once, at import (:mod:`invae.threads`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from ..inference.checkpoints import Checkpointer, FitInterrupted, ProcessLost
from ..registry import Registry
from ..threads import use_threads_in_this_process
from .processes import LAUNCHED, WorkersFailed, process_label

__all__ = ["main", "Command", "COMMANDS"]

_FIT_EXAMPLE = """example:
  invae simulate --p 20 --n 10000 --noise-std 0.5 --out problem
  invae fit --data problem/X.npy --forward problem/A.npy --noise-std 0.5 --penalty 0.02 --out fit
"""

_EB_EXAMPLE = """example:
  invae eb --data scores.csv --x estimate --sigma se --covariates group --method npmle --out eb
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2 (argparse's own status for usage errors)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _penalty(text: str) -> float | str:
    if text in ("auto", "stars"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, auto or stars, got {text!r}") from None


def _noise_std(text: str) -> float | str:
    if text == "learn":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or learn, got {text!r}") from None


def _threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="CPU threads of torch (default: $INVAE_NUM_THREADS, else 1, "
                        "the fastest for models of this size)")


@dataclass(frozen=True)
class Command:
    """One subcommand: its ``--help`` line and example, its options, and what it runs."""

    help: str
    example: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


#: ``invae demo``'s options of the GGM demo, refused with --sde. Their defaults (and --n's and
#: --noise-std's) are None, so that a given one shows; run_demo and run_path_demo hold the defaults.
_GGM_DEMO_OPTIONS = ("p", "graph", "forward", "penalty")


def _demo_options(demo: argparse.ArgumentParser) -> None:
    from ..evaluation.simulate import FORWARDS, GRAPHS

    demo.add_argument("--out", default="invae-demo", help="results folder (default: invae-demo)")
    demo.add_argument("--sde", action="store_true", help="the latent-path demo instead: Ornstein–Uhlenbeck series "
                      "seen through noise, fitted by markov and kalman, θ̂ against the truth, forecasts and the "
                      "report's path figure")
    demo.add_argument("--p", type=int, help="latent dimension (default: 20)")
    demo.add_argument("--n", type=int, help="observations (default: 10000); with --sde series (default: 20)")
    demo.add_argument("--graph", choices=GRAPHS, help="(default: chain)")
    demo.add_argument("--forward", choices=FORWARDS, help="(default: identity)")
    demo.add_argument("--noise-std", type=float, help="σ (default: 1.0; with --sde 0.3)")
    demo.add_argument("--penalty", type=float, help="graphical-lasso α (default: 0.02)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="cpu", help="torch device of every fit, e.g. cuda (default: cpu)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    _threads_option(demo)
    demo.add_argument("--progress", action="store_true",
                      help="progress bars even when stderr is not a terminal (e.g. a log file)")


#: ``invae simulate``'s options of the GGM problem and of series (--sde): each refused with the other.
#: Their defaults are None, so that a given one shows; the functions called hold the defaults.
_GGM_OPTIONS = ("p", "m", "graph", "forward", "condition_number")
_SERIES_OPTIONS = ("steps", "times", "dim", "substeps", "parameter")


def _simulate_options(sim: argparse.ArgumentParser) -> None:
    from ..evaluation.simulate import FORWARDS, GRAPHS

    sim.add_argument("--out", required=True, help="folder for X.npy, Z.npy, A.npy, precision.npy, problem.json "
                     "(with --sde: Y.npy, Z.npy, times.npy, problem.json)")
    sim.add_argument("--n", type=int, help="observations (default: 10000); with --sde series (default: 100)")
    sim.add_argument("--noise-std", type=float, default=1.0, help="σ (default: 1.0)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--p", type=int, help="latent dimension (default: 20)")
    sim.add_argument("--m", type=int, help="observed dimension (gaussian/compressive A)")
    sim.add_argument("--graph", choices=GRAPHS, help="(default: chain)")
    sim.add_argument("--forward", choices=FORWARDS, help="(default: identity)")
    sim.add_argument("--condition-number", type=float, help="(default: 10)")
    _series_options(sim)


def _series_options(sim: argparse.ArgumentParser) -> None:
    from ..model.priors import PRIORS

    sim.add_argument("--sde", choices=[name for name, kind in PRIORS.items() if kind.paths],
                     help="simulate series of this SDE seen through x = z + σε (A = I) instead of the GGM problem")
    sim.add_argument("--T", dest="steps", metavar="T", type=int,
                     help="with --sde: the times 0, 1, …, T − 1 (default: 50)")
    sim.add_argument("--times", help="with --sde: the times (T,), strictly increasing, as .npy/.csv (instead of --T)")
    sim.add_argument("--dim", type=int, help="with --sde: d, the path's dimension (default: 1)")
    sim.add_argument("--substeps", type=int, help="with --sde: Euler–Maruyama steps per interval (default: 10)")
    sim.add_argument("--parameter", action="append", type=_parameter, metavar="NAME=VALUE",
                     help="with --sde: a parameter of the SDE by its name in parameters.json, a number (a matrix's "
                          "number s means s I); repeat for several (default: the SDE's defaults)")


def _parameter(text: str) -> tuple[str, float]:
    """``NAME=NUMBER`` (``--parameter``) as (name, number)."""
    from .io import is_number

    name, _, value = text.partition("=")
    if not (name.strip() and is_number(value)):
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}")
    return name.strip(), float(value)


def _fit_options(fit: argparse.ArgumentParser) -> None:
    """The model (data, forward operator, noise, prior), then the method and the run. No
    defaults here (None): :class:`~invae.app.settings.FitSettings` holds them, below a config file."""
    from ..inference.penalty import CRITERIA
    from ..model.noise import NOISE_MODELS
    from ..model.priors import PRIORS

    fit.add_argument("--data", help="observations X (n, m): .npy or .csv, rows = observations; for a path prior "
                     "n series (n, T, m) as .npy, NaN where not observed, or a long .csv: series,time,<measurements>…")
    fit.add_argument("--forward", help="forward matrix A (m, p) as .npy/.csv (default: identity), or "
                     "FILE.py:FUNCTION, a torch function z (..., p) -> G(z) (..., m) of your own (it is run)")
    fit.add_argument("--latent-dim", type=int, help="p, the signal dimension, with a forward function")
    fit.add_argument("--names", help="a text file of the p variables' names (one per line, or comma-separated); "
                     "default: the header of a .csv --data without --forward, else z0 … z(p-1)")
    fit.add_argument("--noise", choices=NOISE_MODELS.names(), help="noise model: gaussian x = G(z) + σε, poisson "
                     "counts (log link), bernoulli (logistic), student-t x = G(z) + σ t_ν (default: gaussian)")
    fit.add_argument("--noise-std", type=_noise_std, help="known noise scale σ > 0 (gaussian, student-t); or "
                     "learn: σ of gaussian noise fitted with a path prior's θ (one per measurement)")
    fit.add_argument("--noise-std-file", help="known noise sds σ_i, one per row of --data (.npy/.csv), for "
                     "gaussian noise instead of --noise-std; the encoder sees each σ_i")
    fit.add_argument("--noise-df", type=float, help="ν, degrees of freedom of student-t noise (default: 4)")
    fit.add_argument("--offsets", help="known offsets o of poisson or bernoulli noise, η = o + G(z): a file "
                     "(.npy/.csv, one per row (n,) or per entry (n, m)), or log-total: log of each row's total "
                     "count over the mean total (sequencing depth)")
    fit.add_argument("--prior", metavar="{" + ",".join(PRIORS.names()) + ",FILE.py:CLASS}",
                     help="prior family: ggm N(0, Λ⁻¹) (N(μ + B c_i, Λ⁻¹) with "
                     "--fit-mean or --covariates), or gmm, a mixture of "
                     "--components Gaussians N(μ_k, Λ_k⁻¹) (N(μ_k + B_k c_i, Λ_k⁻¹) with --covariates); or a latent "
                     "path's SDE: ou dz = −Θ(z − μ)dt + S dW, brownian dz = S dW, double-well "
                     "dz = θ₁ z(θ₂ − z²)dt + s dW, or FILE.py:CLASS dz = f(z, t)dt + S dW with f the torch module CLASS(d) "
                     "(default: ggm)")
    fit.add_argument("--times", help="a path prior's observation times (T,), strictly increasing, as .npy/.csv "
                     "(default: 0, 1, …, T − 1), or one row per series (n, T): the series on the union of their times")
    fit.add_argument("--substeps", type=int, help="k: a path prior's latent grid cuts each interval between "
                     "observation times into k steps (default: 1)")
    fit.add_argument("--forecast", type=int, help="K: forecast a path prior's latent paths at K times after the last "
                     "observation time, spaced by the median step: forecast.npy (n, K, d), the posterior predictive "
                     "mean, and forecast_lower.npy / forecast_upper.npy, its 5%% and 95%% quantiles")
    fit.add_argument("--components", type=int, help="K, the number of components of --prior gmm (default: 2)")
    fit.add_argument("--covariates", help="known covariates c_i, one row per row of --data (.csv with a header of "
                     "names, or .npy): the prior becomes N(μ + B c_i, Λ⁻¹) with μ and B estimated (gmm: each "
                     "component's μ_k + B_k c_i); numeric columns enter linearly, text columns as one indicator per "
                     "label but the first")
    fit.add_argument("--covariate-columns", type=lambda text: [key for key in text.split(",") if key],
                     help="comma-separated columns of --covariates to use (names or 0-based positions; default: all)")
    fit.add_argument("--covariate-ridge", type=float, help="ρ: shrink the covariates' effects B by the ridge "
                     "(ρ/2) Σ_j b_jᵀ Λ b_j per sample, μ unpenalised (default: 0)")
    fit.add_argument("--fit-mean", action="store_const", const=True,
                     help="estimate the prior's mean μ, N(μ, Λ⁻¹) (implied by --covariates; default: μ = 0)")
    fit.add_argument("--penalty", type=_penalty,
                     help="graphical-lasso α, per-sample scale; or auto: chosen along a path by --penalty-criterion; "
                          "or stars: the densest graph that halves of the rows agree on (StARS) (default: 0)")
    fit.add_argument("--stability", type=int, help="B: refit on B random halves of the rows (em where exact, else "
                     "the method) and give each edge its selection frequency in edges.csv (default: 0, none; "
                     "20 with --penalty stars)")
    fit.add_argument("--jobs", type=int, help="processes that run the --stability or --penalty stars refits "
                     "side by side (default: 1)")
    fit.add_argument("--penalty-criterion", choices=CRITERIA,
                     help="how auto chooses: held-out likelihood (or ELBO), or ebic (default: held-out)")
    _fit_run_options(fit)


def _fit_run_options(fit: argparse.ArgumentParser) -> None:
    from .methods import methods
    from .settings import PRESETS

    fit.add_argument("--method", choices=methods().names(), help="estimator (default: vae; markov for a path prior, "
                     "or kalman, exact for ou and brownian with gaussian noise through a matrix)")
    fit.add_argument("--preset", choices=PRESETS,
                     help="optimiser settings of the variational methods: default (measured best) or paper")
    fit.add_argument("--seed", type=int)
    fit.add_argument("--max-iter", type=int)
    fit.add_argument("--tol", type=float, help="relative convergence margin (default: variational methods a "
                     "statistical rule, docs/methods.md §2.2; em 1e-9)")
    fit.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cpu)")
    fit.add_argument("--workers", type=int, help="K: fit over K processes on this machine, each on its share of "
                     "the rows (torch.distributed; vae, iaf, full-covariance, low-rank); the same fit as one process. "
                     "torchrun runs this command over several machines (docs/cli.md)")
    fit.add_argument("--out", help="results folder (default: invae-out)")
    fit.add_argument("--config", help="TOML file with the same settings; flags override it")
    fit.add_argument("--quiet", action="store_const", const=True, help="no progress bar")
    _threads_option(fit)
    fit.add_argument("--progress", action="store_const", const=True,
                     help="a progress bar even when stderr is not a terminal (e.g. a log file)")
    fit.add_argument("--save", help="also write the fitted model to this file (for invae predict)")
    fit.add_argument("--checkpoint-dir", help="write the training state here every --checkpoint-every "
                     "iterations and on Ctrl-C / SIGTERM (variational methods)")
    fit.add_argument("--checkpoint-every", type=int, help="outer iterations between checkpoints (default: 50)")
    fit.add_argument("--resume", action="store_const", const=True,
                     help="continue the fit saved in --checkpoint-dir (same data and settings)")
    fit.add_argument("--allow-unidentified", action="store_const", const=True,
                     help="run vae or mean-field with a forward matrix of rank < p, which they cannot "
                          "identify (refused otherwise); summary.json then carries the warning")


def _predict_options(predict: argparse.ArgumentParser) -> None:
    predict.add_argument("--model", required=True, help="a file written by invae fit --save")
    predict.add_argument("--data", required=True, help="new observations X (n, m): .npy or .csv")
    predict.add_argument("--out", default="invae-predict", help="results folder (default: invae-predict)")
    predict.add_argument("--noise-std-file", help="the new rows' known noise sds σ_i (.npy/.csv), for a model "
                         "fitted with --noise-std-file")
    predict.add_argument("--covariates", help="the new rows' covariates (.csv/.npy), for a model fitted with "
                         "--covariates: the same columns")
    predict.add_argument("--offsets", help="the new rows' offsets (.npy/.csv, or log-total: by the fit's mean "
                         "total), for a model fitted with --offsets")
    predict.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    _threads_option(predict)


def _eb_options(eb: argparse.ArgumentParser) -> None:
    from ..normal_means import NORMAL_MEANS_METHODS

    eb.add_argument("--data", required=True, help="a table: .csv (a header row of names, or none) or .npy (n, k)")
    eb.add_argument("--x", required=True, help="the column of observations x_i (a name or a 0-based position)")
    eb.add_argument("--sigma", help="the column of known noise sds σ_i (one per row)")
    eb.add_argument("--noise-std", type=float, help="one known noise sd σ for every row (instead of --sigma)")
    eb.add_argument("--covariates", type=lambda text: [key for key in text.split(",") if key],
                    help="comma-separated columns on which the prior's location depends: numbers enter "
                         "linearly, text columns are group labels")
    eb.add_argument("--method", choices=NORMAL_MEANS_METHODS, default="npmle",
                    help="npmle: Kiefer-Wolfowitz NPMLE; log-spline: Efron's g-model; james-stein / normal-ml: "
                         "a normal prior; rank-matching: the source's order statistics on the NPMLE; vae: the "
                         "VAE-like estimator (a Gaussian-mixture prior); naive: z = x (default: npmle)")
    eb.add_argument("--null", help="the null of the local false discovery rates: a value ν (a point mass at "
                    "ν with its own weight π₀ in the prior), 'empirical' (Efron's central matching on z-values: "
                    "N(δ₀, σ₀²)) or 'none' (default: 0 for npmle, log-spline and vae (not with --adam) without "
                    "covariates, else none)")
    eb.add_argument("--grid-size", type=int, default=300, help="atoms of the prior's grid (default: 300)")
    eb.add_argument("--components", type=int, default=10, help="mixture components of the vae prior, the null's "
                    "spike apart (default: 10)")
    eb.add_argument("--adam", action="store_true",
                    help="vae: train VariationalEB's amortized mixture encoder by Adam, instead of setting q to "
                         "the exact posterior at each iteration (EM); slower, and no null spike")
    eb.add_argument("--max-iter", type=int, help="iterations of vae (default: 10000 EM cycles; 2000 outer "
                    "iterations with --adam)")
    eb.add_argument("--seed", type=int, default=0)
    eb.add_argument("--device", default="cpu", help="torch device of vae with --adam, e.g. cuda (default: cpu)")
    eb.add_argument("--out", default="invae-eb", help="results folder (default: invae-eb)")
    eb.add_argument("--quiet", action="store_true", help="no progress bar")
    _threads_option(eb)
    eb.add_argument("--progress", action="store_true",
                    help="a progress bar even when stderr is not a terminal (e.g. a log file)")


def _report_options(report: argparse.ArgumentParser) -> None:
    report.add_argument("folder", help="a folder written by invae demo, invae fit or invae predict")
    report.add_argument("--truth", help="the true signals of a fit or predict folder (.npy/.csv), the shape of its "
                        "posterior_mean.npy (for a path prior (n, T, d), e.g. Z.npy of invae simulate --sde), drawn "
                        "against the posterior")


def _build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command in :data:`COMMANDS`, holding the options of the command
    ``chosen`` only (None: of none): the only ones that parsing its arguments reads."""
    parser = _Parser(prog="invae", description="Statistical inverse problems by amortized variational "
                     "empirical Bayes, with exact references.", epilog=_FIT_EXAMPLE,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, epilog=command.example,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == chosen:
            command.add_options(sub)
    return parser


def _fit(args: argparse.Namespace) -> None:
    from . import processes
    from .pipeline import fit_problem, load_problem
    from .settings import FitSettings

    overrides = {key: value for key, value in vars(args).items()
                 if key not in ("command", "config", "threads", "argv")}
    if processes.world_size() > 1:  # under torchrun: as many workers as it started
        overrides["workers"] = processes.world_size()
    settings = FitSettings.from_sources(args.config, overrides)
    if settings.workers > 1 and processes.world_size() == 1:  # start them, each running this command
        load_problem(settings)  # bad data: one error here, not one per process
        checkpoint = Checkpointer(settings.checkpoint_dir).path if settings.checkpoint_dir else None
        return processes.launch(settings.workers, args.argv, checkpoint)
    with processes.joined(settings.device) as rank:
        if rank > 0:  # fits its rows, silently; rank 0 answers, warns and writes
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit_problem(dataclasses.replace(settings, quiet=True, progress=False))
            return None
        return _fit_and_write(settings)


def _fit_and_write(settings) -> None:
    from .io import StagedResults
    from .persistence import save_model
    from .pipeline import run_fit
    from .recipe import RowRecipe

    with StagedResults(settings.out) as staged:
        estimator, arrays, summary, files = run_fit(settings, staged)
        folder = staged.commit(arrays, summary, files)
    if settings.save is not None:
        shape = (summary["n"], summary["T"], summary["m"]) if "T" in summary else (summary["n"], summary["m"])
        save_model(estimator, settings.save, settings=settings.to_dict(), data_shape=shape,
                   recipe=RowRecipe.from_record(summary["row_recipe"]))
    if not settings.quiet:
        chosen = f"α = {summary['penalty']:.4g} (chosen), " if settings.penalty in ("auto", "stars") else ""
        evidence = (f"log p(x)/n = {summary['log_likelihood_per_obs']:.4f}" if "log_likelihood_per_obs" in summary
                    else f"ELBO/n = {summary['elbo_per_obs']:.4f}")
        edges = f"{summary['edges']} edges, " if "edges" in summary else ""
        print(f"{settings.method}: {chosen}{summary['n_iter']} iteration(s), {edges}{evidence}; results in {folder}/")


def _simulate(args: argparse.Namespace) -> None:
    from ..evaluation.simulate import simulate_problem

    if args.sde is not None:
        return _simulate_series(args)
    _refuse(args, _SERIES_OPTIONS, "a simulation of series (--sde)")
    problem = simulate_problem(**_given(args, ("n", "noise_std", "seed", *_GGM_OPTIONS)))
    problem.save(args.out)
    print(f"wrote {args.out}/ (X.npy {problem.X.shape}, A.npy {problem.A.shape}, Z.npy, precision.npy, "
          "problem.json)")


def _simulate_series(args: argparse.Namespace) -> None:
    from .series import read_times
    from .simulated_series import simulate_series

    _refuse(args, _GGM_OPTIONS, "the GGM simulation, not of --sde")
    times = None if args.times is None else read_times(args.times)
    problem = simulate_series(args.sde, times=times, parameters=dict(args.parameter or []),
                              **_given(args, ("n", "steps", "dim", "noise_std", "seed", "substeps")))
    problem.save(args.out)
    print(f"wrote {args.out}/ (Y.npy {problem.x.shape}, Z.npy, times.npy, problem.json)")


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The options ``names`` that were given (not None), by name: the called function's defaults hold for the rest."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _refuse(args: argparse.Namespace, names: tuple[str, ...], owner: str) -> None:
    """A ``ValueError`` for the first option of ``names`` that was given: it belongs to ``owner``."""
    for name in _given(args, names):
        flag = "--T" if name == "steps" else "--" + name.replace("_", "-")
        raise ValueError(f"{flag} is an option of {owner}")


def _predict(args: argparse.Namespace) -> None:
    from .io import write_results
    from .pipeline import run_predict
    from .recipe import RowSources

    sources = RowSources(offsets=args.offsets, noise_std_file=args.noise_std_file, covariates=args.covariates)
    arrays, summary = run_predict(args.model, args.data, sources, device=args.device)
    folder = write_results(args.out, arrays, summary)
    print(f"{summary['method']}: posterior of {summary['n']} observation(s); results in {folder}/")


def _eb(args: argparse.Namespace) -> None:
    from ..normal_means.run import run_eb
    from .io import write_results

    arrays, summary, files = run_eb(args.data, args.x, sigma=args.sigma, noise_std=args.noise_std,
                                    covariates=args.covariates, method=args.method, grid_size=args.grid_size,
                                    null=args.null, components=args.components, adam=args.adam,
                                    max_iter=args.max_iter, seed=args.seed,
                                    device=args.device, verbose=_verbosity(args))
    folder = write_results(args.out, arrays, summary, files)
    if not args.quiet:
        evidence = f", log-likelihood {summary['log_likelihood']:.2f}" if "log_likelihood" in summary else ""
        print(f"{args.method}: {summary['n']} observation(s) in {summary['fit_seconds']:.2f} s{evidence}; "
              f"results in {folder}/ ({', '.join(files)})")


def _report(args: argparse.Namespace) -> None:
    from .report import write_report

    print(f"report: {write_report(args.folder, truth=args.truth)}")


def _verbosity(args: argparse.Namespace) -> int:
    """The progress bars' ``verbose``: 0 with --quiet, 2 with --progress, else 1 (on a terminal)."""
    if args.quiet and args.progress:
        raise ValueError("--quiet and --progress contradict each other: choose one")
    return 0 if args.quiet else 2 if args.progress else 1


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo, run_path_demo

    common = {"seed": args.seed, "device": args.device, "verbose": _verbosity(args), **_given(args, ("n", "noise_std"))}
    if args.sde:
        _refuse(args, _GGM_DEMO_OPTIONS, "the GGM demo, not of --sde")
        run_path_demo(args.out, **common)
    else:
        run_demo(args.out, **common, **_given(args, _GGM_DEMO_OPTIONS))


COMMANDS: Registry[Command] = Registry("command")
COMMANDS.register("demo", Command("simulate the GGM problem (or with --sde latent paths), fit every method, print "
                                  "the table", "example:\n  invae demo --noise-std 0.5 --out invae-demo\n"
                                  "  invae demo --sde --out invae-demo-paths\n", _demo_options, _demo))
COMMANDS.register("simulate", Command(
    "write a simulated problem to a folder",
    "example:\n  invae simulate --p 20 --n 10000 --graph hub --out problem\n"
    "  invae simulate --sde ou --n 100 --T 50 --parameter drift=0.5 --noise-std 0.3 --out paths\n"
    "  invae fit --data paths/Y.npy --times paths/times.npy --prior ou --noise-std 0.3 --forecast 10 --out fit\n",
    _simulate_options, _simulate))
COMMANDS.register("fit", Command("estimate the prior and the posteriors from data on disk", _FIT_EXAMPLE,
                                 _fit_options, _fit))
COMMANDS.register("predict", Command(
    "posterior means and sds of new observations from a saved model",
    "example:\n  invae fit --data X.npy --noise-std 0.5 --save model.pt --out fit\n"
    "  invae predict --model model.pt --data X_new.npy --out new\n", _predict_options, _predict))
COMMANDS.register("eb", Command("one-dimensional empirical Bayes (normal means): x_i ~ N(z_i, σ_i²), "
                                "estimate the prior of z and every z_i's posterior", _EB_EXAMPLE, _eb_options, _eb))
COMMANDS.register("report", Command(
    "draw the figures and report.html of a results folder",
    "example:\n  invae report invae-demo    # then open invae-demo/report.html\n", _report_options, _report))


def _threads_flag(argv: list[str]) -> int | None:
    """``--threads N`` from the command line, read before the full parser is built (None if absent)."""
    early = _Parser(prog="invae", add_help=False)
    early.add_argument("--threads")
    text = early.parse_known_args(argv)[0].threads
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--threads must be an integer >= 1, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    prefix = (f"invae {argv[0]}" if argv else "invae") + process_label()
    try:  # before a command's options import numpy or torch, which read the thread counts once
        use_threads_in_this_process(_threads_flag(argv))
    except ValueError as error:
        print(f"{prefix}: error: {error}", file=sys.stderr)
        return 2
    args = _build_parser(argv[0] if argv else None).parse_args(argv)  # the top level takes no options
    args.argv = argv  # what --workers runs again in each process
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, *_: print(f"{prefix}: warning: {message}", file=sys.stderr)
        try:
            COMMANDS[args.command].run(args)
        except ValueError as error:
            print(f"{prefix}: error: {error}", file=sys.stderr)
            return 2
        except ProcessLost as error:  # a --workers parent reports it (WorkersFailed)
            if LAUNCHED not in os.environ:
                print(f"{prefix}: error: {error}", file=sys.stderr)
            return 1
        except WorkersFailed as failed:
            if failed.message is not None:
                print(f"{prefix}: error: {failed.message}", file=sys.stderr)
            return failed.exit_code
        except FitInterrupted as interrupted:
            if not (LAUNCHED in os.environ and process_label()):  # rank 0 of --workers says it for all
                print(f"{prefix}: {interrupted}; nothing else was written", file=sys.stderr)
            return 128 + interrupted.signal_number
        except FloatingPointError as error:  # the fit itself broke down (e.g. Λ diverging when m < p)
            print(f"{prefix}: error: the fit failed numerically: {error}. A richer posterior "
                  "(--method iaf or full-covariance) or a larger --penalty may help; nothing was written",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
