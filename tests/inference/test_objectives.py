import math

import numpy as np
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from invae import GaussianGraphicalModel, linear_gaussian
from invae.inference.objectives import elbo, importance_weighted_bound
from invae.references.exact import exact_posterior, marginal_log_likelihood

from ..conftest import random_spd


def test_batch_loss_is_the_design_formula_plus_a_constant(rng):
    # docs/methods.md §2.4: L = ½ tr(Λ Σ_b z_b z_bᵀ) + (1/2σ²) Σ_b ‖x_b − A z_b‖² − Σ_{b,j} log σ_{b,j};
    # −Σ_b ELBO_b differs from it by B·c, c = −½ log det Λ + (m/2) log 2πσ² + (p/2) log 2π − (p/2) log 2πe.
    b, p, m, sigma = 3, 2, 3, 0.7
    precision = np.array([[2.0, -0.6], [-0.6, 1.5]])
    a = np.array([[1.0, 0.5], [0.0, 1.0], [2.0, -1.0]])
    x = torch.as_tensor(rng.standard_normal((b, m)))
    mu, log_sd = torch.as_tensor(rng.standard_normal((b, p))), torch.as_tensor(rng.normal(-0.5, 0.2, (b, p)))
    z = torch.as_tensor(rng.standard_normal((1, b, p)))
    q = Independent(Normal(mu, log_sd.exp()), 1)
    loss = -elbo(x, q, GaussianGraphicalModel(precision), linear_gaussian(a, sigma), z=z).sum()
    zn, xn = z[0].numpy(), x.numpy()
    formula = (0.5 * np.trace(precision @ zn.T @ zn) + np.sum((xn - zn @ a.T) ** 2) / (2 * sigma**2)
               - log_sd.sum().item())
    c = (-0.5 * np.log(np.linalg.det(precision)) + m / 2 * np.log(2 * np.pi * sigma**2)
         + p / 2 * np.log(2 * np.pi) - p / 2 * np.log(2 * np.pi * np.e))
    assert math.isclose(float(loss), formula + b * c, rel_tol=1e-12)


def test_elbo_is_evidence_minus_kl_to_the_exact_posterior(rng):
    # ELBO(q) = log p(x) − KL(q ‖ p(z|x)) for any q. With q = the exact posterior it equals
    # log p(x); with its diagonal (mean-field) version it falls short by exactly the KL.
    p, m, n, draws = 4, 6, 5, 4000
    prior = GaussianGraphicalModel(random_spd(rng, p))
    lik = linear_gaussian(rng.standard_normal((m, p)), 0.8)
    x = torch.as_tensor(rng.standard_normal((n, m)) * 2)
    mean, cov = exact_posterior(x, prior, lik)
    evidence = marginal_log_likelihood(x, prior, lik)
    exact_q = MultivariateNormal(mean, cov.expand(n, p, p))
    diag_q = Independent(Normal(mean, cov.diagonal().sqrt().expand(n, p)), 1)
    kl = _kl_diag_to_full(mean, cov)  # torch has no KL for Independent(Normal) → MultivariateNormal
    torch.manual_seed(0)
    for q, target in ((exact_q, evidence), (diag_q, evidence - kl)):
        # a Gaussian q, prior and likelihood: every term in closed form, the ELBO exact
        torch.testing.assert_close(elbo(x, q, prior, lik), target, rtol=0, atol=1e-9)
        # the same through draws (z given): 4 Monte Carlo standard errors
        values = torch.stack([elbo(x, q, prior, lik, z=q.rsample((1,))) for _ in range(draws)])  # (draws, n)
        se = values.std(0) / math.sqrt(draws)
        assert torch.all((values.mean(0) - target).abs() < 4 * se)
    assert torch.all(kl > 0)


