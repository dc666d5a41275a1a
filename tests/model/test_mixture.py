import warnings

import numpy as np
import pytest
import torch
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


def _mixture(rng, k=3, p=3, spread=3.0, **options) -> GaussianMixture:
    weights = rng.dirichlet(np.full(k, 5.0))
    means = spread * rng.standard_normal((k, p))
    precisions = np.stack([random_spd(rng, p, condition=5.0) for _ in range(k)])
    return GaussianMixture(weights, means, precisions, **options)


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


def _brute_force_posterior(prior, a, sigma, x):
    """Each component's joint Gaussian of (z, x), conditioned with the textbook formulas."""
    covs = np.linalg.inv(prior.precisions.numpy())
    m = a.shape[0]
    joint, means, second = [], [], []
    for w, mu, cov in zip(prior.weights.numpy(), prior.means.numpy(), covs):
        s_xx = a @ cov @ a.T + sigma**2 * np.eye(m)
        gain = cov @ a.T @ np.linalg.inv(s_xx)
        joint.append(w * multivariate_normal(a @ mu, s_xx).pdf(x))
        means.append(mu + (x - a @ mu) @ gain.T)
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
