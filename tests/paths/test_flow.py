"""The flow posterior over paths (invae.paths.flow): exact log q, its order, its start at markov's q,
a fit of the double well against markov's, and ``--method iaf``'s choice of family by the prior."""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from torch.distributions import Independent, Normal

from invae import GaussianGraphicalModel, GaussianLikelihood, LinearOperator, VariationalEB, linear_gaussian
from invae.app import methods as app_methods
from invae.app.methods import make_estimator, method_name, methods
from invae.app.persistence import load_model, save_model
from invae.inference.families import FAMILIES
from invae.inference.objectives import elbo
from invae.paths.flow import PathIAFEncoder
from invae.paths.observation import PathOperator, series_rows
from invae.paths.particles import particle_filter
from invae.paths.prior import PathPrior
from invae.paths.sde import DoubleWell, refine
from invae.registry import Registry

GRID, _ = refine(torch.tensor([0.0, 1.0, 2.5]), 2)  # T = 3, G = 5


def _encoder(d=2, n_steps=2, m=2, randomized=True, generator=None, scale=0.1):
    """A flow over G = 5 points of d coordinates; ``randomized``: every weight moved off its start,
    so that no step is the identity and every dependence it may have is there."""
    start = (torch.tensor([1.0, -2.0])[:d], torch.tensor([3.0, 0.5])[:d])
    encoder = PathIAFEncoder(GRID, 2, m, d, start, hidden=6, n_steps=n_steps, context=3)
    if randomized:
        with torch.no_grad():
            for param in encoder.parameters():
                param.add_(scale * torch.randn(param.shape, generator=generator))
    return encoder


def _through_steps(q, z):
    for step in q.transforms:
        z = step(z)
    return z


@pytest.mark.parametrize("n_steps", [1, 2, 3])
def test_log_q_is_the_change_of_variables_with_an_autograd_jacobian(generator, n_steps):
    # log q(z_K) = log q_GM(z_0) − log |det ∂z_K/∂z_0|: the base by the dense Gaussian of its
    # precision L Lᵀ, the flow's Jacobian by autograd over the whole path (brute force)
    encoder, x = _encoder(n_steps=n_steps, generator=generator), torch.randn(2, 6, generator=generator)
    for row in range(2):
        q = encoder(x[row : row + 1])
        z0 = q.base_dist.rsample()  # (1, G d)
        jacobian = torch.autograd.functional.jacobian(lambda v: _through_steps(q, v[None])[0], z0[0])
        expected = q.base_dist.path.to_dense().log_prob(z0) - torch.linalg.slogdet(jacobian).logabsdet
        assert q.log_prob(_through_steps(q, z0)).item() == pytest.approx(expected.item(), abs=1e-9)


@pytest.mark.parametrize("t", [0, 1])
def test_each_step_reads_earlier_points_in_its_order_and_only_its_neighbour(generator, t):
    # step 0 runs forward in time, step 1 backward (the flat order reversed): its Jacobian is
    # lower / upper triangular with diagonal exp(s) > 0, and point g's outputs read the coordinates
    # of g itself and of its neighbour g ∓ 1 only (d = 2: a band of 3 coordinates off the diagonal)
    q = _encoder(generator=generator)(torch.randn(1, 6, generator=generator))
    z = torch.randn(10, generator=generator)
    jacobian = torch.autograd.functional.jacobian(lambda v: q.transforms[t](v[None])[0], z)
    ordered = jacobian if t == 0 else jacobian.flip(0, 1)
    assert torch.all(torch.triu(ordered, 1) == 0) and torch.all(torch.tril(ordered, -4) == 0)
    point = torch.arange(10) // 2
    reads_neighbour = (point[:, None] - point[None, :]) == (1 if t == 0 else -1)
    assert torch.all(jacobian[reads_neighbour].abs().reshape(5 - 1, -1).amax(1) > 0)
    assert torch.all(jacobian.diagonal() > 0)


def test_scoring_any_point_by_inversion_agrees_with_the_cached_draws(generator):
    # Pyro inverts a step by its conditioner's permutation (G d passes): right only if that is
    # the order the conditioner reads in; a copy of the draws is not in the cache
    q = _encoder(generator=generator)(torch.randn(3, 6, generator=generator))
    z = q.rsample((2,))
    torch.testing.assert_close(q.log_prob(z.clone()), q.log_prob(z))


def test_draws_and_log_q_agree(generator):
    # importance sampling: E_q[f(z)/q(z)] = ∫ f = 1 for a density f inside q's support; f a
    # normal at the draws' mean with half their sd keeps the weights bounded; 4 standard errors
    q = _encoder(d=1, m=1, generator=generator)(torch.randn(1, 3, generator=generator))
    with torch.no_grad():
        z = q.rsample((40_000,))[:, 0]
        log_q = q.log_prob(z[:, None])[:, 0]
    weights = (Independent(Normal(z.mean(0), 0.5 * z.std(0)), 1).log_prob(z) - log_q).exp()
    assert abs(weights.mean().item() - 1) < 4 * weights.std().item() / math.sqrt(len(weights))


