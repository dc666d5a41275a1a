"""The markov family's fit of an Ornstein–Uhlenbeck prior against the exact MLE (Kalman)."""

import warnings

import pytest
import torch

from invae import GaussianLikelihood, LinearOperator, VariationalEB
from invae.paths.kalman import kalman_filter
from invae.paths.kalman_em import direct_mle, state_space
from invae.paths.observation import PathOperator, series_rows
from invae.paths.prior import PathPrior
from invae.paths.sde import OrnsteinUhlenbeck

T, N, SIGMA = 30, 60, 0.5
TIMES = torch.arange(T) * 0.5


@pytest.fixture(scope="module")
def series():
    generator = torch.Generator().manual_seed(0)
    z = PathPrior(OrnsteinUhlenbeck(1, drift=0.5, mean=1.0, diffusion=0.8), TIMES).sample(N, generator)
    return (z + SIGMA * torch.randn(z.shape, generator=generator))[..., None]


def _start(x):
    return OrnsteinUhlenbeck(1, drift=1.0, mean=float(x.mean()), diffusion=float(x.std()))


def _standard_errors(x, mle):
    """The MLE's standard errors (θ and log σ²) from the observed information of Kalman's log p(x)."""
    sde, log_noise = mle.prior, mle.noise_var.log().clone().requires_grad_()
    leaves = [*sde.parameters(), log_noise]

    def log_likelihood():
        return kalman_filter(x, state_space(sde, TIMES, torch.eye(1), log_noise.exp())).log_likelihood.sum()

    gradient = torch.cat([g.reshape(-1) for g in torch.autograd.grad(log_likelihood(), leaves, create_graph=True)])
    rows = [torch.cat([h.reshape(-1) for h in torch.autograd.grad(g, leaves, retain_graph=True)]) for g in gradient]
    return torch.linalg.inv(-torch.stack(rows)).diagonal().sqrt()


def test_markov_with_learned_noise_reaches_the_kalman_mle(series):
    # the Gauss–Markov family holds OU's exact posterior, so the fit chases the MLE; its
    # distance to it (θ and log σ², in the names of the SDE module's parameters) must stay below
    # half the MLE's own standard error, the stopping rule's precision c = 0.5 (training.py)
    mle = direct_mle(series, _start(series), TIMES, torch.eye(1), torch.tensor([1.0]), learn_noise=True)
    errors = _standard_errors(series, mle)
    likelihood = GaussianLikelihood(PathOperator(LinearOperator.identity(1), T), 1.0, learn_noise=True)
    fit = VariationalEB(PathPrior(_start(series), TIMES), likelihood, family="markov", random_state=0, hidden=(16,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rollback's warning, if any, is not the point here
        fit.fit(series_rows(series.numpy()))
    fitted = torch.cat([*(fit.prior_.state()[name].double().reshape(-1) for name, _ in mle.prior.named_parameters()),
                        2 * fit.likelihood_.noise_std.double().log().reshape(-1)])
    exact = torch.cat([*(p.detach().reshape(-1) for p in mle.prior.parameters()), mle.noise_var.log()])
    assert fit.converged_ and fit.likelihood_.noise_std.requires_grad is False
    assert torch.all((fitted - exact).abs() < 0.5 * errors), ((fitted - exact) / errors).tolist()
