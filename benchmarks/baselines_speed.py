"""Baselines for ``benchmarks/bench_speed.py`` (issue #18, time to accuracy).

Two outside implementations, each timed by the wall clock and reporting its precision
estimate Λ̂ (p, p) through ``callback(step, elapsed_seconds, Lambda)`` every ``every`` steps,
so that the benchmark can record when an error target is first met:

- :func:`pyro_iaf_ggm`: the Gaussian graphical model ``z_i ~ N(0, Λ⁻¹)``,
  ``x_i = z_i + σ ε_i`` (A = I), fitted by Pyro's SVI with an amortised inverse
  autoregressive flow guide q(z | x) and Λ learned by gradient through its Cholesky factor.
- :func:`plnnetwork_fit`: pyPLNmodels' ``PlnNetwork`` (sparse Poisson log-normal network,
  Chiquet, Robin & Mariadassou) on counts ``x_ij ~ Poisson(exp(z_ij))``. It needs the
  benchmark-only environment of ``benchmarks/setup_bench_env.sh`` and is imported lazily.

Both use invae's per-sample penalty scale: α in ``(1/n) Σ_i log p(x_i; Λ) − (α/2) ‖Λ‖_{1,off}``
with ``‖Λ‖_{1,off} = Σ_{i≠j} |Λ_ij|`` (both triangles), i.e. ``n (α/2) ‖Λ‖_{1,off}`` against an
objective summed over the n rows.

A callback may return ``True`` to stop the fit early (the target is met). The time spent in
callbacks is not counted in ``elapsed_seconds`` nor in the returned seconds.

    .venv/bin/python benchmarks/baselines_speed.py pyro          # ~30 s smoke test
    benchmarks/.venv-bench/bin/python benchmarks/baselines_speed.py pln
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
import warnings
from typing import Callable, Optional

import numpy as np
import pyro
import pyro.distributions as dist
from pyro.distributions import ConditionalDistribution
from pyro.distributions.transforms import conditional_affine_autoregressive
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
import torch

Callback = Callable[[int, float, np.ndarray], Optional[bool]]


# --------------------------------------------------------------------------- timing


class _Clock:
    """Wall clock of a fit that excludes the time spent in callbacks."""

    def __init__(self):
        self.start = time.perf_counter()
        self.paused = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def report(self, callback: Optional[Callback], step: int, precision: Callable[[], np.ndarray]) -> bool:
        """Call ``callback(step, elapsed, Λ)`` off the clock; True if it asks to stop."""
        if callback is None:
            return False
        elapsed, t0 = self.elapsed(), time.perf_counter()
        stop = bool(callback(step, elapsed, precision()))
        self.paused += time.perf_counter() - t0
        return stop


# --------------------------------------------------------------------------- Pyro: GGM + IAF guide


def _cholesky_factor(raw: torch.Tensor) -> torch.Tensor:
    """L (p, p) lower-triangular with positive diagonal ``exp(diag raw)`` from raw (p, p)."""
    return torch.tril(raw, -1) + torch.diag_embed(torch.exp(torch.diagonal(raw)))


def _precision(raw: torch.Tensor) -> torch.Tensor:
    """Λ = L Lᵀ (p, p), symmetric positive-definite."""
    chol = _cholesky_factor(raw)
    return chol @ chol.mT


def _off_diagonal_l1(precision: torch.Tensor) -> torch.Tensor:
    """``‖Λ‖_{1,off} = Σ_{i≠j} |Λ_ij|`` (both triangles), a scalar."""
    return precision.abs().sum() - torch.diagonal(precision).abs().sum()


class _ConditionalDiagonalNormal(torch.nn.Module, ConditionalDistribution):
    """Base distribution of the flow, q₀(u | x) = N(μ(x), diag s(x)²), events of size p.

    With ``hidden_dims=None`` it is the fixed N(0, I) (no parameters). ``condition(x)`` for a
    context x (B, p) returns a distribution of batch shape (B,), event shape (p,).
    """

    def __init__(self, p: int, hidden_dims: Optional[tuple[int, ...]]):
        super().__init__()
        self.p = p
        self.net = None if hidden_dims is None else _mlp(p, hidden_dims, 2 * p)

    def condition(self, context: torch.Tensor):
        if self.net is None:
            loc, scale = torch.zeros_like(context), torch.ones_like(context)
        else:
            loc, log_scale = self.net(context).split(self.p, dim=-1)
            scale = torch.exp(log_scale.clamp(-7.0, 3.0))
        return dist.Normal(loc, scale).to_event(1)


def _mlp(inputs: int, hidden: tuple[int, ...], outputs: int) -> torch.nn.Sequential:
    """ReLU MLP inputs → hidden… → outputs; the last layer starts at zero (q₀ = N(0, I))."""
    sizes, layers = (inputs, *hidden), []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    last = torch.nn.Linear(sizes[-1], outputs)
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    return torch.nn.Sequential(*layers, last)


class _IAFEncoder(torch.nn.Module):
    """Amortised guide q(z | x) (x (B, p) → distribution of batch (B,), event (p,)).

    ``num_flows`` conditional affine autoregressive transforms (Pyro's IAF, each with its own
    random variable order, conditioned on x through a conditional MADE of ``hidden_dims``)
    on the base :class:`_ConditionalDiagonalNormal`.
    """

    def __init__(self, p: int, num_flows: int, hidden_dims: tuple[int, ...], base_hidden: Optional[tuple[int, ...]]):
        super().__init__()
        self.base = _ConditionalDiagonalNormal(p, base_hidden)
        self.flows = torch.nn.ModuleList(
            conditional_affine_autoregressive(p, context_dim=p, hidden_dims=list(hidden_dims))
            for _ in range(num_flows))

    def condition(self, x: torch.Tensor):
        flow = dist.ConditionalTransformedDistribution(self.base, list(self.flows))
        return flow.condition(x)


def _ggm_model_and_guide(x: torch.Tensor, sigma: float, alpha: float, batch_size: int, encoder: _IAFEncoder):
    """Pyro model and guide on x (n, p); both subsample the same ``rows`` plate.

    The loss is on the scale of a sum over the n rows: the plate scales the minibatch's terms
    by n / B, and ``pyro.factor("l1_penalty", −n (α/2) ‖Λ‖_{1,off})`` stands outside it.
    """
    n, p = x.shape
    size = min(batch_size, n)

    def model():
        raw = pyro.param("lambda_cholesky_raw", lambda: torch.zeros(p, p, dtype=x.dtype))
        precision = _precision(raw)
        prior = dist.MultivariateNormal(torch.zeros(p, dtype=x.dtype), precision_matrix=precision,
                                        validate_args=False)
        with pyro.plate("rows", n, subsample_size=size) as idx:
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z, sigma).to_event(1), obs=x[idx])
        pyro.factor("l1_penalty", -n * 0.5 * alpha * _off_diagonal_l1(precision))

    def guide():
        pyro.module("iaf_encoder", encoder)
        with pyro.plate("rows", n, subsample_size=size) as idx:
            pyro.sample("z", encoder.condition(x[idx]))

    return model, guide


def pyro_iaf_ggm(x: np.ndarray, sigma: float, alpha: float, seed: int, callback: Optional[Callback] = None, *,
                 max_steps: int = 20_000, max_seconds: Optional[float] = None, every: int = 50,
                 batch_size: int = 256, lr: float = 3e-3, num_flows: int = 2,
                 hidden_dims: tuple[int, ...] = (128, 128),
                 base_hidden: Optional[tuple[int, ...]] = None) -> tuple[np.ndarray, float, int]:
    """Fit Λ of the GGM ``z_i ~ N(0, Λ⁻¹)``, ``x_i = z_i + σ ε_i`` by Pyro SVI with an IAF guide.

    Parameters
    ----------
    x : array (n, p)
        Observations (A = identity).
    sigma : float
        Known noise standard deviation σ.
    alpha : float
        invae's per-sample penalty α: the SVI loss is ``−ELBO_sum + n (α/2) ‖Λ‖_{1,off}``.
    seed : int
        Seeds Pyro, torch and the subsampling; clears Pyro's global parameter store.
    callback : callable or None
        ``callback(step, elapsed_seconds, Lambda (p, p) float64)`` every ``every`` steps (and
        after the last); a True return stops the fit.
    max_steps, max_seconds : int, float or None
        Stop after this many SVI steps or seconds (off-callback time), whichever comes first.
    batch_size : int
        Rows per minibatch (``pyro.plate`` subsampling, terms scaled by n / B).
    lr : float
        Adam's learning rate (``pyro.optim.Adam``, all parameters).
    num_flows, hidden_dims : int, tuple of int
        Stacked ``conditional_affine_autoregressive(p, context_dim=p, hidden_dims)`` transforms.
    base_hidden : tuple of int or None
        Hidden sizes of an MLP x → (μ, log s) for a diagonal-normal base of the flow; None (the
        default, Pyro's usual IAF guide): the fixed base N(0, I), all amortisation in the flows.

    Returns
    -------
    Lambda : array (p, p)
        Λ̂ = L Lᵀ at the end, float64.
    seconds : float
        Fit time, callbacks excluded.
    steps : int
        SVI steps taken.
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    data = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    encoder = _IAFEncoder(data.shape[1], num_flows, tuple(hidden_dims), base_hidden)
    model, guide = _ggm_model_and_guide(data, float(sigma), float(alpha), batch_size, encoder)
    svi = SVI(model, guide, Adam({"lr": lr}), loss=Trace_ELBO())
    return _run_svi(svi, callback, max_steps, max_seconds, every)


def _pyro_precision() -> np.ndarray:
    """Λ̂ (p, p) float64 from Pyro's parameter store."""
    raw = pyro.param("lambda_cholesky_raw").detach()
    return _precision(raw.double()).numpy()


def _run_svi(svi, callback: Optional[Callback], max_steps: int, max_seconds: Optional[float],
             every: int) -> tuple[np.ndarray, float, int]:
    """SVI steps until max_steps, max_seconds or a callback's stop; (Λ̂, seconds, steps)."""
    clock, step, out_of_time = _Clock(), 0, False
    while step < max_steps:
        svi.step()
        step += 1
        out_of_time = max_seconds is not None and clock.elapsed() >= max_seconds
        if (step % every == 0 or out_of_time) and clock.report(callback, step, _pyro_precision):
            break
        if out_of_time:
            break
    seconds = clock.elapsed()
    if step % every != 0 and not out_of_time:
        clock.report(callback, step, _pyro_precision)
    return _pyro_precision(), seconds, step


# --------------------------------------------------------------------------- pyPLNmodels: PlnNetwork


def plnnetwork_penalty(alpha: float, n: int) -> float:
    """PlnNetwork's ``penalty`` λ for invae's per-sample α on n rows: ``λ = n α / 2``.

    pyPLNmodels 1.0.10 maximises ``ELBO_sum − λ Σ_{i≠j} |Λ_ij|`` with the ELBO summed over the
    n rows (``PlnNetwork.compute_elbo``, ``elbo_pln``), invae ``n (1/n Σ_i ELBO_i − (α/2) ‖Λ‖_{1,off})``.
    """
    return 0.5 * n * float(alpha)


def plnnetwork_fit(counts: np.ndarray, alpha: float, callback: Optional[Callback] = None, *,
                   maxiter: int = 400, lr: float = 0.01, tol: float = 1e-6, every: int = 25,
                   quiet: bool = True) -> tuple[np.ndarray, float]:
    """Fit pyPLNmodels' ``PlnNetwork`` (no covariates, zero offsets) to counts; return (Λ̂, seconds).

    The model is ``z_i ~ N(0, Λ⁻¹)``, ``x_ij ~ Poisson(exp(z_ij))``, with a mean-field Gaussian
    variational posterior per row, full-batch Rprop on the penalised ELBO (pyPLNmodels' own
    optimiser and stopping rule, ``maxiter``, ``lr``, ``tol`` as in ``PlnNetwork.fit``).

    Parameters
    ----------
    counts : array (n, p)
        Non-negative counts; no all-zero column (pyPLNmodels would drop it).
    alpha : float
        invae's per-sample penalty α; PlnNetwork gets ``penalty = n α / 2``
        (:func:`plnnetwork_penalty`).
    callback : callable or None
        ``callback(step, elapsed_seconds, Lambda (p, p) float64)`` every ``every`` iterations
        (and after the last); a True return stops the fit. With None, ``PlnNetwork.fit`` runs
        as is.
    quiet : bool
        Silence pyPLNmodels' prints, progress bar and pkg_resources deprecation warning.

    Returns
    -------
    Lambda : array (p, p)
        ``PlnNetwork.precision`` (Λ̂ with |entries| < 1e-5 set to 0), float64.
    seconds : float
        Initialisation and fit time, callbacks excluded.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if (counts.sum(axis=0) == 0).any():
        raise ValueError("counts has an all-zero column, which PlnNetwork would silently drop")
    with _silenced(quiet):
        from pyPLNmodels import PlnNetwork
    clock = _Clock()
    with _silenced(quiet):
        net = PlnNetwork(counts, penalty=plnnetwork_penalty(alpha, counts.shape[0]),
                         add_const=False, compute_offsets_method="zero")
        if callback is None:
            net.fit(maxiter=maxiter, lr=lr, tol=tol)
    if callback is not None:
        _fit_with_callback(net, clock, callback, maxiter, lr, tol, every, quiet)
    seconds = clock.elapsed()
    return _pln_precision(net), seconds


def _pln_precision(net) -> np.ndarray:
    """Λ̂ (p, p) float64 of a PlnNetwork: its ``precision`` property (thresholded at 1e-5)."""
    return net.precision.numpy().astype(np.float64)


def _fit_with_callback(net, clock: _Clock, callback: Callback, maxiter: int, lr: float, tol: float,
                       every: int, quiet: bool) -> None:
    """``BaseModel.fit``'s loop (pyPLNmodels 1.0.10) with a callback every ``every`` iterations.

    Same initialisation, optimiser (Rprop, built once) and stopping rule
    (``|criterion| < tol``); only the progress bar and the MSE tracking are left out.
    """
    with _silenced(quiet):  # prints "Fitting a PlnNetwork model ...", "Intializing parameters ..."
        net._fitting_initialization(lr, maxiter)  # pylint: disable=protected-access
    monitor = net._elbo_criterion_monitor  # pylint: disable=protected-access
    step, stop = 0, False
    while step < maxiter and not stop:
        monitor.update_criterion(net._trainstep())  # pylint: disable=protected-access
        step += 1
        stop = abs(monitor.criterion) < tol
        if step % every == 0 and clock.report(callback, step, lambda: _pln_precision(net)):
            return
    net._fitted = True  # pylint: disable=protected-access
    if step % every != 0:
        clock.report(callback, step, lambda: _pln_precision(net))


@contextlib.contextmanager
def _silenced(quiet: bool):
    """Swallow stdout/stderr (prints, tqdm) and pyPLNmodels' pkg_resources warning if quiet."""
    if not quiet:
        yield
        return
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        yield


# --------------------------------------------------------------------------- smoke tests


def chain_precision(p: int, rho: float = 0.4) -> np.ndarray:
    """Tridiagonal Λ (p, p): 1 on the diagonal, ρ next to it (SPD for |ρ| < 1/2)."""
    return np.eye(p) + rho * (np.eye(p, k=1) + np.eye(p, k=-1))


def sample_latent(precision: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """z (n, p) with rows ~ N(0, Λ⁻¹): z = L⁻ᵀ ε for Λ = L Lᵀ."""
    chol = np.linalg.cholesky(precision)
    return np.linalg.solve(chol.T, rng.standard_normal((precision.shape[0], n))).T


def _relative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """``‖Λ̂ − Λ‖_F / ‖Λ‖_F``."""
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def _smoke_pyro(seconds: float = 30.0) -> None:
    """p = 20, n = 2000, σ = 0.5, α = 0.02: prints Λ̂'s error against the truth over time."""
    rng = np.random.default_rng(0)
    truth = chain_precision(20)
    x = sample_latent(truth, 2000, rng) + 0.5 * rng.standard_normal((2000, 20))

    def show(step, elapsed, lam):
        print(f"step {step:5d}  {elapsed:6.1f} s  rel. error {_relative_error(lam, truth):.3f}", flush=True)

    lam, secs, steps = pyro_iaf_ggm(x, 0.5, 0.02, seed=0, callback=show, every=250, max_seconds=seconds)
    print(f"pyro_iaf_ggm: {steps} steps in {secs:.1f} s, final rel. error {_relative_error(lam, truth):.3f}")


def _smoke_pln() -> None:
    """n = 500, p = 10 Poisson log-normal counts, α = 0.02: prints Λ̂'s error over iterations."""
    rng = np.random.default_rng(0)
    truth = chain_precision(10)
    counts = rng.poisson(np.exp(sample_latent(truth, 500, rng)))

    def show(step, elapsed, lam):
        print(f"iter {step:4d}  {elapsed:6.2f} s  rel. error {_relative_error(lam, truth):.3f}", flush=True)

    lam, secs = plnnetwork_fit(counts, 0.02)
    print(f"plnnetwork_fit (plain fit): {secs:.2f} s, final rel. error {_relative_error(lam, truth):.3f}")
    lam, secs = plnnetwork_fit(counts, 0.02, callback=show, every=50)
    print(f"plnnetwork_fit (callback): {secs:.2f} s, final rel. error {_relative_error(lam, truth):.3f}")
    print(np.array2string(lam[:4, :4], precision=3))


if __name__ == "__main__":
    torch.set_num_threads(1)  # 2 shared cores: two threads oversubscribe them (6x slower steps)
    {"pyro": _smoke_pyro, "pln": _smoke_pln}[sys.argv[1] if len(sys.argv) > 1 else "pyro"]()
