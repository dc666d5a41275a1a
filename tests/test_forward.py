import numpy as np
import pytest
import torch

from invae.forward import LinearOperator


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
