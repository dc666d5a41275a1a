import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from torch.distributions import MultivariateNormal, kl_divergence

from invae import EM, GaussianGraphicalModel, linear_gaussian, simulate_problem
from invae.evaluation.metrics import relative_frobenius_error
from invae.inference.estimator import VariationalEB
from invae.inference.objectives import elbo
from invae.references.exact import exact_posterior, marginal_log_likelihood


@pytest.fixture(scope="module")
def problem():
    return simulate_problem(p=5, n=2000, graph="chain", forward="gaussian", m=8, noise_std=0.5, seed=0)


# The fits of these fixtures train q by Adam (closed_form=False): the tests below measure how
# close amortized training comes to the family's optimum, which the default would set in
# closed form on this linear-Gaussian model (tested at the end of this module).
@pytest.fixture(scope="module")
def fitted(problem):
    return VariationalEB(GaussianGraphicalModel(dim=5, alpha=0.01), linear_gaussian(problem.A, 0.5),
                         random_state=1, closed_form=False).fit(problem.X)


def test_fit_converges_and_raises_the_elbo(fitted):
    assert fitted.converged_
    assert fitted.history_["elbo"][-1] > fitted.history_["elbo"][0]
    assert len(fitted.history_["precision_change"]) == fitted.n_iter_


def test_elbo_does_not_exceed_the_exact_evidence(fitted, problem):
    elbo, se = fitted.elbo(problem.X, n_samples=20)
    exact = marginal_log_likelihood(torch.as_tensor(problem.X), fitted.prior_.to(dtype=torch.float64),
                                    linear_gaussian(problem.A, 0.5)).mean()
    assert elbo <= float(exact) + 3 * se  # a lower bound, up to 3 Monte Carlo standard errors
    assert fitted.score(problem.X) == pytest.approx(elbo, abs=5 * se)


def test_encoder_reaches_the_mean_field_optimum(fitted, problem):
    # For a Gaussian posterior N(μ, P⁻¹) the best diagonal Gaussian has mean μ and variances
    # 1/P_jj. Under the fitted Λ̂ the encoder should be there up to optimiser noise: means
    # within 0.1 posterior sd (RMS), sds within 10%.
    x = torch.as_tensor(problem.X)
    prior64 = fitted.prior_.to(dtype=torch.float64)
    mean, cov = exact_posterior(x, prior64, linear_gaussian(problem.A, 0.5))
    mf_sd = 1 / torch.sqrt(torch.linalg.inv(cov).diagonal())
    got_mean, got_sd = fitted.posterior(problem.X)
    assert np.sqrt(np.mean(((got_mean - mean.numpy()) / mf_sd.numpy()) ** 2)) < 0.1
    np.testing.assert_allclose(got_sd, np.broadcast_to(mf_sd.numpy(), got_sd.shape), rtol=0.1)


def _shortfall(estimator, problem, em, n_samples=50):
    """How far the variational objective ELBO(Λ̂, q) − penalty(Λ̂) falls below its ceiling, the
    maximal penalised log-likelihood (EM's); per row, with the standard error of the paired mean."""
    x = torch.as_tensor(problem.X, dtype=torch.float32)
    with torch.no_grad():
        values = elbo(x, estimator.posterior_(x), estimator.prior_, estimator.likelihood_, n_samples).double()
    ceiling = marginal_log_likelihood(torch.as_tensor(problem.X), em.prior_, em.likelihood_) - em.prior_.penalty()
    shortfall = ceiling - (values - estimator.prior_.penalty())
    return float(shortfall.mean()), float(shortfall.std() / np.sqrt(len(shortfall)))


@pytest.fixture(scope="module")
def fit_family(problem):
    """family -> VariationalEB fitted on the problem (each fitted once per module)."""
    fits = {}

    def fit(family):
        if family not in fits:
            fits[family] = VariationalEB(GaussianGraphicalModel(dim=5, alpha=0.01), linear_gaussian(problem.A, 0.5),
                                         family=family, random_state=1, closed_form=False).fit(problem.X)
        return fits[family]
    return fit


@pytest.fixture(scope="module")
def em(problem):
    return EM(GaussianGraphicalModel(dim=5, alpha=0.01), linear_gaussian(problem.A, 0.5)).fit(problem.X)


