import numpy as np

from invae.normal_means import GridPrior, NormalPrior, rank_match


def test_rank_matching_keeps_the_order_and_takes_the_prior_quantiles(rng):
    scores = rng.normal(0, 1, 1000)
    prior = GridPrior(np.array([0.0, 3.0]), np.array([0.7, 0.3]))
    z = rank_match(scores, prior.quantile)
    order = np.argsort(scores)
    assert np.all(np.diff(z[order]) >= 0)  # the data's order
    assert (z == 3.0).sum() == 300 and (z == 0.0).sum() == 700  # the prior's masses, exactly at n = 1000


def test_rank_matching_on_a_normal_prior_gives_its_quantiles(rng):
    scores = rng.uniform(size=999)
    z = rank_match(scores, NormalPrior(1.0, 4.0).quantile)
    np.testing.assert_allclose(np.sort(z)[499], 1.0, atol=1e-12)  # the middle rank gets the median
    np.testing.assert_allclose(np.std(z), 2.0, rtol=0.02)
