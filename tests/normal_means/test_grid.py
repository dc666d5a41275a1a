import numpy as np
import pytest
from scipy.stats import norm

from invae.normal_means.grid import GridPrior, default_grid, discretize, grid_posterior, log_marginal, normal_cdf, with_null_atom


def _brute_force(x, sigma, atoms, masses):
    """Bayes' rule one observation at a time with scipy's normal density."""
    out = []
    for xi, si in zip(x, sigma):
        joint = np.array([m * norm.pdf(xi, loc=a, scale=si) for a, m in zip(atoms, masses)])
        w = joint / joint.sum()
        mean = w @ atoms
        out.append((mean, np.sqrt(w @ (atoms - mean) ** 2), min(w[atoms <= 0].sum(), w[atoms >= 0].sum()),
                    w[atoms == 0].sum(), np.log(joint.sum())))
    return [np.array(column) for column in zip(*out)]


def test_posterior_on_a_discrete_prior_is_bayes_rule(rng):
    atoms, masses = np.array([-2.0, 0.0, 0.5, 3.0]), np.array([0.2, 0.5, 0.1, 0.2])
    x, sigma = rng.normal(0, 2, 50), rng.uniform(0.3, 2.0, 50)
    post = grid_posterior(x, sigma, GridPrior(atoms, masses), null=0.0)
    mean, std, lfsr, lfdr, log_f = _brute_force(x, sigma, atoms, masses)
    np.testing.assert_allclose(post.mean, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(post.std, std, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(post.lfsr, lfsr, atol=1e-12)
    np.testing.assert_allclose(post.lfdr, lfdr, atol=1e-12)
    np.testing.assert_allclose(log_marginal(x, sigma, GridPrior(atoms, masses)), log_f, rtol=1e-12)


def test_a_location_shifts_the_prior_row_by_row(rng):
    atoms, masses = np.array([-1.0, 0.0, 2.0]), np.array([0.3, 0.4, 0.3])
    x, sigma, location = rng.normal(0, 2, 40), np.full(40, 0.8), rng.normal(0, 1, 40)
    post = grid_posterior(x, sigma, GridPrior(atoms, masses), location)
    for i in range(len(x)):  # z_i has atoms a_k + ℓ_i
        mean, std, lfsr, _, _ = _brute_force(x[i:i + 1], sigma[i:i + 1], atoms + location[i], masses)
        np.testing.assert_allclose([post.mean[i], post.std[i], post.lfsr[i]], [mean[0], std[0], lfsr[0]],
                                   atol=1e-12)
    assert post.lfdr is None


def test_no_null_means_no_lfdr():
    assert grid_posterior(np.array([0.3]), 1.0, GridPrior(np.array([0.0, 2.0]), np.array([0.5, 0.5]))).lfdr is None


def test_outlying_observations_do_not_underflow():
    post = grid_posterior(np.array([60.0, -80.0]), 0.5, GridPrior(np.array([-1.0, 0.0, 1.0]), np.full(3, 1 / 3)))
    np.testing.assert_allclose(post.mean, [1.0, -1.0])


def test_discretized_normal_keeps_its_moments():
    # Each atom takes its cell's mass: the mean is exact by symmetry and the variance is
    # off by the midpoint rule's h²/12 (Sheppard), h = 0.01 here.
    atoms = np.linspace(-10, 10, 2001)
    prior = discretize(normal_cdf(0.0, 1.5), atoms)
    assert abs(prior.mean) < 1e-12
    assert abs(prior.variance - (2.25 + 0.01**2 / 12)) < 1e-6
    point = discretize(normal_cdf(0.0, 0.0), atoms)  # a point mass stays one
    assert point.masses[np.argmin(np.abs(atoms))] == pytest.approx(1.0)


def test_quantile_is_the_generalised_inverse():
    prior = GridPrior(np.array([0.0, 1.0, 5.0]), np.array([0.25, 0.5, 0.25]))
    np.testing.assert_array_equal(prior.quantile(np.array([0.01, 0.25, 0.26, 0.75, 0.76, 0.999])),
                                  [0.0, 0.0, 1.0, 1.0, 5.0, 5.0])


def test_default_grid_spans_the_data(rng):
    x = rng.normal(0.3, 2, 500)
    grid = default_grid(x, size=101)
    assert grid[0] == x.min() and grid[-1] == x.max() and len(grid) == 101 and np.all(np.diff(grid) > 0)


def test_the_null_atom_joins_the_grid_and_clears_its_margin():
    atoms = with_null_atom(np.linspace(-2, 2, 9), 0.3, margin=0.6)  # drops 0 and 0.5 (closer than 0.6)
    np.testing.assert_allclose(atoms, [-2, -1.5, -1, -0.5, 0.3, 1, 1.5, 2])
    assert list(with_null_atom(np.array([-1.0, 0.0, 1.0]), 0.0)) == [-1.0, 0.0, 1.0]  # no duplicate


def test_a_null_that_is_not_an_atom_is_refused():
    with pytest.raises(ValueError, match="not an atom"):
        grid_posterior(np.array([0.3]), 1.0, GridPrior(np.array([1.0, 2.0]), np.array([0.5, 0.5])), null=0.0)


@pytest.mark.parametrize("atoms, masses", [([0.0, 0.0], [0.5, 0.5]), ([0.0, 1.0], [0.6, 0.6]),
                                           ([0.0, 1.0], [-0.1, 1.1]), ([0.0], [1.0, 0.0])])
def test_bad_grid_priors_are_refused(atoms, masses):
    with pytest.raises(ValueError):
        GridPrior(np.array(atoms), np.array(masses))
