import math

import numpy as np
import pytest
import torch
from torch.distributions import (AffineTransform, Independent, MultivariateNormal, Normal, TransformedDistribution,
                                 kl_divergence)

from invae import GaussianGraphicalModel, GaussianMixture, linear_gaussian
from invae.inference.objectives import elbo
from invae.inference.lambda_steps import expected_statistics
from invae.inference.posteriors import (FullCovarianceEncoder, GaussianEncoder, IAFEncoder, LowRankEncoder,
                                        MeanFieldFactors, MixtureEncoder, _scale_tril, marginal_cdf, moments)
from invae.inference.reweighting import defensive_draws
from invae.model.forward import LinearOperator
from invae.model.likelihoods import NoisePerRowGaussianLikelihood, PoissonLikelihood
from invae.references.exact import exact_posterior, marginal_log_likelihood, mean_field_optimum, mixture_posterior

from ..conftest import random_spd


def _randomize(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.5) -> None:
    """Move every parameter away from its (near-identity) start, so nothing is trivially zero."""
    with torch.no_grad():
        for param in module.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))


def _flow_map(q: TransformedDistribution, eps: torch.Tensor) -> torch.Tensor:
    """ε_0 ↦ z_T: the base's reparameterisation, then every flow step."""
    z = q.base_dist.mean + q.base_dist.stddev * eps
    for step in q.transforms:
        z = step(z)
    return z


@pytest.fixture(params=[1, 2, 3], ids=lambda t: f"T={t}")
def iaf(request, generator):
    torch.manual_seed(0)
    encoder = IAFEncoder(m=4, p=3, hidden=(8,), n_steps=request.param, context=5)
    _randomize(encoder, generator)
    return encoder


@pytest.mark.parametrize("row", range(3))
def test_iaf_log_density_is_the_change_of_variables_formula(iaf, generator, row):
    # log q(z) = log N(ε_0; 0, I) − log |det ∂z_T/∂ε_0|, the Jacobian by autograd (brute force).
    x = torch.randn(3, 4, generator=generator)[row : row + 1]
    eps = torch.randn(3, 3, generator=generator)[row]
    q = iaf(x)
    jacobian = torch.autograd.functional.jacobian(lambda e: _flow_map(q, e[None])[0], eps)
    expected = Normal(0.0, 1.0).log_prob(eps).sum() - torch.linalg.slogdet(jacobian).logabsdet
    z = _flow_map(q, eps[None])
    assert q.log_prob(z).item() == pytest.approx(expected.item(), abs=1e-10)
    # docs/methods.md §2.3's closed form, − Σ_j [½ ε_0j² + ½ log 2π + Σ_t log σ_tj], σ_0 the base scale
    log_scales = q.base_dist.stddev.log().sum() + sum(step._cached_log_scale.sum() for step in q.transforms)
    closed_form = -0.5 * eps @ eps - 1.5 * math.log(2 * math.pi) - log_scales
    assert expected.item() == pytest.approx(closed_form.item(), abs=1e-10)


def test_iaf_samples_and_density_agree(generator):
    # Importance sampling: E_q[f(z) / q(z)] = ∫ f = 1 for any density f inside q's support.
    # f = N(z; E_q z, (0.5·sd_q)²) keeps the weights bounded; 4 standard errors of the mean.
    torch.manual_seed(0)
    encoder = IAFEncoder(m=4, p=3, hidden=(8,), n_steps=2, context=5)
    _randomize(encoder, generator, scale=0.3)
    q = encoder(torch.randn(1, 4, generator=generator))
    with torch.no_grad():
        z = q.rsample((40_000,))[:, 0]
        log_q = q.log_prob(z[:, None])[:, 0]
    target = Independent(Normal(z.mean(0), 0.5 * z.std(0)), 1)
    weights = (target.log_prob(z) - log_q).exp()
    assert abs(weights.mean().item() - 1) < 4 * weights.std().item() / math.sqrt(len(weights))


