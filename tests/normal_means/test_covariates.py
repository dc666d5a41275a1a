import numpy as np
import pytest

from invae.normal_means import fit_normal_means
from invae.normal_means.covariates import design_matrix, location_fit


def test_group_labels_become_indicators_and_numbers_enter_linearly():
    with pytest.warns(UserWarning, match="1.0 per parameter"):  # 4 rows, 4 parameters
        design, names = design_matrix([np.array(["b", "a", "c", "a"]), np.array([1.0, 2.0, 3.0, 5.0])])
    np.testing.assert_array_equal(design, [[1, 1, 0, 1], [1, 0, 0, 2], [1, 0, 1, 3], [1, 0, 0, 5]])
    assert names == ["intercept", "c0=b", "c0=c", "c1"]


def test_collinear_covariates_are_refused():
    with pytest.raises(ValueError, match="collinear"):
        design_matrix([np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])])


def test_location_fit_recovers_group_means(rng):
    groups = rng.choice(np.array(["x", "y", "z"]), 3000)
    shift = {"x": -2.0, "y": 0.0, "z": 3.0}
    values = np.array([shift[g] for g in groups]) + rng.normal(0, 1, 3000)
    beta, location = location_fit(values, design_matrix([groups])[0])
    for g in shift:  # each group mean within 4 SE (SE = 1/√(n_g) ≈ 0.032)
        assert abs(location[groups == g][0] - shift[g]) < 4 / np.sqrt((groups == g).sum())


def test_covariates_shift_every_method(rng):
    n = 4000
    covariate = rng.uniform(-2, 2, n)
    theta = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    x = 2.0 * covariate + theta + 0.5 * rng.normal(size=n)
    shifted = fit_normal_means(x, 0.5, "npmle", covariates=[covariate])
    plain = fit_normal_means(x, 0.5, "npmle")
    z = 2.0 * covariate + theta
    assert shifted.coefficients["c0"] == pytest.approx(2.0, abs=0.05)  # slope SE ≈ 1.1/(1.15·√n) ≈ 0.015
    assert ((shifted.mean - z) ** 2).mean() < 0.5 * ((plain.mean - z) ** 2).mean()
    assert shifted.lfdr is None and shifted.lfsr.shape == (n,)


def test_a_covariate_with_few_rows_per_level_is_warned_of():
    names = np.array([f"player {i}" for i in range(40)])  # one label per row: every residual 0
    with pytest.warns(UserWarning, match="40 location parameters for 40 rows"):
        design_matrix({"name": names})
    groups = np.repeat(np.array(["a", "b", "c", "d"]), 10)  # 10 rows per parameter: no warning
    design, _ = design_matrix({"team": groups})
    assert design.shape == (40, 4)
