import numpy as np
import torch

from invae import EM, GaussianGraphicalModel, GaussianMixture, PoissonLikelihood, linear_gaussian, simulate_problem
from invae.evaluation.metrics import relative_frobenius_error
from invae.model.forward import LinearOperator
from invae.references.exact import exact_posterior, marginal_log_likelihood, mixture_posterior
from invae.references.importance import importance_em, importance_posterior

from ..conftest import random_spd


def _check_against(post, mean, std, log_evidence):
    # A self-normalised estimate's Monte Carlo standard error is about sd(z | x)/√ESS per
    # coordinate; 5 of those bound each of n·p errors (max over ~100 values).
    se = std / np.sqrt(post.ess.numpy())[:, None]
    assert np.all(np.abs(post.mean.numpy() - mean) < 5 * se)
    # The sd from the same draws: relative error ≈ √(κ − 1)/(2√ESS) ≈ 1/√(2 ESS) for a Gaussian; 5 of those.
    assert np.all(np.abs(post.std.numpy() / std - 1) < 5 / np.sqrt(2 * post.ess.numpy())[:, None])
    # log p(x): the log of a mean of weights, SE ≈ √(S/ESS − 1)/√S — at most 0.05 nats here.
    np.testing.assert_allclose(post.log_evidence.numpy(), log_evidence, atol=0.05)


def test_linear_gaussian_posterior_is_recovered(rng):
    precision = random_spd(rng, 3, condition=5.0)
    prior, likelihood = GaussianGraphicalModel(precision), linear_gaussian(rng.standard_normal((4, 3)), 0.5)
    x = likelihood.sample(prior.sample(30, torch.Generator().manual_seed(0)), torch.Generator().manual_seed(1))
    post = importance_posterior(x, prior, likelihood, n_draws=2048)
    mean, cov = exact_posterior(x, prior, likelihood)
    std = np.sqrt(np.diag(cov.numpy()))[None, :].repeat(30, 0)
    _check_against(post, mean.numpy(), std, marginal_log_likelihood(x, prior, likelihood).numpy())
    assert post.ess.min() > 1000  # the Laplace proposal is exact up to the t tails here


def test_bimodal_mixture_posterior_is_recovered(rng):
    # Two components 3 sds apart, seen through noise of sd 1: many posteriors have two modes,
    # and the Laplace proposal sees one; the defensive prior component covers the other.
    prior = GaussianMixture([0.5, 0.5], [[-1.5, 0.0], [1.5, 0.0]], np.stack([np.eye(2) * 4, np.eye(2) * 4]))
    likelihood = linear_gaussian(np.eye(2), 1.0)
    x = likelihood.sample(prior.sample(40, torch.Generator().manual_seed(0)), torch.Generator().manual_seed(1))
    post = importance_posterior(x, prior, likelihood, n_draws=8192)
    exact = mixture_posterior(x, prior, likelihood)
    _check_against(post, exact.mean.numpy(), exact.variance.sqrt().numpy(), exact.log_evidence.numpy())


def test_poisson_posterior_against_quadrature():
    # One coordinate, x ~ Poisson(exp(z)), z ~ N(0, 1/Λ): the posterior mean by a fine grid.
    prior, likelihood = GaussianGraphicalModel(np.array([[2.0]])), PoissonLikelihood(LinearOperator(np.eye(1)))
    x = torch.tensor([[0.0], [1.0], [3.0], [12.0]])
    post = importance_posterior(x, prior, likelihood, n_draws=4096)
    grid = torch.linspace(-8, 8, 20001, dtype=torch.float64)[:, None]
    log_joint = prior.log_prob(grid)[:, None] + likelihood.log_prob(x[None, :, :], grid[:, None, :])
    weights = torch.softmax(log_joint, dim=0)
    mean = (weights * grid).sum(0)
    std = (weights * (grid - mean) ** 2).sum(0).sqrt()
    log_evidence = torch.logsumexp(log_joint, 0) + torch.log(grid[1] - grid[0])
    _check_against(post, mean[:, None].numpy(), std[:, None].numpy(), log_evidence.numpy())


def test_same_seed_same_answer(rng):
    prior, likelihood = GaussianGraphicalModel(np.eye(2)), linear_gaussian(np.eye(2), 1.0)
    x = torch.from_numpy(rng.standard_normal((5, 2)))
    first = importance_posterior(x, prior, likelihood, n_draws=256, seed=3)
    again = importance_posterior(x, prior, likelihood, n_draws=256, seed=3)
    other = importance_posterior(x, prior, likelihood, n_draws=256, seed=4)
    assert torch.equal(first.mean, again.mean) and not torch.equal(first.mean, other.mean)


def test_monte_carlo_em_reaches_exact_em(rng):
    problem = simulate_problem(p=3, n=1500, graph="chain", forward="identity", noise_std=0.7, seed=5)
    likelihood = linear_gaussian(problem.A, 0.7)
    exact = EM(GaussianGraphicalModel(dim=3, alpha=0.02), likelihood, tol=1e-9, max_iter=5000).fit(problem.X).precision_
    ours, iterations = importance_em(problem.X, GaussianGraphicalModel(dim=3, alpha=0.02), likelihood, tol=1e-4)
    assert iterations < 100
    # Each E-step's second moment carries Monte Carlo error ~ sd²/√(n·ESS) ≈ 1/√(1500·900)
    # ≈ 1e-3 relative; the fixed point moves by a small multiple of that. 1e-2 is ~10 of them.
    assert relative_frobenius_error(ours.precision.numpy(), exact) < 1e-2
    assert relative_frobenius_error(ours.precision.numpy(), np.eye(3)) > 0.1  # it moved from the start
