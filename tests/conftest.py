import numpy as np
import pytest
import torch

torch.set_default_dtype(torch.float64)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(20261125)


def random_spd(rng: np.random.Generator, p: int, condition: float = 10.0) -> np.ndarray:
    """A random symmetric positive-definite (p, p) matrix with eigenvalues in [1, condition]."""
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    return (q * np.linspace(1.0, condition, p)) @ q.T


@pytest.fixture(autouse=True)
def _seeded_torch():
    """Every test starts from the same global torch stream: Monte Carlo checks do not depend on test order."""
    torch.manual_seed(0)