def test_each_iaf_step_is_triangular_in_alternating_orders(iaf, generator):
    # Step t's output j depends on inputs earlier in its order only (and on itself):
    # order 0,1,2 for even t, 2,1,0 for odd t; so ∂z_t/∂z_{t−1} is lower / upper triangular.
    q = iaf(torch.randn(1, 4, generator=generator))
    for t, step in enumerate(q.transforms):
        z = torch.randn(3, generator=generator)
        jacobian = torch.autograd.functional.jacobian(lambda v: step(v[None])[0], z)
        zeros = torch.triu(jacobian, 1) if t % 2 == 0 else torch.tril(jacobian, -1)
        assert torch.all(zeros == 0)
        assert torch.all(jacobian.diagonal() > 0)  # σ_t + (1 − σ_t) ∂m/∂z_j with ∂m_j/∂z_j = 0


def test_iaf_gates_start_near_sigmoid_of_the_bias():
    # σ_t = sigmoid(s_t + 2) with s_t from a freshly initialised MADE (outputs of order 0.5):
    # gates start around sigmoid(2) = 0.881, so each step mostly passes z_{t−1} through.
    # Over seeds 0–4 the mean gate was 0.869–0.912 and the smallest 0.708.
    torch.manual_seed(0)
    q = IAFEncoder(m=4, p=3, n_steps=2)(torch.randn(64, 4))
    assert q.rsample().shape == (64, 3)
    for step in q.transforms:
        gates = step._cached_log_scale.exp()
        assert gates.min() > 0.6
        assert gates.mean().item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), abs=0.05)


def test_iaf_needs_two_dimensions():
    with pytest.raises(ValueError, match="p >= 2"):
        IAFEncoder(m=3, p=1)


def _raw_diagonal(d: torch.Tensor) -> torch.Tensor:
    """The raw entry r whose Cholesky diagonal is d: d = exp(B tanh(r / B)), B = 7."""
    return 7.0 * torch.atanh(d.log() / 7.0)


def test_full_covariance_encoder_can_hold_the_exact_posterior(rng):
    # Set the linear part to x ↦ (Σ_post Aᵀ/σ²) x and the Cholesky entries to chol(Σ_post):
    # then q is the exact posterior and log p(x, z) − log q(z | x) = log p(x) for every z.
    p, m, n, sigma = 3, 4, 6, 0.6
    prior = GaussianGraphicalModel(random_spd(rng, p))
    a = rng.standard_normal((m, p))
    lik = linear_gaussian(a, sigma)
    x = torch.as_tensor(rng.standard_normal((n, m)))
    mean, cov = exact_posterior(x, prior, lik)
    encoder = FullCovarianceEncoder(m, p, hidden=(8,))
    tril = torch.linalg.cholesky(cov)
    rows, cols = torch.tril_indices(p, p)
    raw = torch.where(rows == cols, _raw_diagonal(tril[rows, cols]), tril[rows, cols])
    with torch.no_grad():
        encoder.trunk.linear.weight.zero_()
        encoder.trunk.linear.weight[:p] = cov @ torch.as_tensor(a).T / sigma**2
        encoder.trunk.linear.bias.copy_(torch.cat([torch.zeros(p), raw]))
    q = encoder(x)
    torch.testing.assert_close(q.mean, mean)
    torch.testing.assert_close(q.covariance_matrix, cov.expand(n, p, p))
    z = q.rsample((5,))
    log_ratio = prior.log_prob(z) + lik.log_prob(x, z) - q.log_prob(z)
    torch.testing.assert_close(log_ratio, marginal_log_likelihood(x, prior, lik).expand(5, n))