@pytest.mark.parametrize("family, max_share", [("full-covariance", 0.05), ("iaf", 0.1)])
def test_richer_families_close_the_mean_field_gap(family, max_share, problem, fitted, em, fit_family):
    # ELBO(Λ, q) − penalty(Λ) ≤ penalised log-likelihood(Λ) ≤ EM's maximum, for any q and Λ;
    # the shortfall from that ceiling is the family's KL to the exact posterior plus Λ̂'s own
    # suboptimality. On this problem (m = 8 random sensors, σ = 0.5) the posterior is strongly
    # correlated and the diagonal family falls 0.14 nats per row short. The full-covariance
    # family holds the exact posterior, the IAF nearly (measured, seeds 1–3: ≤ 0.004 and ≤ 0.006).
    # Bounds: 3 standard errors below zero (Monte Carlo), max_share of the diagonal's above.
    diagonal, _ = _shortfall(fitted, problem, em)
    shortfall, se = _shortfall(fit_family(family), problem, em)
    assert diagonal > 0.1
    assert -3 * se < shortfall < max_share * diagonal + 3 * se


def test_full_covariance_elbo_reaches_the_exact_evidence(problem, fitted, fit_family):
    # log p(x_i; Λ̂) − ELBO_i = KL(q(·|x_i) ‖ p(·|x_i; Λ̂)) exactly (checked by Monte Carlo in
    # test_objectives); for Gaussian q and a linear-Gaussian model the KL has a closed form,
    # so the gap is measured here without Monte Carlo noise. The family holds the exact
    # posterior: what is left is the encoder's optimisation error at tol = 1e-4 (measured
    # 0.003 nats per row; the diagonal family's gap, its mean-field KL, is 0.14).
    x = torch.as_tensor(problem.X)

    def gap(estimator):
        mean, cov = exact_posterior(x, estimator.prior_.to(dtype=torch.float64), linear_gaussian(problem.A, 0.5))
        with torch.no_grad():
            q = estimator.posterior_(x.float())
        q_cov = q.covariance_matrix if isinstance(q, MultivariateNormal) else torch.diag_embed(q.variance)
        exact = MultivariateNormal(mean, cov.expand(len(x), *cov.shape))
        return float(kl_divergence(MultivariateNormal(q.mean.double(), q_cov.double()), exact).mean())

    assert gap(fitted) > 0.1
    assert gap(fit_family("full-covariance")) < 0.01


def test_full_covariance_reaches_the_em_estimate(fitted, em, fit_family):
    # The exact family's optimum is EM's Λ̂; the diagonal family's sits ≈ 1.0 away (relative
    # Frobenius). The likelihood is flat here (EM is 0.3 from the truth): optimiser noise left
    # the full-covariance Λ̂ 0.007–0.033 from EM's over seeds 1–3. Bound: a tenth of the diagonal's.
    full = fit_family("full-covariance")
    diagonal_distance = relative_frobenius_error(fitted.precision_, em.precision_)
    assert diagonal_distance > 0.8
    assert relative_frobenius_error(full.precision_, em.precision_) < diagonal_distance / 10


def test_same_random_state_same_fit_bit_for_bit(problem):
    def fit(seed):
        return VariationalEB(GaussianGraphicalModel(dim=5), linear_gaussian(problem.A, 0.5), max_iter=15,
                             random_state=seed, closed_form=False)  # Adam: the seed matters
    with pytest.warns(Warning):
        first, again, other = fit(3).fit(problem.X), fit(3).fit(problem.X), fit(4).fit(problem.X)
    np.testing.assert_array_equal(first.precision_, again.precision_)
    np.testing.assert_array_equal(first.transform(problem.X), again.transform(problem.X))
    assert not np.array_equal(first.precision_, other.precision_)


def test_samples_and_shapes(fitted, problem):
    draws = fitted.sample_posterior(problem.X[:7], n_samples=3)
    assert draws.shape == (3, 7, 5)
    assert fitted.transform(problem.X[:7]).shape == fitted.posterior_std(problem.X[:7]).shape == (7, 5)


def test_mean_field_fits_new_factors_for_new_data(problem):
    x = problem.X[:400]
    mf = VariationalEB(GaussianGraphicalModel(dim=5), linear_gaussian(problem.A, 0.5), family="mean-field",
                       random_state=0).fit(x)
    # Fitted and fresh factors (for unseen rows) both sit at the mean-field optimum under Λ̂:
    # the exact posterior means, within 0.1 of the mean-field sd 1/√P_jj (RMS), as the encoder.
    for rows in (x, problem.X[400:500]):
        mean, cov = exact_posterior(torch.as_tensor(rows), mf.prior_.to(dtype=torch.float64),
                                    linear_gaussian(problem.A, 0.5))
        mf_sd = (1 / torch.linalg.inv(cov).diagonal().sqrt()).numpy()
        assert np.sqrt(np.mean(((mf.transform(rows) - mean.numpy()) / mf_sd) ** 2)) < 0.1


@pytest.mark.parametrize("family, mean_field", [("mean-field", True), ("diagonal", True),
                                                ("full-covariance", False)])
