import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from invae.paths.gauss_markov import GaussMarkov

N_SERIES = 3


def _parameters(generator: torch.Generator, steps: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random (loc (n, T, d), D (n, T, d, d) lower triangular with diagonal in [e^-0.5, e^0.5], B (n, T−1, d, d))."""
    loc = torch.randn(N_SERIES, steps, d, generator=generator)
    raw = torch.randn(N_SERIES, steps, d, d, generator=generator)
    diagonal = torch.tril(raw, -1) + torch.diag_embed((0.5 * torch.tanh(raw.diagonal(dim1=-2, dim2=-1))).exp())
    return loc, diagonal, 0.8 * torch.randn(N_SERIES, steps - 1, d, d, generator=generator)


def _dense_factor(diagonal: torch.Tensor, subdiagonal: torch.Tensor) -> torch.Tensor:
    """The brute-force L (n, T d, T d): block (t, t) = D_t, block (t+1, t) = B_t, zero elsewhere."""
    n, steps, d, _ = diagonal.shape
    factor = diagonal.new_zeros(n, steps * d, steps * d)
    for t in range(steps):
        factor[:, t * d:(t + 1) * d, t * d:(t + 1) * d] = diagonal[:, t]
        if t + 1 < steps:
            factor[:, (t + 1) * d:(t + 2) * d, t * d:(t + 1) * d] = subdiagonal[:, t]
    return factor


def _reference(loc: torch.Tensor, diagonal: torch.Tensor, subdiagonal: torch.Tensor) -> MultivariateNormal:
    """N(μ, (L Lᵀ)⁻¹) over the flattened path, the covariance by dense inversion."""
    factor = _dense_factor(diagonal, subdiagonal)
    return MultivariateNormal(loc.flatten(-2), covariance_matrix=torch.linalg.inv(factor @ factor.mT))


def _block(matrix: torch.Tensor, row: int, col: int, d: int) -> torch.Tensor:
    return matrix[:, row * d:(row + 1) * d, col * d:(col + 1) * d]


@pytest.fixture(params=[(7, 2), (7, 1), (1, 2)], ids=lambda p: f"T={p[0]},d={p[1]}")
def case(request, generator):
    steps, d = request.param
    params = _parameters(generator, steps, d)
    return GaussMarkov(*params, validate_args=True), _reference(*params), (steps, d)


def test_precision_is_the_block_tridiagonal_product_of_the_factor(case):
    # Λ_tt = D_t D_tᵀ + B_{t−1} B_{t−1}ᵀ, Λ_{t+1,t} = B_t D_tᵀ, zero beyond the band: to_dense holds it,
    # to float64 rounding (entries of order 10, so 1e-12 absolute).
    q, _, (steps, d) = case
    precision = q.to_dense().precision_matrix
    D, B = q.diagonal_blocks, q.subdiagonal_blocks
    for t in range(steps):
        expected = D[:, t] @ D[:, t].mT + (B[:, t - 1] @ B[:, t - 1].mT if t else 0)
        torch.testing.assert_close(_block(precision, t, t, d), expected, rtol=0, atol=1e-12)
        for s in range(t + 1, steps):
            expected = B[:, t] @ D[:, t].mT if s == t + 1 else torch.zeros(N_SERIES, d, d)
            torch.testing.assert_close(_block(precision, s, t, d), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(q.to_dense().mean, q.mean.flatten(-2), rtol=0, atol=0)


def test_log_prob_and_entropy_match_the_dense_gaussian(case, generator):
    # Both sides are float64 evaluations of the same closed form; they differ by rounding
    # in the dense inverse (condition numbers here < 1e4), far below 1e-9.
    q, dense, (steps, d) = case
    z = q.mean + 2 * torch.randn(5, N_SERIES, steps, d, generator=generator)
    log_q = q.log_prob(z)
    assert log_q.shape == (5, N_SERIES)
    torch.testing.assert_close(log_q, dense.log_prob(z.flatten(-2)), rtol=0, atol=1e-9)
    torch.testing.assert_close(q.entropy(), dense.entropy(), rtol=0, atol=1e-9)


def test_covariance_blocks_match_the_dense_inverse(case):
    # The backward recursion against blocks of (L Lᵀ)⁻¹ by dense inversion: rounding only.
    q, dense, (steps, d) = case
    cov = dense.covariance_matrix
    blocks = torch.stack([_block(cov, t, t, d) for t in range(steps)], dim=1)
    torch.testing.assert_close(q.covariance_blocks(), blocks, rtol=0, atol=1e-10)
    torch.testing.assert_close(q.marginal_variances(), blocks.diagonal(dim1=-2, dim2=-1), rtol=0, atol=1e-10)
    torch.testing.assert_close(q.stddev, blocks.diagonal(dim1=-2, dim2=-1).sqrt(), rtol=0, atol=1e-10)
    lags = q.lag_one_covariances()
    assert lags.shape == (N_SERIES, steps - 1, d, d)
    for t in range(steps - 1):
        torch.testing.assert_close(lags[:, t], _block(cov, t + 1, t, d), rtol=0, atol=1e-10)


def test_samples_have_the_dense_mean_and_covariance(case):
    # 20 000 draws per series. Standard errors: mean_j, sqrt(Σ_jj / N); covariance_jk,
    # sqrt((Σ_jj Σ_kk + Σ_jk²) / N) (the variance of a product of two centred Gaussians).
    # 5 SE each: a two-sided Gaussian tail of 6e-7 per entry, < 3e-4 over the ≤ 3·(14 + 105) entries.
    q, dense, (steps, d) = case
    draws = 20_000
    z = q.rsample((draws,)).flatten(-2)
    assert z.shape == (draws, N_SERIES, steps * d)
    cov = dense.covariance_matrix
    variances = cov.diagonal(dim1=-2, dim2=-1)
    assert torch.all((z.mean(0) - dense.mean).abs() < 5 * (variances / draws).sqrt())
    centred = z - dense.mean
    empirical = torch.einsum("sni,snj->nij", centred, centred) / draws
    se = ((variances[:, :, None] * variances[:, None, :] + cov.square()) / draws).sqrt()
    assert torch.all((empirical - cov).abs() < 5 * se)


def test_sample_gradients_are_those_of_the_dense_reparameterisation(generator):
    # z = μ + L⁻ᵀ ε: recover ε = Lᵀ (z − μ) from a draw, rebuild z by a dense triangular solve
    # with ε held fixed, and compare the gradients of f(z) = Σ sin(z) ∘ z in (μ, D, B): both are
    # the same function of the parameters, so they agree to rounding (1e-10).
    loc, diagonal, subdiagonal = (p.requires_grad_() for p in _parameters(generator, 7, 2))
    z = GaussMarkov(loc, diagonal, subdiagonal).rsample((4,))
    grads = torch.autograd.grad((z.sin() * z).sum(), (loc, diagonal, subdiagonal))
    assert all(torch.isfinite(g).all() and g.abs().max() > 0 for g in grads)
    factor = _dense_factor(diagonal, subdiagonal)
    eps = (factor.mT.detach() @ (z - loc).detach().flatten(-2).unsqueeze(-1))
    dense = loc.flatten(-2) + torch.linalg.solve_triangular(factor.mT, eps, upper=True).squeeze(-1)
    torch.testing.assert_close(dense, z.flatten(-2), rtol=0, atol=1e-10)
    expected = torch.autograd.grad((dense.sin() * dense).sum(), (loc, diagonal, subdiagonal))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_log_prob_integrates_the_closed_form_entropy(generator):
    # −E_q[log q(z)] = H[q]: the Monte Carlo mean of −log q over 20 000 draws is within 5 SE of
    # the closed form (SE = sd(log q)/√N; −log q − const is ½ χ²_{Td}, sd √(Td/2)).
    q = GaussMarkov(*_parameters(generator, 7, 2))
    values = -q.log_prob(q.sample((20_000,)))
    assert torch.all((values.mean(0) - q.entropy()).abs() < 5 * math.sqrt(7 * 2 / 2) / math.sqrt(20_000))


@pytest.mark.parametrize("shapes, match", [
    (((3, 14), (3, 7, 2, 2), (3, 6, 2, 2)), r"loc must have shape \(n, T, d\)"),
    (((3, 0, 2), (3, 0, 2, 2), (3, 0, 2, 2)), "T, d >= 1"),
    (((3, 7, 2), (3, 7, 2), (3, 6, 2, 2)), r"diagonal_blocks must have shape \(n, T, d, d\) = \(3, 7, 2, 2\)"),
    (((3, 7, 2), (2, 7, 2, 2), (3, 6, 2, 2)), "diagonal_blocks"),
    (((3, 7, 2), (3, 7, 2, 2), (3, 7, 2, 2)), r"subdiagonal_blocks must have shape \(n, T - 1, d, d\)"),
])
def test_wrong_shapes_raise(shapes, match):
    loc, diagonal, subdiagonal = (torch.ones(shape) for shape in shapes)
    with pytest.raises(ValueError, match=match):
        GaussMarkov(loc, torch.tril(diagonal) if diagonal.ndim == 4 else diagonal, subdiagonal)


def test_factor_blocks_must_be_lower_triangular_with_a_positive_diagonal():
    loc, subdiagonal = torch.zeros(3, 7, 2), torch.zeros(3, 6, 2, 2)
    for diagonal in (torch.ones(3, 7, 2, 2), -torch.eye(2).expand(3, 7, 2, 2)):
        with pytest.raises(ValueError, match="diagonal_blocks"):
            GaussMarkov(loc, diagonal, subdiagonal, validate_args=True)
    q = GaussMarkov(loc, torch.eye(2).expand(3, 7, 2, 2), subdiagonal, validate_args=True)
    with pytest.raises(ValueError, match="value"):
        q.log_prob(torch.zeros(3, 7, 3))