def test_cholesky_diagonal_is_exp_of_its_raw_entry_within_a_bound():
    rows, cols = torch.tril_indices(2, 2)
    raw = torch.tensor([[0.5, 3.0, -1.0], [100.0, 0.0, -100.0]])
    tril = _scale_tril(raw, rows, cols, 2)
    # ≈ exp(r) for a moderate r: B tanh(r/B) = r − r³/(3B²) + O(r⁵), so log d is off by at most
    # |r|³/(3B²) (0.09% at r = 0.5, 0.7% at r = −1) ...
    r = torch.tensor([0.5, -1.0])
    assert torch.all((tril[0].diagonal().log() - r).abs() <= r.abs() ** 3 / (3 * 49))
    assert tril[0, 1, 0] == 3.0 and tril[0, 0, 1] == 0.0
    # ... and never beyond e^{±7}, whatever the raw entry.
    torch.testing.assert_close(tril[1].diagonal(), torch.tensor([7.0, -7.0]).exp())


def test_encoders_read_counts_on_the_log1p_scale(rng):
    counts = torch.as_tensor(rng.poisson(3.0, (50, 4)), dtype=torch.float64)
    on_counts = GaussianEncoder(4, 2, hidden=(8,), log1p=True)
    on_logs = GaussianEncoder(4, 2, hidden=(8,))
    on_logs.load_state_dict(on_counts.state_dict())
    on_counts.standardize_with(counts)
    on_logs.standardize_with(torch.log1p(counts))
    torch.testing.assert_close(on_counts.trunk.shift, torch.log1p(counts).mean(0))
    torch.testing.assert_close(on_counts(counts).mean, on_logs(torch.log1p(counts)).mean)


def test_mixture_encoder_can_hold_the_exact_mixture_posterior(rng):
    # Under a mixture prior whose components share Λ, the exact posterior's log-weights differ
    # by terms linear in x, its means are linear in x and its covariance V is constant: the
    # trunk's linear map holds it exactly. Then every draw's log p(x, z) − log q(z | x) is
    # log p(x), so the ELBO summed over components equals log p(x) to rounding.
    p, m, n, sigma = 3, 4, 6, 0.6
    precision = random_spd(rng, p)
    centres = 2.0 * rng.standard_normal((2, p))
    prior = GaussianMixture([0.3, 0.7], centres, np.stack([precision, precision]))
    a = rng.standard_normal((m, p))
    lik = linear_gaussian(a, sigma)
    x = torch.as_tensor(rng.standard_normal((n, m)) * 2)
    exact = mixture_posterior(x, prior, lik)
    s_inv = np.linalg.inv(a @ np.linalg.inv(precision) @ a.T + sigma**2 * np.eye(m))  # Cov x⁻¹ in each component
    v = exact.cov[0].numpy()
    encoder = MixtureEncoder(m, p, hidden=(8,), components=2)
    rows, cols = torch.tril_indices(p, p)
    tril = torch.linalg.cholesky(exact.cov[0])
    raw = torch.where(rows == cols, _raw_diagonal(tril[rows, cols]), tril[rows, cols])
    weight, bias = torch.zeros_like(encoder.trunk.linear.weight), torch.zeros_like(encoder.trunk.linear.bias)
    for c in range(2):
        am = a @ centres[c]
        weight[c] = torch.as_tensor(s_inv @ am)  # log π_c + (Aμ_c)ᵀ S⁻¹ x − ½ (Aμ_c)ᵀ S⁻¹ (Aμ_c)
        bias[c] = math.log(prior.weights[c].item()) - 0.5 * am @ s_inv @ am
        first = 2 + c * encoder.per_component
        weight[first:first + p] = torch.as_tensor(v @ a.T / sigma**2)  # m_c(x) = V (Λ μ_c + Aᵀ x/σ²)
        bias[first:first + p] = torch.as_tensor(v @ precision @ centres[c])
        bias[first + p:first + encoder.per_component] = raw
    with torch.no_grad():
        encoder.trunk.linear.weight.copy_(weight)
        encoder.trunk.linear.bias.copy_(bias)
    q = encoder(x)
    torch.testing.assert_close(q.mixture_distribution.probs, exact.responsibilities)
    torch.testing.assert_close(q.mean, exact.mean)
    torch.testing.assert_close(elbo(x, q, prior, lik, n_samples=5), exact.log_evidence)


