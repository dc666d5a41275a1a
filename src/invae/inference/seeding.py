"""Common random numbers: a block of code run with torch's generator seeded, then restored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["seeded", "fresh_seed"]


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str) -> Iterator[None]:
    """Run the block with torch's generator (CPU, and ``device``'s if CUDA) seeded, then restore it."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def fresh_seed() -> int:
    """A seed drawn from torch's generator (the same in every process of a parallel fit)."""
    return int(torch.randint(2**62, ()))
