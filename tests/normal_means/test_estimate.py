import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from invae.normal_means import NORMAL_MEANS_METHODS, fit_normal_means, grid_posterior, simulate_normal_means


@pytest.fixture(scope="module")
def problem():
    return simulate_normal_means("two-point", 1000, "heteroscedastic", seed=4)


def _ratio(fit, problem) -> float:
    oracle = grid_posterior(problem.x, problem.sigma, problem.prior).mean
    return ((fit.mean - problem.z) ** 2).sum() / ((oracle - problem.z) ** 2).sum()


@pytest.mark.parametrize("method", [m for m in NORMAL_MEANS_METHODS if m != "vae"])
def test_every_method_answers_for_every_row(problem, method):
    fit = fit_normal_means(problem.x, problem.sigma, method)
    n = len(problem.x)
    assert fit.mean.shape == (n,) and np.isfinite(fit.mean).all()
    for name in ("std", "lfsr"):
        value = getattr(fit, name)
        assert value is None if method == "rank-matching" else (value.shape == (n,) and np.isfinite(value).all())
    assert (fit.prior is None) == (method == "naive")


def test_naive_is_the_data(problem):
    fit = fit_normal_means(problem.x, problem.sigma, "naive")
    np.testing.assert_array_equal(fit.mean, problem.x)
    np.testing.assert_array_equal(fit.std, problem.sigma)


def test_the_npmle_is_near_the_oracle_and_beats_the_parametric_fits(problem):
    # n = 1000 is small for the 5% target of the benchmark (n = 10⁴); the ordering is the check.
    npmle, js = (fit_normal_means(problem.x, problem.sigma, m) for m in ("npmle", "james-stein"))
    assert _ratio(npmle, problem) < 1.05 < _ratio(js, problem)
    assert npmle.details["converged"] and npmle.lfdr is None and npmle.null is None  # no null asked for


def test_vae_like_estimator_learns_the_two_point_prior(problem):
    fit = fit_normal_means(problem.x, problem.sigma, "vae", components=4)
    assert fit.details["converged"] and fit.details["closed_form"] and fit.lfdr is None  # no null asked for
    assert _ratio(fit, problem) < 1.05 < _ratio(fit_normal_means(problem.x, problem.sigma, "james-stein"), problem)
    # The mass above 1.5 estimates P(z = 3) = 0.3: binomial SE √(0.21/1000) = 0.0145, and
    # within 4 SE; the lfsr is a probability for every row.
    assert abs(fit.prior.masses[fit.prior.atoms > 1.5].sum() - 0.3) < 4 * 0.0145
    assert np.all((fit.lfsr >= 0) & (fit.lfsr <= 0.5))


def test_vae_trained_by_adam_still_learns_the_two_point_prior(problem):
    with pytest.warns(ConvergenceWarning):  # 40 outer iterations: enough here, not converged
        fit = fit_normal_means(problem.x, problem.sigma, "vae", closed_form=False, components=4, max_iter=40,
                               hidden=(32, 32))
    assert not fit.details["closed_form"]
    assert _ratio(fit, problem) < _ratio(fit_normal_means(problem.x, problem.sigma, "james-stein"), problem)
    assert abs(fit.prior.masses[fit.prior.atoms > 1.5].sum() - 0.3) < 4 * 0.0145  # as above


def test_vae_refuses_settings_it_does_not_have(problem):
    with pytest.raises(ValueError, match="not hidden"):
        fit_normal_means(problem.x, problem.sigma, "vae", hidden=(32,))
    with pytest.raises(ValueError, match="closed-form"):
        fit_normal_means(problem.x, problem.sigma, "vae", closed_form=False, null=0.0)


@pytest.mark.parametrize("x, sigma, match", [(np.array([0.0, 1.0, np.nan, 2.0]), 1.0, "row 2"),
                                             (np.zeros(5), np.array([1.0, 1.0, 0.0, 1.0, 1.0]), "row 2"),
                                             (np.zeros((5, 2)), 1.0, "one number"),
                                             (np.zeros(5), -1.0, "σ")])
def test_bad_input_is_refused_with_the_row(x, sigma, match):
    with pytest.raises(ValueError, match=match):
        fit_normal_means(x, sigma, "npmle")


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown method"):
        fit_normal_means(np.zeros(5), 1.0, "bayes")
