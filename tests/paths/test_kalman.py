import numpy as np
import pytest
import torch
from scipy.linalg import block_diag
from scipy.stats import multivariate_normal

from invae.paths.kalman import LinearGaussianSSM, kalman_filter, rts_smoother
from invae.paths.sde import gaussian_log_prob

from ..conftest import random_spd

# The filter, the smoother and the dense conditioning below are all exact in float64; they differ
# only by rounding, about κ ε with ε ≈ 2e-16 and condition numbers κ of the (T·m)-dimensional
# observed covariances of order 1e2–1e3 here, so 1e-9 leaves a wide margin while any modelling
# error (a missed entry, a wrong gain) shows at order 1e-2 or more.
RTOL, ATOL = 1e-9, 1e-10

D, M, T, N = 2, 3, 6, 3


def _random_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-series m0, shared P0, time-varying F_k, c_k, Q_k, and H, r, as float64 arrays."""
    return {"m0": rng.standard_normal((N, D)), "P0": random_spd(rng, D, 4.0),
            "F": 0.9 * np.eye(D) + 0.3 * rng.standard_normal((T - 1, D, D)),
            "c": 0.5 * rng.standard_normal((T - 1, D)),
            "Q": np.stack([0.4 * random_spd(rng, D, 3.0) for _ in range(T - 1)]),
            "H": rng.standard_normal((M, D)), "r": rng.uniform(0.2, 1.0, M)}


def _ssm(params: dict[str, np.ndarray]) -> LinearGaussianSSM:
    return LinearGaussianSSM(**{k: torch.tensor(v) for k, v in params.items()})


def _dense_prior(params: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (T·d,) and covariance of series i's whole path, independently of any recursion: the
    path solves (I − S) z = e with S the block matrix of F_k at (k+1, k) and
    e ~ N((m0, c_0, …, c_{T−2}), blockdiag(P0, Q_0, …, Q_{T−2}))."""
    shift = np.zeros((T * D, T * D))
    for k in range(T - 1):
        shift[(k + 1) * D:(k + 2) * D, k * D:(k + 1) * D] = params["F"][k]
    inverse = np.linalg.inv(np.eye(T * D) - shift)
    drive = np.concatenate([params["m0"][i], *params["c"]])
    return inverse @ drive, inverse @ block_diag(params["P0"], *params["Q"]) @ inverse.T


def _dense_joint(params: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, ...]:
    """(μ_z, Σ_zz, μ_x, Σ_zx, Σ_xx) of series i's path z and observations x = (I ⊗ H) z + v."""
    mean_z, cov_z = _dense_prior(params, i)
    h = np.kron(np.eye(T), params["H"])
    return mean_z, cov_z, h @ mean_z, cov_z @ h.T, h @ cov_z @ h.T + np.diag(np.tile(params["r"], T))


def _data(rng: np.random.Generator) -> np.ndarray:
    """x (N, T, M) with about a fifth of the entries missing and all of series 0's time 2."""
    x = 2 * rng.standard_normal((N, T, M))
    x[rng.random((N, T, M)) < 0.2] = np.nan
    x[0, 2, :] = np.nan
    x[1, 4, 1:] = np.nan
    return x


def _block(cov: np.ndarray, j: int, k: int) -> np.ndarray:
    return cov[j * D:(j + 1) * D, k * D:(k + 1) * D]


def test_log_likelihood_is_the_dense_density_of_the_observed_block(rng):
    params, x = _random_model(rng), _data(rng)
    got = kalman_filter(torch.as_tensor(x), _ssm(params)).log_likelihood
    for i in range(N):
        _, _, mean_x, _, cov_x = _dense_joint(params, i)
        seen = ~np.isnan(x[i].ravel())
        expected = multivariate_normal(mean_x[seen], cov_x[np.ix_(seen, seen)]).logpdf(x[i].ravel()[seen])
        assert float(got[i]) == pytest.approx(expected, rel=RTOL)


