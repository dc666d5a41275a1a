import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from invae import EM, GaussianGraphicalModel, complete_data_floor, linear_gaussian
from invae.evaluation.metrics import mixture_errors
from invae.inference.lambda_steps import expected_statistics
from invae.model.graphical_lasso import optimality_violation
from invae.model.mixture import GaussianMixture, match_components
from invae.references.exact import marginal_log_likelihood, mixture_posterior

from ..conftest import random_spd


def _mixture(rng, k=3, p=3, spread=3.0, covariates=0, **options) -> GaussianMixture:
    weights = rng.dirichlet(np.full(k, 5.0))
    means = spread * rng.standard_normal((k, p))
    precisions = np.stack([random_spd(rng, p, condition=5.0) for _ in range(k)])
    effects = rng.standard_normal((k, p, covariates)) if covariates else None
    return GaussianMixture(weights, means, precisions, coefficients=effects, **options)


def _scipy_density(prior: GaussianMixture, z: np.ndarray) -> np.ndarray:
    covs = np.linalg.inv(prior.precisions.numpy())
    return sum(w * multivariate_normal(mu, cov).pdf(z)
               for w, mu, cov in zip(prior.weights.numpy(), prior.means.numpy(), covs))


def test_log_density_against_scipy(rng):
    prior = _mixture(rng)
    z = rng.standard_normal((50, 3)) * 3
    ours = prior.log_prob(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(ours, np.log(_scipy_density(prior, z)), rtol=1e-10)
    np.testing.assert_allclose(prior.responsibilities(torch.from_numpy(z)).sum(-1).numpy(), 1.0, rtol=1e-12)


def test_samples_have_the_mixture_moments(rng, generator):
    prior = _mixture(rng)
    n = 200_000
    z = prior.sample(n, generator=generator).numpy()
    sd = np.sqrt(np.diag(prior.covariance.numpy()))
    # Each coordinate's sample mean is within 4 standard errors sd_j/√n of E z_j.
    assert np.all(np.abs(z.mean(0) - prior.mean.numpy()) < 4 * sd / np.sqrt(n))
    # Sample covariances: their standard error is at most ~ sd_i sd_j √(κ/n) with the mixture's
    # kurtosis κ ≤ 10 here; 4 SE of that.
    bound = 4 * np.outer(sd, sd) * np.sqrt(10 / n)
    assert np.all(np.abs(np.cov(z.T) - prior.covariance.numpy()) < bound)


def test_m_step_with_known_labels_returns_each_class_moments(rng):
    # Known (one-hot) responsibilities: π_k = n_k/n, μ_k the class mean, Λ_k the inverse of
    # the class's (biased) covariance — exactly, with no penalty and no ridge.
    labels = rng.integers(0, 3, size=600)
    z = rng.standard_normal((600, 4)) + 2.0 * labels[:, None]
    start = GaussianMixture.standard(4, 3, reg_covar=0.0)
    fitted = start.m_step_from(start.component_statistics(torch.from_numpy(np.eye(3)[labels]), torch.from_numpy(z)))
    for k in range(3):
        members = z[labels == k]
        assert fitted.weights[k].item() == pytest.approx(len(members) / 600, rel=1e-12)
        np.testing.assert_allclose(fitted.means[k].numpy(), members.mean(0), rtol=1e-10)
        cov = np.cov(members.T, bias=True)
        np.testing.assert_allclose(fitted.precisions[k].numpy(), np.linalg.inv(cov), rtol=1e-8)


def test_penalised_m_step_solves_each_components_graphical_lasso(rng):
    labels = rng.integers(0, 2, size=400)
    z = rng.standard_normal((400, 5)) + 3.0 * labels[:, None]
    resp = torch.from_numpy(np.eye(2)[labels])
    start = GaussianMixture.standard(5, 2, alpha=0.1, reg_covar=0.0)
    fitted = start.m_step_from(start.component_statistics(resp, torch.from_numpy(z)))
    for k in range(2):
        members = z[labels == k]
        # Component k carries weight N_k/n in the objective, hence the penalty α n/N_k.
        alpha_k = 0.1 * 400 / len(members)
        assert optimality_violation(fitted.precisions[k].numpy(), np.cov(members.T, bias=True), alpha_k,
                                    relative=True) < 1e-6
    assert fitted.penalty() == pytest.approx(
        0.05 * sum(np.abs(lam).sum() - np.abs(np.diag(lam)).sum() for lam in fitted.precisions.numpy()))


def test_em_step_on_draws_never_lowers_their_mean_log_density(rng):
    truth = _mixture(rng, spread=2.0)
    z = truth.sample(3000, generator=torch.Generator().manual_seed(1))
    prior = GaussianMixture.standard(3, 3, seed=2)
    values = [float(prior.log_prob(z).mean())]
    for _ in range(30):
        prior = prior.m_step(z)
        values.append(float(prior.log_prob(z).mean()))
    # EM on the draws: monotone up to rounding (reg_covar = 1e-6 perturbs the exact maximiser
    # by O(1e-6) in the covariance, O(1e-6) nats at most).
    assert np.diff(values).min() > -1e-6 and values[-1] > values[0] + 0.1


def test_weighted_m_step_equals_the_m_step_on_replicated_draws(rng):
    # Integer weights are copies of draws: same responsibilities, N_k/n and moments.
    z = torch.from_numpy(rng.standard_normal((2, 150, 3)) + 2.0 * rng.integers(0, 2, size=(2, 150, 1)))
    weights = torch.from_numpy(rng.integers(1, 4, size=(2, 150)).astype(float))
    prior = GaussianMixture.standard(3, 2, alpha=0.05, seed=1)
    replicated = torch.repeat_interleave(z.reshape(-1, 3), weights.reshape(-1).long(), dim=0)
    got, expected = prior.m_step(z, weights), prior.m_step(replicated)
    for name in ("weights", "means", "precisions"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=1e-9, atol=1e-9)


def test_lambda_step_uses_draws_for_a_mixture_under_a_gaussian_q(rng):
    prior = GaussianMixture.standard(2, 2, seed=0)
    mean = torch.from_numpy(rng.standard_normal((100, 2)))
    q = torch.distributions.Independent(torch.distributions.Normal(mean, 0.1 * torch.ones_like(mean)), 1)
    torch.manual_seed(5)
    stepped = prior.m_step_from(expected_statistics(prior, q, n_draws=4))
    torch.manual_seed(5)
    expected = prior.m_step(q.rsample((4,)))
    torch.testing.assert_close(stepped.means, expected.means, rtol=0, atol=0)


def _brute_force_posterior(prior, a, sigma, x, covariates=None):
    """Each component's joint Gaussian of (z_i, x_i), z_i's mean η_ik = μ_k + B_k c_i, conditioned
    with the textbook formulas; (responsibilities, mean, log evidence, variance)."""
    covs = np.linalg.inv(prior.precisions.numpy())
    m = a.shape[0]
    c = np.zeros((len(x), 0)) if covariates is None else covariates
    joint, means, second = [], [], []
    for w, mu, effects, cov in zip(prior.weights.numpy(), prior.means.numpy(), prior.coefficients.numpy(), covs):
        eta = mu + c @ effects.T  # (n, p)
        s_xx = a @ cov @ a.T + sigma**2 * np.eye(m)
        gain = cov @ a.T @ np.linalg.inv(s_xx)
        joint.append(w * multivariate_normal(np.zeros(m), s_xx).pdf(x - eta @ a.T))
        means.append(eta + (x - eta @ a.T) @ gain.T)
        second.append(np.diag(cov - gain @ a @ cov) + means[-1] ** 2)
    joint = np.stack(joint, axis=-1)
    resp = joint / joint.sum(-1, keepdims=True)
    mean = np.einsum("nk,knp->np", resp, np.stack(means))
    variance = np.einsum("nk,knp->np", resp, np.stack(second)) - mean**2
    return resp, mean, np.log(joint.sum(-1)), variance


def test_exact_mixture_posterior_against_brute_force_conditioning(rng):
    prior = _mixture(rng, p=3)
    a = rng.standard_normal((2, 3))  # compressive: m < p
    x = rng.standard_normal((40, 2)) * 3
    post = mixture_posterior(torch.from_numpy(x), prior, linear_gaussian(a, 0.7))
    resp, mean, log_evidence, _ = _brute_force_posterior(prior, a, 0.7, x)
    np.testing.assert_allclose(post.responsibilities.numpy(), resp, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(post.mean.numpy(), mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(post.log_evidence.numpy(), log_evidence, rtol=1e-10)


def test_exact_mixture_posterior_with_covariates_against_brute_force_conditioning(rng):
    # component k's mean is η_ik = μ_k + B_k c_i: each row conditions its own joint Gaussians
    prior = _mixture(rng, p=3, covariates=2)
    a = rng.standard_normal((2, 3))
    x, c = rng.standard_normal((40, 2)) * 3, rng.standard_normal((40, 2))
    rows, likelihood = torch.from_numpy(np.column_stack([x, c])), linear_gaussian(a, 0.7)
    post = mixture_posterior(rows, prior, likelihood)
    resp, mean, log_evidence, variance = _brute_force_posterior(prior, a, 0.7, x, c)
    np.testing.assert_allclose(post.responsibilities.numpy(), resp, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(post.mean.numpy(), mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(post.variance.numpy(), variance, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(post.log_evidence.numpy(), log_evidence, rtol=1e-10)
    np.testing.assert_allclose(marginal_log_likelihood(rows, prior, likelihood).numpy(), log_evidence, rtol=1e-10)
    with pytest.raises(ValueError, match="needs 2 covariates per row, got none"):
        mixture_posterior(torch.from_numpy(x), prior, likelihood)


def test_a_single_centred_component_is_the_graphical_model(rng):
    precision = random_spd(rng, 4)
    a = rng.standard_normal((5, 4))
    x = torch.from_numpy(rng.standard_normal((30, 5)))
    mixture = GaussianMixture([1.0], np.zeros((1, 4)), precision[None])
    likelihood = linear_gaussian(a, 0.5)
    torch.testing.assert_close(marginal_log_likelihood(x, mixture, likelihood),
                               marginal_log_likelihood(x, GaussianGraphicalModel(precision), likelihood))


@pytest.mark.parametrize("alpha", [0.0, 0.05])
def test_mixture_em_never_lowers_the_penalised_log_likelihood(rng, alpha):
    truth = _mixture(rng, k=2, p=3, spread=2.0)
    z = truth.sample(1500, generator=torch.Generator().manual_seed(3))
    a = rng.standard_normal((3, 3))
    likelihood = linear_gaussian(a, 0.5)
    x = likelihood.sample(z, generator=torch.Generator().manual_seed(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        em = EM(GaussianMixture.standard(3, 2, seed=1, alpha=alpha), likelihood, max_iter=200).fit(x.numpy())
    steps = np.diff(em.history_["objective"])
    # Exact EM is monotone; the graphical lasso stops at a relative KKT residual of 1e-6 and
    # reg_covar = 1e-6 shifts the covariance, so a step may lose O(1e-6) nats at most.
    assert steps.min() > -1e-6 and em.history_["objective"][-1] > em.history_["objective"][0] + 0.5
    # The penalised maximum likelihood is at least as high as the truth's objective; EM from
    # this start reaches it (a local maximum below the truth would fail here).
    at_truth = float(marginal_log_likelihood(x, truth, likelihood).mean()) - truth.with_penalty(alpha).penalty()
    assert em.history_["objective"][-1] >= at_truth


def test_components_are_matched_whatever_their_labels(rng):
    truth = _mixture(rng, k=4)
    shuffled = [2, 0, 3, 1]
    relabelled = GaussianMixture(truth.weights[shuffled], truth.means[shuffled] + 0.1, truth.precisions[shuffled])
    np.testing.assert_array_equal(relabelled.means[match_components(relabelled, truth)], truth.means + 0.1)


def test_mixture_posterior_moments_from_em(rng):
    truth = _mixture(rng, k=2, p=2, spread=2.0)
    likelihood = linear_gaussian(np.eye(2), 0.5)
    z = truth.sample(200, generator=torch.Generator().manual_seed(0))
    x = likelihood.sample(z, generator=torch.Generator().manual_seed(1)).numpy()
    em = EM(truth, likelihood, max_iter=1)
    em.prior_, em.likelihood_ = truth, likelihood  # the posterior under the truth: the Bayes oracle
    mean, std = em.posterior(x)
    _, brute_mean, _, brute_variance = _brute_force_posterior(truth, np.eye(2), 0.5, x)
    np.testing.assert_allclose(mean, brute_mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(std, np.sqrt(brute_variance), rtol=1e-7)


def test_complete_data_floor_is_the_mixture_mle_on_the_true_signals(rng):
    truth = _mixture(rng, k=2, p=3, spread=3.0)
    z = truth.sample(2000, generator=torch.Generator().manual_seed(0))
    ours = complete_data_floor(z, GaussianMixture.standard(3, 2, seed=0))
    reference = SkGaussianMixture(2, reg_covar=1e-6, tol=1e-12, max_iter=2000, random_state=0).fit(z.numpy())
    order = match_components(ours, GaussianMixture(reference.weights_, reference.means_, reference.precisions_))
    # Both run EM to the same (global, well-separated) maximum; their stopping rules differ by
    # far less than 1e-5.
    np.testing.assert_allclose(ours.means[order].numpy(), reference.means_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.precisions[order].numpy(), reference.precisions_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.weights[order].numpy(), reference.weights_, rtol=1e-6)


def test_mixture_errors_are_label_free(rng):
    truth = _mixture(rng, k=3)
    relabelled = GaussianMixture(truth.weights[[1, 2, 0]], truth.means[[1, 2, 0]], 2 * truth.precisions[[1, 2, 0]])
    errors = mixture_errors(relabelled, truth)
    assert errors["means_error"] == 0 and errors["weights_error"] == 0
    assert errors["precision_error"] == pytest.approx(1.0)  # ‖2Λ − Λ‖ / ‖Λ‖


def _old_m_step(prior: GaussianMixture, statistics) -> GaussianMixture:
    """The mixture's M-step as it was before covariates: μ_k = first/N_k, scatter second/N_k − μ_k μ_kᵀ."""
    totals = statistics["weights"] + 10 * torch.finfo(torch.float64).eps
    means = statistics["first"] / totals[:, None]
    scatter = statistics["second"] / totals[:, None, None] - means[:, :, None] * means[:, None, :]
    scatter = scatter + prior.reg_covar * torch.eye(prior.dim)
    precisions = torch.stack([prior._solve(scatter[k], prior.alpha / float(totals[k]), k)
                              for k in range(prior.components)])
    return GaussianMixture(totals / totals.sum(), means, precisions, alpha=prior.alpha)


@pytest.mark.parametrize("alpha", [0.0, 0.05])
def test_without_covariates_the_m_step_is_the_old_one_bit_for_bit(rng, alpha):
    truth = _mixture(rng, p=4)
    z = truth.sample(500, generator=torch.Generator().manual_seed(2))
    prior = GaussianMixture.standard(4, 3, alpha=alpha, seed=1)
    for statistics in (prior.statistics(z), prior.component_statistics(
            torch.from_numpy(rng.dirichlet(np.ones(3), size=500)), torch.from_numpy(rng.standard_normal((500, 3, 4))),
            torch.from_numpy(np.stack([np.linalg.inv(random_spd(rng, 4)) for _ in range(3)])))):
        assert set(statistics) == {"weights", "first", "second"}
        new, old = prior.m_step_from(statistics), _old_m_step(prior, statistics)
        for name in ("weights", "means", "precisions"):
            torch.testing.assert_close(getattr(new, name), getattr(old, name), rtol=0, atol=0)
        assert new.covariate_dim == 0 and set(new.state()) == {"weights", "means", "precisions"}


def test_zero_coefficients_are_the_mixture_without_covariates(rng):
    # B_k = 0: the same density, the same draws from the same random numbers, and, where the
    # covariates are all 0 too, the same M-step (the ridge on D_k leaves B_k at 0)
    plain = _mixture(rng)
    located = GaussianMixture(plain.weights, plain.means, plain.precisions, covariates=2)
    c = torch.from_numpy(rng.standard_normal((300, 2)))
    z = plain.sample(300, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(located.log_prob(z, c), plain.log_prob(z), rtol=0, atol=0)
    torch.testing.assert_close(located.sample(300, torch.Generator().manual_seed(0), covariates=c), z, rtol=0, atol=0)
    stepped, reference = located.m_step(z, covariates=torch.zeros(300, 2)), plain.m_step(z)
    for name in ("weights", "means", "precisions"):
        torch.testing.assert_close(getattr(stepped, name), getattr(reference, name), rtol=1e-12, atol=1e-12)
    assert not stepped.coefficients.any()


def test_each_components_location_maximises_its_weighted_expected_log_density(rng):
    # Brute force: with Λ_k fixed, BFGS on Σ_i r_ik E[log N(z_i; μ_k + B_k c_i, Λ_k⁻¹)] over
    # (μ_k, B_k), where E[·] over z_i | c_i = k ~ N(m_ik, V_k) is
    # ½ log det Λ_k − ½ tr(Λ_k V_k) − ½ (m_ik − η_ik)ᵀ Λ_k (m_ik − η_ik) + const, must find the
    # M-step's.
    n, components, p, k = 200, 3, 3, 2
    resp = rng.dirichlet(np.full(components, 0.7), size=n)
    c = rng.standard_normal((n, k)) + [1.0, -2.0]
    mean = rng.standard_normal((n, components, p)) + 2 * c[:, None, :1]
    cov = np.stack([np.linalg.inv(random_spd(rng, p)) for _ in range(components)])
    prior = _mixture(rng, k=components, p=p, covariates=k, reg_covar=0.0)
    fitted = prior.m_step_from(prior.component_statistics(*map(torch.from_numpy, (resp, mean, cov)),
                                                          covariates=torch.from_numpy(c)))
    design = np.column_stack([np.ones(n), c])
    for j in range(components):
        precision = random_spd(rng, p)  # any fixed Λ_k: the maximiser does not depend on it

        def negative(theta, j=j, precision=precision):
            residual = mean[:, j] - design @ theta.reshape(1 + k, p)  # (n, p)
            weighted = resp[:, j, None] * (residual @ precision)
            value = 0.5 * np.sum(weighted * residual) + 0.5 * resp[:, j].sum() * np.trace(precision @ cov[j])
            return value / n, -(design.T @ weighted).ravel() / n

        found = minimize(negative, np.zeros((1 + k) * p), jac=True, method="BFGS", options={"gtol": 1e-12}).x
        theta = found.reshape(1 + k, p)
        np.testing.assert_allclose(fitted.means[j].numpy(), theta[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(fitted.coefficients[j].numpy(), theta[1:].T, rtol=1e-6, atol=1e-7)


def test_weighted_draws_with_covariates_equal_replicated_draws(rng):
    # (S, n, p) draws of rows with covariates (n, k): each draw takes its row's covariates
    z = torch.from_numpy(rng.standard_normal((2, 150, 3)) + 2.0 * rng.integers(0, 2, size=(2, 150, 1)))
    c = torch.from_numpy(rng.standard_normal((150, 1)))
    weights = torch.from_numpy(rng.integers(1, 4, size=(2, 150)).astype(float))
    prior = GaussianMixture.standard(3, 2, alpha=0.05, seed=1, covariates=1)
    counts = weights.reshape(-1).long()
    replicated = torch.repeat_interleave(z.reshape(-1, 3), counts, dim=0)
    rows = torch.repeat_interleave(c.expand(2, 150, 1).reshape(-1, 1), counts, dim=0)
    got, expected = prior.m_step(z, weights, covariates=c), prior.m_step(replicated, covariates=rows)
    for name in ("weights", "means", "precisions", "coefficients"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=1e-9, atol=1e-9)


def test_a_mixture_with_covariates_round_trips_and_checks_its_rows(rng):
    prior = _mixture(rng, covariates=2, alpha=0.1)
    assert list(prior.state()) == ["weights", "means", "precisions", "coefficients"]
    rebuilt = GaussianMixture.from_state(prior.state(), **prior.config())
    assert rebuilt.covariate_dim == 2 and repr(rebuilt).endswith("covariates=2)")
    for name in ("weights", "means", "precisions", "coefficients"):
        torch.testing.assert_close(getattr(rebuilt, name), getattr(prior, name), rtol=0, atol=0)
        torch.testing.assert_close(getattr(prior.with_penalty(0.2), name), getattr(prior, name), rtol=0, atol=0)
    moved = prior.to(dtype=torch.float32)
    assert moved.coefficients.dtype == torch.float32 and moved.covariate_dim == 2
    assert prior.component_means(torch.zeros(5, 4, 2)).shape == (5, 4, 3, 3)
    z = torch.zeros(4, 3)
    for covariates, message in ((None, "needs 2 covariates per row, got none"),
                                (torch.zeros(4, 1), "needs 2 covariates per row, got 1")):
        with pytest.raises(ValueError, match=message):
            prior.log_prob(z, covariates)
    with pytest.raises(ValueError, match="takes no covariates"):
        _mixture(rng).log_prob(z, torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"covariate effects must be a finite \(3, 3, k\) array"):
        GaussianMixture(prior.weights, prior.means, prior.precisions, coefficients=torch.zeros(3, 2))
    # the effects count in relative_change once they are not all 0
    nudged = prior.with_state({**prior.state(), "coefficients": 1.5 * prior.coefficients})
    assert nudged.relative_change(prior) == pytest.approx(0.5)


def test_covariates_collinear_on_one_components_rows_leave_its_fitted_locations_unique(rng):
    # on component 0's rows the two covariates agree (c_1 = c_2), so B_0 is not identified but
    # its locations μ_0 + B_0 c_i are: they must be the least-squares fit of those rows, and the
    # other component's fit must be untouched (its rows see the covariates apart)
    n, p = 300, 3
    labels = np.arange(n) % 2
    shared = rng.standard_normal(n)
    covariates = np.column_stack([shared, np.where(labels == 0, shared, rng.standard_normal(n))])
    z = rng.standard_normal((n, p)) + covariates @ rng.standard_normal((2, p)) + 3.0 * labels[:, None]
    resp = torch.as_tensor(np.eye(2)[labels])
    prior = GaussianMixture.standard(p, 2, seed=0, covariates=2)
    c, draws = torch.as_tensor(covariates), torch.as_tensor(z)
    fitted = prior.m_step_from(prior.component_statistics(resp, draws, covariates=c))
    for k in (0, 1):
        rows = labels == k
        design = np.column_stack([np.ones(rows.sum()), covariates[rows]])
        expected = design @ np.linalg.lstsq(design, z[rows], rcond=None)[0]
        got = fitted.component_means(c[rows])[:, k].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6)
