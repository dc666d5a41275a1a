import numpy as np
from scipy.stats import norm

from invae.app.plotting import two_groups_plot
from invae.normal_means import GridPrior, grid_posterior


def test_the_two_groups_figure_draws_the_null_and_non_null_parts_of_f():
    # Prior 0.8 δ0 + 0.2 δ3 and σ = 1: the curves are 0.8 φ(t), 0.2 φ(t − 3) and their sum,
    # and every row's lfdr is a point on the right axis.
    x = np.random.default_rng(0).normal(0, 1.5, 300)
    prior = GridPrior(np.array([0.0, 3.0]), np.array([0.8, 0.2]))
    lfdr = grid_posterior(x, 1.0, prior, null=0.0).lfdr
    figure = two_groups_plot(x, np.ones_like(x), prior, 0.0, lfdr, "npmle")
    left, right = figure.axes
    (t, null), (_, non_null), (_, total) = (line.get_xydata().T for line in left.lines)
    np.testing.assert_allclose(null, 0.8 * norm.pdf(t), rtol=1e-12)
    np.testing.assert_allclose(non_null, 0.2 * norm.pdf(t - 3.0), rtol=1e-12)
    np.testing.assert_allclose(total, null + non_null, rtol=1e-12)
    np.testing.assert_allclose(right.lines[0].get_xydata(), np.column_stack([x, lfdr]))
    assert "π₀ = 0.800" in [text.get_text() for text in left.get_legend().get_texts()][1]
