import numpy as np
import pytest
import torch

from invae import GaussianGraphicalModel, GaussianLikelihood, LinearOperator, PoissonLikelihood
from invae.model.missing import MissingEntries
from invae.model.priors import PRIORS, StartOptions, prior_name
from invae.paths.observation import PathOperator, series_rows
from invae.paths.prior import PathPrior
from invae.paths.sde import Brownian, BrownianLearnedStart, DoubleWell, OrnsteinUhlenbeck

TIMES = 0.5 * torch.arange(40.0)


def test_path_priors_are_named_by_their_sde_though_they_share_a_class():
    assert prior_name(PathPrior(OrnsteinUhlenbeck(2), TIMES)) == "ou"
    assert prior_name(PathPrior(Brownian(1), TIMES)) == "brownian"
    assert prior_name(PathPrior(DoubleWell(), TIMES)) == "double-well"
    assert prior_name(GaussianGraphicalModel(dim=3)) == "ggm"
    assert prior_name(PathPrior(BrownianLearnedStart(1), TIMES)) == "brownian-learned-start"
    assert [name for name, kind in PRIORS.items() if kind.paths] == ["ou", "brownian", "brownian-learned-start",
                                                                      "double-well"]


def _observed(generator, sde, noise_std=0.3, missing=0.2):
    z = sde.simulate(400, TIMES, substeps=20, generator=generator)  # Euler–Maruyama close to the exact law
    x = (z + noise_std * torch.randn(z.shape, generator=generator)).numpy()
    x[np.random.default_rng(0).random(x.shape) < missing] = np.nan
    likelihood = MissingEntries(GaussianLikelihood(PathOperator(LinearOperator.identity(sde.dim), len(TIMES)),
                                                   noise_std))
    return likelihood.rows(series_rows(x)), likelihood


def test_the_ou_start_reads_mean_rate_and_spread_off_the_naive_paths(generator):
    truth = OrnsteinUhlenbeck(2, drift=[[0.8, 0.0], [0.0, 0.3]], mean=[1.0, -2.0], diffusion=[[0.6, 0.0], [0.0, 1.2]])
    rows, likelihood = _observed(generator, truth)
    start = PRIORS["ou"].start(rows, likelihood, StartOptions(times=TIMES.numpy(), substeps=2))
    assert start.substeps == 2 and prior_name(start) == "ou"
    summary = start.summary()
    np.testing.assert_allclose(summary["mean"], [1.0, -2.0], atol=0.15)
    np.testing.assert_allclose(np.diag(summary["drift"]), [0.8, 0.3], rtol=0.15)
    stationary = np.diag(summary["diffusion"]) ** 2 / (2 * np.diag(summary["drift"]))
    np.testing.assert_allclose(stationary, [0.6**2 / 1.6, 1.2**2 / 0.6], rtol=0.15)  # the noise taken out


def test_the_brownian_start_reads_diffusion_and_start_off_the_increments(generator):
    rows, likelihood = _observed(generator, BrownianLearnedStart(1, diffusion=0.5, start_mean=3.0, start_scale=0.8))
    summary = PRIORS["brownian-learned-start"].start(rows, likelihood, StartOptions(times=TIMES.numpy())).summary()
    assert summary["diffusion"] == pytest.approx(0.5, rel=0.15)
    assert summary["start_mean"] == pytest.approx(3.0, abs=0.15)
    assert summary["start_scale"] == pytest.approx(0.8, rel=0.2)
    # the diffuse start has no start parameters: the same reading only sets its encoder's units
    diffuse = PRIORS["brownian"].start(rows, likelihood, StartOptions(times=TIMES.numpy()))
    assert set(diffuse.summary()) == {"diffusion"} and diffuse.summary()["diffusion"] == summary["diffusion"]
    units = diffuse.sde().start_units()
    assert float(units[0]) == pytest.approx(3.0, abs=0.15) and float(units[1]) == pytest.approx(0.8, rel=0.2)


def test_without_naive_paths_the_start_follows_the_time_scale():
    likelihood = PoissonLikelihood(PathOperator(LinearOperator.identity(1), len(TIMES)))
    rows = np.ones((3, len(TIMES)))
    summary = PRIORS["ou"].start(rows, likelihood, StartOptions(times=TIMES.numpy())).summary()
    assert summary["drift"] == pytest.approx(1 / (5 * 0.5)) and summary["mean"] == 0.0
    assert summary["diffusion"] ** 2 / (2 * summary["drift"]) == pytest.approx(1.0)  # stationary variance 1
