import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm, solve_continuous_lyapunov
from scipy.stats import multivariate_normal

from invae.paths.sde import (
    SDE_PRIORS,
    Brownian,
    BrownianLearnedStart,
    DoubleWell,
    OrnsteinUhlenbeck,
    gaussian_log_prob,
    lyapunov,
    refine,
)

THETA = [[1.0, 0.8], [-0.4, 0.5]]  # non-symmetric; eigenvalues 0.75 ± 0.51i: stable
SCALE = [[0.8, 0.0], [0.3, 0.6]]


def ou2() -> OrnsteinUhlenbeck:
    return OrnsteinUhlenbeck(2, drift=THETA, mean=[0.5, -1.0], diffusion=SCALE)


def scipy_ou_law(dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(A, Q) of ou2's exact transition by scipy: A = expm(−Θ Δ), Q = Σ∞ − A Σ∞ Aᵀ."""
    theta, scale = np.array(THETA), np.array(SCALE)
    sigma = solve_continuous_lyapunov(theta, scale @ scale.T)
    a = expm(-theta * dt)
    return a, sigma - a @ sigma @ a.T


def test_refine_cuts_each_interval_into_equal_substeps():
    times = torch.tensor([[0.0, 1.0, 3.0], [0.5, 0.6, 2.0]])
    grid, index = refine(times, 2)
    torch.testing.assert_close(grid, torch.tensor([[0.0, 0.5, 1.0, 2.0, 3.0], [0.5, 0.55, 0.6, 1.3, 2.0]]))
    torch.testing.assert_close(grid[:, index], times, rtol=0, atol=0)
    assert refine(times[0], 1)[0].equal(times[0])


def test_ou_simulation_has_the_stationary_variance_and_autocorrelation(generator):
    # d = 1, θ = 0.5, s = 1: stationary variance σ² = s²/(2θ) = 1, corr(z(t), z(t + h)) = exp(−θ h).
    # Over n independent series the sample variance has SE σ² √(2/(n − 1)) and the sample correlation
    # (1 − ρ²)/√n (Gaussian pairs); Euler–Maruyama's biases (θΔ/2 = 0.25% relative on σ², 1e-3 on ρ
    # at Δ = 0.01) are below a fifth of those SEs. 4 SEs.
    theta, mu, n = 0.5, 0.3, 10_000
    prior = OrnsteinUhlenbeck(1, drift=theta, mean=mu, diffusion=1.0)
    z = prior.simulate(n, torch.arange(7.0), substeps=100, generator=generator)[..., 0]
    late, later = z[:, 5], z[:, 6]
    assert abs(late.mean().item() - mu) < 4 / math.sqrt(n)
    assert abs(late.var().item() - 1.0) < 4 * math.sqrt(2 / (n - 1))
    rho = math.exp(-theta)
    assert abs(torch.corrcoef(torch.stack([late, later]))[0, 1].item() - rho) < 4 * (1 - rho**2) / math.sqrt(n)


def test_lyapunov_solves_the_equation_and_matches_scipy():
    prior = ou2()
    theta, scale = prior.drift_matrix.detach(), prior.diffusion().detach()
    sigma = prior.stationary_covariance().detach()
    torch.testing.assert_close(theta @ sigma + sigma @ theta.T, scale @ scale.T, rtol=0, atol=1e-13)
    expected = solve_continuous_lyapunov(np.array(THETA), np.array(SCALE) @ np.array(SCALE).T)
    np.testing.assert_allclose(sigma.numpy(), expected, rtol=1e-12)


def test_lyapunov_is_differentiable(rng):
    theta = torch.as_tensor(np.array(THETA)).requires_grad_()
    q = torch.as_tensor(rng.standard_normal((2, 2))).requires_grad_()
    assert torch.autograd.gradcheck(lyapunov, (theta, q))


def test_ou_exact_transition_is_the_stationary_formula_and_its_linear_form(rng):
    # Q = Σ∞ − A Σ∞ Aᵀ and A = expm(−Θ Δ) by scipy, per step; mean = A z + b = μ + A (z − μ).
    prior, dt = ou2(), torch.tensor([0.05, 0.7, 2.0])
    z = torch.as_tensor(rng.standard_normal((3, 2)))
    mean, cov = prior.transition(z, dt)
    a, b, q = prior.linear_transition(dt)
    torch.testing.assert_close(mean, (a @ z.unsqueeze(-1)).squeeze(-1) + b, rtol=0, atol=1e-14)
    torch.testing.assert_close(cov, q, rtol=0, atol=0)
    for k, step in enumerate(dt.tolist()):
        a_ref, q_ref = scipy_ou_law(step)
        expected_mean = [0.5, -1.0] + a_ref @ (z[k].numpy() - [0.5, -1.0])
        np.testing.assert_allclose(mean[k].detach().numpy(), expected_mean, rtol=1e-12)
        np.testing.assert_allclose(cov[k].detach().numpy(), q_ref, rtol=1e-10, atol=1e-14)


def test_ou_transition_with_zero_drift_is_the_brownian_one():
    # Van Loan's Q holds for every Θ, also Θ = 0 where no stationary law exists: Q = S Sᵀ Δ.
    ou = OrnsteinUhlenbeck(2, drift=0.0, diffusion=SCALE)
    dt = torch.tensor([0.1, 3.0])
    for left, right in zip(ou.linear_transition(dt), Brownian(2, diffusion=SCALE).linear_transition(dt)):
        torch.testing.assert_close(left.detach(), right.detach(), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="no stationary law"):
        ou.initial()


def test_exact_and_euler_maruyama_transitions_differ_by_order_dt_squared():
    # mean: (expm(−ΘΔ) − I + ΘΔ)(z − μ) = Θ²Δ²/2 (z − μ) + O(Δ³); cov: −(ΘSSᵀ + SSᵀΘᵀ)Δ²/2 + O(Δ³).
    # Halving Δ divides the differences by 4 (1 + O(Δ)): within 10% at Δ ≤ 0.02.
    prior, z = ou2(), torch.tensor([1.5, 0.2])

    def gaps(dt: float) -> tuple[float, float]:
        (exact_mean, exact_cov), (em_mean, em_cov) = prior.transition(z, dt), prior.euler_maruyama(z, dt)
        return (exact_mean - em_mean).norm().item(), (exact_cov - em_cov).norm().item()

    for dt in (0.02, 0.01):
        for coarse, fine in zip(gaps(dt), gaps(dt / 2)):
            assert 3.6 < coarse / fine < 4.4


def test_ou_log_prob_is_the_sum_of_scipy_logpdfs_of_its_transitions(rng):
    # Times (n, T) per path, two sub-steps: the path lives on refine's grid (n, 2(T − 1) + 1).
    prior, n = ou2(), 3
    times = torch.as_tensor(np.cumsum(rng.uniform(0.1, 1.0, (n, 4)), axis=1))
    grid, _ = refine(times, 2)
    z = torch.as_tensor(rng.standard_normal((n, grid.shape[1], 2)))
    mu = np.array([0.5, -1.0])
    sigma = solve_continuous_lyapunov(np.array(THETA), np.array(SCALE) @ np.array(SCALE).T)
    expected = multivariate_normal(mu, sigma).logpdf(z[:, 0].numpy())
    for i in range(n):
        for j in range(grid.shape[1] - 1):
            a, q = scipy_ou_law((grid[i, j + 1] - grid[i, j]).item())
            expected[i] += multivariate_normal(mu + a @ (z[i, j].numpy() - mu), q).logpdf(z[i, j + 1].numpy())
    np.testing.assert_allclose(prior.log_prob(z, times, substeps=2).detach().numpy(), expected, rtol=1e-10)


def test_ou_log_prob_is_differentiable_in_its_parameters(rng):
    prior = ou2()
    z, times = torch.as_tensor(rng.standard_normal((2, 3, 2))), torch.tensor([0.0, 0.4, 1.5])
    names = [name for name, _ in prior.named_parameters()]

    def log_density(*values):
        return torch.func.functional_call(prior, dict(zip(names, values)), (z, times))

    values = tuple(value.detach().clone().requires_grad_() for value in prior.parameters())
    assert torch.autograd.gradcheck(log_density, values)


def test_euler_maruyama_log_prob_is_the_sum_of_gaussian_logpdfs(rng):
    # The double well's transitions: N(z + θ₁ z (θ₂ − z²) Δ, s² Δ); its start N(m, exp(2ℓ)).
    prior = DoubleWell(theta1=1.5, theta2=0.8, diffusion=0.4, start_mean=0.2, start_scale=1.3)
    times = np.array([0.0, 0.3, 0.5, 1.4])
    z = rng.standard_normal((4, 4, 1))
    expected = multivariate_normal(0.2, 1.3**2).logpdf(z[:, 0, 0])
    for j in range(3):
        dt, x = times[j + 1] - times[j], z[:, j, 0]
        expected += np.array([multivariate_normal(m, 0.4**2 * dt).logpdf(y)
                              for m, y in zip(x + 1.5 * x * (0.8 - x**2) * dt, z[:, j + 1, 0])])
    log_density = prior.log_prob(torch.as_tensor(z), torch.as_tensor(times))
    np.testing.assert_allclose(log_density.detach().numpy(), expected, rtol=1e-12)


def test_brownian_transition_and_simulated_variance(generator):
    # Var z(t) = start_scale² + s² t exactly (Euler–Maruyama is exact here); SE of a sample variance
    # v √(2/(n − 1)), 4 SEs.
    prior, n = BrownianLearnedStart(1, diffusion=0.7, start_mean=1.0, start_scale=0.5), 20_000
    mean, cov = prior.transition(torch.tensor([[2.0]]), 0.3)
    torch.testing.assert_close(mean, torch.tensor([[2.0]]))
    torch.testing.assert_close(cov.detach(), torch.tensor([[0.49 * 0.3]]))
    times = torch.tensor([0.0, 1.0, 4.0])
    variance = 0.25 + 0.49 * times
    z = prior.simulate(n, times, substeps=3, generator=generator)[..., 0]
    assert torch.all((z.var(0) - variance).abs() < 4 * variance * math.sqrt(2 / (n - 1)))
    assert torch.all((z.mean(0) - 1.0).abs() < 4 * variance.sqrt() / math.sqrt(n))


def test_double_well_drift_formula():
    prior = DoubleWell(theta1=2.0, theta2=3.0)
    z = torch.tensor([[-2.0], [0.0], [0.5], [math.sqrt(3.0)]])
    expected = 2.0 * z * (3.0 - z**2)
    torch.testing.assert_close(prior.drift(z).detach(), expected, rtol=1e-15, atol=1e-15)
    assert prior.parameters_by_name()["theta1"] == pytest.approx(2.0, rel=1e-15)


def test_double_well_paths_with_small_noise_settle_in_a_well_and_stay(generator):
    # θ₁ = 1, θ₂ = 2, s = 0.1: wells at ±√2 with curvature 2θ₁θ₂ = 4, so a spread of about
    # s/√8 ≈ 0.035 there; leaving 0 takes ~ log(√2/s)/(θ₁θ₂) ≈ 1.3; a hop over the barrier
    # θ₁θ₂²/4 = 1 has rate ~ exp(−2/s²) = e⁻²⁰⁰. So from t = 5 every path is within 0.2 (≈ 6 spreads)
    # of one well, and the same one; by symmetry each well holds half (4 binomial SEs).
    prior, n = DoubleWell(theta1=1.0, theta2=2.0, diffusion=0.1), 500
    z = prior.simulate(n, torch.arange(11.0), substeps=20, generator=generator)[:, 5:, 0]
    assert torch.all((z.abs() - math.sqrt(2.0)).abs() < 0.2)
    assert torch.all(torch.sign(z) == torch.sign(z[:, :1]))
    assert abs((z[:, 0] > 0).double().mean().item() - 0.5) < 4 * 0.5 / math.sqrt(n)


def test_parameters_by_name_are_numbers_in_one_dimension():
    assert OrnsteinUhlenbeck(1, drift=0.7, mean=2.0, diffusion=0.3).parameters_by_name() == pytest.approx(
        {"drift": 0.7, "mean": 2.0, "diffusion": 0.3}, rel=1e-15)
    named = ou2().parameters_by_name()
    torch.testing.assert_close(named["drift"], torch.tensor(THETA))
    torch.testing.assert_close(named["diffusion"], torch.tensor(SCALE))


@pytest.mark.parametrize("times", [[0.0, 1.0, 1.0], [1.0, 0.5], [[0.0, 1.0], [1.0, 0.0]], [0.0, math.nan],
                                   [], [[[0.0, 1.0]]]])
def test_bad_times_are_refused(times):
    with pytest.raises(ValueError, match="times"):
        refine(times)
    with pytest.raises(ValueError, match="times"):
        ou2().simulate(2, times)


def test_bad_shapes_and_settings_are_refused():
    prior, times = ou2(), torch.tensor([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"shape \(n, 5, 2\)"):
        prior.log_prob(torch.zeros(4, 3, 2), times, substeps=2)
    with pytest.raises(ValueError, match="n = 4 rows"):
        prior.log_prob(torch.zeros(4, 3, 2), times.expand(3, 3))
    with pytest.raises(ValueError, match="substeps"):
        refine(times, 0)
    with pytest.raises(ValueError, match="lower-triangular"):
        OrnsteinUhlenbeck(2, diffusion=[[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match="one-dimensional"):
        DoubleWell(dim=2)
    with pytest.raises(ValueError, match="no stationary law"):
        OrnsteinUhlenbeck(2, drift=[[-0.1, 0.0], [0.0, 1.0]]).initial()


def test_diffuse_brownian_density_is_its_transitions_alone(generator):
    # The flat start adds log p(z_0) = 0: the diffuse log-density is the learned-start one less
    # the start's Gaussian term, for any path.
    diffuse, learned = Brownian(2, diffusion=SCALE), BrownianLearnedStart(2, diffusion=SCALE, start_mean=0.3)
    times, refined = torch.tensor([0.0, 0.4, 1.5]), torch.randn(5, 5, 2, generator=generator)
    expected = learned.log_prob(refined, times, substeps=2) - gaussian_log_prob(refined[:, 0], *learned.initial())
    torch.testing.assert_close(diffuse.log_prob(refined, times, substeps=2), expected, rtol=1e-14, atol=1e-14)


def test_diffuse_brownian_has_no_start_law_but_simulates_from_a_given_start(generator):
    prior = Brownian(1, diffusion=0.7, start_mean=5.0, start_scale=2.0)
    with pytest.raises(ValueError, match="diffuse start"):
        prior.initial()
    with pytest.raises(ValueError, match="diffuse start"):
        prior.simulate(3, [0.0, 1.0])
    z = prior.simulate(20_000, torch.tensor([0.0, 2.0]), generator=generator, start=torch.tensor([1.5]))
    assert bool((z[:, 0] == 1.5).all())
    # Var z(2) = s² · 2 = 0.98; SE of a sample variance v √(2/(n − 1)), 4 SEs.
    assert abs(float(z[:, 1, 0].var()) - 0.98) < 4 * 0.98 * math.sqrt(2 / 19_999)
    mean, spread = prior.start_units()
    assert float(mean) == 5.0 and float(spread) == 2.0  # units only: not parameters
    assert [name for name, _ in prior.named_parameters()] == ["diffusion_log_diag", "diffusion_lower"]


def test_registry_holds_the_priors():
    assert SDE_PRIORS.names() == ("ou", "brownian", "brownian-learned-start", "double-well")
    for name in SDE_PRIORS:
        prior = SDE_PRIORS[name](1)
        start = torch.zeros(1) if prior.diffuse else None
        assert prior.simulate(2, [0.0, 1.0], start=start).shape == (2, 2, 1)
