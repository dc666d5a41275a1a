import numpy as np
import pytest

from invae.evaluation.simulate import (GRAPHS, Problem, forward_matrix, graph_adjacency, simulate_problem,
                                       sparse_precision)


@pytest.mark.parametrize("graph, p, edges", [("chain", 10, 9), ("hub", 20, 18), ("grid", 16, 24), ("grid", 10, 13)])
def test_graph_edge_counts(graph, p, edges, rng):
    # hub: 2 groups of 10, 9 spokes each; grid 4×4: 2·4·3 = 24; grid width 4 over 10 nodes: 7 + 6 = 13
    adj = graph_adjacency(graph, p, rng)
    assert adj.sum() // 2 == edges
    assert (adj == adj.T).all() and not adj.diagonal().any()


def test_erdos_renyi_has_the_expected_degree(rng):
    # Each of p(p−1)/2 pairs independently with probability 2/(p−1): edges ~ Binomial, mean p.
    p = 200
    n_pairs, prob = p * (p - 1) // 2, 2 / (p - 1)
    edges = graph_adjacency("erdos-renyi", p, rng).sum() // 2
    assert abs(edges - n_pairs * prob) < 5 * np.sqrt(n_pairs * prob * (1 - prob))


@pytest.mark.parametrize("graph", GRAPHS)
def test_precision_is_sparse_pd_with_unit_variances(graph, rng):
    precision = sparse_precision(graph, 25, np.random.default_rng(7), condition_number=10.0)
    adj = graph_adjacency(graph, 25, np.random.default_rng(7))
    off = ~np.eye(25, dtype=bool)
    np.testing.assert_array_equal(precision[off] != 0, adj[off])
    np.testing.assert_allclose(np.diag(np.linalg.inv(precision)), 1.0, rtol=1e-10)
    eig = np.linalg.eigvalsh(precision)
    assert eig[0] > 0 and eig[-1] / eig[0] < 100


def test_forward_matrices(rng):
    assert (forward_matrix("identity", 4, rng) == np.eye(4)).all()
    assert forward_matrix("gaussian", 6, rng).shape == (6, 6)
    assert forward_matrix("compressive", 6, rng).shape == (3, 6)
    with pytest.raises(ValueError, match="m < p"):
        forward_matrix("compressive", 6, rng, m=6)
    with pytest.raises(ValueError, match="unknown forward"):
        forward_matrix("blur", 6, rng)


def test_same_seed_same_problem_and_data_follow_the_model():
    first = simulate_problem(p=6, n=40_000, forward="gaussian", noise_std=0.7, seed=11)
    again = simulate_problem(p=6, n=40_000, forward="gaussian", noise_std=0.7, seed=11)
    other = simulate_problem(p=6, n=40_000, forward="gaussian", noise_std=0.7, seed=12)
    for name in ("X", "Z", "A", "precision"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.allclose(first.X, other.X)
    resid = first.X - first.Z @ first.A.T
    # residual variance 0.49: SE of a sample variance 0.49·√(2/n); 5 SE
    assert np.all(np.abs(resid.var(0) - 0.49) < 5 * 0.49 * np.sqrt(2 / 40_000))


def test_save_and_load_round_trip(tmp_path):
    problem = simulate_problem(p=4, n=10, seed=0)
    problem.save(tmp_path / "pb")
    loaded = Problem.load(tmp_path / "pb")
    np.testing.assert_array_equal(loaded.X, problem.X)
    assert loaded.noise_std == problem.noise_std and loaded.settings == problem.settings
    assert sorted(p.name for p in (tmp_path / "pb").iterdir()) == [
        "A.npy", "X.npy", "Z.npy", "precision.npy", "problem.json"]
