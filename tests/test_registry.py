"""The registries: a posterior family and a prior defined here, outside the package, are
registered with one line each and then fitted through VariationalEB and the command line."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from torch import nn
from torch.distributions import Independent, Normal

from invae import VariationalEB, linear_gaussian
from invae.app.cli import main
from invae.app.methods import methods
from invae.inference.families import FAMILIES, PosteriorFamily
from invae.model.prior import Prior
from invae.model.priors import PRIORS, PriorKind, prior_name
from invae.registry import Registry


class IsotropicPrior(Prior):
    """``z ~ N(0, s² I)``: one parameter, its M-step ``s² = mean of z²``."""

    closed_form_gaussian_m_step = False

    def __init__(self, variance=1.0, *, dim: int):
        super().__init__()
        self.register_buffer("variance", torch.as_tensor(variance, dtype=torch.float64))
        self.dim = dim

    def log_prob(self, z, covariates=None):
        return Normal(0.0, self.variance.to(z).sqrt()).log_prob(z).sum(-1)

    def sample(self, n, generator=None, covariates=None):
        return self.variance.sqrt() * torch.randn(n, self.dim, generator=generator, dtype=torch.float64)

    def statistics(self, z, weights=None, covariates=None):
        w = torch.ones(z.shape[:-1], dtype=z.dtype) if weights is None else weights.to(z)
        return {"mean_square": (w[..., None] * z.square()).sum() / (w.sum() * self.dim)}

    def m_step_from(self, statistics):
        return self._with(statistics["mean_square"])

    def penalty(self):
        return 0.0

    def relative_change(self, previous):
        return float(abs(self.variance - previous.variance) / previous.variance)

    def with_penalty(self, alpha):
        return self

    def with_state(self, state):
        return self._with(state["variance"])

    def config(self):
        return {"dim": self.dim}

    @classmethod
    def from_state(cls, state, **config):
        return cls(state["variance"], **config)

    def to(self, device=None, dtype=None):
        return self._with(self.variance.to(device=device, dtype=dtype))

    def summary(self):
        return {"prior_variance": float(self.variance)}

    def _with(self, variance):
        return IsotropicPrior(variance, dim=self.dim)


class GradientIsotropicPrior(IsotropicPrior):
    """The same prior without an M-step: its parameter log s² is learned by gradient."""

    has_m_step = False

    def __init__(self, log_variance=0.0, *, dim: int):
        log_variance = torch.as_tensor(log_variance, dtype=torch.float64)
        super().__init__(log_variance.exp(), dim=dim)  # differentiable in log s²
        self.register_buffer("log_variance", log_variance)

    def state(self):
        return {"log_variance": self.log_variance}  # θ; the variance is derived from it

    def statistics(self, z, weights=None, covariates=None):
        return Prior.statistics(self, z, weights)  # none: the base class says so

    def with_state(self, state):
        return GradientIsotropicPrior(state["log_variance"], dim=self.dim)

    def to(self, device=None, dtype=None):
        return self.with_state({"log_variance": self.log_variance.to(device=device, dtype=dtype)})


class LinearEncoder(nn.Module):
    """``q(z | x) = N(W x + b, diag e^{2c})``: it holds the exact posterior of x = z + σε under
    an isotropic prior (posterior mean linear in x, variance constant)."""

    def __init__(self, m, p):
        super().__init__()
        self.mean = nn.Linear(m, p)
        self.log_std = nn.Parameter(torch.full((p,), -1.0))

    def standardize_with(self, x):
        pass  # the family's contract for amortized modules; this one reads x as it is

    def forward(self, x, index=None):
        mean = self.mean(x)
        return Independent(Normal(mean, self.log_std.exp().expand_as(mean)), 1)


@pytest.fixture
def toys():
    """The toy family (method "linear") and prior ("isotropic"), registered for one test."""
    FAMILIES.register("linear", PosteriorFamily(lambda estimator, n, m: LinearEncoder(m, estimator.prior.dim),
                                                method="linear"))
    PRIORS.register("isotropic", PriorKind(IsotropicPrior, lambda x, likelihood, options:
                                           IsotropicPrior(dim=likelihood.forward.in_dim)))
    yield
    FAMILIES.unregister("linear")
    PRIORS.unregister("isotropic")


def _data(n=3000, p=3, variance=2.25, sigma=0.5, seed=0):
    rng = np.random.default_rng(seed)
    return math.sqrt(variance) * rng.standard_normal((n, p)) + sigma * rng.standard_normal((n, p))


def test_a_toy_family_and_prior_fit_through_variational_eb(toys):
    n, p, variance, sigma = 3000, 3, 2.25, 0.5
    x = _data(n, p, variance, sigma)
    fitted = VariationalEB(IsotropicPrior(dim=p), linear_gaussian(np.eye(p), sigma), family="linear",
                           random_state=0).fit(x)
    # The exact posterior is in the family, so the fit chases the MLE s² = mean(x²) − σ², whose
    # standard error is √(2/(np)) (s² + σ²) ≈ 0.037: the estimate is within 3 of them of the truth.
    standard_error = math.sqrt(2 / (n * p)) * (variance + sigma**2)
    assert isinstance(fitted.prior_, IsotropicPrior) and fitted.converged_
    assert abs(float(fitted.prior_.variance) - variance) < 3 * standard_error
    assert prior_name(fitted.prior_) == "isotropic" and "linear" in methods()


def test_a_prior_without_an_m_step_is_learned_by_gradient(toys, tmp_path):
    n, p, variance, sigma = 3000, 3, 2.25, 0.5
    x = _data(n, p, variance, sigma)

    def fit(**options):
        return VariationalEB(GradientIsotropicPrior(dim=p), linear_gaussian(np.eye(p), sigma), family="linear",
                             random_state=0, **options).fit(x)

    whole = fit()
    # the same standard error as above: the gradient-trained fit is as close to the truth
    standard_error = math.sqrt(2 / (n * p)) * (variance + sigma**2)
    assert whole.converged_
    with pytest.raises(ValueError, match="which has no M-step: use 'gradient' or 'importance-gradient'$"):
        fit(lambda_step="expected")  # so the fit above did not use one
    assert abs(float(whole.prior_.log_variance.exp()) - variance) < 3 * standard_error
    # θ's Adam state is checkpointed and restored like φ's: a resumed fit repeats the whole one
    # bit for bit (stopped after 7 iterations, as by a signal)
    def stop_at_7(iteration, prior):
        if iteration == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(checkpoint_dir=tmp_path, checkpoint_every=5, callback=stop_at_7)
    resumed = fit(checkpoint_dir=tmp_path, checkpoint_every=5, resume=True)
    assert resumed.n_iter_ == whole.n_iter_ and resumed.history_["elbo"] == whole.history_["elbo"]
    assert torch.equal(resumed.prior_.log_variance, whole.prior_.log_variance)


@pytest.mark.parametrize("prior, weighted, unweighted", [(IsotropicPrior, "importance", "expected"),
                                                         (GradientIsotropicPrior, "importance-gradient", "gradient")])
def test_importance_weighted_steps_take_theta_to_the_mle_where_the_elbos_are_biased(toys, prior, weighted,
                                                                                   unweighted):
    # x = A z + σε with a non-diagonal A: the exact posterior is correlated and the toy family is
    # diagonal, so the ELBO's M-step, or its gradient in log s², keeps q's bias; the importance-
    # weighted M-step, or bound's gradient (the step an ``importance`` family takes for a prior
    # without an M-step), is corrected towards the exact posterior, so it chases the MLE. The MLE's
    # own standard error from n rows of p coordinates is about √(2/(np)) in log s²: the weighted fit
    # is to be well within it of the MLE, the ELBO's well outside.
    n, p, variance, sigma = 2000, 2, 2.25, 0.5
    a = np.array([[1.0, 1.0], [0.0, 1.0]])
    rng = np.random.default_rng(1)
    x = math.sqrt(variance) * rng.standard_normal((n, p)) @ a.T + sigma * rng.standard_normal((n, p))

    def negative_log_likelihood(log_s2):  # x_i ~ N(0, s² A Aᵀ + σ² I)
        cov = math.exp(log_s2) * a @ a.T + sigma**2 * np.eye(p)
        return 0.5 * (n * np.linalg.slogdet(cov)[1] + np.einsum("ij,jk,ik->", x, np.linalg.inv(cov), x))

    mle = minimize_scalar(negative_log_likelihood, bounds=(-3, 3), method="bounded", options={"xatol": 1e-8}).x

    def fitted(step):
        fit = VariationalEB(prior(dim=p), linear_gaussian(a, sigma), family="linear", lambda_step=step,
                            random_state=0).fit(x)
        return float(fit.prior_.variance.log())

    standard_error = math.sqrt(2 / (n * p))
    assert abs(fitted(weighted) - mle) < 0.5 * standard_error
    assert abs(fitted(unweighted) - mle) > 3 * standard_error


def test_a_toy_family_and_prior_are_command_line_choices(toys, tmp_path, capsys):
    np.save(tmp_path / "X.npy", _data(n=1000))
    code = main(["fit", "--data", str(tmp_path / "X.npy"), "--noise-std", "0.5", "--prior", "isotropic",
                 "--method", "linear", "--max-iter", "300", "--quiet", "--out", str(tmp_path / "fit")])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert summary["settings"]["method"] == "linear" and "prior_variance" in summary  # from the prior itself
    assert np.load(tmp_path / "fit" / "variance.npy").shape == ()


def test_naive_refuses_a_prior_without_an_m_step_in_one_line(tmp_path, capsys):
    PRIORS.register("isotropic-by-gradient", PriorKind(GradientIsotropicPrior, lambda x, likelihood, options:
                                                       GradientIsotropicPrior(dim=likelihood.forward.in_dim)))
    try:
        np.save(tmp_path / "X.npy", _data(n=100))
        assert main(["fit", "--data", str(tmp_path / "X.npy"), "--noise-std", "0.5", "--prior", "isotropic-by-gradient",
                     "--method", "naive", "--out", str(tmp_path / "never")]) == 2
    finally:
        PRIORS.unregister("isotropic-by-gradient")
    err = capsys.readouterr().err
    assert "GradientIsotropicPrior has none: use a variational method" in err and err.count("\n") == 1
    assert not (tmp_path / "never").exists()


def test_the_gradient_step_is_for_priors_without_an_m_step():
    prior = IsotropicPrior(dim=3)  # it has an M-step
    for step in ("gradient", "importance-gradient"):
        with pytest.raises(ValueError, match="which has an M-step: use 'batch' or 'expected' or 'importance'$"):
            VariationalEB(prior, linear_gaussian(np.eye(3), 0.5), lambda_step=step).fit(_data(n=50))


def test_unknown_names_are_one_line_errors_naming_the_choices():
    registry = Registry("colour")
    registry.register("red", 1)
    with pytest.raises(ValueError, match=r"^unknown colour 'blue'; choose one of red$"):
        registry["blue"]
    with pytest.raises(ValueError, match="registered already"):
        registry.register("red", 2)
    assert registry.unregister("red") == 1 and "red" not in registry