def test_mixture_elbo_is_the_expectation_over_the_mixture(generator):
    # The component-summed estimator and plain Monte Carlo over draws of the mixture estimate
    # the same expectation; their difference is within 4 standard errors of the latter.
    torch.manual_seed(1)
    encoder = MixtureEncoder(3, 2, hidden=(8,), components=3)
    _randomize(encoder, generator)
    prior, lik = GaussianGraphicalModel(np.eye(2) * 2), linear_gaussian(np.array([[1.0, 0.5], [0.2, 1.0], [1.0, 1.0]]), 0.8)
    x = torch.randn(1, 3)
    q = encoder(x)
    with torch.no_grad():
        summed = elbo(x, q, prior, lik, n_samples=20_000)
        z = q.sample((20_000,))
        plain = prior.log_prob(z) + lik.log_prob(x, z) - q.log_prob(z)
    assert abs(float(summed - plain.mean())) < 4 * float(plain.std()) / math.sqrt(20_000)


def test_mixture_encoder_starts_with_equal_weights_for_every_x():
    q = MixtureEncoder(4, 3, hidden=(8,), components=3)(10 * torch.randn(50, 4))
    torch.testing.assert_close(q.mixture_distribution.probs, torch.full((50, 3), 1 / 3))


@pytest.mark.parametrize("make", [
    lambda: GaussianEncoder(4, 3, hidden=(8,)),
    lambda: FullCovarianceEncoder(4, 3, hidden=(8,)),
    lambda: LowRankEncoder(4, 3, hidden=(8,), rank=2),
    lambda: IAFEncoder(4, 3, hidden=(8,)),
    lambda: MeanFieldFactors(7, 3),
])
def test_every_family_gives_batch_shape_n_and_event_shape_p(make):
    torch.manual_seed(0)
    q = make()(torch.randn(7, 4), torch.arange(7))
    z = q.rsample((2,))
    assert z.shape == (2, 7, 3)
    assert q.log_prob(z).shape == (2, 7)
    mean, std = moments(q, n_draws=32)
    assert mean.shape == std.shape == (7, 3)


def test_moments_monte_carlo_within_standard_errors():
    # A flow torch cannot take moments of: N(0, 1) pushed through z = loc + scale·ε.
    # Means and sds within 4 standard errors: se(mean) = sd/√N, se(sd) ≈ sd/√(2N).
    loc, scale = torch.tensor([[1.0, -2.0, 30.0]]), torch.tensor([[0.5, 2.0, 0.1]])
    base = Independent(Normal(torch.zeros(1, 3), torch.ones(1, 3)), 1)
    q = TransformedDistribution(base, [AffineTransform(loc, scale, event_dim=1)])
    with pytest.raises(NotImplementedError):
        q.mean
    n_draws = 4000
    torch.manual_seed(0)
    mean, std = moments(q, n_draws=n_draws, chunk=512)
    assert torch.all((mean - loc).abs() < 4 * scale / math.sqrt(n_draws))
    assert torch.all((std - scale).abs() < 4 * scale / math.sqrt(2 * n_draws))


def test_moments_are_exact_for_gaussians():
    q = Independent(Normal(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])), 1)
    mean, std = moments(q)
    np.testing.assert_array_equal(mean.numpy(), [[1.0, 2.0]])
    np.testing.assert_array_equal(std.numpy(), [[3.0, 4.0]])