def test_a_poisson_elbo_in_closed_form_is_the_average_over_draws(rng):
    # E_q[log g + log p(x|z)] + H(q) in closed form (Poisson: the log-normal mean) against the
    # same ELBO averaged over 4000 draws per row, diagonal and full q: 4 standard errors
    from invae.model.forward import LinearOperator
    from invae.model.likelihoods import PoissonLikelihood
    p, m, n, draws = 3, 4, 5, 4000
    prior = GaussianGraphicalModel(random_spd(rng, p))
    lik = PoissonLikelihood(LinearOperator(rng.standard_normal((m, p)) / 2))
    x = torch.as_tensor(rng.poisson(2.0, (n, m)).astype(float))
    mean = torch.as_tensor(rng.standard_normal((n, p)) / 2)
    cov = torch.as_tensor(random_spd(rng, p, condition=3.0)) / 4
    for q in (MultivariateNormal(mean, cov.expand(n, p, p)), Independent(Normal(mean, cov.diagonal().sqrt()), 1)):
        closed = elbo(x, q, prior, lik)
        values = torch.stack([elbo(x, q, prior, lik, z=q.rsample((1,))) for _ in range(draws)])  # (draws, n)
        se = values.std(0) / math.sqrt(draws)
        assert torch.all((values.mean(0) - closed).abs() < 4 * se)


def _kl_diag_to_full(mean, cov):
    """KL(N(μ, diag Σ) ‖ N(μ, Σ)) = ½ [tr(Σ⁻¹ D) − p − log det D + log det Σ], the same for every row."""
    d = torch.diag(cov.diagonal())
    value = 0.5 * (torch.trace(torch.linalg.solve(cov, d)) - len(cov) - torch.logdet(d) + torch.logdet(cov))
    return value.expand(mean.shape[0])


def test_the_importance_weighted_bound_is_an_unbiased_evidence_estimate_in_exp(rng):
    # E exp(L_S) = E (1/S) Σ_s g p / r = p(x; Λ) for any proposal r (here q and q widened). With
    # q = the exact posterior the weights p(x) q / r lie in (0, 2 p(x)]: over R repeats the mean
    # of exp(L_S − log p(x)) is 1 within 4 of its standard errors.
    p, m, n, repeats = 3, 4, 5, 200
    prior = GaussianGraphicalModel(random_spd(rng, p))
    lik = linear_gaussian(rng.standard_normal((m, p)), 0.8)
    x = torch.as_tensor(rng.standard_normal((n, m)))
    mean, cov = exact_posterior(x, prior, lik)
    q = MultivariateNormal(mean, cov.expand(n, p, p))
    torch.manual_seed(0)
    ratios = torch.stack([importance_weighted_bound(x, q, prior, lik, n_draws=8) for _ in range(repeats)])
    ratios = (ratios - marginal_log_likelihood(x, prior, lik)).exp()  # (R, n)
    se = ratios.std(0) / math.sqrt(repeats)
    assert torch.all((ratios.mean(0) - 1).abs() < 4 * se) and torch.all(se > 0)


def test_the_importance_weighted_gradient_corrects_the_bias_of_a_mean_field_q(rng):
    # Fisher's identity: ∇_Λ log p(x; Λ) = E_{p(z|x)} ∇_Λ log g(z; Λ). The bound's gradient is its
    # self-normalised importance estimate from q's draws; the ELBO's (exact here: closed form) is
    # E_q ∇ log g, off by ∇ KL(q ‖ p(z|x)) for the mean-field q that misses the posterior's
    # correlation. The bound's Monte Carlo error: the spread of R independent repeats, /√R.
    p, m, n, repeats, draws = 2, 2, 3, 20, 4000
    precision = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    lik = linear_gaussian(np.eye(m), 0.6)
    x = torch.as_tensor(rng.standard_normal((n, m)) * 1.5)
    mean, cov = exact_posterior(x, GaussianGraphicalModel(precision), lik)
    q = Independent(Normal(mean, cov.diagonal().sqrt().expand(n, p)), 1)

    def gradient(objective) -> torch.Tensor:
        leaf = precision.clone().requires_grad_()
        objective(GaussianGraphicalModel(precision).with_state({"precision": leaf})).sum().backward()
        return leaf.grad

    exact = gradient(lambda prior: marginal_log_likelihood(x, prior, lik))
    torch.manual_seed(0)
    weighted = torch.stack([gradient(lambda prior: importance_weighted_bound(x, q, prior, lik, draws))
                            for _ in range(repeats)])
    se = weighted.std(0) / math.sqrt(repeats)
    assert torch.all((weighted.mean(0) - exact).abs() < 4 * se)
    # the ELBO's gradient misses in the correlation's entry (diagonal ones: the same, as q's variances are
    # the posterior's)
    assert ((gradient(lambda prior: elbo(x, q, prior, lik)) - exact).abs() > 10 * se).any()
