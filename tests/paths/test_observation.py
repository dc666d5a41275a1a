import numpy as np
import pytest
import torch

from invae import GaussianLikelihood, LinearOperator
from invae.model.forward import saturating
from invae.model.missing import MissingEntries
from invae.paths.observation import PathOperator, series_rows


def test_each_time_reads_its_grid_point_through_the_per_time_operator(rng):
    # T = 3 times, k = 2 sub-steps: grid points 0..4, observations at 0, 2, 4
    matrix = torch.as_tensor(rng.standard_normal((3, 2)))
    operator = PathOperator(LinearOperator(matrix), steps=3, substeps=2)
    z = torch.as_tensor(rng.standard_normal((7, 5 * 2)))
    expected = torch.stack([z.reshape(7, 5, 2)[:, g] @ matrix.T for g in (0, 2, 4)], dim=1).reshape(7, 9)
    assert (operator.in_dim, operator.out_dim) == (10, 9)
    torch.testing.assert_close(operator(z), expected)
    assert operator.record()["steps"] == 3 and torch.equal(operator.record()["per_time"]["matrix"], matrix)


def test_a_nonlinear_sensor_and_a_noise_model_become_a_path_likelihood(rng):
    # the entries are independent given z: the path's log p(x | z) is the sum over times of the per-time one
    per_time = saturating(rng.standard_normal((2, 2)))
    likelihood = GaussianLikelihood(PathOperator(per_time, steps=4), 0.3)
    z, x = torch.as_tensor(rng.standard_normal((5, 8))), torch.as_tensor(rng.standard_normal((5, 8)))
    each = GaussianLikelihood(per_time, 0.3).log_prob(x.reshape(5, 4, 2), z.reshape(5, 4, 2)).sum(-1)
    torch.testing.assert_close(likelihood.log_prob(x, z), each)


def test_one_noise_level_per_sensor_holds_at_every_time(rng):
    per_time = LinearOperator(torch.as_tensor(rng.standard_normal((2, 1))))
    operator, std = PathOperator(per_time, steps=4), torch.tensor([0.3, 0.7], dtype=torch.float64)
    torch.testing.assert_close(operator.per_output(std), torch.tensor([0.3, 0.7] * 4, dtype=torch.float64))
    for given in (torch.tensor(0.3), torch.full((8,), 0.3)):  # a number, or one per output: as they are
        assert operator.per_output(given) is given
    likelihood = GaussianLikelihood(operator, std)
    z, x = torch.as_tensor(rng.standard_normal((5, 4))), torch.as_tensor(rng.standard_normal((5, 8)))
    each = GaussianLikelihood(per_time, std).log_prob(x.reshape(5, 4, 2), z.reshape(5, 4, 1)).sum(-1)
    torch.testing.assert_close(likelihood.log_prob(x, z), each)


def test_series_become_rows_and_missing_entries_their_indicators():
    x = np.arange(12, dtype=float).reshape(2, 3, 2)
    x[0, 1, :] = np.nan  # a whole time missing
    rows = MissingEntries(GaussianLikelihood(PathOperator(LinearOperator.identity(2), 3), 1.0)).rows(series_rows(x))
    assert rows.shape == (2, 12) and np.array_equal(rows[0, 6:], [1, 1, 0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"\(n, T, m\)"):
        series_rows(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="integers >= 1"):
        PathOperator(LinearOperator.identity(2), 0)