def test_smoother_equals_dense_conditioning_on_the_observed_block(rng):
    # E[z | x_O] = μ_z + Σ_zO Σ_OO⁻¹ (x_O − μ_O),   Cov[z | x_O] = Σ_zz − Σ_zO Σ_OO⁻¹ Σ_Oz
    params, x = _random_model(rng), _data(rng)
    smoothed = rts_smoother(torch.as_tensor(x), _ssm(params))
    for i in range(N):
        mean_z, cov_z, mean_x, cov_zx, cov_x = _dense_joint(params, i)
        seen = ~np.isnan(x[i].ravel())
        gain = np.linalg.solve(cov_x[np.ix_(seen, seen)], cov_zx[:, seen].T).T
        mean = mean_z + gain @ (x[i].ravel()[seen] - mean_x[seen])
        cov = cov_z - gain @ cov_zx[:, seen].T
        np.testing.assert_allclose(smoothed.mean[i].numpy(), mean.reshape(T, D), rtol=RTOL, atol=ATOL)
        for k in range(T):
            np.testing.assert_allclose(smoothed.cov[i, k].numpy(), _block(cov, k, k), rtol=RTOL, atol=ATOL)
        for k in range(T - 1):
            np.testing.assert_allclose(smoothed.cross_cov[i, k].numpy(), _block(cov, k + 1, k), rtol=RTOL, atol=ATOL)


def test_filter_and_smoother_agree_at_the_last_time(rng):
    params, x = _random_model(rng), torch.as_tensor(_data(rng))
    filtered, smoothed = kalman_filter(x, _ssm(params)), rts_smoother(x, _ssm(params))
    torch.testing.assert_close(filtered.mean[:, -1], smoothed.mean[:, -1], rtol=0, atol=0)
    torch.testing.assert_close(filtered.cov[:, -1], smoothed.cov[:, -1], rtol=0, atol=0)
    torch.testing.assert_close(filtered.log_likelihood, smoothed.log_likelihood, rtol=0, atol=0)


def test_a_series_with_nothing_observed_keeps_the_prior(rng):
    params, x = _random_model(rng), _data(rng)
    x[1] = np.nan
    smoothed = rts_smoother(torch.as_tensor(x), _ssm(params))
    mean_z, cov_z = _dense_prior(params, 1)
    assert float(smoothed.log_likelihood[1]) == 0.0
    np.testing.assert_allclose(smoothed.mean[1].numpy(), mean_z.reshape(T, D), rtol=RTOL, atol=ATOL)
    for k in range(T):
        np.testing.assert_allclose(smoothed.cov[1, k].numpy(), _block(cov_z, k, k), rtol=RTOL, atol=ATOL)
    for k in range(T - 1):
        np.testing.assert_allclose(smoothed.cross_cov[1, k].numpy(), _block(cov_z, k + 1, k), rtol=RTOL, atol=ATOL)


def test_shared_and_per_series_parameters_give_the_same_answer(rng):
    params, x = _random_model(rng), torch.as_tensor(_data(rng))
    per_series = {k: np.broadcast_to(v, (N, *v.shape)) if k in ("P0", "F", "c", "Q") else v for k, v in params.items()}
    shared, expanded = rts_smoother(x, _ssm(params)), rts_smoother(x, _ssm(per_series))
    torch.testing.assert_close(shared.cov, expanded.cov, rtol=0, atol=0)
    torch.testing.assert_close(shared.log_likelihood, expanded.log_likelihood, rtol=0, atol=0)


def test_results_take_the_dtype_of_the_data(rng):
    params, x = _random_model(rng), torch.as_tensor(_data(rng), dtype=torch.float32)
    smoothed = rts_smoother(x, _ssm(params))
    assert smoothed.mean.dtype == smoothed.cross_cov.dtype == smoothed.log_likelihood.dtype == torch.float32
    assert smoothed.cross_cov.shape == (N, T - 1, D, D)


