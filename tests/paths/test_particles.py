import math

import pytest
import torch

from invae.model.forward import LinearOperator
from invae.model.likelihoods import PoissonLikelihood, linear_gaussian
from invae.paths.kalman import LinearGaussianSSM, kalman_filter, rts_smoother
from invae.paths.particles import particle_filter, particle_smoother, repeated_log_likelihood, systematic_resampling
from invae.paths.sde import DoubleWell, OrnsteinUhlenbeck

N_SERIES, STEPS, NOISE, PARTICLES, REPEATS = 5, 20, 0.5, 1000, 20
WIDE_NOISE = 3.0  # flat weights: particles are rarely resampled


def _ou(d: int) -> OrnsteinUhlenbeck:
    if d == 1:
        return OrnsteinUhlenbeck(1, drift=1.0, mean=0.3, diffusion=1.0)
    return OrnsteinUhlenbeck(2, drift=[[1.0, 0.5], [-0.3, 0.8]], mean=[0.5, -0.2],
                             diffusion=[[1.0, 0.0], [0.3, 0.7]])


@pytest.fixture(params=[1, 2], ids=lambda d: f"d={d}")
def case(request, generator):
    return _linear_gaussian_case(request.param, generator)


def _linear_gaussian_case(d: int, generator: torch.Generator):
    """An OU prior seen through x = z + σ ε (H = I, σ = 0.5), T = 20 irregular times (shared for
    d = 1, per series for d = 2), time 5 missing everywhere and one entry of series 1 at time 8;
    with the exact linear-Gaussian state-space model built by hand from the prior."""
    prior = _ou(d)
    steps = 0.1 + 0.4 * torch.rand(N_SERIES if d == 2 else 1, STEPS, generator=generator)
    times = steps.cumsum(-1) if d == 2 else steps[0].cumsum(-1)
    x = prior.simulate(N_SERIES, times, generator=generator)
    x = x + NOISE * torch.randn(x.shape, generator=generator)
    x[:, 5] = math.nan
    x[1, 8, 0] = math.nan
    with torch.no_grad():
        f, c, q = prior.linear_transition(times.diff(dim=-1))
        m0, p0 = (value.detach() for value in prior.initial())  # initial() hands back the parameter μ itself
    exact = LinearGaussianSSM(m0, p0, f, c, q, torch.eye(d), torch.full((d,), NOISE**2))
    return prior, times, x, linear_gaussian(torch.eye(d), NOISE), exact


def _sd(cov: torch.Tensor) -> torch.Tensor:
    return cov.diagonal(dim1=-2, dim2=-1).sqrt()


def _counts(index: torch.Tensor, p: int) -> torch.Tensor:
    """How often each of p particles is drawn, per row of indices (rows, p)."""
    return torch.zeros(index.shape[0], p).scatter_add_(1, index, torch.ones(index.shape))


def test_systematic_resampling_counts_are_within_one_of_n_w(generator):
    # Its defining property: the P points are 1/P apart, so particle j is drawn ⌊P w_j⌋ or ⌈P w_j⌉
    # times; and unbiased, E[count_j] = P w_j: a count of variance ≤ 1/4 averaged over 400 draws
    # has sd ≤ 0.025, so 0.125 is 5 sds (a fixed U, e.g. ½, misses by up to ½).
    p, draws = 50, 400
    weights = torch.softmax(3 * torch.randn(8, p, generator=generator), -1)
    weights[0] = torch.nn.functional.one_hot(torch.tensor(7), p)  # all the mass on one particle
    counts = _counts(systematic_resampling(weights.repeat(draws, 1), generator), p).reshape(draws, 8, p)
    assert (counts - p * weights).abs().max() < 1
    assert (counts.mean(0) - p * weights).abs().max() < 0.125
    assert (counts[:, 0, 7] == p).all()


def test_log_likelihood_matches_kalman(case, generator):
    # p̂(x) is unbiased, so log p̂(x) is biased low by about var / 2 = se² / 2 (delta method): the mean
    # of R = 20 runs must lie within 4 standard errors of the mean, se / √R, plus that bias, of log p(x).
    prior, times, x, likelihood, exact = case
    mean, se = repeated_log_likelihood(x, times, prior, likelihood, repeats=REPEATS, n_particles=PARTICLES,
                                       generator=generator)
    truth = kalman_filter(x, exact).log_likelihood
    assert ((mean - truth).abs() < 4 * se / math.sqrt(REPEATS) + se**2 / 2).all()


