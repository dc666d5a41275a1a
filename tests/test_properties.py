"""Property-based checks (hypothesis, derandomized so CI sees the same examples every run)."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from invae.app.io import load_array
from invae.model.forward import LinearOperator
from invae.model.ggm import GaussianGraphicalModel
from invae.model.likelihoods import GaussianLikelihood
from invae.references.exact import exact_posterior, marginal_log_likelihood
from invae.validation import check_data

_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
_FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@_SETTINGS
@given(data=arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(1, 5)), elements=_FINITE))
def test_npy_and_csv_round_trip_any_finite_table(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("data")
    np.save(folder / "x.npy", data)
    np.savetxt(folder / "x.csv", data, delimiter=",", fmt="%.17g")  # 17 digits: exact for float64
    for name in ("x.npy", "x.csv"):
        loaded = check_data(load_array(folder / name), columns=data.shape[1])
        np.testing.assert_array_equal(loaded, data)


@st.composite
def linear_gaussian_models(draw):
    """A random Λ = BBᵀ + εI (p, p), A (m, p) with bounded entries, σ and data x (n, m)."""
    p, m, n = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 8))
    entries = st.floats(-3, 3, allow_nan=False)
    b = draw(arrays(np.float64, (p, p), elements=entries))
    precision = b @ b.T + draw(st.floats(1e-3, 10)) * np.eye(p)
    a = draw(arrays(np.float64, (m, p), elements=entries))
    sigma = draw(st.floats(1e-2, 10))
    x = draw(arrays(np.float64, (n, m), elements=st.floats(-100, 100, allow_nan=False)))
    return precision, a, sigma, x


@_SETTINGS
@given(model=linear_gaussian_models())
def test_exact_posterior_covariance_is_spd_and_evidence_finite(model):
    precision, a, sigma, x = model
    prior = GaussianGraphicalModel(precision)
    likelihood = GaussianLikelihood(LinearOperator(a), sigma)  # any rank: no rank warning here
    x_t = torch.as_tensor(x)
    mean, cov = exact_posterior(x_t, prior, likelihood)
    assert torch.equal(cov, cov.mT)
    assert torch.linalg.cholesky_ex(cov).info.item() == 0  # positive definite
    assert torch.isfinite(mean).all()
    assert torch.isfinite(marginal_log_likelihood(x_t, prior, likelihood)).all()
