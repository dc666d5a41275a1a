import warnings

import numpy as np
import torch
import pytest
from sklearn.covariance import graphical_lasso
from sklearn.exceptions import ConvergenceWarning

from invae import EM, GaussianGraphicalModel, linear_gaussian, simulate_problem
from invae.evaluation.metrics import relative_frobenius_error
from invae.model.forward import LinearOperator
from invae.model.likelihoods import NoisePerRowGaussianLikelihood
from invae.references.baselines import complete_data_floor


def numpy_em(x, a, sigma, alpha, iterations):
    """An independent EM written from the formulas with NumPy and scikit-learn alone."""
    p = a.shape[1]
    precision = np.eye(p)
    for _ in range(iterations):
        cov = np.linalg.inv(precision + a.T @ a / sigma**2)
        mean = x @ a @ cov / sigma**2
        s = cov + mean.T @ mean / len(x)
        if alpha == 0:
            precision = np.linalg.inv(s)
        else:
            _, precision = graphical_lasso(s, alpha, tol=1e-10, enet_tol=1e-10, max_iter=500)
    return precision


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("forward, alpha", [("gaussian", 0.0), ("gaussian", 0.05), ("compressive", 0.05)])
def test_penalised_objective_never_decreases(forward, alpha):
    problem = simulate_problem(p=10, n=500, graph="erdos-renyi", forward=forward, noise_std=1.0, seed=1)
    em = EM(GaussianGraphicalModel(dim=10, alpha=alpha), linear_gaussian(problem.A, 1.0),
            max_iter=100).fit(problem.X)
    steps = np.diff(em.history_["objective"])
    # An exact M-step never lowers the objective; the graphical lasso stops at a duality gap
    # of 1e-8 in the 2/n-scaled objective, so a step can lose at most ~1e-8 per observation.
    assert steps.min() >= -1e-8
    assert steps.max() > 1e-3  # it did climb


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("forward, alpha", [("identity", 0.02), ("compressive", 0.05), ("gaussian", 0.0)])
def test_iterates_agree_with_an_independent_implementation(forward, alpha):
    problem = simulate_problem(p=8, n=2000, graph="chain", forward=forward, noise_std=0.5, seed=2)
    em = EM(GaussianGraphicalModel(dim=8, alpha=alpha), linear_gaussian(problem.A, 0.5),
            max_iter=40, tol=0.0).fit(problem.X)
    reference = numpy_em(problem.X, problem.A, 0.5, alpha, iterations=40)
    # Same start (Λ = I), same 40 updates: only the graphical lasso's stopping tolerances
    # (1e-8 here, 1e-10 in the reference) separate the iterates.
    assert relative_frobenius_error(em.precision_, reference) < 1e-5


def test_unpenalised_identity_model_reaches_the_closed_form_mle():
    # x ~ N(0, Λ⁻¹ + σ²I) so the MLE is Λ̂ = (S_x − σ²I)⁻¹ whenever that is positive-definite.
    problem = simulate_problem(p=6, n=5000, noise_std=0.5, seed=3)
    em = EM(GaussianGraphicalModel(dim=6), linear_gaussian(np.eye(6), 0.5), tol=1e-14,
            max_iter=5000).fit(problem.X)
    mle = np.linalg.inv(problem.X.T @ problem.X / 5000 - 0.25 * np.eye(6))
    assert relative_frobenius_error(em.precision_, mle) < 1e-6


def _predicted_squared_error(b: np.ndarray, n: int) -> tuple[float, float]:
    """Mean and sd of ‖δΛ‖²_F for δΛ ≈ −Λ δS Λ with δS a Wishart fluctuation of Σ_x.

    With B = Λ Σ_x Λ: E‖δΛ‖² = ((tr B)² + tr B²)/n and, for the Gaussian limit,
    Var‖δΛ‖² = 4((tr B²)² + tr B⁴)/n². Complete data: Σ_x = Λ⁻¹, so B = Λ.
    """
    b2 = b @ b
    return (np.trace(b) ** 2 + np.trace(b2)) / n, 2 * np.sqrt(np.trace(b2) ** 2 + np.trace(b2 @ b2)) / n