def test_filtered_means_match_kalman(case, generator):
    # Error of a weighted mean ≈ sd / √ESS; errors carried from earlier times make the time's own ESS
    # optimistic, so the series' smallest ESS, and a generous factor 5 over ≈ 200 comparisons.
    prior, times, x, likelihood, exact = case
    result = particle_filter(x, times, prior, likelihood, n_particles=PARTICLES, generator=generator)
    truth = kalman_filter(x, exact)
    tolerance = 5 * _sd(truth.cov) / result.ess.min(-1).values.sqrt()[:, None, None]
    assert ((result.mean - truth.mean).abs() < tolerance).all()
    assert result.ess.shape == (N_SERIES, STEPS) and (result.ess <= PARTICLES * (1 + 1e-12)).all()


def test_smoother_mean_matches_rts(case, generator):
    # The S paths share one particle approximation, whose own error is about that of min-ESS independent
    # draws: effective paths S_eff = 1 / (1/S + 1/min ESS), tolerance 6 posterior sds / √S_eff. Generous:
    # the ESS sees the spread of the weights, not the correlations resampling carries over from earlier
    # times (over 20 seeds of this case the largest error reached 5.0 such units).
    prior, times, x, likelihood, exact = case
    paths = 200
    result = particle_smoother(x, times, prior, likelihood, n_particles=PARTICLES, n_paths=paths,
                               generator=generator)
    effective = 1 / (1 / paths + 1 / result.ess.min(-1).values)
    truth = rts_smoother(x, exact)
    sd = _sd(truth.cov)
    assert result.paths.shape == (paths, N_SERIES, STEPS, prior.dim)
    assert ((result.mean - truth.mean).abs() < 6 * sd / effective.sqrt()[:, None, None]).all()
    # Each series' average ratio of sds: over 20 seeds within 0.04 of 1; a collapsed smoother is far below.
    assert ((result.std / sd).mean(dim=(1, 2)) - 1).abs().max() < 0.1


def test_substeps_compose_the_exact_ou_transitions(generator):
    # OU steps are exact, so two half-steps between observations give the same model: the same
    # evidence (as above), and genealogy tracing must recover the smoothing means at the last
    # times, where the paths have not yet collapsed onto few ancestors.
    prior, times, x, likelihood, exact = _linear_gaussian_case(2, generator)
    mean, se = repeated_log_likelihood(x, times, prior, likelihood, repeats=REPEATS, n_particles=PARTICLES,
                                       substeps=2, generator=generator)
    assert ((mean - kalman_filter(x, exact).log_likelihood).abs()
            < 4 * se / math.sqrt(REPEATS) + se**2 / 2).all()
    result = particle_smoother(x, times, prior, likelihood, n_particles=PARTICLES, n_paths=200, substeps=2,
                               generator=generator)
    truth = rts_smoother(x, exact)
    effective = 1 / (1 / 200 + 1 / result.ess.min(-1).values)  # as for the backward simulation above
    tolerance = 6 * _sd(truth.cov[:, -3:]) / effective.sqrt()[:, None, None]
    assert ((result.mean[:, -3:] - truth.mean[:, -3:]).abs() < tolerance).all()


def test_double_well_log_likelihood_matches_quadrature(generator):
    # A nonlinear drift: the filter's model (one Euler–Maruyama step between observations) filtered
    # exactly on a fine grid of z (trapezoid rule, spacing 0.004 ≪ the step's sd 0.27, so its error
    # is far below Monte Carlo's).
    prior = DoubleWell(theta1=2.0, theta2=1.0, diffusion=0.5, start_mean=0.0, start_scale=1.0)
    times = torch.arange(10) * 0.3
    x = prior.simulate(3, times, generator=generator) + NOISE * torch.randn(3, 10, 1, generator=generator)
    likelihood = linear_gaussian(torch.eye(1), NOISE)
    mean, se = repeated_log_likelihood(x, times, prior, likelihood, repeats=REPEATS, n_particles=PARTICLES,
                                       generator=generator)
    truth = torch.stack([_quadrature_log_likelihood(prior, series, 0.3) for series in x[:, :, 0]])
    assert ((mean - truth).abs() < 4 * se / math.sqrt(REPEATS) + se**2 / 2).all()


