import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from invae.evaluation.metrics import coverage, edge_scores, relative_frobenius_error, signal_mse, stein_loss

from ..conftest import random_spd


def test_relative_frobenius_error():
    assert relative_frobenius_error(np.array([[3.0, 0], [0, 4]]), np.zeros((2, 2)) + np.eye(2) * [3, 0]) \
        == pytest.approx(4 / 3)


def test_stein_loss_is_twice_the_kl_divergence(rng):
    truth, estimate = random_spd(rng, 4), random_spd(rng, 4)
    kl = kl_divergence(MultivariateNormal(torch.zeros(4), precision_matrix=torch.as_tensor(truth)),
                       MultivariateNormal(torch.zeros(4), precision_matrix=torch.as_tensor(estimate)))
    assert stein_loss(estimate, truth) == pytest.approx(2 * float(kl), rel=1e-10)
    assert stein_loss(truth, truth) == pytest.approx(0.0, abs=1e-12)


def test_edge_scores_on_a_hand_made_graph():
    truth = np.array([[1, .3, 0, 0], [.3, 1, .3, 0], [0, .3, 1, .3], [0, 0, .3, 1]])  # a chain
    estimate = np.array([[1, .2, .1, 0], [.2, 1, 0, 0], [.1, 0, 1, .4], [0, 0, .4, 1]])
    scores = edge_scores(estimate, truth)
    # predicted {01, 02, 23}, true {01, 12, 23}: 2 hits of 3 and 3
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    # scores: true edges .2, 0, .4; non-edges .1, 0, 0 → of 9 (edge, non-edge) pairs the
    # edge scores higher in 6 (.2 and .4 beat all three) and ties in 2 (0 vs 0): (6 + 2·½)/9
    assert scores["auroc"] == pytest.approx(7 / 9)


def test_signal_mse_and_coverage(rng):
    n = 100_000
    truth = rng.standard_normal((n, 2))
    assert signal_mse(truth + 0.5, truth) == pytest.approx(0.25)
    # z ~ N(0, 1) against the interval 0 ± 1.645: covers 90%; SE √(0.09/2n), allow 5 SE
    assert abs(coverage(np.zeros((n, 2)), np.ones((n, 2)), truth) - 0.9) < 5 * np.sqrt(0.09 / (2 * n))