def test_error_matches_asymptotic_theory_and_stays_near_the_complete_data_floor():
    # p = 20, n = 10 000, σ = 0.5, no penalty: EM's estimate is the MLE (S_x − σ²I)⁻¹, whose
    # error δΛ ≈ −Λ(S_x − Σ_x)Λ has the moments above with Σ_x = Λ⁻¹ + σ²I. The floor has
    # B = Λ. Each realised squared error must lie within 4 sd of its prediction; the predicted
    # ratio of EM's error to the floor's is ≤ 1 + σ²λ_max(Λ) (two factors √(1+σ²λ)).
    p, n, sigma = 20, 10_000, 0.5
    problem = simulate_problem(p=p, n=n, graph="chain", noise_std=sigma, seed=4)
    truth = problem.precision
    em = EM(GaussianGraphicalModel(dim=p), linear_gaussian(problem.A, sigma), tol=1e-12).fit(problem.X)
    floor = complete_data_floor(problem.Z, GaussianGraphicalModel(dim=p)).precision.numpy()
    sigma_x = np.linalg.inv(truth) + sigma**2 * np.eye(p)
    for estimate, b in ((em.precision_, truth @ sigma_x @ truth), (floor, truth)):
        mean, sd = _predicted_squared_error(b, n)
        assert abs(np.sum((estimate - truth) ** 2) - mean) < 4 * sd
    ratio = np.sqrt(_predicted_squared_error(truth @ sigma_x @ truth, n)[0] / _predicted_squared_error(truth, n)[0])
    assert 1 < ratio <= 1 + sigma**2 * np.linalg.eigvalsh(truth)[-1]


def test_iteration_cap_warns():
    problem = simulate_problem(p=5, n=200, noise_std=1.0, seed=5)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        em = EM(GaussianGraphicalModel(dim=5), linear_gaussian(problem.A, 1.0), max_iter=2).fit(problem.X)
    assert not em.converged_ and em.n_iter_ == 2


