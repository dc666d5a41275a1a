import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm, solve_continuous_lyapunov
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning

from invae.paths.kalman import kalman_filter, rts_smoother
from invae.paths.kalman_em import (
    complete_data_mle,
    direct_mle,
    expected_log_prior,
    kalman_em,
    maximise,
    smoothed_statistics,
    state_space,
)
from invae.paths.sde import Brownian, BrownianLearnedStart, DoubleWell, OrnsteinUhlenbeck
from invae.threads import using_threads

THETA = [[1.0, 0.8], [-0.4, 0.5]]  # non-symmetric, eigenvalues 0.75 ± 0.51i: stable
MEAN = [0.5, -1.0]
SCALE = [[0.8, 0.0], [0.3, 0.6]]
H = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
NOISE = torch.tensor([0.01, 0.02, 0.015])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tests' own Kalman passes on one thread, as the fits run: on models this small more
    threads only wait for each other (invae.threads), three times slower here."""
    with using_threads(1):
        yield


def ou2() -> OrnsteinUhlenbeck:
    return OrnsteinUhlenbeck(2, drift=THETA, mean=MEAN, diffusion=SCALE)


def far_start() -> OrnsteinUhlenbeck:
    return OrnsteinUhlenbeck(2, drift=0.3, mean=0.0, diffusion=1.0)


def irregular_times(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Increasing times with steps uniform on [0.1, 0.5] along the last axis."""
    return torch.cumsum(0.1 + 0.4 * torch.rand(*shape, generator=generator), dim=-1)


