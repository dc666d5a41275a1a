"""Exact maximum-likelihood references for linear SDE priors seen through linear-Gaussian noise
(issue 21): EM, the direct maximisation of the Kalman log-likelihood, and the complete-data floor.

A prior with an exact linear transition (:class:`~invae.paths.sde.OrnsteinUhlenbeck`,
:class:`~invae.paths.sde.Brownian`) seen at times t_0 < … < t_{T−1} through x_k = H z(t_k) + v_k,
v_k ~ N(0, diag(r)), is the linear-Gaussian state-space model of :mod:`invae.paths.kalman` with

    z_0 ~ N(m0_θ, P0_θ),   z_{k+1} | z_k ~ N(A_k z_k + b_k, Q_k),

(A_k, b_k, Q_k) the exact transition over Δ_k = t_{k+1} − t_k (:func:`state_space`). Its evidence
log p(x; θ, r) is exact (the Kalman filter), and so is its MLE. Two routes reach it: EM
(:func:`kalman_em`: the RTS smoother, then a maximisation of the expected complete-data
log-likelihood) and L-BFGS on the evidence itself through autograd (:func:`direct_mle`). With the
paths z themselves observed, :func:`complete_data_mle` gives θ's MLE from p(z; θ): the floor that no
estimator from x can beat.

References: R. H. Shumway and D. S. Stoffer (1982), "An approach to time series smoothing and
forecasting using the EM algorithm", *J. Time Series Analysis* 3(4), 253–264. S. Särkkä (2013),
*Bayesian Filtering and Smoothing*, Cambridge University Press, ch. 12.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor

from ..threads import using_threads
from .kalman import LinearGaussianSSM, SmootherResult, kalman_filter, rts_smoother
from .sde import SDEPrior, check_times

__all__ = ["KalmanEMResult", "MLEResult", "SmoothedStatistics", "complete_data_mle", "direct_mle",
           "expected_log_prior", "kalman_em", "maximise", "smoothed_statistics", "state_space"]

# L-BFGS's objectives are divided by their number of terms so these absolute tolerances mean the
# same at every data size; the value then is O(1) and float64 resolves it to ~1e-16.
_GRAD_TOL, _CHANGE_TOL = 1e-10, 1e-14
# A trial point where the objective is undefined (an unstable OU drift has no stationary start)
# scores this: finite, because the line search's cubic interpolation turns an infinite value into NaN.
_WALL = 1e30


@dataclass(frozen=True)
class MLEResult:
    """A fitted prior (a copy), the noise variances r (m,) and the log-likelihood there,
    Σ_series log p(x; θ, r)."""

    prior: SDEPrior
    noise_var: Tensor
    log_likelihood: float


@dataclass(frozen=True)
class KalmanEMResult(MLEResult):
    """EM's answer and its path: ``history`` the log-likelihood at the start and after each of the
    ``n_iter`` iterations (its last entry is ``log_likelihood``), ``converged`` whether it settled
    before ``max_iter``."""

    history: list[float]
    n_iter: int
    converged: bool


@dataclass(frozen=True)
class SmoothedStatistics:
    """The smoothed moments of EM's M-step, c the number of series summed into each:

    ``start_sum`` Σ E[z_0] (d,), ``start_outer`` Σ E[z_0 z_0ᵀ] (d, d); per step k = 0, …, T−2,
    ``current_sum`` Σ E[z_k], ``next_sum`` Σ E[z_{k+1}] (…, T−1, d), ``current_outer`` Σ E[z_k z_kᵀ],
    ``next_outer`` Σ E[z_{k+1} z_{k+1}ᵀ], ``lagged`` Σ E[z_{k+1} z_kᵀ] (…, T−1, d, d). The step sums
    run over the series when they share their times (c = n, no leading axis), else each series
    keeps its own (c = 1, leading axis n); the start's always run over the series (c_0 = n).
    """

    count: int
    start_count: int
    start_sum: Tensor
    start_outer: Tensor
    current_sum: Tensor
    next_sum: Tensor
    current_outer: Tensor
    next_outer: Tensor
    lagged: Tensor


def state_space(prior: SDEPrior, times, H: Tensor, noise_var: Tensor) -> LinearGaussianSSM:
    """The linear-Gaussian SSM of ``prior`` seen at ``times`` (T,) or (n, T) through H (m, d) with
    noise variances ``noise_var`` (m,): m0, P0 from ``prior.initial()`` (a diffuse model when the
    prior's start is ``diffuse``); F_k, c_k, Q_k the exact (A, b, Q) of ``prior.linear_transition(Δ_k)``,
    (T−1, …) or per series (n, T−1, …). Differentiable in θ (and in ``noise_var``); in the prior's
    dtype and device."""
    if not callable(getattr(prior, "linear_transition", None)):
        raise ValueError(f"{type(prior).__name__} has no exact linear transition (linear_transition), "
                         "so no state-space model")
    like = next(prior.parameters())
    times = check_times(times).to(like)
    H, noise_var = torch.as_tensor(H).to(like), torch.as_tensor(noise_var).to(like)
    if H.ndim != 2 or H.shape[1] != prior.dim:
        raise ValueError(f"H must have shape (m, {prior.dim}) for this prior's d = {prior.dim}, got {tuple(H.shape)}")
    if not bool((noise_var > 0).all()):
        raise ValueError(f"the noise variances must be positive, got {noise_var.tolist()}")
    diffuse = getattr(prior, "diffuse", False)
    eye = torch.eye(prior.dim, dtype=like.dtype, device=like.device)
    m0, p0 = (like.new_zeros(prior.dim), eye) if diffuse else prior.initial(like.dtype, like.device)
    a, b, q = prior.linear_transition(times.diff(dim=-1))
    return LinearGaussianSSM(m0=m0, P0=p0, F=a, c=b, Q=q, H=H, r=noise_var, diffuse=diffuse)


def smoothed_statistics(smoothed: SmootherResult, shared: bool) -> SmoothedStatistics:
    """The moments of :class:`SmoothedStatistics` from the RTS smoother's output (n series):
    E[z_k z_kᵀ] = P^s_k + m^s_k m^s_kᵀ,  E[z_{k+1} z_kᵀ] = Cov(z_{k+1}, z_k | x) + m^s_{k+1} m^s_kᵀ,
    summed over the series when they share their times (``shared``)."""
    mean = smoothed.mean
    outer = smoothed.cov + mean[..., :, None] * mean[..., None, :]
    lagged = smoothed.cross_cov + mean[:, 1:, :, None] * mean[:, :-1, None, :]
    steps = (mean[:, :-1], mean[:, 1:], outer[:, :-1], outer[:, 1:], lagged)
    n = mean.shape[0]
    if shared:
        steps = tuple(s.sum(0) for s in steps)
    return SmoothedStatistics(n if shared else 1, n, mean[:, 0].sum(0), outer[:, 0].sum(0), *steps)


def _expected_log_density(count: int, residual_outer: Tensor, cov: Tensor) -> Tensor:
    """Σ_i E log N(e_i; 0, C) = −½ [tr(C⁻¹ Σ_i E[e_i e_iᵀ]) + c log det C + c d log 2π] for
    c = ``count`` residuals, their summed second moment (…, d, d) and C (…, d, d); shape (…)."""
    chol = torch.linalg.cholesky(cov)
    trace = torch.cholesky_solve(residual_outer, chol).diagonal(dim1=-2, dim2=-1).sum(-1)
    log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * (trace + count * (log_det + cov.shape[-1] * math.log(2 * math.pi)))


def expected_log_prior(stats: SmoothedStatistics, model: LinearGaussianSSM) -> Tensor:
    """EM's objective Q(θ) (Shumway & Stoffer 1982; Särkkä 2013, ch. 12) less its observation
    term, which does not depend on θ: the expectation under the smoother's law of log p(z; θ),

        Q(θ) = Σ_series [ E log N(z_0; m0, P0) + Σ_k E log N(z_{k+1}; A_k z_k + b_k, Q_k) ],

    each term −½ [tr(C⁻¹ E[e eᵀ]) + log det C + d log 2π] with the residual e = z_0 − m0 or
    z_{k+1} − A_k z_k − b_k, whose second moment, summed over c series with u = s_{k+1} − A_k s_k, is

        E[e eᵀ] = S_{k+1,k+1} − S_{k+1,k} A_kᵀ − A_k S_{k+1,k}ᵀ + A_k S_{k,k} A_kᵀ
                  − u b_kᵀ − b_k uᵀ + c b_k b_kᵀ,

    S, s the sums of :class:`SmoothedStatistics` (and S_00 − s_0 m0ᵀ − m0 s_0ᵀ + c_0 m0 m0ᵀ at the
    start; a ``diffuse`` model's flat start adds 0). ``model`` is :func:`state_space`'s; a scalar,
    differentiable in θ."""
    m0, a, b = model.m0, model.F, model.c
    start = (stats.start_outer - stats.start_sum[:, None] * m0 - m0[:, None] * stats.start_sum
             + stats.start_count * m0[:, None] * m0)
    cross = stats.lagged @ a.mT
    u = stats.next_sum - (a @ stats.current_sum[..., None])[..., 0]
    ub = u[..., :, None] * b[..., None, :]
    steps = (stats.next_outer - cross - cross.mT + a @ stats.current_outer @ a.mT
             - ub - ub.mT + stats.count * b[..., :, None] * b[..., None, :])
    transitions = _expected_log_density(stats.count, steps, model.Q).sum()
    return transitions if model.diffuse else transitions + _expected_log_density(stats.start_count, start, model.P0)


def _noise_update(x: Tensor, smoothed: SmootherResult, H: Tensor) -> Tensor:
    """r_j = mean over the observed (series, time) of E[(x_j − H_j z)² | x] = (x_j − H_j m^s)² + H_j P^s H_jᵀ,
    the maximiser of Q's observation term; (m,)."""
    observed = ~torch.isnan(x)
    residual = torch.where(observed, x - smoothed.mean @ H.mT, 0.0)
    spread = torch.einsum("jd,ntde,je->ntj", H, smoothed.cov, H)
    return torch.where(observed, residual.square() + spread, 0.0).sum((0, 1)) / observed.sum((0, 1))


def maximise(objective: Callable[[], Tensor], parameters: list[Tensor]) -> None:
    """Maximise ``objective()`` over ``parameters`` in place by L-BFGS from their current values.
    Its strong-Wolfe line search takes a step only where the objective rises (the sufficient-increase
    condition), else none, so the end point never falls below the start: what EM's M-step needs.
    An objective undefined at the start raises; a trial point where it is undefined is a wall
    (:func:`_negated`)."""
    with torch.no_grad():
        objective()  # raises here: in the closure an undefined start would pass for a wall
    optimizer = torch.optim.LBFGS(parameters, max_iter=500, tolerance_grad=_GRAD_TOL,
                                  tolerance_change=_CHANGE_TOL, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        return _negated(objective, parameters)

    with torch.enable_grad():
        optimizer.step(closure)


def _negated(objective: Callable[[], Tensor], parameters: list[Tensor]) -> Tensor:
    """−objective(), its gradient left in the parameters' ``.grad``; ``_WALL`` with no gradient where
    the objective or its gradient is undefined there (a ValueError, a failed Cholesky factorisation,
    a non-finite value). Non-finite parameters are a wall before any evaluation: torch.linalg.eigvals,
    in the OU prior's stability check, crashes the process on NaN."""
    if all(bool(p.isfinite().all()) for p in parameters):
        try:
            loss = -objective()
        except (ValueError, torch.linalg.LinAlgError):
            loss = torch.tensor(math.inf)
        if bool(torch.isfinite(loss)):
            loss.backward()
            if all(p.grad is None or bool(p.grad.isfinite().all()) for p in parameters):
                return loss.detach()
    for p in parameters:
        p.grad = None
    return torch.tensor(_WALL)


def _check_inputs(x: Tensor, prior: SDEPrior, H: Tensor, learn_noise: bool) -> Tensor:
    """x (n, T, m) in the prior's dtype; ValueError if not 3-D or if a noise variance to learn has no data."""
    x = torch.as_tensor(x).to(next(prior.parameters()))
    if x.ndim != 3 or x.shape[-1] != torch.as_tensor(H).shape[0]:
        raise ValueError(f"x must have shape (n, T, m) with m = {torch.as_tensor(H).shape[0]} rows of H, "
                         f"got {tuple(x.shape)}")
    if learn_noise and not bool((~torch.isnan(x)).any(1).any(0).all()):
        raise ValueError("learn_noise needs every observed coordinate seen at least once; "
                         f"never seen: {torch.isnan(x).all(1).all(0).nonzero().flatten().tolist()}")
    return x


def kalman_em(x: Tensor, prior: SDEPrior, times, H: Tensor, noise_var: Tensor, *, learn_noise: bool = False,
              max_iter: int = 200, tol: float = 1e-8, n_threads: int | None = None) -> KalmanEMResult:
    """EM for the MLE of θ (and of r when ``learn_noise``) from x (n, T, m), NaN where missing,
    seen at ``times`` (T,) or (n, T) through H (m, d), from ``prior``'s θ and ``noise_var`` (m,).

    EM (Shumway & Stoffer 1982) ascends the expected complete-data log-likelihood under the
    smoother's law p(z | x; θ_old, r_old),

        Q(θ, r) = E log p(z; θ) + Σ_{observed (i, k, j)} E log N(x_ikj; H_j z_ik, r_j),

    its first term written from the smoothed moments in :func:`expected_log_prior`.

    E-step: the RTS smoother at θ_old (:func:`~invae.paths.kalman.rts_smoother`), its moments
    (:func:`smoothed_statistics`) and the log-likelihood of θ_old (its Kalman filter's).
    M-step: θ maximising the first term by L-BFGS from θ_old, never below it at θ_old; r_j
    maximising the second in closed form, the mean over the observed entries of
    E[(x_j − H_j z)² | x] (the two terms do not share parameters). Q cannot fall, so neither can
    the log-likelihood (Dempster, Laird & Rubin 1977). Stops when it changes by less than
    ``tol`` · |log-likelihood|, with a ``ConvergenceWarning`` if ``max_iter`` iterations come
    first. ``prior`` is left unchanged; torch runs on ``n_threads`` threads
    (:func:`~invae.threads.fit_threads`).
    """
    x = _check_inputs(x, prior, H, learn_noise)
    prior, noise_var = copy.deepcopy(prior), torch.as_tensor(noise_var).to(x)
    with using_threads(n_threads):
        smoothed = _e_step(x, prior, times, H, noise_var)
        history, converged = [float(smoothed.log_likelihood.sum())], False
        for _ in range(max_iter):
            noise_var = _m_step(x, smoothed, prior, times, H, noise_var, learn_noise)
            smoothed = _e_step(x, prior, times, H, noise_var)
            history.append(float(smoothed.log_likelihood.sum()))
            if abs(history[-1] - history[-2]) < tol * abs(history[-1]):
                converged = True
                break
    if not converged:
        warnings.warn(f"Kalman EM stopped at max_iter={max_iter} before the log-likelihood settled "
                      f"(last change {history[-1] - history[-2]:.3g}); raise max_iter or tol", ConvergenceWarning,
                      stacklevel=2)
    return KalmanEMResult(prior, noise_var, history[-1], history, len(history) - 1, converged)


def _m_step(x: Tensor, smoothed: SmootherResult, prior: SDEPrior, times, H: Tensor, noise_var: Tensor,
            learn_noise: bool) -> Tensor:
    """EM's M-step from the smoother's output at θ_old: ``prior``'s θ updated in place to maximise
    Q(θ) / (n T) (the scale for L-BFGS's tolerances); returns r, updated when ``learn_noise``."""
    stats = smoothed_statistics(smoothed, shared=check_times(times).ndim == 1)
    scale = x.shape[0] * x.shape[1]
    maximise(lambda: expected_log_prior(stats, state_space(prior, times, H, noise_var)) / scale,
              list(prior.parameters()))
    return _noise_update(x, smoothed, torch.as_tensor(H).to(x)) if learn_noise else noise_var


@torch.no_grad()
def _e_step(x: Tensor, prior: SDEPrior, times, H: Tensor, noise_var: Tensor) -> SmootherResult:
    """The RTS smoother of x under θ and r."""
    return rts_smoother(x, state_space(prior, times, H, noise_var))


def direct_mle(x: Tensor, prior: SDEPrior, times, H: Tensor, noise_var: Tensor, learn_noise: bool = False, *,
               n_threads: int | None = None) -> MLEResult:
    """The MLE of θ (and of r when ``learn_noise``, through log r) by L-BFGS on the exact
    log-likelihood Σ_series log p(x; θ, r) of the Kalman filter, differentiated by autograd: the
    second route to :func:`kalman_em`'s answer. Arguments as there; ``prior`` is left unchanged."""
    x = _check_inputs(x, prior, H, learn_noise)
    prior = copy.deepcopy(prior)
    log_noise = torch.as_tensor(noise_var).to(x).log().requires_grad_(learn_noise)
    parameters = list(prior.parameters()) + ([log_noise] if learn_noise else [])

    def log_likelihood() -> Tensor:
        return kalman_filter(x, state_space(prior, times, H, log_noise.exp())).log_likelihood.sum()

    with using_threads(n_threads):
        maximise(lambda: log_likelihood() / (~torch.isnan(x)).sum(), parameters)
        with torch.no_grad():
            return MLEResult(prior, log_noise.detach().exp(), float(log_likelihood()))


def complete_data_mle(z: Tensor, prior: SDEPrior, times, *, n_threads: int | None = None) -> SDEPrior:
    """The complete-data floor: θ's MLE from the paths z (n, T, d) themselves, maximising
    Σ_series ``prior.log_prob(z, times)`` by L-BFGS from ``prior``'s θ; a fitted copy of ``prior``.
    Any prior with a ``log_prob`` (its exact or Euler–Maruyama transitions)."""
    prior = copy.deepcopy(prior)
    z = torch.as_tensor(z).to(next(prior.parameters()))
    with using_threads(n_threads):
        maximise(lambda: prior.log_prob(z, times).sum() / (z.shape[0] * z.shape[1]), list(prior.parameters()))
    return prior
