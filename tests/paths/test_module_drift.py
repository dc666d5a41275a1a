"""A user's drift module as an SDE prior (invae.paths.module_drift) and as a path prior's θ."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from invae.paths.module_drift import module_sde
from invae.paths.prior import PathPrior
from invae.paths.sde import DoubleWell


class DoubleWellField(nn.Module):
    """The double well's drift θ₁ z (θ₂ − z²) as a user would write it."""

    def __init__(self, d):
        super().__init__()
        self.theta1 = nn.Parameter(torch.tensor(1.5))
        self.theta2 = nn.Parameter(torch.tensor(0.8))

    def forward(self, z, t):
        return self.theta1 * z * (self.theta2 - z**2)


class TimedField(nn.Module):
    """A linear drift in z with a time-varying forcing, in d dimensions: f = A z + sin(t) b."""

    def __init__(self, d):
        super().__init__()
        self.linear = nn.Linear(d, d, bias=False)
        self.forcing = nn.Parameter(torch.linspace(0.5, 1.0, d))

    def forward(self, z, t):
        return self.linear(z) + torch.sin(t)[..., None] * self.forcing


class ScalarField(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.a = nn.Parameter(torch.ones(()))

    def forward(self, z, t):
        return z.sum(-1)


class PoleField(ScalarField):
    def forward(self, z, t):
        return self.a / z


class ClashingField(ScalarField):
    def __init__(self, d):
        super().__init__(d)
        self.diffusion = nn.Parameter(torch.ones(()))

    def forward(self, z, t):
        return self.diffusion * z


class NoDimension(nn.Module):
    def forward(self, z, t):
        return z


def test_a_module_with_the_double_wells_drift_gives_the_double_wells_density(rng):
    # the same SDE built two ways: the built-in double well and the module; Euler–Maruyama both
    times = torch.tensor([0.0, 0.3, 0.5, 1.4], dtype=torch.float64)
    z = torch.as_tensor(rng.standard_normal((5, 4, 1)))
    settings = {"diffusion": 0.4, "start_mean": 0.2, "start_scale": 1.3}
    built_in = DoubleWell(theta1=1.5, theta2=0.8, **settings).double()
    mine = module_sde("wells.py:DoubleWellField", DoubleWellField)(1, **settings).double()
    torch.testing.assert_close(mine.log_prob(z, times), built_in.log_prob(z, times), rtol=1e-12, atol=0)


def test_the_time_reaches_the_module_and_its_density_is_the_sum_of_scipy_logpdfs(rng):
    # d = 2, diagonal S = diag(0.5, 0.7): each coordinate's step is N(z + f(z, t) Δ, s_j² Δ)
    times = np.array([0.0, 0.4, 1.0])
    sde = module_sde("timed.py:TimedField", TimedField)(2, diffusion=[[0.5, 0.0], [0.0, 0.7]], start_mean=[0.1, -0.2],
                                                      start_scale=[1.0, 2.0]).double()
    z = rng.standard_normal((3, 3, 2))
    a, b = sde.field.linear.weight.detach().numpy(), sde.field.forcing.detach().numpy()
    expected = norm.logpdf(z[:, 0], [0.1, -0.2], [1.0, 2.0]).sum(-1)
    for j in range(2):
        dt = times[j + 1] - times[j]
        mean = z[:, j] + (z[:, j] @ a.T + math.sin(times[j]) * b) * dt
        expected += norm.logpdf(z[:, j + 1], mean, np.array([0.5, 0.7]) * math.sqrt(dt)).sum(-1)
    log_density = sde.log_prob(torch.as_tensor(z), torch.as_tensor(times))
    np.testing.assert_allclose(log_density.detach().numpy(), expected, rtol=1e-12)


def test_its_parameters_by_name_are_the_modules_then_the_diffusion_and_start():
    sde = module_sde("wells.py:DoubleWellField", DoubleWellField)(1, diffusion=0.4)
    assert list(sde.parameters_by_name()) == ["theta1", "theta2", "diffusion", "start_mean", "start_scale"]
    assert sde.parameters_by_name()["theta1"] == pytest.approx(1.5) and sde.diffusion().item() == pytest.approx(0.4)


def test_a_path_prior_keeps_dotted_parameter_names_and_their_gradients():
    sde = module_sde("timed.py:TimedField", TimedField)(2).double()
    prior = PathPrior(sde, torch.arange(4.0), substeps=2)
    assert "field.linear.weight" in prior.state()
    state = {name: value.detach().clone().requires_grad_() for name, value in prior.state().items()}
    z = prior.sample(3, torch.Generator().manual_seed(0))
    prior.with_state(state).log_prob(z).sum().backward()
    assert state["field.linear.weight"].grad.abs().sum() > 0  # θ by gradient reaches the module's weights
    moved = {**prior.state(), "field.forcing": torch.tensor([2.0, 3.0], dtype=torch.float64)}
    assert prior.with_state(moved).summary()["forcing"] == [2.0, 3.0]  # the module's own names


@pytest.mark.parametrize("field, message", [
    (ScalarField, r"returned \(3,\) for z of shape \(3, 1\): it must return one drift per coordinate"),
    (PoleField, r"returned NaN or inf at z in \[-1, 1\]\^d"),
    (NoDimension, r"must be built as NoDimension\(d\)"),
    (ClashingField, r"names a parameter 'diffusion', a name the SDE's own parameters have"),
])
def test_a_module_of_the_wrong_shape_nan_or_signature_is_refused_when_built(field, message):
    with pytest.raises(ValueError, match=message):
        module_sde(f"bad.py:{field.__name__}", field)(1)


def test_a_class_that_is_not_a_module_is_refused():
    with pytest.raises(ValueError, match="is not a torch.nn.Module class"):
        module_sde("bad.py:function", lambda z, t: z)
