import numpy as np
import pytest

from invae.app.covariates import design_matrix
from invae.normal_means import fit_normal_means
from invae.normal_means.covariates import location_fit


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