def test_closed_form_fit_of_a_gaussian_posterior_is_em(problem, family, mean_field):
    # With q set to its closed-form optimum the fit is EM, with the diagonal family's E-step
    # for the diagonal families: the same two exact maps alternated from the same start. Run
    # both to their fixed point in float64: Λ̂ agrees to rounding (1e-9 relative), where Adam
    # steps on q stop at their noise floor, ~1e-2 away (the default rule stops once Λ is
    # within its statistical error).
    likelihood = linear_gaussian(problem.A, 0.5)
    fit = VariationalEB(GaussianGraphicalModel(dim=5, alpha=0.02), likelihood, family=family, tol=1e-10,
                        max_iter=5000, dtype=torch.float64, random_state=0).fit(problem.X)
    em = EM(GaussianGraphicalModel(dim=5, alpha=0.02), likelihood, mean_field=mean_field, tol=1e-14,
            max_iter=5000).fit(problem.X)
    assert fit.converged_ and em.converged_
    assert relative_frobenius_error(fit.precision_, em.precision_) < 1e-9


def test_the_paper_preset_and_closed_form_false_keep_adam(problem):
    likelihood = linear_gaussian(problem.A, 0.5)
    settings = {"max_iter": 3, "dtype": torch.float64, "random_state": 0}
    with pytest.warns(ConvergenceWarning):
        fits = [VariationalEB(GaussianGraphicalModel(dim=5), likelihood, **options, **settings).fit(problem.X)
                for options in ({}, {"closed_form": False}, {"preset": "paper"})]
    closed, adam, paper = (fit.posterior_.trunk.mlp[-1].weight for fit in fits)
    assert torch.all(closed == 0)  # the optimum is affine: the MLP's correction stays at zero
    assert torch.any(adam != 0) and torch.any(paper != 0)


@pytest.mark.parametrize("kwargs, X, message", [
    ({}, np.ones((10, 3)), "columns"),
    ({}, np.full((10, 8), np.nan), "NaN"),
    ({}, np.array([["1"] * 8] * 10), "numbers"),
    ({}, np.ones((10, 8, 1)), "2-D"),
    ({"preset": "fast"}, np.ones((10, 8)), "preset"),
    ({"family": "flow"}, np.ones((10, 8)), "family"),
    ({"learning_rate": -1.0}, np.ones((10, 8)), "learning_rate"),
    ({"lambda_step": "mean"}, np.ones((10, 8)), "lambda_step"),
])
def test_bad_input_raises_value_error_naming_it(problem, kwargs, X, message):
    with pytest.raises(ValueError, match=message):
        VariationalEB(GaussianGraphicalModel(dim=5), linear_gaussian(problem.A, 0.5), **kwargs).fit(X)


def test_elbo_is_repeatable_whatever_the_global_stream():
    problem = simulate_problem(p=4, n=200, graph="chain", noise_std=0.5, seed=0)
    fitted = VariationalEB(GaussianGraphicalModel(dim=4), linear_gaussian(problem.A, 0.5), max_iter=3)
    with pytest.warns(ConvergenceWarning):
        fitted.fit(problem.X)
    first = fitted.elbo(problem.X, n_samples=5)
    torch.rand(7)  # move the global stream
    assert fitted.elbo(problem.X, n_samples=5) == first


def test_reweighting_follows_the_lambda_step_unless_told(problem):
    likelihood = linear_gaussian(problem.A, 0.5)

    def reweights(**options):
        return VariationalEB(GaussianGraphicalModel(dim=5), likelihood, **options).reweighted
    assert reweights(family="iaf") and reweights(family="mixture")
    assert not reweights(family="iaf", lambda_step="expected")
    assert not reweights(family="diagonal") and reweights(family="diagonal", reweight=True)
    assert not reweights(family="iaf", reweight=False)


