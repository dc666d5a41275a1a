import numpy as np
import pytest
from scipy.optimize import minimize

from invae.normal_means import npmle, simulate_normal_means
from invae.normal_means.grid import GridPrior, log_marginal
from invae.normal_means.npmle import directional_derivatives


@pytest.fixture(scope="module")
def problem():
    return simulate_normal_means("spike-slab", 3000, "heteroscedastic", seed=7)


def test_npmle_meets_the_kiefer_wolfowitz_optimality_conditions(problem):
    tol = 1e-9
    fit = npmle(problem.x, problem.sigma, solver="sqp", tol=tol)
    assert fit.converged
    n = len(problem.x)
    d = directional_derivatives(problem.x, problem.sigma, fit.prior) / n
    assert d.max() <= 1 + tol  # D_k ≤ n on the whole grid
    # Σ_k π_k D_k / n = 1 exactly, so max D/n ≤ 1 + tol forces D_k/n ≥ 1 + tol − tol/π_k on
    # the support: equality up to 1e-5 wherever π_k ≥ 1e-4.
    support = fit.prior.masses >= 1e-4
    assert support.sum() >= 2
    np.testing.assert_allclose(d[support], 1.0, atol=tol / 1e-4 + tol)


def test_sqp_and_em_agree_within_their_certificates(problem):
    sqp = npmle(problem.x, problem.sigma, solver="sqp", tol=1e-9)
    em = npmle(problem.x, problem.sigma, solver="em", max_iter=2000)
    n = len(problem.x)
    # ℓ(π̂) − ℓ(π) ≤ n log(max_k D_k(π)/n) = n log(1 + gap) for any π on the simplex.
    assert sqp.log_likelihood >= em.log_likelihood - n * np.log1p(sqp.gap) - 1e-8
    assert sqp.log_likelihood <= em.log_likelihood + n * np.log1p(em.gap) + 1e-8
    assert not em.converged and em.gap > sqp.gap  # EM is the slow one


def test_npmle_matches_a_generic_constrained_optimiser(rng):
    x, sigma = np.concatenate([rng.normal(-1, 0.5, 60), rng.normal(2, 0.5, 40)]), 0.5
    grid = np.linspace(-3, 4, 15)
    fit = npmle(x, sigma, grid, tol=1e-12)

    def negative(masses):
        return -log_marginal(x, np.full(len(x), sigma), GridPrior(grid, np.clip(masses, 0, None) / masses.sum())).sum()

    slsqp = minimize(negative, np.full(len(grid), 1 / len(grid)), method="SLSQP", bounds=[(0, 1)] * len(grid),
                     constraints={"type": "eq", "fun": lambda m: m.sum() - 1}, options={"ftol": 1e-14, "maxiter": 1000})
    assert fit.log_likelihood >= -slsqp.fun - 1e-7  # never worse than the generic optimiser
    assert fit.log_likelihood <= -slsqp.fun + 1e-4


def test_em_never_lowers_the_likelihood(problem):
    values = [npmle(problem.x, problem.sigma, solver="em", max_iter=k).log_likelihood for k in (1, 2, 5, 20, 50)]
    assert np.all(np.diff(values) >= -1e-9)


def test_unknown_solver_is_refused():
    with pytest.raises(ValueError, match="solver"):
        npmle(np.zeros(5), 1.0, solver="newton")
