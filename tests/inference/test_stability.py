import numpy as np
import pytest

from invae import EM, GaussianGraphicalModel, linear_gaussian, simulate_problem
from invae.inference.stability import selection_frequencies, stars


@pytest.fixture(scope="module")
def chain():
    return simulate_problem(p=6, n=2000, graph="chain", noise_std=0.5, seed=5)


def test_an_edge_every_half_finds_scores_one_and_a_planted_non_edge_near_zero(chain):
    # halves of 1000 rows: the chain's partial correlations are ~10 standard errors (1/√1000 ≈ 0.03)
    # clear of 0, the graphical lasso's α = 0.1 is ~3 of them above a non-edge's noise: every
    # half keeps the chain, and a non-edge survives with a probability of order 1e-3 per half
    em = EM(GaussianGraphicalModel(dim=6, alpha=0.1), linear_gaussian(np.eye(6), 0.5)).fit(chain.X)
    theta = selection_frequencies(em, chain.X, [0.1], subsamples=10, seed=0)[0]
    true_edges = np.triu(chain.precision != 0, k=1)
    assert np.allclose(theta, theta.T) and np.all((0 <= theta) & (theta <= 1))
    assert np.all(theta[true_edges] == 1.0)
    assert theta[0, 5] <= 0.1  # the chain's two ends; pairs two steps apart may be kept by the lasso's bias


def test_stars_takes_the_densest_graph_whose_instability_stays_below_beta():
    # a 15-variable chain (105 pairs: one edge torn between halves moves D by ≤ 0.005)
    chain = simulate_problem(p=15, n=2000, graph="chain", noise_std=0.5, seed=5)
    em = EM(GaussianGraphicalModel(dim=15), linear_gaussian(np.eye(15), 0.5))
    alphas = np.geomspace(0.5, 0.01, 10)
    path, theta = stars(em, chain.X, alphas, subsamples=10, seed=0, beta=0.05)
    envelope = np.asarray(path.envelope)
    chosen = path.alphas.index(path.alpha)
    assert envelope[chosen] <= 0.05 and (chosen == len(alphas) - 1 or envelope[chosen + 1] > 0.05)
    assert np.all(np.diff(envelope) >= 0)  # monotone from the sparse end
    assert np.all(theta[np.triu(chain.precision != 0, k=1)] == 1.0)  # the chosen graph keeps the chain


def test_refits_in_two_processes_give_the_frequencies_of_one(chain):
    # every refit is a seeded copy of the same fit: where it runs cannot change its Λ̂; the
    # α path near the lasso's threshold, where a half keeps an edge or not by a hair, tells
    em = EM(GaussianGraphicalModel(dim=6), linear_gaussian(np.eye(6), 0.5))
    alphas = [0.3, 0.15, 0.08]
    serial = selection_frequencies(em, chain.X, alphas, subsamples=4, seed=1)
    parallel = selection_frequencies(em, chain.X, alphas, subsamples=4, seed=1, n_jobs=2)
    assert np.array_equal(serial, parallel)
    assert np.any((serial > 0) & (serial < 1))  # some edges split the halves: a real comparison


def test_stability_needs_subsamples_and_rows():
    em = EM(GaussianGraphicalModel(dim=2), linear_gaussian(np.eye(2), 0.5))
    with pytest.raises(ValueError, match="at least one subsample"):
        selection_frequencies(em, np.zeros((10, 2)), [0.1], subsamples=0)
    with pytest.raises(ValueError, match="n_jobs must be an integer >= 1"):
        selection_frequencies(em, np.zeros((10, 2)), [0.1], n_jobs=0)
    with pytest.raises(ValueError, match="β must lie in"):
        stars(em, np.ones((10, 2)), [0.1], beta=0.7)


def test_a_rare_covariate_level_absent_from_some_halves_does_not_stop_them(chain):
    # the level holds 3 of 2000 rows: about 1 half in 8 misses it, where B's column for it is
    # not identified (the M-step keeps the fitted locations unique; docs/methods.md §3.13)
    level = np.zeros((len(chain.X), 1))
    level[:3] = 1.0
    rows = np.hstack([chain.X + 2.0 * level, level])
    em = EM(GaussianGraphicalModel(dim=6, alpha=0.1, covariates=1, fit_intercept=True),
            linear_gaussian(np.eye(6), 0.5)).fit(rows)
    rng = np.random.default_rng(0)  # the halves selection_frequencies draws with seed 0
    halves = [rng.choice(len(rows), len(rows) // 2, replace=False) for _ in range(10)]
    assert any(not np.isin(np.arange(3), half).any() for half in halves)
    theta = selection_frequencies(em, rows, [0.1], subsamples=10, seed=0)[0]
    assert np.all(theta[np.triu(chain.precision != 0, k=1)] == 1.0)