def test_posterior_std_is_the_exact_marginal_sd():
    problem = simulate_problem(p=4, n=100, noise_std=1.0, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        em = EM(GaussianGraphicalModel(dim=4), linear_gaussian(problem.A, 1.0), max_iter=3).fit(problem.X)
    cov = np.linalg.inv(em.precision_ + np.eye(4))
    np.testing.assert_allclose(em.posterior_std(problem.X[:3]), np.tile(np.sqrt(np.diag(cov)), (3, 1)))


@pytest.mark.parametrize("X, message", [
    (np.ones((5, 3)), "columns"),
    (np.full((5, 4), np.nan), "NaN"),
    (np.ones((1, 4)), "at least 2"),
    (np.array([["a"] * 4] * 3), "numbers"),
])
def test_bad_data_is_refused(X, message):
    with pytest.raises(ValueError, match=message):
        EM(GaussianGraphicalModel(dim=4), linear_gaussian(np.eye(4), 1.0)).fit(X)


def test_unfitted_estimator_says_so():
    with pytest.raises(RuntimeError, match="not fitted"):
        EM(GaussianGraphicalModel(dim=2), linear_gaussian(np.eye(2), 1.0)).transform(np.ones((3, 2)))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mean_field_em_ascends_its_elbo_and_matches_a_direct_computation(rng):
    # Coordinate ascent on the ELBO: the objective never decreases (up to the M-step's
    # 1e-8 duality gap); its E-step is (μ, 1/P_jj), so one step equals this NumPy step.
    problem = simulate_problem(p=6, n=1000, forward="gaussian", m=9, noise_std=0.7, seed=8)
    lik = linear_gaussian(problem.A, 0.7)
    em = EM(GaussianGraphicalModel(dim=6, alpha=0.02), lik, mean_field=True, max_iter=60).fit(problem.X)
    assert np.diff(em.history_["objective"]).min() >= -1e-8
    one = EM(GaussianGraphicalModel(dim=6, alpha=0.02), lik, mean_field=True, max_iter=1, tol=0.0).fit(problem.X)
    p_post = np.eye(6) + problem.A.T @ problem.A / 0.49
    mean = problem.X @ problem.A @ np.linalg.inv(p_post) / 0.49
    s = mean.T @ mean / 1000 + np.diag(1 / np.diag(p_post))
    _, expected = graphical_lasso(s, 0.02, tol=1e-10, enet_tol=1e-10)
    assert relative_frobenius_error(one.precision_, expected) < 1e-6
    # and it is a lower bound: the mean-field objective sits below the exact EM's optimum
    exact = EM(GaussianGraphicalModel(dim=6, alpha=0.02), lik, max_iter=60).fit(problem.X)
    assert em.history_["objective"][-1] < exact.history_["objective"][-1]
    fitted_p_post = em.precision_ + problem.A.T @ problem.A / 0.49
    np.testing.assert_allclose(em.posterior_std(problem.X[:2]), np.tile(1 / np.sqrt(np.diag(fitted_p_post)), (2, 1)))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_em_with_one_noise_level_per_row():
    # With every σ_i = σ the per-row model is the one-σ model: the same iterates.
    problem = simulate_problem(p=5, n=400, graph="chain", forward="gaussian", m=8, noise_std=0.5, seed=2)
    per_row = NoisePerRowGaussianLikelihood(LinearOperator(problem.A))
    rows = NoisePerRowGaussianLikelihood.rows(problem.X, 0.5)
    same = EM(GaussianGraphicalModel(dim=5, alpha=0.05), per_row, max_iter=30).fit(rows)
    one = EM(GaussianGraphicalModel(dim=5, alpha=0.05), linear_gaussian(problem.A, 0.5), max_iter=30).fit(problem.X)
    np.testing.assert_allclose(same.precision_, one.precision_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(same.history_["objective"], one.history_["objective"], rtol=1e-12)
    # With different σ_i the objective (exact per-row evidence) still never decreases, and a
    # row's posterior sd grows with its σ_i.
    sigma = np.random.default_rng(0).uniform(0.2, 2.0, 400)
    x = problem.Z @ problem.A.T + sigma[:, None] * np.random.default_rng(1).standard_normal((400, 8))
    fit = EM(GaussianGraphicalModel(dim=5, alpha=0.05), per_row, max_iter=30).fit(
        NoisePerRowGaussianLikelihood.rows(x, sigma))
    assert np.diff(fit.history_["objective"]).min() > -1e-12
    std = fit.posterior(NoisePerRowGaussianLikelihood.rows(x, sigma))[1]
    order = np.argsort(sigma)
    assert np.all(np.diff(std[order], axis=0) > 0)


def _problem_with_covariates(rng, n=2000, p=4, k=2, noise_std=0.5):
    """Rows (x_i, c_i) of z_i = μ + B c_i + N(0, Λ⁻¹) seen as x = z + σ ε, and the truth."""
    truth = GaussianGraphicalModel(simulate_problem(p=p, n=2, graph="chain", seed=3).precision,
                                   location=[3.0, -1.0, 0.5, 2.0][:p], coefficients=rng.standard_normal((p, k)))
    covariates = torch.as_tensor(rng.standard_normal((n, k)))
    z = truth.sample(n, torch.Generator().manual_seed(1), covariates=covariates).numpy()
    x = z + noise_std * rng.standard_normal((n, p))
    return np.column_stack([x, covariates.numpy()]), truth


def test_em_with_covariates_never_lowers_the_likelihood_and_its_location_is_least_squares(rng):
    # with A = I, x_i ~ N(Θᵀ d_i, Λ⁻¹ + σ² I): for any covariance the MLE of Θ is the ordinary
    # least squares of x on d (identical regressors), so EM's fixed point has exactly that Θ̂
    rows, truth = _problem_with_covariates(rng)
    prior = GaussianGraphicalModel(dim=4, covariates=2, fit_intercept=True)
    em = EM(prior, linear_gaussian(np.eye(4), 0.5), max_iter=2000, tol=1e-12).fit(rows)
    assert np.diff(em.history_["objective"]).min() >= -1e-10
    design = np.column_stack([np.ones(len(rows)), rows[:, 4:]])
    theta = np.linalg.lstsq(design, rows[:, :4], rcond=None)[0]
    np.testing.assert_allclose(em.prior_.location.numpy(), theta[0], atol=1e-5)
    np.testing.assert_allclose(em.prior_.coefficients.numpy(), theta[1:].T, atol=1e-5)
    # and Λ̂ is near the truth: relative error of order √(p²/n) ≈ 0.1 at n = 2000
    assert relative_frobenius_error(em.precision_, truth.precision.numpy()) < 0.25


def test_mixture_em_with_a_covariate_climbs_and_recovers_each_components_effects(rng):
    # z_i ~ Σ_k π_k N(μ_k + B_k c_i, Λ_k⁻¹), x = z + σ ε, c_i ~ N(0, 1), components 8.5 apart
    from invae.model.mixture import GaussianMixture, match_components
    from invae.references.exact import marginal_log_likelihood

    n, noise_std = 2000, 0.5
    precisions = np.array([[[2.0, 0.6], [0.6, 1.0]], [[1.0, -0.4], [-0.4, 1.5]]])
    truth = GaussianMixture([0.5, 0.5], [[3.0, 3.0], [-3.0, -3.0]], precisions, coefficients=[[[1.0], [-0.5]],
                                                                                             [[-1.0], [0.8]]])
    covariates = torch.as_tensor(rng.standard_normal((n, 1)))
    z = truth.sample(n, torch.Generator().manual_seed(5), covariates=covariates)
    likelihood = linear_gaussian(np.eye(2), noise_std)
    rows = torch.cat([likelihood.sample(z, generator=torch.Generator().manual_seed(6)), covariates], dim=1)
    start = GaussianMixture.from_signals(rows[:, :2], 2, covariates=1)
    em = EM(start, likelihood, max_iter=1000).fit(rows.numpy())
    objective = np.array(em.history_["objective"])
    # exact EM is monotone, up to reg_covar = 1e-6's O(1e-6) nats; the maximum is at least the truth's
    assert em.converged_ and np.diff(objective).min() > -1e-6
    assert objective[-1] >= float(marginal_log_likelihood(rows, truth, likelihood).mean())
    # Standard error of B̂_k: the components overlap with probability ~ Φ(−8.5/2.3) ≈ 1e-4, so the
    # MLE is, to that order, the Gaussian MLE of component k's regression of x on (1, c) given
    # the labels, which (identical regressors, A = I) is least squares on its ≈ n π_k rows:
    # SE_kj = √(Var(x_j | c, k) / (n π_k Var c)), Var(x_j | c, k) = (Λ_k⁻¹)_jj + σ². Within 5 SE.
    order = match_components(em.prior_, truth)
    variance = np.diagonal(np.linalg.inv(precisions), axis1=1, axis2=2) + noise_std**2  # (K, p)
    standard_error = np.sqrt(variance / (n * 0.5 * 1.0))
    error = em.prior_.coefficients[order, :, 0].numpy() - truth.coefficients[:, :, 0].numpy()
    assert np.all(np.abs(error) < 5 * standard_error), (error, standard_error)


def test_em_with_missing_entries_climbs_to_the_maximum_of_the_observed_data_likelihood(rng):
    # brute force: L-BFGS on Σ_i log N(x_iO; 0, Λ⁻¹_OO + σ² I) over Λ = L Lᵀ must find EM's Λ̂
    from invae.model.missing import MissingEntries
    from invae.references.exact import marginal_log_likelihood

    problem = simulate_problem(p=3, n=300, graph="chain", noise_std=0.5, seed=2)
    x = problem.X.copy()
    x[rng.random(x.shape) < 0.3] = np.nan
    x = x[~np.isnan(x).all(1)]
    likelihood = MissingEntries(linear_gaussian(np.eye(3), 0.5))
    rows = likelihood.rows(x)
    em = EM(GaussianGraphicalModel(dim=3), likelihood, max_iter=5000, tol=1e-13).fit(rows)
    assert np.diff(em.history_["objective"]).min() >= -1e-10
    raw = torch.zeros(3, 3, requires_grad=True)
    optimizer = torch.optim.LBFGS([raw], max_iter=1000, tolerance_grad=1e-12, tolerance_change=1e-15,
                                  line_search_fn="strong_wolfe")
    data = torch.as_tensor(rows)

    def closure():
        optimizer.zero_grad()
        chol = torch.tril(raw, -1) + torch.diag(torch.exp(raw.diagonal()))
        loss = -marginal_log_likelihood(data, GaussianGraphicalModel(chol @ chol.mT), likelihood).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    chol = (torch.tril(raw, -1) + torch.diag(torch.exp(raw.diagonal()))).detach()
    np.testing.assert_allclose(em.precision_, (chol @ chol.mT).numpy(), atol=1e-4)


def test_imputation_is_the_conditional_mean_of_the_missing_entries_given_the_observed(rng):
    # x ~ N(0, A Λ⁻¹ Aᵀ + σ² I): E[x_M | x_O] = Σ_MO Σ_OO⁻¹ x_O, row by row, under the true Λ
    from invae.model.missing import MissingEntries

    problem = simulate_problem(p=4, n=50, graph="chain", forward="gaussian", m=6, noise_std=0.5, seed=4)
    x = problem.X.copy()
    x[rng.random(x.shape) < 0.3] = np.nan
    x[:, 0] = np.where(np.isnan(x).all(1), 0.0, x[:, 0])
    likelihood = MissingEntries(linear_gaussian(problem.A, 0.5))
    oracle = EM(GaussianGraphicalModel(problem.precision), likelihood).restore()
    imputed = oracle.impute(likelihood.rows(x))
    cov = problem.A @ np.linalg.inv(problem.precision) @ problem.A.T + 0.25 * np.eye(6)
    for x_i, got in zip(x, imputed):
        seen = ~np.isnan(x_i)
        expected = cov[np.ix_(~seen, seen)] @ np.linalg.solve(cov[np.ix_(seen, seen)], x_i[seen])
        np.testing.assert_allclose(got[~seen], expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(got[seen], x_i[seen])


def _missing_entries_problem(rng):
    from invae.model.missing import MissingEntries

    problem = simulate_problem(p=4, n=300, graph="chain", noise_std=0.5, seed=6)
    x = problem.X.copy()
    x[rng.random(x.shape) < 0.2] = np.nan
    x[np.isnan(x).all(1), 0] = 0.0  # every row observes something
    likelihood = MissingEntries(linear_gaussian(np.eye(4), 0.5))
    return GaussianGraphicalModel(dim=4, alpha=0.05), likelihood, likelihood.rows(x)


def _mixture_problem(rng):
    from invae.model.mixture import GaussianMixture

    z = np.concatenate([rng.normal(-2.0, 1.0, (150, 2)), rng.normal(2.0, 0.7, (150, 2))])
    x = z + 0.5 * rng.standard_normal(z.shape)
    likelihood = linear_gaussian(np.eye(2), 0.5)
    return GaussianMixture.from_signals(torch.as_tensor(x), 2), likelihood, x


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("make", [_missing_entries_problem, _mixture_problem])
def test_em_on_rows_block_by_block_follows_em_on_all_rows_at_once(rng, monkeypatch, make):
    # missing entries (a posterior covariance per row) and a mixture: the rows' own path, not the
    # moments'; its statistics are row averages, so blocks of 7 rows weighted by their sizes give
    # the same iterations up to round-off
    import invae.model.rows as rows_module

    prior, likelihood, x = make(rng)
    whole = EM(prior, likelihood, max_iter=15, tol=0.0).fit(x)
    monkeypatch.setattr(rows_module, "_BLOCK_ENTRIES", 7 * (x.shape[1] + prior.dim**2))
    blocks = EM(prior, likelihood, max_iter=15, tol=0.0).fit(x)
    np.testing.assert_allclose(blocks.history_["objective"], whole.history_["objective"], rtol=1e-12)
    for key, value in whole.prior_.state().items():
        np.testing.assert_allclose(blocks.prior_.state()[key].numpy(), value.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(blocks.posterior(x)[0], whole.posterior(x)[0], rtol=1e-9, atol=1e-10)
