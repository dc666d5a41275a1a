import math

import torch

from invae.paths.encoder import FlatPath, PathEncoder
from invae.paths.gauss_markov import GaussMarkov
from invae.paths.sde import refine

GRID, _ = refine(torch.tensor([0.0, 1.0, 2.5, 3.0]), 2)  # T = 4, G = 7


def _encoder(masked=False, m=2, d=2):
    start = (torch.tensor([1.0, -2.0])[:d], torch.tensor([3.0, 0.5])[:d])
    return PathEncoder(GRID, 2, m, d, start, hidden=8, masked=masked)


def test_the_flat_law_is_the_paths_law_flattened_time_major(generator):
    loc, diagonal = torch.randn(3, 5, 2, generator=generator), torch.eye(2).expand(3, 5, 2, 2) * 2.0
    path = GaussMarkov(loc, diagonal, torch.randn(3, 4, 2, 2, generator=generator))
    flat = FlatPath(path)
    z = flat.rsample((6,))
    assert z.shape == (6, 3, 10) and flat.event_shape == (10,)
    torch.testing.assert_close(flat.log_prob(z), path.log_prob(z.reshape(6, 3, 5, 2)))
    torch.testing.assert_close(flat.mean, loc.reshape(3, 10))
    torch.testing.assert_close(flat.variance, path.variance.reshape(3, 10))
    torch.testing.assert_close(flat.entropy(), path.entropy())


def test_q_starts_in_the_prior_units_narrower_and_without_coupling(generator):
    # the heads start at zero: D̃ = e I, B̃ = 0, so sd(z_g) = s₀/e at every grid point, no lag covariance
    encoder = _encoder()
    q = encoder(torch.randn(4, 8, generator=generator))
    assert q.event_shape == (7 * 2,)
    torch.testing.assert_close(q.path.variance, (torch.tensor([3.0, 0.5]) / math.e).square().expand(4, 7, 2))
    assert torch.all(q.path.lag_one_covariances() == 0)


def test_a_missing_entrys_filled_value_never_reaches_q(generator):
    encoder = _encoder(masked=True)
    values, mask = torch.randn(2, 8, generator=generator), torch.ones(2, 8)
    mask[0, 3] = 0.0
    with torch.no_grad():
        encoder.head.weight.normal_(generator=generator)  # a trained-looking head, so that q reads its inputs
    before = encoder(torch.cat([values, mask], dim=1))
    values[0, 3] = 100.0
    after = encoder(torch.cat([values, mask], dim=1))
    torch.testing.assert_close(after.mean, before.mean)
    torch.testing.assert_close(after.path.diagonal_blocks, before.path.diagonal_blocks)
    values[0, 2] = 100.0  # an observed entry does
    assert not torch.allclose(encoder(torch.cat([values, mask], dim=1)).mean, before.mean)


def test_standardisation_reads_the_observed_entries_only():
    encoder = _encoder(masked=True, m=1, d=1)
    values = torch.tensor([[1.0, 3.0, 0.0, 5.0], [2.0, 4.0, 6.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    encoder.standardize_with(torch.cat([values, mask], dim=1))
    observed = torch.tensor([1.0, 3.0, 5.0, 2.0, 4.0, 6.0])
    torch.testing.assert_close(encoder.shift, observed.mean()[None])
    torch.testing.assert_close(encoder.scale, observed.std(correction=0)[None])


def test_sub_steps_read_no_measurement_only_their_spacing(generator):
    encoder = _encoder()
    inputs = encoder._grid_inputs(torch.randn(3, 8, generator=generator))
    assert inputs.shape == (3, 7, 2 * 2 + 2)
    assert torch.all(inputs[:, 1::2, :-1] == 0) and torch.all(inputs[:, ::2, -2] == 1)
    torch.testing.assert_close(inputs[0, :, -1], torch.tensor([0.0, 0.5, 0.5, 0.75, 0.75, 0.25, 0.25]) / 0.5)