def test_marginal_cdf_is_exact_for_a_mixture_and_matches_draws_for_a_flow(generator):
    # The mixture's closed form Σ_c w_c Φ((t − μ_cj)/σ_cj) against the fraction of 40 000
    # draws below t: within 4 binomial SEs (√(P(1−P)/N) ≤ 0.0025). One threshold per row.
    torch.manual_seed(2)
    encoder = MixtureEncoder(3, 2, hidden=(8,), components=3)
    _randomize(encoder, generator)
    with torch.no_grad():
        q = encoder(torch.randn(4, 3))
        t = torch.tensor([[-0.5], [0.0], [0.3], [1.0]])
        exact = marginal_cdf(q, t)
        fraction = (q.sample((40_000,)) <= t).double().mean(0)
    assert exact.shape == (4, 2)
    assert torch.all((exact - fraction).abs() < 4 * 0.0025)
    # A flow has no closed form: the draws' fraction, with the same SE bound.
    loc, scale = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 2.0]])
    flow = TransformedDistribution(Independent(Normal(torch.zeros(1, 2), torch.ones(1, 2)), 1),
                                   [AffineTransform(loc, scale, event_dim=1)])
    expected = Normal(loc, scale).cdf(torch.tensor(0.0))
    assert torch.all((marginal_cdf(flow, 0.0, n_draws=40_000, chunk=4000) - expected).abs() < 4 * 0.0025)
    gaussian = Independent(Normal(loc, scale), 1)
    torch.testing.assert_close(marginal_cdf(gaussian, 0.0), expected)


@pytest.mark.parametrize("per_row", [False, True])
def test_mean_field_optimum_minimises_the_kl_to_the_exact_posterior(per_row):
    """set_to_optimum against the definition: the gradient of KL(q_i ‖ p(z | x_i)) in the
    factors (μ_i, log σ_i), by autograd on torch's Gaussian KL, vanishes there, and any move raises it."""
    rng = np.random.default_rng(0)
    prior = GaussianGraphicalModel(torch.as_tensor(random_spd(rng, 4)))
    a, measured = rng.standard_normal((5, 4)), rng.standard_normal((6, 5))
    if per_row:
        likelihood = NoisePerRowGaussianLikelihood(LinearOperator(a))
        x = torch.as_tensor(NoisePerRowGaussianLikelihood.rows(measured, rng.uniform(0.3, 2.0, 6)))
    else:
        likelihood, x = linear_gaussian(a, 0.7), torch.as_tensor(measured)
    factors = MeanFieldFactors(6, 4).double()
    assert MeanFieldFactors.has_closed_form(prior, likelihood)
    factors.set_to_optimum(x, prior, likelihood)
    mean, cov = exact_posterior(x, prior, likelihood)
    exact = MultivariateNormal(mean, cov.expand(6, 4, 4))

    def kl(mu, log_std):
        return kl_divergence(MultivariateNormal(mu, torch.diag_embed((2 * log_std).exp())), exact).sum()

    mu, log_std = factors.mean.detach().requires_grad_(), factors.log_std.detach().requires_grad_()
    for grad in torch.autograd.grad(kl(mu, log_std), (mu, log_std)):
        assert grad.abs().max() < 1e-10  # float64: zero up to rounding
    with torch.no_grad():
        for move in (0.01 * torch.ones_like(mu), torch.zeros_like(mu)):
            assert kl(mu + move, log_std + 0.01 * (move == 0)) > kl(mu, log_std)


def test_mean_field_has_no_closed_form_beyond_one_identified_gaussian_posterior():
    mixture = GaussianMixture([0.5, 0.5], np.zeros((2, 3)), np.stack([np.eye(3)] * 2))
    assert not MeanFieldFactors.has_closed_form(GaussianGraphicalModel(dim=3), PoissonLikelihood(LinearOperator.identity(3)))
    assert not MeanFieldFactors.has_closed_form(mixture, linear_gaussian(np.eye(3), 1.0))
    # m < p: the diagonal family's optimum runs away, so the factors keep their Adam steps
    assert not MeanFieldFactors.has_closed_form(GaussianGraphicalModel(dim=3), linear_gaussian(np.eye(2, 3), 1.0))


