import numpy as np
from scipy.stats import norm

from invae import GaussianGraphicalModel, Naive, linear_gaussian, simulate_problem
from invae.model.forward import LinearOperator
from invae.model.likelihoods import NoisePerRowGaussianLikelihood
from invae.normal_means import GridPrior, NormalPrior
from invae.references.baselines import complete_data_floor, rank_matching


def test_naive_is_least_squares_with_its_sampling_spread(rng):
    a = rng.standard_normal((7, 3))
    x = rng.standard_normal((5, 7))
    naive = Naive(GaussianGraphicalModel(dim=3), linear_gaussian(a, 0.4)).fit(x)
    mean, std = naive.posterior(x)
    np.testing.assert_allclose(mean, np.linalg.lstsq(a, x.T, rcond=None)[0].T, rtol=1e-10)
    # Cov(ẑ) = σ²(AᵀA)⁻¹ for full column rank A
    np.testing.assert_allclose(std, np.tile(0.4 * np.sqrt(np.diag(np.linalg.inv(a.T @ a))), (5, 1)))


def test_naive_takes_one_noise_level_per_row(rng):
    # Cov(ẑ_i) = σ_i²(AᵀA)⁻¹; ẑ does not depend on σ_i.
    a, x, sigma = rng.standard_normal((7, 3)), rng.standard_normal((5, 7)), rng.uniform(0.2, 2.0, 5)
    rows = NoisePerRowGaussianLikelihood.rows(x, sigma)
    mean, std = Naive(GaussianGraphicalModel(dim=3), NoisePerRowGaussianLikelihood(LinearOperator(a))).fit(rows).posterior(rows)
    np.testing.assert_allclose(mean, np.linalg.lstsq(a, x.T, rcond=None)[0].T, rtol=1e-10)
    np.testing.assert_allclose(std, sigma[:, None] * np.sqrt(np.diag(np.linalg.inv(a.T @ a))), rtol=1e-10)


def test_naive_marks_undetermined_coordinates_as_infinitely_uncertain():
    a = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # z_1 is seen alone; z_2, z_3 only summed
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    std = Naive(GaussianGraphicalModel(dim=3), linear_gaussian(a, 1.0)).fit(x).posterior_std(x)
    assert np.isfinite(std[:, 0]).all() and np.isinf(std[:, 1:]).all()


def test_naive_precision_is_the_plug_in_m_step(rng):
    x = rng.standard_normal((50, 3))
    naive = Naive(GaussianGraphicalModel(dim=3), linear_gaussian(np.eye(3), 1.0)).fit(x)
    np.testing.assert_allclose(naive.precision_, np.linalg.inv(x.T @ x / 50), rtol=1e-10)


def test_rank_matching_keeps_order_and_takes_prior_quantiles(rng):
    estimates = rng.standard_normal((9, 2))
    matched = rank_matching(estimates, lambda u: np.array([1.0, 3.0]) * norm.ppf(u))
    for j, scale in enumerate((1.0, 3.0)):
        order = np.argsort(estimates[:, j])
        np.testing.assert_array_equal(np.argsort(matched[:, j]), order)
        np.testing.assert_allclose(matched[order, j], scale * norm.ppf((np.arange(9) + 0.5) / 9))


def test_complete_data_floor_is_the_m_step_on_true_signals():
    problem = simulate_problem(p=5, n=400, seed=0)
    floor = complete_data_floor(problem.Z, GaussianGraphicalModel(dim=5))
    np.testing.assert_allclose(floor.precision.numpy(), np.linalg.inv(problem.Z.T @ problem.Z / 400))


def test_naive_shrinks_nothing_so_rank_matching_beats_it_at_high_noise():
    # The order-statistics estimator's marginal spread is the prior's, not prior + noise.
    problem = simulate_problem(p=5, n=2000, noise_std=1.0, seed=3)
    naive_mean = problem.X
    std = np.sqrt(np.diag(np.linalg.inv(problem.precision)))
    matched = rank_matching(naive_mean, lambda u: std * norm.ppf(u))
    assert np.mean((matched - problem.Z) ** 2) < np.mean((naive_mean - problem.Z) ** 2)


def test_rank_matching_keeps_the_order_and_takes_the_prior_quantiles(rng):
    scores = rng.normal(0, 1, 1000)
    prior = GridPrior(np.array([0.0, 3.0]), np.array([0.7, 0.3]))
    z = rank_matching(scores, prior.quantile)
    order = np.argsort(scores)
    assert np.all(np.diff(z[order]) >= 0)  # the data's order
    assert (z == 3.0).sum() == 300 and (z == 0.0).sum() == 700  # the prior's masses, exactly at n = 1000


def test_rank_matching_on_a_normal_prior_gives_its_quantiles(rng):
    scores = rng.uniform(size=999)
    z = rank_matching(scores, NormalPrior(1.0, 4.0).quantile)
    np.testing.assert_allclose(np.sort(z)[499], 1.0, atol=1e-12)  # the middle rank gets the median
    np.testing.assert_allclose(np.std(z), 2.0, rtol=0.02)
