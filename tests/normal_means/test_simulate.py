import numpy as np
import pytest

from invae.normal_means import simulate_normal_means, true_prior


@pytest.mark.parametrize("name, mean, variance", [("two-point", 0.9, 0.3 * 0.7 * 9), ("uniform", 0.0, 3.0),
                                                  ("spike-slab", 0.0, 0.2 * 9), ("two-groups", 0.0, 0.1 * 6.25),
                                                  # 0.9 δ0 + 0.1 g₁, g₁'s E θ = −7/12, E θ² = 167/48
                                                  ("two-groups-skew", -7 / 120, 167 / 480 - (7 / 120) ** 2)])
def test_signals_and_the_grid_prior_have_the_named_moments(name, mean, variance):
    n = 40_000
    problem = simulate_normal_means(name, n, "heteroscedastic", seed=11)
    # Sample mean within 4 SE (√(variance/n)); the grid prior's moments to the midpoint rule.
    assert abs(problem.z.mean() - mean) < 4 * np.sqrt(variance / n)
    assert true_prior(name).mean == pytest.approx(mean, abs=1e-9)
    assert true_prior(name).variance == pytest.approx(variance, rel=1e-4)
    assert problem.sigma.min() >= 0.5 and problem.sigma.max() <= 2.0
    residual = (problem.x - problem.z) / problem.sigma  # N(0, 1): its variance within 4 SE (√(2/n))
    assert abs(residual.var() - 1) < 4 * np.sqrt(2 / n)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="prior"):
        simulate_normal_means("cauchy", 10)
    with pytest.raises(ValueError, match="noise"):
        simulate_normal_means("uniform", 10, noise="poisson")
