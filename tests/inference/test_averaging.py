import math

import numpy as np
import pytest
import torch

from invae import GaussianGraphicalModel
from invae.inference.averaging import StatisticsAverage
from invae.model.mixture import GaussianMixture


def _noisy(rng, truth, sd):
    return {"s": truth + torch.as_tensor(rng.normal(0, sd, truth.shape))}


def test_the_average_is_the_mean_of_the_steps_since_the_burn_in_and_its_weights_are_tracked(rng):
    average = StatisticsAverage(window=5, exponent=1.0)
    steps = [_noisy(rng, torch.zeros(3), 1.0) for _ in range(30)]
    for step in steps:
        mean = average.update(step)
    start = average.burn_in_end - 1  # a = 1: γ = 1/(k − k₀ + 1), the plain mean since k₀
    expected = torch.stack([step["s"] for step in steps[start:]]).mean(0)
    torch.testing.assert_close(mean["s"], expected)
    assert average.weight_squares == pytest.approx(1 / (30 - start))  # Σ c² of equal weights 1/k


def test_a_steady_drift_keeps_the_burn_in_going_and_noise_alone_ends_it(rng):
    drifting, still = StatisticsAverage(window=10), StatisticsAverage(window=10)
    for k in range(60):
        drifting.update({"s": torch.tensor([0.2 * k]) + torch.as_tensor(rng.normal(0, 0.1, 1))})
        still.update(_noisy(rng, torch.zeros(1), 0.1))
    assert not drifting.settled and still.settled


def test_a_converged_deterministic_sequence_settles_below_the_tolerance():
    average = StatisticsAverage(window=5, tolerance=1e-3, averaging=False)
    for k in range(40):
        average.update({"s": torch.tensor([1.0 + 0.5**k])})
    assert average.settled


def test_the_burn_in_waits_for_the_caller(rng):
    average = StatisticsAverage(window=5)
    for _ in range(20):
        average.update(_noisy(rng, torch.zeros(2), 1.0), may_settle=False)
    assert not average.settled


def test_the_relative_error_estimates_the_standard_error_of_the_average(rng):
    # Noise sd 1 in each of 4 coordinates around a vector of norm 10: after k equal-weight
    # steps, the standard error of the average is √(4/k) and relative √(4/k)/10. The
    # noise variance comes from w = 200 successive differences: its own relative
    # sd is about √(1.5/w) ≈ 0.09 (squared successive differences are correlated), so 30% is >3 sd.
    truth = torch.full((4,), 5.0)
    average = StatisticsAverage(window=200)
    for _ in range(800):
        average.update(_noisy(rng, truth, 1.0))
    k = average.steps - average.burn_in_end + 1
    assert average.relative_error() == pytest.approx(math.sqrt(4 / k) / 10, rel=0.3)


def test_the_exponent_is_checked():
    with pytest.raises(ValueError, match="exponent"):
        StatisticsAverage(window=5, exponent=0.5)


def test_a_state_dict_round_trip_continues_identically(rng):
    steps = [_noisy(rng, torch.zeros(2), 1.0) for _ in range(30)]
    whole, first = StatisticsAverage(window=4), StatisticsAverage(window=4)
    for step in steps:
        whole.update(step)
    for step in steps[:12]:
        first.update(step)
    second = StatisticsAverage(window=4)
    second.load_state_dict(first.state_dict())
    for step in steps[12:]:
        second.update(step)
    torch.testing.assert_close(second.mean["s"], whole.mean["s"])
    assert second.weight_squares == whole.weight_squares


@pytest.mark.parametrize("prior", [GaussianGraphicalModel(dim=3, alpha=0.05),
                                   GaussianMixture.standard(3, 2, alpha=0.05, spread=2.0)])
def test_averaged_statistics_of_two_halves_give_the_m_step_on_the_pooled_draws(prior, rng):
    # The M-step is a function of averages over the draws: the mean of two equal halves'
    # statistics is the statistics of their union, whatever the prior.
    z = torch.as_tensor(rng.standard_normal((200, 3)))
    halves = [prior.statistics(z[:100]), prior.statistics(z[100:])]
    pooled = {key: (halves[0][key] + halves[1][key]) / 2 for key in halves[0]}
    for key, value in prior.m_step_from(pooled).state().items():
        torch.testing.assert_close(value, prior.m_step(z).state()[key])


def test_a_step_over_random_rows_is_unbiased_for_the_statistics_over_all_rows(rng):
    # q(z | x_i) = N(x_i / 2, 0.7²) per coordinate: the expected step's statistic over rows I
    # is the mean of t_i = μ_i μ_iᵀ + 0.49 I over I. Over K random subsets of m rows its mean
    # is the mean over all n rows, with standard error sd(t)·√((1 − m/n)/(m K)) per entry.
    from torch.distributions import Independent, Normal

    from invae.inference.lambda_steps import ExpectedStep
    from invae.model.likelihoods import linear_gaussian

    class HalfEncoder(torch.nn.Module):
        def forward(self, x, index=None):
            return Independent(Normal(x / 2, torch.full_like(x, 0.7)), 1)

    n, m, k = 2000, 100, 200
    x = torch.as_tensor(rng.standard_normal((n, 3)))
    prior, step, likelihood = GaussianGraphicalModel(dim=3), ExpectedStep(8, rows=m), linear_gaussian(np.eye(3), 1.0)
    full = ExpectedStep(8).statistics(prior, HalfEncoder(), x, likelihood, 256, 0)["second_moment"]
    torch.manual_seed(0)
    subsets = torch.stack([step.statistics(prior, HalfEncoder(), x, likelihood, 256, 0)["second_moment"]
                           for _ in range(k)])
    per_row = (x / 2)[:, :, None] * (x / 2)[:, None, :]
    standard_error = per_row.std(0) * math.sqrt((1 - m / n) / (m * k))
    assert torch.all((subsets.mean(0) - full).abs() < 4 * standard_error)
    assert subsets.std(0).max() > 0  # the steps did see different rows
