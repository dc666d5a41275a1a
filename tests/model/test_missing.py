import numpy as np
import pytest
import torch
from scipy.stats import norm, poisson

from invae.model.forward import LinearOperator
from invae.model.likelihoods import GaussianLikelihood, PoissonLikelihood
from invae.model.missing import MissingEntries


def test_the_log_likelihood_sums_the_observed_entries_alone(rng):
    # against scipy on each row's observed entries; a missing one contributes nothing
    a, z = rng.standard_normal((4, 3)), rng.standard_normal((6, 3))
    x = rng.standard_normal((6, 4))
    x[rng.random(x.shape) < 0.4] = np.nan
    x[:, 0] = np.where(np.isnan(x).all(1), 0.5, x[:, 0])
    likelihood = MissingEntries(GaussianLikelihood(LinearOperator(a), 0.7))
    rows = likelihood.rows(x)
    assert rows.shape == (6, 8) and np.array_equal(rows[:, 4:], ~np.isnan(x)) and not np.isnan(rows).any()
    expected = [norm(z_i @ a.T, 0.7).logpdf(x_i)[~np.isnan(x_i)].sum() for x_i, z_i in zip(x, z)]
    got = likelihood.log_prob(torch.as_tensor(rows), torch.as_tensor(z))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_counts_with_offsets_and_missing_entries(rng):
    # the row is (counts with 0 where missing, offsets, observed indicators)
    a, z = rng.standard_normal((3, 2)) / 2, rng.standard_normal((5, 2))
    x = rng.poisson(3.0, (5, 3)).astype(float)
    x[[0, 2, 4], [1, 0, 2]] = np.nan
    offsets = rng.normal(0, 0.3, 5)
    likelihood = MissingEntries(PoissonLikelihood(LinearOperator(a), offsets=True))
    rows = likelihood.rows(PoissonLikelihood.rows(x, offsets))
    assert rows.shape == (5, 9) and likelihood.data_dim == 9
    rate = np.exp(offsets[:, None] + z @ a.T)
    expected = [poisson(r).logpmf(x_i)[~np.isnan(x_i)].sum() for x_i, r in zip(x, rate)]
    np.testing.assert_allclose(likelihood.log_prob(torch.as_tensor(rows), torch.as_tensor(z)).numpy(), expected,
                               rtol=1e-12)
    mean = likelihood.predictive_mean(torch.as_tensor(rows), torch.as_tensor(z)).numpy()
    np.testing.assert_allclose(mean, rate, rtol=1e-12)  # E[x | z] at every entry, observed or not
    assert not likelihood.predictive_mean_is_linear


@pytest.mark.parametrize("hole, message", [("row", "row 1 of the data has no observed entry"),
                                           ("column", "column 0 of the data is never observed")])
def test_rows_or_columns_without_an_observation_are_refused(hole, message):
    x = np.ones((3, 2))
    if hole == "row":
        x[1] = np.nan
    else:
        x[:, 0] = np.nan
    with pytest.raises(ValueError, match=message):
        MissingEntries(GaussianLikelihood(LinearOperator(np.eye(2)), 1.0)).rows(x)