def test_shapes_are_checked_at_the_door(rng):
    params = _random_model(rng)
    with pytest.raises(ValueError, match=r"c must have shape \(5, 2\)"):
        _ssm({**params, "c": params["c"][:, :1]})
    with pytest.raises(ValueError, match="disagree on the number of series"):
        _ssm({**params, "P0": np.broadcast_to(params["P0"], (N + 1, D, D))})
    with pytest.raises(ValueError, match=r"x must have shape \(3, 6, 3\)"):
        kalman_filter(torch.zeros(N, T - 1, M), _ssm(params))


# --- a diffuse start ---------------------------------------------------------------------------

def _flat_start_brute_force(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """log ∫ p(x | z) Π_k N(z_{k+1}; F_k z_k + c_k, Q_k) dz for one series x (T, M), z_0 under the
    flat (Lebesgue) start, and the posterior mean (T·d,) and covariance of the path. The log
    integrand f is quadratic in the whole path z, so with M = −∇²f and g = ∇f(0),
    ∫ e^f = e^{f(0) + ½ gᵀ M⁻¹ g} |2π M⁻¹|^{1/2}, the posterior N(M⁻¹ g, M⁻¹): exact, no recursion."""
    p = {k: torch.tensor(v) for k, v in params.items()}
    seen = torch.as_tensor(~np.isnan(x))
    filled = torch.where(seen, torch.as_tensor(x), 0.0)

    def log_integrand(flat: torch.Tensor) -> torch.Tensor:
        z = flat.reshape(T, D)
        steps = gaussian_log_prob(z[1:], (p["F"] @ z[:-1, :, None])[..., 0] + p["c"], p["Q"])
        noise = -0.5 * ((filled - z @ p["H"].mT).square() / p["r"] + torch.log(2 * np.pi * p["r"]))
        return steps.sum() + torch.where(seen, noise, 0.0).sum()

    zero = torch.zeros(T * D)
    precision = -torch.autograd.functional.hessian(log_integrand, zero)
    gradient = torch.autograd.functional.jacobian(log_integrand, zero)
    cov = torch.linalg.inv(precision)
    log_evidence = (log_integrand(zero) + 0.5 * gradient @ cov @ gradient
                    + 0.5 * torch.logdet(2 * np.pi * cov))
    return float(log_evidence), (cov @ gradient).numpy(), cov.numpy()


def test_a_diffuse_start_gives_the_flat_start_evidence_and_posterior(rng):
    # The finite κ leaves a gap of at most (|a|² + tr B⁻¹)/2κ ≈ 1e-7 here (module docstring),
    # and its O(1/κ) moves of the posterior are as small: 1e-6 bounds both with a margin, while
    # a start law of any finite spread (or a missing log(2πκ) term) misses by 1e-2 or more.
    params, x = _random_model(rng), _data(rng)
    smoothed = rts_smoother(torch.as_tensor(x), LinearGaussianSSM(
        **{k: torch.tensor(v) for k, v in params.items()}, diffuse=True))
    for i in range(N):
        log_evidence, mean, cov = _flat_start_brute_force(params, x[i])
        assert float(smoothed.log_likelihood[i]) == pytest.approx(log_evidence, abs=1e-6)
        np.testing.assert_allclose(smoothed.mean[i].numpy(), mean.reshape(T, D), rtol=0, atol=1e-6)
        for k in range(T):
            np.testing.assert_allclose(smoothed.cov[i, k].numpy(), _block(cov, k, k), rtol=0, atol=1e-6)


def test_a_diffuse_start_needs_every_direction_of_the_state_seen(rng):
    params = _random_model(rng)
    params["H"] = np.outer(params["H"][:, 0], [1.0, 1.0])  # rank 1: z_0's other direction unseen
    with pytest.raises(ValueError, match="full column rank"):
        kalman_filter(torch.as_tensor(_data(rng)), LinearGaussianSSM(
            **{k: torch.tensor(v) for k, v in params.items()}, diffuse=True))
