import numpy as np
import pytest
import torch
from scipy.stats import chi2

from invae.evaluation.simulate import simulate_problem
from invae.model.forward import LinearOperator
from invae.model.ggm import GaussianGraphicalModel
from invae.model.likelihoods import GaussianLikelihood, NoisePerRowGaussianLikelihood, PoissonLikelihood
from invae.model.mixture import GaussianMixture
from invae.references.em import EM
from invae.references.exact import penalized_log_likelihood
from invae.references.sanity import degrees_of_freedom, likelihood_check


@pytest.fixture(scope="module")
def problem():
    """p = 5 chain, A = I, σ = 0.5, n = 2 000."""
    pb = simulate_problem(p=5, n=2000, noise_std=0.5, seed=3)
    likelihood = GaussianLikelihood(LinearOperator(torch.eye(5, dtype=torch.float64)), noise_std=0.5)
    return pb, torch.as_tensor(pb.X), likelihood


def _ggm(precision) -> GaussianGraphicalModel:
    return GaussianGraphicalModel(torch.as_tensor(precision, dtype=torch.float64))


def test_the_truth_and_the_mle_pass(problem):
    # Without a penalty all 15 entries of Λ are free; at the true Λ, 2 (ℓ(Λ_ML) − ℓ(Λ)) is about
    # χ²_15, so the gain (a lower bound on it) exceeds ½ χ²_{15, 0.999} = 18.9 with probability
    # about 0.001: this seed is not that draw. At the MLE itself EM gains nothing.
    pb, x, likelihood = problem
    truth = likelihood_check(x, _ggm(pb.precision), likelihood)
    assert truth.degrees_of_freedom == 15 and truth.threshold == pytest.approx(0.5 * chi2.isf(1e-3, 15))
    assert truth.passed and 0 < truth.gain < truth.threshold
    mle = EM(_ggm(np.eye(5)), likelihood).fit(x).prior_
    # EM stops when its objective per row (≈ −7) moves by ≤ 1e-9 of it: ≈ 1.4e-5 nats over 2 000 rows
    assert likelihood_check(x, mle, likelihood).gain < 1e-4


def test_a_prior_far_from_the_maximum_fails_and_the_gain_bounds_its_shortfall(problem):
    # Λ = 3 × the truth: the signals' variance a third of theirs, thousands of nats short.
    pb, x, likelihood = problem
    wrong = _ggm(3 * pb.precision)
    check = likelihood_check(x, wrong, likelihood)
    assert not check.passed and "50 exact EM steps" in check.message("vae")
    mle = EM(_ggm(np.eye(5)), likelihood, tol=1e-14, max_iter=10_000).fit(x).prior_
    shortfall = len(x) * (penalized_log_likelihood(x, mle, likelihood) - penalized_log_likelihood(x, wrong, likelihood))
    assert check.threshold < check.gain <= shortfall * (1 + 1e-9)


def test_degrees_of_freedom_count_what_x_can_show():
    chain = np.eye(6) + np.diag(np.full(5, 0.3), 1) + np.diag(np.full(5, 0.3), -1)  # 5 edges
    penalised = GaussianGraphicalModel(torch.as_tensor(chain), alpha=0.1)
    assert degrees_of_freedom(penalised, observed=6) == 6 + 5  # the lasso's: diagonal and edges
    assert degrees_of_freedom(_ggm(chain), observed=6) == 21  # no penalty: every entry is free
    assert degrees_of_freedom(penalised, observed=3) == 6  # x's covariance has 3·4/2 entries
    located = GaussianGraphicalModel(torch.as_tensor(chain), alpha=0.1, covariates=2, fit_intercept=True)
    assert degrees_of_freedom(located, observed=6) == 6 + 5 + 3 * 6  # and μ, B: 3 design columns of 6
    assert degrees_of_freedom(located, observed=3) == 6 + 3 * 3  # each moves x's 3-dimensional mean
    mixture = GaussianMixture.standard(dim=4, components=2, alpha=0.1)  # identity precisions: no edges
    assert degrees_of_freedom(mixture, observed=4) == 1 + 2 * 4 + 2 * 4
    assert degrees_of_freedom(mixture, observed=2) == 1 + 2 * 2 + 2 * 3
    assert degrees_of_freedom(GaussianMixture.standard(dim=4, components=2), observed=4) == 1 + 2 * 4 + 2 * 10
    located_mixture = GaussianMixture.standard(dim=4, components=2, alpha=0.1, covariates=3)
    assert degrees_of_freedom(located_mixture, observed=2) == 1 + 2 * (1 + 3) * 2 + 2 * 3  # each μ_k, B_k column
    # each component's precision is capped by x's 3·4/2 covariance entries on its own: 6 + 4, not min(11, 12)
    unequal = GaussianMixture(np.full(2, 0.5), np.zeros((2, 4)), np.stack([chain[:4, :4], np.eye(4)]), alpha=0.1)
    assert degrees_of_freedom(unequal, observed=3) == 1 + 2 * 3 + min(4 + 3, 6) + 4


def test_no_check_without_exact_em(problem):
    _, x, likelihood = problem
    counts = PoissonLikelihood(LinearOperator(torch.eye(5, dtype=torch.float64)))
    assert likelihood_check(x, _ggm(np.eye(5)), counts) is None
    per_row = NoisePerRowGaussianLikelihood(LinearOperator(torch.eye(5, dtype=torch.float64)))
    rows = NoisePerRowGaussianLikelihood.rows(x.numpy(), np.full(len(x), 0.5))
    assert likelihood_check(rows, GaussianMixture.standard(dim=5, components=2), per_row) is None
    assert likelihood_check(rows, _ggm(np.eye(5)), per_row) is not None  # EM takes σ_i per row for a graph