@pytest.mark.parametrize("encoder", [GaussianEncoder, FullCovarianceEncoder])
def test_an_encoder_at_its_closed_form_answers_new_rows_exactly(encoder):
    """set_to_optimum against the references, on rows the encoder was not standardised with:
    the full-covariance encoder is the exact posterior N(m_i, Σ), the diagonal one the
    mean-field optimum (mean_field_optimum, checked against the KL's gradient above)."""
    rng = np.random.default_rng(1)
    prior = GaussianGraphicalModel(torch.as_tensor(random_spd(rng, 4)))
    likelihood = linear_gaussian(rng.standard_normal((6, 4)), 0.7)
    q = encoder(6, 4, (8,)).double()
    q.standardize_with(torch.as_tensor(3.0 + 2.0 * rng.standard_normal((50, 6))))
    assert encoder.has_closed_form(prior, likelihood)
    new = torch.as_tensor(rng.standard_normal((7, 6)))
    q.set_to_optimum(new[:0], prior, likelihood)
    with torch.no_grad():
        answer = q(new)
    mean, cov = exact_posterior(new, prior, likelihood)
    torch.testing.assert_close(answer.mean, mean, rtol=0, atol=1e-12)
    if encoder is FullCovarianceEncoder:
        torch.testing.assert_close(answer.covariance_matrix, cov.expand(7, 4, 4), rtol=0, atol=1e-12)
    else:
        _, variance, _ = mean_field_optimum(new, prior, likelihood)
        torch.testing.assert_close(answer.variance, variance.expand(7, 4), rtol=0, atol=1e-12)


@pytest.mark.parametrize("encoder", [GaussianEncoder, FullCovarianceEncoder])
def test_encoders_have_no_closed_form_beyond_one_affine_identified_posterior(encoder):
    prior = GaussianGraphicalModel(dim=3)
    assert encoder.has_closed_form(prior, linear_gaussian(np.eye(3), 1.0))
    assert not encoder.has_closed_form(prior, linear_gaussian(np.eye(2, 3), 1.0))  # m < p: Adam stops short
    assert not encoder.has_closed_form(prior, PoissonLikelihood(LinearOperator.identity(3)))
    assert not encoder.has_closed_form(prior, NoisePerRowGaussianLikelihood(LinearOperator.identity(3)))  # Σ_i per row


def test_a_closed_form_factor_beyond_the_bound_is_the_nearest_member():
    # posterior sds of 1e-5 lie below the family's e^-7 (_scale_tril's bound): the encoder
    # takes the nearest factor, finite, rather than atanh(±1) = ±inf
    prior, likelihood = GaussianGraphicalModel(dim=2), linear_gaussian(np.eye(2), 1e-5)
    q = FullCovarianceEncoder(2, 2, (8,)).double()
    q.set_to_optimum(torch.zeros(0, 2), prior, likelihood)
    assert all(bool(torch.isfinite(weight).all()) for weight in q.parameters())
    with torch.no_grad():
        scale = q(torch.zeros(1, 2)).scale_tril.diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(scale, torch.full_like(scale, math.exp(-7)), rtol=1e-5, atol=0)


def test_an_encoder_of_counts_reads_the_priors_covariates_as_they_are():
    # log(1 + c) of a negative covariate is NaN: the last `raw_columns` columns skip the log, so
    # the encoder is the plain one fed (log(1 + counts), covariates)
    counting = GaussianEncoder(4, 2, hidden=(8,), log1p=True, raw_columns=2)
    plain = GaussianEncoder(4, 2, hidden=(8,))
    plain.load_state_dict(counting.state_dict())
    rows = torch.tensor([[3.0, 0.0, -1.5, 0.7], [10.0, 2.0, 2.5, -0.3], [0.0, 1.0, -4.0, 0.1]])
    read = torch.cat([torch.log1p(rows[:, :2]), rows[:, 2:]], dim=1)
    counting.standardize_with(rows)
    plain.standardize_with(read)
    assert torch.isfinite(counting(rows).mean).all()
    torch.testing.assert_close(counting(rows).mean, plain(read).mean)
    torch.testing.assert_close(counting(rows).stddev, plain(read).stddev)