def test_iaf_answers_for_the_exact_posterior_at_its_estimate(fit_family, problem):
    # With reweighting (iaf's default) the means are the exact posterior's at Λ̂, here in
    # closed form, up to Monte Carlo error sd/√ESS per coordinate. Measured: the RMS of the
    # error in units of sd/√S is 1.14 over 300 rows × 5 (ESS ≈ 0.77 S); the bound, 2, allows
    # ESS down to S/4. Draws resampled from the weighted pool have the same mean, up to
    # sd·√(1/400 + 2/ESS) between two independent pools (at most 0.19 sd for ESS ≥ S/4 = 64).
    iaf, x = fit_family("iaf"), problem.X[:300]
    mean, sd = iaf.posterior(x)
    exact_mean, cov = exact_posterior(torch.as_tensor(x), iaf.prior_.to(dtype=torch.float64),
                                      linear_gaussian(problem.A, 0.5))
    exact_sd = cov.diagonal().sqrt().numpy()
    standardized = (mean - exact_mean.numpy()) / (exact_sd / np.sqrt(iaf.n_moment_draws))
    assert np.sqrt(np.mean(standardized**2)) < 2
    assert np.median(np.abs(sd / exact_sd - 1)) < 2 / np.sqrt(2 * iaf.n_moment_draws)
    draws = iaf.sample_posterior(x, n_samples=400)
    assert draws.shape == (400, 300, 5)
    assert np.sqrt(np.mean(((draws.mean(0) - mean) / exact_sd) ** 2)) < 0.19
    below = iaf.posterior_cdf(x, 0.0)
    assert below.min() >= 0 and below.max() <= 1
    ess = iaf.importance_ess(x)
    assert ess.shape == (300,) and 1 <= ess.min() and ess.max() <= iaf.n_moment_draws * (1 + 1e-5)
    # the RMS error above, ≈ √(S/ESS) in those units, and the ESS tell the same story
    assert np.median(ess) > iaf.n_moment_draws / 4


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # fits of 2 iterations
def test_only_the_diagonal_families_refuse_a_rank_deficient_forward_matrix():
    problem = simulate_problem(p=4, n=200, graph="chain", forward="compressive", noise_std=0.5, seed=0)
    likelihood = linear_gaussian(problem.A, 0.5)
    for family in ("diagonal", "mean-field"):
        with pytest.raises(ValueError, match="rank 2 < p = 4"):
            VariationalEB(GaussianGraphicalModel(dim=4), likelihood, family=family).fit(problem.X)
        with pytest.warns(UserWarning, match="rank 2 < p = 4"):
            fit = VariationalEB(GaussianGraphicalModel(dim=4), likelihood, family=family, max_iter=2,
                                allow_unidentified=True).fit(problem.X)
        assert fit.warnings_ and "rank 2" in fit.warnings_[0]
    fit = VariationalEB(GaussianGraphicalModel(dim=4), likelihood, family="full-covariance", max_iter=2,
                        hidden=(8,)).fit(problem.X)  # a family that holds the correlations runs without a word
    assert fit.warnings_ == []


@pytest.mark.parametrize("family, mean_field", [("full-covariance", False), ("diagonal", True)])
def test_a_closed_form_fit_with_covariates_is_em(rng, family, mean_field):
    # z_i = μ + B c_i + N(0, Λ⁻¹), x = z + σ ε: the q-step is set at the exact (diagonal) posterior,
    # whose mean is affine in the row (x_i, c_i), so the fit is EM (its diagonal E-step for
    # the diagonal family) and stops where EM does, up to its stopping rule
    truth = GaussianGraphicalModel(simulate_problem(p=3, n=2, graph="chain", seed=3).precision,
                                   location=[3.0, -1.0, 0.5], coefficients=rng.standard_normal((3, 2)))
    covariates = torch.as_tensor(rng.standard_normal((1000, 2)))
    z = truth.sample(1000, torch.Generator().manual_seed(1), covariates=covariates).numpy()
    rows = np.column_stack([z + 0.5 * rng.standard_normal(z.shape), covariates.numpy()])
    prior, likelihood = GaussianGraphicalModel(dim=3, covariates=2, fit_intercept=True), linear_gaussian(np.eye(3), 0.5)
    em = EM(prior, likelihood, max_iter=2000, tol=1e-12, mean_field=mean_field).fit(rows)
    fit = VariationalEB(prior, likelihood, family=family, dtype=torch.float64, max_iter=500).fit(rows)
    assert relative_frobenius_error(fit.precision_, em.precision_) < 1e-3
    torch.testing.assert_close(fit.prior_.location, em.prior_.location, atol=1e-4, rtol=0)
    torch.testing.assert_close(fit.prior_.coefficients, em.prior_.coefficients, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="has 3 columns but the model expects 5"):
        fit.transform(rows[:, :3])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("family", ["mixture", "mean-field"])
def test_answers_block_by_block_are_the_answers_of_all_rows_at_once(monkeypatch, family):
    # mixture: reweighted draws, one seeded stream across blocks of 1024 rows (its chunks' size, so
    # the draws line up); mean-field: free factors, which must answer the rows they were fitted on
    # together (a block would be new data, refitted)
    import invae.model.rows as rows_module

    problem = simulate_problem(p=3, n=3000, graph="chain", noise_std=0.5, seed=2)
    estimator = VariationalEB(GaussianGraphicalModel(dim=3), linear_gaussian(np.eye(3), 0.5), family=family,
                              max_iter=3, random_state=0).fit(problem.X)
    whole = estimator.posterior(problem.X)
    monkeypatch.setattr(rows_module, "_BLOCK_ENTRIES", 1024 * 3)
    blocks = estimator.posterior(problem.X)
    np.testing.assert_array_equal(blocks[0], whole[0])
    np.testing.assert_array_equal(blocks[1], whole[1])
