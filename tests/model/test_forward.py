import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from invae import GaussianGraphicalModel, GaussianLikelihood, VariationalEB, simulate_problem
from invae.model.forward import FunctionOperator, LinearOperator, saturating


def test_adjoint_is_the_transpose(rng):
    op = LinearOperator(rng.standard_normal((5, 8)))
    z = torch.as_tensor(rng.standard_normal((4, 8)))
    x = torch.as_tensor(rng.standard_normal((4, 5)))
    # <A z, x> = <z, Aᵀ x> for every pair of rows
    torch.testing.assert_close((op(z) * x).sum(-1), (z * op.adjoint(x)).sum(-1))


def test_pinv_inverts_a_full_column_rank_operator(rng):
    op = LinearOperator(rng.standard_normal((9, 4)))
    z = torch.as_tensor(rng.standard_normal((3, 4)))
    torch.testing.assert_close(op.pinv(op(z)), z)


def test_operator_maps_leading_dimensions():
    op = LinearOperator.identity(3)
    assert op(torch.zeros(2, 5, 3)).shape == (2, 5, 3)
    assert (op.out_dim, op.in_dim) == (3, 3)


@pytest.mark.parametrize("matrix, message", [(np.ones(3), "2-D"), (np.array([[1.0, np.nan]]), "NaN")])
def test_bad_matrix_is_refused(matrix, message):
    with pytest.raises(ValueError, match=message):
        LinearOperator(matrix)


def test_a_linear_function_fits_exactly_like_the_matrix():
    # the same arithmetic (z @ Aᵀ) through a callable: the same fit, bit for bit (same seed)
    problem = simulate_problem(p=4, n=300, graph="chain", forward="gaussian", noise_std=0.5, seed=0)
    a = torch.as_tensor(problem.A)

    def linear(z):
        return z @ a.to(z).mT

    fits = []
    for forward in (LinearOperator(problem.A), FunctionOperator(linear, 4)):
        # iaf: a Gaussian q would take closed forms for a matrix (its q-step, its ELBO) that a
        # function cannot have; the flow's ELBO reads G(z) at draws alone
        estimator = VariationalEB(GaussianGraphicalModel(dim=4, alpha=0.05), GaussianLikelihood(forward, 0.5),
                                  family="iaf", hidden=(16,), max_iter=20, tol=1e-12)
        with pytest.warns(ConvergenceWarning):
            fits.append(estimator.fit(problem.X))
    np.testing.assert_array_equal(fits[0].precision_, fits[1].precision_)
    np.testing.assert_array_equal(fits[0].transform(problem.X), fits[1].transform(problem.X))


def test_saturating_sensor_is_tanh_of_a_z_and_differentiable(rng):
    a = rng.standard_normal((5, 3))
    op = saturating(a)
    z = torch.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    torch.testing.assert_close(op(z), torch.tanh(z @ torch.as_tensor(a).T))
    op(z).sum().backward()
    # d/dz Σ tanh(Az) = Aᵀ (1 − tanh²(Az))
    expected = (1 - torch.tanh(z.detach() @ torch.as_tensor(a).T) ** 2) @ torch.as_tensor(a)
    torch.testing.assert_close(z.grad, expected)
    assert (op.out_dim, op.in_dim) == (5, 3)


def test_blur_rows_are_normalised_gaussian_kernels():
    op = LinearOperator.blur(7, width=1.5)
    a = op.matrix.numpy()
    np.testing.assert_allclose(a.sum(1), 1.0, rtol=1e-12)
    i, j = 3, 5  # an interior row: k(d) = exp(−d²/(2·1.5²)) / Σ_d k(d)
    weights = np.exp(-0.5 * ((i - np.arange(7)) / 1.5) ** 2)
    assert a[i, j] == pytest.approx(weights[j] / weights.sum(), rel=1e-12)
    with pytest.raises(ValueError, match="width"):
        LinearOperator.blur(7, width=0.0)


@pytest.mark.parametrize("function, error, message", [
    (lambda z: z.sum(-1), ValueError, "expected"),                  # drops the last dimension
    (lambda z: z.reshape(-1), ValueError, "expected"),              # loses the leading ones
    (lambda z: z.numpy(), ValueError, "must return a tensor"),
    (lambda z: torch.log(z), FloatingPointError, "non-finite"),     # log 0 = −inf at the probe
    ("not a function", ValueError, "callable"),
])
def test_a_bad_forward_function_is_a_clear_error(function, error, message):
    with pytest.raises(error, match=message):
        FunctionOperator(function, 3)


def test_a_forward_function_that_breaks_later_is_caught_on_the_call():
    op = FunctionOperator(lambda z: 1 / (1 - z), 2)  # fine at zero, infinite at one
    with pytest.raises(FloatingPointError, match="non-finite"):
        op(torch.ones(3, 2))