def _low_rank_q(rng, n=6, p=5, rank=2):
    """A trained-looking low-rank q: the encoder's output layer randomised."""
    encoder = LowRankEncoder(3, p, hidden=(8,), rank=rank)
    with torch.no_grad():
        encoder.trunk.linear.weight.copy_(0.3 * torch.as_tensor(rng.standard_normal(encoder.trunk.linear.weight.shape)))
    with torch.no_grad():
        return encoder, encoder(torch.as_tensor(rng.standard_normal((n, 3))))


def test_low_rank_encoder_is_the_gaussian_with_diagonal_plus_low_rank_covariance(rng):
    from scipy.stats import multivariate_normal

    encoder, q = _low_rank_q(rng)
    assert encoder.trunk.linear.out_features == 5 * (2 + 2)  # μ, log d, U: p(k + 2)
    covariance = torch.diag_embed(q.cov_diag) + q.cov_factor @ q.cov_factor.mT  # (n, p, p)
    z = q.sample((4,))
    for i in range(len(q.loc)):
        exact = multivariate_normal(q.loc[i].detach().numpy(), covariance[i].detach().numpy())
        np.testing.assert_allclose(q.log_prob(z)[:, i].detach().numpy(), exact.logpdf(z[:, i].numpy()), rtol=1e-10)
        np.testing.assert_allclose(float(q.entropy()[i]), exact.entropy(), rtol=1e-10)
    np.testing.assert_allclose(moments(q)[1].detach().numpy(),
                               covariance.diagonal(dim1=-2, dim2=-1).sqrt().detach().numpy(), rtol=1e-12)


def test_low_rank_factor_starts_small_and_the_same_for_every_x():
    torch.manual_seed(0)
    with torch.no_grad():
        q = LowRankEncoder(3, 4, hidden=(8,), rank=2)(torch.randn(5, 3))
    assert torch.equal(q.cov_factor, q.cov_factor[:1].expand_as(q.cov_factor))
    assert 0 < float(q.cov_factor.abs().max()) < float(q.cov_diag.sqrt().min())  # away from U = 0, below d
    log_d = 7 * math.tanh(-1 / 7)  # the bounded log d of a raw -1 (_INIT_LOG_STD)
    torch.testing.assert_close(q.cov_diag, torch.full_like(q.cov_diag, math.exp(2 * log_d)))


def test_low_rank_expected_statistics_are_the_average_second_moment(rng):
    _, q = _low_rank_q(rng)
    prior = GaussianGraphicalModel(dim=5)
    covariance = torch.diag_embed(q.cov_diag) + q.cov_factor @ q.cov_factor.mT
    second = (q.loc[:, :, None] * q.loc[:, None, :] + covariance).mean(0)
    torch.testing.assert_close(expected_statistics(prior, q)["second_moment"], second.detach(), rtol=1e-12, atol=1e-12)


def test_low_rank_proposal_widens_its_covariance(rng):
    _, q = _low_rank_q(rng, n=2000, p=3, rank=1)
    with torch.no_grad():
        z, _ = defensive_draws(q, 2, widths=(3.0,))  # 2 draws of q widened 3-fold per row
        centred = (z - q.loc).reshape(-1, 3)
    covariance = (torch.diag_embed(q.cov_diag) + q.cov_factor @ q.cov_factor.mT).mean(0)
    # the draws' covariance about the row means: 9 Σ̄; 4000 draws, sd of an entry ≲ 9 Σ̄ √(2/4000)
    torch.testing.assert_close(centred.mT @ centred / len(centred), 9 * covariance, rtol=0.15, atol=0.15)