def test_particles_that_explode_weigh_nothing(generator):
    # Euler–Maruyama with the cubic drift at Δ = 0.3 sends a particle from |z| > √(θ₂ + 2/(θ₁Δ)) = 2.08
    # to ±inf in a few steps; a start of sd 1.5 puts 16% of the particles there, and noise of sd 3
    # keeps the weights flat, so they are not resampled away before they overflow. Such a path's
    # observations have density 0 in the limit: its weight is 0, and log p̂ still matches the
    # quadrature (whose grid drops the mass that leaves [−4, 4]), within the bound of the test above.
    prior = DoubleWell(theta1=2.0, theta2=1.0, diffusion=0.5, start_mean=0.0, start_scale=1.5)
    times = torch.arange(10) * 0.3
    x = prior.simulate(3, times, substeps=10, generator=generator)
    x = x + WIDE_NOISE * torch.randn(3, 10, 1, generator=generator)
    likelihood = linear_gaussian(torch.eye(1), WIDE_NOISE)
    mean, se = repeated_log_likelihood(x, times, prior, likelihood, repeats=REPEATS, n_particles=PARTICLES,
                                       generator=generator)
    truth = torch.stack([_quadrature_log_likelihood(prior, series, 0.3, WIDE_NOISE) for series in x[:, :, 0]])
    assert torch.isfinite(mean).all()
    assert ((mean - truth).abs() < 4 * se / math.sqrt(REPEATS) + se**2 / 2).all()


def _quadrature_log_likelihood(prior: DoubleWell, x: torch.Tensor, dt: float, noise: float = NOISE) -> torch.Tensor:
    """log p(x) of one series x (T,) by the forward recursion on a grid of z in [−4, 4]."""
    z = torch.linspace(-4, 4, 2001)
    h = z[1] - z[0]
    with torch.no_grad():
        start_mean, start_cov = prior.initial()
        mean, cov = prior.transition(z[:, None], dt)
    density = torch.distributions.Normal(start_mean, start_cov[0, 0].sqrt()).log_prob(z).exp()
    kernel = torch.distributions.Normal(mean, cov[0, 0].sqrt()).log_prob(z[None, :]).exp()  # (from, to)
    weights = torch.full_like(z, h)
    weights[[0, -1]] = h / 2
    log_likelihood = torch.tensor(0.0)
    for k, value in enumerate(x):
        if k:
            density = (weights * density) @ kernel
        density = density * torch.distributions.Normal(z, noise).log_prob(value).exp()
        evidence = (weights * density).sum()
        log_likelihood, density = log_likelihood + evidence.log(), density / evidence
    return log_likelihood


def test_poisson_counts_and_an_unobserved_series(generator):
    # A nonlinear drift and counts: finite answers. A series with nothing observed never changes its
    # weights, so its log p̂(x) is 0 and its ESS is P throughout (to rounding).
    prior = DoubleWell(theta1=2.0, theta2=1.0, diffusion=0.5)
    times = torch.arange(8) * 0.25
    likelihood = PoissonLikelihood(LinearOperator.identity(1))
    x = likelihood.sample(prior.simulate(4, times, generator=generator), generator).to(torch.float64)
    x[2] = math.nan
    x[0, 3] = math.nan
    result = particle_smoother(x, times, prior, likelihood, n_particles=500, n_paths=50, substeps=2,
                               generator=generator)
    assert result.log_likelihood[2].abs() < 1e-12
    assert torch.isfinite(result.log_likelihood).all() and (result.log_likelihood[[0, 1, 3]] < 0).all()
    assert torch.isfinite(result.mean).all() and torch.isfinite(result.std).all()
    filtered = particle_filter(x, times, prior, likelihood, n_particles=500, generator=generator)
    torch.testing.assert_close(filtered.ess[2], torch.full((8,), 500.0), rtol=1e-12, atol=0)


def test_inputs_are_checked():
    prior, likelihood = _ou(2), linear_gaussian(torch.eye(2), NOISE)
    x, times = torch.zeros(3, 4, 2), torch.arange(4.0)
    with pytest.raises(ValueError, match="2 columns"):
        particle_filter(torch.zeros(3, 4, 3), times, prior, likelihood)
    with pytest.raises(ValueError, match=r"times must have shape \(4,\) or \(3, 4\)"):
        particle_filter(x, torch.arange(5.0), prior, likelihood)
    with pytest.raises(ValueError, match="n_particles must be an integer >= 2"):
        particle_filter(x, times, prior, likelihood, n_particles=1)
    with pytest.raises(ValueError, match="n_paths must be an integer >= 2"):
        particle_smoother(x, times, prior, likelihood, n_paths=1)