def test_a_fresh_flow_is_markovs_q(generator):
    # the conditioners' last layers and skips start at zero: every step is the identity, so the
    # draws are the base's for the same noise and log q is markov's, at its draws and anywhere
    q = _encoder(randomized=False)(torch.randn(3, 6, generator=generator))
    torch.manual_seed(1)
    z = q.rsample((4,))
    torch.manual_seed(1)
    torch.testing.assert_close(z, q.base_dist.rsample((4,)), rtol=0, atol=0)
    elsewhere = torch.randn(4, 3, 10, generator=generator)
    torch.testing.assert_close(q.log_prob(elsewhere), q.base_dist.log_prob(elsewhere))
    torch.testing.assert_close(q.log_prob(z), q.base_dist.log_prob(z))


def test_the_flow_needs_a_step():
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        _encoder(n_steps=0, randomized=False)


# --- the family in a fit: double-well series seen through Gaussian noise -----------------------------

N, T, K, SIGMA = 20, 10, 2, 0.5
TIMES = torch.arange(T) * 0.5  # Euler–Maruyama steps of 0.25: stable for the wells' drift at |z| ≤ 2


@pytest.fixture(scope="module")
def double_well():
    """(series (N, T, 1), the likelihood of their rows, the per-time likelihood, the true SDE)."""
    truth = DoubleWell(theta1=1.0, theta2=1.0, diffusion=0.6, start_scale=0.7).double()
    generator = torch.Generator().manual_seed(0)
    z = PathPrior(truth, TIMES, K).sample(N, generator)[:, ::K]  # d = 1: the observation times' points
    series = (z + SIGMA * torch.randn(z.shape, generator=generator))[..., None]
    per_time = GaussianLikelihood(LinearOperator.identity(1), SIGMA)
    return series, GaussianLikelihood(PathOperator(LinearOperator.identity(1), T, K), SIGMA), per_time, truth


def _fit(family, series, likelihood):
    fit = VariationalEB(PathPrior(DoubleWell().double(), TIMES, K), likelihood, family=family, random_state=0,
                        hidden=(8,), max_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # an equal budget of 30 iterations, not convergence
        return fit.fit(series_rows(series.numpy()))


def _elbos(fit, series):
    """Each series' ELBO under the fitted q and θ̂, from 200 draws, (N,)."""
    x = torch.as_tensor(series_rows(series.numpy()), dtype=torch.float32)
    with torch.no_grad():
        return elbo(x, fit.posterior_(x), fit.prior_, fit.likelihood_, 200).double()


def test_the_flow_is_at_least_as_good_as_markov_and_still_a_lower_bound(double_well):
    # The flow starts at markov's q (the same base weights: same seed, built first) and its family
    # holds markov's, so on an equal budget its ELBO per series is at least markov's up to noise:
    # the draws' Monte Carlo error and the fits' different paths, both in the paired differences'
    # standard error (3 of them). The ELBO stays below log p(x; θ̂) (the particle filter's, 20 000
    # particles, unbiased in p): a flow whose log q were too small would break that bound.
    # Measured: +0.24 ± 0.08 nats per series over markov, 0.66 ± 0.04 below log p̂; fits of 100–130 iterations
    # on 30 series of 15 times (both converged): +0.22 ± 0.07, the gap to log p̂ from 0.41 to 0.24.
    series, likelihood, per_time, _ = double_well
    markov, flow = _fit("markov", series, likelihood), _fit("path-iaf", series, likelihood)
    gain = _elbos(flow, series) - _elbos(markov, series)
    assert gain.mean() > -3 * gain.std() / math.sqrt(N), gain.mean().item()
    evidence = particle_filter(series, TIMES, flow.prior_.sde(), per_time, n_particles=20_000, substeps=K,
                               keep_particles=False, generator=torch.Generator().manual_seed(1)).log_likelihood
    slack = evidence - _elbos(flow, series)
    assert slack.mean() > -3 * slack.std() / math.sqrt(N), slack.mean().item()


# --- the door: --method iaf builds this family for a path prior, the row flow for the others -----------

def test_method_iaf_takes_the_path_family_for_a_path_prior_and_round_trips_a_model_file(double_well, tmp_path):
    series, likelihood, _, _ = double_well
    fitted = make_estimator("iaf", PathPrior(DoubleWell().double(), TIMES, K), likelihood, max_iter=2)
    with pytest.warns(ConvergenceWarning, match="^iaf fit stopped at max_iter=2 "):  # the method's name, as asked
        fitted.fit(series_rows(series.numpy()))
    assert fitted.family == "path-iaf" and method_name(fitted) == "iaf"
    loaded = load_model(save_model(fitted, tmp_path / "model.pt"))
    assert loaded.family == "path-iaf" and method_name(loaded) == "iaf"
    rows = series_rows(series.numpy())
    for got, expected in zip(loaded.posterior(rows), fitted.posterior(rows)):  # the saved seed: the same draws
        np.testing.assert_array_equal(got, expected)
    row_flow = make_estimator("iaf", GaussianGraphicalModel(dim=3), linear_gaussian(np.eye(3), 0.5))
    assert row_flow.family == "iaf" and methods()["iaf"].takes_paths and not methods()["iaf"].paths


def test_two_families_of_one_kind_under_one_method_name_are_refused(monkeypatch):
    clash = Registry("posterior family")
    for name in ("iaf", "another-row-flow"):
        clash.register(name, FAMILIES["iaf"])
    monkeypatch.setattr(app_methods, "FAMILIES", clash)
    with pytest.raises(ValueError, match="'iaf' and 'another-row-flow' are both --method iaf over rows"):
        methods()
