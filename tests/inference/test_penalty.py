import math

import numpy as np
import pytest
import torch

from invae import (EM, GaussianGraphicalModel, LinearOperator, PoissonLikelihood, VariationalEB, linear_gaussian,
                   simulate_problem)
from invae.inference.penalty import _mean_log_likelihood, penalty_grid, select_penalty
from invae.model.graphical_lasso import solve_precision
from invae.model.likelihoods import NoisePerRowGaussianLikelihood
from invae.references.exact import marginal_log_likelihood

# Short fits (max_iter=1) and EM at tol=1e-12 stop on their caps by design here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def problem():
    return simulate_problem(p=8, n=1500, graph="chain", forward="identity", noise_std=0.5, seed=3)


def _em(problem, alpha=0.0):
    return EM(GaussianGraphicalModel(dim=8, alpha=alpha), linear_gaussian(problem.A, 0.5), tol=1e-12)


def test_grid_with_one_noise_level_per_row_equal_to_one_sigma_is_the_same_grid(problem):
    # σ_i = 0.5 on every row: the per-row posterior covariances all equal the shared one
    rows = NoisePerRowGaussianLikelihood.rows(problem.X, 0.5)
    per_row = penalty_grid(rows, GaussianGraphicalModel(dim=8), NoisePerRowGaussianLikelihood(LinearOperator(problem.A)))
    np.testing.assert_allclose(per_row, penalty_grid(problem.X, GaussianGraphicalModel(dim=8),
                                                     linear_gaussian(problem.A, 0.5)), rtol=1e-10)


def test_grid_starts_at_the_smallest_penalty_with_a_diagonal_answer(problem):
    alphas = penalty_grid(problem.X, GaussianGraphicalModel(dim=8), linear_gaussian(problem.A, 0.5), n_alphas=5,
                          ratio=0.01)
    assert alphas[0] > alphas[-1] and alphas[-1] == pytest.approx(0.01 * alphas[0])
    # A = I, Λ = I, σ² = 1/4: posterior mean x/(1 + σ²), covariance σ²/(1 + σ²) I (EM's first E-step)
    shrink = 1 / 1.25
    s = shrink**2 * problem.X.T @ problem.X / len(problem.X) + 0.25 * shrink * np.eye(8)
    off = ~np.eye(8, dtype=bool)
    assert np.all(solve_precision(s, alphas[0])[off] == 0)
    assert np.any(solve_precision(s, 0.95 * alphas[0])[off] != 0)


def test_held_out_scores_are_the_exact_log_likelihood_of_each_fit(problem):
    alphas = [0.2, 0.05, 0.01]
    chosen, path = select_penalty(_em(problem), problem.X, alphas=alphas, holdout=0.25, seed=7)
    # Recompute every score from scratch: cold EM on the same 75% of rows, exact log p of the rest.
    order = np.random.default_rng(7).permutation(len(problem.X))
    test, train = problem.X[order[:375]], problem.X[order[375:]]
    for alpha, score in zip(path.alphas, path.score):
        fit = _em(problem, alpha).fit(train)
        expected = marginal_log_likelihood(torch.as_tensor(test), fit.prior_, fit.likelihood_).mean()
        # warm and cold EM stop within tol = 1e-12 of the same maximum; 1e-6 nats leaves room
        assert score == pytest.approx(float(expected), abs=1e-6)
    assert path.alpha == path.alphas[int(np.argmax(path.score))]
    assert chosen.prior_.alpha == path.alpha
    # the chosen estimator is refitted on all rows: it matches a cold fit there
    cold = _em(problem, path.alpha).fit(problem.X)
    np.testing.assert_allclose(chosen.precision_, cold.precision_, atol=1e-4)


def test_ebic_is_the_formula_on_the_full_data_fit(problem):
    chosen, path = select_penalty(_em(problem), problem.X, alphas=[0.3, 0.05, 0.001], criterion="ebic", gamma=0.5)
    assert all(math.isnan(s) for s in path.score)
    for alpha, ebic, edges in zip(path.alphas, path.ebic, path.edges):
        fit = _em(problem, alpha).fit(problem.X)
        total = float(marginal_log_likelihood(torch.as_tensor(problem.X), fit.prior_, fit.likelihood_).sum())
        assert edges == np.count_nonzero(np.triu(fit.precision_, k=1))
        # warm and cold EM stop apart by ~1e-7 nats per row: allow 1e-6 per row in −2ℓ
        assert ebic == pytest.approx(-2 * total + edges * (math.log(1500) + 2 * math.log(8)), abs=2 * 1500 * 1e-6)
    assert path.alpha == path.alphas[int(np.argmin(path.ebic))]
    # a chain on 8 nodes has 7 edges; the tiny penalty keeps nearly all 28 and EBIC refuses it
    assert path.alpha != 0.001


