"""Settings of ``invae fit``, one frozen dataclass shared by the config file, the CLI and Python.

A TOML config file holds the same names as the flags (``noise-std = 0.5`` or
``noise_std = 0.5``); flags given on the command line override it. Relative paths in
a config file are read relative to the file's folder.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..inference.families import parallel_methods
from ..inference.penalty import CRITERIA
from ..model.noise import NOISE_MODELS
from ..model.priors import PRIORS
from ..validation import check_noise_std, check_penalty
from .methods import methods, variational_names
from .plugins import FUNCTION_SPEC, register_drift
from .recipe import LOG_TOTAL

__all__ = ["FitSettings", "PRESETS", "LEARN"]

PRESETS = ("default", "paper")
#: ``--noise-std learn``: the Gaussian noise level is a parameter, fitted with the path prior's.
LEARN = "learn"
_DEFAULT_COMPONENTS = 2


@dataclass(frozen=True)
class FitSettings:
    """Everything ``invae fit`` needs; validated on creation."""

    data: Path
    noise_std: float | str | None = None
    noise_std_file: Path | None = None
    out: Path = Path("invae-out")
    forward: Path | None = None
    latent_dim: int | None = None
    names: Path | None = None
    noise: str = "gaussian"
    noise_df: float | None = None
    offsets: str | None = None
    prior: str = "ggm"
    times: Path | None = None
    substeps: int | None = None
    forecast: int | None = None
    components: int | None = None
    covariates: Path | None = None
    covariate_columns: tuple[str, ...] | None = None
    fit_mean: bool = False
    covariate_ridge: float = 0.0
    penalty: float | str = 0.0
    penalty_criterion: str = "held-out"
    stability: int = 0
    jobs: int = 1
    method: str | None = None
    preset: str = "default"
    seed: int = 0
    max_iter: int | None = None
    tol: float | None = None
    device: str = "cpu"
    quiet: bool = False
    progress: bool = False
    save: Path | None = None
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 50
    resume: bool = False
    allow_unidentified: bool = False
    workers: int = 1

    def __post_init__(self):
        for name in ("data", "out", "forward", "save", "checkpoint_dir", "noise_std_file", "covariates", "names",
                     "times"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if FUNCTION_SPEC.fullmatch(str(self.prior)):  # a user's drift module: a path prior from here on
            register_drift(self.prior)
        if self.method is None:  # a path prior's own method, else vae
            object.__setattr__(self, "method", "markov" if PRIORS[self.prior].paths else "vae")
        self._check_noise()
        self._check_prior()
        object.__setattr__(self, "penalty", check_penalty(self.penalty))
        self._check_paths()
        if self.penalty_criterion not in CRITERIA:
            raise ValueError(f"unknown penalty criterion {self.penalty_criterion!r}; "
                             f"choose one of {', '.join(CRITERIA)}")
        method = methods()[self.method]
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.max_iter is not None and not _positive_integer(self.max_iter):
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if self.checkpoint_dir is not None and not method.variational:
            raise ValueError(f"--checkpoint-dir applies to the variational methods ({variational_names()}), "
                             f"not to {self.method!r}")
        if self.checkpoint_dir is not None and self.penalty in ("auto", "stars"):
            raise ValueError(f"--checkpoint-dir does not combine with --penalty {self.penalty} (a path of fits); "
                             "choose α first, then checkpoint that fit")
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("--resume needs --checkpoint-dir, the folder of the checkpoint")
        if not _positive_integer(self.checkpoint_every):
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {self.checkpoint_every!r}")
        if self.quiet and self.progress:
            raise ValueError("quiet and progress contradict each other: choose one")
        if self.tol is not None and not self.tol > 0:
            raise ValueError(f"tol must be > 0, got {self.tol!r}")
        if not method.variational and not NOISE_MODELS[self.noise].exact:
            raise ValueError(f"--method {self.method} needs Gaussian noise (its exact formulas); "
                             f"for --noise {self.noise} use a variational method ({variational_names()})")
        if self.penalty in ("auto", "stars") and not PRIORS[self.prior].selects_penalty:
            choosers = ", ".join(name for name, kind in PRIORS.items() if kind.selects_penalty)
            raise ValueError(f"--penalty {self.penalty} chooses α for the {choosers} prior; "
                             f"give --penalty α for a {self.prior}")
        if not (isinstance(self.stability, int) and self.stability >= 0):
            raise ValueError(f"--stability must be an integer >= 0 (subsamples), got {self.stability!r}")
        if not _positive_integer(self.jobs):
            raise ValueError(f"--jobs must be an integer >= 1 (processes), got {self.jobs!r}")
        self._check_workers()
        if self.stability and not PRIORS[self.prior].selects_penalty:
            graphs = ", ".join(name for name, kind in PRIORS.items() if kind.selects_penalty)
            raise ValueError(f"--stability gives the edges of a graph their frequencies: --prior {graphs}, "
                             f"not {self.prior}")

    def _check_workers(self) -> None:
        """``workers``: processes of one fit (:mod:`invae.inference.parallel`), a method whose family fits so."""
        if not _positive_integer(self.workers):
            raise ValueError(f"--workers must be an integer >= 1 (processes), got {self.workers!r}")
        if self.workers == 1:
            return
        able = parallel_methods()
        if self.method not in able or PRIORS[self.prior].paths:
            raise ValueError(f"--workers fits rows with --method {', '.join(able)}, not {self.method}"
                             + (f" with --prior {self.prior}" if PRIORS[self.prior].paths else ""))
        if self.penalty in ("auto", "stars") or self.stability:
            raise ValueError("--workers does not combine with --penalty auto/stars or --stability (paths of fits); "
                             "choose α first, then fit it with --workers")

    def _check_noise(self) -> None:
        """σ where the noise model has a scale (required), none where it has not; ν for student-t;
        offsets where it takes them."""
        noise = NOISE_MODELS[self.noise]
        if self.offsets is not None and not noise.offsets:
            takers = ", ".join(name for name, model in NOISE_MODELS.items() if model.offsets)
            raise ValueError(f"--offsets move the linear predictor of --noise {takers}, not of {self.noise}")
        if self.offsets is not None:
            object.__setattr__(self, "offsets", str(self.offsets))
        if self.noise_std_file is not None:
            if self.noise != "gaussian" or self.noise_std is not None:
                raise ValueError("--noise-std-file (one σ_i per row) is for gaussian noise, instead of --noise-std")
            if self.method == "em" and self.prior == "gmm":
                raise ValueError("em with --prior gmm takes one σ, not --noise-std-file: use a variational method")
        elif self.noise_std == LEARN:
            self._check_learned_noise()
        elif noise.scale:
            if self.noise_std is None:
                raise ValueError(f"--noise {self.noise} needs --noise-std σ, the known noise scale")
            object.__setattr__(self, "noise_std", check_noise_std(self.noise_std))
        elif self.noise_std is not None:
            raise ValueError(f"--noise {self.noise} has no scale: leave out --noise-std")
        if noise.default_df is not None:
            df = noise.default_df if self.noise_df is None else self.noise_df
            if not (isinstance(df, (int, float)) and 0 < df < float("inf")):
                raise ValueError(f"--noise-df must be a finite number > 0, got {df!r}")
            object.__setattr__(self, "noise_df", float(df))
        elif self.noise_df is not None:
            takers = ", ".join(name for name, model in NOISE_MODELS.items() if model.default_df is not None)
            raise ValueError(f"--noise-df is the degrees of freedom of --noise {takers}, not of {self.noise}")

    def _check_learned_noise(self) -> None:
        """``--noise-std learn``: a Gaussian noise level, under a path prior (docs/methods.md §3.12)."""
        if self.noise != "gaussian":
            raise ValueError(f"--noise-std learn fits the level σ of gaussian noise, not of --noise {self.noise}")
        if not PRIORS[self.prior].paths:
            paths = ", ".join(name for name, kind in PRIORS.items() if kind.paths)
            raise ValueError(f"--noise-std learn needs a path prior (--prior {paths}): under --prior {self.prior} "
                             "σ and the prior are not both identified (x = z + σε fixes only Λ⁻¹ + σ²I); "
                             "give the known σ")

    def _check_prior(self) -> None:
        """The prior family, K for a mixture, and a location and covariates where it takes them."""
        if self.covariate_columns is not None:
            if self.covariates is None:
                raise ValueError("--covariate-columns picks columns of --covariates FILE: give the file")
            object.__setattr__(self, "covariate_columns", tuple(self.covariate_columns))
        if self.covariates is not None and not PRIORS[self.prior].covariates:
            takers = ", ".join(name for name, kind in PRIORS.items() if kind.covariates)
            raise ValueError(f"--covariates move the prior's location: --prior {takers}, not {self.prior}")
        if not (isinstance(self.covariate_ridge, (int, float)) and 0 <= self.covariate_ridge < float("inf")):
            raise ValueError(f"--covariate-ridge must be a finite number >= 0, got {self.covariate_ridge!r}")
        if self.covariate_ridge != 0 and (self.covariates is None or not PRIORS[self.prior].location):
            takers = ", ".join(name for name, kind in PRIORS.items() if kind.location)
            raise ValueError(f"--covariate-ridge shrinks the effects of --covariates FILE under --prior {takers}")
        if self.fit_mean and not PRIORS[self.prior].location:
            takers = ", ".join(name for name, kind in PRIORS.items() if kind.location)
            raise ValueError(f"--fit-mean estimates a prior mean that is otherwise 0: --prior {takers}, not "
                             f"{self.prior} (whose means are always estimated)")
        if PRIORS[self.prior].components:
            k = _DEFAULT_COMPONENTS if self.components is None else self.components
            if not (isinstance(k, int) and k >= 1):
                raise ValueError(f"--components must be an integer >= 1, got {k!r}")
            object.__setattr__(self, "components", k)
        elif self.components is not None:
            takers = ", ".join(name for name, kind in PRIORS.items() if kind.components)
            raise ValueError(f"--components is the number of mixture components of --prior {takers}, "
                             f"not of {self.prior}")

    def _check_paths(self) -> None:
        """A path prior (docs/methods.md §3.16) with a path method (``markov`` unless told), its
        ``times`` and ``substeps``; neither for the other priors; the options a path fit lacks refused."""
        kind, method = PRIORS[self.prior], methods()[self.method]
        path_priors = ", ".join(name for name, entry in PRIORS.items() if entry.paths)
        path_methods = ", ".join(name for name, entry in methods().items() if entry.takes_paths)
        if kind.paths and not method.takes_paths:
            raise ValueError(f"--prior {self.prior} is a law over latent paths: choose --method {path_methods}, "
                             f"not {self.method}")
        if method.paths and not kind.paths:
            raise ValueError(f"--method {self.method} fits latent paths: it needs a path prior (--prior "
                             f"{path_priors}), not {self.prior}")
        if not kind.paths:
            for flag, value in (("--times", self.times), ("--substeps", self.substeps), ("--forecast", self.forecast)):
                if value is not None:
                    raise ValueError(f"{flag} belongs to the path priors (--prior {path_priors}), not to {self.prior}")
            return
        substeps = 1 if self.substeps is None else self.substeps
        if not _positive_integer(substeps):
            raise ValueError(f"--substeps must be an integer >= 1, got {substeps!r}")
        object.__setattr__(self, "substeps", substeps)
        if self.forecast is not None and not _positive_integer(self.forecast):
            raise ValueError(f"--forecast must be an integer >= 1, the times to forecast, got {self.forecast!r}")
        for flag, value in (("--noise-std-file", self.noise_std_file), ("--offsets", self.offsets)):
            if value is not None:
                raise ValueError(f"{flag} is not available with a path prior (--prior {self.prior}) yet")
        if self.penalty != 0:
            raise ValueError(f"--penalty is a graph's: a path prior (--prior {self.prior}) takes none")

    @property
    def checkpoint(self) -> dict | None:
        """``make_estimator``'s checkpoint options, or None."""
        if self.checkpoint_dir is None:
            return None
        return {"checkpoint_dir": self.checkpoint_dir, "checkpoint_every": self.checkpoint_every,
                "resume": self.resume}

    @property
    def verbosity(self) -> int:
        """The estimators' ``verbose``: 0 with ``quiet``, 2 with ``progress``, else 1 (on a terminal)."""
        return 0 if self.quiet else 2 if self.progress else 1

    @classmethod
    def from_sources(cls, config: str | Path | None, overrides: dict) -> FitSettings:
        """Settings from a TOML file (or none), then ``overrides`` (None values ignored)."""
        values = _read_config(config) if config is not None else {}
        values.update({key: value for key, value in overrides.items() if value is not None})
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.name not in values]
        if missing:
            flags = ", ".join("--" + name.replace("_", "-") for name in missing)
            raise ValueError(f"missing required setting(s): {flags} (a flag or a key of --config)")
        return cls(**values)

    def to_dict(self) -> dict:
        return {key: (str(value) if isinstance(value, Path) else value)
                for key, value in dataclasses.asdict(self).items()}


def _positive_integer(value) -> bool:
    """Whether ``value`` is an int ≥ 1 (not a bool, which is an int in Python)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _read_config(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"cannot read the config file {str(path)!r}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"the config file {str(path)!r} is not valid TOML: {error}") from None
    known = {f.name for f in dataclasses.fields(FitSettings)}
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) in {str(path)!r}: {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    for key in ("data", "forward", "out", "save", "checkpoint_dir", "noise_std_file", "covariates", "offsets", "names",
                "times"):
        if isinstance(values.get(key), str) and values[key] != LOG_TOTAL:  # relative to the config file
            values[key] = path.parent / values[key]
    return values

