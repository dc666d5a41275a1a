"""Every posterior family, both priors, the Gaussian, tanh and Poisson likelihoods and exact EM on a CUDA device.

Skipped where torch sees no CUDA device (CI); run where one is: ``pytest tests/test_cuda.py``.
"""

import json
import warnings

import numpy as np
import pytest
import torch

from invae import (EM, GaussianGraphicalModel, GaussianLikelihood, GaussianMixture, LinearOperator, PoissonLikelihood,
                   VariationalEB, linear_gaussian, saturating, simulate_problem)
from invae.app.cli import main
from invae.evaluation.metrics import relative_frobenius_error
from invae.inference.families import FAMILIES

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
              pytest.mark.filterwarnings("ignore")]  # short fits stop at max_iter on purpose

P, N = 4, 300


@pytest.fixture(scope="module")
def problem():
    return simulate_problem(p=P, n=N, graph="chain", forward="identity", noise_std=0.5, seed=0)


def _likelihoods(problem):
    counts = np.random.default_rng(0).poisson(np.exp(problem.Z.clip(-3, 3))).astype(float)
    return {"gaussian": (linear_gaussian(problem.A, 0.5), problem.X),
            "tanh": (GaussianLikelihood(saturating(problem.A), 0.5), np.tanh(problem.X)),
            "poisson": (PoissonLikelihood(LinearOperator.identity(P)), counts)}


@pytest.mark.parametrize("likelihood_name", ["gaussian", "tanh", "poisson"])
@pytest.mark.parametrize("family", [name for name, family in FAMILIES.items() if not family.paths])  # GGM prior
def test_every_family_and_likelihood_fits_on_cuda(problem, family, likelihood_name):
    likelihood, x = _likelihoods(problem)[likelihood_name]
    fit = VariationalEB(GaussianGraphicalModel(dim=P, alpha=0.05), likelihood, family=family, max_iter=4,
                        hidden=(16,), device="cuda").fit(x)
    assert fit.prior_.precision.device.type == "cuda"
    assert next(fit.posterior_.parameters()).device.type == "cuda"
    assert np.all(np.isfinite(fit.precision_))
    mean, sd = fit.posterior(x[:20])
    assert mean.shape == sd.shape == (20, P) and np.all(np.isfinite(mean)) and np.all(sd > 0)


def test_a_mixture_prior_fits_on_cuda_by_em_and_by_vae(problem):
    prior = GaussianMixture([0.5, 0.5], np.stack([-np.ones(P), np.ones(P)]), np.stack([np.eye(P)] * 2))
    likelihood = linear_gaussian(problem.A, 0.5)
    for estimator in (EM(prior, likelihood, max_iter=5, device="cuda"),
                      VariationalEB(prior, likelihood, family="mixture", max_iter=4, hidden=(16,), device="cuda")):
        fit = estimator.fit(problem.X)
        assert np.all(np.isfinite(fit.transform(problem.X[:20])))


@pytest.mark.parametrize("family, mean_field", [("full-covariance", False), ("diagonal", True)])
def test_a_closed_form_fit_on_cuda_is_cpu_em(problem, family, mean_field):
    # the same exact maps in float64 on either device: equal to rounding (1e-9 relative)
    likelihood = linear_gaussian(problem.A, 0.5)
    fit = VariationalEB(GaussianGraphicalModel(dim=P, alpha=0.02), likelihood, family=family, tol=1e-10,
                        max_iter=5000, dtype=torch.float64, device="cuda").fit(problem.X)
    em = EM(GaussianGraphicalModel(dim=P, alpha=0.02), likelihood, mean_field=mean_field, tol=1e-14,
            max_iter=5000).fit(problem.X)
    assert relative_frobenius_error(fit.precision_, em.precision_) < 1e-9


def test_exact_em_on_cuda_is_em_on_cpu(problem):
    likelihood = linear_gaussian(problem.A, 0.5)
    fits = [EM(GaussianGraphicalModel(dim=P, alpha=0.02), likelihood, tol=1e-12, device=device).fit(problem.X)
            for device in ("cpu", "cuda")]
    assert relative_frobenius_error(fits[1].precision_, fits[0].precision_) < 1e-9


def test_the_command_line_fits_on_cuda(problem, tmp_path):
    np.save(tmp_path / "X.npy", problem.X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(["fit", "--data", str(tmp_path / "X.npy"), "--noise-std", "0.5", "--method", "iaf",
                       "--max-iter", "5", "--device", "cuda", "--quiet", "--out", str(tmp_path / "out")])
    assert status == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_iter"] == 5