def test_path_runs_large_to_small_and_leaves_the_template_alone(problem):
    template = _em(problem)
    _, path = select_penalty(template, problem.X, alphas=[0.01, 0.3, 0.05])
    assert list(path.alphas) == [0.3, 0.05, 0.01]
    assert not hasattr(template, "prior_") and template.prior.alpha == 0.0 and not template.warm_start
    assert path.to_dict()["alphas"] == [0.3, 0.05, 0.01]


@pytest.mark.parametrize("options, message", [({"criterion": "cv"}, "criterion"), ({"holdout": 1.0}, "holdout"),
                                              ({"gamma": 2.0}, "gamma"), ({"alphas": [-1.0]}, "alphas")])
def test_bad_options_are_refused(problem, options, message):
    with pytest.raises(ValueError, match=message):
        select_penalty(_em(problem), problem.X, **options)


def test_warm_start_continues_from_the_last_fit(problem):
    # One outer iteration from the fitted Λ̂ and encoder stays near them; from scratch it does
    # not. Measured (fixed seeds): Λ moves 0.067 warm (Adam's state restarts) against 0.69 cold.
    likelihood = linear_gaussian(problem.A, 0.5)
    fitted = VariationalEB(GaussianGraphicalModel(dim=8, alpha=0.02), likelihood, max_iter=60).fit(problem.X)
    before = fitted.precision_.copy()
    fitted.warm_start, fitted.max_iter = True, 1
    fitted.fit(problem.X)
    cold = VariationalEB(GaussianGraphicalModel(dim=8, alpha=0.02), likelihood, max_iter=1).fit(problem.X)
    warm_move = np.linalg.norm(fitted.precision_ - before) / np.linalg.norm(before)
    cold_move = np.linalg.norm(cold.precision_ - before) / np.linalg.norm(before)
    assert warm_move < 0.2 * cold_move


def test_the_grid_reads_the_measurements_of_rows_that_carry_offsets(rng):
    # rows (x, o) of 2m columns: the anchor comes from the m counts on the link's scale, log(x + ½) − o
    from invae.model.forward import LinearOperator
    from invae.model.likelihoods import PoissonLikelihood

    x = rng.poisson(3.0, (200, 4)).astype(float)
    offsets = rng.normal(0, 0.3, 200)
    likelihood = PoissonLikelihood(LinearOperator(np.eye(4)), offsets=True)
    grid = penalty_grid(PoissonLikelihood.rows(x, offsets), GaussianGraphicalModel(dim=4), likelihood)
    naive = np.log(x + 0.5) - offsets[:, None]
    s = naive.T @ naive / 200
    assert grid[0] == pytest.approx(np.abs(s - np.diag(np.diag(s))).max())


def test_the_grid_of_counts_with_a_mean_is_anchored_on_the_latent_scale(rng):
    # z ~ N(μ, Σ) with μ = 2 (counts ≈ 7) and max |Σ_ij| = 0.5: log(x + ½) − o tracks z up to
    # Poisson noise, which adds to the diagonal and attenuates the off-diagonal by ≈ Var z /
    # (Var z + 1/7) ≈ 0.9; the anchor must be of Σ's size, not of the counts' (≈ 10²)
    from invae.model.forward import LinearOperator
    from invae.model.likelihoods import PoissonLikelihood

    cov = 0.5 * np.eye(5) + 0.5
    z = 2.0 + rng.multivariate_normal(np.zeros(5), cov, size=2000)
    offsets = rng.normal(0, 0.3, 2000)
    rows = PoissonLikelihood.rows(rng.poisson(np.exp(offsets[:, None] + z)).astype(float), offsets)
    likelihood = PoissonLikelihood(LinearOperator(np.eye(5)), offsets=True)
    grid = penalty_grid(rows, GaussianGraphicalModel(dim=5, fit_intercept=True), likelihood)
    assert 0.35 <= grid[0] <= 0.55


def test_held_out_score_of_a_count_model_is_its_log_likelihood():
    # Two coordinates, x ~ Poisson(exp(z)), z ~ N(0, Λ⁻¹): log p(x) by a fine grid is the truth.
    # The score's importance sampler (256 draws, ESS ≈ 100–200 per row here) is biased by about
    # −1/(2 ESS) ≈ −0.005 nats per row with a Monte Carlo SE of the 20-row mean near 0.01: 0.05 is 5 SE.
    precision = np.array([[2.0, -0.8], [-0.8, 1.5]])
    prior, likelihood = GaussianGraphicalModel(precision), PoissonLikelihood(LinearOperator(np.eye(2)))
    x = likelihood.sample(prior.sample(20, torch.Generator().manual_seed(0)), torch.Generator().manual_seed(1))
    fitted = VariationalEB(prior, likelihood).restore()
    axis = torch.linspace(-7, 7, 701, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # (701², 2)
    log_joint = prior.log_prob(grid)[:, None] + likelihood.log_prob(x[None].double(), grid[:, None, :])
    exact = torch.logsumexp(log_joint, 0) + 2 * torch.log(axis[1] - axis[0])
    assert _mean_log_likelihood(fitted, x.numpy()) == pytest.approx(float(exact.mean()), abs=0.05)
