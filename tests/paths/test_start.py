import numpy as np

from invae.paths.start import noise_start


def test_the_noise_start_is_half_the_root_mean_square_of_the_first_differences(rng):
    x = rng.standard_normal((3, 6, 3))
    x[0, 2, 0] = np.nan  # breaks two differences of coordinate 0
    x[:, 1::2, 1] = np.nan  # coordinate 1: no two consecutive observations, so half its spread
    x[..., 2] = 4.0  # constant: 1
    start = noise_start(x)
    pairs = np.diff(x[..., 0], axis=1)
    assert np.isnan(pairs).sum() == 2
    np.testing.assert_allclose(start[0], np.sqrt(np.nanmean(pairs**2)) / 2, rtol=1e-12)
    np.testing.assert_allclose(start[1], np.nanstd(x[..., 1]) / 2, rtol=1e-12)
    assert start[2] == 1.0 and start.shape == (3,)
