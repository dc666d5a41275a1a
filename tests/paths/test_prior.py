import math

import pytest
import torch

from invae.paths.kalman_em import complete_data_mle
from invae.paths.prior import PathPrior
from invae.paths.sde import DoubleWell, OrnsteinUhlenbeck

TIMES = torch.tensor([0.0, 0.5, 1.2, 2.0, 3.5])


def _ou(d=2):
    drift = torch.tensor([[1.0, 0.3], [-0.2, 0.7]])[:d, :d]
    return OrnsteinUhlenbeck(d, drift=drift, mean=torch.tensor([0.5, -1.0])[:d], diffusion=0.8)


def test_log_prob_is_the_sdes_on_the_grid_for_flat_paths_with_sample_axes():
    prior = PathPrior(_ou(), TIMES, substeps=2)
    z = torch.randn(3, 4, prior.dim)  # (S, n, G d)
    assert prior.dim == 9 * 2
    expected = _ou().log_prob(z.reshape(12, 9, 2), prior.grid, 1).reshape(3, 4)
    torch.testing.assert_close(prior.log_prob(z), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(prior.times, TIMES)


def test_gradients_in_the_state_are_the_modules_own():
    # with_state must stay differentiable: θ reaches log g through functional_call as through the module
    sde, prior = _ou(), PathPrior(_ou(), TIMES)
    z = torch.randn(6, prior.dim)
    sde.log_prob(z.reshape(6, 5, 2), TIMES).sum().backward()
    leaves = {name: value.clone().requires_grad_() for name, value in prior.state().items()}
    prior.with_state(leaves).log_prob(z).sum().backward()
    for name, parameter in sde.named_parameters():
        torch.testing.assert_close(leaves[name].grad, parameter.grad, rtol=1e-10, atol=1e-12)


def test_samples_have_the_stationary_law_and_its_autocorrelation():
    # OU d = 1 from its stationary law N(μ, s²/(2θ)) on a regular grid of step 0.5; 20 000 paths:
    # the sample variance's SE is v √(2/n) ≈ 0.01 v, the lag-one correlation's (1 − ρ²)/√n ≈ 0.003
    theta, mean, s, n = 0.8, 1.5, 0.6, 20_000
    prior = PathPrior(OrnsteinUhlenbeck(1, drift=theta, mean=mean, diffusion=s), torch.arange(6) * 0.5)
    z = prior.sample(n, torch.Generator().manual_seed(1))
    variance, rho = s**2 / (2 * theta), math.exp(-theta * 0.5)
    assert torch.allclose(z.var(0), torch.full((6,), variance), rtol=5 * math.sqrt(2 / n))
    assert abs(float(z.mean()) - mean) < 5 * math.sqrt(variance / n)
    correlation = torch.corrcoef(z[:, 2:4].T)[0, 1]
    assert abs(float(correlation) - rho) < 5 * (1 - rho**2) / math.sqrt(n)


def test_state_and_config_rebuild_it_and_the_change_is_per_part():
    prior = PathPrior(DoubleWell(theta1=2.0, theta2=1.5, diffusion=0.4), TIMES, substeps=3)
    rebuilt = PathPrior.from_state(prior.state(), **prior.config())
    z = torch.randn(4, prior.dim)
    torch.testing.assert_close(rebuilt.log_prob(z), prior.log_prob(z))
    assert prior.config()["sde"] == "double-well" and rebuilt.relative_change(prior) == 0.0
    moved = prior.with_state({**prior.state(), "theta2": torch.tensor(3.0)})
    assert moved.relative_change(prior) == pytest.approx(0.5)  # |3 − 1.5| / 3
    assert prior.summary()["theta2"] == pytest.approx(1.5)


def test_what_it_refuses():
    prior = PathPrior(_ou(1), TIMES)
    with pytest.raises(ValueError, match="no penalty"):
        prior.with_penalty(0.1)
    with pytest.raises(ValueError, match="covariates"):
        prior.log_prob(torch.zeros(2, prior.dim), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="shared by every series"):
        PathPrior(_ou(1), TIMES.expand(3, -1))
    unstable = prior.with_state({**prior.state(), "drift_matrix": torch.tensor([[float("nan")]])})
    with pytest.raises(FloatingPointError, match="left their domain.*not finite"):  # a fit rolls it back
        unstable.log_prob(torch.zeros(2, prior.dim))
    with pytest.raises(ValueError, match="increasing"):
        PathPrior(_ou(1), torch.tensor([0.0, 1.0, 1.0]))


def test_the_m_step_on_paths_themselves_is_the_complete_data_mle():
    # statistics of the true paths (one draw each): Q(θ) is their log-density, so its maximiser
    # is complete_data_mle's; both stop where L-BFGS's gradient tolerance 1e-10 holds
    truth = OrnsteinUhlenbeck(1, drift=0.7, mean=0.5, diffusion=0.6)
    prior = PathPrior(truth, torch.arange(40) * 0.5)
    z = prior.sample(100, torch.Generator().manual_seed(2))
    start = PathPrior(OrnsteinUhlenbeck(1, drift=1.5, mean=0.0, diffusion=1.0), prior.times)
    fitted = start.m_step(z[None])
    floor = complete_data_mle(prior.paths(z), OrnsteinUhlenbeck(1, drift=1.5, mean=0.0, diffusion=1.0), prior.times)
    for name, value in floor.named_parameters():
        torch.testing.assert_close(fitted.state()[name], value.detach(), rtol=1e-5, atol=1e-6)
    assert start.has_m_step and not PathPrior(DoubleWell(), TIMES).has_m_step


def test_statistics_are_averages_that_the_trainer_may_average_again():
    prior = PathPrior(_ou(), TIMES, substeps=2)
    z, weights = torch.randn(3, 8, prior.dim), torch.rand(3, 8)
    halves = [prior.statistics(z[:, :4], weights[:, :4]), prior.statistics(z[:, 4:], weights[:, 4:])]
    share = weights[:, :4].sum() / weights.sum()
    for key, whole in prior.statistics(z, weights).items():
        torch.testing.assert_close(share * halves[0][key] + (1 - share) * halves[1][key], whole)
