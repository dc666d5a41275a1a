"""Data-parallel fits: several processes, each holding a shard of the rows (``torch.distributed``).

W processes (``torchrun``, or ``invae fit --workers W``: docs/cli.md, "Several processes")
make the same computation as one process over all n rows, split by rows
(docs/methods.md §3.18):

* every process draws the same random numbers from torch's generator, of the whole batch's
  shape (same seed, no per-process draws): the same batch indices among the n rows, the same
  Λ-step rows, the same evaluation rows;
* each process computes on the rows of its :class:`Shard` that an index names; its draws of q
  are its rows' part of the standard normal noise drawn for the whole batch
  (:class:`ShardNoise`), so a row gets the same draws whichever process holds it;
* the encoder's gradient is the mean of the processes' (``DistributedDataParallel``), each
  process's loss being W/B times the sum over its rows of a batch of B: the gradient of the
  batch's mean loss;
* row averages (the Λ-step's statistics, the ELBOs the stopping rule reads) are gathered and
  combined as the averages they are (:func:`~invae.model.rows.block_average`), in the order of
  the ranks: every process holds the same Λ̂ and takes the same decisions.

So W processes give one process's Λ̂ to round-off (sums taken in another order), and a
checkpoint resumes with any number of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributions import (Distribution, Independent, LowRankMultivariateNormal, MultivariateNormal, Normal,
                                 TransformedDistribution)

from ..model.rows import RowMoments, block_average
from .checkpoints import ProcessLost

__all__ = ["Shard", "ShardNoise", "Noise", "collective", "draw", "reparameterised"]

#: ``noise(sample_shape, like)``: standard normal noise of shape ``sample_shape + like.shape``.
Noise = Callable[[Sequence[int], Tensor], Tensor]


@contextlib.contextmanager
def collective() -> Iterator[None]:
    """Run collective operations (``torch.distributed``, a DDP backward pass); the error of one
    that fails because a process stopped (gloo raises a plain ``RuntimeError``: "Connection reset
    by peer") becomes :class:`ProcessLost`. Numerical errors (a failed factorisation, memory)
    pass as they are."""
    try:
        yield
    except (ProcessLost, torch.linalg.LinAlgError, torch.OutOfMemoryError):
        raise
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ProcessLost(f"another process of the fit stopped ({first})") from error


@dataclass(frozen=True)
class Shard:
    """This process's rows ``start..stop`` (a slice) of the n rows of a fit over ``world`` processes."""

    rank: int
    world: int
    start: int
    stop: int
    n: int
    device: torch.device = torch.device("cpu")  # the data's: where gathered statistics go

    @classmethod
    def whole(cls, n: int, device: torch.device | str = "cpu") -> Shard:
        """All n rows in one process."""
        return cls(0, 1, 0, n, n, torch.device(device))

    @classmethod
    def of(cls, local_rows: int, device: torch.device | str = "cpu") -> Shard:
        """The shard of a process holding ``local_rows`` rows on ``device``: the rows of the lower
        ranks come first. One process where no process group is initialised (``torch.distributed``)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return cls.whole(local_rows, device)
        counts: list[int] = [0] * dist.get_world_size()
        with collective():
            dist.all_gather_object(counts, local_rows)
        if min(counts) == 0:
            raise ValueError(f"every process needs at least one row; the processes hold {counts} rows")
        rank = dist.get_rank()
        start = sum(counts[:rank])
        return cls(rank, len(counts), start, start + local_rows, sum(counts), torch.device(device))

    @staticmethod
    def rows(n: int) -> slice:
        """This process's rows of n: the ranks' consecutive shares, as ``numpy.array_split`` cuts
        them (all n for one process)."""
        if not (dist.is_available() and dist.is_initialized()):
            return slice(0, n)
        rank, world = dist.get_rank(), dist.get_world_size()
        start = rank * (n // world) + min(rank, n % world)
        return slice(start, start + n // world + (rank < n % world))

    @property
    def parallel(self) -> bool:
        return self.world > 1

    @property
    def writes(self) -> bool:
        """Whether this process writes checkpoints and results (rank 0)."""
        return self.rank == 0

    def local(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """(the positions in ``index`` (B,) of rows of this shard, their row numbers within it)."""
        inside = (index >= self.start) & (index < self.stop)
        positions = inside.nonzero().squeeze(1)
        return positions, index[positions] - self.start

    def noise(self, batch_size: int, positions: Tensor) -> ShardNoise | None:
        """The draws' noise for ``positions`` of a batch of ``batch_size`` rows; None for one
        process (q draws its own: the same numbers)."""
        return ShardNoise(batch_size, positions) if self.parallel else None

    def exchanging(self) -> contextlib.AbstractContextManager:
        """:func:`collective` where there are other processes; nothing for one."""
        return collective() if self.parallel else contextlib.nullcontext()

    def total(self, value: Tensor) -> Tensor:
        """The sum over the processes of ``value`` (a copy)."""
        value = value.clone()
        if self.parallel:
            with collective():
                dist.all_reduce(value)
        return value

    def largest(self, value: int) -> int:
        """The largest of the processes' ``value``."""
        value = torch.tensor(value)
        if self.parallel:
            with collective():
                dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return int(value)

    def average(self, parts: list[tuple[int, dict[str, Tensor]]]) -> dict[str, Tensor]:
        """The average over every process's rows of statistics given as averages over blocks of
        this process's rows, (rows, statistics) (:func:`~invae.model.rows.block_average`)."""
        if not self.parallel:
            return block_average(parts)
        mine = (sum(rows for rows, _ in parts), _on_cpu(block_average(parts))) if parts else (0, None)
        gathered: list = [None] * self.world
        with collective():
            dist.all_gather_object(gathered, mine)
        combined = block_average((rows, statistics) for rows, statistics in gathered if rows)
        return {key: value.to(self.device) for key, value in combined.items()}

    def merge(self, moments: RowMoments) -> RowMoments:
        """The moments of every process's rows from each one's (rank order)."""
        if not self.parallel:
            return moments
        gathered: list = [None] * self.world
        with collective():
            dist.all_gather_object(gathered, RowMoments(moments.count, moments.mean.cpu(), moments.scatter.cpu()))
        total = gathered[0]
        for part in gathered[1:]:
            total = total.merge(part)
        return RowMoments(total.count, total.mean.to(moments.mean.device), total.scatter.to(moments.mean.device))


def _on_cpu(statistics: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key: value.cpu() for key, value in statistics.items()}


class ShardNoise:
    """Standard normal noise for the ``positions`` (b,) of a batch of ``batch_size`` rows, held by
    one process: ``noise(sample_shape, like)`` draws it for all the rows, as one process would,
    and keeps these rows, ``sample_shape + like.shape`` for ``like`` (b, …)."""

    def __init__(self, batch_size: int, positions: Tensor):
        self.batch_size, self.positions = batch_size, positions

    def __call__(self, sample_shape: Sequence[int], like: Tensor) -> Tensor:
        shape = (*sample_shape, self.batch_size, *like.shape[1:])
        noise = torch.randn(shape, dtype=like.dtype, device=like.device)
        return noise.index_select(len(sample_shape), self.positions.to(like.device))


def reparameterised(q: Distribution, sample_shape: Sequence[int], noise: Noise) -> Tensor:
    """``q.rsample(sample_shape)`` with its standard normal ε from ``noise``: ``μ + σ ∘ ε`` (a
    Gaussian), ``μ + L ε`` (a full covariance), ``μ + U ε_U + d ∘ ε_d`` (low rank), then a
    flow's steps, as torch draws them.
    q: batch (b,), event (p,)."""
    if isinstance(q, TransformedDistribution):
        z = reparameterised(q.base_dist, sample_shape, noise)
        for transform in q.transforms:
            z = transform(z)
        return z
    if isinstance(q, Independent):
        return reparameterised(q.base_dist, sample_shape, noise)
    if isinstance(q, Normal):
        return q.loc + noise(sample_shape, q.loc) * q.scale
    if isinstance(q, MultivariateNormal):
        return q.loc + (q.scale_tril @ noise(sample_shape, q.loc).unsqueeze(-1)).squeeze(-1)
    if isinstance(q, LowRankMultivariateNormal):  # U's noise first, then the diagonal's, as torch draws them
        columns = noise(sample_shape, q.cov_factor[..., 0, :])
        return q.loc + (q.cov_factor @ columns.unsqueeze(-1)).squeeze(-1) + q.cov_diag.sqrt() * noise(sample_shape, q.loc)
    raise TypeError(f"a posterior of type {type(q).__name__} does not draw from given noise")


def draw(q: Distribution, sample_shape: Sequence[int] = (), noise: Noise | None = None) -> Tensor:
    """Draws of q, ``sample_shape + q``'s shape: reparameterised where q has it (from ``noise``
    where given), else ``sample`` (a mixture)."""
    if noise is not None:
        return reparameterised(q, sample_shape, noise)
    return q.rsample(sample_shape) if q.has_rsample else q.sample(sample_shape)