@torch.no_grad()
def simulate(prior, times: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n paths (n, T, d) drawn from the prior's exact law: z_0 ~ N(m0, P0), z_{k+1} = A_k z_k + b_k + L_k ε."""
    a, b, q = prior.linear_transition(times.diff(dim=-1))
    m0, p0 = prior.initial()
    z = m0 + torch.randn(n, prior.dim, generator=generator) @ torch.linalg.cholesky(p0).mT
    path, chol = [z], torch.linalg.cholesky(q)
    for k in range(times.shape[-1] - 1):
        noise = chol[..., k, :, :] @ torch.randn(n, prior.dim, 1, generator=generator)
        z = (a[..., k, :, :] @ z[..., None] + noise)[..., 0] + b[..., k, :]
        path.append(z)
    return torch.stack(path, dim=1)


def observe(z: torch.Tensor, h: torch.Tensor, noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x = z Hᵀ + √r ε, with every coordinate missing at about a tenth of the (series, time)."""
    x = z @ h.mT + noise.sqrt() * torch.randn(*z.shape[:2], h.shape[0], generator=generator)
    x[torch.rand(z.shape[:2], generator=generator) < 0.1] = float("nan")
    return x


def flat(prior) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in prior.parameters()])


def score(x, prior, times, h, noise) -> torch.Tensor:
    """∇_θ Σ_series log p(x; θ) by autograd, flattened."""
    log_likelihood = kalman_filter(x, state_space(prior, times, h, noise)).log_likelihood.sum()
    return torch.cat([g.flatten() for g in torch.autograd.grad(log_likelihood, list(prior.parameters()))])


# --- the state-space model -----------------------------------------------------------------------

def dense_ou_path(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (T·d,) and covariance of the stationary OU path at ``times`` (T,), with no recursion:
    Cov(z(t), z(s)) = expm(−Θ (t − s)) Σ∞ for t ≥ s, Σ∞ solving Θ Σ + Σ Θᵀ = S Sᵀ (scipy)."""
    theta, scale = np.array(THETA), np.array(SCALE)
    sigma = solve_continuous_lyapunov(theta, scale @ scale.T)
    steps, d = len(times), len(MEAN)
    cov = np.zeros((steps * d, steps * d))
    for k in range(steps):
        for j in range(k + 1):
            block = expm(-theta * (times[k] - times[j])) @ sigma  # Cov(z(t_k), z(t_j))
            cov[k * d:(k + 1) * d, j * d:(j + 1) * d] = block
            cov[j * d:(j + 1) * d, k * d:(k + 1) * d] = block.T
    return np.tile(MEAN, steps), cov


@pytest.mark.parametrize("per_series", [False, True])
def test_ou_state_space_log_likelihood_is_the_dense_path_density(rng, generator, per_series):
    # The Kalman filter is exact: both sides differ by rounding (~κ ε, κ ≲ 1e3 here), so 1e-9.
    n, steps = 3, 6
    times = irregular_times(generator, n, steps) if per_series else irregular_times(generator, steps)
    x = torch.as_tensor(rng.standard_normal((n, steps, 3)))
    x[0, 2, 1] = float("nan")  # one entry
    x[1, 4] = float("nan")  # a whole time
    got = kalman_filter(x, state_space(ou2(), times, H, NOISE)).log_likelihood.detach()
    for i in range(n):
        mean_z, cov_z = dense_ou_path(times[i].numpy() if per_series else times.numpy())
        h = np.kron(np.eye(steps), H.numpy())
        cov_x = h @ cov_z @ h.T + np.diag(np.tile(NOISE.numpy(), steps))
        seen = ~np.isnan(x[i].numpy().ravel())
        expected = multivariate_normal(h[seen] @ mean_z, cov_x[np.ix_(seen, seen)]).logpdf(x[i].numpy().ravel()[seen])
        assert float(got[i]) == pytest.approx(expected, rel=1e-9)


def test_state_space_needs_a_linear_transition():
    with pytest.raises(ValueError, match="DoubleWell has no exact linear transition"):
        state_space(DoubleWell(), torch.arange(4.0), torch.ones(1, 1), torch.ones(1))
    with pytest.raises(ValueError, match="no exact linear transition"):
        kalman_em(torch.zeros(2, 4, 1), DoubleWell(), torch.arange(4.0), torch.ones(1, 1), torch.ones(1))


def test_inputs_are_checked_at_the_door():
    with pytest.raises(ValueError, match=r"H must have shape \(m, 2\)"):
        state_space(ou2(), torch.arange(4.0), torch.ones(1, 3), torch.ones(1))
    with pytest.raises(ValueError, match="noise variances must be positive"):
        state_space(ou2(), torch.arange(4.0), H, torch.tensor([0.1, 0.0, 0.1]))
    x = torch.zeros(2, 4, 3)
    x[..., 1] = float("nan")
    with pytest.raises(ValueError, match=r"never seen: \[1\]"):
        kalman_em(x, ou2(), torch.arange(4.0), H, NOISE, learn_noise=True)


# --- EM's objective --------------------------------------------------------------------------------

@pytest.mark.parametrize("per_series", [False, True])
def test_q_has_the_score_at_the_current_parameters(generator, per_series):
    # Fisher's identity: ∇_θ Q(θ; θ') at θ = θ' is ∇_θ log p(x; θ'), since log p(x; θ) − Q(θ; θ')
    # is the smoother's entropy term, stationary at θ'. A wrong moment (a transposed lag-one term,
    # a missing mean product) breaks it at order 1; both sides are exact, so rounding only.
    n, steps = 8, 12
    times = irregular_times(generator, n, steps) if per_series else irregular_times(generator, steps)
    x = observe(simulate(ou2(), times, n, generator), H, 10 * NOISE, generator)
    prior = OrnsteinUhlenbeck(2, drift=[[0.6, 0.2], [0.1, 0.9]], mean=[-0.5, 0.5], diffusion=[[1.0, 0.0], [0.4, 0.7]])
    with torch.no_grad():
        stats = smoothed_statistics(rts_smoother(x, state_space(prior, times, H, 10 * NOISE)), shared=not per_series)
    q = expected_log_prior(stats, state_space(prior, times, H, 10 * NOISE))
    grad_q = torch.cat([g.flatten() for g in torch.autograd.grad(q, list(prior.parameters()))])
    expected = score(x, prior, times, H, 10 * NOISE)
    assert expected.abs().max() > 1.0  # far from the MLE: the identity is not 0 = 0
    torch.testing.assert_close(grad_q, expected, rtol=1e-8, atol=1e-8)


def test_q_is_the_same_from_shared_and_per_series_statistics(generator):
    n, steps = 4, 7
    times = irregular_times(generator, steps)
    x = observe(simulate(ou2(), times, n, generator), H, NOISE, generator)
    with torch.no_grad():
        smoothed = rts_smoother(x, state_space(ou2(), times, H, NOISE))
        shared = expected_log_prior(smoothed_statistics(smoothed, shared=True), state_space(ou2(), times, H, NOISE))
        repeated = times.expand(n, steps)
        per_series = expected_log_prior(smoothed_statistics(smoothed, shared=False),
                                        state_space(ou2(), repeated, H, NOISE))
    torch.testing.assert_close(shared, per_series, rtol=1e-12, atol=0)


# --- EM against the direct maximisation ------------------------------------------------------------

@pytest.fixture(scope="module")
def ou_fits():
    """OU, d = 2, seen through H (3 × 2) at 40 shared irregular times, 30 series, a tenth of the
    times missing; EM and direct L-BFGS from the same start far from the truth."""
    generator = torch.Generator().manual_seed(1)
    times = irregular_times(generator, 40)
    x = observe(simulate(ou2(), times, 30, generator), H, NOISE, generator)
    start = far_start()
    em = kalman_em(x, start, times, H, NOISE, tol=1e-11)
    return {"x": x, "times": times, "start": start, "em": em, "direct": direct_mle(x, start, times, H, NOISE)}


def test_em_log_likelihood_never_decreases(ou_fits):
    history = torch.tensor(ou_fits["em"].history)
    assert ou_fits["em"].converged and len(history) == ou_fits["em"].n_iter + 1 > 5
    assert history[-1] - history[0] > 100  # a start far from the MLE: a long climb to check
    assert bool((history.diff() >= -1e-9 * history.abs()[1:]).all())


def test_em_and_direct_maximisation_reach_the_same_mle(ou_fits):
    # Both converge to the MLE, EM linearly: at tol = 1e-11 its θ is within ~1e-5 of the limit.
    em, direct = ou_fits["em"], ou_fits["direct"]
    torch.testing.assert_close(flat(em.prior), flat(direct.prior), rtol=0, atol=1e-4)
    assert em.log_likelihood == pytest.approx(direct.log_likelihood, rel=1e-9)
    assert (flat(em.prior) - flat(ou_fits["start"])).abs().max() > 0.1  # it did move


def test_score_vanishes_at_em_answer(ou_fits):
    # Per observed entry: ~1e-6 at EM's answer, O(1e-2) and more at the truth (sampling noise).
    x, times = ou_fits["x"], ou_fits["times"]
    entries = int((~torch.isnan(x)).sum())
    assert score(x, ou_fits["em"].prior, times, H, NOISE).abs().max() / entries < 1e-5
    assert score(x, ou2(), times, H, NOISE).abs().max() / entries > 1e-3


def test_em_leaves_its_input_prior_unchanged(ou_fits):
    torch.testing.assert_close(flat(ou_fits["start"]), flat(far_start()), rtol=0, atol=0)
    assert ou_fits["em"].prior is not ou_fits["start"]


@pytest.mark.parametrize("start", [Brownian, BrownianLearnedStart])
def test_em_with_learned_noise_is_the_direct_mle_of_a_local_level(generator, start):
    # Brownian d = 1 (start diffuse or learned) with the noise variance learned too, per-series times.
    truth = BrownianLearnedStart(1, diffusion=0.7, start_mean=1.0, start_scale=0.8)
    h, noise = torch.ones(1, 1), torch.tensor([0.3])
    times = irregular_times(generator, 40, 20) * 2
    x = observe(simulate(truth, times, 40, generator), h, noise, generator)
    start = start(1, diffusion=0.3, start_mean=0.0, start_scale=2.0)
    em = kalman_em(x, start, times, h, torch.ones(1), learn_noise=True, max_iter=1000, tol=1e-12)
    direct = direct_mle(x, start, times, h, torch.ones(1), learn_noise=True)
    history = torch.tensor(em.history)
    assert bool((history.diff() >= -1e-9 * history.abs()[1:]).all())
    torch.testing.assert_close(flat(em.prior), flat(direct.prior), rtol=0, atol=1e-4)
    torch.testing.assert_close(em.noise_var, direct.noise_var, rtol=0, atol=1e-4)
    assert abs(float(em.noise_var[0]) - 0.3) < 0.15  # and it is an estimate of r, not a stray value


def test_em_warns_when_it_stops_at_max_iter(generator):
    times = irregular_times(generator, 10)
    x = observe(simulate(ou2(), times, 5, generator), H, NOISE, generator)
    with pytest.warns(ConvergenceWarning, match="stopped at max_iter=2"):
        result = kalman_em(x, far_start(), times, H, NOISE, max_iter=2)
    assert not result.converged and result.n_iter == 2


# --- the complete-data floor -----------------------------------------------------------------------

THETA1, MU1, S1, DT, N_PATHS, STEPS = 0.7, 0.3, 0.5, 0.5, 200, 50


@pytest.fixture(scope="module")
def ou1_paths():
    """Paths of a d = 1 OU at regular times, their complete-data MLE and its AR(1) reading."""
    truth = OrnsteinUhlenbeck(1, drift=THETA1, mean=MU1, diffusion=S1)
    times = torch.arange(STEPS) * DT
    z = simulate(truth, times, N_PATHS, torch.Generator().manual_seed(2))
    return {"truth": truth, "times": times, "z": z, "fit": complete_data_mle(z, OrnsteinUhlenbeck(1), times)}


def test_complete_data_mle_recovers_theta_within_its_standard_error(ou1_paths):
    # z_{k+1} = a z_k + b + w with a = e^{−θΔ}: over N = n (T − 1) transitions the AR(1) estimate
    # of a has SE √((1 − a²)/N), so θ̂ = −log(â)/Δ has SE √((1 − a²)/N) / (a Δ) (delta method),
    # ≈ 0.020 here; the stationary start only adds information. 4 SEs.
    a, transitions = math.exp(-THETA1 * DT), N_PATHS * (STEPS - 1)
    se = math.sqrt((1 - a**2) / transitions) / (a * DT)
    fitted = ou1_paths["fit"].parameters_by_name()["drift"]
    assert abs(fitted - THETA1) < 4 * se  # the start, θ = 1, is 15 SEs away


def test_complete_data_mle_maximises_the_path_likelihood(ou1_paths):
    # The exact OU likelihood ties Q to (θ, s) and adds the stationary start, so the AR(1) least
    # squares (â, b̂, σ̂²) is not its maximiser; its OU reading θ = −log â / Δ, μ = b̂ / (1 − â),
    # s² = 2θ σ̂² / (1 − â²) is a close point the MLE must still beat, as it must beat the truth.
    z, times, fit = ou1_paths["z"], ou1_paths["times"], ou1_paths["fit"]
    log_likelihood = fit.log_prob(z, times).sum()
    gradient = torch.cat([g.flatten() for g in torch.autograd.grad(log_likelihood, list(fit.parameters()))])
    assert gradient.abs().max() / z.numel() < 1e-6
    now, later = z[:, :-1, 0].flatten(), z[:, 1:, 0].flatten()
    design = torch.stack([now, torch.ones_like(now)], dim=1)
    a, b = torch.linalg.lstsq(design, later[:, None]).solution[:, 0]
    residual = later - a * now - b
    theta = -math.log(float(a)) / DT
    least_squares = OrnsteinUhlenbeck(1, drift=theta, mean=float(b / (1 - a)),
                                      diffusion=math.sqrt(2 * theta * float(residual.var()) / (1 - float(a) ** 2)))
    with torch.no_grad():
        assert float(log_likelihood) >= float(ou1_paths["truth"].log_prob(z, times).sum())
        assert float(log_likelihood) >= float(least_squares.log_prob(z, times).sum())
    # Both read θ off the same transitions: they differ by far less than θ̂'s SE (previous test).
    se = math.sqrt((1 - math.exp(-2 * THETA1 * DT)) / (N_PATHS * (STEPS - 1))) / (math.exp(-THETA1 * DT) * DT)
    assert abs(fit.parameters_by_name()["drift"] - theta) < se


# --- L-BFGS --------------------------------------------------------------------------------------

def test_maximise_backs_away_from_points_outside_the_domain():
    # log x − x has its maximum at 1; from x = 5 the quasi-Newton steps overshoot below 0, where
    # log x is NaN: a wall the line search must back away from, not a NaN step.
    x, trials = torch.tensor(5.0, requires_grad=True), []

    def objective():
        trials.append(float(x.detach()))
        return torch.log(x) - x

    maximise(objective, [x])
    assert min(trials) < 0  # the wall was met
    assert float(x.detach()) == pytest.approx(1.0, abs=1e-6)
